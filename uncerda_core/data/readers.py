"""Listing and reading the data sets in their native layouts.

Layouts (docs/method.md#data-sets):

- ``gta5``: ``<root>/images/NNNNN.png`` and ``<root>/labels/NNNNN.png``; labels
  are palette ("P") PNGs whose *index values* are Cityscapes label ids. They are
  read as indices (``np.asarray(Image.open(p))``), never through ``.convert("RGB")``.
- ``synthia`` (SYNTHIA-RAND-CITYSCAPES): ``<root>/RGB/NNNNNNN.png`` and
  ``<root>/GT/LABELS/NNNNNNN.png``; labels are 16-bit 3-channel PNGs with the class
  id in the R channel. Pillow opens them as 8-bit and silently returns zeros, so
  they are read with OpenCV (``IMREAD_UNCHANGED``, BGR order, channel 2).
- ``cityscapes``: ``<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` and
  ``<root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (mode "L", label ids).

GTA5 and SYNTHIA have no official split: ``all`` is every image, any other split
name is ``<root>/<split>.txt`` listing image stems, one per line.

Every reader maps native ids to the 19 train ids (``labels.IGNORE`` elsewhere)
and rejects ids outside the data set's valid id set with an :class:`UncerdaError`.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from uncerda_core.data import labels
from uncerda_core.errors import UncerdaError
from uncerda_core.schema import enum

# The data set names, as the schema's source.dataset and target.dataset allow them.
SOURCE_DATASETS: tuple[str, ...] = enum("source.dataset")
TARGET_DATASETS: tuple[str, ...] = enum("target.dataset")
DATASETS: tuple[str, ...] = SOURCE_DATASETS + TARGET_DATASETS

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"
# How many offending entries an error message lists before "... and N more".
MAX_LISTED = 20


@dataclass(frozen=True)
class Sample:
    """One image of a data set and its label file.

    ``image`` is always the path where the image is (or, for label-only
    listings, where it would be); ``label`` is None when the split has no label
    for this image.
    """

    name: str
    image: str
    label: str | None


def check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise UncerdaError(f"unknown data set '{dataset}'; expected one of {', '.join(DATASETS)}")
    return dataset


def label_lut(dataset: str) -> np.ndarray:
    """The native id -> train id table of ``dataset`` (uint8, 255 for ignored ids)."""
    check_dataset(dataset)
    return labels.SYNTHIA_LUT if dataset == "synthia" else labels.CITYSCAPES_LUT


def valid_ids(dataset: str) -> frozenset[int]:
    """The native ids that may legally occur in a label file of ``dataset``."""
    check_dataset(dataset)
    return labels.SYNTHIA_VALID_IDS if dataset == "synthia" else labels.CITYSCAPES_VALID_IDS


def valid_mask(dataset: str, size: int) -> np.ndarray:
    """Boolean table over the ids 0..size-1: True where the id may occur in a label file of ``dataset``."""
    mask = np.zeros(size, dtype=bool)
    ids = [i for i in valid_ids(dataset) if i < size]
    mask[ids] = True
    return mask


def _describe_valid(dataset: str) -> str:
    return "0-22" if dataset == "synthia" else "0-33 and 255"


def format_problems(header: str, problems: list[str], limit: int = MAX_LISTED) -> str:
    """``header`` then the first ``limit`` problems, one per line, and a count of the rest."""
    lines = [header] + [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more ({len(problems)} in all)")
    return "\n".join(lines)


TRANSLATED_KEY = "source.translated_root"


def translated_images(images: list[str], translated_root: str | Path) -> list[str]:
    """For each source image path, the file of the same name in ``translated_root``.

    Pre-translated source images (an image-to-image translation of the source
    towards the target made elsewhere, e.g. CycleGAN-style GTA5 -> Cityscapes)
    replace the originals file by file; the labels stay the originals'. A
    missing folder, or any image without its translated file, is one error
    listing them (one directory listing, no file is opened).
    """
    root = Path(translated_root)
    if not root.is_dir():
        raise UncerdaError(f"{TRANSLATED_KEY}: folder '{root}' does not exist. Point it at the folder of "
                           "pre-translated source images (the same file names as the source images), "
                           "or set it to null to translate with FDA.")
    present = set(os.listdir(root))
    names = [Path(image).name for image in images]
    missing = [name for name in names if name not in present]
    if missing:
        raise UncerdaError(format_problems(
            f"{TRANSLATED_KEY}: {len(missing)} of {len(names)} source images have no file of the same name "
            f"in {root} (it must hold a translation of every source image):", missing))
    return [str(root / name) for name in names]


# --------------------------------------------------------------------------- listing

def _layout(dataset: str) -> str:
    return {
        "gta5": "GTA5 layout: <root>/images/NNNNN.png, <root>/labels/NNNNN.png",
        "synthia": "SYNTHIA-RAND-CITYSCAPES layout: <root>/RGB/NNNNNNN.png, <root>/GT/LABELS/NNNNNNN.png",
        "cityscapes": ("Cityscapes layout: <root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png, "
                       "<root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png"),
    }[dataset]


def _flat_dirs(dataset: str, root: Path) -> tuple[Path, Path]:
    if dataset == "gta5":
        return root / "images", root / "labels"
    return root / "RGB", root / "GT" / "LABELS"


def _cityscapes_dirs(root: Path, split: str) -> tuple[Path, Path]:
    """The image and label folders of a Cityscapes split (their city folders inside)."""
    return root / "leftImg8bit" / split, root / "gtFine" / split


def split_has_labels(dataset: str, root: str | Path, split: str) -> bool:
    """Whether ``split`` of the data set at ``root`` has its label folder (no files are listed).

    The workflow asks this at start-up to decide whether pseudo-label precision can be measured
    against the target train ground truth.
    """
    check_dataset(dataset)
    root = Path(root)
    if dataset == "cityscapes":
        return _cityscapes_dirs(root, split)[1].is_dir()
    return _flat_dirs(dataset, root)[1].is_dir()


def _split_names(root: Path, split: str) -> list[str]:
    """Image stems listed in ``<root>/<split>.txt`` (blank lines and ``#`` comments skipped)."""
    path = root / f"{split}.txt"
    if not path.is_file():
        raise UncerdaError(
            f"{path}: split file not found. Split '{split}' of a data set without official splits must be "
            f"listed in <root>/{split}.txt (one image stem per line), or use split 'all' for every image.")
    names: list[str] = []
    seen: set[str] = set()
    duplicates: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = Path(line).stem if line.endswith(".png") else line
        if name in seen:
            duplicates.append(name)
        seen.add(name)
        names.append(name)
    if duplicates:
        raise UncerdaError(format_problems(f"{path}: {len(duplicates)} duplicate image stem(s):", duplicates))
    if not names:
        raise UncerdaError(f"{path}: the split file lists no images (expected one image stem per line)")
    return names


def loops(path: str | Path) -> bool:
    """Whether ``path`` is a symbolic link that never reaches a file: it points back to itself, maybe via others."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def _not_found(path: Path, message: str) -> UncerdaError:
    """``message`` for a path that is missing, or a clear word on a symbolic link that loops."""
    if loops(path):
        return UncerdaError(f"{path}: a symbolic link that loops (it points back to itself, directly or through "
                            "other links); point it at the real file or folder, or remove it")
    return UncerdaError(f"{path}: {message}" if message else str(path))


def _png_files(folder: Path) -> list[str]:
    """The stems of the ``.png`` files in ``folder`` (following links; a link that loops is an error)."""
    stems = []
    for entry in os.scandir(folder):
        if not entry.name.endswith(".png"):
            continue
        try:
            is_file = entry.is_file()
        except OSError:
            raise _not_found(Path(entry.path), "cannot be read") from None
        if is_file:
            stems.append(entry.name[:-4])
    return sorted(stems)


def _list_flat(dataset: str, root: Path, split: str, require_labels: bool,
               require_images: bool) -> list[Sample]:
    image_dir, label_dir = _flat_dirs(dataset, root)
    walk_dir = image_dir if require_images else label_dir
    if not walk_dir.is_dir():
        hint = "" if require_images else " (listing labels only)"
        raise _not_found(walk_dir, f"folder not found{hint}; expected the {_layout(dataset)}")
    if split == "all":
        names = _png_files(walk_dir)
        if not names:
            raise UncerdaError(f"{walk_dir}: no .png files, split 'all' is empty; expected the {_layout(dataset)}")
    else:
        names = _split_names(root, split)
        missing = [str(walk_dir / f"{n}.png") for n in names if not (walk_dir / f"{n}.png").is_file()]
        if missing:
            what = "images" if require_images else "labels"
            raise UncerdaError(format_problems(
                f"{root / f'{split}.txt'}: {len(missing)} listed {what} not found:", missing))
    samples = []
    missing_labels = []
    for name in names:
        label = label_dir / f"{name}.png"
        if not label.is_file():
            if require_labels:
                missing_labels.append(f"{image_dir / f'{name}.png'}: no label {label}")
            label = None
        samples.append(Sample(name, str(image_dir / f"{name}.png"), None if label is None else str(label)))
    if missing_labels:
        raise UncerdaError(format_problems(
            f"{dataset} at {root}, split '{split}': {len(missing_labels)} image(s) without a label file:",
            missing_labels))
    return samples


def _list_cityscapes(root: Path, split: str, require_labels: bool, require_images: bool) -> list[Sample]:
    image_dir, label_dir = _cityscapes_dirs(root, split)
    if require_images:
        if not image_dir.is_dir():
            if label_dir.is_dir():
                raise UncerdaError(
                    f"{image_dir}: folder not found, but {label_dir} exists: split '{split}' has labels and no "
                    "images. Scoring needs labels only: use list_label_samples() (require_images=False).")
            available = sorted(p.name for p in (root / "leftImg8bit").glob("*") if p.is_dir())
            raise UncerdaError(f"{image_dir}: split '{split}' not found (splits with images: "
                               f"{', '.join(available) or 'none'}); expected the {_layout('cityscapes')}")
        cities = {p.name[:-len(_IMAGE_SUFFIX)]: p.parent.name for p in image_dir.glob(f"*/*{_IMAGE_SUFFIX}")}
        if not cities:
            raise UncerdaError(f"{image_dir}: no *{_IMAGE_SUFFIX} files in its city folders, split '{split}' "
                               f"is empty; expected the {_layout('cityscapes')}")
    else:
        if not label_dir.is_dir():
            raise UncerdaError(f"{label_dir}: folder not found (listing labels only); "
                               f"expected the {_layout('cityscapes')}")
        cities = {p.name[:-len(_LABEL_SUFFIX)]: p.parent.name for p in label_dir.glob(f"*/*{_LABEL_SUFFIX}")}
        if not cities:
            raise UncerdaError(f"{label_dir}: no *{_LABEL_SUFFIX} files in its city folders, split '{split}' "
                               f"has no labels; expected the {_layout('cityscapes')}")
    samples = []
    missing_labels = []
    for stem in sorted(cities):
        city = cities[stem]
        image = image_dir / city / f"{stem}{_IMAGE_SUFFIX}"
        label: Path | None = label_dir / city / f"{stem}{_LABEL_SUFFIX}"
        if not label.is_file():
            if require_labels:
                missing_labels.append(f"{image}: no label {label}")
            label = None
        samples.append(Sample(stem, str(image), None if label is None else str(label)))
    if missing_labels:
        raise UncerdaError(format_problems(
            f"cityscapes at {root}, split '{split}': {len(missing_labels)} image(s) without a label file:",
            missing_labels))
    return samples


def list_samples(dataset: str, root: str | Path, split: str, require_labels: bool = True,
                 require_images: bool = True) -> list[Sample]:
    """The samples of ``split``, sorted by name.

    With ``require_labels`` an image without its label file is an error (all
    such images are listed together); without it, ``Sample.label`` is None for
    them. With ``require_images=False`` the listing walks the label files
    instead (scoring needs labels only, e.g. a Cityscapes split whose images
    are absent); ``Sample.image`` is then the path the image would have and may
    not exist. Raises :class:`UncerdaError` for a missing root, an unknown or
    empty split, and missing labels.
    """
    check_dataset(dataset)
    root = Path(root)
    if not root.is_dir():
        if loops(root):
            raise _not_found(root, "")
        raise UncerdaError(f"data root '{root}' does not exist; expected the {_layout(dataset)}")
    if dataset == "cityscapes":
        return _list_cityscapes(root, split, require_labels, require_images)
    return _list_flat(dataset, root, split, require_labels, require_images)


def list_label_samples(dataset: str, root: str | Path, split: str) -> list[Sample]:
    """Every labelled sample of ``split``, found from the label files; the images need not exist."""
    return list_samples(dataset, root, split, require_labels=True, require_images=False)


# --------------------------------------------------------------------------- reading

def open_decoded(path: str | Path) -> Image.Image:
    """Open and fully decode a PNG with Pillow; unreadable or truncated -> UncerdaError."""
    path = Path(path)
    if not path.is_file():
        raise _not_found(path, "no such file")
    try:
        im = Image.open(path)
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UncerdaError(f"{path}: cannot decode the image ({exc}); the file is truncated or not a "
                           "valid PNG/JPEG, re-extract it from the data set archive") from exc
    return im


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    im = open_decoded(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def _open_id_label(dataset: str, path: str | Path) -> Image.Image:
    """A decoded 8-bit label-id PNG (mode L or P) of GTA5 / Cityscapes."""
    im = open_decoded(path)
    if im.mode not in ("L", "P"):
        raise UncerdaError(
            f"{path}: a {dataset} label must be an 8-bit label-id PNG (mode P or L), got mode {im.mode}. "
            "Use the *_labelIds.png / labels/*.png files, not colour or instance images.")
    return im


def _read_synthia_ids(path: str | Path) -> np.ndarray:
    """The class-id channel (R) of a 16-bit SYNTHIA label, as uint16 (H, W)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise _not_found(path, "no such file")
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise UncerdaError(f"{path}: cannot decode the SYNTHIA label (truncated or not a PNG); "
                           "re-extract it from the data set archive")
    if arr.dtype != np.uint16:
        raise UncerdaError(
            f"{path}: SYNTHIA label is {arr.dtype.itemsize * 8}-bit ({arr.dtype}); expected a 16-bit PNG with "
            "the class id in the R channel. The file was probably re-saved by an 8-bit tool (Pillow reads "
            "these labels as 8-bit zeros): use the original GT/LABELS files of SYNTHIA-RAND-CITYSCAPES.")
    if arr.ndim == 3:
        if arr.shape[2] < 3:
            raise UncerdaError(f"{path}: SYNTHIA label has {arr.shape[2]} channels; expected 3 (class id in R)")
        return np.ascontiguousarray(arr[:, :, 2])  # OpenCV is BGR(A): R is channel 2
    return arr


def read_native_label(dataset: str, path: str | Path) -> np.ndarray:
    """Native label ids (H, W): GTA5/Cityscapes uint8, SYNTHIA uint16 (the R channel)."""
    check_dataset(dataset)
    if dataset == "synthia":
        return _read_synthia_ids(path)
    return np.asarray(_open_id_label(dataset, path))


def check_native_counts(dataset: str, counts: np.ndarray, path: str | Path) -> None:
    """Raise if ``counts`` (pixels per native id) has pixels outside the valid id set."""
    bad = np.flatnonzero((counts > 0) & ~valid_mask(dataset, len(counts)))
    if len(bad):
        shown = ", ".join(str(int(i)) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise UncerdaError(
            f"{path}: label ids {shown} are not {dataset} label ids (valid: {_describe_valid(dataset)}); "
            f"expected a native {dataset} label file (not a colour, train-id or corrupted image)")


def native_label_histogram(dataset: str, path: str | Path) -> tuple[np.ndarray, tuple[int, int]]:
    """Pixels per native id of a label file, and the label's (width, height).

    GTA5 / Cityscapes: ``Image.histogram()`` on the 8-bit indices (256 bins;
    no copy to numpy). SYNTHIA: a bincount of the 16-bit R channel. Ids outside
    the data set's valid set raise :class:`UncerdaError`.
    """
    check_dataset(dataset)
    if dataset == "synthia":
        ids = _read_synthia_ids(path)
        counts = np.bincount(ids.ravel(), minlength=len(labels.SYNTHIA_VALID_IDS))
        size = (ids.shape[1], ids.shape[0])
    else:
        im = _open_id_label(dataset, path)
        counts = np.asarray(im.histogram(), dtype=np.int64)
        size = im.size
    check_native_counts(dataset, counts, path)
    return counts.astype(np.int64, copy=False), size


def read_label(dataset: str, path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A label file as (H, W) uint8 train ids (255 = ignore).

    Ids outside the data set's valid id set raise :class:`UncerdaError`.
    ``size=(W, H)`` resizes with nearest neighbour (Pillow NEAREST, pixel-centre
    sampling) to that size, e.g. a GTA5 label whose size differs from its image's.
    """
    native = read_native_label(dataset, path)
    # Valid ids are 0..max_valid (plus 255 for Cityscapes ids): the max is a cheap first check.
    if native.size and native.max() > max(i for i in valid_ids(dataset) if i != 255):
        counts = np.bincount(native.ravel(), minlength=256 if native.dtype == np.uint8 else 23)
        check_native_counts(dataset, counts, path)
    train = label_lut(dataset)[native]
    if size is not None and (train.shape[1], train.shape[0]) != tuple(size):
        train = np.asarray(Image.fromarray(train).resize(tuple(size), Image.NEAREST))
    return train
