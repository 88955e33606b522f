"""Online self-training's pieces (``selftrain.mode: online``): an exponential-moving-average teacher, ClassMix,
DACS's strong augmentation and the pixel weights of the pseudo-labelled target pixels.

Offline self-training (the paper's) labels the target set once from a frozen model. Online self-training (DACS,
DAFormer, MIC) labels each target batch with a teacher that follows the student, pastes half of a source image's
classes into the target image, and weights the target pixels by how far the teacher is to be trusted: DACS by
one confidence threshold, UncerDA's reading by the per-class two-component mixture of Eq. 6 on the teacher's
entropies, refitted as training goes on a bounded record of its recent entropies. Each function here is pure
(tensors in, tensors out, randomness from the generator given); the training loop composes them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from uncerda_core.data.labels import IGNORE
from uncerda_core.errors import UncerdaError
from uncerda_core.pseudo.gmm import GMMFit, fit_gmm_1d, log_components, single_mode
from uncerda_core.uncertainty.codes import N_CODES, code_values


def ema_decay(iteration: int, alpha: float) -> float:
    """The teacher's decay after ``iteration`` student updates (0-based): ``min(1 - 1/(iteration + 1), alpha)``.

    Iteration 0 gives 0, so the first update makes the teacher a copy of the student; the decay then rises
    towards ``alpha`` (0.99 in DACS and DAFormer), so an early teacher is not an average over a student that
    has barely moved.
    """
    return min(1.0 - 1.0 / (iteration + 1), alpha)


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    """``teacher = decay * teacher + (1 - decay) * student`` for every parameter; buffers (BatchNorm's running
    statistics) are copied from the student, whose statistics are those of the data the two see."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


