"""Tiny data-set trees in the native layouts, written by tests.

Every writer takes a ``root`` folder, sizes as ``(width, height)`` and an
optional ``numpy.random.Generator`` (default seed 0), and returns the names of
the samples it wrote, in sorted order. Labels hold *native* ids: Cityscapes
label ids (GTA5 palette PNGs, Cityscapes mode-L PNGs) or SYNTHIA class ids
(16-bit 3-channel PNGs with the id in R, written with OpenCV).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from uncerda_core.data import labels

Size = tuple[int, int]

# Native ids the random labels draw from: the 19 evaluated ids and some void ones.
CITYSCAPES_SAMPLE_IDS = tuple(sorted(labels.CITYSCAPES_ID_TO_TRAIN)) + (0, 1, 4)
SYNTHIA_SAMPLE_IDS = tuple(sorted(labels.SYNTHIA_ID_TO_TRAIN)) + (0, 13)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return np.random.default_rng(0) if rng is None else rng


def gta5_palette() -> list[int]:
    """A 768-entry palette: Cityscapes colours for evaluated ids, grey levels elsewhere."""
    palette = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    for native, train in labels.CITYSCAPES_ID_TO_TRAIN.items():
        palette[native] = labels.TRAIN_ID_COLORS[train]
    return palette.ravel().tolist()


def write_palette_label(path: str | Path, ids: np.ndarray) -> Path:
    """A GTA5-style palette ("P") PNG whose index values are ``ids`` (uint8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.ascontiguousarray(ids, dtype=np.uint8)
    # frombytes keeps the values as palette indices (convert("P") would re-quantise them).
    im = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
    im.putpalette(gta5_palette())
    im.save(path)
    return path


def write_gray_label(path: str | Path, ids: np.ndarray) -> Path:
    """A Cityscapes-style mode "L" PNG of label ids."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(ids, dtype=np.uint8), mode="L").save(path)
    return path


def write_synthia_label(path: str | Path, ids: np.ndarray, bits: int = 16) -> Path:
    """A SYNTHIA label: 3-channel PNG, class id in R, instance-like values in G and B.

    ``bits=8`` writes the broken 8-bit variant a careless re-save produces.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(ids)
    dtype = np.uint16 if bits == 16 else np.uint8
    bgr = np.zeros(ids.shape + (3,), dtype=dtype)
    bgr[..., 2] = ids
    bgr[..., 1] = (np.arange(ids.size).reshape(ids.shape) % 200) + 3  # never equal to R
    bgr[..., 0] = 7
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"cv2 could not write {path}")
    return path


