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
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from uncerda_core.artifacts import atomic_dir
from uncerda_core.data import labels as L
from uncerda_core.data.class_stats import native_to_train_counts
from uncerda_core.errors import UncerdaError

# Internal void codes in the drawn label map (never train ids 0..18).
VOID_STATIC = 250   # small street furniture that is not evaluated (Cityscapes "static", id 4)
VOID_EGO = 251      # the ego vehicle's bonnet in the target (Cityscapes "ego vehicle", id 1)
VOID_NONE = 255     # nothing drawn (never left after a full scene; Cityscapes "unlabeled", id 0)

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, \
    PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(19)

TRAIN_CITIES = ("demoburg", "pixelstadt")
VAL_CITIES = ("synthberg",)
ANNOTATED_FRAME = 19  # Cityscapes' annotated frame number in every file name

# No object stands nearer the horizon than this depth (0 = horizon, 1 = bottom row): farther
# away, at 128x64, people and poles would be one or two pixels, below what an output stride
# of 4 can resolve, and the demo would measure resolution instead of adaptation.
NEAREST_OBJECT_DEPTH = 0.12
# Thinnest pole, in pixels (thinner poles vanish at the network's output stride).
MIN_POLE_PX = 2.0

_SHIFT = 4            # cv2 fixed-point bits: sub-pixel geometry at small resolutions
_SCALE = 1 << _SHIFT


def _label_id_lut() -> np.ndarray:
    """Drawn code -> Cityscapes label id (uint8 LUT over 0..255)."""
    lut = np.zeros(256, dtype=np.uint8)
    for train_id, label_id in L.TRAIN_TO_CITYSCAPES_ID.items():
        lut[train_id] = label_id
    lut[VOID_STATIC] = 4
    lut[VOID_EGO] = 1
    return lut


LABEL_ID_LUT = _label_id_lut()


