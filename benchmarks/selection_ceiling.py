"""How precise can any per-class certainty cut be at a given size? (diagnostic for Table 5)

GMM and CBST pseudo labels both keep, per predicted class, every pixel more certain than a kept pixel:
each class's selection is a prefix of its pixels sorted by the statistic (entropy, or max probability
for CBST). This script asks what the best such selection could reach if the per-class cut-offs were
chosen with the ground truth in hand: the most correct pixels among ``k`` labelled selected pixels.
That best value lies on the upper concave envelope of the sum of the per-class (selected, correct)
curves, which is exact to compute: take each class's upper concave hull from (0, 0), cut it into
segments, and lay all classes' segments end to end from the steepest slope down. Between the hull's
vertices the envelope is a bound (a mix of two vertices), at them it is reached.

It then prints, for each pseudo-label folder given (its ``quality.csv``), the folder's pooled
precision and the envelope's precision at the folder's number of labelled selected pixels, for both
rankings. On the demo it showed that no per-class cut could lead CBST at equal coverage by 5 points
(docs/results.md, "Table 5 on the demo").

    python benchmarks/selection_ceiling.py MAPS.h5 TARGET_ROOT PSEUDO_DIR [PSEUDO_DIR ...]

``TARGET_ROOT`` is the Cityscapes-layout root whose ``train`` labels match the maps file's images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def upper_hull_segments(selected: np.ndarray, correct: np.ndarray) -> list[tuple[float, float]]:
    """``(length, slope)`` segments of the upper concave hull of the points ``(0, 0)`` and
    ``(selected[i], correct[i])`` (non-decreasing ``selected``), left to right, slopes decreasing."""
    hull = [(0.0, 0.0)]
    for x, y in zip(np.asarray(selected, float), np.asarray(correct, float)):
        if x <= hull[-1][0]:
            if x == hull[-1][0] and y > hull[-1][1]:
                hull[-1] = (x, y)
            continue
        # drop the last vertex while it lies on or below the chord from the one before it to (x, y)
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            if (y1 - y0) * (x - x0) <= (y - y0) * (x1 - x0):
                hull.pop()
            else:
                break
        hull.append((x, y))
    return [(x1 - x0, (y1 - y0) / (x1 - x0)) for (x0, y0), (x1, y1) in zip(hull, hull[1:])]


def best_correct(curves: list[tuple[np.ndarray, np.ndarray]], k: float) -> float:
    """Most correct pixels among ``k`` selected over per-class prefix selections (concave envelope).

    ``curves`` holds, per class, the cumulative selected and correct pixel counts of its prefixes in
    the order of the statistic. Segments of slope <= 0 never help and are left out, so beyond the
    useful pixels the value stays flat.
    """
    segments = sorted((seg for sel, cor in curves for seg in upper_hull_segments(sel, cor) if seg[1] > 0),
                      key=lambda seg: -seg[1])
    total, left = 0.0, float(k)
    for length, slope in segments:
        take = min(length, left)
        total += take * slope
        left -= take
        if left <= 0:
            break
    return total


def prefix_curves(maps_path: Path, target_root: Path, field: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class, cumulative (labelled selected, correct) pixel counts over the float16 codes of
    ``field``, most certain first; pixels on one code stay together, as every method keeps them."""
    from uncerda_core.pseudo.labels import ground_truth_for_maps
    from uncerda_core.uncertainty.codes import N_CODES, class_code_histogram
    from uncerda_core.uncertainty.maps import open_maps

    lookup = ground_truth_for_maps(maps_path, target_root, "train")
    with open_maps(maps_path) as maps:
        c = maps.num_classes
        labelled = np.zeros((c, N_CODES), np.int64)
        correct = np.zeros((c, N_CODES), np.int64)
        for name, arrays in maps.iter_images(fields=("argmax", field)):
            gt = lookup(name)
            if gt is None:
                continue
            argmax, values = arrays["argmax"], arrays[field]
            has_class = gt < c
            right = has_class & (gt == argmax)
            labelled += class_code_histogram(argmax[has_class], values[has_class], c)
            correct += class_code_histogram(argmax[right], values[right], c)
    if field == "maxprob":      # most certain = highest probability: count from the top code down
        labelled, correct = labelled[:, ::-1], correct[:, ::-1]
    return [(np.cumsum(labelled[k]), np.cumsum(correct[k])) for k in range(c)]


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("maps", type=Path)
    parser.add_argument("target_root", type=Path)
    parser.add_argument("pseudo_dirs", type=Path, nargs="+")
    args = parser.parse_args()
    for field in ("entropy", "maxprob"):
        curves = prefix_curves(args.maps, args.target_root, field)
        for folder in args.pseudo_dirs:
            quality = pd.read_csv(folder / "quality.csv")
            k = int(quality["labelled_selected_pixels"].sum())
            precision = quality["correct_pixels"].sum() / k
            print(f"{folder}: precision {100 * precision:.2f} at {k} labelled selected pixels; "
                  f"best per-class {field} cut of that size {100 * best_correct(curves, k) / k:.2f}")


if __name__ == "__main__":
    main()
