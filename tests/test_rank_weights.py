"""Ranking (Eq. 1, S_k) from a maps file and sampling weights (Eqs. 3-5) from class statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from uncerda_core.artifacts import UncerdaError
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.uncertainty.maps import MapsWriter
from uncerda_core.uncertainty.rank import rank_classes, read_sk, write_rank
from uncerda_core.uncertainty.weights import (compute_sampling_weights, draw_summary, drawn_pixel_share,
                                              rarest_classes, write_weights)


def _maps(path):
    # class 0: entropies 0.25, 0.25; class 1: 0.5, 1.0; class 2: 0.75; class 3 never predicted
    argmax = np.array([[0, 0, 1], [1, 2, 2]], dtype=np.uint8)
    entropy = np.array([[0.25, 0.25, 0.5], [1.0, 0.75, 0.75]], dtype=np.float16)
    with MapsWriter(path, 2, 2, 3, 4, ["a", "b", "c", "d"]) as w:
        w.write(0, "x", argmax, entropy, entropy)
        w.write(1, "y", argmax, entropy, entropy)


def test_rank_classes_and_sk(tmp_path):
    _maps(tmp_path / "m.h5")
    df = rank_classes(tmp_path / "m.h5", 2, ["a", "b", "c", "d"])
    assert df["pixels"].tolist() == [4, 4, 4, 0]
    np.testing.assert_allclose(df["mean_entropy"][:3], [0.25, 0.75, 0.75])
    assert np.isnan(df["mean_entropy"][3])
    assert df["rank"].tolist() == [4, 2, 3, 1]            # never predicted first, tie 1 vs 2 by id
    assert df["in_sk"].tolist() == [False, True, False, True]
    pd.testing.assert_frame_equal(rank_classes(tmp_path / "m.h5", 2, ["a", "b", "c", "d"], stored=False), df)
    out = tmp_path / "rank.csv"
    write_rank(df, out, {"stage": "rank"})
    text = out.read_text().splitlines()
    assert text[0] == "class_id,class,mean_entropy,pixels,rank,in_sk"
    assert text[4] == "3,d,,0,1,True"                    # empty cell for a never-predicted class
    assert json.loads((tmp_path / "rank.csv.provenance.json").read_text())["stage"] == "rank"
    assert read_sk(out) == [3, 1]


def test_rank_errors(tmp_path):
    _maps(tmp_path / "m.h5")
    with pytest.raises(UncerdaError, match="classes"):
        rank_classes(tmp_path / "m.h5", 2, list(CLASS_NAMES))
    (tmp_path / "r.csv").write_text("class_id,rank\n0,1\n")
    with pytest.raises(UncerdaError, match="in_sk"):
        read_sk(tmp_path / "r.csv")


def _stats(path):
    rows = {"name": ["00001", "00002", "00003"]}
    for c in CLASS_NAMES:
        rows[c] = [0, 0, 0]
    rows["road"] = [10, 0, 0]
    rows["wall"] = [30, 0, 8]
    rows["sky"] = [0, 50, 5]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_sampling_weights_from_stats(tmp_path):
    _stats(tmp_path / "s.csv")
    df = compute_sampling_weights(tmp_path / "s.csv", [0, 3], balance=0.0, alpha=80, mu=0.02,
                                  reading="weighted_mean")
    assert df.columns.tolist() == ["name", "p_i", "p_norm", "weight", "probability"]
    assert df["name"].tolist() == ["00001", "00002", "00003"]      # names stay strings
    np.testing.assert_allclose(df["p_i"], [1 / 103, 0.0, 1 / 103])
    assert df["weight"][1] == pytest.approx(0.1 + 1 / (1 + math.exp(1.6)))
    assert df["probability"].sum() == pytest.approx(1.0)
    allc = compute_sampling_weights(tmp_path / "s.csv", None, balance=0.0, alpha=80, mu=0.02,
                                    reading="weighted_mean")
    np.testing.assert_allclose(allc["p_i"], [1 / 103] * 3)        # +SR at balance 0: all alike
    # The class-draw reading (the default): p_i is the image's share of the 103 pixels at balance 0.
    reach = compute_sampling_weights(tmp_path / "s.csv", None, balance=0.0, alpha=80, mu=0.02)
    np.testing.assert_allclose(reach["p_i"], [40 / 103, 50 / 103, 13 / 103])
    write_weights(df, tmp_path / "w.csv", {"stage": "weights"})
    back = pd.read_csv(tmp_path / "w.csv")
    np.testing.assert_allclose(back["probability"], df["probability"], rtol=1e-11)
    assert (tmp_path / "w.csv.provenance.json").exists()


def test_draw_summary_measures_how_far_the_draws_are_from_uniform_by_hand():
    table = pd.DataFrame({"p_i": [0.4, 0.0, 0.2], "probability": [0.5, 0.25, 0.25]})
    summary = draw_summary(table)
    # 0.5 * (|0.5 - 1/3| + 2 |0.25 - 1/3|) = 0.5 * (1/6 + 1/6) = 1/6 of the draws moved.
    assert summary.moved_share == pytest.approx(1 / 6) and summary.max_over_min == pytest.approx(2.0)
    assert summary.images == 3 and summary.without_sk == 1 and not summary.nearly_uniform
    assert "16.7 % of the draws" in summary.describe() and "almost as uniform" not in summary.describe()
    flat = draw_summary(pd.DataFrame({"p_i": [1.0, 2.0, 3.0], "probability": [1.0, 1.0, 1.0]}))
    assert flat.moved_share == pytest.approx(0.0) and flat.nearly_uniform and "almost as uniform" in flat.describe()
    # Every draw on one image: 1 - 1/M moved, no smallest probability to divide by.
    one = draw_summary(pd.DataFrame({"p_i": [1.0, 0.0, 0.0], "probability": [1.0, 0.0, 0.0]}))
    assert one.moved_share == pytest.approx(2 / 3) and one.max_over_min == float("inf")
    with pytest.raises(UncerdaError, match="draw summary"):
        draw_summary(pd.DataFrame({"p_i": [0.0], "probability": [0.0]}))


def _weights_command(tmp_path, sk_row: str, balance: str, reading: str) -> int:
    """`uncerda weights` on the three images of :func:`_stats`, S_k the one class of ``sk_row``, into w.csv."""
    from uncerda_core.cli import main
    _stats(tmp_path / "s.csv")
    (tmp_path / "rank.csv").write_text(f"class_id,class,mean_entropy,pixels,rank,in_sk\n{sk_row}\n")
    return main(["weights", "--class-stats", str(tmp_path / "s.csv"), "--rank", str(tmp_path / "rank.csv"),
                 "--balance", balance, "--alpha", "80", "--mu", "0.02", "--reading", reading,
                 "--out", str(tmp_path / "w.csv")])


def test_weights_command_says_how_far_its_draws_are_from_uniform(tmp_path, capsys):
    assert _weights_command(tmp_path, "0,road,0.5,10,1,True", "0", "weighted_mean") == 0
    # S_k = {road}: only image 00001 holds it, weights 1.1, 0.268, 0.268 -> one image drawn 4.1x as often.
    expected = draw_summary(pd.read_csv(tmp_path / "w.csv"))
    assert expected.without_sk == 2 and expected.max_over_min == pytest.approx(1.1 / (0.1 + 1 / (1 + math.exp(1.6))))
    assert not expected.nearly_uniform
    out = capsys.readouterr().out
    assert "3 images, 2 without an S_k pixel" in out and f"{100 * expected.moved_share:.1f} % of the draws" in out
    draws = json.loads((tmp_path / "w.csv.provenance.json").read_text())["draws"]
    assert draws["moved_share"] == pytest.approx(expected.moved_share) and draws["without_sk"] == 2


def test_draw_summary_class_mix_by_hand():
    # Two images: [1, 3] and [3, 1] pixels of classes 0 and 1 (19 columns, the rest empty).
    counts = np.zeros((2, len(CLASS_NAMES)), dtype=np.int64)
    counts[:, :2] = [[1, 3], [3, 1]]
    table = pd.DataFrame({"p_i": [0.6, 0.2], "probability": [0.75, 0.25]})
    # Drawn: 0.75 [1, 3] + 0.25 [3, 1] = [1.5, 2.5] -> shares [0.375, 0.625] against uniform [0.5, 0.5].
    np.testing.assert_allclose(drawn_pixel_share(np.array([0.75, 0.25]), counts)[:2], [0.375, 0.625])
    summary = draw_summary(table, counts, sk=[1])
    assert summary.class_multipliers == {"road": pytest.approx(0.75), "sidewalk": pytest.approx(1.25)}
    assert summary.sk == ["sidewalk"] and summary.sk_multiplier == pytest.approx(1.25)
    # The rarest present classes (both in two images, 4 pixels each; ties by id): together x1.00.
    assert summary.rarest == ["road", "sidewalk"] and summary.rarest_multiplier == pytest.approx(1.0)
    assert "x1.25 the share of S_k (sidewalk)" in summary.describe()
    control = draw_summary(table, counts)   # +SR: every class, no S_k multiplier
    assert control.sk == [] and control.sk_multiplier is None
    assert rarest_classes(np.array([[0, 5, 1, 0], [2, 5, 0, 0], [2, 5, 0, 0]]), n=2) == [2, 0]
    with pytest.raises(UncerdaError, match="do not match"):
        draw_summary(table, counts[:1])


def test_weights_command_reports_the_class_mix_of_its_draws(tmp_path, capsys):
    from uncerda_core.cli import main
    assert _weights_command(tmp_path, "3,wall,0.5,38,1,True", "0.9", "class_draw") == 0
    record = json.loads((tmp_path / "w.csv.provenance.json").read_text())
    assert record["reading"] == "class_draw" and record["draws"]["sk"] == ["wall"]
    # S_k = {wall}: images 1 and 3 hold 30 and 8 of its 38 pixels; image 2 none.
    weights = pd.read_csv(tmp_path / "w.csv")
    np.testing.assert_allclose(weights["p_norm"], [1.0, 0.0, 8 / 30])
    counts = np.zeros((3, len(CLASS_NAMES)))
    counts[:, [0, 3, 10]] = [[10, 30, 0], [0, 0, 50], [0, 8, 5]]
    p = weights["probability"].to_numpy()
    expected = (p @ counts[:, 3] / (p @ counts).sum()) / (38 / 103)   # uniform: 38 of the 103 pixels
    assert record["draws"]["sk_multiplier"] == pytest.approx(expected) and expected > 1
    assert f"x{expected:.2f} the share of S_k (wall)" in capsys.readouterr().out
    with pytest.raises(SystemExit):   # the reading is the config's tgaa.reading: no default here
        main(["weights", "--class-stats", str(tmp_path / "s.csv"), "--all-classes", "--balance", "0.9",
              "--alpha", "80", "--mu", "0.02", "--out", str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


def test_sampling_weights_bad_stats(tmp_path):
    (tmp_path / "s.csv").write_text("name,road\n1,5\n")
    with pytest.raises(UncerdaError, match=r"s\.csv: class-statistics columns must be name,road,sidewalk"):
        compute_sampling_weights(tmp_path / "s.csv", [0], 0.9, 80, 0.02)
    _stats(tmp_path / "t.csv")
    with pytest.raises(UncerdaError, match="S_k"):
        compute_sampling_weights(tmp_path / "t.csv", [19], 0.9, 80, 0.02)


def test_rank_over_worker_processes_equals_serial(tmp_path, monkeypatch):
    from uncerda_core.uncertainty import histogram

    monkeypatch.setattr(histogram, "PARALLEL_MIN_IMAGES", 2)
    monkeypatch.setattr(histogram, "MIN_IMAGES_PER_TASK", 1)
    _maps(tmp_path / "m.h5")
    serial = rank_classes(tmp_path / "m.h5", 2, ["a", "b", "c", "d"], workers=1)
    parallel = rank_classes(tmp_path / "m.h5", 2, ["a", "b", "c", "d"], workers=2)
    pd.testing.assert_frame_equal(parallel, serial)
    with pytest.raises(UncerdaError, match="classes"):
        rank_classes(tmp_path / "m.h5", 2, list(CLASS_NAMES), workers=2)


@pytest.mark.parametrize("argv, flag", [
    (["rank", "--maps", "m.h5", "--out", "r.csv"], "--k"),
    (["weights", "--class-stats", "s.csv", "--all-classes", "--alpha", "80", "--mu", "0.02", "--out", "w.csv"],
     "--balance"),
    (["summarize", "Source only=e.json", "--out", "s.md"], "--source-dataset"),
])
def test_config_values_have_no_command_line_default(tmp_path, capsys, monkeypatch, argv, flag):
    """tgaa.k, balance, alpha, mu and source.dataset reach these commands from the resolved config (the
    rules pass them); a flag left out is an error, not a second default beside the schema's."""
    from uncerda_core.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"the following arguments are required: {flag}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_weights_command_uniform_draws_every_image_alike(tmp_path):
    from uncerda_core.cli import main
    _stats(tmp_path / "s.csv")
    assert main(["weights", "--class-stats", str(tmp_path / "s.csv"), "--uniform", "--balance", "0", "--alpha", "80",
                 "--mu", "0.02", "--reading", "class_draw", "--out", str(tmp_path / "u.csv")]) == 0
    table = pd.read_csv(tmp_path / "u.csv")
    np.testing.assert_allclose(table["probability"], [1 / 3] * 3)
    record = json.loads((tmp_path / "u.csv.provenance.json").read_text())
    assert record["reading"] == "uniform" and record["draws"]["moved_share"] == pytest.approx(0.0)
    assert record["draws"]["rarest_multiplier"] == pytest.approx(1.0) and record["draws"]["sk_multiplier"] is None


