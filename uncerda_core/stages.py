"""The stages of the chain by model name, and the label the result tables give each one.

The workflow names a model by its stage (``aa_it``, ``tgaa_r2``, ``st_gmm_r1``); the tables of the
main chain and of the ablation label the rungs as Table 3 does. The rules take the labels from here, and
the report's figures name a model by :func:`stage_label`, in the same words.
"""

from __future__ import annotations

import re

# Table 3's rungs: the label of each stage's model (``tgaa`` stands for its last round, ``st`` for
# the last self-training round on GMM pseudo labels).
RUNG_LABELS: dict[str, str] = {
    "source_only": "Source only",
    "aa": "+AA",
    "aa_it": "+IT",
    "sr": "+SR",
    "tgaa": "+TGAA",
    "st": "+UPST",
}
# The ablation's controls, beside the rungs (``sr_matched`` stands for +SR run for as many rounds as
# +TGAA ran in that seed: ``sr`` after one round, ``sr_r2`` after two, ...; see :func:`sr_model`).
CONTROL_LABELS: dict[str, str] = {
    "source_only_adabn": "Source only + AdaBN",
    "aa_noadv": "AA with lambda_adv = 0 (target batches seen)",
    "sr_matched": "+SR for as many rounds as +TGAA",
    "oracle": "Target oracle (trained on target labels)",
}
# The control a rung must also beat to show that its own ingredient, not a side effect, made the gain:
# +AA against AdaBN (target BatchNorm statistics without any training on target images), +IT against
# the same fine-tuning with FDA and lambda_adv = 0 (everything but the discriminators), +TGAA against
# +SR trained for as many rounds (the same iterations with a target-blind S_k, all classes).
RUNG_CONTROLS: dict[str, str] = {
    "aa": "source_only_adabn",
    "aa_it": "aa_noadv",
    "tgaa": "sr_matched",
}
# A self-training round on another method's pseudo labels than the GMM's (the ablation's Table 5).
OTHER_SELF_TRAINING = "+ST ({method})"

_TGAA_ROUND = re.compile(r"tgaa_r([1-9]\d*)")
# +SR after round r >= 2 (round 1 is plain ``sr``); the workflow's wildcard pattern for +SR's models.
SR_ROUND_PATTERN = r"sr_r([2-9]|[1-9]\d+)"
_SR_ROUND = re.compile(SR_ROUND_PATTERN)
_SELF_TRAINING = re.compile(r"st_(\w+?)_r([1-9]\d*)")


def tgaa_round(model: str) -> int | None:
    """The target-guided round of ``tgaa_r<r>`` (r >= 1); None for any other model."""
    match = _TGAA_ROUND.fullmatch(model)
    return int(match.group(1)) if match else None


def sr_round(model: str) -> int | None:
    """The +SR round of ``sr`` (1) or ``sr_r<r>`` (r >= 2); None for any other model."""
    if model == "sr":
        return 1
    match = _SR_ROUND.fullmatch(model)
    return int(match.group(1)) if match else None


def sr_model(rounds: int) -> str:
    """The +SR model after ``rounds`` rounds: ``sr`` (round 1), then ``sr_r2``, ``sr_r3``, ... (each round
    starts from the one before, with the same all-class weights)."""
    if rounds < 1:
        raise ValueError(f"+SR rounds start at 1, got {rounds}")
    return "sr" if rounds == 1 else f"sr_r{rounds}"


def stage_label(model: str) -> str:
    """The label of a model in the figures, as in the tables: ``aa_it`` -> ``+IT``, ``tgaa_r2`` ->
    ``+TGAA r2``, ``sr_r2`` -> ``+SR r2``, ``st_gmm_r1`` -> ``+UPST`` (``st_gmm_r2`` -> ``+UPST r2``),
    ``st_cbst_r1`` -> ``+ST (cbst)``, a control by :data:`CONTROL_LABELS`; a name it does not know is its
    own label."""
    if model in CONTROL_LABELS:
        return CONTROL_LABELS[model]
    if model in RUNG_LABELS and model not in ("tgaa", "st"):   # those two stand for a round, not a model
        return RUNG_LABELS[model]
    r = tgaa_round(model)
    if r is not None:
        return f"{RUNG_LABELS['tgaa']} r{r}"
    r = sr_round(model)
    if r is not None and r > 1:
        return f"{RUNG_LABELS['sr']} r{r}"
    match = _SELF_TRAINING.fullmatch(model)
    if match:
        method, k = match.group(1), int(match.group(2))
        name = RUNG_LABELS["st"] if method == "gmm" else OTHER_SELF_TRAINING.format(method=method)
        return name if k == 1 else f"{name} r{k}"
    return model
