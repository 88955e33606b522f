"""benchmarks/train_step.py at a reduced size on the CPU: every stage and variant, sane times."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from benchmark_helpers import load_benchmark

from uncerda_core.config import load_config

REPO = Path(__file__).resolve().parent.parent


def _bench():
    return load_benchmark("train_step")


def test_train_step_benchmark_small_on_cpu(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "train_step.tsv"
    table = bench.main(["--device", "cpu", "--arch", "deeplabv2_small", "--width", "8", "--source-size", "80", "45",
                        "--crop", "64", "32", "--target-size", "64", "32", "--threads", "1", "--images", "2",
                        "--warmup", "1", "--repeats", "1", "--project", "--out", str(out)])
    printed = capsys.readouterr().out
    stages = ("source", "aa_fda", "st", "online", "online_gmm")
    assert len(table) == 20
    assert set(zip(table["stage"], table["precision"], table["channels_last"])) == {
        (s, p, c) for s in stages for p in ("fp32", "bf16") for c in (False, True)}
    phases = [f"{p}_s" for p in bench.PHASES]
    assert (table[phases] >= 0).all().all()
    assert (table[["data_s", "forward_s", "backward_s", "optimizer_s", "iteration_s"]] > 0).all().all()
    # The discriminators take time in the adversarial stage only; FDA there and in the online stages, whose source
    # batches keep the chain's image translation (the preset's offline stage is target-only).
    aa = table["stage"] == "aa_fda"
    translated = table["stage"].isin(["aa_fda", "online", "online_gmm"])
    assert (table.loc[translated, "fda_s"] > 0).all() and (table.loc[~translated, "fda_s"] == 0).all()
    assert (table.loc[aa, "discriminator_s"] > 0).all() and (table.loc[~aa, "discriminator_s"] == 0).all()
    # The teacher's forward, mixing and EMA update take time in the online stages only; the GMM refit is timed
    # in the GMM stage only, and its share is in the iteration's time.
    online = table["stage"].isin(["online", "online_gmm"])
    for phase in ("teacher_s", "ema_s"):
        assert (table.loc[online, phase] > 0).all() and (table.loc[~online, phase] == 0).all()
    gmm = table["stage"] == "online_gmm"
    assert (table.loc[gmm, "gmm_refit_s"] > 0).all() and table.loc[~gmm, "gmm_refit_s"].isna().all()
    summed = table[[p for p in phases if p != "data_s"]].sum(axis=1)
    assert table["profiled_iteration_s"].tolist() == pytest.approx(summed.tolist())
    assert table["iterations_per_s"].tolist() == pytest.approx((1 / table["iteration_s"]).tolist())
    assert all(math.isfinite(v) and v > 0 for v in table["loss"])
    assert table["peak_memory_gib"].isna().all()                   # no GPU: not measured, not invented
    assert printed.count("projected training hours") == 4 and "# cpu" in printed
    # each online iteration against the source-only one of the same variant, as printed
    row = table.set_index(["stage", "precision", "channels_last"])["iteration_s"]
    ratio = row[("online_gmm", "fp32", True)] / row[("source", "fp32", True)]
    assert f"# online_gmm iteration / source-only iteration (fp32, channels_last=True): {ratio:.2f}x" in printed
    assert printed.count("iteration / source-only iteration") == 8
    written = pd.read_csv(out, sep="\t")
    assert list(written.columns) == list(table.columns) and len(written) == 20


def test_projected_hours_by_hand():
    config = load_config(REPO / "workflow/presets/gta5_cityscapes.yaml", overrides={"model": {"init": "init.pth"}},
                         check_paths=False)
    # 25k source-only x 1 s + (25k AA + 3 rounds x 25k) x 2 s + 1 round x 25k ST x 3 s = 300,000 s.
    hours = _bench().projected_hours(config, {"source": 1.0, "aa_fda": 2.0, "st": 3.0})
    assert hours == pytest.approx(300_000 / 3600)
