"""One training iteration of each stage, split into where the time goes.

For each stage (source-only; adversarial adaptation with FDA; offline self-training; online self-training with
confidence or GMM pixel weights) and
each variant (fp32 / bf16 autocast, NCHW / channels_last) it times, on whatever
device is present:

- data: reading, resizing and cropping one source and one target batch on the
  host (the training loop does this in ``train.num_workers`` worker processes,
  overlapped with the device);
- fda, teacher (online: the EMA teacher's forward without gradients, its pixel
  weights, ClassMix and the augmentation of the mixed batch), forward (network
  and losses, including the generator's adversarial term), backward,
  discriminator (both discriminators' update), optimizer (the steps), ema (online:
  the teacher's update) and host (the rest: copies to the device, normalisation,
  bookkeeping), with a device synchronisation around each phase;
- iteration: the same iteration without the synchronisations between phases
  (batches already loaded), i.e. the device-bound time per iteration, and
  iterations/s; online with GMM weights adds one refit of Eq. 6 on the teacher's
  record, timed on its own, divided by ``gmm_refit_every``;
- peak device memory (CUDA only).

With the source-only stage and an online stage in one run it prints each online
iteration as a multiple of the source-only one (the goal at the presets' sizes:
at most 2.2x).

The stage settings (loss weights, FDA beta, self-training loss, BatchNorm mode,
learning rates) come from a preset, by default the GTA5 paper preset; the
command line sets the model and the shapes. ``--project`` adds the hours the
preset's training chain (source-only, AA round 0, the target-guided rounds,
self-training) would take at the measured iteration times, data loading assumed
hidden by the workers.

    python benchmarks/train_step.py --device cuda --project            # paper shapes, ResNet-101
    python benchmarks/train_step.py --device cpu --arch deeplabv2_small --width 8 \\
        --source-size 80 45 --crop 64 32 --target-size 64 32 --repeats 1 --warmup 0 --precisions fp32
"""

from __future__ import annotations

import argparse
import copy
import itertools
import platform
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from uncerda_core import artifacts
from uncerda_core.config import load_config
from uncerda_core.data.datasets import (BatchStream, ImageSettings, SegmentationDataset, collate, normalize,
                                        resize_bilinear)
from uncerda_core.data.demo import generate_demo
from uncerda_core.data.fda import fda_dtype, fda_translate
from uncerda_core.data.index import build_index
from uncerda_core.models import FCDiscriminator, build_model, discriminator_input
from uncerda_core.runtime import resolve_device
from uncerda_core.train import losses
from uncerda_core.train.loop import build_optimizer, self_training_loss, stage_settings
from uncerda_core.train.online import OnlineTeacher, two_head_loss

REPO = Path(__file__).resolve().parent.parent
STAGES = {"source": "source_only", "aa_fda": "aa", "st": "st", "online": "st", "online_gmm": "st"}
# What the online stages set over the preset, as `snakemake online`'s runs do (source batches kept for ClassMix).
ONLINE = {"online": "confidence", "online_gmm": "gmm"}
PHASES = ("data", "fda", "teacher", "forward", "backward", "discriminator", "optimizer", "ema", "host")


class PhaseTimer:
    """Wall time per named phase, with the device synchronised at both ends of each."""

    def __init__(self, device: torch.device, sync: bool = True):
        self.device, self.sync, self.seconds = device, sync, defaultdict(float)

    def _wait(self) -> None:
        if self.sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str):
        self._wait()
        start = time.perf_counter()
        yield
        self._wait()
        self.seconds[name] += time.perf_counter() - start


def _config(args) -> dict:
    # The ResNet-101 preset refuses to run without model.init; a timed step does not depend on the
    # weights, so the benchmark names a placeholder to pass validation and builds random weights.
    overrides = {"device": args.device, "threads": args.threads,
                 "model": {"arch": args.arch, "init": "random weights (timing only)"},
                 "source": {"resize": list(args.source_size), "crop": list(args.crop)},
                 "target": {"resize": list(args.target_size)},
                 "train": {"batch_size": args.batch_size, "num_workers": 0}}
    if args.arch == "deeplabv2_small":
        overrides["model"].update(width=args.width, blocks=[1, 1, 1, 1])
    config = load_config(args.preset, overrides=overrides, check_paths=False)
    config["model"]["init"] = None
    return config