def classmix_masks(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ClassMix (Olsson et al., WACV 2021) as DACS uses it: per source image, half of the classes its labels
    hold (rounded up; unlabelled pixels are no class) are drawn at random, and the mask is True on their
    pixels. (B, H, W) long labels -> (B, H, W) bool, drawn on the CPU generator ``generator``."""
    masks = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for b in range(labels.shape[0]):
        classes = torch.unique(labels[b])
        classes = classes[classes != IGNORE]
        if classes.numel() == 0:
            continue
        keep = math.ceil(classes.numel() / 2)
        chosen = classes[torch.randperm(classes.numel(), generator=generator)[:keep].to(classes.device)]
        masks[b] = torch.isin(labels[b], chosen)
    return masks


def mix(mask: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The source where ``mask`` (B, H, W) is True, the target elsewhere; images (B, C, H, W) or maps (B, H, W)."""
    m = mask[:, None] if source.dim() == mask.dim() + 1 else mask
    return torch.where(m, source, target)


def confidence_weights(max_prob: torch.Tensor, threshold: float) -> torch.Tensor:
    """DACS's pixel weight: the share of the batch's pixels whose top probability reaches ``threshold`` (0.968),
    the same for every pixel. (B, H, W) -> (B, H, W)."""
    share = (max_prob >= threshold).float().mean()
    return share.expand_as(max_prob).clone()


def posterior_table(fit: GMMFit, values: np.ndarray) -> np.ndarray:
    """Eq. 6's posterior of the certain (lower-mean) component at each entropy of ``values``, made non-increasing
    in the entropy: a pixel more certain than another never weighs less (two Gaussians can cross twice, and
    the plain posterior would rise again far above the uncertain mean or fall near 0; the offline selection
    keeps one interval from 0 for the same reason). Returns (len(values),) float in [0, 1]."""
    v = np.asarray(values, dtype=np.float64)
    lc = log_components(v, fit.weights, fit.means, fit.stds ** 2)
    post = np.exp(lc[0] - np.logaddexp(lc[0], lc[1]))
    post[v > fit.means[1]] = 0.0                        # above the uncertain mean: never trusted
    return np.maximum.accumulate(post[::-1])[::-1]      # the largest posterior at any entropy at least as high


class EntropyRecord:
    """The teacher's recent entropies per predicted class, bounded: each class keeps its last ``size`` values
    (as float16 codes) in a ring, fed with at most ``per_step`` pixels of each class per batch (a uniform
    subsample, so one batch cannot flush a class's record). Refitting Eq. 6 on it every few iterations follows
    the teacher as it improves, at a cost and memory independent of the length of training.
    """

    def __init__(self, num_classes: int, size: int, per_step: int) -> None:
        self.codes = np.zeros((num_classes, size), dtype=np.uint16)
        self.filled = np.zeros(num_classes, dtype=np.int64)   # values ever pushed per class (ring position)
        self.size, self.per_step = size, per_step

    def push(self, pred: np.ndarray, entropy_codes: np.ndarray, generator: torch.Generator) -> None:
        """Add the pixels of one batch: predicted classes and their entropy codes (same shape); the subsample
        is drawn from ``generator``."""
        pred, entropy_codes = pred.ravel(), entropy_codes.ravel()
        for c in np.unique(pred):
            values = entropy_codes[pred == c]
            if values.size > self.per_step:
                values = values[torch.randperm(values.size, generator=generator)[:self.per_step].numpy()]
            slots = (self.filled[c] + np.arange(values.size)) % self.size
            self.codes[c, slots] = values
            self.filled[c] += values.size

    def histogram(self, c: int) -> np.ndarray:
        """(N_CODES,) counts of class ``c``'s recorded codes."""
        held = self.codes[c, :min(self.filled[c], self.size)]
        return np.bincount(held, minlength=N_CODES)

    def histograms(self) -> np.ndarray:
        """(C, N_CODES) counts of every class's recorded codes, int64."""
        return np.stack([self.histogram(c) for c in range(self.codes.shape[0])]).astype(np.int64)

    def state_dict(self) -> dict:
        return {"codes": torch.from_numpy(self.codes.astype(np.int32)), "filled": torch.from_numpy(self.filled)}

    def load_state_dict(self, state: dict) -> None:
        self.codes = state["codes"].numpy().astype(np.uint16)
        self.filled = state["filled"].numpy().astype(np.int64)


def fit_weight_tables(histograms: np.ndarray, min_pixels: int) -> np.ndarray:
    """Eq. 6 refitted on every class's recorded entropies, (C, N_CODES) code counts
    (:meth:`EntropyRecord.histograms`): (C, N_CODES) weight per entropy code (:func:`posterior_table`).
    A class with fewer than ``min_pixels`` recorded values gets 0 (no evidence yet, as the offline selection
    gives it no labels); a class whose record shows one mode gets 1 (nothing to separate: every pixel kept,
    as the offline selection does)."""
    values = code_values()
    tables = np.zeros(histograms.shape, dtype=np.float32)
    for c, hist in enumerate(histograms):
        if hist.sum() < min_pixels:
            continue
        if np.count_nonzero(hist) == 1:
            tables[c] = 1.0
            continue
        fit = fit_gmm_1d(values, hist)
        tables[c] = 1.0 if single_mode(fit) else posterior_table(fit, values)
    return tables


def gmm_pixel_weights(tables: torch.Tensor, pred: torch.Tensor, entropy_codes: torch.Tensor) -> torch.Tensor:
    """Each pixel's weight looked up in its predicted class's table: (C, N_CODES) tables, (B, H, W) classes and
    entropy codes -> (B, H, W) float."""
    return tables[pred.long(), entropy_codes.long()]


def entropy_codes(prob: torch.Tensor) -> torch.Tensor:
    """Eq. 2's normalised entropy of (B, C, H, W) probabilities as float16 codes (B, H, W), int64: the same
    quantisation as the offline maps, so records and tables share one axis."""
    p = prob.float()
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1) / math.log(p.shape[1])
    ent = (ent.clamp(0.0, 1.0) + 0.0).to(torch.float16)   # + 0.0 turns -0.0 (a one-hot pixel) into +0.0
    return ent.view(torch.int16).to(torch.int64) & 0xFFFF


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean over all pixels of w * CE`` (pixels labelled 255 add 0 but count), as DACS averages its mixed loss:
    the weight, not a renormalisation, says how much the batch's target pixels count."""
    ce = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
    return (weights * ce).mean()


def two_head_loss(main: torch.Tensor, aux: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                  lambda_aux: float, stride: int) -> torch.Tensor:
    """:func:`weighted_cross_entropy` of the main head plus ``lambda_aux`` times the aux head's, both heads' logits
    placed on the labels' pixels (``losses.upsample`` at output stride ``stride``): the mixed batch's loss and
    MIC's."""
    from uncerda_core.train.losses import upsample
    size = labels.shape[-2:]
    return (weighted_cross_entropy(upsample(main.float(), size, stride), labels, weights)
            + lambda_aux * weighted_cross_entropy(upsample(aux.float(), size, stride), labels, weights))


