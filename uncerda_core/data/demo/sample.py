"""One sample: a scene laid out and drawn, then given its domain's look.

:func:`draw_scene` composes the layout (``scene.py``) and the drawing
(``draw.py``, ``draw_things.py``); :func:`render` adds the domain's photometry
(``style.py``) and writes the labels as Cityscapes label ids. Every sample is a
function of its generator, :func:`sample_rng` ``(seed, domain, index)``.
"""

from __future__ import annotations

import numpy as np

from uncerda_core.data.demo.design import LABEL_ID_LUT, SCENE_TYPES, VOID_EGO
from uncerda_core.data.demo.draw import _Canvas, _draw_barriers, _draw_ground, _draw_skyline
from uncerda_core.data.demo.draw_things import _draw_objects
from uncerda_core.data.demo.scene import _place_objects, _Street
from uncerda_core.data.demo.style import DomainStyle, _jitter, game_lighting, photograph


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
