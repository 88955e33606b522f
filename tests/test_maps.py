"""The HDF5 maps layout: writer, validating reader, streaming, logits -> maps."""

from __future__ import annotations

import json
import math
import tracemalloc

import h5py
import numpy as np
import pytest
import torch

from uncerda_core.artifacts import UncerdaError
from uncerda_core.uncertainty import histogram
from uncerda_core.uncertainty.codes import N_CODES, ONE_CODE, class_code_histogram
from uncerda_core.uncertainty.histogram import histogram_pass, maps_histogram, task_ranges
from uncerda_core.uncertainty.maps import MapsWriter, maps_from_logits, open_maps

NAMES3 = ["a", "b", "c"]


def _image(seed: int, h: int, w: int, c: int = 3):
    rng = np.random.default_rng(seed)
    argmax = rng.integers(0, c, size=(h, w)).astype(np.uint8)
    entropy = rng.random((h, w)).astype(np.float16)
    maxprob = rng.random((h, w)).astype(np.float16)
    return argmax, entropy, maxprob


def _write(path, n=3, h=4, w=6, c=3, names=None, **kw):
    images = [_image(i, h, w, c) for i in range(n)]
    names = names or [f"img_{i}" for i in range(n)]
    with MapsWriter(path, n, h, w, c, NAMES3[:c] if c == 3 else [str(i) for i in range(c)],
                    attrs={"checkpoint": "ck.pth", "checkpoint_sha256": "ab" * 32, "config": {"k": 7},
                           "provenance": {"stage": "dump"}}, **kw) as writer:
        for i, (a, e, m) in enumerate(images):
            writer.write(i, names[i], a, e, m, **({"prob": np.full((c, 2, 3), 1 / c, np.float16)}
                                                 if kw.get("prob_size") else {}))
    return images, names


@pytest.mark.parametrize("compression", ["lzf", "gzip", "none"])
def test_layout_with_plain_h5py(tmp_path, compression):
    path = tmp_path / "maps.h5"
    images, names = _write(path, compression=compression, compress_floats=True, prob_size=(2, 3))
    with h5py.File(path, "r") as fh:
        assert [n.decode() for n in fh["names"][()]] == names
        assert fh["argmax"].dtype == np.uint8 and fh["argmax"].shape == (3, 4, 6)
        assert fh["entropy"].dtype == np.float16 and fh["maxprob"].dtype == np.float16
        assert fh["argmax"].chunks == (1, 4, 6) and fh["entropy"].chunks == (1, 4, 6)
        assert fh["prob"].shape == (3, 3, 2, 3) and fh["prob"].chunks == (1, 3, 2, 3)
        np.testing.assert_array_equal(fh["argmax"][1], images[1][0])
        np.testing.assert_array_equal(fh["entropy"][2], images[2][1])
        np.testing.assert_array_equal(fh["maxprob"][0], images[0][2])
        assert fh.attrs["layout_version"] == 1 and fh.attrs["num_classes"] == 3
        assert json.loads(fh.attrs["class_names"]) == NAMES3
        assert fh.attrs["checkpoint"] == "ck.pth" and fh.attrs["checkpoint_sha256"] == "ab" * 32
        assert json.loads(fh.attrs["config"]) == {"k": 7}
        assert json.loads(fh.attrs["provenance"]) == {"stage": "dump"}
    assert [p.name for p in tmp_path.iterdir()] == ["maps.h5"]  # no temp file left


def test_default_compresses_argmax_only(tmp_path):
    _write(tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "r") as fh:
        assert fh["argmax"].compression == "lzf"
        assert fh["entropy"].compression is None


def test_reader_roundtrip_and_iter(tmp_path):
    path = tmp_path / "maps.h5"
    images, names = _write(path, names=["x", "ÿ_utf8", "z"])
    with open_maps(path, expected_classes=3) as maps:
        assert maps.names == ["x", "ÿ_utf8", "z"] and maps.num_classes == 3 and maps.shape == (3, 4, 6)
        seen = list(maps.iter_images(fields=("argmax", "maxprob")))
    assert [n for n, _ in seen] == maps.names
    np.testing.assert_array_equal(seen[2][1]["maxprob"], images[2][2])
    assert set(seen[0][1]) == {"argmax", "maxprob"}