def _label_palette() -> list[int]:
    """A 256-entry PNG palette: each Cityscapes label id shows in its class colour."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for train_id, label_id in L.TRAIN_TO_CITYSCAPES_ID.items():
        pal[label_id] = L.TRAIN_ID_COLORS[train_id]
    return pal.reshape(-1).tolist()


# ---------------------------------------------------------------------------
# Domain styles

Colour = tuple[int, int, int]


# Scene types: which of the rare classes a street can hold. Most street frames contain no
# train, bus, truck or rider; drawing them only in some scene types gives the rare classes the
# per-image presence of street data instead of putting one of them in almost every image.
SCENE_TYPES = ("residential", "arterial", "cycle", "tram")


# The class statistics the generator is designed to produce, in both domains (the README's
# design table; tests/test_demo.py checks a generated set against them): per class, the share
# of labelled pixels and the share of images that contain the class, as (low, high) bands.
# The shape mirrors street data: a few stuff classes cover most pixels and occur everywhere,
# thin and small things are under 5 % of the pixels but in most images, and the rare vehicles
# and riders are in a minority of the images (scene types), each under 1.5 % of the pixels.
DESIGN_TARGETS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    #              pixel share        images containing it
    "road":       ((0.10, 0.40),     (0.95, 1.0)),
    "sidewalk":   ((0.03, 0.12),     (0.95, 1.0)),
    "building":   ((0.15, 0.35),     (0.95, 1.0)),
    "wall":       ((0.002, 0.02),    (0.10, 0.45)),
    "fence":      ((0.002, 0.02),    (0.15, 0.55)),
    "pole":       ((0.01, 0.05),     (0.80, 1.0)),
    "light":      ((0.001, 0.01),    (0.40, 0.85)),
    "sign":       ((0.0005, 0.01),   (0.40, 0.85)),
    "vegetation": ((0.08, 0.25),     (0.95, 1.0)),
    "terrain":    ((0.02, 0.10),     (0.80, 1.0)),
    "sky":        ((0.08, 0.25),     (0.95, 1.0)),
    "person":     ((0.005, 0.03),    (0.70, 1.0)),
    "rider":      ((0.0005, 0.005),  (0.10, 0.40)),
    "car":        ((0.03, 0.12),     (0.90, 1.0)),
    "truck":      ((0.001, 0.015),   (0.02, 0.25)),
    "bus":        ((0.001, 0.01),    (0.02, 0.20)),
    "train":      ((0.001, 0.012),   (0.03, 0.20)),
    "motorcycle": ((0.0003, 0.005),  (0.03, 0.25)),
    "bicycle":    ((0.0005, 0.008),  (0.08, 0.45)),
}


@dataclass(frozen=True)
class DomainStyle:
    """Everything that differs between the two domains.

    ``palette`` holds a base colour per train id (cars, people and riders get a
    random colour per instance). Every instance's colour is its base colour moved
    by a random hue (+- ``hue_shift`` degrees), saturation and value factor
    (``sat_range``, ``val_range``): a continuous appearance shift per instance.
    ``scene_shares`` is the probability of each of :data:`SCENE_TYPES`; rates are
    expected counts per image (Poisson) or probabilities per image (Bernoulli), the
    rare-class ones within the scene type that allows them.
    """

    name: str
    palette: dict[int, Colour]
    skin: Colour
    photographic: bool
    hue_shift: float               # degrees, per instance
    sat_range: tuple[float, float]  # saturation factor per instance
    val_range: tuple[float, float]  # value (brightness) factor per instance
    horizon: tuple[float, float]  # horizon row as a fraction of the height
    lane_width: tuple[float, float]  # lane width at the bottom row, fraction of the width
    object_scale: float           # multiplies every object's metric size
    scene_shares: tuple[float, float, float, float]  # residential, arterial, cycle, tram
    cars: float
    parked_cars: float
    persons: float
    poles: float
    p_wall: float
    p_fence: float
    p_terrain: float
    p_park: float                 # a facade gap becomes a park with trees
    static_objects: float
    # rare classes, within the scene types that allow them
    p_truck: float                # arterial
    p_bus: float                  # arterial
    p_train: float                # tram
    riders: float                 # cycle (half as many on a tram street)
    p_motorcycle: float           # share of riders on a motorcycle (else a bicycle)
    parked_bicycles: float        # cycle (half as many on a tram street)
    description: str = ""


SOURCE_STYLE = DomainStyle(
    name="source",
    palette={
        ROAD: (68, 68, 80), SIDEWALK: (178, 150, 132), BUILDING: (158, 98, 76),
        WALL: (198, 186, 116), FENCE: (124, 88, 50), POLE: (104, 106, 120),
        LIGHT: (238, 196, 28), SIGN: (34, 76, 226), VEGETATION: (34, 158, 42),
        TERRAIN: (152, 192, 54), SKY: (82, 160, 246), TRUCK: (206, 136, 38),
        BUS: (224, 54, 38), TRAIN: (54, 166, 208), MOTORCYCLE: (42, 40, 46),
        BICYCLE: (18, 120, 212),
    },
    skin=(232, 180, 140),
    photographic=False,
    hue_shift=6.0, sat_range=(0.9, 1.1), val_range=(0.9, 1.1),
    horizon=(0.36, 0.48),
    lane_width=(0.26, 0.38),
    object_scale=1.4,
    scene_shares=(0.45, 0.30, 0.15, 0.10),
    cars=3.0, parked_cars=1.0, persons=2.0, poles=3.0,
    p_wall=0.35, p_fence=0.3, p_terrain=0.35, p_park=0.3, static_objects=0.5,
    p_truck=0.5, p_bus=0.4, p_train=0.85, riders=1.5, p_motorcycle=0.6, parked_bicycles=0.6,
    description="rendered: flat saturated colours, crisp edges, no noise",
)

# The target keeps every class's identity: its base colours are the source's with a
# change of material where the two domains differ (greyer asphalt and paving with
# less contrast between them, duller brick and greens, hazy sky). The gap is the
# per-instance shift, which is wider than the source's, and the photography on top.
TARGET_STYLE = DomainStyle(
    name="target",
    palette={
        **SOURCE_STYLE.palette,
        ROAD: (106, 103, 100),        # lighter, greyer asphalt
        SIDEWALK: (138, 132, 126),    # grey paving, close in tone to the asphalt
        BUILDING: (172, 140, 120),    # duller brick and plaster
        VEGETATION: (66, 112, 48),    # darker, duller green
        TERRAIN: (118, 142, 70),      # dry grass
        SKY: (160, 190, 226),         # hazy pale blue
    },
    skin=(206, 160, 130),
    photographic=True,
    hue_shift=25.0, sat_range=(0.55, 1.1), val_range=(0.7, 1.2),
    # One camera for both domains (docs/method.md#the-demo): the same horizon and lane ranges.
    horizon=SOURCE_STYLE.horizon,
    lane_width=SOURCE_STYLE.lane_width,
    object_scale=1.2,
    scene_shares=(0.40, 0.20, 0.30, 0.10),
    cars=2.0, parked_cars=2.0, persons=4.0, poles=4.0,
    p_wall=0.25, p_fence=0.4, p_terrain=0.5, p_park=0.4, static_objects=0.8,
    p_truck=0.4, p_bus=0.4, p_train=0.85, riders=1.5, p_motorcycle=0.3, parked_bicycles=1.2,
    description=("photographed: greyer materials, a wider per-instance colour shift, lighting, haze, "
                 "shadows, texture, blur, sensor noise, bonnet of the ego vehicle at the bottom (void)"),
)


# ---------------------------------------------------------------------------
# Drawing


class _Canvas:
    """A label map and an RGB float image drawn together, primitive by primitive."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.label = np.full((height, width), VOID_NONE, dtype=np.uint8)
        self.rgb = np.zeros((height, width, 3), dtype=np.float32)

    def poly(self, pts: list[tuple[float, float]] | np.ndarray, cls: int | None, colour: Colour) -> None:
        """Fill a polygon; ``cls`` None paints the image only (markings, windows)."""
        p = [np.round(np.asarray(pts, dtype=np.float64) * _SCALE).astype(np.int32)]
        if cls is not None:
            cv2.fillPoly(self.label, p, int(cls), lineType=cv2.LINE_8, shift=_SHIFT)
        cv2.fillPoly(self.rgb, p, tuple(float(c) for c in colour), lineType=cv2.LINE_8, shift=_SHIFT)

    def rect(self, x0: float, y0: float, x1: float, y1: float, cls: int | None, colour: Colour) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cls, colour)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, cls: int | None, colour: Colour,
                thickness: int = -1) -> None:
        c = (int(round(cx * _SCALE)), int(round(cy * _SCALE)))
        a = (max(int(round(ax * _SCALE)), 1), max(int(round(ay * _SCALE)), 1))
        if cls is not None:
            cv2.ellipse(self.label, c, a, 0, 0, 360, int(cls), thickness, cv2.LINE_8, _SHIFT)
        cv2.ellipse(self.rgb, c, a, 0, 0, 360, tuple(float(v) for v in colour), thickness, cv2.LINE_8, _SHIFT)

    def line(self, x0: float, y0: float, x1: float, y1: float, cls: int | None, colour: Colour,
             thickness: int = 1) -> None:
        p0 = (int(round(x0 * _SCALE)), int(round(y0 * _SCALE)))
        p1 = (int(round(x1 * _SCALE)), int(round(y1 * _SCALE)))
        if cls is not None:
            cv2.line(self.label, p0, p1, int(cls), thickness, cv2.LINE_8, _SHIFT)
        cv2.line(self.rgb, p0, p1, tuple(float(v) for v in colour), thickness, cv2.LINE_8, _SHIFT)


