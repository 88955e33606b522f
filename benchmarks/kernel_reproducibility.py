"""Reproducibility check: do two runs give the same weights, and do other CPU kernels?

Trains the smoke preset's source-only, adversarial (+FDA) and self-training stages on tiny
generated data three times, each in its own process: twice with the CPU kernels torch picks on
this machine, once with older vector kernels forced (``ONEDNN_MAX_CPU_ISA=SSE41``,
``ATEN_CPU_CAPABILITY=default``), which stands in for a machine with other vector units (an
AVX-512 machine runs other kernels than an AVX2 one). Prints, per stage, whether the repeat is
bit-identical and how far the other kernels moved the weights.

What it shows: on one machine a run repeats bit for bit (same seed, same thread count), while
the same code on other kernels rounds differently and a few optimiser steps amplify that; so a
README number reproduces to the digit only on the same kind of CPU.

    python benchmarks/kernel_reproducibility.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("source_only", "aa", "st")
OTHER_KERNELS = {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}


def train(data: Path, out: Path) -> None:
    """The three stages on ``data`` (made on first use), their weights under ``out``."""
    import numpy as np
    import torch
    from PIL import Image

    from uncerda_core.config import load_config
    from uncerda_core.data.demo import generate_demo
    from uncerda_core.data.index import build_index, read_index, write_index
    from uncerda_core.train.loop import run_training, stage_settings

    if not (data / "target.csv").exists():
        generate_demo(data / "source", data / "target", seed=0, size=(64, 32), n_source=24, n_target_train=16,
                      n_target_val=8, progress=False)
        write_index(build_index("gta5", data / "source", "all", workers=1, progress=False), data / "source.csv", {})
        write_index(build_index("cityscapes", data / "target", "train", require_labels=False, workers=1,
                                progress=False), data / "target.csv", {})
        pseudo = data / "pseudo"
        pseudo.mkdir()
        rng = np.random.default_rng(0)
        for name in read_index(data / "target.csv")["name"]:   # random pseudo labels: any will do
            label = rng.integers(0, 19, size=(32, 64)).astype(np.uint8)
            label[:4] = 255
            Image.fromarray(label).save(pseudo / f"{name}.png")
    config = load_config(REPO / "config.yaml", REPO / "workflow/presets/smoke.yaml", overrides={
        "device": "cpu", "threads": 1, "source": {"root": str(data / "source")},
        "target": {"root": str(data / "target")}}, check_paths=False)
    common = dict(seed=0, source_dataset="gta5", source_index=data / "source.csv", progress=False)
    init = None
    for stage in STAGES:
        extra = {} if stage == "source_only" else {"target_index": data / "target.csv", "init": init}
        if stage == "st":
            extra["pseudo_dir"] = data / "pseudo"
        run_training(config, stage_settings(config, stage), out / f"{stage}.pt", **common, **extra)
        init = out / f"{stage}.pt"
        state = torch.load(init, map_location="cpu", weights_only=False)["model"]
        torch.save(state, out / f"{stage}_weights.pt")


def compare(runs: dict[str, Path]) -> None:
    import torch
    print(f"{'stage':<12} {'repeat identical':>17} {'other kernels identical':>24} {'max |weight change|':>20}")
    for stage in STAGES:
        first, again, other = (torch.load(runs[k] / f"{stage}_weights.pt") for k in ("first", "again", "other"))
        repeat = all(torch.equal(first[k], again[k]) for k in first)
        same = all(torch.equal(first[k], other[k]) for k in first)
        change = max(float((first[k].double() - other[k].double()).abs().max()) for k in first
                     if first[k].is_floating_point())
        print(f"{stage:<12} {str(repeat):>17} {str(same):>24} {change:>20.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-into", type=Path, help=argparse.SUPPRESS)   # the child process
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_into:
        train(args.data, args.train_into)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {k: tmp / k for k in ("first", "again", "other")}
        for name, out in runs.items():
            out.mkdir()
            env = {**os.environ, **(OTHER_KERNELS if name == "other" else {})}
            subprocess.run([sys.executable, __file__, "--train-into", str(out), "--data", str(tmp / "data")],
                           env=env, check=True)
        print(f"torch {__import__('torch').__version__}, other kernels: "
              + ", ".join(f"{k}={v}" for k, v in OTHER_KERNELS.items()))
        compare(runs)


if __name__ == "__main__":
    main()
