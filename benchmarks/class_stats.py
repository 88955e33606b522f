"""Benchmark: source class statistics versus merely decoding the same label PNGs.

Generates GTA5-sized palette labels (1914x1052, street-scene layout with large
regions and many small objects, so PNG compression behaves like real labels)
in a temporary folder, then times on the same files with the same number of
worker processes and the same chunking:

  (a) a decode-only loop: ``Image.open(p).load()`` (and, for reference,
      ``np.asarray(Image.open(p))``);
  (b) ``uncerda_core.data.class_stats.compute_class_stats``;
  (c) for reference, a bare ``Image.open(p).histogram()`` loop (the floor of
      any exact count from Pillow: decode plus one pass over the pixels).

The target is ours/decode <= 1.2. The full GTA5 set (24,966 labels) scales
linearly from the per-image time printed here.

    python benchmarks/class_stats.py --n 300 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from uncerda_core.data import labels
from uncerda_core.data.class_stats import compute_class_stats
from uncerda_core.data.index import parallel_map

GTA5_SIZE = (1914, 1052)
GTA5_IMAGES = 24966
ID = {name: labels.TRAIN_TO_CITYSCAPES_ID[i] for i, name in enumerate(labels.CLASS_NAMES)}


def _palette() -> list[int]:
    palette = np.zeros((256, 3), dtype=np.uint8)
    for native, train in labels.CITYSCAPES_ID_TO_TRAIN.items():
        palette[native] = labels.TRAIN_ID_COLORS[train]
    return palette.ravel().tolist()


def street_label(seed: int, size: tuple[int, int] = GTA5_SIZE) -> Image.Image:
    """A palette label with Cityscapes ids laid out like a street scene."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.new("P", size, ID["sky"])
    d = ImageDraw.Draw(im)
    horizon = int(h * rng.uniform(0.4, 0.55))
    x = 0
    while x < w:  # skyline of buildings and walls
        bw = int(rng.integers(40, 300))
        top = int(rng.integers(int(h * 0.05), horizon))
        d.rectangle([x, top, x + bw, horizon + 20], fill=ID["building"] if rng.random() < 0.85 else ID["wall"])
        for _ in range(int(rng.integers(0, 12))):  # windows etc. labelled as void
            wx, wy = x + int(rng.integers(0, bw)), int(rng.integers(top, horizon))
            d.rectangle([wx, wy, wx + int(rng.integers(3, 15)), wy + int(rng.integers(3, 20))], fill=4)
        x += bw
    for _ in range(int(rng.integers(3, 9))):  # trees: clusters of blobs with ragged edges
        cx, cy = int(rng.integers(0, w)), int(rng.integers(int(h * 0.1), horizon))
        for _ in range(int(rng.integers(20, 60))):
            r = int(rng.integers(4, 40))
            px, py = cx + int(rng.normal(0, 80)), cy + int(rng.normal(0, 60))
            d.ellipse([px - r, py - r, px + r, py + r], fill=ID["vegetation"])
    d.polygon([(0, h), (w, h), (w, horizon + 40), (0, horizon + 40)], fill=ID["sidewalk"])
    d.polygon([(int(w * 0.1), h), (int(w * 0.9), h), (int(w * 0.55), horizon), (int(w * 0.45), horizon)],
              fill=ID["road"])
    d.rectangle([0, horizon + 10, int(w * 0.08), h], fill=ID["terrain"])
    for _ in range(int(rng.integers(0, 3))):  # fences: a lattice of thin bars
        fx, fy = int(rng.integers(0, w - 300)), int(rng.integers(horizon - 40, horizon + 60))
        for k in range(0, 300, 7):
            d.line([fx + k, fy, fx + k, fy + 60], fill=ID["fence"], width=2)
        d.line([fx, fy + 10, fx + 300, fy + 10], fill=ID["fence"], width=3)
    for _ in range(int(rng.integers(4, 14))):  # poles with lights and signs
        px = int(rng.integers(0, w))
        top = int(rng.integers(int(h * 0.1), horizon))
        d.rectangle([px, top, px + int(rng.integers(3, 10)), horizon + int(rng.integers(40, 200))], fill=ID["pole"])
        d.rectangle([px - 10, top, px + 20, top + 30], fill=ID["light"] if rng.random() < 0.5 else ID["sign"])
    vehicles = ("car", "car", "car", "truck", "bus", "train")
    for _ in range(int(rng.integers(3, 15))):  # vehicles, with void windows and wheels
        cls = vehicles[int(rng.integers(0, len(vehicles)))]
        vy = int(rng.integers(horizon, h - 20))
        scale = 0.2 + 1.5 * (vy - horizon) / (h - horizon)
        vw, vh = int(rng.integers(80, 200) * scale) + 4, int(rng.integers(40, 110) * scale) + 4
        vx = int(rng.integers(0, w))
        d.rounded_rectangle([vx, vy - vh, vx + vw, vy], radius=max(1, vh // 6), fill=ID[cls])
        d.rectangle([vx + vw // 8, vy - vh + 3, vx + vw // 2, vy - vh // 2], fill=1)
    for _ in range(int(rng.integers(2, 20))):  # people, riders on two-wheelers
        py = int(rng.integers(horizon, h - 10))
        s = 0.3 + 1.5 * (py - horizon) / (h - horizon)
        pw, ph = int(12 * s) + 2, int(50 * s) + 4
        px = int(rng.integers(0, w))
        rider = rng.random() < 0.3
        if rider:
            d.ellipse([px - pw, py - ph // 3, px + 2 * pw, py], fill=ID["bicycle" if rng.random() < 0.5 else "motorcycle"])
        d.rectangle([px, py - ph, px + pw, py - (ph // 3 if rider else 0)], fill=ID["rider" if rider else "person"])
        d.ellipse([px, py - ph - pw, px + pw, py - ph], fill=ID["rider" if rider else "person"])
    d.rectangle([0, h - int(rng.integers(0, 60)), w, h], fill=1)  # ego vehicle
    im.putpalette(_palette())
    return im


def _write_label(folder: str, seed: int) -> tuple[str, int]:
    path = os.path.join(folder, f"{seed + 1:05d}.png")
    street_label(seed).save(path)
    return path, os.path.getsize(path)


def _decode_load(path: str) -> None:
    Image.open(path).load()


def _decode_asarray(path: str) -> None:
    np.asarray(Image.open(path))


def _decode_histogram(path: str) -> None:
    Image.open(path).histogram()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="labels to generate (default 300)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunksize", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds; the fastest of each is reported")
    parser.add_argument("--dir", default=None, help="reuse/keep labels in this folder instead of a temp dir")
    args = parser.parse_args(argv)

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="uncerda-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        existing = sorted(folder.glob("*.png"))[:args.n]
        if len(existing) < args.n:
            made = list(parallel_map(partial(_write_label, str(folder)), range(args.n), workers=args.workers,
                                     chunksize=8, progress=True, desc="generating labels"))
            paths = [p for p, _ in made]
        else:
            paths = [str(p) for p in existing]
        sizes = [os.path.getsize(p) for p in paths]
        for p in paths:  # page cache: every timed loop reads from memory
            Path(p).read_bytes()
        index = pd.DataFrame({"name": [Path(p).stem for p in paths], "label": paths})
        run = dict(workers=args.workers, chunksize=args.chunksize, progress=False)

        def loop(fn):
            return lambda: sum(1 for _ in parallel_map(fn, paths, **run))

        def ours():
            return compute_class_stats(index, "gta5", **run)

        times: dict[str, list[float]] = {"load": [], "asarray": [], "histogram": [], "ours": []}
        for _ in range(args.repeats):  # interleaved, so load changes on a shared box hit all three
            times["load"].append(_timed(loop(_decode_load)))
            times["asarray"].append(_timed(loop(_decode_asarray)))
            times["histogram"].append(_timed(loop(_decode_histogram)))
            times["ours"].append(_timed(ours))
        best = {k: min(v) for k, v in times.items()}
        stats = ours()
        assert (stats.iloc[:, 1:].to_numpy().sum(axis=1) > 0).all()

        n = len(paths)
        print(f"{n} GTA5-size palette labels {GTA5_SIZE[0]}x{GTA5_SIZE[1]}, mean file {np.mean(sizes) / 1024:.1f} KiB, "
              f"{args.workers} worker processes, chunksize {args.chunksize}, best of {args.repeats}")
        for key, what in (("load", "decode only, Image.open(p).load()"),
                          ("asarray", "decode only, np.asarray(Image.open(p))"),
                          ("histogram", "bare Image.open(p).histogram()"),
                          ("ours", "compute_class_stats")):
            per = best[key] / n
            print(f"  {what:42s} {best[key]:7.2f} s  {per * 1e3:6.2f} ms/label  "
                  f"-> {per * GTA5_IMAGES:6.1f} s for {GTA5_IMAGES} labels")
        print(f"  ratio ours / decode (load)    = {best['ours'] / best['load']:.2f}   (target <= 1.2)")
        print(f"  ratio ours / decode (asarray) = {best['ours'] / best['asarray']:.2f}")
        print(f"  ratio ours / bare histogram   = {best['ours'] / best['histogram']:.2f}")
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
