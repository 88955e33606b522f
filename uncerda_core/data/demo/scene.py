"""Scene layout: the street's perspective geometry and where objects stand on it.

:class:`_Street` maps a ground point (lateral position in lanes, depth) to a
pixel; :func:`_place_objects` draws the objects of one scene (vehicles in lanes,
people on sidewalks, riders, poles, street furniture) from the domain's rates and
the scene type, in painter's order. Nothing here draws: drawing is in
``draw.py`` (ground, facades, barriers) and ``draw_things.py`` (objects).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from uncerda_core.data.demo.design import NEAREST_OBJECT_DEPTH
from uncerda_core.data.demo.style import DomainStyle


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


@dataclass
class _Object:
    t: float
    kind: str
    u: float


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