@dataclass
class _Street:
    """The scene's perspective: ground point (u lanes, depth t) -> pixel.

    Depth ``t`` is 0 at the horizon and 1 at the bottom row; lateral ``u`` is in
    lanes from the vanishing point. One lane is 3.5 m wide.
    """

    width: int
    height: int
    horizon: float
    vanish_x: float
    lane_px: float
    half_road: tuple[float, float]      # road edges (left, right) in lanes, both > 0
    sidewalk: tuple[float, float]       # sidewalk widths in lanes
    terrain: tuple[float, float]        # terrain band widths (0: none)
    facade: tuple[float, float] = field(init=False)

    def __post_init__(self) -> None:
        self.facade = (self.half_road[0] + self.sidewalk[0] + self.terrain[0],
                       self.half_road[1] + self.sidewalk[1] + self.terrain[1])

    def x(self, u: float, t: float) -> float:
        return self.vanish_x + u * self.lane_px * t

    def y(self, t: float) -> float:
        return self.horizon + t * (self.height - self.horizon)

    def px_per_m(self, t: float) -> float:
        return self.lane_px * t / 3.5


def _shift(rng: np.random.Generator, colour: Colour, style: DomainStyle) -> Colour:
    """``colour`` moved by one instance's random hue, saturation and value offset."""
    rgb = np.asarray([[colour]], dtype=np.float32) / 255.0
    h, s, v = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[0, 0]  # h in degrees, s and v in 0..1
    h = (h + rng.uniform(-style.hue_shift, style.hue_shift)) % 360.0
    s = min(1.0, s * rng.uniform(*style.sat_range))
    v = min(1.0, v * rng.uniform(*style.val_range))
    out = cv2.cvtColor(np.asarray([[[h, s, v]]], dtype=np.float32), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(float(c) for c in np.clip(out * 255.0, 0, 255))  # type: ignore[return-value]


def _jitter(rng: np.random.Generator, colour: Colour, amount: float) -> Colour:
    c = np.asarray(colour, dtype=np.float64) + rng.uniform(-amount, amount, 3)
    return tuple(float(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


def _shade(colour: Colour, factor: float) -> Colour:
    return tuple(float(min(255.0, c * factor)) for c in colour)  # type: ignore[return-value]


def _random_colour(rng: np.random.Generator) -> Colour:
    """A car's or a garment's colour: any hue, sometimes dark or white."""
    kind = rng.random()
    if kind < 0.25:
        v = rng.uniform(15, 70)
        return (v, v, v + rng.uniform(0, 10))
    if kind < 0.4:
        v = rng.uniform(170, 240)
        return (v, v, v)
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(60, 230), rng.integers(60, 230)]]])
    return tuple(float(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])  # type: ignore[return-value]


def _class_colour(rng: np.random.Generator, style: DomainStyle, cls: int) -> Colour:
    """One instance's colour: random for cars and clothes, else the shifted base colour."""
    if cls in (CAR, PERSON, RIDER):
        return _random_colour(rng)
    return _shift(rng, style.palette[cls], style)


def _draw_ground(cv: _Canvas, st: _Street, rng: np.random.Generator, style: DomainStyle) -> None:
    """Sky above the horizon; road, sidewalks, terrain and far ground below it, per pixel."""
    h, w = cv.h, cv.w
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    t = (ys - st.horizon) / (h - st.horizon)
    below = t > 0
    u = np.where(below, (xs - st.vanish_x) / (st.lane_px * np.maximum(t, 1e-6)), 0.0)
    side = u >= 0  # right side uses index 1
    au = np.abs(u)
    road_edge = np.where(side, st.half_road[1], st.half_road[0])
    walk_edge = road_edge + np.where(side, st.sidewalk[1], st.sidewalk[0])
    terr_edge = walk_edge + np.where(side, st.terrain[1], st.terrain[0])
    cls = np.full((h, w), SKY, dtype=np.uint8)
    cls[below] = TERRAIN  # behind the facade line: only seen through gaps
    cls[below & (au < terr_edge)] = TERRAIN
    cls[below & (au < walk_edge)] = SIDEWALK
    cls[below & (au < road_edge)] = ROAD
    cv.label[:] = cls
    colours = {c: np.asarray(_class_colour(rng, style, c), dtype=np.float32)
               for c in (SKY, TERRAIN, SIDEWALK, ROAD)}
    for c, col in colours.items():
        cv.rgb[cls == c] = col
    # Sky gradient: brighter towards the horizon.
    grad = np.clip(ys / max(st.horizon, 1.0), 0, 1)[..., None]
    cv.rgb[cls == SKY] = (cv.rgb * (0.85 + 0.25 * grad)).clip(0, 255)[cls == SKY]
    # Kerb: a thin lighter line where road meets sidewalk (image only).
    kerb = below & (np.abs(au - road_edge) * st.lane_px * np.maximum(t, 1e-6) < 0.6) & (au >= road_edge)
    cv.rgb[kerb] = np.asarray(_shade(tuple(colours[SIDEWALK]), 1.25), dtype=np.float32)  # type: ignore[arg-type]
    # Dashed centre line and lane lines (image only: still road).
    mark = (236, 236, 236) if not style.photographic else (190, 188, 180)
    lanes = [0.0] if rng.random() < 0.8 else []
    lanes += [-k for k in range(1, int(st.half_road[0]))] + [k for k in range(1, int(st.half_road[1]))]
    dash = rng.uniform(0, 1)
    for lu in lanes:
        for k in range(12):
            # dashes equally spaced in 1/t (i.e. in metres along the road)
            d0, d1 = (k + dash) * 0.35, (k + dash + 0.5) * 0.35
            t0, t1 = 1.0 / (1.0 + d1 * 3), 1.0 / (1.0 + d0 * 3)
            if t1 < 0.03:
                continue
            half = 0.04
            cv.poly([(st.x(lu - half, t0), st.y(t0)), (st.x(lu + half, t0), st.y(t0)),
                     (st.x(lu + half, t1), st.y(t1)), (st.x(lu - half, t1), st.y(t1))], None, mark)


