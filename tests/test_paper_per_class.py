"""Tables 1 and 2 in the paper's layout (:mod:`uncerda_core.report.per_class`): per-class means over seeds,
the mIoU's spread, the paper's rows beside ours, and the refusal of a metrics file evaluated over another
source data set's classes; every number checked against one computed by hand."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from uncerda_core.artifacts import read_json, sidecar_path
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.errors import UncerdaError
from uncerda_core.report.per_class import PAPER_PER_CLASS, per_class_table

AA, ST = "UncerDA (AA)", "UncerDA (ST)"
SYNTHIA16 = ["road", "sidewalk", "building", "wall", "fence", "pole", "light", "sign", "vegetation", "sky",
             "person", "rider", "car", "bus", "motorcycle", "bicycle"]
TAIL = ["n_seeds", "miou_std", "miou_seeds", "protocol"]


def _metrics(tmp_path, name: str, default: float, special: dict[str, float | None], **subsets: float) -> str:
    """A metrics JSON as `uncerda evaluate` writes it: every one of the 19 classes at ``default`` except
    ``special``, and the given mIoU subsets (computed by hand in each test)."""
    per_class = {c: special.get(c, default) for c in CLASS_NAMES}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**subsets, "per_class_iou": per_class}))
    return str(path)


def _gta5_items(tmp_path) -> list[tuple[str, int, str]]:
    # AA seed 0: road 0.80, train absent (None), 17 classes at 0.40 -> mIoU (0.80 + 6.80) / 18 = 7.6 / 18.
    # AA seed 1: road 0.90, train 0.10, 17 classes at 0.50 -> mIoU (0.90 + 8.50 + 0.10) / 19 = 0.5.
    # ST seeds 0, 1: every class 0.60 / 0.70 -> mIoU 0.60 / 0.70.
    return [(AA, 0, _metrics(tmp_path, "aa0", 0.40, {"road": 0.80, "train": None}, miou=7.6 / 18)),
            (AA, 1, _metrics(tmp_path, "aa1", 0.50, {"road": 0.90, "train": 0.10}, miou=0.5)),
            (ST, 0, _metrics(tmp_path, "st0", 0.60, {}, miou=0.60)),
            (ST, 1, _metrics(tmp_path, "st1", 0.70, {}, miou=0.70))]


def test_gta5_means_spread_and_the_paper_rows_beside(tmp_path):
    table = per_class_table(_gta5_items(tmp_path), "gta5")
    assert list(table.columns) == ["model", "source", *CLASS_NAMES, "miou", *TAIL]
    assert list(table["model"]) == [AA, AA, ST, ST]
    assert list(table["source"]) == ["ours (2 seeds)", "paper", "ours (2 seeds)", "paper"]
    aa, aa_paper, st, st_paper = (table.iloc[i] for i in range(4))
    assert aa["road"] == pytest.approx(0.85) and aa["sidewalk"] == pytest.approx(0.45)
    assert aa["train"] == pytest.approx(0.10)   # seed 0 has no IoU for it: the mean of the seed that has one
    # mIoU: mean of 0.422222 and 0.5 = 0.461111; sample std |0.5 - 0.422222| / sqrt(2) = 0.0549972.
    assert aa["miou"] == pytest.approx(0.4611111, rel=1e-6)
    assert aa["miou_std"] == pytest.approx(0.0549972, rel=1e-5)
    assert aa["n_seeds"] == 2 and aa["miou_seeds"] == "0.4222;0.5000"
    assert st["car"] == pytest.approx(0.65) and st["miou"] == pytest.approx(0.65)
    assert st["miou_std"] == pytest.approx(0.0707107, rel=1e-5)
    # The paper's rows, as published (percent / 100).
    assert aa_paper["road"] == 0.887 and aa_paper["train"] == 0.034 and aa_paper["bicycle"] == 0.425
    assert aa_paper["miou"] == 0.488 and st_paper["miou"] == 0.526
    assert st_paper["sidewalk"] == 0.387 and st_paper["train"] == 0.002 and st_paper["bus"] == 0.504
    assert aa_paper["n_seeds"] == "" and math.isnan(aa_paper["miou_std"])


def test_synthia_has_its_16_classes_and_miou_star(tmp_path):
    # Every seed also has IoUs for terrain, truck and train (0: a SYNTHIA model never predicts them), which
    # the table leaves out. Seed 0: 13 classes at 0.30, wall 0.10, fence 0.00, pole 0.20 -> mIoU
    # (3.9 + 0.3) / 16 = 0.2625, mIoU* 0.30. Seed 1: 0.40, wall 0.20, fence 0.10, pole 0.30 -> mIoU
    # (5.2 + 0.6) / 16 = 0.3625, mIoU* 0.40.
    absent = {"terrain": 0.0, "truck": 0.0, "train": 0.0}
    items = [(ST, 0, _metrics(tmp_path, "s0", 0.30, {**absent, "wall": 0.10, "fence": 0.0, "pole": 0.20},
                              miou=0.2625, miou13=0.30)),
             (ST, 1, _metrics(tmp_path, "s1", 0.40, {**absent, "wall": 0.20, "fence": 0.10, "pole": 0.30},
                              miou=0.3625, miou13=0.40))]
    table = per_class_table(items, "synthia")
    assert list(table.columns) == ["model", "source", *SYNTHIA16, "miou", "miou13", *TAIL]
    ours, paper = table.iloc[0], table.iloc[1]
    assert ours["wall"] == pytest.approx(0.15) and ours["fence"] == pytest.approx(0.05)
    assert ours["sky"] == pytest.approx(0.35)
    assert ours["miou"] == pytest.approx(0.3125) and ours["miou13"] == pytest.approx(0.35)
    assert ours["miou_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert paper["source"] == "paper" and paper["miou"] == 0.480 and paper["miou13"] == 0.546
    assert paper["wall"] == 0.193 and paper["bicycle"] == 0.569
    aa_paper = PAPER_PER_CLASS["synthia"][AA]
    assert aa_paper["fence"] == 0.008 and aa_paper["miou"] == 0.452 and aa_paper["miou13"] == 0.520


def test_paper_rows_agree_with_their_published_means():
    """A typo in a class's number would move the row's mean away from its published mIoU (and mIoU*) by
    more than the published rounding (0.05 points per class on average, under 0.1 overall)."""
    for source, rows in PAPER_PER_CLASS.items():
        classes = CLASS_NAMES if source == "gta5" else SYNTHIA16
        for label, row in rows.items():
            assert set(row) == {*classes, "miou", *(["miou13"] if source == "synthia" else [])}, (source, label)
            assert sum(row[c] for c in classes) / len(classes) == pytest.approx(row["miou"], abs=0.001)
            if source == "synthia":
                star = [c for c in SYNTHIA16 if c not in ("wall", "fence", "pole")]
                assert sum(row[c] for c in star) / 13 == pytest.approx(row["miou13"], abs=0.001)


def test_a_class_without_iou_in_every_seed_and_a_row_without_paper_row(tmp_path):
    items = [("Source only", 0, _metrics(tmp_path, "so0", 0.20, {"train": None}, miou=0.20)),
             ("Source only", 1, _metrics(tmp_path, "so1", 0.30, {"train": None}, miou=0.30))]
    table = per_class_table(items, "gta5")
    assert len(table) == 1 and math.isnan(table.iloc[0]["train"])
    assert table.iloc[0]["source"] == "ours (2 seeds); no paper row for 'Source only'"
    one_seed = per_class_table(items[:1], "gta5").iloc[0]
    assert one_seed["source"].startswith("ours (1 seed)") and math.isnan(one_seed["miou_std"])
    # A source data set the paper has no rows for: ours only, and it says so.
    other = per_class_table([(AA, 0, items[0][2])], "cityscapes")
    assert list(other["source"]) == ["ours (1 seed); the paper has no rows for source 'cityscapes'"]


def test_refuses_metrics_evaluated_over_another_source_datasets_classes(tmp_path):
    gta5 = _metrics(tmp_path, "gta5_eval", 0.40, {}, miou=0.40)
    synthia = _metrics(tmp_path, "synthia_eval", 0.40, {}, miou=0.40, miou13=0.40)
    with pytest.raises(UncerdaError, match=r"gta5_eval\.json: reports miou, but a synthia .*--source-dataset"):
        per_class_table([(AA, 0, gta5)], "synthia")
    with pytest.raises(UncerdaError, match=r"synthia_eval\.json: reports miou and miou13, but a gta5"):
        per_class_table([(AA, 0, synthia)], "gta5")
    # The right subsets, but mIoU over all 19 classes: 18 at 0.40 and terrain 0.00 average 7.2 / 19, not the
    # 0.40 of the 16 SYNTHIA classes.
    over19 = _metrics(tmp_path, "over19", 0.40, {"terrain": 0.0}, miou=7.2 / 19, miou13=0.40)
    with pytest.raises(UncerdaError, match=r"over19\.json: its miou \(0\.3789\) is not the mean IoU over the 16"):
        per_class_table([(AA, 0, over19)], "synthia")
    with pytest.raises(UncerdaError, match="seed 0 twice"):
        per_class_table([(AA, 0, gta5), (AA, 0, gta5)], "gta5")


def test_per_class_table_command_end_to_end(tmp_path, capsys):
    from uncerda_core.cli import main
    out = tmp_path / "tables"
    rows = [f"{label}|{seed}|{path}" for label, seed, path in _gta5_items(tmp_path)]
    args = ["per-class-table", *(a for row in rows for a in ("--row", row)), "--source-dataset", "gta5",
            "--out-dir", str(out)]
    assert main(args) == 0
    table = pd.read_csv(out / "per_class.csv")
    assert list(table.columns) == ["model", "source", *CLASS_NAMES, "miou", *TAIL]
    assert table.loc[0, "road"] == pytest.approx(0.85) and table.loc[1, "road"] == 0.887
    assert table.loc[2, "miou"] == pytest.approx(0.65) and table.loc[3, "miou"] == 0.526
    record = read_json(sidecar_path(out / "per_class.csv"), "provenance")
    assert record["stage"] == "per-class-table" and record["rows"] == rows and record["source_dataset"] == "gta5"
    markdown = (out / "per_class.md").read_text()
    # Percentages with one decimal: our AA road 85.0 beside the paper's 88.7; mIoU 46.1 beside 48.8.
    aa, aa_paper = markdown.splitlines()[2:4]
    assert aa.startswith(f"| {AA} | ours (2 seeds) | 85.0 | 45.0 |") and "| 46.1 | 2 | 5.5 |" in aa
    assert aa_paper.startswith(f"| {AA} | paper | 88.7 | 31.2 |") and "| 48.8 |  | - |" in aa_paper
    assert markdown in capsys.readouterr().out
    assert main(["per-class-table", "--row", f"{AA}|zero|{rows[0].split('|')[2]}", "--source-dataset", "gta5",
                 "--out-dir", str(tmp_path / "bad")]) == 2
    assert "integer seed" in capsys.readouterr().err and not (tmp_path / "bad").exists()
