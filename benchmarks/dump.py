"""Dump stage vs. the model's forward pass over the same images.

The dump runs the checkpoint over target images and writes argmax, entropy
and max-probability maps to HDF5. Its cost should be the network's: this
script times (a) a plain inference loop over the same images (read, resize,
normalise, forward) and (b) the dump stage (the same plus upsampling, Eq. 2,
float16 maps and the HDF5 writes), and prints both and their ratio. Each is
run over all N images and over the first one alone: the difference is the
cost per image, free of the one-time start (loading and hashing the
checkpoint, creating the file), which the full data set amortises.

    python benchmarks/dump.py --arch deeplabv2_small --size 1024 512 --n 40
    python benchmarks/dump.py --arch deeplabv2_resnet101 --size 1024 512 --n 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from uncerda_core.config import validate_config
from uncerda_core.data.datasets import ImageSettings, SegmentationDataset, normalize
from uncerda_core.data.index import write_index
from uncerda_core.models import build_model
from uncerda_core.train.checkpoint import save_checkpoint
from uncerda_core.uncertainty.dump import dump_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="deeplabv2_small", choices=["deeplabv2_small", "deeplabv2_resnet101"])
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 512], metavar=("W", "H"))
    parser.add_argument("--n", type=int, default=40, help="images")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = args.size
    work = Path(tempfile.mkdtemp(prefix="uncerda_dump_bench_"))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(args.n):
        path = work / f"img{i:05d}.png"
        base = rng.integers(0, 255, size=(height // 16, width // 16, 3), dtype=np.uint8)
        Image.fromarray(base).resize((width, height), Image.BILINEAR).save(path)
        rows.append({"name": f"city_{i:06d}_000019", "image": str(path), "label": None, "width": width,
                     "height": height, "label_width": None, "label_height": None, "label_resized": False,
                     "blank": False})
    table = pd.DataFrame(rows)
    index = work / "index.csv"
    write_index(table, index, {})

    config = validate_config({"device": "cpu", "threads": args.threads, "demo": {"enabled": False},
                              "model": {"arch": args.arch}, "target": {"resize": [width, height]},
                              "dump": {"batch_size": args.batch_size}})
    model = build_model(config["model"]).eval()
    ckpt = work / "model.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "model_config": config["model"], "config": config})

    dataset = SegmentationDataset("cityscapes", table, ImageSettings(resize=(width, height)), label_source=None)
    loader_args = dict(batch_size=args.batch_size, shuffle=False)

    one = work / "one.csv"
    write_index(table.iloc[:1], one, {})

    @torch.no_grad()
    def forward_only(n: int) -> float:
        t0 = time.perf_counter()
        subset = torch.utils.data.Subset(dataset, range(n))
        for batch in torch.utils.data.DataLoader(subset, **loader_args):
            model(normalize(batch["image"], config["train"]["normalize"]))
        return time.perf_counter() - t0

    def dump(n: int) -> float:
        out = work / "maps.h5"
        t0 = time.perf_counter()
        dump_maps(ckpt, out, config=config, index=index if n == args.n else one, progress=False)
        elapsed = time.perf_counter() - t0
        out.unlink()
        return elapsed

    forward_only(1)  # warm-up (allocator, kernels)
    runs: dict[str, list[float]] = {"fwd_n": [], "fwd_1": [], "dump_n": [], "dump_1": []}
    for _ in range(args.repeats):  # interleaved, best of each
        runs["fwd_n"].append(forward_only(args.n))
        runs["dump_n"].append(dump(args.n))
        runs["fwd_1"].append(forward_only(1))
        runs["dump_1"].append(dump(1))
    best = {k: min(v) for k, v in runs.items()}
    per_fwd = (best["fwd_n"] - best["fwd_1"]) / (args.n - 1)
    per_dump = (best["dump_n"] - best["dump_1"]) / (args.n - 1)
    print(f"{args.arch} at {width}x{height}, {args.n} images, batch {args.batch_size}, {args.threads} threads")
    print(f"forward only: {best['fwd_n']:.2f} s for {args.n}, {1000 * per_fwd:.1f} ms per further image")
    print(f"dump stage:   {best['dump_n']:.2f} s for {args.n}, {1000 * per_dump:.1f} ms per further image "
          f"(start-up {best['dump_1'] - per_dump:.2f} s)")
    print(f"ratio dump / forward, all {args.n} images: {best['dump_n'] / best['fwd_n']:.3f}")
    print(f"ratio dump / forward, per image: {per_dump / per_fwd:.3f}")


if __name__ == "__main__":
    main()
