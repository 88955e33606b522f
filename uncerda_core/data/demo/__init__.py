"""The embedded demo data set: generated street scenes with a real domain gap.

The source domain looks rendered (flat, saturated colours, crisp edges) and is
written in the GTA5 layout; the target domain looks photographed (another
palette, lighting, texture, shadows, blur, sensor noise, other object
frequencies and scales) and is written in the Cityscapes layout.

The gap mirrors the parts of the GTA5 -> Cityscapes gap that the method's steps
act on (docs/method.md#the-demo gives each choice and its reason):

- a low-frequency photometric shift (exposure, white balance, saturation, a smooth
  illumination field and haze towards the horizon) that FDA's amplitude swap and
  BatchNorm statistics can transfer;
- a per-instance, continuous appearance shift (every target instance's colour is
  its class colour moved by a random hue, saturation and value offset; paving and
  asphalt closer in tone), so that wrong predictions are mostly uncertain ones;
- texture, sensor noise and blur that no colour statistic undoes.

What transfers is shape and context: every scene follows the same street
geometry, seen from the same camera in both domains (sky on top, facades and trees
at the horizon, a road in perspective at the bottom, sidewalks at its sides, poles
carrying lights and signs, vehicles on the road, people on sidewalks, riders on
motorcycles and bicycles), object sizes
follow the perspective, and a scene type (residential, arterial, cycle street,
tram street) decides which of the rare classes can occur, so that most images
contain none of them, as most street frames contain no train, bus or rider.

Scenes are drawn in train ids (0..18) with two void codes, then written with
Cityscapes label ids (:data:`labels.TRAIN_TO_CITYSCAPES_ID`). Everything is a
function of ``(seed, domain, index)``, so the same seed gives byte-identical
files and any single image can be regenerated alone.

The package is split by what each part does, each small enough to read at once:

- ``design.py``: the drawn codes, scene types, resolution limits and
  :data:`DESIGN_TARGETS`, the class statistics the generator is designed to produce;
- ``style.py``: the photometric domain shift (:class:`DomainStyle`, the two styles,
  per-instance colours, :func:`photograph`, :func:`game_lighting`);
- ``scene.py``: the layout (street perspective, object placement);
- ``draw.py`` and ``draw_things.py``: the canvas and the per-class drawing, stuff and things;
- ``sample.py``: one sample (:func:`draw_scene`, :func:`render`, :func:`sample_rng`);
- ``output.py``: file names, PNG saving, the data README, statistics, argument checks;
- this module: the entry point, :func:`generate_demo`, and the loops that render and
  write each domain. They stay here so that ``uncerda_core.data.demo.render`` is the
  function they call (tests replace it to interrupt a run).

A package rather than ``demo_*.py`` modules beside ``datasets.py`` and ``readers.py``: the
parts serve the demo alone, and ``uncerda_core.data.demo`` stays the import path it was.
Every name of the former single module ``demo.py`` is importable from here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from uncerda_core.artifacts import atomic_dir
from uncerda_core.data.demo.design import (  # noqa: F401 (re-exported)
    BICYCLE, BUILDING, BUS, CAR, DESIGN_TARGETS, FENCE, LABEL_ID_LUT, LIGHT, MIN_POLE_PX, MOTORCYCLE,
    NEAREST_OBJECT_DEPTH, PERSON, POLE, RIDER, ROAD, SCENE_TYPES, SIDEWALK, SIGN, SKY, TERRAIN, TRAIN, TRUCK,
    VEGETATION, VOID_EGO, VOID_NONE, VOID_STATIC, WALL, _label_id_lut,
)
from uncerda_core.data.demo.draw import (  # noqa: F401 (re-exported)
    _SCALE, _SHIFT, _Canvas, _draw_barriers, _draw_ground, _draw_skyline, _facade, _tree,
)
from uncerda_core.data.demo.draw_things import (  # noqa: F401 (re-exported)
    _draw_big_vehicle, _draw_car, _draw_objects, _draw_person, _draw_pole, _draw_static, _draw_two_wheeler,
)
from uncerda_core.data.demo.output import (  # noqa: F401 (re-exported)
    _DOMAIN_CODES, ANNOTATED_FRAME, README_TITLE, TRAIN_CITIES, VAL_CITIES, _check_args, _label_palette,
    _progress, _readme, _replaceable, _save_png, _Stats, cityscapes_stem,
)
from uncerda_core.data.demo.sample import draw_scene, render, sample_rng  # noqa: F401 (re-exported)
from uncerda_core.data.demo.scene import _Object, _place_objects, _Street  # noqa: F401 (re-exported)
from uncerda_core.data.demo.style import (  # noqa: F401 (re-exported)
    _TEXTURE, SOURCE_STYLE, TARGET_STYLE, Colour, DomainStyle, _class_colour, _jitter, _random_colour, _shade,
    _shift, game_lighting, photograph,
)


def _write_source(root: Path, seed: int, size: tuple[int, int], n: int, stats: _Stats, progress: bool,
                  start: float) -> None:
    """GTA5 layout: images/NNNNN.png and labels/NNNNN.png (palette, label ids)."""
    palette = _label_palette()
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i in range(n):
        image, label = render(sample_rng(seed, _DOMAIN_CODES["source"], i), size, SOURCE_STYLE)
        name = f"{i + 1:05d}.png"
        _save_png(root / "images" / name, image, "RGB")
        _save_png(root / "labels" / name, label, "P", palette)
        stats.add(label)
        _progress(progress, "source", i + 1, n, start)


def _write_target(root: Path, seed: int, size: tuple[int, int], counts: dict[str, int],
                  stats: dict[str, _Stats], progress: bool, start: float) -> None:
    """Cityscapes layout: leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/ (label ids)."""
    for part, split, cities in (("target_train", "train", TRAIN_CITIES), ("target_val", "val", VAL_CITIES)):
        for i in range(counts[part]):
            city = cities[i % len(cities)]
            stem = cityscapes_stem(city, i // len(cities))
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            image, label = render(sample_rng(seed, _DOMAIN_CODES[part], i), size, TARGET_STYLE)
            _save_png(img_dir / f"{stem}_leftImg8bit.png", image, "RGB")
            _save_png(gt_dir / f"{stem}_gtFine_labelIds.png", label, "L")
            stats[part].add(label)
            _progress(progress, part, i + 1, counts[part], start)


def generate_demo(source_root: str | Path, target_root: str | Path, seed: int = 0,
                  size: tuple[int, int] = (128, 64), n_source: int = 600, n_target_train: int = 400,
                  n_target_val: int = 200, progress: bool = True) -> dict[str, Any]:
    """Write the demo source (GTA5 layout) and target (Cityscapes layout) data sets.

    ``size`` is ``(width, height)``. Each root is written into a temporary
    folder beside it and both are renamed into place when complete, so a
    killed run never leaves a tree that looks finished. An existing root is
    replaced only when it is empty or a previous demo output (its README.txt);
    anything else raises :class:`UncerdaError`.
    Returns a summary: the arguments, counts, and per-part class pixel
    frequencies and image counts (``source``, ``target_train``, ``target_val``).
    """
    source_root, target_root = Path(source_root), Path(target_root)
    size = (int(size[0]), int(size[1]))
    counts = {"source": int(n_source), "target_train": int(n_target_train), "target_val": int(n_target_val)}
    _check_args(source_root, target_root, size, counts)
    start = time.perf_counter()
    stats: dict[str, _Stats] = {k: _Stats() for k in counts}

    # Both trees are complete before either is renamed into place, so a killed
    # run never pairs a new source with an old target.
    with atomic_dir(source_root) as src_tmp, atomic_dir(target_root) as tgt_tmp:
        _write_source(src_tmp, seed, size, counts["source"], stats["source"], progress, start)
        _write_target(tgt_tmp, seed, size, counts, stats, progress, start)
        src_summary = {"source": stats["source"].summary()}
        tgt_summary = {k: stats[k].summary() for k in ("target_train", "target_val")}
        (src_tmp / "README.txt").write_text(_readme("source", seed, size, {"source": counts["source"]},
                                                    src_summary, SOURCE_STYLE))
        (tgt_tmp / "README.txt").write_text(_readme("target", seed, size,
                                                    {k: counts[k] for k in ("target_train", "target_val")},
                                                    tgt_summary, TARGET_STYLE))

    return {
        "seed": seed,
        "size": list(size),
        "source_root": str(source_root),
        "target_root": str(target_root),
        "counts": counts,
        "seconds": round(time.perf_counter() - start, 2),
        **src_summary,
        **tgt_summary,
    }
