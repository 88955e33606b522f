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


@pytest.mark.slow
def test_two_process_training_with_gloo(tmp_path):
    from uncerda_core.config import load_config
    from uncerda_core.data.demo import generate_demo
    from uncerda_core.data.index import build_index, write_index

    src, tgt = tmp_path / "src", tmp_path / "tgt"
    generate_demo(src, tgt, seed=0, size=(64, 32), n_source=8, n_target_train=4, n_target_val=2, progress=False)
    index = tmp_path / "source_index.csv"
    write_index(build_index("gta5", src, "all", workers=1, progress=False), index, {})
    config = tmp_path / "config.yaml"
    config.write_text(f"source: {{root: {src}}}\ntarget: {{root: {tgt}}}\nthreads: 1\n")
    out = tmp_path / "ckpt.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "uncerda_core", "train-source", "--config", str(REPO / "config.yaml"),
           "--config", str(REPO / "workflow/presets/smoke.yaml"), "--config", str(config),
           "--source-index", str(index), "--out", str(out), "--losses", str(tmp_path / "losses.csv")]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert state["iteration"] == load_config(REPO / "config.yaml", REPO / "workflow/presets/smoke.yaml",
                                             config)["source_only"]["iterations"]
    # Both replicas ended identical (DDP averages gradients), and only rank 0 wrote files.
    assert not list(tmp_path.glob("*.tmp*"))
    assert (tmp_path / "losses.csv").is_file()