def _datasets(work: Path, config: dict, n_images: int) -> tuple[SegmentationDataset, SegmentationDataset]:
    """Generated street scenes at the source size (GTA5 and Cityscapes layouts), read as in training."""
    generate_demo(work / "source", work / "target", seed=0, size=tuple(config["source"]["resize"]),
                  n_source=n_images, n_target_train=n_images, n_target_val=1, progress=False)
    source = build_index("gta5", work / "source", "all", workers=1, progress=False)
    target = build_index("cityscapes", work / "target", "train", workers=1, progress=False)
    flip = config["train"]["flip"]
    return (SegmentationDataset("gta5", source, ImageSettings.from_config(config["source"], True, flip)),
            SegmentationDataset("cityscapes", target, ImageSettings.from_config(config["target"], True, flip)))


def stage_config(config: dict, stage: str) -> dict:
    """The config a benchmark stage runs with: the preset's, and for an online stage online mode with its pixel
    weights and source batches."""
    if stage not in ONLINE:
        return config
    config = copy.deepcopy(config)
    config["selftrain"].update(mode="online", target_only=False)
    config["selftrain"]["online"]["pixel_weights"] = ONLINE[stage]
    return config


class StageRunner:
    """The networks, optimizers and one iteration of a stage, as the training loop builds them."""

    def __init__(self, config: dict, stage: str, device: torch.device, bf16: bool, channels_last: bool):
        config = stage_config(config, stage)
        self.config, self.device, self.bf16, self.channels_last = config, device, bf16, channels_last
        self.settings = stage_settings(config, STAGES[stage])
        torch.manual_seed(0)
        self.model = build_model(config["model"]).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.teacher = (OnlineTeacher(self.model, config["selftrain"]["online"], config["model"]["num_classes"], 0)
                        if self.settings.st_mode == "online" else None)
        if self.teacher is not None:
            # GMM weights: the refit is timed on its own (refit_seconds) and spread over gmm_refit_every, so
            # none may happen inside the timed iterations
            self.teacher.settings = {**self.teacher.settings, "gmm_refit_every": 10**9}
        self.step = 0
        self.optimizers = [build_optimizer(self.model.param_groups(), config["train"])]
        self.discriminators = {}
        if self.settings.adversarial:
            for head in ("aux", "main"):
                disc = FCDiscriminator(config["model"]["num_classes"], ndf=self.settings.disc_ndf).to(device)
                self.discriminators[head] = disc
                self.optimizers.append(torch.optim.Adam(disc.parameters(), lr=config["adapt"]["disc_lr"],
                                                        betas=tuple(config["adapt"]["disc_betas"])))

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images, self.config["train"]["normalize"])
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def iteration(self, src: dict, tgt: dict, timer: PhaseTimer) -> torch.Tensor:
        s, dev, stride = self.settings, self.device, self.model.output_stride
        autocast = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=self.bf16)
        with timer.phase("host"):
            x_t_raw = tgt["image"].to(dev, non_blocking=True)
            x_s = src["image"].to(dev, non_blocking=True) if not s.target_only else None
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            for disc in self.discriminators.values():
                disc.requires_grad_(False)
        if s.image_translation and x_s is not None:
            with timer.phase("fda"):
                x_s = fda_translate(x_s, resize_bilinear(x_t_raw, x_s.shape[-2:]), s.fda_beta,
                                    fda_dtype(dev)).clamp(0, 255)
        with timer.phase("host"):
            x_t = self._input(x_t_raw)
            x_s = self._input(x_s) if x_s is not None else None
        # As the loop: the source batch's backward before the target batch's forward, so that the two graphs
        # never hold memory together (the peak is that of training).
        loss = x_t.new_zeros(())
        if x_s is not None:
            with timer.phase("forward"), torch.autocast(**autocast):
                y_s = src["label"].to(dev)
                aux_s, main_s = self.model(x_s)
                loss_s = s.source_weight * (losses.segmentation_loss(main_s.float(), y_s, stride=stride)
                                            + self.config["train"]["lambda_seg_aux"]
                                            * losses.segmentation_loss(aux_s.float(), y_s, stride=stride))
            with timer.phase("backward"):
                loss_s.backward()
            loss = loss + loss_s.detach()
        if self.teacher is not None:
            with timer.phase("teacher"):
                pseudo, pixel_w, _ = self.teacher.label(x_t, tuple(x_t.shape[-2:]), stride, self.step)
                mixed, y_mixed, w_mixed = self.teacher.mixed(src["image"].to(dev), src["label"].to(dev), x_t_raw,
                                                             pseudo, pixel_w)
                x_t = self._input(mixed)
        if s.adversarial or s.self_training:
            with timer.phase("forward"), torch.autocast(**autocast):
                aux_t, main_t = (t.float() for t in self.model(x_t))
                loss_t = aux_t.sum() * 0.0
                if s.adversarial:
                    pred_t = {"aux": losses.upsample(aux_t, x_t.shape[-2:], stride),
                              "main": losses.upsample(main_t, x_t.shape[-2:], stride)}
                    for head, weight in (("main", s.lambda_adv_main), ("aux", s.lambda_adv_aux)):
                        out = self.discriminators[head](discriminator_input(pred_t[head], s.disc_input))
                        loss_t = loss_t + weight * losses.adversarial_loss(out, losses.SOURCE_LABEL)
                if s.self_training and self.teacher is not None:
                    loss_t = loss_t + two_head_loss(main_t, aux_t, y_mixed, w_mixed,
                                                    self.config["train"]["lambda_seg_aux"], stride)
                elif s.self_training:
                    loss_t = loss_t + self_training_loss(s, main_t, aux_t, tgt["label"].to(dev),
                                                         self.config["model"]["num_classes"],
                                                         self.config["train"]["lambda_seg_aux"], stride=stride)
            with timer.phase("backward"):
                loss_t.backward()
            loss = loss + loss_t.detach()
        if self.discriminators:
            with timer.phase("discriminator"):
                pred_s = {"aux": losses.upsample(aux_s.detach().float(), x_s.shape[-2:], stride),
                          "main": losses.upsample(main_s.detach().float(), x_s.shape[-2:], stride)}
                for head, disc in self.discriminators.items():
                    disc.requires_grad_(True)
                    for pred, label in ((pred_s[head], losses.SOURCE_LABEL),
                                        (pred_t[head].detach(), losses.TARGET_LABEL)):
                        (losses.adversarial_loss(disc(discriminator_input(pred, s.disc_input)), label) / 2).backward()
        with timer.phase("optimizer"):
            for opt in self.optimizers:
                opt.step()
        if self.teacher is not None:
            with timer.phase("ema"):
                self.teacher.update(self.model, self.step)
        self.step += 1
        return loss

    def refit_seconds(self) -> float | None:
        """Online with GMM weights: one refit of Eq. 6 on the teacher's record (its tables then used by the
        timed iterations), in seconds; None otherwise."""
        if self.teacher is None or not self.teacher.gmm:
            return None
        start = time.perf_counter()
        self.teacher.refit()
        return time.perf_counter() - start


