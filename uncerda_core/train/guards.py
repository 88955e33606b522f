"""Guards around a training run: a run that diverges stops early.

The loop calls :meth:`DivergenceGuard.observe` with each logged row of losses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from uncerda_core.artifacts import UncerdaError

# What makes a DeepLab run diverge in practice, most likely first; the learning rate is rarely the cause
# when the published settings are used.
DIVERGENCE_HINT = (
    "Usual causes, most likely first: the initial weights (model.init missing, so the network starts from a "
    "random init, or a file whose keys did not match: see the 'initial weights' line at the top of this log); "
    "an input normalisation that does not match those weights (train.normalize: caffe_bgr for the Caffe-converted "
    "DeepLab/AdaptSegNet/ADVENT weights, imagenet for torchvision ones); BatchNorm statistics updated from small "
    "batches (model.freeze_bn: true for batch sizes 1-2); only then the learning rate (train.lr, "
    "train.head_lr_mult)")

# Cross-entropy terms of the logged rows (source segmentation, both heads; self-training).
CROSS_ENTROPY_KEYS = ("seg", "seg_aux", "st")


class TrainingDiverged(UncerdaError):
    """The segmentation loss stayed far above what a random guess costs."""


@dataclass
class DivergenceGuard:
    """Stops a run whose cross-entropy stays above ``factor`` x log C for ``patience`` logged rows in a row.

    Why these numbers: a network that predicts the uniform distribution over C
    classes has a cross-entropy of exactly log C (2.94 for 19 classes); a fresh
    network starts near it and a healthy run only goes down. A mean loss of
    100 x log C (294 for 19 classes) means logits hundreds of units wrong with
    full confidence on most pixels, which no learning run passes through. One
    logged value can spike on a hard batch, so it takes ``patience`` (3)
    consecutive logged rows; at most 3 x 50 iterations at the loop's logging
    interval, a negligible part of a run, and the divergence is caught long
    before the loss overflows to NaN (which the loop catches on its own).
    """

    num_classes: int
    factor: float = 100.0
    patience: int = 3
    _streak: int = field(default=0, init=False)

    @property
    def limit(self) -> float:
        return self.factor * math.log(self.num_classes)

    def observe(self, row: Mapping[str, float]) -> bool:
        """Record one logged row; True while the run has not diverged."""
        worst = max((row[k] for k in CROSS_ENTROPY_KEYS if k in row), default=0.0)
        self._streak = self._streak + 1 if worst > self.limit else 0
        return self._streak < self.patience

    def error(self, stage: str, iteration: int, row: Mapping[str, float], resume: object) -> TrainingDiverged:
        values = ", ".join(f"{k}={row[k]:.4g}" for k in CROSS_ENTROPY_KEYS if k in row)
        return TrainingDiverged(
            f"stage {stage}: training diverged at iteration {iteration}: the segmentation loss stayed above "
            f"{self.factor:g} x log C = {self.limit:.0f} for {self.patience} logged iterations in a row ({values}; "
            f"a uniform guess costs log C = {math.log(self.num_classes):.2f}). {DIVERGENCE_HINT}. The last periodic "
            f"checkpoint ({resume}) may already hold diverged weights: after a change of model or train settings "
            "the run starts over by itself")