def test_writer_removes_temp_on_error_and_on_missing_image(tmp_path):
    path = tmp_path / "maps.h5"
    with pytest.raises(RuntimeError):
        with MapsWriter(path, 2, 4, 6, 3, NAMES3) as writer:
            writer.write(0, "a", *_image(0, 4, 6))
            raise RuntimeError("dump crashed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UncerdaError, match="never written"):
        with MapsWriter(path, 2, 4, 6, 3, NAMES3) as writer:
            writer.write(0, "a", *_image(0, 4, 6))
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_arrays(tmp_path):
    with pytest.raises(UncerdaError, match="argmax"):
        with MapsWriter(tmp_path / "m.h5", 1, 4, 6, 3, NAMES3) as writer:
            a, e, m = _image(0, 4, 6)
            writer.write(0, "a", a[:2], e, m)
    with pytest.raises(UncerdaError, match="class 7"):
        with MapsWriter(tmp_path / "m.h5", 1, 4, 6, 3, NAMES3) as writer:
            a, e, m = _image(0, 4, 6)
            a[0, 0] = 7
            writer.write(0, "a", a, e, m)
    with pytest.raises(UncerdaError, match="outside"):
        with MapsWriter(tmp_path / "m.h5", 1, 4, 6, 3, NAMES3) as writer:
            a, e, m = _image(0, 4, 6)
            e[0, 0] = -0.0
            writer.write(0, "a", a, e, m)
    # float32 input is clipped and cast; -0.0 becomes +0.0
    with MapsWriter(tmp_path / "m.h5", 1, 1, 3, 3, NAMES3) as writer:
        writer.write(0, "a", np.zeros((1, 3), np.uint8), np.array([[-0.0, 1.2, 0.5]], np.float32),
                     np.ones((1, 3), np.float32))
    with open_maps(tmp_path / "m.h5") as maps:
        assert maps.read(0, ("entropy",))["entropy"].view(np.uint16).tolist() == [[0, 0x3C00, 0x3800]]


def test_open_maps_errors(tmp_path):
    with pytest.raises(UncerdaError, match="not found"):
        open_maps(tmp_path / "none.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(UncerdaError, match="bad.h5"):
        open_maps(bad)
    good = tmp_path / "good.h5"
    _write(good)
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UncerdaError, match="trunc.h5"):
        with open_maps(trunc) as maps:
            list(maps.iter_images())
    with pytest.raises(UncerdaError, match="19"):
        open_maps(good, expected_classes=19)
    missing = tmp_path / "missing.h5"
    _write(missing)
    with h5py.File(missing, "a") as fh:
        del fh["maxprob"]
    with pytest.raises(UncerdaError, match="maxprob"):
        open_maps(missing)
    wrong = tmp_path / "wrong.h5"
    _write(wrong)
    with h5py.File(wrong, "a") as fh:
        data = fh["entropy"][()]
        del fh["entropy"]
        fh["entropy"] = data.astype(np.float32)
    with pytest.raises(UncerdaError, match="float16"):
        open_maps(wrong)


def test_maps_from_logits_entropy_and_maxprob():
    logits = torch.tensor([[[[0.0, 10.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])   # (1, 3, 1, 2)
    argmax, entropy, maxprob = maps_from_logits(logits)
    assert argmax.dtype == np.uint8 and entropy.dtype == np.float16 and maxprob.dtype == np.float16
    assert argmax.tolist() == [[[0, 0]]]
    assert float(entropy[0, 0, 0]) == 1.0 and float(maxprob[0, 0, 0]) == pytest.approx(1 / 3, abs=1e-3)
    p = np.exp(10) / (np.exp(10) + 2)
    q = 1 / (np.exp(10) + 2)
    expected = -(p * math.log(p) + 2 * q * math.log(q)) / math.log(3)
    assert float(entropy[0, 0, 1]) == pytest.approx(expected, rel=2e-3)
    probs = torch.tensor([[[[1.0]], [[0.0]], [[0.0]]]])
    _, ent, mp = maps_from_logits(probs, is_prob=True)
    assert ent.view(np.uint16).item() == 0 and mp.item() == 1.0


def test_maps_histogram_matches_direct(tmp_path):
    path = tmp_path / "maps.h5"
    images, _ = _write(path, n=4)
    hist = maps_histogram(path, "entropy")
    direct = sum(class_code_histogram(a, e, 3) for a, e, _ in images)
    np.testing.assert_array_equal(hist, direct)
    hist_mp = maps_histogram(path, "maxprob")
    assert hist_mp.sum() == 4 * 24 and hist_mp[:, :N_CODES].shape == (3, N_CODES)


def test_streaming_pass_has_bounded_memory(tmp_path):
    n, h, w = 200, 128, 256
    path = tmp_path / "big.h5"
    image = _image(0, h, w, c=2)
    with MapsWriter(path, n, h, w, 2, ["p", "q"]) as writer:
        for i in range(n):
            writer.write(i, f"i{i}", *image)
    one_image = sum(a.nbytes for a in image)             # argmax + entropy + maxprob of one image
    with open_maps(path) as maps:
        tracemalloc.start()
        for _name, arrays in maps.iter_images(fields=("argmax", "entropy", "maxprob")):
            assert arrays["argmax"].shape == (h, w)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 3 * one_image, (peak, one_image)
    assert n * one_image > 60 * peak                      # the whole file would be far more
    tracemalloc.start()
    hist = maps_histogram(path, workers=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert hist.sum() == n * h * w
    # histogram (2 x 15361 int64) + a bincount temp + the int64 index array of one image
    assert peak < 3 * hist.nbytes + 8 * h * w + 3 * one_image, peak
    # over worker processes this process holds the sum and the tables sent back, one per task
    tasks = len(task_ranges(n, 2))
    tracemalloc.start()
    hist_parallel = maps_histogram(path, workers=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(hist_parallel, hist)
    assert peak < (3 + tasks) * hist.nbytes + 3 * one_image, (peak, tasks)


@pytest.fixture
def parallel_small(monkeypatch):
    """Run the multi-process pass even on a few images, several tasks per worker; count the pools."""
    import concurrent.futures

    monkeypatch.setattr(histogram, "PARALLEL_MIN_IMAGES", 2)
    monkeypatch.setattr(histogram, "MIN_IMAGES_PER_TASK", 1)
    pools = []

    class CountingPool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(kwargs.get("max_workers", args[0] if args else None))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", CountingPool)
    return pools


def _write_classes(path, n, h, w, c, seed=0):
    """``n`` images over ``c`` classes with every float16 code in [0, 1] reachable (incl. 0 and 1)."""
    rng = np.random.default_rng(seed)
    images = []
    with MapsWriter(path, n, h, w, c, [str(k) for k in range(c)]) as writer:
        for i in range(n):
            argmax = rng.integers(0, c, size=(h, w)).astype(np.uint8)
            codes = rng.integers(0, ONE_CODE + 1, size=(h, w)).astype(np.uint16)
            entropy = codes.view(np.float16)
            maxprob = np.flip(codes).copy().view(np.float16)
            writer.write(i, f"im{i}", argmax, entropy, maxprob)
            images.append((argmax, entropy, maxprob))
    return images


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_histogram_equals_serial(tmp_path, parallel_small, workers):
    path = tmp_path / "maps.h5"
    images = _write_classes(path, n=11, h=16, w=24, c=19)
    for field, column in (("entropy", 1), ("maxprob", 2)):
        serial = maps_histogram(path, field, workers=1, stored=False)
        direct = sum(class_code_histogram(img[0], img[column], 19) for img in images)
        parallel = maps_histogram(path, field, workers=workers, stored=False)
        kept = maps_histogram(path, field, workers=workers)    # the writer's table, checked by a lighter pass
        assert parallel.dtype == serial.dtype == kept.dtype == np.int64 and parallel.shape == (19, N_CODES)
        np.testing.assert_array_equal(serial, direct)
        np.testing.assert_array_equal(parallel, serial)
        np.testing.assert_array_equal(kept, serial)
    hist1, pixels1 = histogram_pass(path, "entropy", "image", workers=1, with_pixels=True)
    hist2, pixels2 = histogram_pass(path, "entropy", "image", workers=workers, with_pixels=True)
    np.testing.assert_array_equal(hist2, hist1)
    np.testing.assert_array_equal(pixels2, pixels1)
    assert pixels1.sum() == 11 * 16 * 24 and hist1.sum() == sum(len(np.unique(img[0])) for img in images)
    # the parallel calls went through a process pool: 2 counts and 2 checks of stored tables, 1 image-unit count
    assert parallel_small == [workers] * 5


def test_small_files_and_one_worker_stay_in_process(tmp_path, monkeypatch):
    import concurrent.futures

    def refuse(*args, **kwargs):
        raise AssertionError("no process pool expected")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refuse)
    path = tmp_path / "maps.h5"
    images, _ = _write(path, n=4)
    direct = sum(class_code_histogram(a, e, 3) for a, e, _ in images)
    for workers in (0, 1, 2, 8):                         # 4 images < PARALLEL_MIN_IMAGES
        np.testing.assert_array_equal(maps_histogram(path, workers=workers), direct)


def test_task_ranges_cover_every_image_once():
    for n in (1, 2, 5, 31, 32, 120, 2975):
        for workers in (1, 2, 3, 8):
            ranges = task_ranges(n, workers)
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a < b for a, b in ranges) and all(b == a2 for (_, b), (a2, _) in zip(ranges, ranges[1:]))
            assert len(ranges) <= workers * histogram.TASKS_PER_WORKER
    assert len(task_ranges(120, 2)) == 2 and len(task_ranges(2975, 2)) == 8   # >= 32 images per task


def test_parallel_pass_reports_the_bad_image(tmp_path, parallel_small):
    path = tmp_path / "maps.h5"
    _write_classes(path, n=9, h=4, w=6, c=3)
    with h5py.File(path, "r+") as fh:                    # bypass the writer's checks
        bad = fh["entropy"][6]
        bad[1, 2] = np.float16(1.5)
        fh["entropy"][6] = bad
        fh["entropy"][7] = -fh["entropy"][7] - np.float16(1.0)
    for workers in (1, 2):
        with pytest.raises(UncerdaError, match=r"maps\.h5: image 'im6': .*outside \[0, 1\]"):
            maps_histogram(path, workers=workers, stored=False)
    assert maps_histogram(path, "maxprob", workers=2, stored=False).sum() == 9 * 24
    with pytest.raises(UncerdaError, match="field"):
        maps_histogram(path, "argmax")


def test_stored_histograms_and_files_without_them(tmp_path):
    """The writer's tables equal a count of the pixels; a file without them is counted; a bad one is refused."""
    path = tmp_path / "maps.h5"
    images = _write_classes(path, n=5, h=8, w=12, c=4)
    with open_maps(path) as maps:
        assert maps.stored_histograms == ["entropy", "maxprob"]
        for field, column in (("entropy", 1), ("maxprob", 2)):
            direct = sum(class_code_histogram(img[0], img[column], 4) for img in images)
            np.testing.assert_array_equal(maps.stored_histogram(field), direct)
    old = tmp_path / "old.h5"
    old.write_bytes(path.read_bytes())
    with h5py.File(old, "r+") as fh:                     # a file from a writer that stores none
        del fh["hist_entropy"], fh["hist_maxprob"]
    with open_maps(old) as maps:
        assert maps.stored_histograms == [] and maps.stored_histogram("entropy") is None
    np.testing.assert_array_equal(maps_histogram(old, workers=1), maps_histogram(path))
    with h5py.File(old, "r+") as fh:
        fh.create_dataset("hist_entropy", data=np.zeros((3, N_CODES), dtype=np.int64))
    with pytest.raises(UncerdaError, match=r"old\.h5: hist_entropy must be int64 \(4, 15361\).*re-run the dump"):
        open_maps(old)


def test_writing_an_image_twice_is_refused(tmp_path):
    path = tmp_path / "maps.h5"
    zeros = np.zeros((2, 3), dtype=np.float16)
    with pytest.raises(UncerdaError, match="image index 0 written twice"):
        with MapsWriter(path, 2, 2, 3, 3, ["a", "b", "c"]) as writer:
            writer.write(0, "x", np.zeros((2, 3), np.uint8), zeros, zeros)
            writer.write(0, "x", np.zeros((2, 3), np.uint8), zeros, zeros)
    assert not path.exists()


def test_a_stored_table_is_checked_against_the_maps_before_it_is_used(tmp_path):
    """Pixels moved to another (valid) class after the dump: the stored table no longer fits the maps."""
    path = tmp_path / "maps.h5"
    images = _write_classes(path, n=4, h=8, w=12, c=4)
    with h5py.File(path, "r+") as fh:
        fh["argmax"][1] = np.zeros((8, 12), np.uint8)
    moved = int((images[1][0] != 0).sum())
    assert moved > 0
    for field in ("entropy", "maxprob"):
        with pytest.raises(UncerdaError, match=rf"maps\.h5: its {field} histogram counts \d+ pixels of class "
                                               r"'0', its argmax maps \d+.*re-run the dump"):
            maps_histogram(path, field, workers=1)
        recount = maps_histogram(path, field, workers=1, stored=False)   # counting again needs no stored table
        assert recount[0].sum() == sum(int((img[0] == 0).sum()) for img in images) + moved