def write_rgb(path: str | Path, rgb: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB").save(path)
    return path


def random_ids(rng: np.random.Generator, size: Size, ids: tuple[int, ...]) -> np.ndarray:
    """A blocky (H, W) label: horizontal bands plus a few rectangles, values from ``ids``."""
    w, h = size
    out = np.empty((h, w), dtype=np.int64)
    cuts = np.sort(rng.integers(1, h, size=2)) if h > 2 else np.array([1, 1])
    for top, bottom in zip([0, *cuts], [*cuts, h]):
        out[top:bottom] = rng.choice(ids)
    for _ in range(4):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        bw, bh = int(rng.integers(1, max(2, w // 3))), int(rng.integers(1, max(2, h // 3)))
        out[y:y + bh, x:x + bw] = rng.choice(ids)
    return out


def random_rgb(rng: np.random.Generator, size: Size) -> np.ndarray:
    w, h = size
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def truncate_file(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes, as an interrupted copy would."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[:max(1, int(len(data) * keep))])
    return path


def write_gta5_tree(root: str | Path, n: int, size: Size = (32, 16), rng: np.random.Generator | None = None,
                    with_labels: bool = True, label_sizes: dict[str, Size] | None = None) -> list[str]:
    """``<root>/images/NNNNN.png`` (RGB) and ``<root>/labels/NNNNN.png`` (palette, Cityscapes ids).

    ``label_sizes`` maps a name to a label size that differs from ``size``, as
    some real GTA5 pairs do.
    """
    rng = _rng(rng)
    root = Path(root)
    names = [f"{i:05d}" for i in range(1, n + 1)]
    for name in names:
        write_rgb(root / "images" / f"{name}.png", random_rgb(rng, size))
        if with_labels:
            lsize = (label_sizes or {}).get(name, size)
            write_palette_label(root / "labels" / f"{name}.png", random_ids(rng, lsize, CITYSCAPES_SAMPLE_IDS))
    return names


def write_synthia_tree(root: str | Path, n: int, size: Size = (32, 16),
                       rng: np.random.Generator | None = None) -> list[str]:
    """``<root>/RGB/NNNNNNN.png`` and ``<root>/GT/LABELS/NNNNNNN.png`` (16-bit, id in R)."""
    rng = _rng(rng)
    root = Path(root)
    names = [f"{i:07d}" for i in range(n)]
    for name in names:
        write_rgb(root / "RGB" / f"{name}.png", random_rgb(rng, size))
        write_synthia_label(root / "GT" / "LABELS" / f"{name}.png", random_ids(rng, size, SYNTHIA_SAMPLE_IDS))
    return names


def cityscapes_paths(root: str | Path, split: str, stem: str) -> tuple[Path, Path]:
    """(image, label) paths of a Cityscapes stem ``<city>_<seq>_<frame>``."""
    city = stem.split("_", 1)[0]
    root = Path(root)
    return (root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
            root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")


def write_cityscapes_tree(root: str | Path, splits: dict[str, int] | None = None, size: Size = (32, 16),
                          rng: np.random.Generator | None = None, with_labels: bool = True,
                          with_images: bool = True,
                          cities: tuple[str, ...] = ("aachen", "bremen")) -> dict[str, list[str]]:
    """Cityscapes naming: ``leftImg8bit/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png``
    and ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (mode L label ids).

    Samples go round-robin over ``cities``. Returns ``{split: [stems]}``.
    """
    rng = _rng(rng)
    splits = {"train": 2, "val": 1} if splits is None else splits
    out: dict[str, list[str]] = {}
    for split, count in splits.items():
        stems = []
        for i in range(count):
            stem = f"{cities[i % len(cities)]}_{i:06d}_{19 + i:06d}"
            image, label = cityscapes_paths(root, split, stem)
            if with_images:
                write_rgb(image, random_rgb(rng, size))
            if with_labels:
                write_gray_label(label, random_ids(rng, size, CITYSCAPES_SAMPLE_IDS))
            stems.append(stem)
        out[split] = sorted(stems)
    return out


def demo_setup(root: Path, n_source: int, n_target_train: int, n_target_val: int, target_split: str,
               overrides: dict | None = None) -> tuple[dict, Path, Path]:
    """Generated demo data of 64x32 images under ``root`` (``source/``, ``target/``), the source index
    ``source.csv``, the index of the target's ``target_split`` (``target_<split>.csv``; labels read
    except for the train split, as the workflow does), and the smoke config on the CPU pointing at
    them, ``overrides`` merged last. Returns ``(config, source_index, target_index)``."""
    from uncerda_core.config import deep_merge, load_config
    from uncerda_core.data.demo import generate_demo
    from uncerda_core.data.index import build_index, write_index
    repo = Path(__file__).resolve().parent.parent
    source, target = root / "source", root / "target"
    generate_demo(source, target, seed=0, size=(64, 32), n_source=n_source, n_target_train=n_target_train,
                  n_target_val=n_target_val, progress=False)
    source_index, target_index = root / "source.csv", root / f"target_{target_split}.csv"
    write_index(build_index("gta5", source, "all", workers=1, progress=False), source_index, {})
    write_index(build_index("cityscapes", target, target_split, require_labels=target_split != "train", workers=1,
                            progress=False), target_index, {})
    base = {"device": "cpu", "threads": 1, "source": {"root": str(source)}, "target": {"root": str(target)}}
    config = load_config(repo / "config.yaml", repo / "workflow/presets/smoke.yaml",
                         overrides=deep_merge(base, overrides or {}), check_paths=False)
    return config, source_index, target_index


def demo_val_setup(tmp_path: Path, n_target_val: int, overrides: dict | None = None) -> tuple[dict, Path]:
    """:func:`demo_setup` with one source and one target train image and ``n_target_val`` val images.
    Returns ``(config, val_index)``."""
    config, _, index = demo_setup(tmp_path, 1, 1, n_target_val, "val", overrides)
    return config, index


def pseudo_settings(**overrides):
    """Complete pseudo-label settings: the schema's defaults (the only place they live), then ``overrides``."""
    from uncerda_core.config import schema_defaults
    from uncerda_core.pseudo.labels import PseudoSettings

    return PseudoSettings.from_config({**schema_defaults()["pseudo"], **overrides})
