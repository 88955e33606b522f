"""Exact per-class histograms of a whole maps file (docs/method.md#exact-float16-histograms).

The counting itself is in ``codes.py`` (float16 codes, one ``np.bincount``
per image). :func:`histogram_pass` streams a maps file, optionally over worker
processes whose integer tables are summed (bit for bit the serial result).
"""

from __future__ import annotations

import os

import numpy as np

from uncerda_core.errors import UncerdaError
from uncerda_core.uncertainty.codes import (FIELDS, N_CODES, add_pixel_counts, check_argmax, image_unit_histogram,
                                            to_codes)


# Below this many images the pool costs more than it saves: starting 2 forked workers takes 10-20 ms
# here, and each task's table comes back through a pipe (next comment), against ~3 ms of reading and
# counting per 1024x512 image.
PARALLEL_MIN_IMAGES = 32
# Tasks: contiguous image ranges, up to 4 per worker so that a worker slowed by other load does not hold
# the others up, but at least 32 images each: every task sends back one (C, 15361) int64 table (2.3 MB
# for 19 classes, ~5 ms to pickle, send and unpickle here).
TASKS_PER_WORKER = 4
MIN_IMAGES_PER_TASK = 32


def _image_name(fh, index: int) -> str:
    try:
        name = fh["names"][index]
    except (OSError, KeyError, ValueError):
        return f"#{index}"
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def _range_histogram(path: str, field: str, unit: str, start: int, stop: int, num_classes: int,
                     with_pixels: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The histogram of images ``start..stop-1`` of a (validated) maps file, and their pixels per class.

    ``unit="totals"`` counts no histogram (None): it only checks every class
    id and value and counts the pixels per class, to verify a stored table.
    Opens the file itself, read-only, so that it can run in a worker process.
    Memory: one image, one intp key array and the tables.
    """
    import h5py

    c = num_classes
    hist = np.zeros(c * N_CODES, dtype=np.int64) if unit != "totals" else None
    pixels = np.zeros(c, dtype=np.int64) if with_pixels else None
    keys = None
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise UncerdaError(f"{path}: cannot open the maps file ({err})") from None
    with fh:
        ds_argmax, ds_values = fh["argmax"], fh[field]
        for i in range(start, stop):
            try:
                argmax, values = ds_argmax[i], ds_values[i]
            except OSError as err:
                raise UncerdaError(f"{path}: cannot read image {i} ({_image_name(fh, i)!r}): {err}; the file is "
                                   "truncated or corrupt, re-run the dump") from None
            try:
                if unit == "pixel":
                    argmax = check_argmax(argmax, c, "argmax")
                    codes = to_codes(values, field)
                    if keys is None or keys.size != argmax.size:
                        keys = np.empty(argmax.size, dtype=np.intp)
                    add_pixel_counts(hist, argmax, codes, keys)
                elif unit == "image":
                    hist += image_unit_histogram(argmax, values, c).ravel()
                else:
                    check_argmax(argmax, c, "argmax")
                    to_codes(values, field)
                if pixels is not None:
                    pixels += np.bincount(argmax.ravel(), minlength=c)
            except UncerdaError as err:
                raise UncerdaError(f"{path}: image {_image_name(fh, i)!r}: {err}; the file was changed or "
                                   "written by another program: re-run the dump") from None
    return (None if hist is None else hist.reshape(c, N_CODES)), pixels


def task_ranges(n: int, workers: int) -> list[tuple[int, int]]:
    """The contiguous ``(start, stop)`` image ranges :func:`histogram_pass` hands to ``workers`` processes."""
    per_worker = max(1, min(TASKS_PER_WORKER, n // max(1, workers * MIN_IMAGES_PER_TASK)))
    parts = max(1, workers * per_worker)
    bounds = [n * j // parts for j in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _pool_context():
    """``fork`` where the platform has it, else the default start method.

    A forked worker starts in tens of milliseconds; ``spawn`` and ``forkserver``
    re-import numpy, h5py and the caller's main module (0.5-4 s measured here),
    more than the whole pass over a few hundred images. Forking is safe here:
    the parent holds no HDF5 file open at that point (the file is validated
    and closed first) and the workers run numpy and h5py only.
    """
    import multiprocessing as mp

    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()


def histogram_pass(maps_path: str | os.PathLike, field: str = "entropy", unit: str = "pixel",
                   expected_classes: int | None = None, workers: int = 2,
                   with_pixels: bool = False, stored: bool = True,
                   verify: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(C, 15361) histogram of ``field`` over a maps file and, with ``with_pixels``, (C,) pixels per class.

    For ``unit="pixel"`` the histogram the writer stored in the file is used
    when there is one (``stored=False`` counts again), once a lighter pass has
    checked it against the maps (a ``"totals"`` pass and :func:`check_class_totals`; ``verify=False`` for
    a caller that reads every image anyway and checks the class totals itself
    with :func:`check_class_totals`). Otherwise one
    streaming pass. With ``workers > 1`` (and at least
    ``PARALLEL_MIN_IMAGES`` images) the images are split into contiguous
    ranges over ``workers`` processes; each opens the file read-only and
    returns its int64 table, which this process sums. Integer sums do not
    depend on the order, so the result is bit for bit the serial one. Memory:
    per process one image plus the tables, whatever the number of images.
    """
    from uncerda_core.uncertainty.maps import open_maps

    if unit not in ("pixel", "image"):
        raise UncerdaError(f"maps_histogram: unit must be 'pixel' or 'image', got {unit!r}")
    if field not in FIELDS:
        raise UncerdaError(f"maps_histogram: field must be one of {FIELDS}, got {field!r}")
    # validate, then close: no HDF5 file is open here while workers start
    with open_maps(maps_path, expected_classes=expected_classes) as maps:
        n, c, path = len(maps), maps.num_classes, str(maps.path)
        kept = maps.stored_histogram(field) if stored and unit == "pixel" else None
        class_names = maps.class_names
    if kept is not None:
        if verify:
            _, counted = _pass(path, field, "totals", n, c, workers, with_pixels=True)
            check_class_totals(path, field, kept.sum(axis=1), counted, class_names)
        return kept, (kept.sum(axis=1) if with_pixels else None)
    return _pass(path, field, unit, n, c, workers, with_pixels)


def check_class_totals(path: str | os.PathLike, field: str, totals: np.ndarray, counted: np.ndarray,
                       class_names: list[str]) -> None:
    """Refuse a stored ``field`` histogram whose pixels per class differ from the argmax maps' count.

    The stored table is trusted only after this check: :func:`histogram_pass`
    runs it on a light pass before any work (class ids < C and values in
    [0, 1] are checked on the way, an ``np.bincount`` of the uint8 ids per
    image, not the (class, code) counting the table saves), the pseudo-label
    pass on the images it reads anyway. A file edited or written by another
    program after the dump is refused instead of summarised.
    """
    if not np.array_equal(totals, counted):
        k = int(np.flatnonzero(totals != counted)[0])
        raise UncerdaError(f"{path}: its {field} histogram counts {int(totals[k])} pixels of class "
                           f"{class_names[k]!r}, its argmax maps {int(counted[k])}; the file was changed after it "
                           "was written: re-run the dump")


def _pass(path: str, field: str, unit: str, n: int, c: int, workers: int,
          with_pixels: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """:func:`_range_histogram` over all ``n`` images, in process or split over ``workers`` processes."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    workers = max(1, min(int(workers), n))
    if workers == 1 or n < PARALLEL_MIN_IMAGES:
        return _range_histogram(path, field, unit, 0, n, c, with_pixels)
    hist = np.zeros((c, N_CODES), dtype=np.int64) if unit != "totals" else None
    pixels = np.zeros(c, dtype=np.int64) if with_pixels else None
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
    try:
        futures = [executor.submit(_range_histogram, path, field, unit, a, b, c, with_pixels)
                   for a, b in task_ranges(n, workers)]
        for j, future in enumerate(futures):   # in order: a bad image is reported as the serial pass would
            part, part_pixels = future.result()
            futures[j] = None
            if hist is not None:
                hist += part
            if pixels is not None:
                pixels += part_pixels
            del part, part_pixels
    except BrokenProcessPool as err:
        raise UncerdaError(f"{path}: a histogram worker process died ({err}); out of memory? "
                           "retry with workers=1") from None
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return hist, pixels


def maps_histogram(maps_path: str | os.PathLike, field: str = "entropy", unit: str = "pixel",
                   expected_classes: int | None = None, workers: int = 2, stored: bool = True) -> np.ndarray:
    """(C, 15361) histogram of ``field`` (``entropy`` or ``maxprob``) over a maps file.

    The one stored in the file, or one streaming pass, one image in memory at a
    time per process, over ``workers`` processes (see :func:`histogram_pass`).
    ``unit="image"`` counts images at the code of each class's per-image mean
    instead of pixels.
    """
    return histogram_pass(maps_path, field, unit, expected_classes, workers, stored=stored)[0]
