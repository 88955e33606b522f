"""The training loop shared by every stage: source-only, adversarial adaptation
(round 0, target-guided rounds, +SR), self-training and the target oracle.

One iteration: a source batch (optionally translated with FDA) through the
segmentation loss; for adversarial stages a target batch whose predictions
the discriminators must take for source; for self-training a pseudo-labelled
target batch through the rectified loss; then one discriminator step.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from uncerda_core import artifacts
from uncerda_core.data.class_stats import read_class_stats
from uncerda_core.data.index import read_index, with_translated_images
from uncerda_core.data.datasets import (BatchStream, ImageSettings, IterationBatches, SegmentationDataset,
                                        normalize, resize_bilinear)
from uncerda_core.data.fda import fda_dtype, fda_translate
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.errors import UncerdaError
from uncerda_core.models import FCDiscriminator, build_model, discriminator_input, load_state
from uncerda_core.runtime import load_checkpoint, resolve_device, seed_everything, snapshot_dir, snapshot_path
from uncerda_core.train import distributed, guards, losses
from uncerda_core.train.adabn import reestimate_batchnorm, target_images
from uncerda_core.train.checkpoint import resume_path, rng_state, save_checkpoint, set_rng_state
from uncerda_core.train.online import OnlineTeacher, two_head_loss
from uncerda_core.uncertainty.equations import balanced_power

STAGES = ("source_only", "oracle", "aa", "tgaa", "st")
SOURCE_STREAM, TARGET_STREAM = 1, 2


@dataclass(frozen=True)
class StageSettings:
    """What one training stage does, resolved from the config."""

    stage: str
    iterations: int
    adversarial: bool
    lambda_adv_main: float
    lambda_adv_aux: float
    disc_input: str
    disc_ndf: int
    image_translation: bool
    fda_beta: float
    translated_root: str | None   # image translation from pre-translated source images, not FDA
    self_training: bool
    st_loss: str
    st_lambda_aux: float
    st_class_balanced: bool
    st_class_balance_max: float
    target_only: bool
    st_mode: str                # offline (pseudo labels from a folder) or online (an EMA teacher, selftrain.online)
    source_weight: float
    source_focal_gamma: float   # 0: cross-entropy on source pixels; > 0: the focal loss (Table 4)
    memory_weight: float        # MRNet's memory regularisation on target pixels (0: off; adversarial stages only)
    memory_aux_weight: float
    memory_start: int           # the first iteration (0-based) that adds the memory regularisation
    sampling: str
    chain_draws: bool           # online self-training draws source images by the chain's weights (weights CSV)
    poly_horizon: int | None
    target_bn_stats: bool   # re-estimate BatchNorm statistics on target train before writing weights

    @property
    def discriminated(self) -> bool:
        """Adversarial with a weight above 0: only then are discriminators built and trained.

        The lambda_adv = 0 control still passes its target batches through the network (BatchNorm
        sees them, as in the adversarial stage), but nothing would read a discriminator or the
        zero gradient of its loss; its weights are those of a run that computes both.
        """
        return self.adversarial and (self.lambda_adv_main != 0.0 or self.lambda_adv_aux != 0.0)

    @property
    def target_loss(self) -> bool:
        """Whether target batches carry a loss: adversarial, memory regularisation or self-training."""
        return self.discriminated or self.memory_weight > 0.0 or self.self_training

    @property
    def horizon(self) -> int:
        """Iterations over which the poly schedule decays to 0 (the stage's own by default)."""
        return self.iterations if self.poly_horizon is None else self.poly_horizon


def stage_settings(config: dict, stage: str, image_translation: bool | None = None,
                   adversarial_weight: float = 1.0, source_loss: str | None = None) -> StageSettings:
    """Settings of ``stage`` from the config.

    ``image_translation`` overrides ``adapt.image_translation`` (the Table 3
    rungs "+AA" and "+IT" differ only there); ``adversarial_weight`` scales the
    adversarial losses (0 gives the control "same fine-tuning, target batches
    through the network, no adversarial signal"); ``source_loss`` overrides
    ``adapt.source_loss`` (Table 4's focal-loss round).
    """
    settings = _stage_settings(config, stage, image_translation, adversarial_weight, source_loss)
    if settings.horizon < settings.iterations:
        raise UncerdaError(f"train.poly_horizon ({settings.horizon}) is shorter than stage {stage}'s "
                           f"{settings.iterations} iterations: the learning rate would reach 0 and the rest of the "
                           "stage would train nothing; raise poly_horizon or set it to null")
    return settings


def _stage_settings(config: dict, stage: str, image_translation: bool | None,
                    adversarial_weight: float, source_loss: str | None) -> StageSettings:
    """Every field from the config; the switches a stage turns off are set off here, by the stage.

    A field a stage does not use (the discriminator's settings without adversarial losses, the
    self-training loss outside self-training) still holds the config's value, so the dataclass has
    no defaults of its own and the schema stays the one place a default lives.
    """
    if stage not in STAGES:
        raise UncerdaError(f"unknown training stage {stage!r}; expected one of {', '.join(STAGES)}")
    adapt, st = config["adapt"], config["selftrain"]
    it = adapt["image_translation"] if image_translation is None else image_translation
    source_loss = adapt["source_loss"] if source_loss is None else source_loss
    translated = config["source"]["translated_root"] if it else None
    iterations = {"source_only": config["source_only"]["iterations"],
                  "oracle": config["ablation"]["oracle_iterations"], "aa": adapt["iterations"],
                  "tgaa": config["tgaa"]["iterations"], "st": st["iterations"]}[stage]
    adversarial = stage in ("aa", "tgaa")
    self_training = stage == "st"
    target_only = self_training and st["target_only"]
    chain_draws = self_training and st["mode"] == "online" and st["online"]["source_draws"] == "chain"
    if adversarial:
        translation = dict(image_translation=it, translated_root=translated)
    elif self_training:
        translation = dict(image_translation=it and not target_only, translated_root=None if target_only else translated)
    else:
        translation = dict(image_translation=False, translated_root=None)
    return StageSettings(
        stage=stage, iterations=iterations, adversarial=adversarial,
        lambda_adv_main=adapt["lambda_adv_main"] * adversarial_weight if adversarial else 0.0,
        lambda_adv_aux=adapt["lambda_adv_aux"] * adversarial_weight if adversarial else 0.0,
        disc_input=adapt["disc_input"], disc_ndf=adapt["disc_ndf"], fda_beta=adapt["fda_beta"], **translation,
        self_training=self_training, st_loss=st["loss"], st_lambda_aux=st["lambda_aux"],
        st_class_balanced=st["class_balanced"], st_class_balance_max=st["class_balance_max"],
        target_only=target_only, st_mode=st["mode"] if self_training else "offline",
        # Outside self-training the source loss is the whole loss: weight 1.
        source_weight=st["source_weight"] if self_training else 1.0,
        source_focal_gamma=adapt["focal_gamma"] if adversarial and source_loss == "focal" else 0.0,
        memory_weight=adapt["memory_weight"] if adversarial else 0.0, memory_aux_weight=adapt["memory_aux_weight"],
        memory_start=math.floor(adapt["memory_start"] * iterations),
        # A target-guided round draws by class, and so does online self-training when asked to draw as the
        # chain's final round did; every other stage draws source images uniformly.
        sampling=config["tgaa"]["sampling"] if stage == "tgaa" or chain_draws else "image",
        chain_draws=chain_draws,
        poly_horizon=config["train"]["poly_horizon"],
        # Only where batches alternate between the domains do the running averages mix them.
        target_bn_stats=config["train"]["target_bn_stats"] and (adversarial or (self_training and not target_only)))


def _poly(horizon: int, power: float):
    """The poly learning-rate factor ``(1 - it / horizon) ** power``, 0 from ``horizon`` on."""
    return lambda it: max(0.0, 1.0 - it / horizon) ** power


def _cacheable(table: pd.DataFrame, settings: ImageSettings) -> bool:
    """Keep decoded images in memory when they fit comfortably (the demo), never at paper scale."""
    from PIL import Image
    if not len(table):
        return False
    with Image.open(table["image"].iloc[0]) as im:
        width, height = settings.resize or im.size
    return width * height * 4 * len(table) < 1.5e9


def check_draw_inputs(settings: StageSettings, weights: str | Path | None) -> None:
    """Self-training reads a sampling-weights file exactly when it draws source images as the chain did
    (online, ``selftrain.online.source_draws: chain``): a file given to a run that would draw uniformly, or
    none given to one that should not, is refused before any work rather than ignored."""
    if not settings.self_training:
        return
    if settings.chain_draws and weights is None:
        raise UncerdaError("selftrain.online.source_draws is chain: give the chain's sampling weights CSV (--weights, "
                           "the final target-guided round's weights/tgaa_r<r>.csv), or set source_draws: uniform")
    if not settings.chain_draws and weights is not None:
        raise UncerdaError(f"{weights}: self-training draws its source images uniformly here; sampling weights are read "
                           "only with selftrain.mode: online and selftrain.online.source_draws: chain (set both, or "
                           "drop --weights)")


def read_sampling_weights(path: str | Path, names: list[str]) -> np.ndarray:
    """Each source image's draw probability from a weights CSV (Eq. 5's output), in ``names``' order."""
    table = pd.read_csv(path, dtype={"name": str})
    if "probability" not in table or "name" not in table:
        raise UncerdaError(f"{path}: sampling weights need 'name' and 'probability' columns")
    by_name = dict(zip(table["name"], table["probability"]))
    missing = [n for n in names if n not in by_name]
    if missing:
        raise UncerdaError(f"{path}: no weight for {len(missing)} source images, e.g. {missing[0]} "
                           "(weights computed for another source set?)")
    return np.array([by_name[n] for n in names], dtype=np.float64)


def crop_focus_weights(stats_path: str | Path, names: list[str], sk: list[int], balance: float) -> np.ndarray:
    """Per image, the weight of each class for crop-level sampling: Eq. 4's w_c(x) over S_k."""
    stats = read_class_stats(stats_path)
    stats_names, stats_counts = stats["name"].tolist(), stats[list(CLASS_NAMES)].to_numpy(dtype=np.int64)
    row = {name: i for i, name in enumerate(stats_names)}
    missing = [n for n in names if n not in row]
    if missing:
        raise UncerdaError(f"{stats_path}: no class statistics for {len(missing)} source images, e.g. "
                           f"{missing[0]} (computed for another source set?)")
    counts = stats_counts[[row[n] for n in names]].astype(np.float64)
    in_sk = np.zeros(counts.shape[1], dtype=bool)
    in_sk[sk] = True
    return np.where(in_sk[None, :], balanced_power(counts, balance), 0.0)


def warn_unequal_grids(stage: str, source_size: tuple[int, int], target_size: tuple[int, int],
                       source_grid: tuple[int, int], target_grid: tuple[int, int]) -> bool:
    """Warn (stderr) when the two domains reach the discriminator at different output grids.

    The discriminator then sees each domain's borders (its zero padding) at other cells, a cue to the
    domain that has nothing to do with the segmentation; on small maps it is enough to separate the
    domains perfectly. Measured on the demo: source crops of 96x48 against 128x64 target images gave
    1x3 against 2x4 cells, discriminator losses near 0.001 and +AA at 1-11 mIoU. Sizes are (H, W).
    Returns whether it warned.
    """
    if source_grid == target_grid:
        return False
    print(f"[{stage}] warning: the discriminator sees source inputs of {source_size[0]}x{source_size[1]} "
          f"pixels ({source_grid[0]}x{source_grid[1]} output cells) and target inputs of "
          f"{target_size[0]}x{target_size[1]} ({target_grid[0]}x{target_grid[1]} cells), H x W: it can tell "
          "the domains apart by their size and borders alone, and on small inputs it does. Make the source's "
          "training input (source.crop, or source.resize) the size of the target's, as the paper presets do.",
          file=sys.stderr)
    return True


def settings_digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class NonFiniteLoss(UncerdaError):
    pass


def self_training_loss(settings: StageSettings, main_logits: torch.Tensor, aux_logits: torch.Tensor,
                       labels: torch.Tensor, num_classes: int, lambda_seg_aux: float, *,
                       stride: int | None = None) -> torch.Tensor:
    """The loss on a pseudo-labelled target batch, as ``selftrain.loss`` says; ``stride``: the
    network's output stride, to place the logits on the labels' pixels."""
    if settings.st_loss == "rectified":
        return losses.rectified_loss(main_logits, aux_logits, labels, settings.st_lambda_aux, stride=stride)
    if settings.st_loss == "rectified_seguncertainty":
        weight = (losses.small_class_weights(labels, num_classes, settings.st_class_balance_max)
                  if settings.st_class_balanced else None)
        return losses.rectified_loss_seguncertainty(main_logits, aux_logits, labels, settings.st_lambda_aux, weight,
                                                    stride=stride)
    if settings.st_loss == "ce":
        return (losses.segmentation_loss(main_logits, labels, stride=stride)
                + lambda_seg_aux * losses.segmentation_loss(aux_logits, labels, stride=stride))
    raise UncerdaError(f"selftrain.loss must be rectified, rectified_seguncertainty or ce, got {settings.st_loss!r}")


def build_optimizer(param_groups: tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]],
                    train_cfg: dict) -> torch.optim.Optimizer:
    """The network's optimiser from the config's ``train`` section, as ``train.optimizer`` says.

    ``param_groups``: (backbone, heads), as :meth:`DeepLabV2.param_groups` gives them; their
    learning rates are ``lr * backbone_lr_mult`` and ``lr * head_lr_mult``, with
    ``weight_decay`` on both. ``sgd``: SGD with ``momentum`` (the paper's recipe); ``adamw``:
    AdamW with ``adam_betas`` (decoupled weight decay). The poly schedule scales either.
    """
    backbone, heads = param_groups
    lr = train_cfg["lr"]
    groups = [{"params": backbone, "lr": lr * train_cfg["backbone_lr_mult"]},
              {"params": heads, "lr": lr * train_cfg["head_lr_mult"]}]
    name = train_cfg["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=train_cfg["momentum"], weight_decay=train_cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(train_cfg["adam_betas"]),
                                 weight_decay=train_cfg["weight_decay"])
    raise UncerdaError(f"train.optimizer must be sgd or adamw, got {name!r}")