def _facade(cv: _Canvas, st: _Street, u: float, t0: float, t1: float, height_m: float, cls: int,
            colour: Colour, windows: Colour | None) -> None:
    """A vertical wall face along the street at lateral ``u`` between depths t0 < t1."""
    k0, k1 = st.px_per_m(t0), st.px_per_m(t1)
    x0, x1 = st.x(u, t0), st.x(u, t1)
    y0, y1 = st.y(t0), st.y(t1)
    cv.poly([(x0, y0), (x1, y1), (x1, y1 - height_m * k1), (x0, y0 - height_m * k0)], cls, colour)
    if windows is None:
        return
    # A grid of windows, in metres, projected (image only).
    floors = int(height_m // 3.2)
    span_m = 3.5 * abs(u) * (1 / t0 - 1 / t1) if t0 > 0 else 0.0
    cols = int(span_m // 3.0)
    if floors < 1 or cols < 1:
        return
    cols = min(cols, 40)
    for c in range(cols):
        # depth parameter of the window's two edges: interpolate in 1/t (metric)
        a0 = 1 / t0 - (c + 0.3) / cols * (1 / t0 - 1 / t1)
        a1 = 1 / t0 - (c + 0.7) / cols * (1 / t0 - 1 / t1)
        ta, tb = 1 / a0, 1 / a1
        if st.px_per_m(tb) * 1.2 < 0.5:
            continue
        for f in range(floors):
            lo, hi = f * 3.2 + 1.0, f * 3.2 + 2.4
            if hi > height_m - 0.4:
                break
            xa, xb = st.x(u, ta), st.x(u, tb)
            ya, yb = st.y(ta), st.y(tb)
            ka, kb = st.px_per_m(ta), st.px_per_m(tb)
            cv.poly([(xa, ya - lo * ka), (xb, yb - lo * kb), (xb, yb - hi * kb), (xa, ya - hi * ka)],
                    None, windows)


def _tree(cv: _Canvas, st: _Street, u: float, t: float, rng: np.random.Generator, style: DomainStyle,
          size_m: float) -> None:
    k = st.px_per_m(t) * style.object_scale
    x, y = st.x(u, t), st.y(t)
    col = _class_colour(rng, style, VEGETATION)
    trunk = _shade(col, 0.55)
    cv.rect(x - 0.18 * k, y - 0.5 * size_m * k, x + 0.18 * k, y, VEGETATION, trunk)
    for _ in range(int(rng.integers(2, 5))):
        cx = x + rng.uniform(-0.3, 0.3) * size_m * k
        cy = y - rng.uniform(0.6, 0.85) * size_m * k
        cv.ellipse(cx, cy, rng.uniform(0.25, 0.4) * size_m * k, rng.uniform(0.2, 0.32) * size_m * k,
                   VEGETATION, _shade(col, rng.uniform(0.85, 1.15)))


def _draw_skyline(cv: _Canvas, st: _Street, rng: np.random.Generator, style: DomainStyle) -> None:
    """Facades (with gaps, parks and trees) along both sides of the street."""
    for side, sign in ((0, -1.0), (1, 1.0)):
        u = sign * st.facade[side]
        # depth segments, evenly spaced in metres along the street (1/t)
        inv = 1.0 / 0.02
        while inv > 1.0 / 3.0:
            length = rng.uniform(2.0, 7.0)  # in units of 1/t (~10 m each)
            t0, t1 = 1.0 / inv, 1.0 / max(inv - length, 1.0 / 3.0)
            inv -= length
            r = rng.random()
            if r < style.p_park:
                for _ in range(int(rng.integers(1, 4))):
                    tt = rng.uniform(t0, t1)
                    _tree(cv, st, u + sign * rng.uniform(0.0, 1.0), tt, rng, style, rng.uniform(6, 11))
                continue
            height = rng.uniform(6, 20)
            col = _class_colour(rng, style, BUILDING)
            win = _shade(col, 0.45) if not style.photographic else _shade(col, rng.uniform(0.4, 0.7))
            _facade(cv, st, u, t0, t1, height, BUILDING, col, win)
    # occasional trees in front of the facades, on the terrain or sidewalk edge
    for side, sign in ((0, -1.0), (1, 1.0)):
        if st.terrain[side] > 0 or rng.random() < 0.3:
            for _ in range(int(rng.poisson(2.0))):
                uu = sign * (st.half_road[side] + st.sidewalk[side] + 0.5 * st.terrain[side])
                _tree(cv, st, uu, rng.uniform(0.05, 0.9), rng, style, rng.uniform(5, 9))


def _draw_barriers(cv: _Canvas, st: _Street, rng: np.random.Generator, style: DomainStyle) -> None:
    """Walls and fences along the outer edge of the sidewalk or terrain."""
    for cls, p, hmin, hmax in ((WALL, style.p_wall, 1.0, 3.0), (FENCE, style.p_fence, 0.9, 1.8)):
        if rng.random() >= p:
            continue
        side = int(rng.integers(2))
        sign = -1.0 if side == 0 else 1.0
        edge = st.half_road[side] + st.sidewalk[side] + (st.terrain[side] if cls == WALL else 0.0)
        u = sign * (edge - 0.02)
        t0 = rng.uniform(0.05, 0.5)
        t1 = min(t0 * rng.uniform(2.0, 8.0), 3.0)
        height = rng.uniform(hmin, hmax)
        col = _class_colour(rng, style, cls)
        _facade(cv, st, u, t0, t1, height, cls, col, None)
        if cls == FENCE:
            # posts and a rail: fence texture (image only)
            dark = _shade(col, 0.6)
            n = int(min(60, (1 / t0 - 1 / t1) * 8))
            for i in range(n):
                tt = 1.0 / (1 / t0 - (i + 0.5) / n * (1 / t0 - 1 / t1))
                x, y, k = st.x(u, tt), st.y(tt), st.px_per_m(tt)
                cv.line(x, y, x, y - height * k, None, dark)
        else:
            # coping stone on top of walls
            k0, k1 = st.px_per_m(t0), st.px_per_m(t1)
            x0, x1, y0, y1 = st.x(u, t0), st.x(u, t1), st.y(t0), st.y(t1)
            cv.poly([(x0, y0 - height * k0), (x1, y1 - height * k1),
                     (x1, y1 - (height - 0.25) * k1), (x0, y0 - (height - 0.25) * k0)],
                    None, _shade(col, 1.2))


@dataclass
class _Object:
    t: float
    kind: str
    u: float


def _draw_car(cv: _Canvas, st: _Street, o: _Object, rng: np.random.Generator, style: DomainStyle) -> None:
    k = st.px_per_m(o.t) * style.object_scale
    x, y = st.x(o.u, o.t), st.y(o.t)
    col = _class_colour(rng, style, CAR)
    w = rng.uniform(1.7, 1.95) * k
    dark = (20, 20, 22)
    # wheels, body, cabin, rear window, lights
    cv.rect(x - 0.48 * w, y - 0.35 * k, x - 0.3 * w, y, CAR, dark)
    cv.rect(x + 0.3 * w, y - 0.35 * k, x + 0.48 * w, y, CAR, dark)
    cv.rect(x - 0.5 * w, y - 1.0 * k, x + 0.5 * w, y - 0.25 * k, CAR, col)
    top = rng.uniform(1.4, 1.6)
    cv.poly([(x - 0.44 * w, y - 1.0 * k), (x + 0.44 * w, y - 1.0 * k), (x + 0.34 * w, y - top * k),
             (x - 0.34 * w, y - top * k)], CAR, col)
    glass = (40, 52, 66) if not style.photographic else (70, 78, 86)
    cv.poly([(x - 0.38 * w, y - 1.03 * k), (x + 0.38 * w, y - 1.03 * k), (x + 0.31 * w, y - (top - 0.08) * k),
             (x - 0.31 * w, y - (top - 0.08) * k)], None, glass)
    red = (230, 20, 20) if not style.photographic else (170, 40, 40)
    cv.rect(x - 0.48 * w, y - 0.85 * k, x - 0.36 * w, y - 0.7 * k, None, red)
    cv.rect(x + 0.36 * w, y - 0.85 * k, x + 0.48 * w, y - 0.7 * k, None, red)


def _draw_big_vehicle(cv: _Canvas, st: _Street, o: _Object, rng: np.random.Generator,
                      style: DomainStyle, cls: int) -> None:
    k = st.px_per_m(o.t) * style.object_scale
    x, y = st.x(o.u, o.t), st.y(o.t)
    col = _class_colour(rng, style, cls)
    dark = (20, 20, 22)
    glass = (40, 52, 66) if not style.photographic else (70, 78, 86)
    if cls == TRUCK:
        w, hgt = 2.5 * k, rng.uniform(3.2, 3.8) * k
        cv.rect(x - 0.45 * w, y - 0.5 * k, x - 0.3 * w, y, cls, dark)
        cv.rect(x + 0.3 * w, y - 0.5 * k, x + 0.45 * w, y, cls, dark)
        cv.rect(x - 0.5 * w, y - hgt, x + 0.5 * w, y - 0.4 * k, cls, col)
        cv.line(x, y - hgt, x, y - 0.4 * k, None, _shade(col, 0.7))  # box doors
    elif cls == BUS:
        w, hgt = 2.55 * k, 3.2 * k
        cv.rect(x - 0.45 * w, y - 0.5 * k, x - 0.3 * w, y, cls, dark)
        cv.rect(x + 0.3 * w, y - 0.5 * k, x + 0.45 * w, y, cls, dark)
        cv.rect(x - 0.5 * w, y - hgt, x + 0.5 * w, y - 0.35 * k, cls, col)
        cv.rect(x - 0.44 * w, y - 0.92 * hgt, x + 0.44 * w, y - 0.55 * hgt, None, glass)
    else:  # tram / train
        w, hgt = 2.65 * k, 3.7 * k
        cv.rect(x - 0.5 * w, y - hgt, x + 0.5 * w, y - 0.2 * k, cls, col)
        cv.poly([(x - 0.42 * w, y - 0.85 * hgt), (x + 0.42 * w, y - 0.85 * hgt),
                 (x + 0.38 * w, y - 0.5 * hgt), (x - 0.38 * w, y - 0.5 * hgt)], None, glass)
        cv.rect(x - 0.5 * w, y - 0.25 * hgt, x + 0.5 * w, y - 0.2 * hgt, None, _shade(col, 0.6))
        # pantograph and overhead wire: the pole class carries the wire mast
        cv.line(x - 0.2 * w, y - hgt, x, y - hgt - 0.6 * k, cls, _shade(col, 0.4))
        cv.line(x + 0.2 * w, y - hgt, x, y - hgt - 0.6 * k, cls, _shade(col, 0.4))


def _draw_person(cv: _Canvas, x: float, y: float, k: float, rng: np.random.Generator, style: DomainStyle,
                 cls: int, legs: bool = True) -> None:
    """A standing person (feet at y) or, with ``legs=False``, a rider's upper body (hips at y)."""
    top = _class_colour(rng, style, cls)
    bottom = _class_colour(rng, style, cls) if rng.random() < 0.7 else _shade(top, 0.6)
    skin = _jitter(rng, style.skin, 12)
    hgt = rng.uniform(1.6, 1.9) * k
    if legs:
        cv.rect(x - 0.2 * k, y - 0.47 * hgt, x - 0.03 * k, y, cls, bottom)
        cv.rect(x + 0.03 * k, y - 0.47 * hgt, x + 0.2 * k, y, cls, bottom)
        hip = y - 0.47 * hgt
    else:
        hip = y
    cv.ellipse(x, hip - 0.17 * hgt, 0.25 * k, 0.2 * hgt, cls, top)
    cv.ellipse(x, hip - 0.42 * hgt, 0.12 * k, 0.07 * hgt, cls, skin)


def _draw_two_wheeler(cv: _Canvas, st: _Street, o: _Object, rng: np.random.Generator, style: DomainStyle,
                      cls: int, rider: bool) -> None:
    """Side view: two wheels and a frame or body; optionally a rider on top."""
    k = st.px_per_m(o.t) * style.object_scale
    x, y = st.x(o.u, o.t), st.y(o.t)
    col = _class_colour(rng, style, cls)
    facing = 1.0 if rng.random() < 0.5 else -1.0
    r = (0.33 if cls == MOTORCYCLE else 0.34) * k
    base = 0.6 * k if cls == MOTORCYCLE else 0.55 * k
    wheel_col = (18, 18, 20) if cls == MOTORCYCLE else _shade(col, 0.5)
    for s in (-1.0, 1.0):  # solid wheels: spoked rings are sub-pixel at the demo's size
        cv.ellipse(x + s * base, y - r, r, r, cls, wheel_col)
    if cls == MOTORCYCLE:
        cv.ellipse(x, y - 2.0 * r, 0.55 * k, 0.28 * k, cls, col)
        cv.rect(x + facing * 0.4 * k, y - 3.4 * r, x + facing * 0.5 * k, y - 2.0 * r, cls, _shade(col, 0.6))
        seat_y = y - 2.4 * r
    else:
        lw = max(2, int(round(0.1 * k)))
        cv.line(x - base, y - r, x, y - r, cls, col, lw)
        cv.line(x, y - r, x - 0.2 * k, y - 2.6 * r, cls, col, lw)
        cv.line(x - 0.2 * k, y - 2.6 * r, x + base, y - r, cls, col, lw)
        cv.line(x + facing * base * 0.8, y - 3.0 * r, x + facing * base, y - r, cls, col, lw)
        seat_y = y - 2.6 * r
    if rider:
        _draw_person(cv, x - facing * 0.1 * k, seat_y, k, rng, style, RIDER, legs=False)
        # the rider's leg down to the pedal
        leg = _class_colour(rng, style, RIDER)
        cv.line(x, seat_y, x + facing * 0.15 * k, y - r, RIDER, leg, max(1, int(round(0.15 * k))))


def _draw_pole(cv: _Canvas, st: _Street, o: _Object, rng: np.random.Generator, style: DomainStyle) -> None:
    k = st.px_per_m(o.t) * style.object_scale
    x, y = st.x(o.u, o.t), st.y(o.t)
    col = _class_colour(rng, style, POLE)
    hgt = rng.uniform(4.0, 7.0) * k
    width = max(MIN_POLE_PX, 0.22 * k)
    cv.rect(x - width / 2, y - hgt, x + width / 2, y, POLE, col)
    r = rng.random()
    if r < 0.35:  # traffic light, on the pole or on an arm over the road
        lx = x
        if rng.random() < 0.4:
            lx = x - np.sign(o.u) * rng.uniform(1.0, 3.0) * k
            cv.rect(min(x, lx), y - hgt, max(x, lx), y - hgt + max(0.8, 0.15 * k), POLE, col)
        lc = _class_colour(rng, style, LIGHT)
        lw, lh = 0.45 * k, 1.1 * k
        cv.rect(lx - lw / 2, y - hgt, lx + lw / 2, y - hgt + lh, LIGHT, lc)
        bulb = [(230, 30, 20), (240, 190, 20), (30, 200, 60)][int(rng.integers(3))]
        if style.photographic:
            bulb = _shade(bulb, 0.8)
        slot = int(rng.integers(3))
        cv.ellipse(lx, y - hgt + (slot + 0.5) * lh / 3, 0.13 * k, 0.13 * k, None, bulb)
    elif r < 0.75:  # a sign: rectangle, disc or triangle
        sc = _class_colour(rng, style, SIGN)
        sy = y - hgt + rng.uniform(0.0, 0.3) * hgt
        s = rng.uniform(0.55, 0.8) * k
        shape = rng.integers(3)
        if shape == 0:
            cv.rect(x - s / 2, sy, x + s / 2, sy + 0.7 * s, SIGN, sc)
        elif shape == 1:
            cv.ellipse(x, sy + s / 2, s / 2, s / 2, SIGN, sc)
            inner = (240, 240, 240) if not style.photographic else (200, 200, 196)
            cv.ellipse(x, sy + s / 2, s / 4, s / 4, None, inner)
        else:
            cv.poly([(x - s / 2, sy + s), (x + s / 2, sy + s), (x, sy)], SIGN, sc)


def _draw_static(cv: _Canvas, st: _Street, o: _Object, rng: np.random.Generator, style: DomainStyle) -> None:
    """A bin or bollard: not an evaluated class (void in the labels)."""
    k = st.px_per_m(o.t) * style.object_scale
    x, y = st.x(o.u, o.t), st.y(o.t)
    col = _jitter(rng, (90, 110, 60) if not style.photographic else (80, 86, 84), 20)
    w, hgt = rng.uniform(0.4, 0.7) * k, rng.uniform(0.8, 1.1) * k
    cv.rect(x - w / 2, y - hgt, x + w / 2, y, VOID_STATIC, col)


def _place_objects(st: _Street, rng: np.random.Generator, style: DomainStyle,
                   scene: str) -> list[_Object]:
    objs: list[_Object] = []
    nl, nr = st.half_road
    walk = (st.half_road[0] + 0.5 * st.sidewalk[0], st.half_road[1] + 0.5 * st.sidewalk[1])
    pole_u = (st.half_road[0] + 0.85 * st.sidewalk[0], st.half_road[1] + 0.85 * st.sidewalk[1])

    def lane(n_left: float, n_right: float) -> float:
        lanes = [-(i + 0.5) for i in range(int(n_left))] + [i + 0.5 for i in range(int(n_right))]
        return float(lanes[int(rng.integers(len(lanes)))]) + rng.uniform(-0.1, 0.1)

    def depth(lo: float = NEAREST_OBJECT_DEPTH, hi: float = 1.1) -> float:
        # between uniform in rows and uniform in metres: near objects stay common
        return float(max(lo, NEAREST_OBJECT_DEPTH) + (hi - max(lo, NEAREST_OBJECT_DEPTH)) * rng.random() ** 1.3)

    for _ in range(rng.poisson(style.cars)):
        objs.append(_Object(depth(), "car", lane(nl, nr)))
    for _ in range(rng.poisson(style.parked_cars)):
        s = int(rng.integers(2))
        u = (-nl + 0.45) if s == 0 else (nr - 0.45)
        objs.append(_Object(depth(0.08, 0.9), "car", u))
    heavy = {"arterial": (("truck", style.p_truck), ("bus", style.p_bus)),
             "tram": (("train", style.p_train),)}.get(scene, ())
    for kind, p in heavy:
        if rng.random() < p:
            objs.append(_Object(depth(0.1, 0.8), kind, lane(nl, nr) if kind != "train" else 0.0))
    for _ in range(rng.poisson(style.persons)):
        s = int(rng.integers(2))
        base = -walk[0] if s == 0 else walk[1]
        t = depth(0.06, 1.0)
        for _ in range(1 + int(rng.poisson(0.4))):  # small groups
            objs.append(_Object(t * rng.uniform(0.95, 1.05), "person",
                                base + rng.uniform(-0.3, 0.3) * st.sidewalk[s]))
    cyclists = {"cycle": 1.0, "tram": 0.5}.get(scene, 0.0)
    for _ in range(rng.poisson(style.riders * cyclists)):
        kind = "rider_motorcycle" if rng.random() < style.p_motorcycle else "rider_bicycle"
        objs.append(_Object(depth(0.1, 1.0), kind, lane(nl, nr)))
    for _ in range(rng.poisson(style.parked_bicycles * cyclists)):
        s = int(rng.integers(2))
        objs.append(_Object(depth(0.1, 1.0), "bicycle", -walk[0] if s == 0 else walk[1]))
    for _ in range(rng.poisson(style.poles)):
        s = int(rng.integers(2))
        objs.append(_Object(depth(0.05, 1.0), "pole", -pole_u[0] if s == 0 else pole_u[1]))
    for _ in range(rng.poisson(style.static_objects)):
        s = int(rng.integers(2))
        objs.append(_Object(depth(0.1, 1.0), "static", -pole_u[0] if s == 0 else pole_u[1]))
    objs.sort(key=lambda o: o.t)  # painter's order: far first
    return objs


def _draw_objects(cv: _Canvas, st: _Street, objs: list[_Object], rng: np.random.Generator,
                  style: DomainStyle) -> None:
    for o in objs:
        if o.kind == "car":
            _draw_car(cv, st, o, rng, style)
        elif o.kind == "truck":
            _draw_big_vehicle(cv, st, o, rng, style, TRUCK)
        elif o.kind == "bus":
            _draw_big_vehicle(cv, st, o, rng, style, BUS)
        elif o.kind == "train":
            _draw_big_vehicle(cv, st, o, rng, style, TRAIN)
        elif o.kind == "person":
            k = st.px_per_m(o.t) * style.object_scale
            _draw_person(cv, st.x(o.u, o.t), st.y(o.t), k, rng, style, PERSON)
        elif o.kind == "rider_motorcycle":
            _draw_two_wheeler(cv, st, o, rng, style, MOTORCYCLE, rider=True)
        elif o.kind == "rider_bicycle":
            _draw_two_wheeler(cv, st, o, rng, style, BICYCLE, rider=True)
        elif o.kind == "bicycle":
            _draw_two_wheeler(cv, st, o, rng, style, BICYCLE, rider=False)
        elif o.kind == "pole":
            _draw_pole(cv, st, o, rng, style)
        elif o.kind == "static":
            _draw_static(cv, st, o, rng, style)


def draw_scene(rng: np.random.Generator, size: tuple[int, int], style: DomainStyle) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: ``(rgb float32 (H, W, 3) in 0..255 before photography, label uint8 (H, W))``.

    The label holds train ids 0..18 and the void codes :data:`VOID_STATIC` and
    :data:`VOID_EGO`.
    """
    width, height = size
    cv = _Canvas(height, width)
    lane_px = rng.uniform(*style.lane_width) * width
    st = _Street(
        width=width, height=height,
        horizon=rng.uniform(*style.horizon) * height,
        vanish_x=width * (0.5 + rng.uniform(-0.12, 0.12)),
        lane_px=lane_px,
        half_road=(float(rng.integers(1, 3)), float(rng.integers(1, 3))),
        sidewalk=(rng.uniform(0.5, 1.1), rng.uniform(0.5, 1.1)),
        terrain=tuple(rng.uniform(0.4, 1.5) if rng.random() < style.p_terrain else 0.0
                      for _ in range(2)),  # type: ignore[arg-type]
    )
    _draw_ground(cv, st, rng, style)
    _draw_skyline(cv, st, rng, style)
    _draw_barriers(cv, st, rng, style)
    scene = SCENE_TYPES[int(rng.choice(len(SCENE_TYPES), p=np.asarray(style.scene_shares) / sum(style.scene_shares)))]
    _draw_objects(cv, st, _place_objects(st, rng, style, scene), rng, style)
    if style.photographic:
        # The ego vehicle's bonnet at the bottom, void as in Cityscapes.
        depth = rng.uniform(0.05, 0.1) * height
        cv.ellipse(width / 2, height + depth * 0.4, width * 0.75, depth * 1.4, VOID_EGO,
                   _jitter(rng, (40, 42, 48), 10))
    return cv.rgb, cv.label


# ---------------------------------------------------------------------------
# Photography: pure image transforms of the target domain

# Relative texture strength of each class in the photographed domain.
_TEXTURE = np.full(256, 0.06, dtype=np.float32)
_TEXTURE[[VEGETATION, TERRAIN]] = 0.22
_TEXTURE[[ROAD, SIDEWALK]] = 0.08
_TEXTURE[[BUILDING, WALL]] = 0.1
_TEXTURE[SKY] = 0.03


def photograph(rgb: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make a drawn scene look photographed; returns uint8 RGB of the same shape.

    Texture (per-class multiplicative noise), a smooth illumination field and
    cast shadows on the ground, haze around the horizon, a random exposure and white balance around a
    warm overcast mean, reduced saturation, lens blur, sensor noise and
    vignetting. Labels are unchanged.
    """
    h, w = label.shape
    img = rgb.astype(np.float32)
    fine = rng.standard_normal((h, w)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), 0.7)
    img *= (1.0 + _TEXTURE[label] * 1.6 * fine)[..., None]
    coarse = cv2.resize(rng.standard_normal((4, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img *= (1.0 + 0.08 * coarse)[..., None]
    # shadows: a few dark wedges on the lower part of the image
    shade = np.ones((h, w), dtype=np.float32)
    for _ in range(int(rng.integers(0, 3))):
        x0 = rng.uniform(-0.2, 1.0) * w
        pts = np.array([(x0, h * rng.uniform(0.45, 0.7)), (x0 + rng.uniform(0.2, 0.6) * w, h * rng.uniform(0.45, 0.7)),
                        (x0 + rng.uniform(0.3, 0.9) * w, h), (x0 - rng.uniform(0.0, 0.3) * w, h)])
        cv2.fillPoly(shade, [np.round(pts).astype(np.int32)], float(rng.uniform(0.55, 0.75)))
    shade = cv2.GaussianBlur(shade, (0, 0), 1.0)
    img *= shade[..., None]
    # haze: airlight mixed in around the horizon band (a low-frequency change FDA can transfer)
    rows = (np.arange(h, dtype=np.float32) + 0.5) / h
    haze = (rng.uniform(0.1, 0.3) * np.exp(-((rows - 0.45) / 0.18) ** 2)).astype(np.float32)[:, None, None]
    img = img * (1.0 - haze) + haze * np.array([200.0, 204.0, 210.0], dtype=np.float32)
    # exposure, white balance, saturation, gamma
    img *= rng.uniform(0.75, 1.1)
    balance = np.array([1.06, 1.0, 0.9], dtype=np.float32) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    img *= balance
    grey = img.mean(axis=2, keepdims=True)
    img = grey + rng.uniform(0.6, 0.85) * (img - grey)
    img = 255.0 * np.clip(img / 255.0, 0, 1) ** rng.uniform(0.85, 1.15)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.45, 0.75))
    img += rng.normal(0, rng.uniform(3.0, 7.0), img.shape).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img *= (1.0 - 0.12 * r2 / 2)[..., None]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def game_lighting(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The rendered domain's time of day: one gain and tint per image, nothing per pixel.

    Images stay flat and crisp; the variation keeps a source-trained model from
    keying on absolute colour alone (a game's lighting varies as well).
    """
    gain = rng.uniform(0.7, 1.15) * rng.uniform(0.93, 1.07, 3)
    return np.clip(np.round(rgb * gain.astype(np.float32)), 0, 255).astype(np.uint8)


def render(rng: np.random.Generator, size: tuple[int, int], style: DomainStyle) -> tuple[np.ndarray, np.ndarray]:
    """A finished sample: ``(uint8 RGB (H, W, 3), uint8 Cityscapes label ids (H, W))``."""
    rgb, label = draw_scene(rng, size, style)
    if style.photographic:
        image = photograph(rgb, label, rng)
    else:
        image = game_lighting(rgb, rng)
    return image, LABEL_ID_LUT[label]


def sample_rng(seed: int, domain: int, index: int) -> np.random.Generator:
    """The generator of one image: a pure function of (seed, domain, index)."""
    return np.random.default_rng([seed, domain, index])


# ---------------------------------------------------------------------------
# Writing

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
