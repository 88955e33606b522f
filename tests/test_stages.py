"""One table of model -> label (``uncerda_core.stages``): the figures word each stage as the tables do."""

from __future__ import annotations

import pytest

from uncerda_core.stages import CONTROL_LABELS, RUNG_LABELS, sr_model, sr_round, stage_label, tgaa_round


@pytest.mark.parametrize("model, label", [
    ("source_only", "Source only"),
    ("aa", "+AA"),
    ("aa_it", "+IT"),
    ("sr", "+SR"),
    ("sr_r2", "+SR r2"),
    ("sr_r10", "+SR r10"),
    ("tgaa_r1", "+TGAA r1"),
    ("tgaa_r2", "+TGAA r2"),
    ("tgaa_r12", "+TGAA r12"),
    ("st_gmm_r1", "+UPST"),
    ("st_gmm_r2", "+UPST r2"),
    ("st_cbst_r1", "+ST (cbst)"),
    ("st_threshold_r3", "+ST (threshold) r3"),
    ("st_cbst_at_gmm_coverage_r1", "+ST (cbst_at_gmm_coverage)"),
    # the controls, in the words of the ablation's table (the figures used to say "Target oracle" and
    # "AA, lambda_adv = 0")
    ("oracle", "Target oracle (trained on target labels)"),
    ("aa_noadv", "AA with lambda_adv = 0 (target batches seen)"),
    ("source_only_adabn", "Source only + AdaBN"),
    # not a model of the chain: its own name
    ("tgaa", "tgaa"),
    ("st", "st"),
    ("tgaa_r0", "tgaa_r0"),
    ("sr_r1", "sr_r1"),    # round 1 of +SR is named sr
    ("sr_r0", "sr_r0"),
    ("st_gmm", "st_gmm"),
    ("my_model", "my_model"),
])
def test_stage_label(model, label):
    assert stage_label(model) == label


def test_labels_are_the_tables():
    """Every rung a model stands for and every control is labelled from the tables the rules use."""
    assert stage_label("aa_it") == RUNG_LABELS["aa_it"] and stage_label("st_gmm_r1") == RUNG_LABELS["st"]
    assert stage_label("tgaa_r3").startswith(RUNG_LABELS["tgaa"] + " ")
    assert all(stage_label(model) == label for model, label in CONTROL_LABELS.items())


def test_tgaa_round():
    assert tgaa_round("tgaa_r1") == 1 and tgaa_round("tgaa_r10") == 10
    assert tgaa_round("aa_it") is None and tgaa_round("tgaa_r0") is None and tgaa_round("tgaa_r1x") is None


def test_sr_model_names_the_rounds_as_the_workflow_does():
    assert [sr_model(r) for r in (1, 2, 3, 12)] == ["sr", "sr_r2", "sr_r3", "sr_r12"]
    assert all(stage_label(sr_model(r)) == f"+SR r{r}" for r in (2, 3, 12))
    assert [sr_round(sr_model(r)) for r in (1, 2, 3, 12)] == [1, 2, 3, 12]
    assert sr_round("sr_r1") is None and sr_round("sr_r0") is None and sr_round("tgaa_r2") is None
    with pytest.raises(ValueError, match="start at 1"):
        sr_model(0)
