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
    assert len(table) == 12
    assert set(zip(table["stage"], table["precision"], table["channels_last"])) == {
        (s, p, c) for s in ("source", "aa_fda", "st") for p in ("fp32", "bf16") for c in (False, True)}
    phases = [f"{p}_s" for p in bench.PHASES]
    assert (table[phases] >= 0).all().all()
    assert (table[["data_s", "forward_s", "backward_s", "optimizer_s", "iteration_s"]] > 0).all().all()
    # FDA and the discriminators take time in the adversarial stage only.
    aa = table["stage"] == "aa_fda"
    assert (table.loc[aa, "fda_s"] > 0).all() and (table.loc[~aa, "fda_s"] == 0).all()
    assert (table.loc[aa, "discriminator_s"] > 0).all() and (table.loc[~aa, "discriminator_s"] == 0).all()
    summed = table[[p for p in phases if p != "data_s"]].sum(axis=1)
    assert table["profiled_iteration_s"].tolist() == pytest.approx(summed.tolist())
    assert table["iterations_per_s"].tolist() == pytest.approx((1 / table["iteration_s"]).tolist())
    assert all(math.isfinite(v) and v > 0 for v in table["loss"])
    assert table["peak_memory_gib"].isna().all()                   # no GPU: not measured, not invented
    assert printed.count("projected training hours") == 4 and "# cpu" in printed
    written = pd.read_csv(out, sep="\t")
    assert list(written.columns) == list(table.columns) and len(written) == 12


def test_projected_hours_by_hand():
    config = load_config(REPO / "workflow/presets/gta5_cityscapes.yaml", overrides={"model": {"init": "init.pth"}},
                         check_paths=False)
    # 25k source-only x 1 s + (25k AA + 3 rounds x 25k) x 2 s + 1 round x 25k ST x 3 s = 300,000 s.
    hours = _bench().projected_hours(config, {"source": 1.0, "aa_fda": 2.0, "st": 3.0})
    assert hours == pytest.approx(300_000 / 3600)
