"""The generated demo data set: determinism, native layouts, imbalance, domain gap."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uncerda_core.artifacts import UncerdaError
from uncerda_core.data import demo
from uncerda_core.data import labels as L

SIZE = (64, 32)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _generate(tmp: Path, seed: int = 0, n: tuple[int, int, int] = (6, 4, 3), size=SIZE) -> dict:
    return demo.generate_demo(tmp / "src", tmp / "tgt", seed=seed, size=size, n_source=n[0],
                              n_target_train=n[1], n_target_val=n[2], progress=False)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, dict]:
    """A few hundred images at the default size (2-3 s)."""
    tmp = tmp_path_factory.mktemp("demo_big")
    return tmp, _generate(tmp, seed=3, n=(150, 80, 40), size=(128, 64))


def _read_source(root: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, labels = [], []
    for img in sorted((root / "images").glob("*.png")):
        images.append(np.asarray(Image.open(img)))
        labels.append(np.asarray(Image.open(root / "labels" / img.name)))
    return images, labels


def _read_target(root: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, labels = [], []
    for img in sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
        stem = img.name[: -len("_leftImg8bit.png")]
        images.append(np.asarray(Image.open(img)))
        labels.append(np.asarray(Image.open(root / "gtFine" / split / img.parent.name
                                             / f"{stem}_gtFine_labelIds.png")))
    return images, labels


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = _tree_digest_after(tmp_path / "a", 5)
    b = _tree_digest_after(tmp_path / "b", 5)
    c = _tree_digest_after(tmp_path / "c", 6)
    assert a == b
    assert set(a) == set(c)
    differing = [k for k in a if k.endswith(".png") and a[k] != c[k]]
    assert len(differing) == sum(k.endswith(".png") for k in a)


def _tree_digest_after(tmp: Path, seed: int) -> dict[str, str]:
    _generate(tmp, seed=seed)
    return {**{"src/" + k: v for k, v in _tree_digest(tmp / "src").items()},
            **{"tgt/" + k: v for k, v in _tree_digest(tmp / "tgt").items()}}


def test_single_sample_is_a_pure_function_of_seed_domain_index():
    a = demo.render(demo.sample_rng(1, 2, 7), SIZE, demo.TARGET_STYLE)
    b = demo.render(demo.sample_rng(1, 2, 7), SIZE, demo.TARGET_STYLE)
    c = demo.render(demo.sample_rng(1, 2, 8), SIZE, demo.TARGET_STYLE)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_gta5_layout_names_and_modes(tmp_path):
    summary = _generate(tmp_path)
    root = tmp_path / "src"
    names = sorted(p.name for p in (root / "images").iterdir())
    assert names == [f"{i:05d}.png" for i in range(1, 7)]
    assert sorted(p.name for p in (root / "labels").iterdir()) == names
    assert (root / "README.txt").read_text().count("seed 0") == 1
    img = Image.open(root / "images" / "00001.png")
    lab = Image.open(root / "labels" / "00001.png")
    assert img.mode == "RGB" and img.size == SIZE
    assert lab.mode == "P" and lab.size == SIZE
    ids = np.asarray(lab)
    assert set(np.unique(ids)) <= set(L.CITYSCAPES_ID_TO_TRAIN) | {0, 4}
    assert 7 in ids  # road, as a Cityscapes label id
    # the palette shows road (id 7) in the road colour
    assert tuple(lab.getpalette()[7 * 3: 7 * 3 + 3]) == tuple(L.TRAIN_ID_COLORS[0])
    assert summary["counts"] == {"source": 6, "target_train": 4, "target_val": 3}
    assert summary["source"]["images"] == 6


def test_cityscapes_layout_names_and_modes(tmp_path):
    _generate(tmp_path)
    root = tmp_path / "tgt"
    assert (root / "README.txt").is_file()
    for split, cities, n in (("train", demo.TRAIN_CITIES, 4), ("val", demo.VAL_CITIES, 3)):
        assert sorted(p.name for p in (root / "leftImg8bit" / split).iterdir()) == sorted(cities)
        files = sorted((root / "leftImg8bit" / split).glob("*/*.png"))
        assert len(files) == n
        for f in files:
            city = f.parent.name
            stem = f.name[: -len("_leftImg8bit.png")]
            parts = stem.split("_")
            assert f.name.endswith("_leftImg8bit.png") and parts[0] == city
            assert len(parts) == 3 and len(parts[1]) == 6 and parts[2] == "000019"
            gt = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
            img, lab = Image.open(f), Image.open(gt)
            assert img.mode == "RGB" and img.size == SIZE
            assert lab.mode == "L" and lab.size == SIZE
            ids = np.unique(np.asarray(lab))
            assert set(ids) <= set(L.CITYSCAPES_ID_TO_TRAIN) | {1, 4}
            assert 1 in ids  # the ego vehicle's bonnet, void
    assert demo.cityscapes_stem("demoburg", 12) == "demoburg_000012_000019"


def test_readers_list_the_generated_files(tmp_path):
    readers = pytest.importorskip("uncerda_core.data.readers")
    _generate(tmp_path)
    assert len(readers.list_samples("gta5", tmp_path / "src", "all")) == 6
    assert len(readers.list_samples("cityscapes", tmp_path / "tgt", "train")) == 4
    val = readers.list_samples("cityscapes", tmp_path / "tgt", "val")
    assert len(val) == 3
    for dataset, sample in (("gta5", readers.list_samples("gta5", tmp_path / "src", "all")[0]), ("cityscapes", val[0])):
        train_ids = readers.read_label(dataset, sample.label)
        assert np.array_equal(train_ids, L.CITYSCAPES_LUT[np.asarray(Image.open(sample.label))])
        assert readers.read_image(sample.image).shape == (SIZE[1], SIZE[0], 3)


def test_roots_are_replaced_whole_and_no_temporary_folder_is_left(tmp_path):
    _generate(tmp_path, n=(3, 1, 1))
    (tmp_path / "src" / "stale.txt").write_text("old")
    (tmp_path / "tgt" / "leftImg8bit" / "val" / "oldcity").mkdir()
    _generate(tmp_path)
    assert not (tmp_path / "src" / "stale.txt").exists()
    assert not (tmp_path / "tgt" / "leftImg8bit" / "val" / "oldcity").exists()
    assert len(list((tmp_path / "src" / "images").iterdir())) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "tgt"]


def test_a_folder_that_is_not_a_demo_output_is_never_replaced(tmp_path):
    (tmp_path / "tgt").mkdir()
    (tmp_path / "tgt" / "precious.txt").write_text("keep")
    with pytest.raises(UncerdaError, match="not a generated demo data set"):
        _generate(tmp_path)
    assert (tmp_path / "tgt" / "precious.txt").read_text() == "keep"
    assert not (tmp_path / "src").exists()


def test_a_failed_run_leaves_the_previous_trees_untouched(tmp_path, monkeypatch):
    _generate(tmp_path)
    before = _tree_digest(tmp_path / "tgt")
    before_src = _tree_digest(tmp_path / "src")
    calls = {"n": 0}
    real = demo.render

    def failing(rng, size, style):
        calls["n"] += 1
        if style.name == "target" and calls["n"] > 8:
            raise KeyboardInterrupt
        return real(rng, size, style)

    monkeypatch.setattr(demo, "render", failing)
    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path, seed=9)
    assert calls["n"] > 8  # the failure happened after the new source was complete
    assert _tree_digest(tmp_path / "tgt") == before
    assert _tree_digest(tmp_path / "src") == before_src
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "tgt"]


@pytest.mark.parametrize("kwargs, match", [
    ({"source_root": "same", "target_root": "same"}, "same folder"),
    ({"source_root": "a", "target_root": "a/b"}, "nested"),
    ({"size": (8, 8)}, "width, height"),
    ({"n_target_val": 0}, "n_target_val"),
])
def test_bad_arguments_raise_with_the_fix(tmp_path, kwargs, match):
    args = {"source_root": "s", "target_root": "t", "size": SIZE, "n_source": 1, "n_target_train": 1,
            "n_target_val": 1, "progress": False}
    args.update(kwargs)
    args["source_root"] = tmp_path / args["source_root"]
    args["target_root"] = tmp_path / args["target_root"]
    with pytest.raises(UncerdaError, match=match):
        demo.generate_demo(**args)


@pytest.fixture(scope="module")
def stats_sets(tmp_path_factory) -> dict:
    """300 images per domain at the demo's size (about 15 s): enough for +-5 % presence."""
    tmp = tmp_path_factory.mktemp("demo_stats")
    return {**_generate(tmp, seed=5, n=(300, 300, 1), size=(128, 64)), "source_root": tmp / "src"}


