"""The HDF5 maps layout: per-pixel argmax, entropy (Eq. 2) and max probability.

One file per (model, split)::

    names    (N,)        variable-length UTF-8 image stems
    argmax   (N, H, W)   uint8, chunks (1, H, W)
    entropy  (N, H, W)   float16 in [0, 1] (Eq. 2; never -0.0), chunks (1, H, W)
    maxprob  (N, H, W)   float16 in [0, 1], chunks (1, H, W)
    prob     (N, C, h, w) float16, optional, at a reduced size, chunks (1, C, h, w)
    hist_entropy, hist_maxprob  (C, 15361) int64, optional: pixels per (argmax class,
             float16 code) of the field over the whole file (docs/method.md#exact-float16-histograms)

The writer counts the histograms while it writes (one ``np.bincount`` per
field and image, ~1.4 ms per 1024x512 image), so that Eq. 1 (rank) and the
first pass of the pseudo labels read a 2.3 MB table instead of every pixel
again. Files without them (older files, other writers) are counted by a
streaming pass; both give the same table.

Attributes: ``layout_version`` (1), ``num_classes``, ``class_names`` (JSON
list), ``checkpoint``, ``checkpoint_sha256``, ``config`` (JSON), ``provenance``
(JSON). Readers need nothing but h5py: only built-in filters are used.

Compression (measured, BENCHMARKS.md): argmax maps are piecewise
constant and compress ~3.5x with lzf for ~1 ms per 1024x512 image; float16
entropies and probabilities compress only 1.0-1.4x (lzf, lzf+shuffle) at
6-7 ms per field per image, so by default only ``argmax`` is compressed and
``compress_floats=True`` opts the float fields in (with the shuffle filter).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uncerda_core.artifacts import atomic_path, require_free_space
from uncerda_core.errors import UncerdaError
from uncerda_core.uncertainty.codes import FIELDS, N_CODES, ONE_CODE, add_pixel_counts, check_argmax, to_codes

LAYOUT_VERSION = 1
MAP_FIELDS = ("argmax", "entropy", "maxprob")
_DTYPES = {"argmax": np.dtype(np.uint8), "entropy": np.dtype(np.float16),
           "maxprob": np.dtype(np.float16), "prob": np.dtype(np.float16)}
COMPRESSIONS = ("none", "lzf", "gzip")


def _filter_kwargs(compression: str, shuffle: bool) -> dict[str, Any]:
    if compression == "none":
        return {}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": shuffle}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": shuffle}
    raise UncerdaError(f"maps compression must be one of {COMPRESSIONS}, got {compression!r}")


def _unit_float16(x: Any, what: str) -> np.ndarray:
    """float16 values in [0, 1]; other float dtypes are clipped (-0.0 -> 0) and cast."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype != np.float16:
        x = np.where(x > 0, np.minimum(x, 1.0), 0.0).astype(np.float16)
    if x.size and x.view(np.uint16).max() > ONE_CODE:
        raise UncerdaError(f"{what}: float16 value outside [0, 1] (or -0.0 / NaN); clip before the cast")
    return x


