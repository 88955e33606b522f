"""Drawing, part 2: the objects (thing classes and void street furniture).

One function per kind of object placed by :func:`scene._place_objects`: cars,
trucks, buses and trams, people, riders on motorcycles and bicycles, parked
bicycles, poles carrying lights and signs, bins and bollards (void). Each draws
at the object's depth with the perspective's scale; :func:`_draw_objects`
dispatches on the object's kind.
"""

from __future__ import annotations

import numpy as np

from uncerda_core.data.demo.design import (
    BICYCLE, BUS, CAR, LIGHT, MIN_POLE_PX, MOTORCYCLE, PERSON, POLE, RIDER, SIGN, TRAIN, TRUCK, VOID_STATIC,
)
from uncerda_core.data.demo.draw import _Canvas
from uncerda_core.data.demo.scene import _Object, _Street
from uncerda_core.data.demo.style import DomainStyle, _class_colour, _jitter, _shade


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