def test_class_statistics_meet_the_documented_design_targets(stats_sets):
    """Pixel share and per-image presence of every class, in both domains (demo.DESIGN_TARGETS)."""
    assert set(demo.DESIGN_TARGETS) == set(L.CLASS_NAMES)
    misses = []
    for part in ("source", "target_train"):
        freq = stats_sets[part]["class_pixel_frequency"]
        images = stats_sets[part]["class_image_count"]
        n = stats_sets[part]["images"]
        assert abs(sum(freq.values()) - 1.0) < 1e-3
        for name, ((p_lo, p_hi), (i_lo, i_hi)) in demo.DESIGN_TARGETS.items():
            if not p_lo <= freq[name] <= p_hi:
                misses.append(f"{part} {name}: pixel share {freq[name]:.4f} not in [{p_lo}, {p_hi}]")
            if not i_lo <= images[name] / n <= i_hi:
                misses.append(f"{part} {name}: in {images[name] / n:.2f} of images, not in [{i_lo}, {i_hi}]")
    assert not misses, "\n".join(misses)


def test_rare_classes_follow_scene_types_and_the_label_shift(stats_sets):
    src = stats_sets["source"]["class_image_count"]
    tgt = stats_sets["target_train"]["class_image_count"]
    # every rare class is absent from most images of both domains
    for name in ("rider", "truck", "bus", "train", "motorcycle", "bicycle"):
        assert src[name] < 0.5 * 300 and tgt[name] < 0.5 * 300, name
    # the target has more cyclists, the source more heavy vehicles (a label shift)
    assert tgt["bicycle"] > 1.3 * src["bicycle"]
    assert src["truck"] + src["bus"] > 1.3 * (tgt["truck"] + tgt["bus"])