def loss_row(names: list[str], parts: dict[str, list[str]], values: torch.Tensor, iteration: int,
             lr: float) -> dict[str, float]:
    """One row of losses.csv from the device values of one iteration (one host read).

    ``names`` label ``values``; names starting with ``_`` are parts only: ``parts``
    maps a column (``total``, ``d_aux``, ...) to the parts it sums, in double
    precision on the host. ``total`` comes last.
    """
    got = dict(zip(names, values.tolist()))
    row = {"iteration": iteration, "lr": lr}
    row.update({k: v for k, v in got.items() if not k.startswith("_")})
    for column, summed in sorted(parts.items(), key=lambda kv: kv[0] == "total"):
        row[column] = sum(got[n] for n in summed)
    return row


def _tidy_snapshots(out: Path, start: int) -> None:
    """Snapshots beside ``out`` belong to the run that writes it: a fresh run (``start`` 0) drops an
    older run's; the temporaries of a write a kill interrupted (never complete) go either way."""
    folder = snapshot_dir(out)
    if not folder.is_dir():
        return
    stale = list(folder.glob(".iter_*.pt.*.tmp*")) + (list(folder.glob("iter_*.pt")) if start == 0 else [])
    for path in stale:
        path.unlink(missing_ok=True)


def run_training(config: dict, settings: StageSettings, out: str | Path, *, seed: int,
                 source_dataset: str, source_index: str | Path, target_index: str | Path | None = None,
                 init: str | Path | None = None, weights: str | Path | None = None,
                 class_stats: str | Path | None = None, sk: list[int] | None = None,
                 pseudo_dir: str | Path | None = None, losses_csv: str | Path | None = None,
                 stop_after: int | None = None, progress: bool = True,
                 keep_snapshots: bool = False) -> dict[str, Any]:
    """Train one stage and write its checkpoint to ``out``; resumes from ``<out>.resume.pt``.

    ``stop_after`` ends the run early (after that iteration's checkpoint), as a
    kill would: used to test resuming. ``keep_snapshots``: also keep the weights every
    ``selection.keep_every`` iterations (``train.checkpoint_every`` when null) and at the
    last, as ``<dir of out>/snapshots/iter_<NNNNNN>.pt``, the candidates of checkpoint
    selection. A resumed run keeps the snapshots already written (it rewrites, identically,
    only those after its resume point).
    """
    out = Path(out)
    check_draw_inputs(settings, weights)
    train_cfg = config["train"]
    torch.set_num_threads(config["threads"])
    dist_info, device = distributed.setup(resolve_device(config["device"]))
    main_process = dist_info.is_main
    # lock the stage's outputs (another live trainer: refuse), then drop what a killed run left
    guards.take_outputs(out, main_process, resume_path(out), losses_csv)
    use_amp = device.type == "cuda" and train_cfg["bf16"]
    # NHWC activations: faster on GPUs and, measured on the demo network, on the CPU too (BENCHMARKS.md)
    channels_last = train_cfg["channels_last"]
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: the autotuned kernels are reused every step
    seed_everything(seed)

    model = build_model(config["model"])
    if init is not None:
        report = load_state(model, init)
        if main_process:
            print(f"[{settings.stage}] initial weights from {init}: {report.summary()}", file=sys.stderr)
    model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    stride = model.output_stride   # the unwrapped network's (DDP below hides its attributes)
    # Online self-training: the teacher starts as a copy of the initial student (its state resumes below). Under
    # DDP each process labels its own batches, and every refit of the GMM weights sums the processes' records.
    teacher = (OnlineTeacher(model, config["selftrain"]["online"], config["model"]["num_classes"], seed,
                             rank=dist_info.rank,
                             sum_across=(lambda counts: distributed.sum_counts(dist_info, counts, device))
                             if dist_info.enabled else None)
               if settings.st_mode == "online" else None)
    optimizer = build_optimizer(model.param_groups(), train_cfg)
    schedule = _poly(settings.horizon, train_cfg["power"])
    optimizers: dict[str, torch.optim.Optimizer] = {"model": optimizer}
    schedulers = {"model": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)}
    discriminators: dict[str, torch.nn.Module] = {}
    if settings.discriminated:
        num_classes = config["model"]["num_classes"]
        for head in ("aux", "main"):
            disc = FCDiscriminator(num_classes, ndf=settings.disc_ndf).to(device)
            discriminators[head] = disc
            opt = torch.optim.Adam(disc.parameters(), lr=config["adapt"]["disc_lr"],
                                   betas=tuple(config["adapt"]["disc_betas"]))
            optimizers[f"disc_{head}"] = opt
            schedulers[f"disc_{head}"] = torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    # --- data ---------------------------------------------------------------
    source_table = read_index(source_index)
    if settings.translated_root is not None:
        source_table = with_translated_images(source_table, settings.translated_root)
    source_settings = ImageSettings.from_config(config["source"] if settings.stage != "oracle" else config["target"],
                                                train=True, flip=train_cfg["flip"])
    source_set = SegmentationDataset(source_dataset, source_table, source_settings, label_source="index",
                                     cache=train_cfg["num_workers"] == 0 and _cacheable(source_table, source_settings))
    probabilities = read_sampling_weights(weights, list(source_table["name"])) if weights else None
    focus = None
    if settings.sampling == "crop" and weights:
        if class_stats is None:
            raise UncerdaError("crop-level sampling needs the source class statistics")
        sk = list(range(config["model"]["num_classes"])) if sk is None else sk  # +SR: every class
        if source_settings.crop is None:
            raise UncerdaError("tgaa.sampling: crop needs source.crop to be set (crops are centred on S_k pixels)")
        focus = crop_focus_weights(class_stats, list(source_table["name"]), sk, config["tgaa"]["balance"])
    shard = dict(rank=dist_info.rank, world_size=dist_info.world_size)
    source_stream = BatchStream(len(source_set), train_cfg["batch_size"], seed, SOURCE_STREAM, probabilities, focus,
                                **shard)

    target_set = target_stream = None
    if settings.adversarial or settings.self_training or settings.image_translation:
        if target_index is None:
            raise UncerdaError(f"stage {settings.stage} needs the target index")
        target_table = read_index(target_index)
        target_settings = ImageSettings.from_config(config["target"], train=True, flip=train_cfg["flip"])
        online = settings.st_mode == "online"
        if settings.self_training and not online and pseudo_dir is None:
            raise UncerdaError("self-training needs a pseudo-label folder (or selftrain.mode: online)")
        label_source = Path(pseudo_dir) if settings.self_training and not online else None
        if online and settings.target_only and config["selftrain"]["online"]["classmix"]:
            raise UncerdaError("selftrain.mode online with classmix pastes source images into target images: "
                               "it cannot run with selftrain.target_only; set one of them off")
        target_set = SegmentationDataset("cityscapes", target_table, target_settings, label_source=label_source,
                                         cache=train_cfg["num_workers"] == 0 and _cacheable(target_table, target_settings))
        target_stream = BatchStream(len(target_set), train_cfg["batch_size"], seed, TARGET_STREAM, **shard)

    # --- resume -------------------------------------------------------------
    keep_every = config["selection"]["keep_every"] or train_cfg["checkpoint_every"]
    digest_payload = {"settings": asdict(settings), "config": {k: config[k] for k in ("model", "train")},
                      "seed": seed, "init": str(init), "weights": str(weights), "pseudo": str(pseudo_dir)}
    if keep_snapshots:   # a resume state from a run that kept other snapshots (or none) is not used
        digest_payload["keep_snapshots_every"] = keep_every
    digest = settings_digest(digest_payload)
    start, rows = 0, []
    resumed: int | None = None   # the iteration of a resume file this run continues from
    resume = resume_path(out)
    if resume.exists():
        state = load_checkpoint(resume)
        if state.get("digest") != digest:
            print(f"[{settings.stage}] {resume} was written with other settings: starting over", file=sys.stderr)
        else:
            model.load_state_dict(state["model"])
            for name, disc in discriminators.items():
                disc.load_state_dict(state["discriminators"][name])
            for name, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            for name, sched in schedulers.items():
                sched.load_state_dict(state["schedulers"][name])
            set_rng_state(state["rng"])
            if teacher is not None:
                teacher.load_state_dict(state["teacher"], rank=dist_info.rank)
            start, rows = int(state["iteration"]), list(state["losses"])
            resumed = start
            print(f"[{settings.stage}] resuming from {resume} at iteration {start}", file=sys.stderr)
    if main_process:
        _tidy_snapshots(out, start)

    # Under torchrun every process trains a replica; gradients are averaged by DDP.
    net = distributed.wrap(model, dist_info, device)
    disc_nets = {head: distributed.wrap(d, dist_info, device) for head, d in discriminators.items()}

    record = artifacts.provenance(f"train:{settings.stage}", config=config, seed=seed, inputs={
        "init": init, "weights": weights, "source_index": source_index, "target_index": target_index,
        "pseudo_labels": Path(pseudo_dir) / "provenance.json" if pseudo_dir else None},
        extra={"settings": asdict(settings)})

    bn_images = target_images(config, target_index) if settings.target_bn_stats and main_process else None

    def with_target_statistics(net_module: torch.nn.Module, iteration: int) -> torch.nn.Module:
        """``net_module`` with BatchNorm statistics of the target train images (settings.target_bn_stats)."""
        reestimate_batchnorm(net_module, bn_images, batch_size=train_cfg["batch_size"], device=device,
                             normalization=train_cfg["normalize"], progress=False,
                             what=f"stage {settings.stage} at iteration {iteration}")
        return net_module

    def teacher_state() -> dict[str, Any]:
        """The teacher's part of a checkpoint; every process takes part (each one's stream and record travel)."""
        if teacher is None:
            return {}
        processes = distributed.gather_objects(dist_info, teacher.process_state()) if dist_info.enabled else None
        return {"teacher": teacher.state_dict(processes)}

    def snapshot(iteration: int, teacher_part: dict[str, Any]) -> dict[str, Any]:
        return {"model": model.state_dict(),
                "discriminators": {k: d.state_dict() for k, d in discriminators.items()},
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
                "iteration": iteration, "rng": rng_state(), "losses": rows, "digest": digest,
                "stage": settings.stage, "settings": asdict(settings), "config": config,
                "model_config": config["model"], "provenance": record,
                **teacher_part}

    def keep_snapshot(iteration: int) -> None:
        """The weights alone (no optimiser state): enough to evaluate, and to start a later stage from."""
        if keep_snapshots and main_process and (iteration % keep_every == 0 or iteration == settings.iterations):
            # Before the last iteration on a copy: the training goes on with the running averages it has.
            # The last snapshot is kept after the loop, from the model re-estimated once for the checkpoint.
            last = iteration == settings.iterations
            kept = (with_target_statistics(copy.deepcopy(model), iteration) if bn_images is not None and not last
                    else model)
            save_checkpoint(snapshot_path(out, iteration), {
                "model": kept.state_dict(), "iteration": iteration, "stage": settings.stage,
                "settings": asdict(settings), "config": config, "model_config": config["model"],
                "provenance": record})

    def write_losses() -> None:
        if losses_csv is not None and main_process:
            with artifacts.atomic_path(losses_csv) as tmp:
                pd.DataFrame(rows).to_csv(tmp, index=False)

    def loader(stream: BatchStream, dataset: SegmentationDataset):
        batches = IterationBatches(dataset, stream, start, settings.iterations)
        return iter(torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False,
                                                num_workers=train_cfg["num_workers"], pin_memory=on_gpu))

    source_batches = None if settings.target_only else loader(source_stream, source_set)
    target_batches = loader(target_stream, target_set) if target_set is not None else None
    norm = train_cfg["normalize"]
    num_classes = config["model"]["num_classes"]

    def to_device(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device, non_blocking=on_gpu)  # batches come pinned on the GPU

    def prepare(images: torch.Tensor) -> torch.Tensor:
        images = normalize(to_device(images), norm)
        return images.contiguous(memory_format=torch.channels_last) if channels_last else images

    bar = tqdm(total=settings.iterations, initial=start, desc=settings.stage, disable=not (progress and main_process),
               file=sys.stderr, mininterval=2.0, dynamic_ncols=True)
    log_every = max(1, min(50, settings.iterations // 20))
    # The losses stay on the device between log points: reading one back waits for the GPU. A
    # non-finite value is remembered (first iteration and its values) and reported at the next
    # read-back, which always precedes a checkpoint, so no checkpoint holds a diverged model.
    first_bad = torch.zeros((), dtype=torch.long, device=device)
    bad_values: torch.Tensor | None = None
    divergence = guards.DivergenceGuard(config["model"]["num_classes"])
    t0 = time.time()
    # Ctrl-C: one line that says where the run stopped and where its rerun resumes, exit 130 (the CLI);
    # every file it leaves is whole (atomic writes), the resume file as the last checkpoint wrote it.
    progress = guards.TrainingProgress(settings.stage, settings.iterations, resume, done=start, resumable=resumed)
    try:
        for it in range(start, settings.iterations):
            model.train()
            src = next(source_batches) if source_batches is not None else None
            tgt = next(target_batches) if target_batches is not None else None
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            for disc in discriminators.values():
                disc.requires_grad_(False)
            lr_now = optimizer.param_groups[0]["lr"]
            logged: dict[str, torch.Tensor] = {}   # this iteration's losses, on the device
            parts: dict[str, list[str]] = {}       # row entries that are sums of logged values, e.g. total
            tgt_image = to_device(tgt["image"]) if tgt is not None else None

            if src is not None:
                x_s = to_device(src["image"])
                if settings.image_translation and settings.translated_root is None:   # FDA, in the loop
                    x_t_raw = resize_bilinear(tgt_image, x_s.shape[-2:])
                    x_s = fda_translate(x_s, x_t_raw, settings.fda_beta, dtype=fda_dtype(device)).clamp(0, 255)
                x_s = prepare(x_s)
                y_s = to_device(src["label"])
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    aux_s, main_s = net(x_s)
                    seg_main = losses.segmentation_loss(main_s.float(), y_s, stride=stride,
                                                        focal_gamma=settings.source_focal_gamma)
                    seg_aux = losses.segmentation_loss(aux_s.float(), y_s, stride=stride,
                                                       focal_gamma=settings.source_focal_gamma)
                    loss_src = settings.source_weight * (seg_main + train_cfg["lambda_seg_aux"] * seg_aux)
                loss_src.backward()
                logged.update(seg=seg_main, seg_aux=seg_aux, _source=loss_src)
                parts["total"] = ["_source"]

            pred_t = None
            if tgt is not None and settings.adversarial and not settings.target_loss:
                # lambda_adv = 0: the batch goes through the network in training mode (BatchNorm's running
                # averages see it) and nothing else; its loss would be 0 and its gradient all zeros.
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    net(prepare(tgt_image))
            elif tgt is not None and (settings.adversarial or settings.self_training):
                x_t = prepare(tgt_image)
                if teacher is not None:   # online: the teacher labels the batch; the student sees it mixed
                    pseudo, pixel_w, _ = teacher.label(x_t, tuple(x_t.shape[-2:]), stride, it)
                    raw_s, y_raw_s = (to_device(src["image"]), to_device(src["label"])) if src is not None else (None, None)
                    mixed, y_online, w_online = teacher.mixed(raw_s, y_raw_s, tgt_image, pseudo, pixel_w)
                    x_t = prepare(mixed)
                    logged["pl_weight"] = pixel_w.mean()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    aux_t, main_t = net(x_t)
                    aux_t, main_t = aux_t.float(), main_t.float()
                    loss_t = aux_t.sum() * 0.0
                    if settings.adversarial:
                        size = x_t.shape[-2:]
                        pred_t = {"aux": losses.upsample(aux_t, size, stride), "main": losses.upsample(main_t, size, stride)}
                    if settings.discriminated:
                        adv = {h: losses.adversarial_loss(discriminators[h](discriminator_input(pred_t[h], settings.disc_input)),
                                                          losses.SOURCE_LABEL) for h in ("aux", "main")}
                        loss_t = loss_t + settings.lambda_adv_main * adv["main"] + settings.lambda_adv_aux * adv["aux"]
                        logged.update(adv_main=adv["main"], adv_aux=adv["aux"])
                    if settings.memory_weight > 0.0:
                        # the term is logged from the start (0 before memory_start) so the losses keep one set of columns
                        memory = losses.memory_regularisation(pred_t["main"], pred_t["aux"], settings.memory_aux_weight)
                        on = float(it >= settings.memory_start)
                        loss_t = loss_t + on * settings.memory_weight * memory
                        logged.update(memory=memory * on)
                    if settings.self_training and teacher is not None:
                        st = two_head_loss(main_t, aux_t, y_online, w_online, train_cfg["lambda_seg_aux"], stride)
                        loss_t = loss_t + st
                        logged.update(st=st)
                    elif settings.self_training:
                        y_t = to_device(tgt["label"])
                        st = self_training_loss(settings, main_t, aux_t, y_t, num_classes, train_cfg["lambda_seg_aux"],
                                                stride=stride)
                        loss_t = loss_t + st
                        logged.update(st=st)
                loss_t.backward()
                logged["_target"] = loss_t
                parts["total"] = parts.get("total", []) + ["_target"]
                if teacher is not None and teacher.settings["mic"]:
                    # MIC: the teacher's labels and weights of the target batch, learnt from its masked image
                    x_m = teacher.masked(tgt_image, prepare)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                        aux_m, main_m = net(x_m)
                        mic = teacher.settings["mic_weight"] * two_head_loss(main_m, aux_m, pseudo, pixel_w,
                                                                             train_cfg["lambda_seg_aux"], stride)
                    mic.backward()
                    logged["_mic"] = mic
                    logged["mic"] = mic.detach()
                    parts["total"].append("_mic")

            if discriminators:
                size = x_s.shape[-2:]
                pred_s = {"aux": losses.upsample(aux_s.detach().float(), size, stride),
                          "main": losses.upsample(main_s.detach().float(), size, stride)}
                for head, disc in disc_nets.items():
                    discriminators[head].requires_grad_(True)
                    # One backward per forward, so DDP reduces each pass (and the two may differ in size).
                    out_src = disc(discriminator_input(pred_s[head], settings.disc_input))
                    d_src = losses.adversarial_loss(out_src, losses.SOURCE_LABEL) / 2
                    d_src.backward()
                    out_tgt = disc(discriminator_input(pred_t[head].detach(), settings.disc_input))
                    d_tgt = losses.adversarial_loss(out_tgt, losses.TARGET_LABEL) / 2
                    d_tgt.backward()
                    if it == start and head == "main" and main_process:
                        warn_unequal_grids(settings.stage, tuple(size), tuple(pred_t[head].shape[-2:]),
                                           tuple(out_src.shape[-2:]), tuple(out_tgt.shape[-2:]))
                    logged.update({f"_d_{head}_src": d_src, f"_d_{head}_tgt": d_tgt})
                    parts[f"d_{head}"] = [f"_d_{head}_src", f"_d_{head}_tgt"]

            values = torch.stack([v.detach().float() for v in logged.values()])
            newly_bad = (first_bad == 0) & ~torch.isfinite(values).all()
            first_bad = torch.where(newly_bad, torch.full_like(first_bad, it + 1), first_bad)
            bad_values = values if bad_values is None else torch.where(newly_bad, values, bad_values)

            for opt in optimizers.values():
                opt.step()
            for sched in schedulers.values():
                sched.step()
            if teacher is not None:
                teacher.update(model, it)
                # The students' parameters are one, their running statistics each their own batches' since DDP's
                # last broadcast: the teachers take rank 0's, so every process labels with one teacher.
                distributed.broadcast_buffers(dist_info, teacher.model)

            done = progress.done = it + 1
            log_now = done % log_every == 0 or done == settings.iterations
            checkpoint_now = done % train_cfg["checkpoint_every"] == 0 and done < settings.iterations
            if log_now or checkpoint_now:
                bad_at = int(first_bad)
                if not distributed.all_true(dist_info, bad_at == 0, device):
                    detail = "in another process"
                    if bad_at:
                        bad = loss_row(list(logged), parts, bad_values, bad_at, lr_now)
                        detail = (f"at iteration {bad_at} ("
                                  + ", ".join(f"{k}={v}" for k, v in bad.items() if not math.isfinite(v)) + ")")
                    raise NonFiniteLoss(f"stage {settings.stage}: non-finite loss {detail}; "
                                        f"the last good checkpoint is kept at {resume}. {guards.DIVERGENCE_HINT}")
            if log_now:
                row = loss_row(list(logged), parts, values, done, lr_now)
                rows.append(row)
                if not distributed.all_true(dist_info, divergence.observe(row), device):
                    raise divergence.error(settings.stage, done, row, resume)
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k not in ("iteration", "lr")}, refresh=False)
            bar.update(1)
            if done < settings.iterations:   # the last is kept after the loop, with the final weights
                keep_snapshot(done)   # before the resume state: a kill between the two rewrites it on resume
            if checkpoint_now:
                teacher_part = teacher_state()
                with guards.interrupts_deferred():   # what a Ctrl-C prints names the file's iteration
                    if main_process:
                        save_checkpoint(resume, snapshot(done, teacher_part))  # the losses so far travel inside it
                    progress.resumable = done
                distributed.barrier(dist_info)
                if stop_after is not None and done >= stop_after:
                    bar.close()
                    return {"stopped_at": done}
        bar.close()
        elapsed = time.time() - t0
        record["train_seconds"] = round(elapsed, 1)
        write_losses()
        teacher_part = teacher_state()
        if main_process:
            if bn_images is not None:
                with_target_statistics(model, settings.iterations)
            keep_snapshot(settings.iterations)
            with guards.interrupts_deferred():
                save_checkpoint(out, snapshot(settings.iterations, teacher_part))
                resume.unlink(missing_ok=True)
                progress.resumable, progress.written = None, out
            print(f"[{settings.stage}] {settings.iterations - start} iterations in {elapsed:.0f} s -> {out}",
                  file=sys.stderr)
        distributed.barrier(dist_info)
        distributed.cleanup(dist_info)
        return {"iterations": settings.iterations, "seconds": elapsed}
    except KeyboardInterrupt:
        bar.close()
        raise progress.interrupted() from None