def kernel_size(side: int) -> int:
    """DACS's blur kernel for an image side: a tenth of it rounded up, minus one when that is even (51 for 512)."""
    k = math.ceil(0.1 * side)
    return k if k % 2 == 1 else max(1, k - 1)


def strong_augment(images: torch.Tensor, generator: torch.Generator, jitter: float, jitter_p: float,
                   blur_p: float, blur_sigma: tuple[float, float]) -> torch.Tensor:
    """DACS's augmentation of a mixed batch (0-255 RGB, (B, 3, H, W)), one draw for the batch: with probability
    ``jitter_p`` a colour jitter (brightness, contrast and saturation factors uniform in [1 - jitter, 1 + jitter],
    hue shift uniform in [-jitter, jitter] of the hue circle, as torchvision's ColorJitter reads it), then with probability ``blur_p`` a Gaussian
    blur with sigma uniform in ``blur_sigma`` and a kernel a tenth of each side. Labels are untouched."""
    from torchvision.transforms.v2 import functional as TF

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    out = images / 255.0
    if float(torch.rand((), generator=generator)) < jitter_p:
        out = TF.adjust_brightness(out, uniform(1 - jitter, 1 + jitter))
        out = TF.adjust_contrast(out, uniform(1 - jitter, 1 + jitter))
        out = TF.adjust_saturation(out, uniform(1 - jitter, 1 + jitter))
        out = TF.adjust_hue(out, uniform(-min(jitter, 0.5), min(jitter, 0.5)))
    if float(torch.rand((), generator=generator)) < blur_p:
        sigma = uniform(*blur_sigma)
        out = TF.gaussian_blur(out, [kernel_size(out.shape[-1]), kernel_size(out.shape[-2])], [sigma, sigma])
    return (out.clamp(0.0, 1.0) * 255.0).to(images.dtype)


