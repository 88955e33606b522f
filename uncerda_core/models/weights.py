"""Loading foreign DeepLab-v2 state dicts (DeepLab init, AdaptSegNet, ADVENT, our own).

Key formats in the wild and where they land in :class:`~uncerda_core.models.deeplab.DeepLabV2`:

=====================================  ==========================  ========================
foreign key                            ours                        source
=====================================  ==========================  ========================
``Scale.conv1.weight``                 ``backbone.conv1.weight``   DeepLab COCO init
``Scale.layer5.conv2d_list.i.*``       ``head_main.branches.i.*``  (classifier on layer4,
                                                                   COCO classes: skipped)
``conv1.*``, ``bn1.*``, ``layerN.*``   ``backbone.…``              ADVENT ImageNet init,
``layer5.conv2d_list.i.*``             ``head_aux.branches.i.*``   trained AdaptSegNet /
``layer6.conv2d_list.i.*``             ``head_main.branches.i.*``  ADVENT models
``backbone.*``, ``head_*``             unchanged                   our checkpoints
=====================================  ==========================  ========================

A ``module.`` prefix (DataParallel) is stripped first. Loading is always
``torch.load(..., weights_only=True)``: files carrying arbitrary pickled objects are
refused rather than executed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from uncerda_core.artifacts import torch_load_weights_only
from uncerda_core.errors import UncerdaError

# (foreign prefix, our prefix); the first match wins, so specific entries come first.
PREFIX_MAP: tuple[tuple[str, str], ...] = (
    ("Scale.layer5.conv2d_list.", "head_main.branches."),
    ("Scale.", "backbone."),
    ("layer5.conv2d_list.", "head_aux.branches."),
    ("layer6.conv2d_list.", "head_main.branches."),
    ("backbone.", "backbone."),
    ("head_aux.", "head_aux."),
    ("head_main.", "head_main."),
    ("conv1.", "backbone.conv1."),
    ("bn1.", "backbone.bn1."),
    ("layer1.", "backbone.layer1."),
    ("layer2.", "backbone.layer2."),
    ("layer3.", "backbone.layer3."),
    ("layer4.", "backbone.layer4."),
)
WRAPPER_KEYS = ("state_dict", "model")
BACKBONE_PREFIX = "backbone."
# Fraction of the backbone's tensors that must load for the file to count as compatible.
MIN_BACKBONE_MATCH = 0.5
_IGNORED_SUFFIX = "num_batches_tracked"  # BatchNorm counter, unused with a fixed momentum


def map_key(key: str) -> str | None:
    """Our parameter name for a foreign key, or None when no rule applies."""
    while key.startswith("module."):
        key = key[len("module."):]
    for theirs, ours in PREFIX_MAP:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return None


@dataclass
class LoadReport:
    """What :func:`load_state` did with each tensor.

    ``matched``: our keys that were loaded; ``missing``: our keys the file did not
    provide (BatchNorm ``num_batches_tracked`` counters are not listed);
    ``unexpected``: the file's keys (as written in the file) with no place in the
    model; ``skipped_shape``: our keys the file provides with a different shape
    (e.g. a classifier for another number of classes), left at their initial values.
    """

    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped_shape: list[str] = field(default_factory=list)
    source: str = ""
    shape_notes: dict[str, str] = field(default_factory=dict)

    def summary(self, max_names: int = 8) -> str:
        """A few lines for the log: counts, then the first names of each non-empty list."""
        lines = [f"loaded {len(self.matched)} tensors from {self.source or 'state dict'}: "
                 f"{len(self.matched)} matched, {len(self.skipped_shape)} skipped (shape), "
                 f"{len(self.missing)} missing, {len(self.unexpected)} unexpected"]
        for name, keys in (("skipped (shape)", self.skipped_shape), ("missing", self.missing),
                           ("unexpected", self.unexpected)):
            if keys:
                shown = [f"{k} {self.shape_notes[k]}" if k in self.shape_notes else k for k in keys[:max_names]]
                more = f", ... (+{len(keys) - max_names})" if len(keys) > max_names else ""
                lines.append(f"  {name}: {', '.join(shown)}{more}")
        return "\n".join(lines)


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict with ``weights_only=True``; unwrap ``state_dict`` / ``model`` entries."""
    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: weights file not found; check model.init or the checkpoint path")
    obj = torch_load_weights_only(
        path, "weights file", hint=". Only plain state dicts of tensors are read (torch.load weights_only=True); "
        "a file holding pickled Python objects is refused: if you trust it, re-save its state_dict() with torch.save")
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: object, source: str = "state dict") -> dict[str, Tensor]:
    """The ``{name: tensor}`` mapping inside a loaded object, or UncerdaError naming ``source``."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise UncerdaError(f"{source}: expected a state dict (a mapping of names to tensors, possibly under "
                           f"'state_dict' or 'model'), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise UncerdaError(f"{source}: expected a state dict of tensors, but {len(bad)} of {len(obj)} entries "
                           f"are not named tensors (e.g. {bad[0]!r})")
    return dict(obj)


def match_state(model_state: Mapping[str, Tensor], foreign: Mapping[str, Tensor]
                ) -> tuple[dict[str, Tensor], LoadReport]:
    """Map ``foreign`` keys onto ``model_state``: (tensors to load by our key, report)."""
    report = LoadReport()
    to_load: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in foreign.items():
        ours = map_key(key)
        if ours is None or ours not in model_state:
            report.unexpected.append(key)
            continue
        if ours in origin:
            raise UncerdaError(f"keys {origin[ours]!r} and {key!r} both map to {ours!r}; the file mixes two models")
        origin[ours] = key
        if tuple(tensor.shape) != tuple(model_state[ours].shape):
            report.skipped_shape.append(ours)
            report.shape_notes[ours] = f"(file {tuple(tensor.shape)}, model {tuple(model_state[ours].shape)})"
            continue
        to_load[ours] = tensor
        report.matched.append(ours)
    report.missing = [k for k in model_state if k not in origin and not k.endswith(_IGNORED_SUFFIX)]
    return to_load, report


def check_compatible(report: LoadReport, model_state: Mapping[str, Tensor], strict_shapes: bool) -> None:
    """Raise UncerdaError when the file does not fit the model's backbone."""
    src = report.source or "state dict"
    counts = (f"{len(report.matched)} matched, {len(report.skipped_shape)} wrong shape, "
              f"{len(report.missing)} missing, {len(report.unexpected)} unexpected")
    if not report.matched:
        raise UncerdaError(f"{src}: no tensor fits the model ({counts}); is it a DeepLab-v2 state dict "
                           "for this architecture (model.arch)?")
    backbone = [k for k in model_state if k.startswith(BACKBONE_PREFIX) and not k.endswith(_IGNORED_SUFFIX)]
    got = sum(k.startswith(BACKBONE_PREFIX) and not k.endswith(_IGNORED_SUFFIX) for k in report.matched)
    if backbone and got < MIN_BACKBONE_MATCH * len(backbone):
        raise UncerdaError(f"{src}: only {got} of the model's {len(backbone)} backbone tensors are in the file "
                           f"({counts}); it was saved from another architecture (check model.arch, width, blocks)")
    bad = [k for k in report.skipped_shape if k.startswith(BACKBONE_PREFIX)]
    if strict_shapes and bad:
        raise UncerdaError(f"{src}: {len(bad)} backbone tensors have other shapes ({counts}), e.g. {bad[0]} "
                           f"{report.shape_notes[bad[0]]}; the file was saved from another architecture")


def load_state(model: nn.Module, path: str | os.PathLike, strict_shapes: bool = True) -> LoadReport:
    """Load a foreign or own state dict file into ``model``; return what went where.

    Head tensors of another shape (another class count, e.g. the COCO classifier of
    the DeepLab init) are skipped and reported. An incompatible file (nothing fits,
    under half the backbone present, or, with ``strict_shapes``, any backbone shape
    mismatch) raises UncerdaError with the counts. Print ``report.summary()``.
    """
    foreign = read_state_dict(path)
    return load_state_dict_into(model, foreign, str(path), strict_shapes)


def load_state_dict_into(model: nn.Module, foreign: Mapping[str, Tensor], source: str = "state dict",
                         strict_shapes: bool = True) -> LoadReport:
    """:func:`load_state` on an in-memory state dict (``source`` names it in messages)."""
    model_state = model.state_dict()
    to_load, report = match_state(model_state, foreign)
    report.source = source
    check_compatible(report, model_state, strict_shapes)
    result = model.load_state_dict(to_load, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # to_load holds model keys only
    return report
