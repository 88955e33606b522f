"""Multi-process training (DDP, gloo on the CPU) and the sharded weighted sample stream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uncerda_core.data.datasets import BatchStream

REPO = Path(__file__).resolve().parent.parent


def test_shards_are_disjoint_parts_of_one_weighted_stream():
    p = np.array([0.5, 0.3, 0.2, 0.0])
    single = BatchStream(4, batch_size=6, seed=3, stream=1, probabilities=p, world_size=1)
    ranks = [BatchStream(4, batch_size=3, seed=3, stream=1, probabilities=p, rank=r, world_size=2) for r in (0, 1)]
    for it in range(20):
        stream = single.global_items(it)
        shares = [r.items(it) for r in ranks]
        # Interleaving the two shares gives back the one stream: every draw is used exactly once.
        merged = [None] * len(stream)
        merged[0::2], merged[1::2] = shares[0], shares[1]
        assert merged == stream
        assert len(shares[0]) == len(shares[1]) == 3
    # The draw follows the weights (with replacement); image 3 has weight 0 and is never drawn.
    counts = np.bincount([i for it in range(2000) for i, _, _ in single.global_items(it)], minlength=4)
    assert counts[3] == 0
    np.testing.assert_allclose(counts / counts.sum(), p, atol=0.01)


def test_batches_depend_only_on_seed_and_iteration():
    a = BatchStream(10, 4, seed=1, stream=2)
    b = BatchStream(10, 4, seed=1, stream=2)
    assert a.items(7) == b.items(7)
    assert a.items(7) != a.items(8)
    assert a.items(7) != BatchStream(10, 4, seed=2, stream=2).items(7)


_ONLINE_SCRIPT = '''
import sys
import torch.distributed as dist
from uncerda_core.config import load_config
from uncerda_core.train import distributed
from uncerda_core.train.loop import run_training, stage_settings

configs, source_index, target_index, work = sys.argv[1].split(","), sys.argv[2], sys.argv[3], sys.argv[4]
distributed.cleanup = lambda info: None   # one process group serves the three runs of this launch
config = load_config(*configs)
config["selftrain"].update(iterations=4, mode="online", target_only=False)
config["selftrain"]["online"].update(pixel_weights="gmm", gmm_refit_every=1, gmm_record=300, gmm_per_step=50,
                                     gmm_min_pixels=5)
config["train"]["checkpoint_every"] = 2
settings = stage_settings(config, "st")
for name, stop_after in (("full", None), ("resumed", 2), ("resumed", None)):
    out = f"{work}/{name}/checkpoint.pt"
    run_training(config, settings, out, seed=0, source_dataset="gta5", source_index=source_index,
                 target_index=target_index, progress=False, stop_after=stop_after,
                 losses_csv=out.replace("checkpoint.pt", "losses.csv"))
dist.destroy_process_group()
'''


@pytest.mark.slow
def test_two_process_online_self_training_keeps_a_record_per_process_and_resumes_exactly(tmp_path):
    """selftrain.mode online with GMM weights on 2 processes (gloo): each process keeps its own record and random
    stream, every refit fits the union of the records (the checkpoint's tables are Eq. 6 on the summed counts),
    the teachers are one (rank 0's running statistics), and a run stopped after iteration 2 and resumed ends as the
    uninterrupted run, bit for bit, both processes' records and streams included. Only rank 0 writes files (the
    DDP machinery every training stage shares: wrapping, sharded streams, one writer)."""
    from uncerda_core.config import load_config
    from uncerda_core.data.demo import generate_demo
    from uncerda_core.data.index import build_index, write_index
    from uncerda_core.train.online import fit_weight_tables

    src, tgt = tmp_path / "src", tmp_path / "tgt"
    generate_demo(src, tgt, seed=0, size=(64, 32), n_source=8, n_target_train=8, n_target_val=2, progress=False)
    indexes = {"source": tmp_path / "source_index.csv", "target": tmp_path / "target_index.csv"}
    write_index(build_index("gta5", src, "all", workers=1, progress=False), indexes["source"], {})
    write_index(build_index("cityscapes", tgt, "train", workers=1, progress=False), indexes["target"], {})
    config = tmp_path / "config.yaml"
    config.write_text(f"source: {{root: {src}}}\ntarget: {{root: {tgt}}}\nthreads: 1\n"
                      "train: {target_bn_stats: false}\n")
    script = tmp_path / "online_ddp.py"
    script.write_text(_ONLINE_SCRIPT)
    configs = ",".join(str(p) for p in (REPO / "config.yaml", REPO / "workflow/presets/smoke.yaml", config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           configs, str(indexes["source"]), str(indexes["target"]), str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    full, resumed = (torch.load(tmp_path / n / "checkpoint.pt", map_location="cpu", weights_only=False)
                     for n in ("full", "resumed"))

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return torch.equal(a, b)
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return a == b

    for key in ("model", "optimizers", "teacher", "losses"):
        assert same(full[key], resumed[key]), key
    assert full["iteration"] == 4 and len(full["losses"]) == 4
    assert (tmp_path / "full" / "losses.csv").read_bytes() == (tmp_path / "resumed" / "losses.csv").read_bytes()
    assert not list(tmp_path.rglob("*.tmp*")) and not list(tmp_path.rglob("*.resume.pt"))
    processes = full["teacher"]["processes"]
    assert len(processes) == 2
    assert not torch.equal(processes[0]["record"]["codes"], processes[1]["record"]["codes"])   # own batches
    assert not torch.equal(processes[0]["generator"], processes[1]["generator"])               # own streams

    def counts(state):
        from uncerda_core.train.online import EntropyRecord
        record = EntropyRecord(*state["codes"].shape, per_step=1)
        record.load_state_dict(state)
        return record.histograms()

    both = counts(processes[0]["record"]) + counts(processes[1]["record"])
    min_pixels = 5
    assert np.array_equal(full["teacher"]["tables"].numpy(), fit_weight_tables(both, min_pixels))
    assert not np.array_equal(full["teacher"]["tables"].numpy(), fit_weight_tables(counts(processes[0]["record"]),
                                                                                   min_pixels))
    assert load_config(REPO / "config.yaml", REPO / "workflow/presets/smoke.yaml", config)["model"]["num_classes"] \
        == both.shape[0]
