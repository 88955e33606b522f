"""Writing: file names and layouts, PNG encoding, the data README, statistics, argument checks.

The helpers of :func:`generate_demo` (in ``__init__.py``): Cityscapes file stems
and cities, the palette of the GTA5-layout labels, the per-part class statistics
and the README.txt that records them (and marks a folder as a demo output that
may be replaced), and the checks of the arguments before anything is written.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from uncerda_core.data import labels as L
from uncerda_core.data.class_stats import native_to_train_counts
from uncerda_core.data.demo.style import DomainStyle
from uncerda_core.errors import UncerdaError

TRAIN_CITIES = ("demoburg", "pixelstadt")
VAL_CITIES = ("synthberg",)
ANNOTATED_FRAME = 19  # Cityscapes' annotated frame number in every file name


def _label_palette() -> list[int]:
    """A 256-entry PNG palette: each Cityscapes label id shows in its class colour."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for train_id, label_id in L.TRAIN_TO_CITYSCAPES_ID.items():
        pal[label_id] = L.TRAIN_ID_COLORS[train_id]
    return pal.reshape(-1).tolist()


_DOMAIN_CODES = {"source": 0, "target_train": 1, "target_val": 2}


def cityscapes_stem(city: str, index: int) -> str:
    """``<city>_<seq:06d>_<frame:06d>``: one sequence per image, the annotated frame."""
    return f"{city}_{index:06d}_{ANNOTATED_FRAME:06d}"


def _save_png(path: Path, array: np.ndarray, mode: str, palette: list[int] | None = None) -> None:
    img = Image.fromarray(array, mode="RGB" if array.ndim == 3 else "L")
    if mode == "P":
        img = img.convert("L")
        img = Image.frombytes("P", img.size, img.tobytes())
        img.putpalette(palette)
    img.save(path, format="PNG", optimize=False, compress_level=6)


def _progress(enabled: bool, what: str, done: int, total: int, start: float) -> None:
    if enabled and (done == total or done % max(1, total // 10) == 0):
        print(f"demo: {what} {done}/{total} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)


@dataclass
class _Stats:
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(L.NUM_CLASSES, dtype=np.int64))
    images: np.ndarray = field(default_factory=lambda: np.zeros(L.NUM_CLASSES, dtype=np.int64))
    total_pixels: int = 0
    count: int = 0

    def add(self, label_ids: np.ndarray) -> None:
        c = native_to_train_counts("cityscapes", np.bincount(label_ids.ravel(), minlength=256))
        self.pixels += c
        self.images += c > 0
        self.total_pixels += label_ids.size
        self.count += 1

    def summary(self) -> dict[str, Any]:
        labelled = max(int(self.pixels.sum()), 1)
        return {
            "images": self.count,
            "pixels": self.total_pixels,
            "labelled_fraction": round(float(self.pixels.sum()) / max(self.total_pixels, 1), 6),
            "class_pixel_frequency": {n: round(float(p) / labelled, 6) for n, p in zip(L.CLASS_NAMES, self.pixels)},
            "class_image_count": {n: int(c) for n, c in zip(L.CLASS_NAMES, self.images)},
        }


def _readme(kind: str, seed: int, size: tuple[int, int], counts: dict[str, int],
            stats: dict[str, dict[str, Any]], style: DomainStyle) -> str:
    lines = [
        f"{README_TITLE}: {kind} domain",
        "",
        f"Generated street scenes, {size[0]}x{size[1]} pixels, seed {seed}, by uncerda_core.data.demo.generate_demo.",
        f"Appearance: {style.description}.",
        "Same seed, size and counts give byte-identical files; do not edit by hand, regenerate.",
        "",
    ]
    if kind == "source":
        lines += ["Layout (GTA5): images/NNNNN.png (RGB), labels/NNNNN.png (palette PNG, index = Cityscapes label id;",
                  "7 = road ... 33 = bicycle, 4 = static (void), 0 = unlabelled).", ""]
    else:
        lines += ["Layout (Cityscapes): leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png (RGB),",
                  "gtFine/<split>/<city>/<stem>_gtFine_labelIds.png (mode L, Cityscapes label ids; 1 = ego vehicle",
                  "and 4 = static are void). Train labels are written for analysis only, not for training.",
                  f"Cities: train {', '.join(TRAIN_CITIES)}; val {', '.join(VAL_CITIES)}.", ""]
    lines.append("Counts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines.append("")
    for part, s in stats.items():
        lines.append(f"Class pixel frequency (% of labelled pixels) and images containing the class, {part}:")
        for n in L.CLASS_NAMES:
            lines.append(f"  {n:<11} {100 * s['class_pixel_frequency'][n]:7.3f}%  {s['class_image_count'][n]:6d}")
        lines.append("")
    return "\n".join(lines)


README_TITLE = "uncerda demo data set"


def _replaceable(root: Path) -> bool:
    """An existing root may be replaced when it is empty or a previous demo output."""
    if not root.is_dir():
        return False
    if not any(root.iterdir()):
        return True
    readme = root / "README.txt"
    return readme.is_file() and readme.read_text(errors="replace").startswith(README_TITLE)


def _check_args(source_root: Path, target_root: Path, size: tuple[int, int], counts: dict[str, int]) -> None:
    if source_root.resolve() == target_root.resolve():
        raise UncerdaError(f"demo: source and target roots are the same folder ({source_root}); give two folders")
    for a, b in ((source_root, target_root), (target_root, source_root)):
        if b.resolve() in a.resolve().parents:
            raise UncerdaError(f"demo: {a} lies inside {b}; the two roots must not be nested "
                               "(each root is replaced as a whole)")
    for root in (source_root, target_root):
        if root.exists() and not _replaceable(root):
            raise UncerdaError(f"demo: {root} exists and is not a generated demo data set (no README.txt "
                               f"starting with '{README_TITLE}'); it would be replaced as a whole. "
                               "Give an empty or new folder, or remove it yourself")
    if len(size) != 2 or min(size) < 16:
        raise UncerdaError(f"demo: size must be [width, height] with both >= 16 pixels, got {list(size)}")
    for name, n in counts.items():
        if n < 1:
            raise UncerdaError(f"demo: n_{name} must be >= 1, got {n}")