def mic_masks(shape: tuple[int, int, int], block: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """MIC's (Hoyer et al., CVPR 2023) block masks: a grid of round(H / block) x round(W / block) cells (at least
    one each way), each kept when a uniform draw exceeds ``ratio`` (so about ``ratio`` of them are masked),
    stretched to (B, 1, H, W) by nearest neighbour: 1 kept, 0 masked."""
    b, h, w = shape
    cells = torch.rand((b, 1, max(1, round(h / block)), max(1, round(w / block))), generator=generator)
    return F.interpolate((cells > ratio).float(), size=(h, w), mode="nearest")


class OnlineTeacher:
    """The teacher side of one online self-training run: the EMA copy of the student, the random streams of
    mixing and augmentation, and (gmm weights) the entropy record and its weight tables. Its state travels in
    the resume checkpoint, so a resumed run continues exactly.

    ``settings`` is the config's ``selftrain.online``; ``seed`` seeds the mixing stream. Under several training
    processes (DDP), ``rank`` gives each process its own stream (rank 0's is the single process's), each keeps
    its own record of its own batches, and ``sum_across`` (code counts -> their sum over the processes) makes
    every refit use the union of the records, so all processes weigh their pixels by one mixture.
    """

    def __init__(self, student: torch.nn.Module, settings: dict, num_classes: int, seed: int, rank: int = 0,
                 sum_across=None) -> None:
        import copy
        self.model = copy.deepcopy(student).eval()
        self.model.requires_grad_(False)
        self.settings = settings
        # mixing, augmentation, record sampling
        self.generator = torch.Generator().manual_seed(seed * 1_000_003 + 7 + 104_729 * rank)
        self.sum_across = sum_across
        self.gmm = settings["pixel_weights"] == "gmm"
        self.record = EntropyRecord(num_classes, settings["gmm_record"], settings["gmm_per_step"]) if self.gmm else None
        self.tables: torch.Tensor | None = None   # (C, N_CODES) once fitted

    @torch.no_grad()
    def label(self, images: torch.Tensor, size: tuple[int, int], stride: int, iteration: int
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Pseudo labels and pixel weights (B, H, W) of a normalised target batch from the teacher's main head,
        placed on the input's pixels; refits Eq. 6 every ``gmm_refit_every`` iterations (gmm weights).
        Also returns what to log: the mean weight."""
        from uncerda_core.train.losses import upsample
        _, main = self.model(images)
        prob = torch.softmax(upsample(main.float(), size, stride), dim=1)
        max_prob, pseudo = prob.max(dim=1)
        weights = confidence_weights(max_prob, self.settings["threshold"])
        if self.gmm:
            codes = entropy_codes(prob)
            self.record.push(pseudo.cpu().numpy(), codes.cpu().numpy(), self.generator)
            if (iteration + 1) % self.settings["gmm_refit_every"] == 0:
                self.refit()
            if self.tables is not None:
                weights = gmm_pixel_weights(self.tables.to(pseudo.device), pseudo, codes)
        return pseudo, weights, {"pl_weight": float(weights.mean())}

    def refit(self) -> None:
        """Eq. 6 refitted on the record (summed over the processes under DDP): the pixel weights' tables."""
        counts = self.record.histograms()
        if self.sum_across is not None:
            counts = self.sum_across(counts)
        self.tables = torch.from_numpy(fit_weight_tables(counts, self.settings["gmm_min_pixels"]))

    def mixed(self, source: torch.Tensor, source_labels: torch.Tensor, target: torch.Tensor, pseudo: torch.Tensor,
              weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The student's target input: 0-255 images, labels and pixel weights, source classes pasted into the
        target (classmix) and DACS's augmentation; source pixels weigh 1."""
        s = self.settings
        if s["classmix"]:
            if source.shape[-2:] != target.shape[-2:]:
                raise UncerdaError(f"selftrain.online.classmix needs source and target inputs of one size, got "
                                   f"{tuple(source.shape[-2:])} and {tuple(target.shape[-2:])} pixels; set source.crop "
                                   "to the target's input size (target.resize / target.crop), or classmix: false")
            mask = classmix_masks(source_labels.cpu(), self.generator).to(target.device)
            images, labels = mix(mask, source, target), mix(mask, source_labels, pseudo)
            weights = mix(mask, torch.ones_like(weights), weights)
        else:
            images, labels = target, pseudo
        images = strong_augment(images, self.generator, s["jitter"], s["jitter_p"], s["blur_p"], tuple(s["blur_sigma"]))
        return images, labels, weights

    def masked(self, target: torch.Tensor, normalize) -> torch.Tensor:
        """MIC's input: the target batch (0-255) with DACS's augmentation, normalised by ``normalize``, then
        multiplied by block masks, so a masked block reads as the normalisation's mean."""
        s = self.settings
        images = strong_augment(target, self.generator, s["jitter"], s["jitter_p"], s["blur_p"], tuple(s["blur_sigma"]))
        images = normalize(images)
        masks = mic_masks((images.shape[0], *images.shape[-2:]), s["mic_block"], s["mic_ratio"], self.generator)
        return images * masks.to(images.device, images.dtype)

    @torch.no_grad()
    def update(self, student: torch.nn.Module, iteration: int) -> None:
        """After the student's step number ``iteration`` (0-based)."""
        ema_update(self.model, student, ema_decay(iteration, self.settings["ema_decay"]))

    def process_state(self) -> dict:
        """What is this process's own: the random stream and (gmm weights) the record."""
        state = {"generator": self.generator.get_state()}
        if self.gmm:
            state["record"] = self.record.state_dict()
        return state

    def state_dict(self, processes: list[dict] | None = None) -> dict:
        """The teacher's state; ``processes``: every training process's :meth:`process_state`, in rank order
        (DDP), kept beside this process's so that each resumes its own."""
        state = {"model": self.model.state_dict(), **self.process_state()}
        if self.gmm:
            state["tables"] = self.tables if self.tables is not None else torch.zeros(0)
        if processes is not None:
            state["processes"] = processes
        return state

    def load_state_dict(self, state: dict, rank: int = 0) -> None:
        """``rank``'s own stream and record when the state holds every process's."""
        own = state["processes"][rank] if "processes" in state else state
        self.model.load_state_dict(state["model"])
        self.generator.set_state(own["generator"])
        if self.gmm:
            self.record.load_state_dict(own["record"])
            self.tables = state["tables"] if state["tables"].numel() else None
