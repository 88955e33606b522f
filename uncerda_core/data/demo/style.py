"""The photometric domain shift: what each domain looks like, given the same scene.

:class:`DomainStyle` holds everything that differs between the two domains
(palette, per-instance colour shift, object rates and scene-type shares);
:data:`SOURCE_STYLE` and :data:`TARGET_STYLE` are the two domains. The colour
helpers give each drawn instance its colour; :func:`photograph` (the target) and
:func:`game_lighting` (the source) are the pure image transforms applied after
drawing. Labels never depend on anything here except through the rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from uncerda_core.data.demo.design import (
    BICYCLE, BUILDING, BUS, CAR, FENCE, LIGHT, MOTORCYCLE, PERSON, POLE, RIDER, ROAD, SIDEWALK, SIGN, SKY,
    TERRAIN, TRAIN, TRUCK, VEGETATION, WALL,
)

Colour = tuple[int, int, int]


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