def measure(config: dict, datasets, stage: str, device: torch.device, bf16: bool, channels_last: bool,
            warmup: int, repeats: int) -> dict:
    """Times of one variant of one stage: per phase (synchronised) and per whole iteration."""
    runner = StageRunner(config, stage, device, bf16, channels_last)
    source_set, target_set = datasets
    batch = config["train"]["batch_size"]
    streams = BatchStream(len(source_set), batch, 0, 1), BatchStream(len(target_set), batch, 0, 2)
    timer, loaded = PhaseTimer(device), []
    for it in range(warmup + repeats):
        if it == warmup:               # the warm-up iterations (autotuning, allocations) are not counted
            timer = PhaseTimer(device)
            refit_s = runner.refit_seconds()   # on the warm-up's record; the timed iterations use its tables
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        with timer.phase("data"):      # in training: DataLoader workers, pinned on the GPU
            pair = [collate(source_set, streams[0].items(it)), collate(target_set, streams[1].items(it))]
            if device.type == "cuda":
                pair = [{k: v.pin_memory() for k, v in b.items()} for b in pair]
        loaded.append(pair)
        loss = runner.iteration(*pair, timer)
    row = {"stage": stage, "precision": "bf16" if bf16 else "fp32", "channels_last": channels_last}
    row.update({f"{p}_s": timer.seconds.get(p, 0.0) / repeats for p in PHASES})
    row["profiled_iteration_s"] = sum(row[f"{p}_s"] for p in PHASES if p != "data")
    row["loss"] = float(loss.detach())
    plain = PhaseTimer(device, sync=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for src, tgt in loaded[warmup:]:
        runner.iteration(src, tgt, plain)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row["iteration_s"] = (time.perf_counter() - start) / repeats
    row["gmm_refit_s"] = refit_s
    if refit_s is not None:   # one refit every gmm_refit_every iterations, spread over them
        row["iteration_s"] += refit_s / runner.config["selftrain"]["online"]["gmm_refit_every"]
    row["iterations_per_s"] = 1.0 / row["iteration_s"]
    row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return row


def projected_hours(config: dict, seconds: dict[str, float]) -> float:
    """Training hours of the preset's chain at ``seconds`` per iteration of each stage."""
    adapt_iterations = config["adapt"]["iterations"] + config["tgaa"]["max_rounds"] * config["tgaa"]["iterations"]
    total = (config["source_only"]["iterations"] * seconds["source"] + adapt_iterations * seconds["aa_fda"]
             + config["selftrain"]["rounds"] * config["selftrain"]["iterations"] * seconds["st"])
    return total / 3600


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=str(REPO / "workflow/presets/gta5_cityscapes.yaml"))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--arch", default="deeplabv2_resnet101", choices=["deeplabv2_small", "deeplabv2_resnet101"])
    parser.add_argument("--width", type=int, default=16, help="deeplabv2_small only")
    parser.add_argument("--source-size", type=int, nargs=2, default=[1280, 720], metavar=("W", "H"))
    parser.add_argument("--crop", type=int, nargs=2, default=[1024, 512], metavar=("W", "H"))
    parser.add_argument("--target-size", type=int, nargs=2, default=[1024, 512], metavar=("W", "H"))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=4, help="generated images per domain")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"], choices=["nchw", "channels_last"])
    parser.add_argument("--project", action="store_true", help="print the preset chain's projected hours")
    parser.add_argument("--out", help="also write the table here (TSV)")
    args = parser.parse_args(argv)
    config = _config(args)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(prefix="uncerda_train_step_") as work:
        datasets = _datasets(Path(work), config, args.images)
        rows = [measure(config, datasets, stage, device, bf16, cl, args.warmup, args.repeats)
                for stage, bf16, cl in itertools.product(args.stages, [p == "bf16" for p in args.precisions],
                                                         [layout == "channels_last" for layout in args.layouts])]
    table = pd.DataFrame(rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# {device.type} ({name}), torch {torch.__version__}, {args.threads} threads, model {args.arch}, "
          f"batch {args.batch_size}, source {args.source_size} crop {args.crop}, target {args.target_size}")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.precision", 4):
        print(table.to_string(index=False))
    for (precision, cl), group in table.groupby(["precision", "channels_last"]):
        seconds = dict(zip(group["stage"], group["iteration_s"]))
        if args.project and {"source", "aa_fda", "st"} <= set(seconds):
            print(f"# projected training hours of the chain on this device ({precision}, channels_last={cl}): "
                  f"{projected_hours(config, seconds):.1f}")
        for stage in ONLINE:
            if stage in seconds and "source" in seconds:
                print(f"# {stage} iteration / source-only iteration ({precision}, channels_last={cl}): "
                      f"{seconds[stage] / seconds['source']:.2f}x (goal: at most 2.2x)")
    if args.out:
        with artifacts.atomic_path(args.out) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    return table


if __name__ == "__main__":
    main()
