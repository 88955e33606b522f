"""``train.target_bn_stats``: BatchNorm statistics of target images after mixed-domain stages.

End to end on generated data: an adaptation stage trained with the option writes the same
weights as without it, and BatchNorm running statistics equal to one pass of the AdaBN
control over the target train images; kept snapshots get the same treatment without
changing the training's course; stages that see one domain only are left alone; a frozen
BatchNorm is refused before any work.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fixtures_data import demo_setup
from uncerda_core.config import deep_merge, validate_config
from uncerda_core.errors import UncerdaError
from uncerda_core.runtime import load_checkpoint, snapshot_dir
from uncerda_core.train.adabn import adapt_batchnorm
from uncerda_core.train.loop import run_training, stage_settings

RUNNING = ("running_mean", "running_var")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("target_bn")
    config, source, target = demo_setup(root, 6, 8, 1, "train", {
        "train": {"checkpoint_every": 2}, "adapt": {"iterations": 4}, "selection": {"keep_every": 2}})
    return {"root": root, "config": config, "source": source, "target": target}


def _with(config: dict, on: bool) -> dict:
    return deep_merge(config, {"train": {"target_bn_stats": on}})


def _adapt(data, out: Path, on: bool, **kwargs) -> dict:
    config = _with(data["config"], on)
    run_training(config, stage_settings(config, "aa"), out, seed=0, source_dataset="gta5",
                 source_index=data["source"], target_index=data["target"], progress=False, **kwargs)
    return load_checkpoint(out)["model"]


def _split(state: dict) -> tuple[dict, dict]:
    stats = {k: v for k, v in state.items() if k.endswith(RUNNING)}
    return stats, {k: v for k, v in state.items() if k not in stats and not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def runs(data):
    root = data["root"]
    return {"off": _adapt(data, root / "off" / "checkpoint.pt", False),
            "on": _adapt(data, root / "on" / "checkpoint.pt", True, keep_snapshots=True)}


def test_weights_unchanged_statistics_replaced(runs):
    stats_off, weights_off = _split(runs["off"])
    stats_on, weights_on = _split(runs["on"])
    assert stats_off and weights_off.keys() == weights_on.keys()
    # the option (and re-estimating kept snapshots on the way) does not change the training itself
    assert all(torch.equal(weights_off[k], weights_on[k]) for k in weights_off)
    assert any(not torch.allclose(stats_off[k], stats_on[k]) for k in stats_off)


def test_statistics_are_one_adabn_pass_over_target_train(data, runs, tmp_path):
    adabn = tmp_path / "adabn.pt"
    adapt_batchnorm(data["config"], data["root"] / "off" / "checkpoint.pt", data["target"], adabn, progress=False)
    expected, _ = _split(load_checkpoint(adabn)["model"])
    got, _ = _split(runs["on"])
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_kept_snapshots_carry_target_statistics(data, runs):
    folder = snapshot_dir(data["root"] / "on" / "checkpoint.pt")
    last = load_checkpoint(folder / "iter_000004.pt")["model"]
    assert all(torch.equal(last[k], runs["on"][k]) for k in runs["on"])
    middle = load_checkpoint(folder / "iter_000002.pt")["model"]
    # the snapshot's statistics are a target pass too: a fresh cumulative count of every batch
    counts = {k: int(v) for k, v in middle.items() if k.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {2}   # 8 target images, batch 4 (smoke): two batches


@pytest.mark.parametrize("stage,target_only,expected", [
    ("aa", False, True), ("tgaa", False, True), ("st", False, True),
    ("st", True, False), ("source_only", False, False), ("oracle", False, False)])
def test_only_mixed_domain_stages_reestimate(data, stage, target_only, expected):
    config = deep_merge(_with(data["config"], True), {"selftrain": {"target_only": target_only}})
    assert stage_settings(config, stage).target_bn_stats is expected
    assert stage_settings(_with(data["config"], False), stage).target_bn_stats is False


def test_frozen_batchnorm_is_refused(data):
    config = deep_merge(_with(data["config"], True), {"model": {"bn_mode": "frozen"}})
    with pytest.raises(UncerdaError, match=r"train.target_bn_stats: true .* model.bn_mode: frozen"):
        validate_config(config)
    validate_config(deep_merge(config, {"train": {"target_bn_stats": False}}))
