"""Ground truth by image name, for diagnoses (pseudo-label precision and coverage), never for training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from uncerda_core.data import readers


def ground_truth_lookup(dataset: str, root: str | Path, split: str,
                        size: tuple[int, int] | None = None) -> Callable[[str], np.ndarray | None]:
    """``name -> train-id label`` (nearest-resized to ``size`` = (width, height)), or None without one."""
    samples = {s.name: s.label for s in readers.list_samples(dataset, root, split, require_labels=False)}

    def lookup(name: str) -> np.ndarray | None:
        path = samples.get(name)
        return None if path is None else readers.read_label(dataset, path, size=size)

    return lookup