def test_scene_types_keep_heavy_vehicles_and_cyclists_apart():
    """Trucks and buses only on arterials, trains on tram streets, riders on cycle and tram streets."""
    both = 0
    for i in range(200):
        _, label = demo.draw_scene(demo.sample_rng(9, 0, i), (128, 64), demo.SOURCE_STYLE)
        present = set(np.unique(label).tolist())
        heavy = bool(present & {demo.TRUCK, demo.BUS})
        assert not (heavy and demo.TRAIN in present)
        both += heavy and bool(present & {demo.RIDER})
    assert both == 0


def test_thin_objects_are_drawn_wide_enough():
    """No pole narrower than MIN_POLE_PX at any depth (rows of a lone pole on an empty canvas)."""
    style = demo.SOURCE_STYLE
    for t in (demo.NEAREST_OBJECT_DEPTH, 0.3, 1.0):
        cv = demo._Canvas(64, 128)
        cv.label[:] = demo.VOID_NONE
        st = demo._Street(width=128, height=64, horizon=26.0, vanish_x=64.0, lane_px=40.0,
                          half_road=(1.0, 1.0), sidewalk=(0.8, 0.8), terrain=(0.0, 0.0))
        demo._draw_pole(cv, st, demo._Object(t, "pole", 1.5), np.random.default_rng(0), style)
        rows = (cv.label == demo.POLE).sum(axis=1)
        body = rows[rows > 0]
        assert np.median(body) >= demo.MIN_POLE_PX, t


def test_summary_matches_the_written_labels(big):
    tmp, summary = big
    _, labels = _read_target(tmp / "tgt", "val")
    counts = np.zeros(L.NUM_CLASSES, dtype=np.int64)
    for lab in labels:
        counts += np.bincount(L.CITYSCAPES_LUT[lab].ravel(), minlength=256)[: L.NUM_CLASSES]
    freq = counts / counts.sum()
    for c, name in enumerate(L.CLASS_NAMES):
        assert summary["target_val"]["class_pixel_frequency"][name] == pytest.approx(freq[c], abs=1e-6)


def _class_mean_colours(images: list[np.ndarray], labels: list[np.ndarray]) -> np.ndarray:
    sums = np.zeros((L.NUM_CLASSES, 3))
    counts = np.zeros(L.NUM_CLASSES)
    for img, lab in zip(images, labels):
        train = L.CITYSCAPES_LUT[lab].ravel()
        keep = train < L.NUM_CLASSES
        sums += np.stack([np.bincount(train[keep], weights=img.reshape(-1, 3)[keep, ch],
                                      minlength=L.NUM_CLASSES) for ch in range(3)], 1)
        counts += np.bincount(train[keep], minlength=L.NUM_CLASSES)
    return sums / np.maximum(counts, 1)[:, None]