def maps_from_logits(logits: Any, is_prob: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, C, H, W) logits (or probabilities) -> argmax uint8, entropy float16, maxprob float16.

    Entropy is Eq. 2, ``-(1/log C) sum_c p_c log p_c``, computed in float32 and
    clipped to [0, 1] before the float16 cast, with -0.0 mapped to +0.0 (its
    code 0x8000 would fall outside the 15,361 codes of [0, 1]).
    """
    import torch

    x = torch.as_tensor(logits).detach()
    if x.ndim != 4:
        raise UncerdaError(f"maps_from_logits: (N, C, H, W) expected, got shape {tuple(x.shape)}")
    num_classes = x.shape[1]
    if not 2 <= num_classes <= 255:
        raise UncerdaError(f"maps_from_logits: 2..255 classes fit a uint8 argmax, got {num_classes}")
    x = x.float()
    if is_prob:
        prob = x
        plogp = torch.special.xlogy(prob, prob)
        entropy = -plogp.sum(dim=1) / float(np.log(num_classes))
        maxprob, argmax = prob.max(dim=1)
    else:
        # From logits without a log over every class: with z = x - max(x) and s = sum(exp z),
        # p = exp(z) / s, so H = log s - sum(exp(z) * z) / s and max p = 1 / s.
        # One class plane at a time: contiguous (H, W) operations, no (C, H, W) temporaries.
        top = x.amax(dim=1)
        argmax = torch.full(top.shape, num_classes - 1, dtype=torch.uint8, device=x.device)
        s, acc = torch.zeros_like(top), torch.zeros_like(top)
        z, e = torch.empty_like(top), torch.empty_like(top)
        at_max = torch.empty(top.shape, dtype=torch.bool, device=x.device)
        for c in range(num_classes - 1, -1, -1):  # descending: a tie's first class is written last
            torch.sub(x[:, c], top, out=z)
            torch.exp(z, out=e)
            s.add_(e)
            acc.addcmul_(e, z)
            torch.eq(z, 0, out=at_max)
            argmax.masked_fill_(at_max, c)
        entropy = (s.log() - acc / s) / float(np.log(num_classes))
        maxprob = s.reciprocal()
    entropy = torch.where(entropy > 0, entropy.clamp(max=1.0), torch.zeros_like(entropy))
    maxprob = torch.where(maxprob > 0, maxprob.clamp(max=1.0), torch.zeros_like(maxprob))
    return (argmax.to(torch.uint8).cpu().numpy(), entropy.half().cpu().numpy(),
            maxprob.half().cpu().numpy())


class _WriteGuard(io.FileIO):
    """The maps file's handle, given to h5py as a Python file object.

    When a write fails (typically a full disk) HDF5 cannot close the file: it
    retries the flush, fails again, and the process dies with a segmentation
    fault at exit. This handle keeps the first error and accepts every later
    write without doing it, so that the file closes cleanly; the writer then
    raises the kept error and the temporary file is removed.
    """

    failure: OSError | None = None

    def write(self, data: Any) -> int:
        if self.failure is None:
            try:
                return super().write(data)
            except OSError as err:
                self.failure = err
        return memoryview(data).nbytes


def _json_attr(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class MapsWriter:
    """Writes a maps file atomically; use as a context manager.

    On a clean exit (every index written) the temporary file is renamed to
    ``path``; on an exception, or if an image is missing, it is removed.
    ``attrs`` may hold ``checkpoint``, ``checkpoint_sha256``, ``config`` and
    ``provenance`` (dicts are stored as JSON) and any extra scalar attributes.
    """

    def __init__(self, path: str | os.PathLike, n_images: int, height: int, width: int, num_classes: int,
                 class_names: Sequence[str], prob_size: tuple[int, int] | None = None,
                 compression: str = "lzf", attrs: dict[str, Any] | None = None,
                 compress_floats: bool = False) -> None:
        if n_images < 1 or height < 1 or width < 1:
            raise UncerdaError(f"{path}: maps need n_images, height, width >= 1, got {n_images}, {height}, {width}")
        if not 2 <= num_classes <= 255:
            raise UncerdaError(f"{path}: 2..255 classes fit a uint8 argmax, got {num_classes}")
        if len(class_names) != num_classes:
            raise UncerdaError(f"{path}: {len(class_names)} class names for {num_classes} classes")
        self.path = Path(path)
        self.n_images, self.height, self.width, self.num_classes = n_images, height, width, num_classes
        self.class_names = list(class_names)
        self.prob_size = tuple(prob_size) if prob_size is not None else None
        self._argmax_filter = _filter_kwargs(compression, shuffle=False)
        self._float_filter = _filter_kwargs(compression if compress_floats else "none", shuffle=True)
        self.attrs = dict(attrs or {})
        self._written = np.zeros(n_images, dtype=bool)
        self._hist = {field: np.zeros(num_classes * N_CODES, dtype=np.int64) for field in FIELDS}
        self._keys = np.empty(height * width, dtype=np.intp)
        self._ctx = None
        self._file = None
        self._handle: _WriteGuard | None = None

    def __enter__(self) -> MapsWriter:
        import h5py

        if not self._float_filter:   # uncompressed float fields: their size is known before any work
            require_free_space(self.path, self.n_images * self.height * self.width * 4, "the maps file")
        self._ctx = atomic_path(self.path, size_hint=self.expected_bytes)
        tmp = self._ctx.__enter__()
        try:
            self._handle = _WriteGuard(tmp, "w+")
            fh = h5py.File(self._handle, "w")
            n, h, w, c = self.n_images, self.height, self.width, self.num_classes
            fh.create_dataset("names", (n,), dtype=h5py.string_dtype("utf-8"))
            fh.create_dataset("argmax", (n, h, w), dtype=np.uint8, chunks=(1, h, w), **self._argmax_filter)
            for field in ("entropy", "maxprob"):
                fh.create_dataset(field, (n, h, w), dtype=np.float16, chunks=(1, h, w), **self._float_filter)
            if self.prob_size is not None:
                ph, pw = self.prob_size
                fh.create_dataset("prob", (n, c, ph, pw), dtype=np.float16, chunks=(1, c, ph, pw),
                                  **self._float_filter)
            fh.attrs["layout_version"] = LAYOUT_VERSION
            fh.attrs["num_classes"] = c
            fh.attrs["class_names"] = json.dumps(self.class_names)
            for key in ("checkpoint", "checkpoint_sha256"):
                fh.attrs[key] = str(self.attrs.get(key) or "")
            for key in ("config", "provenance"):
                fh.attrs[key] = _json_attr(self.attrs.get(key, {}))
            for key, value in self.attrs.items():
                if key not in fh.attrs:
                    fh.attrs[key] = value if isinstance(value, (int, float, str)) else _json_attr(value)
        except BaseException as err:
            if self._handle is not None:
                self._handle.close()
            self._ctx.__exit__(type(err), err, err.__traceback__)
            raise
        self._file = fh
        return self

    @property
    def expected_bytes(self) -> int:
        """The size of the maps uncompressed: what the file needs at most, roughly (the tables compress well)."""
        per_image = self.height * self.width * (1 + 2 + 2)
        if self.prob_size is not None:
            per_image += 2 * self.num_classes * self.prob_size[0] * self.prob_size[1]
        return self.n_images * per_image

    def write(self, index: int, name: str, argmax: Any, entropy: Any, maxprob: Any, prob: Any = None) -> None:
        """Store image ``index`` (0-based) under ``name``; arrays are (H, W), ``prob`` (C, h, w)."""
        if self._file is None:
            raise UncerdaError(f"{self.path}: MapsWriter.write called outside its 'with' block")
        if not 0 <= index < self.n_images:
            raise UncerdaError(f"{self.path}: image index {index} outside [0, {self.n_images})")
        if self._written[index]:
            raise UncerdaError(f"{self.path}: image index {index} written twice ({name!r})")
        shape = (self.height, self.width)
        argmax = np.asarray(argmax.cpu() if hasattr(argmax, "cpu") else argmax)
        if argmax.shape != shape or argmax.dtype.kind not in "ui":
            raise UncerdaError(f"{self.path}: argmax of {name!r} must be integer {shape}, got "
                               f"{argmax.dtype} {argmax.shape}")
        if argmax.size and argmax.max() >= self.num_classes:
            raise UncerdaError(f"{self.path}: argmax of {name!r} has class {int(argmax.max())} >= {self.num_classes}")
        entropy = _unit_float16(entropy, f"{self.path}: entropy of {name!r}")
        maxprob = _unit_float16(maxprob, f"{self.path}: maxprob of {name!r}")
        for field, arr in (("entropy", entropy), ("maxprob", maxprob)):
            if arr.shape != shape:
                raise UncerdaError(f"{self.path}: {field} of {name!r} must be {shape}, got {arr.shape}")
        fh = self._file
        fh["names"][index] = name
        fh["argmax"][index] = argmax.astype(np.uint8, copy=False)
        fh["entropy"][index] = entropy
        fh["maxprob"][index] = maxprob
        if self.prob_size is not None:
            if prob is None:
                raise UncerdaError(f"{self.path}: this maps file stores 'prob'; pass prob for {name!r}")
            prob = _unit_float16(prob, f"{self.path}: prob of {name!r}")
            expected = (self.num_classes, *self.prob_size)
            if prob.shape != expected:
                raise UncerdaError(f"{self.path}: prob of {name!r} must be {expected}, got {prob.shape}")
            fh["prob"][index] = prob
        if self._handle.failure is not None:
            raise self._handle.failure
        for field, values in (("entropy", entropy), ("maxprob", maxprob)):
            add_pixel_counts(self._hist[field], argmax, values.view(np.uint16), self._keys)
        self._written[index] = True

    def __exit__(self, exc_type, exc, tb) -> None:
        fh, self._file = self._file, None
        failure = exc
        if fh is not None:
            try:
                if exc_type is None and self._written.all():
                    for field, hist in self._hist.items():
                        fh.create_dataset(f"hist_{field}", data=hist.reshape(self.num_classes, N_CODES),
                                          compression="gzip", compression_opts=1)
            except Exception as err:   # e.g. the disk filled up while the tables were written
                failure = failure or err
            try:
                fh.close()
            except Exception as err:
                failure = failure or err
        if self._handle is not None:
            self._handle.close()
            failure = failure or self._handle.failure
            self._handle = None
        if failure is None and not self._written.all():
            missing = np.flatnonzero(~self._written)
            failure = UncerdaError(f"{self.path}: {len(missing)} of {self.n_images} images never written "
                                   f"(first index {int(missing[0])}); file not created")
        if failure is None:
            self._ctx.__exit__(None, None, None)
            return
        # removes the temporary file; a full disk comes back as an UncerdaError naming it
        self._ctx.__exit__(type(failure), failure, failure.__traceback__)
        if failure is not exc:
            raise failure


class MapsFile:
    """A validated, open maps file; iterate it one image at a time."""

    def __init__(self, path: Path, handle: Any) -> None:
        self.path = path
        self._fh = handle
        self.num_classes = int(handle.attrs["num_classes"])
        self.class_names: list[str] = json.loads(handle.attrs["class_names"])
        self.shape: tuple[int, int, int] = tuple(int(s) for s in handle["argmax"].shape)
        self.names: list[str] = [n.decode("utf-8") if isinstance(n, bytes) else str(n)
                                 for n in handle["names"][()]]
        self.attrs: dict[str, Any] = dict(handle.attrs)
        self.has_prob = "prob" in handle
        self.stored_histograms = [f for f in FIELDS if f"hist_{f}" in handle]

    def __len__(self) -> int:
        return self.shape[0]

    def json_attr(self, key: str) -> Any:
        """An attribute stored as JSON (``config``, ``provenance``, ``class_names``)."""
        return json.loads(self.attrs[key])

    def stored_histogram(self, field: str) -> np.ndarray | None:
        """The (C, 15361) histogram of ``field`` the writer stored, or None if the file has none."""
        return self._fh[f"hist_{field}"][()] if field in self.stored_histograms else None

    def read(self, index: int, fields: Sequence[str] = ("argmax", "entropy")) -> dict[str, np.ndarray]:
        """The arrays of one image."""
        return {f: self._fh[f][index] for f in fields}

    def iter_images(self, fields: Sequence[str] = ("argmax", "entropy")) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """Yield ``(name, {field: array})`` per image; one image in memory at a time.

        Every array is range-checked as it is read (class ids < C, values
        float16 in [0, 1], no NaN): a file changed after the dump, or written
        by another program, raises :class:`UncerdaError` naming the file and image.
        """
        for field in fields:
            if field not in self._fh:
                raise UncerdaError(f"{self.path}: no dataset {field!r} in this maps file")
        datasets = [(f, self._fh[f]) for f in fields]
        for i, name in enumerate(self.names):
            try:
                arrays = {f: ds[i] for f, ds in datasets}
            except OSError as err:
                raise UncerdaError(f"{self.path}: cannot read image {i} ({name!r}): {err}; the file is "
                                   "truncated or corrupt, re-run the dump") from None
            try:
                for field, values in arrays.items():
                    if field == "argmax":
                        check_argmax(values, self.num_classes, field)
                    else:
                        to_codes(values, field)
            except UncerdaError as err:
                raise UncerdaError(f"{self.path}: image {name!r}: {err}; the file was changed or written by "
                                   "another program: re-run the dump") from None
            yield name, arrays

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> MapsFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_maps(path: str | os.PathLike, expected_classes: int | None = None) -> MapsFile:
    """Open and validate a maps file (layout, dtypes, shapes, class count)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: maps file not found (run the dump stage first)")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise UncerdaError(f"{path}: not a readable HDF5 maps file (truncated or corrupt? re-run the dump): "
                           f"{err}") from None
    try:
        _validate(path, fh, expected_classes)
        return MapsFile(path, fh)
    except UncerdaError:
        fh.close()
        raise
    except (OSError, KeyError, ValueError) as err:
        fh.close()
        raise UncerdaError(f"{path}: unreadable maps file ({err}); re-run the dump") from None


