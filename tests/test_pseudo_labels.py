"""Maps file -> pseudo-label PNGs, classes.csv and quality, for every method."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fixtures_data import pseudo_settings
from uncerda_core.artifacts import UncerdaError
from uncerda_core.config import schema_defaults
from uncerda_core.pseudo.labels import PseudoSettings, generate_pseudo_labels
from uncerda_core.uncertainty.maps import MapsWriter

H, W = 8, 8


def _maps(path, n=4):
    """Class 0 fills the left half with entropy 0.05 on even rows, 0.7 on odd rows; class 1 the
    right half (rows 0-3 entropy 0.1, rows 4-7 0.9, except one pixel); class 2 never predicted."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        argmax = np.zeros((H, W), np.uint8)
        argmax[:, W // 2:] = 1
        ent = np.empty((H, W))
        ent[0::2, : W // 2] = 0.05 + 0.01 * rng.random((H // 2, W // 2))
        ent[1::2, : W // 2] = 0.7 + 0.01 * rng.random((H // 2, W // 2))
        ent[: H // 2, W // 2:] = 0.1 + 0.01 * rng.random((H // 2, W // 2))
        ent[H // 2:, W // 2:] = 0.9 + 0.01 * rng.random((H // 2, W // 2))
        maxprob = 1.0 - ent
        images.append((f"img{i}", argmax, ent.astype(np.float16), maxprob.astype(np.float16)))
    with MapsWriter(path, n, H, W, 3, ["a", "b", "c"]) as writer:
        for i, (name, a, e, m) in enumerate(images):
            writer.write(i, name, a, e, m)
    return images


def _read(out, name):
    with Image.open(out / f"{name}.png") as im:
        assert im.mode == "L"
        return np.asarray(im)


def test_gmm_pixel_labels_and_tables(tmp_path):
    images = _maps(tmp_path / "m.h5")
    out = tmp_path / "pseudo"
    df = generate_pseudo_labels(tmp_path / "m.h5", pseudo_settings(min_pixels=5), out)
    assert sorted(p.name for p in out.iterdir()) == ["classes.csv", "img0.png", "img1.png", "img2.png",
                                                    "img3.png", "provenance.json"]
    for name, argmax, ent, _ in images:
        label = _read(out, name)
        expected = np.where(ent.astype(float) < 0.5, argmax, 255)
        np.testing.assert_array_equal(label, expected)
    table = pd.read_csv(out / "classes.csv")
    assert table["selected_pixels"].tolist() == [64, 64, 0] and table["predicted_pixels"].tolist() == [128, 128, 0]
    assert table["degenerate"].fillna("").tolist() == ["", "", "never predicted"]
    assert table["mean_pos"][0] == pytest.approx(0.055, abs=0.002)
    assert table["mean_neg"][1] == pytest.approx(0.905, abs=0.002)
    lo, hi = json.loads("[" + table["intervals"][0].split(";")[0].strip()[1:-1] + "]")
    assert lo == 0.0 and 0.06 < hi < 0.7
    assert df["selected_fraction"].iloc[0] == pytest.approx(0.5)
    assert json.loads((out / "provenance.json").read_text())["stage"] == "pseudo"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_quality_against_ground_truth(tmp_path):
    images = _maps(tmp_path / "m.h5", n=2)
    gt = {name: a.copy() for name, a, _, _ in images}
    gt["img0"][0, 0] = 1        # a selected class-0 pixel that is wrong
    gt["img0"][7, 7] = 255      # an unselected class-1 pixel whose truth is ignored
    gt["img0"][2, 1] = 255      # a selected class-0 pixel whose truth is ignored: neither right nor wrong
    generate_pseudo_labels(tmp_path / "m.h5", pseudo_settings(min_pixels=5), tmp_path / "p",
                           gt_lookup=lambda name: gt.get(name) if name == "img0" else None)
    q = pd.read_csv(tmp_path / "p" / "quality.csv")
    # only img0 has ground truth: class 0 has 32 predicted, 16 selected (15 of them labelled), 14 correct,
    # gt pixels 30 (32 minus the relabelled and the ignored pixel)
    assert q["predicted_pixels"][0] == 32 and q["selected_pixels"][0] == 16 and q["correct_pixels"][0] == 14
    assert q["labelled_selected_pixels"][0] == 15
    assert q["precision"][0] == pytest.approx(14 / 15) and q["gt_coverage"][0] == pytest.approx(14 / 30)
    assert q["coverage"][0] == pytest.approx(16 / 32)   # coverage counts every selected pixel
    assert q["gt_pixels"][1] == 32  # 31 own + the relabelled pixel
    overall = json.loads((tmp_path / "p" / "quality.json").read_text())
    # 32 selected, 31 of them labelled, 30 correct
    assert overall["precision"] == pytest.approx(30 / 31) and overall["coverage"] == pytest.approx(0.5)
    assert overall["gt_coverage"] == pytest.approx(30 / 62) and overall["images_with_gt"] == 1
    # class mean: class 0 at 14/15, class 1 at 16/16; class 2 is never predicted and stays out
    assert overall["class_mean_precision"] == pytest.approx((14 / 15 + 1.0) / 2)
    assert overall["classes_in_precision_mean"] == 2


def test_gt_shape_mismatch(tmp_path):
    _maps(tmp_path / "m.h5", n=1)
    with pytest.raises(UncerdaError, match="img0.*shape"):
        generate_pseudo_labels(tmp_path / "m.h5", pseudo_settings(min_pixels=5), tmp_path / "p",
                               gt_lookup=lambda name: np.zeros((2, 2), np.uint8))
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("method, kept", [("threshold", [64, 64]), ("argmax", [128, 128]), ("cbst", [64, 64])])
def test_baseline_methods(tmp_path, method, kept):
    images = _maps(tmp_path / "m.h5")
    settings = pseudo_settings(method=method, threshold=0.5, cbst_portion=0.5, min_pixels=5)
    df = generate_pseudo_labels(tmp_path / "m.h5", settings, tmp_path / "p")
    assert df["selected_pixels"].tolist()[:2] == kept and df["statistic"][0] == "maxprob"
    name, argmax, _, maxprob = images[1]
    label = _read(tmp_path / "p", name)
    expected = argmax if method == "argmax" else np.where(maxprob.astype(float) >= 0.5, argmax, 255)
    np.testing.assert_array_equal(label, expected)


def test_gmm_image_unit_selects_whole_images(tmp_path):
    # class 0 on all 20 images; its mean entropy is 0.1 +- small on 12 images and 0.8 on 8
    n = 20
    rng = np.random.default_rng(1)
    with MapsWriter(tmp_path / "m.h5", n, 4, 4, 2, ["a", "b"]) as writer:
        for i in range(n):
            argmax = np.zeros((4, 4), np.uint8)
            argmax[0, 0] = 1
            base = 0.1 if i < 12 else 0.8
            ent = (base + 0.02 * rng.random((4, 4))).astype(np.float16)
            writer.write(i, f"i{i:02d}", argmax, ent, ent)
    settings = pseudo_settings(gmm_unit="image", min_pixels=5)
    df = generate_pseudo_labels(tmp_path / "m.h5", settings, tmp_path / "p")
    assert df["unit"][0] == "image"
    assert df["selected_pixels"][0] == 12 * 15
    for i in range(n):
        label = _read(tmp_path / "p", f"i{i:02d}")
        assert (label[1:, :] == (0 if i < 12 else 255)).all()
    assert df["degenerate"][1] == ""  # class 1: 20 pixels >= 5, image means spread -> a fit


def test_settings_from_config():
    section = {**schema_defaults()["pseudo"], "method": "cbst", "cbst_portion": 0.2}
    s = PseudoSettings.from_config({"pseudo": section})
    assert s.method == "cbst" and s.cbst_portion == 0.2 and s.field == "maxprob"
    with pytest.raises(UncerdaError, match="unknown"):
        PseudoSettings.from_config({"pseudo": {**section, "nope": 1}})
    # No defaults of its own: a partial section is refused, naming what is missing.
    with pytest.raises(UncerdaError, match=r"keys \['gmm_high_tail', 'gmm_unit', 'max_iter', 'min_pixels', 'threshold', "
                                           r"'tol'\] missing"):
        PseudoSettings.from_config({"pseudo": {"method": "cbst", "cbst_portion": 0.2}})
    with pytest.raises(UncerdaError, match="method"):
        pseudo_settings(method="oracle")


@pytest.mark.parametrize("settings", [pseudo_settings(min_pixels=5), pseudo_settings(gmm_unit="image", min_pixels=2),
                                      pseudo_settings(method="cbst", cbst_portion=0.3, min_pixels=5)],
                         ids=["gmm-pixel", "gmm-image", "cbst"])
def test_first_pass_over_worker_processes_gives_the_same_labels(tmp_path, monkeypatch, settings):
    import concurrent.futures

    from uncerda_core.uncertainty import histogram

    monkeypatch.setattr(histogram, "PARALLEL_MIN_IMAGES", 2)
    monkeypatch.setattr(histogram, "MIN_IMAGES_PER_TASK", 1)
    pools = []

    class CountingPool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs["max_workers"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", CountingPool)
    images = _maps(tmp_path / "m.h5", n=7)
    serial = generate_pseudo_labels(tmp_path / "m.h5", settings, tmp_path / "serial", workers=1, stored=False)
    assert pools == []
    parallel = generate_pseudo_labels(tmp_path / "m.h5", settings, tmp_path / "parallel", workers=2, stored=False)
    assert pools == [2]
    kept = generate_pseudo_labels(tmp_path / "m.h5", settings, tmp_path / "kept", workers=2)
    # the stored histogram replaces the first pass; the image-unit GMM still needs one
    assert pools == ([2, 2] if settings.gmm_unit == "image" and settings.method == "gmm" else [2])
    for other in (parallel, kept):
        pd.testing.assert_frame_equal(other, serial)
    for folder in ("parallel", "kept"):
        assert (tmp_path / folder / "classes.csv").read_bytes() == (tmp_path / "serial" / "classes.csv").read_bytes()
        for name, *_ in images:
            np.testing.assert_array_equal(_read(tmp_path / folder, name), _read(tmp_path / "serial", name))


def test_a_stored_histogram_that_disagrees_with_the_maps_is_refused(tmp_path):
    import h5py

    _maps(tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "r+") as fh:        # edited after the dump: class 1 -> 0 in one image
        fh["argmax"][2] = np.zeros((H, W), np.uint8)
    for method in ("gmm", "cbst"):
        with pytest.raises(UncerdaError, match=r"m\.h5: its (entropy|maxprob) histogram counts 128 pixels of "
                                               r"class 'a', its argmax maps 160.*re-run the dump"):
            generate_pseudo_labels(tmp_path / "m.h5", pseudo_settings(method=method, min_pixels=5), tmp_path / "out")
        assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [tmp_path / "m.h5"]
        recounted = generate_pseudo_labels(tmp_path / "m.h5", pseudo_settings(method=method, min_pixels=5),
                                           tmp_path / "out", stored=False)
        assert recounted["predicted_pixels"].tolist() == [160, 96, 0]
        shutil.rmtree(tmp_path / "out")


def test_command_with_and_without_recount(tmp_path, capsys):
    from uncerda_core.cli import main

    images = _maps(tmp_path / "m.h5")
    for folder, extra in (("kept", []), ("recounted", ["--recount", "--workers", "1"])):
        assert main(["pseudo-labels", "--maps", str(tmp_path / "m.h5"), "--method", "gmm",
                     "--out-dir", str(tmp_path / folder), *extra]) == 0
    csv = [pd.read_csv(tmp_path / folder / "classes.csv") for folder in ("kept", "recounted")]
    pd.testing.assert_frame_equal(csv[0], csv[1])
    for name, *_ in images:
        np.testing.assert_array_equal(_read(tmp_path / "kept", name), _read(tmp_path / "recounted", name))


def test_selection_coverage_is_selected_over_predicted_pixels():
    import pandas as pd
    from uncerda_core.pseudo.labels import selection_coverage
    classes = pd.DataFrame({"predicted_pixels": [100, 300, 0], "selected_pixels": [50, 30, 0]})
    assert selection_coverage(classes) == pytest.approx(80 / 400)
    with pytest.raises(UncerdaError, match="x.csv: no predicted pixels"):
        selection_coverage(pd.DataFrame({"predicted_pixels": [0], "selected_pixels": [0]}), "x.csv")


def test_one_reader_of_a_pseudo_label_folder(tmp_path, capsys):
    """pseudo.folder.read_pseudo_dir: classes.csv, and the quality tables only where the folder has them;
    the CLI's --cbst-at-coverage-of and the report's figure read a folder through it."""
    from uncerda_core.cli import main
    from uncerda_core.pseudo.folder import read_pseudo_dir
    from uncerda_core.pseudo.labels import coverage_of, selection_coverage
    _maps(tmp_path / "m.h5")
    table = generate_pseudo_labels(tmp_path / "m.h5", pseudo_settings(method="threshold", threshold=0.5,
                                                                      min_pixels=5), tmp_path / "thr")
    classes, quality, overall = read_pseudo_dir(tmp_path / "thr")
    pd.testing.assert_frame_equal(classes, pd.read_csv(tmp_path / "thr" / "classes.csv"))
    assert len(classes) == len(table) and quality is None and overall is None    # made without ground truth
    assert coverage_of(tmp_path / "thr") == selection_coverage(classes)
    (tmp_path / "thr" / "quality.json").write_text('{"precision": 0.5}')
    assert read_pseudo_dir(tmp_path / "thr")[2] == {"precision": 0.5}
    (tmp_path / "empty").mkdir()
    for folder in ("empty", "missing"):
        with pytest.raises(UncerdaError, match=f"{folder}/classes.csv does not exist: .* is no pseudo-label folder"):
            read_pseudo_dir(tmp_path / folder)
    capsys.readouterr()
    assert main(["figure-pseudo-quality", "--pseudo-dir", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "q.png")]) == 2
    assert "empty/classes.csv does not exist" in capsys.readouterr().err and not (tmp_path / "q.png").exists()


def test_cbst_at_the_coverage_of_another_selection_selects_the_same_share(tmp_path, capsys):
    """The command line's --cbst-at-coverage-of: CBST's portion is the other folder's coverage."""
    import pandas as pd
    from uncerda_core.cli import main
    from uncerda_core.pseudo.labels import selection_coverage
    _maps(tmp_path / "m.h5")
    generate_pseudo_labels(tmp_path / "m.h5", pseudo_settings(method="threshold", threshold=0.5, min_pixels=5),
                           tmp_path / "thr")
    target = selection_coverage(pd.read_csv(tmp_path / "thr" / "classes.csv"))
    assert 0 < target < 1
    assert main(["pseudo-labels", "--maps", str(tmp_path / "m.h5"), "--cbst-at-coverage-of",
                 str(tmp_path / "thr"), "--out-dir", str(tmp_path / "cbst")]) in (0, None)
    got = pd.read_csv(tmp_path / "cbst" / "classes.csv")
    assert set(got["method"]) == {"cbst"}
    assert selection_coverage(got) == pytest.approx(target, abs=0.02)
    capsys.readouterr()
    assert main(["pseudo-labels", "--maps", str(tmp_path / "m.h5"), "--cbst-at-coverage-of",
                 str(tmp_path / "none"), "--out-dir", str(tmp_path / "x")]) not in (0, None)
    assert "none/classes.csv does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
