"""What every stage that runs a network needs, training or not: the device, seeding, loading a checkpoint.

Kept apart from ``train/`` so that evaluation, the maps dump, prediction,
export and the report run a checkpoint without importing the training loop
(the layering in docs/architecture.md). Writing checkpoints and their resume
state stays with the trainer (``train/checkpoint.py``).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uncerda_core.artifacts import torch_load_weights_only
from uncerda_core.errors import UncerdaError


def resolve_device(requested: str) -> torch.device:
    """'auto' takes the GPU when one is visible, else the CPU with a warning."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UncerdaError("device: cuda requested but no GPU is visible (set device: auto or cpu)")
        return torch.device("cuda")
    if requested == "auto":
        warnings.warn("no GPU visible: running on the CPU", stacklevel=2)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`~uncerda_core.train.checkpoint.save_checkpoint` (weights-only unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: checkpoint not found")
    state = torch_load_weights_only(path)
    if not isinstance(state, dict) or "model" not in state:
        raise UncerdaError(f"{path}: not an uncerda checkpoint (no 'model' entry)")
    return state


def snapshot_dir(checkpoint: str | Path) -> Path:
    """Where the stage writing ``checkpoint`` keeps its snapshots for checkpoint selection
    (``snapshots/`` beside it): the trainer writes them, ``uncerda select`` reads them."""
    return Path(checkpoint).with_name("snapshots")


def snapshot_path(checkpoint: str | Path, iteration: int) -> Path:
    """``<dir of checkpoint>/snapshots/iter_<NNNNNN>.pt``: the weights after ``iteration`` iterations."""
    return snapshot_dir(checkpoint) / f"iter_{iteration:06d}.pt"
