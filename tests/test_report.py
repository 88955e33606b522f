"""Report figures and HTML tables: each figure function and the HTML table on small synthetic inputs, the figure
commands, and (slow) the whole report of the smoke config built by Snakemake."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from uncerda_core.artifacts import UncerdaError
from uncerda_core.cli import main
from uncerda_core.data.labels import CLASS_NAMES, NUM_CLASSES
from uncerda_core.report import figures, inputs
from uncerda_core.stages import stage_label
from workflow_helpers import smoke_args, snakemake


def assert_png(path) -> np.ndarray:
    """A valid PNG with content: decodes, is not one flat colour and not all white."""
    path = Path(path)
    assert path.is_file(), f"{path} missing"
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100, pixels.shape
    assert pixels.std() > 0, f"{path} is blank"
    assert (pixels < 250).any(axis=-1).mean() > 0.01, f"{path} is (almost) all white"
    return pixels


# --- synthetic inputs ----------------------------------------------------------------------------------

def _eval(rng, missing=("truck",)) -> dict:
    per_class = {c: (None if c in missing else float(rng.random() * 0.6)) for c in CLASS_NAMES}
    values = [v for v in per_class.values() if v is not None]
    return {"miou": float(np.mean(values)), "per_class_iou": per_class}


def _rank(rng, k=7, never=(3, 4)) -> pd.DataFrame:
    from uncerda_core.uncertainty.codes import N_CODES
    from uncerda_core.uncertainty.rank import rank_table
    hist = np.zeros((NUM_CLASSES, N_CODES), dtype=np.int64)
    for c in range(NUM_CLASSES):
        if c not in never:
            hist[c, rng.integers(0, 0x3C00, size=50)] += 1
    return rank_table(hist, k, CLASS_NAMES)


def _weights(rng, sk) -> pd.DataFrame:
    from uncerda_core.uncertainty.equations import sampling_weights
    counts = rng.integers(0, 500, size=(40, NUM_CLASSES))
    counts[:10, sk] = 0      # images without any S_k pixel are drawn less often
    return pd.DataFrame({"name": [f"{i:05d}" for i in range(40)], **sampling_weights(counts, sk, 0.9, 80.0, 0.02)})


def _maps(path, n=6, h=16, w=16):
    """Class 0 bimodal entropy (low on the left half, high on the right), class 1 bimodal too, class 2 a
    handful of pixels, the rest never predicted."""
    from uncerda_core.uncertainty.maps import MapsWriter
    rng = np.random.default_rng(0)
    names = []
    with MapsWriter(path, n, h, w, NUM_CLASSES, list(CLASS_NAMES)) as writer:
        for i in range(n):
            argmax = np.zeros((h, w), np.uint8)
            argmax[h // 2:] = 1
            argmax[0, 0] = 2
            ent = np.where(np.arange(w)[None, :] < w // 2, 0.1, 0.6) + 0.05 * rng.standard_normal((h, w))
            ent = np.clip(ent, 0, 1).astype(np.float16)
            writer.write(i, f"img{i}", argmax, ent, (1 - ent.astype(np.float32)).astype(np.float16))
            names.append(f"img{i}")
    return names


@pytest.fixture(scope="module")
def pseudo_dir(tmp_path_factory):
    """A maps file and its GMM pseudo-label folder with quality tables (ground truth = argmax on the
    left half, wrong on the right)."""
    from fixtures_data import pseudo_settings
    from uncerda_core.pseudo.labels import generate_pseudo_labels
    from uncerda_core.uncertainty.maps import open_maps
    tmp = tmp_path_factory.mktemp("pseudo")
    maps = tmp / "tgaa_r1.h5"
    _maps(maps)
    with open_maps(maps) as m:
        truth = {name: arrays["argmax"] for name, arrays in m.iter_images(fields=("argmax",))}

    def gt(name):
        label = truth[name].copy()
        label[:, label.shape[1] // 2:] = 5
        return label
    out = tmp / "gmm"
    generate_pseudo_labels(maps, pseudo_settings(min_pixels=5), out, gt_lookup=gt)
    return maps, out


# --- one figure per function -----------------------------------------------------------------------------

def test_stage_colors_and_names():
    assert figures.stage_colors(1) == [figures.LAST_COLOR]
    colors = figures.stage_colors(5)
    assert len(colors) == 5 and colors[0] == figures.FIRST_COLOR and colors[-1] == figures.LAST_COLOR
    assert len(set(colors)) == 5
    assert inputs.round_label("aa_it") == "round 0 (aa_it)"
    assert inputs.round_label("tgaa_r3") == "round 3 (tgaa_r3)"
    assert inputs.model_name("x/seed0/models/tgaa_r1/checkpoint.pt") == "tgaa_r1"
    assert inputs.model_name("x/seed0/eval/aa_it.json") == "aa_it"
    assert figures.parse_intervals("[0, 0.192627]; [0.69043, 1]") == [(0.0, 0.192627), (0.69043, 1.0)]
    assert figures.parse_intervals(float("nan")) == [] and figures.parse_intervals("") == []
    assert inputs.pick_indices(10, 4) == [0, 3, 6, 9]
    assert inputs.pick_indices(2, 4) == [0, 1] and inputs.pick_indices(0, 4) == []


def test_figure_inputs(tmp_path):
    """The readers the figure commands call: S_k of a ranking, round notes, stage labels by label or model."""
    rank = _rank(np.random.default_rng(0), k=3)
    rank.to_csv(tmp_path / "aa_it.csv", index=False)
    assert inputs.read_sk_classes(tmp_path / "aa_it.csv") == list(rank.loc[rank["in_sk"], "class"])
    assert len(inputs.read_sk_classes(tmp_path / "aa_it.csv")) == 3
    (tmp_path / "r1.json").write_text(json.dumps({"round": 1, "reason": "S_k changed between rounds 0 and 1"}))
    (tmp_path / "r3.json").write_text(json.dumps({"round": 3, "reason": "stop"}))
    labels = ["round 0 (aa_it)", "round 1 (tgaa_r1)"]
    assert inputs.read_round_notes([tmp_path / "r1.json"], labels, width=22) == {
        "round 1 (tgaa_r1)": "S_k changed between\nrounds 0 and 1"}
    with pytest.raises(UncerdaError, match="no ranking of round 3"):
        inputs.read_round_notes([tmp_path / "r3.json"], labels)
    assert inputs.weights_label("tgaa_r2") == "round 2" and inputs.weights_label("sr") == "+SR"
    paths = {"+IT": "s0/models/aa_it/checkpoint.pt", "+UPST": "s0/models/st_gmm_r1/checkpoint.pt"}
    assert inputs.stage_labels(["st_gmm_r1", "+IT"], paths, "--entropy") == ["+UPST", "+IT"]
    with pytest.raises(UncerdaError, match="--entropy tgaa_r1: no such stage"):
        inputs.stage_labels(["tgaa_r1"], paths, "--entropy")


def test_iou_figure(tmp_path):
    rng = np.random.default_rng(0)
    results = {label: _eval(rng) for label in ("Source only", "+IT", "+TGAA r1", "+TGAA r2", "+UPST")}
    results["+IT"]["per_class_iou"]["bus"] = None
    out = figures.iou_figure(results, tmp_path / "iou.png", highlight=["wall", "fence"])
    assert_png(out)
    with pytest.raises(UncerdaError):
        figures.iou_figure({}, tmp_path / "none.png")


def test_rank_figure(tmp_path):
    rng = np.random.default_rng(1)
    tables = {"round 0 (aa_it)": _rank(rng), "round 1 (tgaa_r1)": _rank(rng, never=(3,)),
              "round 2 (tgaa_r2)": _rank(rng, never=())}
    out = figures.rank_figure(tables, tmp_path / "rank.png", notes={"round 1 (tgaa_r1)": "S_k changed"})
    assert_png(out)
    other = _rank(rng)
    other.loc[0, "class"] = "not a class"
    with pytest.raises(UncerdaError, match="other classes"):
        figures.rank_figure({"a": _rank(rng), "b": other}, tmp_path / "bad.png")


def test_weights_figure(tmp_path):
    rng = np.random.default_rng(2)
    tables = {"round 1": _weights(rng, [3, 4, 5]), "round 2": _weights(rng, [6, 7])}
    out = figures.weights_figure(tables, tmp_path / "weights.png", alpha=80.0, mu=0.02,
                                 sk={"round 1": ["wall", "fence", "pole"]})
    assert_png(out)
    np.testing.assert_allclose(figures.eq5(np.array([0.02]), 80.0, 0.02), [0.6])


def test_weights_figure_uniform(tmp_path):
    """Every image equally weighted (one bar at 1): no degenerate histogram range."""
    df = pd.DataFrame({"name": list("abcd"), "p_i": [1.0] * 4, "p_norm": [1.0] * 4, "weight": [1.1] * 4,
                       "probability": [0.25] * 4})
    assert_png(figures.weights_figure({"round 1": df}, tmp_path / "w.png"))


def test_gmm_figure_from_maps(tmp_path, pseudo_dir):
    maps, folder = pseudo_dir
    hist, values, classes = inputs.load_gmm_inputs(maps, folder)
    assert hist.shape == (NUM_CLASSES, values.size)
    assert hist[0].sum() == 6 * 8 * 16 - 6 and hist[2].sum() == 6
    out = figures.gmm_figure(hist, values, classes, tmp_path / "gmm.png", title="test")
    assert_png(out)
    with pytest.raises(UncerdaError, match="rows"):
        figures.gmm_figure(hist, values, classes.iloc[:3], tmp_path / "bad.png")


def test_gmm_figure_nothing_predicted(tmp_path):
    classes = pd.DataFrame({"class_id": range(3), "class": ["a", "b", "c"], "degenerate": ["never predicted"] * 3})
    out = figures.gmm_figure(np.zeros((3, 5)), np.linspace(0, 1, 5), classes, tmp_path / "gmm.png")
    assert Path(out).is_file()


def test_pseudo_quality_figure(tmp_path, pseudo_dir):
    _, folder = pseudo_dir
    from uncerda_core.pseudo.folder import read_pseudo_dir
    classes, quality, overall = read_pseudo_dir(folder)
    assert quality is not None and overall["images_with_gt"] == 6
    assert_png(figures.pseudo_quality_figure(classes, tmp_path / "q.png", quality, overall, label="GMM"))
    # Without ground truth: coverage only.
    assert_png(figures.pseudo_quality_figure(classes, tmp_path / "q_nogt.png"))


def test_examples_figure(tmp_path):
    rng = np.random.default_rng(3)
    examples = []
    for i in range(3):
        label = rng.integers(0, NUM_CLASSES, size=(32, 64)).astype(np.uint8)
        label[:2] = 255
        ex = inputs.Example(name=f"city_{i:06d}_000019", image=rng.integers(0, 255, (32, 64, 3), dtype=np.uint8),
                             label=label)
        for stage in ("Source only", "+IT", "+UPST"):
            ex.predictions[stage] = rng.integers(0, NUM_CLASSES, size=(32, 64)).astype(np.uint8)
        ex.entropy = {"+IT": rng.random((32, 64)), "+UPST": rng.random((32, 64)) * 0.3}
        examples.append(ex)
    assert_png(figures.examples_figure(examples, tmp_path / "ex.png"))


def _losses(rng, n=30, adversarial=True, self_training=False, diverge=False) -> pd.DataFrame:
    """A losses.csv as train/loop.py writes it: falling segmentation loss, poly learning rate."""
    it = np.arange(1, n + 1) * 10
    seg = 2.5 * np.exp(-it / 150) + 0.05 * rng.random(n)
    if diverge:
        seg = seg[::-1] * 3
    df = pd.DataFrame({"iteration": it, "lr": 0.01 * (1 - it / (it[-1] + 1)) ** 0.9, "seg": seg,
                       "seg_aux": seg * 1.2})
    if adversarial:
        df = df.assign(adv_main=0.7 + 0.1 * rng.random(n), adv_aux=0.7, d_main=np.linspace(0.69, 0.05, n),
                       d_aux=0.69)
    if self_training:
        df = df.assign(st=seg * 0.8)
    return df.assign(total=df.drop(columns=["iteration", "lr"]).sum(axis=1))


def test_loss_change():
    assert figures.loss_change([2.0] * 10 + [1.0] * 10 + [1.0] * 80, 0.1) == pytest.approx(-0.5)
    assert figures.loss_change([1.0, 3.0]) == pytest.approx(2.0)
    assert np.isnan(figures.loss_change([1.0])) and np.isnan(figures.loss_change([np.nan, 1.0]))


def test_training_curves_figure(tmp_path):
    rng = np.random.default_rng(5)
    losses = {"Source only": _losses(rng, adversarial=False), "+IT": _losses(rng),
              "+TGAA r1": _losses(rng, diverge=True), "+UPST": _losses(rng, self_training=True)}
    miou = {"Source only": 0.2, "+IT": 0.25, "+TGAA r1": None, "+UPST": 0.31}
    pixels = assert_png(figures.training_curves_figure(losses, tmp_path / "curves.png", miou=miou))
    # One row of panels per stage plus the mIoU row: a tall figure.
    assert pixels.shape[0] > pixels.shape[1] * 0.8
    assert_png(figures.training_curves_figure({"+IT": _losses(rng)}, tmp_path / "one.png"))
    with pytest.raises(UncerdaError, match="no losses"):
        figures.training_curves_figure({}, tmp_path / "none.png")
    with pytest.raises(UncerdaError, match="iteration"):
        figures.training_curves_figure({"x": pd.DataFrame({"seg": [1.0]})}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


LADDER = pd.DataFrame({
    "rung": ["Source only", "+AA", "+IT", "+TGAA", "+UPST", "Target oracle (trained on target labels)"],
    "kind": ["rung"] * 5 + ["control"],
    "n_seeds": [2] * 6,
    "miou_mean": [0.20, 0.25, 0.26, 0.30, 0.33, 0.60],
    "miou_std": [0.01, 0.02, 0.01, 0.01, 0.02, 0.01],
    "miou_seeds": ["0.1900;0.2100", "0.2300;0.2700", "0.2500;0.2700", "0.2900;0.3100", "0.3100;0.3500",
                   "0.5900;0.6100"],
    "delta": [np.nan, 0.05, 0.01, 0.04, 0.03, np.nan],
    "delta_std": [np.nan, 0.01, 0.02, 0.01, 0.01, np.nan],
    "significant": ["", "yes", "no difference", "yes", "yes", ""],
})
METHODS = pd.DataFrame({"method": ["gmm", "cbst", "threshold", "argmax"], "precision_mean": [0.8, 0.7, 0.85, 0.6],
                        "coverage_mean": [0.5, 0.5, 0.3, 1.0], "miou_mean": [0.33, 0.31, 0.30, 0.28],
                        "miou_std": [0.01, 0.02, np.nan, 0.01], "n_seeds": [2] * 4})


def test_ladder_figure(tmp_path):
    assert_png(figures.ladder_figure(LADDER, tmp_path / "ladder.png"))
    # The documented layout with a model column and no kinds, mIoU already in %.
    percent = {c: LADDER[c] * 100 for c in ("miou_mean", "miou_std", "delta")}
    seeds = [";".join(f"{100 * float(v):.2f}" for v in cell.split(";")) for cell in LADDER["miou_seeds"]]
    other = LADDER.drop(columns=["kind"]).assign(model=["source_only", "aa", "aa_it", "tgaa_r2", "st_gmm_r1", "oracle"],
                                                 miou_seeds=seeds, **percent)
    assert_png(figures.ladder_figure(other, tmp_path / "ladder2.png"))
    with pytest.raises(UncerdaError):
        figures.ladder_figure(LADDER.iloc[:0], tmp_path / "empty.png")
    # With the control columns of the ablation's table.
    controlled = LADDER.assign(vs_control=[np.nan, -0.03, 0.027, np.nan, np.nan, np.nan],
                               beats_control=["", "no difference", "yes", "", "", ""])
    assert_png(figures.ladder_figure(controlled, tmp_path / "ladder3.png"))


def test_control_note():
    assert figures.control_note(-3.0, "no difference") == "\nvs control -3.0"
    assert figures.control_note(2.7, "yes") == "\nvs control +2.7*"
    assert figures.control_note(-2.0, "below") == "\nvs control -2.0*"
    assert figures.control_note(float("nan"), "") == ""


def test_pseudo_methods_figure(tmp_path):
    assert_png(figures.pseudo_methods_figure(METHODS, tmp_path / "methods.png"))
    no_gt = METHODS.assign(precision_mean=np.nan, coverage_mean=np.nan)
    assert_png(figures.pseudo_methods_figure(no_gt, tmp_path / "methods_nogt.png"))


def test_frame_to_html_marks_the_best_of_each_column():
    from uncerda_core.report.tables import best_cells, frame_to_html
    df = pd.DataFrame({"model": ["Source only", "+UPST <x>", "+SR"], "road": [0.010, 0.454, np.nan],
                       "miou": [0.024, 0.059, 0.030], "miou_std": [0.09, 0.01, 0.005], "n_seeds": [1, 3, 2]})
    best = best_cells(df)
    assert best["road"].tolist() == [False, True, False] and best["miou"].tolist() == [False, True, False]
    assert not best["miou_std"].any() and not best["n_seeds"].any()    # a spread or a count is never "best"
    assert not best["model"].any()
    html = frame_to_html(df, percent=("road", "miou", "miou_std"))
    assert html.count("</tr>") == 4 and "+UPST &lt;x&gt;" in html       # header + 3 rows; text escaped
    assert '<strong class="best">45.4</strong>' in html and '<strong class="best">5.9</strong>' in html
    assert "<td>9.0</td>" in html and "<td>-</td>" in html               # spreads plain, NaN as "-"
    assert html.count('class="best"') == 2
    # Equal values everywhere: nothing to mark.
    assert not best_cells(pd.DataFrame({"model": ["a", "b"], "miou": [0.5, 0.5]})).any().any()


def test_frame_to_html_skips_controls():
    from uncerda_core.report.tables import best_cells
    df = pd.DataFrame({"rung": ["Source only", "+UPST", "Target oracle"], "kind": ["rung", "rung", "control"],
                       "miou_mean": [0.20, 0.33, 0.60]})
    assert best_cells(df)["miou_mean"].tolist() == [False, True, False]
    assert not best_cells(df.iloc[[0, 2]]).any().any()                   # one candidate: no best


def test_frame_to_markdown_unchanged():
    """The markdown tables the workflow writes (ladder.md, pseudo_methods.md) keep their exact text."""
    from uncerda_core.report.tables import FRACTION_COLUMNS, frame_to_markdown
    df = pd.DataFrame({"rung": ["+AA", "x"], "kind": ["rung", "control"], "n_seeds": [2, 2],
                       "miou_mean": [0.25, np.nan], "miou_seeds": ["0.2300;0.2700", "0.1"], "other": [1234.5678, 0.5]})
    assert frame_to_markdown(df, FRACTION_COLUMNS) == (
        "| rung | kind | n_seeds | miou_mean | miou_seeds | other |\n|---|---|---|---|---|---|\n"
        "| +AA | rung | 2 | 25.0 | 0.2300;0.2700 | 1235 |\n| x | control | 2 | - | 0.1 | 0.5 |")


def test_html_page(tmp_path):
    from uncerda_core.report.tables import html_page
    rounds = tmp_path / "rounds"
    rounds.mkdir()
    for r, reason in ((2, "max_rounds reached"), (1, "S_k changed")):
        (rounds / f"r{r}.json").write_text(json.dumps({"round": r, "reason": reason}))
    from uncerda_core.report.tables import round_decisions
    notes = round_decisions(rounds)
    assert notes == ["round 1: S_k changed", "round 2: max_rounds reached"]
    assert round_decisions(tmp_path / "missing") == [] and round_decisions(None) == []
    df = pd.DataFrame({"model": ["x", "y"], "miou": [0.1, 0.2]})
    out = html_page(df, tmp_path / "t.html", "Ladder <1>", notes=notes, source="t.csv")
    text = Path(out).read_text()
    assert text.startswith("<!DOCTYPE html>") and "<table" in text and "t.csv" in text
    assert "<h1>Ladder &lt;1&gt;</h1>" in text and "<li>round 2: max_rounds reached</li>" in text
    assert '<strong class="best">20.0</strong>' in text      # miou is a fraction: shown in %


# --- the commands ---------------------------------------------------------------------------------------

def test_figure_commands(tmp_path, pseudo_dir):
    rng = np.random.default_rng(4)
    evals = []
    for model in ("source_only", "aa_it", "tgaa_r1", "st_gmm_r1"):
        path = tmp_path / "eval" / f"{model}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(_eval(rng)))
        evals.append(str(path))
    rank_dir = tmp_path / "rank"
    rank_dir.mkdir()
    for model in ("aa_it", "tgaa_r1"):
        _rank(rng).to_csv(rank_dir / f"{model}.csv", index=False)
    decision = tmp_path / "r1.json"
    decision.write_text(json.dumps({"round": 1, "continue": False, "reason": "max_rounds reached"}))
    weights = tmp_path / "tgaa_r1.csv"
    _weights(rng, [3, 4]).to_csv(weights, index=False)
    maps, folder = pseudo_dir
    ladder, methods = tmp_path / "ladder.csv", tmp_path / "pseudo_methods.csv"
    LADDER.to_csv(ladder, index=False)
    METHODS.to_csv(methods, index=False)
    summary = tmp_path / "summary.csv"
    pd.DataFrame({"model": ["Source only", "+UPST"], "miou": [0.021, 0.059]}).to_csv(summary, index=False)
    losses = []
    for model, adversarial in (("source_only", False), ("aa_it", True), ("tgaa_r1", True)):
        path = tmp_path / "models" / model / "losses.csv"
        path.parent.mkdir(parents=True)
        _losses(rng, adversarial=adversarial).to_csv(path, index=False)
        losses.append(str(path))
    out = tmp_path / "out"
    calls = {
        "iou.png": ["figure-iou", *evals, "--highlight-rank", str(rank_dir / "aa_it.csv")],
        "rank.png": ["figure-rank", str(rank_dir / "aa_it.csv"), str(rank_dir / "tgaa_r1.csv"),
                     "--decisions", str(decision)],
        "weights.png": ["figure-weights", str(weights), "--alpha", "80", "--mu", "0.02"],
        "gmm.png": ["figure-gmm", "--maps", str(maps), "--pseudo-dir", str(folder), "--label", "tgaa_r1"],
        "quality.png": ["figure-pseudo-quality", "--pseudo-dir", str(folder)],
        "ladder.png": ["figure-ladder", "--csv", str(ladder)],
        "methods.png": ["figure-pseudo-methods", "--csv", str(methods)],
        "summary.html": ["table-html", "--csv", str(summary), "--rounds-dir", str(tmp_path)],
        "curves.png": ["figure-curves", *losses, "--evals", *evals[:3]],
    }
    for name, argv in calls.items():
        assert main([*argv, "--out", str(out / name)]) == 0, name
        assert (out / f"{name}.provenance.json").is_file()
        if name.endswith(".png"):
            assert_png(out / name)
    page = (out / "summary.html").read_text()
    assert "<table" in page and '<strong class="best">5.9</strong>' in page and "max_rounds reached" in page
    record = json.loads((out / "iou.png.provenance.json").read_text())
    assert record["stage"] == "figure-iou" and set(record["inputs"]) >= {"Source only", "+IT", "+TGAA r1", "+UPST"}
    record = json.loads((out / "curves.png.provenance.json").read_text())
    assert set(record["inputs"]) == {"losses Source only", "losses +IT", "losses +TGAA r1", "eval Source only",
                                     "eval +IT", "eval +TGAA r1"}
    # LABEL=PATH overrides the name read from the path.
    assert main(["figure-iou", f"first={evals[0]}", f"second={evals[1]}", "--out", str(out / "named.png")]) == 0


def test_figure_command_errors(tmp_path, capsys):
    path = tmp_path / "aa_it.json"
    path.write_text(json.dumps(_eval(np.random.default_rng(0))))
    assert main(["figure-iou", str(path), str(path), "--out", str(tmp_path / "x.png")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["figure-iou", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.png")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "tgaa_r1.csv"
    pd.DataFrame({"name": ["a"], "p_i": [1.0]}).to_csv(bad, index=False)
    assert main(["figure-weights", str(bad), "--out", str(tmp_path / "w.png")]) == 2
    assert "columns" in capsys.readouterr().err
    assert main(["figure-curves", str(bad), "--out", str(tmp_path / "c.png")]) == 2
    assert "'iteration'" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "w.png").exists()
    assert not (tmp_path / "c.png").exists()


def test_examples_from_checkpoints(tmp_path):
    """load_examples runs each checkpoint on the val images and keeps the entropy of the asked stages."""
    import torch

    from fixtures_data import demo_val_setup
    from uncerda_core.models import build_model
    from uncerda_core.train.checkpoint import save_checkpoint

    config, index = demo_val_setup(tmp_path, 3)
    checkpoints = {}
    for i, model_name in enumerate(("source_only", "aa_it")):
        torch.manual_seed(i)
        model = build_model(config["model"])
        path = tmp_path / "models" / model_name / "checkpoint.pt"
        save_checkpoint(path, {"model": model.state_dict(), "model_config": config["model"]})
        checkpoints[stage_label(model_name)] = str(path)
    examples = inputs.load_examples(config, checkpoints, index, n_images=2, entropy_of=["+IT"])
    assert len(examples) == 2 and examples[0].name != examples[1].name
    ex = examples[0]
    assert ex.image.shape == (32, 64, 3) and ex.image.dtype == np.uint8 and ex.label.shape == (32, 64)
    assert list(ex.predictions) == ["Source only", "+IT"] and list(ex.entropy) == ["+IT"]
    assert ex.predictions["+IT"].shape == (32, 64) and 0 <= ex.entropy["+IT"].min() <= ex.entropy["+IT"].max() <= 1
    assert_png(figures.examples_figure(examples, tmp_path / "ex.png"))
    with pytest.raises(UncerdaError, match="no checkpoint"):
        inputs.load_examples(config, checkpoints, index, entropy_of=["+UPST"])


# --- the whole report (slow) ----------------------------------------------------------------------------

REPORT_PNGS = ["iou_per_class.png", "examples.png", "rank.png", "weights.png", "entropy_gmm.png",
               "pseudo_quality.png", "training_curves.png"]


@pytest.mark.slow
def test_smoke_report(smoke, tmp_path):
    work = smoke.workdir
    report_dir = smoke.results / "report" / "seed0"
    for name in REPORT_PNGS:
        assert_png(report_dir / name)
    summary = (report_dir / "summary.html").read_text()
    assert "<table" in summary and "+UPST" in summary and "round 1:" in summary
    # No ablation tables, so no ablation figures were asked for.
    assert not (smoke.results / "report" / "ablation").exists()
    for name in ("report_iou", "report_examples", "report_rank", "report_weights", "report_gmm",
                 "report_pseudo_quality", "report_summary_table", "report_curves"):
        assert (smoke.results / "benchmarks" / "seed0" / f"{name}.tsv").is_file(), name
        assert (work / "logs" / "smoke" / "seed0" / f"{name}.log").is_file(), name

    # Snakemake's own report of the finished run, written outside it.
    made = snakemake(work, *smoke_args(work, "--report", str(tmp_path / "report.html")), timeout=600)
    assert made.returncode == 0, made.stderr[-4000:]
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    for name in [*REPORT_PNGS, "summary.html"]:
        assert name in html, f"{name} not in the report"
    for category in ("Results", "Class uncertainty", "Pseudo labels"):
        assert category in html
    assert re.search(r"per-class IoU per stage", html)