def test_domains_differ_per_class_and_in_texture(big):
    tmp, _ = big
    s_img, s_lab = _read_source(tmp / "src")
    t_img, t_lab = _read_target(tmp / "tgt", "train")
    ms, mt = _class_mean_colours(s_img, s_lab), _class_mean_colours(t_img, t_lab)
    dist = np.linalg.norm(ms - mt, axis=1)
    assert (dist > 40).sum() >= 8, dict(zip(L.CLASS_NAMES, dist.round()))
    # several target classes look like *another* class of the source: the nearest
    # source class mean of a target class mean is a different class
    nearest = np.linalg.norm(mt[:, None] - ms[None], axis=2).argmin(1)
    assert (nearest != np.arange(L.NUM_CLASSES)).sum() >= 6
    # the source is flat and crisp: within a flat region neighbours are equal;
    # the target is textured and noisy
    flat = [np.mean(np.abs(np.diff(im.astype(int), axis=1)) == 0) for im in s_img]
    noisy = [np.mean(np.abs(np.diff(im.astype(int), axis=1)) == 0) for im in t_img]
    assert np.mean(flat) > 0.6 and np.mean(noisy) < 0.2


def test_source_is_saturated_and_target_muted(big):
    tmp, _ = big
    s_img, _ = _read_source(tmp / "src")
    t_img, _ = _read_target(tmp / "tgt", "val")

    def saturation(images):
        x = np.stack(images).astype(np.float64)
        mx, mn = x.max(-1), x.min(-1)
        return float(np.mean((mx - mn) / np.maximum(mx, 1)))

    assert saturation(s_img) > 1.5 * saturation(t_img)


def test_default_size_is_fast(tmp_path):
    import time
    start = time.process_time()  # CPU time: robust to other jobs on the machine
    demo.generate_demo(tmp_path / "s", tmp_path / "t", size=(128, 64), n_source=20, n_target_train=10,
                       n_target_val=10, progress=False)
    # 40 of the default 1,200 images: under 30 s for all of them on one core
    # (about 10 ms an image measured)
    assert time.process_time() - start < 40 * 30 / 1200


# The S_k of a target-guided round on the demo (docs/results.md): small classes present in most source images.
DEMO_SK = ("rider", "person", "motorcycle", "fence", "wall", "pole", "sign")


def test_resampling_on_the_demo_moves_the_drawn_class_mix(stats_sets, tmp_path):
    """Through `uncerda weights` on the demo's class statistics (docs/method.md, "The class-draw reading"):
    balance 0 draws uniformly; over every class the six rarest classes' drawn pixel share rises with the
    balance to at least x1.5 at balance 1; a target-guided S_k's share rises at least x1.3."""
    import json

    from uncerda_core.cli import main
    stats = tmp_path / "class_stats.csv"
    assert main(["index", "--dataset", "gta5", "--root", str(stats_sets["source_root"]), "--split", "all",
                 "--out", str(tmp_path / "index.csv"), "--workers", "1"]) == 0
    assert main(["class-stats", "--index", str(tmp_path / "index.csv"), "--dataset", "gta5", "--out", str(stats),
                 "--workers", "1"]) == 0
    rank = tmp_path / "rank.csv"
    rank.write_text("class_id,class,mean_entropy,pixels,rank,in_sk\n" + "".join(
        f"{L.CLASS_NAMES.index(name)},{name},0.5,1,{i + 1},True\n" for i, name in enumerate(DEMO_SK)))

    def draws(balance: float, *signal: str) -> dict:
        out = tmp_path / f"w_{balance}_{len(signal)}.csv"
        assert main(["weights", "--class-stats", str(stats), *(signal or ["--all-classes"]), "--balance", str(balance),
                     "--alpha", "80", "--mu", "0.02", "--reading", "class_draw", "--out", str(out)]) == 0
        return json.loads(Path(f"{out}.provenance.json").read_text())["draws"]

    rising = [draws(b)["rarest_multiplier"] for b in (0.0, 0.5, 0.9, 1.0)]
    uniform = draws(0.0)
    assert uniform["moved_share"] < 0.01 and rising[0] == pytest.approx(1.0, abs=0.01)
    assert rising == sorted(rising) and rising[-1] >= 1.5, rising
    assert sorted(draws(1.0)["rarest"]) == sorted(["bus", "train", "motorcycle", "truck", "bicycle", "rider"])
    guided = draws(0.9, "--rank", str(rank))
    assert guided["sk"] == list(DEMO_SK) and guided["sk_multiplier"] >= 1.3, guided["sk_multiplier"]
    # The paper's printed Eq. 4 with Eq. 5 on p_i / max p_i (the old default) barely moves either.
    old = tmp_path / "old.csv"
    assert main(["weights", "--class-stats", str(stats), "--rank", str(rank), "--balance", "0.9", "--alpha", "80",
                 "--mu", "0.02", "--reading", "weighted_mean", "--out", str(old)]) == 0
    assert json.loads(Path(f"{old}.provenance.json").read_text())["draws"]["sk_multiplier"] < 1.1
