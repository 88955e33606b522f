"""Drawing, part 1: the canvas and the street's stuff classes.

:class:`_Canvas` draws a label map and an RGB image together, primitive by
primitive, at sub-pixel precision. The functions here draw what every scene has
around its objects: sky and ground (road, sidewalks, terrain, markings), facades
with windows, trees and parks, walls and fences. The objects (vehicles, people,
riders, poles, furniture) are in ``draw_things.py``.
"""

from __future__ import annotations

import cv2
import numpy as np

from uncerda_core.data.demo.design import (
    BUILDING, FENCE, ROAD, SIDEWALK, SKY, TERRAIN, VEGETATION, VOID_NONE, WALL,
)
from uncerda_core.data.demo.scene import _Street
from uncerda_core.data.demo.style import Colour, DomainStyle, _class_colour, _shade

_SHIFT = 4            # cv2 fixed-point bits: sub-pixel geometry at small resolutions
_SCALE = 1 << _SHIFT


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