def _validate(path: Path, fh: Any, expected_classes: int | None) -> None:
    for key in ("layout_version", "num_classes", "class_names"):
        if key not in fh.attrs:
            raise UncerdaError(f"{path}: attribute {key!r} missing; not a maps file written by uncerda")
    if int(fh.attrs["layout_version"]) != LAYOUT_VERSION:
        raise UncerdaError(f"{path}: maps layout_version {fh.attrs['layout_version']}, this code reads "
                           f"{LAYOUT_VERSION}; re-run the dump")
    for field in ("names", *MAP_FIELDS):
        if field not in fh:
            raise UncerdaError(f"{path}: dataset {field!r} missing; expected {('names', *MAP_FIELDS)}")
    for field in (*MAP_FIELDS, *(("prob",) if "prob" in fh else ())):
        if fh[field].dtype != _DTYPES[field]:
            raise UncerdaError(f"{path}: dataset {field!r} is {fh[field].dtype}, expected {_DTYPES[field]}")
    shape = fh["argmax"].shape
    if len(shape) != 3:
        raise UncerdaError(f"{path}: argmax must be (N, H, W), got {shape}")
    for field in MAP_FIELDS[1:]:
        if fh[field].shape != shape:
            raise UncerdaError(f"{path}: {field} has shape {fh[field].shape}, argmax {shape}")
    if fh["names"].shape != (shape[0],):
        raise UncerdaError(f"{path}: names has shape {fh['names'].shape}, expected ({shape[0]},)")
    num_classes = int(fh.attrs["num_classes"])
    if len(json.loads(fh.attrs["class_names"])) != num_classes:
        raise UncerdaError(f"{path}: class_names does not list num_classes={num_classes} names")
    if "prob" in fh and (fh["prob"].ndim != 4 or fh["prob"].shape[:2] != (shape[0], num_classes)):
        raise UncerdaError(f"{path}: prob must be (N, {num_classes}, h, w), got {fh['prob'].shape}")
    for field in FIELDS:
        name = f"hist_{field}"
        if name in fh and (fh[name].shape != (num_classes, N_CODES) or fh[name].dtype != np.int64):
            raise UncerdaError(f"{path}: {name} must be int64 ({num_classes}, {N_CODES}), got {fh[name].dtype} "
                               f"{fh[name].shape}; re-run the dump")
    if expected_classes is not None and num_classes != expected_classes:
        raise UncerdaError(f"{path}: maps have {num_classes} classes, the config expects {expected_classes}; "
                           "re-run the dump with this config's model")
