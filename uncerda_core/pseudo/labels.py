"""Maps file -> pseudo-label PNGs, in one streaming pass.

Step 1 takes the per-class code histogram of the field the method uses
(entropy for the GMM, max probability for the baselines) and turns it into a
(C, 15361) selection table. The histogram is the one the dump stored in the
maps file; for files without it, and for the image-unit GMM, step 1 is a
streaming pass of its own, which may split the images over worker processes.
The pass applies the table to every image,
``label = argmax if table[argmax, code] else 255``, writes ``<name>.png``
(mode L, train ids) and checks the stored histogram's class totals against
the argmax maps it reads. Memory: one image plus the tables per process,
whatever the number of images.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uncerda_core.artifacts import atomic_dir, provenance, remove_stale_temporaries, write_json
from uncerda_core.data.labels import IGNORE
from uncerda_core.errors import UncerdaError
from uncerda_core.pseudo.baselines import argmax_table, cbst_table, threshold_table
from uncerda_core.pseudo.folder import CLASSES_CSV, read_pseudo_dir
from uncerda_core.pseudo.gmm import select_class, selection_intervals
from uncerda_core.schema import enum
from uncerda_core.uncertainty.codes import N_CODES, code_values, image_class_means, mean_codes, to_codes
from uncerda_core.uncertainty.histogram import check_class_totals, histogram_pass
from uncerda_core.uncertainty.maps import MapsFile, open_maps

METHODS: tuple[str, ...] = enum("pseudo.method")  # the schema's pseudo.method
PNG_COMPRESS_LEVEL = 1  # label maps compress well even at level 1; higher levels cost time, not much space


@dataclass(frozen=True)
class PseudoSettings:
    """The config's ``pseudo`` section, complete (its defaults live in the schema only)."""

    method: str
    gmm_unit: str
    min_pixels: int
    tol: float
    max_iter: int
    cbst_portion: float
    threshold: float
    gmm_high_tail: bool

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UncerdaError(f"pseudo.method must be one of {METHODS}, got {self.method!r}")
        if self.gmm_unit not in ("pixel", "image"):
            raise UncerdaError(f"pseudo.gmm_unit must be 'pixel' or 'image', got {self.gmm_unit!r}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PseudoSettings:
        """From the ``pseudo`` section, or from a whole config that has one."""
        section = config.get("pseudo", config) if isinstance(config, dict) else {}
        known = cls.__dataclass_fields__
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise UncerdaError(f"pseudo settings: unknown keys {unknown}; known: {sorted(known)}")
        missing = sorted(set(known) - set(section))
        if missing:
            raise UncerdaError(f"pseudo settings: keys {missing} missing; build them from the resolved config "
                               "(config.schema_defaults() when there is none)")
        return cls(**section)

    @property
    def field(self) -> str:
        return "entropy" if self.method == "gmm" else "maxprob"

    @property
    def unit(self) -> str:
        """What the statistic is counted over: ``image`` only for the image-level GMM."""
        return self.gmm_unit if self.method == "gmm" else "pixel"


def _first_pass(maps_path: Path, settings: PseudoSettings, expected_classes: int | None,
                workers: int, stored: bool) -> tuple[np.ndarray, np.ndarray]:
    """(C, 15361) histogram of the method's statistic and (C,) predicted pixels per class."""
    image_unit = settings.unit == "image"
    # verify=False: the labelling pass range-checks every image and compares the class totals itself
    hist, pixels = histogram_pass(maps_path, settings.field, settings.unit,
                                  expected_classes=expected_classes, workers=workers, with_pixels=image_unit,
                                  stored=stored, verify=False)
    if not image_unit:
        pixels = hist.sum(axis=1)
    return hist, pixels


def _fmt_intervals(intervals: list[tuple[float, float]]) -> str:
    return "; ".join(f"[{lo:.6g}, {hi:.6g}]" for lo, hi in intervals)


def selection_from_histogram(hist: np.ndarray, pixels: np.ndarray, settings: PseudoSettings,
                             class_names: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The (C, 15361) selection table of ``settings.method`` and one info row per class."""
    c = hist.shape[0]
    values = code_values()
    rows: list[dict[str, Any]] = []
    if settings.method == "gmm":
        table = np.zeros((c, N_CODES), dtype=bool)
        for k in range(c):
            sel = select_class(hist[k], values, settings.min_pixels, settings.tol, settings.max_iter,
                               n_pixels=int(pixels[k]), high_tail=settings.gmm_high_tail)
            table[k] = sel.mask
            fit = sel.fit
            row = {"degenerate": sel.reason, "notes": "; ".join(sel.notes), "threshold": np.nan}
            for i, part in enumerate(("pos", "neg")):
                row[f"weight_{part}"] = fit.weights[i] if fit else np.nan
                row[f"mean_{part}"] = fit.means[i] if fit else np.nan
                row[f"std_{part}"] = fit.stds[i] if fit else np.nan
            row.update({"log_likelihood": fit.log_likelihood if fit else np.nan,
                        "n_iter": fit.n_iter if fit else 0, "converged": fit.converged if fit else None})
            rows.append(row)
    else:
        if settings.method == "cbst":
            table, thresholds, reasons = cbst_table(hist, settings.cbst_portion, settings.min_pixels)
        elif settings.method == "threshold":
            table = threshold_table(c, settings.threshold)
            thresholds, reasons = np.full(c, settings.threshold), [""] * c
        else:
            table = argmax_table(c)
            thresholds, reasons = np.full(c, np.nan), [""] * c
        # cbst_table marks never-predicted classes; for threshold and argmax the labelling pass does
        for k in range(c):
            rows.append({"degenerate": reasons[k], "notes": "", "threshold": thresholds[k]})
    for k, row in enumerate(rows):
        row.update({"class_id": k, "class": class_names[k], "method": settings.method,
                    "unit": settings.unit,
                    "statistic": settings.field, "intervals": _fmt_intervals(selection_intervals(table[k], values))})
    return table, rows


def _label_image(argmax: np.ndarray, field: np.ndarray, table: np.ndarray, image_unit: bool,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(label uint8 with 255 for unselected, selected mask) of one image."""
    if image_unit:
        _, means = image_class_means(argmax, field, num_classes)
        codes = mean_codes(means)[argmax]
    else:
        codes = to_codes(field)
    selected = table.ravel()[argmax.astype(np.intp) * N_CODES + codes]
    return np.where(selected, argmax, np.uint8(IGNORE)).astype(np.uint8), selected


def _png_name(name: str, maps_path: Path) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise UncerdaError(f"{maps_path}: image name {name!r} cannot be a file name (no path separators)")
    return f"{name}.png"


def generate_pseudo_labels(maps_path: str | os.PathLike, settings: PseudoSettings, out_dir: str | os.PathLike,
                           gt_lookup: Callable[[str], np.ndarray | None] | None = None,
                           record: dict[str, Any] | None = None,
                           expected_classes: int | None = None, workers: int = 2,
                           stored: bool = True) -> pd.DataFrame:
    """Write ``<name>.png`` for every image of the maps file, ``classes.csv`` and ``provenance.json``.

    With ``gt_lookup`` (name -> ground-truth train ids at the maps' size, or
    None to skip an image) also ``quality.csv`` (per class) and
    ``quality.json`` (overall precision and coverage). The folder appears
    atomically. Returns the per-class table of ``classes.csv``. The GMM and
    CBST statistics come from the histogram stored in the maps file, or
    (``stored=False``, or none stored) from a first pass over ``workers``
    processes (:func:`~uncerda_core.uncertainty.histogram.histogram_pass`);
    the result depends on neither.
    """
    from PIL import Image

    maps_path = Path(maps_path)
    remove_stale_temporaries(out_dir)   # what a killed run of this folder left
    # pass 1 opens the file itself (in its worker processes); threshold / argmax need no statistics
    first = _first_pass(maps_path, settings, expected_classes, workers, stored) \
        if settings.method in ("gmm", "cbst") else None
    with open_maps(maps_path, expected_classes=expected_classes) as maps:
        c = maps.num_classes
        if first is None:   # pixels are counted in pass 2
            hist, pixels = np.zeros((c, N_CODES), np.int64), np.zeros(c, dtype=np.int64)
        else:
            hist, pixels = first
        table, rows = selection_from_histogram(hist, pixels, settings, maps.class_names)
        image_unit = settings.unit == "image"
        predicted = np.zeros(c, dtype=np.int64)
        selected = np.zeros(c, dtype=np.int64)
        correct = np.zeros(c, dtype=np.int64)
        gt_pixels = np.zeros(c, dtype=np.int64)
        gt_predicted = np.zeros(c, dtype=np.int64)   # over the images that have ground truth
        gt_selected = np.zeros(c, dtype=np.int64)
        labelled_selected = np.zeros(c, dtype=np.int64)   # selected pixels whose truth is a class
        gt_images = 0
        seen: set[str] = set()
        with atomic_dir(out_dir) as tmp:
            for name, arrays in maps.iter_images(fields=("argmax", settings.field)):
                png = _png_name(name, maps_path)
                if png in seen:
                    raise UncerdaError(f"{maps_path}: image name {name!r} appears twice")
                seen.add(png)
                argmax = arrays["argmax"]
                try:
                    label, sel = _label_image(argmax, arrays[settings.field], table, image_unit, c)
                except UncerdaError as err:
                    raise UncerdaError(f"{maps_path}: image {name!r}: {err}") from None
                Image.fromarray(label).save(tmp / png, compress_level=PNG_COMPRESS_LEVEL)
                image_predicted = np.bincount(argmax.ravel(), minlength=c)
                image_selected = np.bincount(argmax[sel], minlength=c)
                predicted += image_predicted
                selected += image_selected
                if gt_lookup is not None:
                    gt = gt_lookup(name)
                    if gt is None:
                        continue
                    gt = np.asarray(gt)
                    if gt.shape != argmax.shape:
                        raise UncerdaError(f"ground truth of {name!r} has shape {gt.shape}, the maps {argmax.shape}; "
                                           "resize it (nearest) to the maps' size")
                    gt_images += 1
                    gt_predicted += image_predicted
                    gt_selected += image_selected
                    correct += np.bincount(argmax[sel & (gt == argmax)], minlength=c)
                    labelled = gt < c   # pixels whose truth is a class (255 and other void ids are not)
                    labelled_selected += np.bincount(argmax[sel & labelled], minlength=c)
                    gt_pixels += np.bincount(gt[labelled].ravel().astype(np.intp), minlength=c)
            if first is not None:
                check_class_totals(maps_path, settings.field, pixels, predicted, maps.class_names)
            for k, row in enumerate(rows):
                if not row["degenerate"] and predicted[k] == 0:
                    row["degenerate"] = "never predicted"
                row.update({"predicted_pixels": int(predicted[k]), "selected_pixels": int(selected[k]),
                            "selected_fraction": selected[k] / predicted[k] if predicted[k] else np.nan})
            df = pd.DataFrame(rows).reindex(columns=CLASSES_COLUMNS)
            df.to_csv(tmp / "classes.csv", index=False, float_format="%.10g")
            if gt_lookup is not None:
                quality, overall = _quality(maps.class_names, gt_predicted, gt_selected, labelled_selected,
                                            correct, gt_pixels, gt_images)
                quality.to_csv(tmp / "quality.csv", index=False, float_format="%.10g")
                write_json(tmp / "quality.json", overall)
            if record is None:
                record = provenance("pseudo", config=asdict(settings),
                                    extra={"maps": str(maps_path), "maps_provenance": _maps_provenance(maps)})
            write_json(tmp / "provenance.json", record)
    return df


def selection_coverage(classes: pd.DataFrame, source: str = "classes.csv") -> float:
    """Overall coverage of a pseudo-label selection: selected / predicted pixels over every class.

    ``classes`` is a pseudo-label folder's ``classes.csv``. Needs no ground truth,
    so another method can be set to select the same share of the pixels (Table 5's
    comparison at equal coverage).
    """
    predicted = float(pd.to_numeric(classes["predicted_pixels"]).sum())
    if predicted <= 0:
        raise UncerdaError(f"{source}: no predicted pixels, so the selection has no coverage")
    return float(pd.to_numeric(classes["selected_pixels"]).sum()) / predicted


def coverage_of(pseudo_dir: str | os.PathLike) -> float:
    """:func:`selection_coverage` of a pseudo-label folder, read with :func:`~.folder.read_pseudo_dir`."""
    classes, _, _ = read_pseudo_dir(pseudo_dir)
    return selection_coverage(classes, str(Path(pseudo_dir) / CLASSES_CSV))


def ground_truth_for_maps(maps_path: str | os.PathLike, root: str | os.PathLike, split: str
                          ) -> Callable[[str], np.ndarray | None]:
    """The Cityscapes ground truth of a maps file's images, at the maps' size, by image name (pseudo-label
    diagnosis only: :func:`generate_pseudo_labels`' ``gt_lookup``)."""
    from uncerda_core.data.lookup import ground_truth_lookup
    with open_maps(maps_path) as maps:
        height, width = maps.shape[-2:]
    return ground_truth_lookup("cityscapes", root, split, size=(width, height))


CLASSES_COLUMNS = ["class_id", "class", "method", "unit", "statistic", "weight_pos", "weight_neg", "mean_pos",
                   "mean_neg", "std_pos", "std_neg", "log_likelihood", "n_iter", "converged", "threshold",
                   "intervals", "predicted_pixels", "selected_pixels", "selected_fraction", "degenerate", "notes"]


def _maps_provenance(maps: MapsFile) -> Any:
    try:
        return maps.json_attr("provenance")
    except (KeyError, ValueError):
        return None


def _ratio(a: np.ndarray | int, b: np.ndarray | int) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(b) > 0, np.asarray(a, dtype=np.float64) / np.maximum(b, 1), np.nan)


def _quality(class_names: list[str], predicted: np.ndarray, selected: np.ndarray, labelled: np.ndarray,
             correct: np.ndarray, gt_pixels: np.ndarray, gt_images: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-class and overall precision and coverage of the pseudo labels, over the images with ground truth.

    ``precision`` = correct selected / selected pixels whose ground truth is a class (``labelled``):
    a pixel the ground truth leaves unlabelled (255: ego vehicle, out of the region of interest) is
    neither right nor wrong, as in mIoU, so it does not count; ``coverage`` = selected / predicted,
    every pixel (what the selection keeps, whatever the truth); ``gt_coverage`` = correct selected /
    ground-truth pixels of the class.

    The summary's ``precision`` pools the pixels, so the large classes (road, building, sky) decide it;
    ``class_mean_precision`` is the mean of the per-class precisions, each class counted once, as mIoU
    counts them. A class with no labelled selected pixel has no precision and stays out of that mean
    (``classes_in_precision_mean`` says how many entered): read it beside the per-class coverage.
    """
    class_precision = _ratio(correct, labelled)
    per_class = pd.DataFrame({
        "class_id": np.arange(len(class_names)), "class": class_names,
        "predicted_pixels": predicted, "selected_pixels": selected, "labelled_selected_pixels": labelled,
        "correct_pixels": correct, "gt_pixels": gt_pixels, "precision": class_precision,
        "coverage": _ratio(selected, predicted), "gt_coverage": _ratio(correct, gt_pixels),
    })
    overall = {
        "images_with_gt": gt_images,
        "selected_pixels": int(selected.sum()), "labelled_selected_pixels": int(labelled.sum()),
        "correct_pixels": int(correct.sum()),
        "predicted_pixels": int(predicted.sum()), "gt_pixels": int(gt_pixels.sum()),
        "precision": float(_ratio(correct.sum(), labelled.sum())),
        "class_mean_precision": float(np.nanmean(class_precision)) if labelled.any() else float("nan"),
        "classes_in_precision_mean": int((labelled > 0).sum()),
        "coverage": float(_ratio(selected.sum(), predicted.sum())),
        "gt_coverage": float(_ratio(correct.sum(), gt_pixels.sum())),
    }
    overall = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in overall.items()}
    return per_class, overall
