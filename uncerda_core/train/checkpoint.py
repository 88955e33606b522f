"""Checkpoints: everything needed to resume, loadable with ``weights_only=True``.

A checkpoint is a plain dict of tensors and primitives:
``model``, ``discriminators`` (name -> state dict), ``optimizers`` and
``schedulers`` (name -> state dict), ``iteration``, ``rng`` (torch CPU/CUDA
states), ``losses`` (the logged rows so far), ``config`` (resolved), ``stage``
and ``provenance``. The stage's final output is the same dict at the last
iteration; ``<out>.resume.pt`` beside it holds the latest periodic state.
Reading one is :func:`uncerda_core.runtime.load_checkpoint` (evaluation and
prediction read checkpoints without the trainer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from uncerda_core import artifacts
from uncerda_core.artifacts import atomic_path
from uncerda_core.errors import UncerdaError
from uncerda_core.models import build_model, load_state
from uncerda_core.train.guards import check_parent


def resume_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".resume.pt")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tensor_bytes(obj: Any) -> int:
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically; a full disk raises :class:`UncerdaError` with the size it needed.

    A trainer whose parent is gone writes nothing (:func:`~uncerda_core.train.guards.check_parent`).
    """
    check_parent()
    with atomic_path(path, size_hint=_tensor_bytes(state)) as tmp:
        torch.save(state, tmp)


def import_model(config: dict, weights: str | Path, out: str | Path) -> str:
    """A trained model file of another project (an AdaptSegNet, ADVENT or Seg-Uncertainty state dict, or an
    uncerda checkpoint) written as an uncerda checkpoint at ``out``, so that every later stage reads it as
    one of its own; returns the load summary.

    Every tensor of the network must come from the file, both classifier heads included: a head left at its
    initial values would give pseudo labels of a model nobody trained. Keys are mapped as
    :mod:`uncerda_core.models.weights` describes; the file is read without running pickled code.
    """
    model = build_model(config["model"])
    report = load_state(model, weights)
    incomplete = report.missing + report.skipped_shape
    if incomplete:
        raise UncerdaError(f"{weights}: not a whole trained model for this config's network: "
                           f"{len(report.missing)} of its tensors are missing and {len(report.skipped_shape)} have "
                           f"another shape, e.g. {incomplete[0]} {report.shape_notes.get(incomplete[0], '')}".rstrip()
                           + f"; check model.arch and model.num_classes, or the file ({report.summary(3)})")
    state = {"model": model.state_dict(), "model_config": config["model"], "config": config, "stage": "import",
             "iteration": 0, "provenance": artifacts.provenance("import-model", config=config,
                                                                   inputs={"weights": weights})}
    save_checkpoint(out, state)
    return report.summary()