def test_read_sk_takes_the_k_classes_ranked_first_when_asked(tmp_path):
    from uncerda_core.uncertainty.rank import read_sk
    (tmp_path / "rank.csv").write_text("class_id,class,mean_entropy,pixels,rank,in_sk\n"
                                       "0,road,0.1,9,3,False\n1,sidewalk,0.5,9,1,True\n2,building,0.3,9,2,False\n")
    assert read_sk(tmp_path / "rank.csv") == [1]
    assert read_sk(tmp_path / "rank.csv", k=2) == [1, 2] and read_sk(tmp_path / "rank.csv", k=3) == [1, 2, 0]
    with pytest.raises(UncerdaError, match="k must be in"):
        read_sk(tmp_path / "rank.csv", k=4)


def test_eq5_grid_draws_are_the_weights_commands_draws_for_each_pair():
    from uncerda_core.uncertainty.equations import logistic_weight, sampling_weights
    from uncerda_core.uncertainty.weights import eq5_grid_draws
    counts = np.zeros((4, len(CLASS_NAMES)), dtype=np.int64)
    counts[:, :3] = [[60, 40, 0], [50, 45, 5], [55, 40, 5], [70, 30, 0]]
    grid = eq5_grid_draws(counts, [2], 0.9, "class_draw", alphas=[20, 80], mus=[0.02, 0.5])
    assert list(zip(grid["alpha"], grid["mu"])) == [(20, 0.02), (20, 0.5), (80, 0.02), (80, 0.5)]
    for _, row in grid.iterrows():
        out = sampling_weights(counts, [2], 0.9, row["alpha"], row["mu"], "class_draw")
        summary = draw_summary(pd.DataFrame(out), counts, [2])
        assert row["moved_share"] == pytest.approx(summary.moved_share)
        assert row["sk_multiplier"] == pytest.approx(summary.sk_multiplier)
        # p_norm is 1 for the two images with the S_k class and 0 for the two without.
        on_rise = np.mean(logistic_weight(out["p_norm"], row["alpha"], row["mu"]) < 0.95 * 1.1)
        assert row["on_rise"] == pytest.approx(on_rise) and row["without_sk"] == 2
    # mu 0.5 puts p_norm 0 well on the rise and 1 on the top: half the images; mu 0.02 with alpha 80 too.
    assert grid.loc[(grid["alpha"] == 80) & (grid["mu"] == 0.5), "on_rise"].item() == pytest.approx(0.5)
