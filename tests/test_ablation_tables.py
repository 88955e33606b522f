"""The ablation's tables (Table 3's ladder, Table 5's comparison): paired changes against the rung before,
against each rung's control and against the GMM, checked against values computed by hand."""

from __future__ import annotations

import json
import math

import pytest

from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.errors import UncerdaError
from uncerda_core.report.tables import (OTHER_GROUP, SK_GROUP, ablation_ladder, group_iou, paired_change,
                                        pseudo_label_comparison, sk_class_comparison)
from uncerda_core.stages import CONTROL_LABELS, RUNG_CONTROLS, RUNG_LABELS


def _metrics(tmp_path, name: str, seed: int, miou: float) -> str:
    path = tmp_path / f"{name.replace(' ', '_').replace('+', 'p')}_{seed}.json"
    path.write_text(json.dumps({"miou": miou}))
    return str(path)


def test_paired_change_by_hand():
    # differences 0.20, 0.13, 0.24: mean 0.19, sample std sqrt((0.01^2 + 0.06^2 + 0.05^2) / 2) = 0.055678
    change = paired_change({0: 0.30, 1: 0.25, 2: 0.35}, {0: 0.10, 1: 0.12, 2: 0.11})
    assert change.mean == pytest.approx(0.19) and change.spread == pytest.approx(0.0556776, rel=1e-5)
    assert change.n_seeds == 3 and change.real and change.verdict() == "yes"
    # Seeds that only one side has, or a NaN, are left out.
    change = paired_change({0: 0.3, 1: float("nan"), 2: 0.5, 3: 0.4}, {0: 0.1, 1: 0.2, 2: 0.2})
    assert change.n_seeds == 2 and change.mean == pytest.approx(0.25)
    none = paired_change({0: 0.3}, {1: 0.2})
    assert none.n_seeds == 0 and math.isnan(none.mean) and not none.real
    assert paired_change({0: 0.3}, {1: 0.2}).verdict() == ""
    assert paired_change({0: 0.3}, {0: 0.2}).verdict() == "one seed"
    # A real fall is "yes" for the ladder's change and "below" where the direction matters.
    fall = paired_change({0: 0.10, 1: 0.11}, {0: 0.20, 1: 0.20})
    assert fall.verdict() == "yes" and fall.verdict(direction=True) == "below"
    # Within its spread: 0.01 and -0.03 -> mean -0.01, spread 0.028.
    assert paired_change({0: 0.21, 1: 0.17}, {0: 0.20, 1: 0.20}).verdict(direction=True) == "no difference"


def test_every_control_a_rung_is_judged_against_is_a_control_of_the_ablation():
    assert set(RUNG_CONTROLS) <= set(RUNG_LABELS) and set(RUNG_CONTROLS.values()) <= set(CONTROL_LABELS)


def test_ladder_compares_each_rung_with_the_rung_before_and_with_its_control(tmp_path):
    values = {  # label -> (kind, mIoU of seeds 0, 1, 2)
        "Source only": ("rung", (0.10, 0.12, 0.11)),
        "+AA": ("rung", (0.30, 0.25, 0.35)),
        "+IT": ("rung", (0.33, 0.28, 0.38)),
        "Source only + AdaBN": ("control", (0.28, 0.27, 0.33)),
        "AA with lambda_adv = 0 (target batches seen)": ("control", (0.30, 0.26, 0.35)),
    }
    evals = [(label, kind, seed, _metrics(tmp_path, label, seed, v))
             for label, (kind, seeds) in values.items() for seed, v in enumerate(seeds)]
    ladder = ablation_ladder(evals).set_index("rung")
    aa, it = ladder.loc["+AA"], ladder.loc["+IT"]
    assert aa["delta"] == pytest.approx(0.19) and aa["delta_std"] == pytest.approx(0.0556776, rel=1e-5)
    assert aa["significant"] == "yes"
    # +AA - AdaBN: 0.02, -0.02, 0.02 -> mean 0.00667, spread 0.02309: within the noise.
    assert aa["control"] == "Source only + AdaBN"
    assert aa["vs_control"] == pytest.approx(0.02 / 3) and aa["vs_control_std"] == pytest.approx(0.0230940, rel=1e-5)
    assert aa["beats_control"] == "no difference"
    # +IT - (lambda_adv = 0): 0.03, 0.02, 0.03 -> mean 0.02667, spread 0.00577: real.
    assert it["vs_control"] == pytest.approx(0.08 / 3) and it["vs_control_std"] == pytest.approx(0.0057735, rel=1e-5)
    assert it["beats_control"] == "yes"
    # +IT - +AA: 0.03 each seed, spread 0 -> real.
    assert it["delta"] == pytest.approx(0.03) and it["significant"] == "yes"
    # Rungs without a control, and the controls themselves, leave the columns empty.
    for label in ("Source only", "Source only + AdaBN"):
        assert ladder.loc[label, "control"] == "" and math.isnan(ladder.loc[label, "vs_control"])
    # A rung below its control says so.
    low = [(label, kind, seed, path) for label, kind, seed, path in evals if label != "+AA"]
    low += [("+AA", "rung", s, _metrics(tmp_path, "low", s, v)) for s, v in enumerate((0.20, 0.21, 0.22))]
    assert ablation_ladder(low).set_index("rung").loc["+AA", "beats_control"] == "below"


def test_table5_says_how_far_the_gmm_is_ahead_of_each_method_seed_by_seed(tmp_path):
    def quality(name, seed, precision, coverage, class_mean=None):
        path = tmp_path / f"{name}_{seed}_quality.json"
        summary = {"precision": precision, "coverage": coverage}
        if class_mean is not None:   # files written before the class mean existed lack the key
            summary["class_mean_precision"] = class_mean
        path.write_text(json.dumps(summary))
        return str(path)
    items = []
    for seed, (gp, cp, ap, gm, cm) in enumerate([(0.86, 0.81, 0.85, 0.411, 0.399), (0.90, 0.84, 0.865, 0.398, 0.396)]):
        items.append(("gmm", seed, quality("gmm", seed, gp, 0.37, (0.80, 0.84)[seed]),
                      _metrics(tmp_path, "gmm", seed, gm)))
        items.append(("cbst", seed, quality("cbst", seed, cp, 0.50), _metrics(tmp_path, "cbst", seed, cm)))
        items.append(("cbst at gmm's coverage", seed, quality("cbst_cov", seed, ap, 0.38, (0.78, 0.79)[seed]), ""))
    table = pseudo_label_comparison(items).set_index("method")
    assert math.isnan(table.loc["gmm", "gmm_precision_gain"])
    # Precision at equal coverage: 0.01 and 0.035 -> mean 0.0225, spread 0.017678 -> real.
    at_coverage = table.loc["cbst at gmm's coverage"]
    assert at_coverage["gmm_precision_gain"] == pytest.approx(0.0225)
    assert at_coverage["gmm_precision_gain_std"] == pytest.approx(0.0176777, rel=1e-5)
    assert at_coverage["gmm_precision_gain_real"] == "yes"
    assert at_coverage["gmm_miou_gain_real"] == "" and math.isnan(at_coverage["miou_mean"])
    # Class-mean precision at equal coverage: 0.02 and 0.05 -> mean 0.035, spread 0.0212132 -> real.
    assert at_coverage["class_mean_precision_mean"] == pytest.approx(0.785)
    assert at_coverage["gmm_class_mean_precision_gain"] == pytest.approx(0.035)
    assert at_coverage["gmm_class_mean_precision_gain_std"] == pytest.approx(0.0212132, rel=1e-5)
    assert at_coverage["gmm_class_mean_precision_gain_real"] == "yes"
    # mIoU after the same self-training: 0.012 and 0.002 -> mean 0.007, spread 0.00707 -> within it.
    cbst = table.loc["cbst"]
    assert cbst["gmm_miou_gain"] == pytest.approx(0.007) and cbst["gmm_miou_gain_std"] == pytest.approx(0.0070711, rel=1e-4)
    assert cbst["gmm_miou_gain_real"] == "no difference"
    assert cbst["gmm_precision_gain"] == pytest.approx(0.055)
    # CBST's files have no class mean (written before it existed): no gain, no verdict, nothing invented.
    assert math.isnan(cbst["class_mean_precision_mean"]) and math.isnan(cbst["gmm_class_mean_precision_gain"])
    assert cbst["gmm_class_mean_precision_gain_real"] == ""
    assert list(table.columns)[-1] == "protocol"


def test_group_iou_leaves_out_classes_without_a_value():
    per_class = {"road": 0.9, "wall": 0.2, "fence": None, "pole": 0.1}
    assert group_iou(per_class, ["wall", "fence", "pole"]) == pytest.approx(0.15)   # (0.2 + 0.1) / 2
    assert math.isnan(group_iou(per_class, ["fence"])) and math.isnan(group_iou(per_class, []))


def test_sk_classes_table_splits_the_change_against_the_control_by_class_group(tmp_path):
    """Seed 0's S_k is {wall, fence}, seed 1's {wall, rider}; every class the table does not name has IoU 0.5."""
    def rank(seed, sk):
        path = tmp_path / f"rank_{seed}.csv"
        rows = ["class_id,class,in_sk"] + [f"{i},{name},{name in sk}" for i, name in enumerate(CLASS_NAMES)]
        path.write_text("\n".join(rows) + "\n")
        return str(path)

    def metrics(name, seed, changed):
        path = tmp_path / f"{name}_{seed}.json"
        path.write_text(json.dumps({"per_class_iou": {c: changed.get(c, 0.5) for c in CLASS_NAMES}}))
        return str(path)

    start, tgaa, sr = "+IT", "+TGAA", "+SR for as many rounds as +TGAA"
    items = [
        (0, rank(0, {"wall", "fence"}), {start: metrics("it", 0, {"wall": 0.1, "fence": 0.1}),
                                         tgaa: metrics("tgaa", 0, {"wall": 0.3, "fence": 0.2, "road": 0.68}),
                                         sr: metrics("sr", 0, {"wall": 0.2, "fence": 0.2, "road": 0.5})}),
        (1, rank(1, {"wall", "rider"}), {start: metrics("it", 1, {"wall": 0.1, "rider": 0.0}),
                                         tgaa: metrics("tgaa", 1, {"wall": 0.2, "rider": 0.2, "road": 0.5}),
                                         sr: metrics("sr", 1, {"wall": 0.1, "rider": 0.1, "road": 0.32})}),
    ]
    table = sk_class_comparison(items, tgaa, sr)
    assert list(table["classes"]) == [SK_GROUP] * 3 + [OTHER_GROUP] * 3
    assert list(table["model"]) == [start, tgaa, sr] * 2
    rows = table.set_index(["classes", "model"])
    # S_k: +TGAA 0.25 and 0.2, +SR 0.2 and 0.1 -> differences 0.05 and 0.1: mean 0.075, spread 0.035355.
    sk = rows.loc[(SK_GROUP, tgaa)]
    assert sk["miou_seeds"] == "0.2500;0.2000" and sk["miou_mean"] == pytest.approx(0.225)
    assert sk["vs_control"] == pytest.approx(0.075) and sk["vs_control_std"] == pytest.approx(0.0353553, rel=1e-5)
    assert sk["beats_control"] == "yes"
    assert rows.loc[(SK_GROUP, start), "miou_mean"] == pytest.approx(0.075)   # (0.1 and 0.05)
    # The other 17 classes: road alone differs, by +0.18 in both seeds -> +0.18 / 17 each, spread 0.
    other = rows.loc[(OTHER_GROUP, tgaa)]
    assert other["vs_control"] == pytest.approx(0.18 / 17) and other["vs_control_std"] == pytest.approx(0.0, abs=1e-12)
    assert other["beats_control"] == "yes"
    # Only +TGAA's rows compare with the control; the first row names each seed's S_k.
    assert math.isnan(rows.loc[(SK_GROUP, sr), "vs_control"]) and rows.loc[(OTHER_GROUP, start), "beats_control"] == ""
    assert table.loc[0, "classes_by_seed"] == "0: wall fence; 1: wall rider"
    assert (table["classes_by_seed"].iloc[1:] == "").all()
    # Only the classes mIoU is reported over: without fence, seed 0's S_k is wall alone (0.3 against 0.2).
    without_fence = tuple(i for i, name in enumerate(CLASS_NAMES) if name != "fence")
    narrow = sk_class_comparison(items, tgaa, sr, without_fence).set_index(["classes", "model"])
    assert narrow.loc[(SK_GROUP, tgaa), "miou_seeds"] == "0.3000;0.2000"
    # ... and 17 other classes in seed 0 (18 less wall), 16 in seed 1.
    assert narrow.loc[(OTHER_GROUP, tgaa), "vs_control"] == pytest.approx((0.18 / 17 + 0.18 / 16) / 2)
    assert sk_class_comparison([], tgaa, sr).empty


@pytest.mark.parametrize("entry", ["0|rank.csv|a.json|b.json", "zero|rank.csv|a.json|b.json|c.json"])
def test_sk_classes_command_names_a_malformed_seed_entry(tmp_path, capsys, entry):
    from uncerda_core.cli import main
    assert main(["ablation-sk-classes", "--seed-models", entry, "--source-dataset", "gta5",
                 "--out-dir", str(tmp_path / "out")]) == 2
    assert "integer SEED" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_table4_compares_each_sampling_round_with_no_balance_by_hand(tmp_path):
    from uncerda_core.artifacts import write_sidecar
    from uncerda_core.report.tables import PAPER_TABLE4, sampling_comparison
    rows = []
    values = {("No-Balance", ""): (0.40, 0.42), ("Focal Loss", ""): (0.41, 0.42), ("Soft-Balance", "0.9"): (0.43, 0.46)}
    multipliers = {("No-Balance", ""): 1.0, ("Focal Loss", ""): 1.0, ("Soft-Balance", "0.9"): 1.56}
    for (method, lam), per_seed in values.items():
        for seed, miou in enumerate(per_seed):
            metrics = tmp_path / f"{method}{lam}_{seed}.json"
            metrics.write_text(json.dumps({"miou": miou}))
            weights = tmp_path / f"w_{method}{lam}_{seed}.csv"
            weights.write_text("name,p_i,p_norm,weight,probability\n")
            write_sidecar(weights, {"draws": {"rarest_multiplier": multipliers[(method, lam)]}})
            rows.append((method, lam, seed, metrics, weights))
    table = sampling_comparison(rows).set_index("method")
    assert table.loc["No-Balance", "beats_control"] == "" and math.isnan(table.loc["No-Balance", "vs_control"])
    # Focal: +0.01 and 0.00 -> mean 0.005, spread 0.0071: no difference. Soft 0.9: +0.03, +0.04 -> yes.
    assert table.loc["Focal Loss", "vs_control"] == pytest.approx(0.005)
    assert table.loc["Focal Loss", "beats_control"] == "no difference"
    assert table.loc["Soft-Balance", "vs_control"] == pytest.approx(0.035)
    assert table.loc["Soft-Balance", "beats_control"] == "yes" and table.loc["Soft-Balance", "rarest_draws"] == 1.56
    assert table.loc["Soft-Balance", "paper_miou"] == PAPER_TABLE4[("Soft-Balance", "0.9")] == 0.461
    assert table.loc["Soft-Balance", "paper_vs_no_balance"] == pytest.approx(0.461 - 0.429)
    with pytest.raises(UncerdaError, match="No-Balance"):
        sampling_comparison([r for r in rows if r[0] != "No-Balance"])


def test_sensitivity_compares_each_setting_with_the_chains_own(tmp_path):
    from uncerda_core.report.tables import sensitivity_comparison
    items = []
    for setting, model, values in (("alpha=80 mu=0.02", "tgaa_r1", (0.40, 0.42)), ("k=3", "sens_k3", (0.38, 0.39)),
                                   ("alpha=20 mu=0.02", "sens_a20_m0.02", (0.41, 0.42))):
        for seed, miou in enumerate(values):
            path = tmp_path / f"seed{seed}" / f"{model}.json"
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps({"miou": miou}))
            items.append((setting, seed, path))
    table = sensitivity_comparison(items, "alpha=80 mu=0.02").set_index("setting")
    assert table.loc["alpha=80 mu=0.02", "model"] == "tgaa_r1" and table.loc["k=3", "model"] == "sens_k3"
    # k=3: -0.02, -0.03 -> mean -0.025, spread 0.0071: below. alpha 20: +0.01, 0 -> no difference.
    assert table.loc["k=3", "vs_control"] == pytest.approx(-0.025) and table.loc["k=3", "beats_control"] == "below"
    assert table.loc["alpha=20 mu=0.02", "beats_control"] == "no difference"
    with pytest.raises(UncerdaError, match="reference"):
        sensitivity_comparison(items, "k=7")


def test_table5_compares_each_models_pseudo_labels_with_the_model_itself_by_hand(tmp_path):
    from uncerda_core.report.tables import PAPER_TABLE5, pseudo_model_comparison
    miou = {("MRNet", "none"): (0.40, 0.42), ("MRNet", "cbst"): (0.44, 0.47), ("MRNet", "gmm"): (0.45, 0.47),
            ("mine", "none"): (0.30, 0.30), ("mine", "gmm"): (0.31, 0.29)}
    precision = {("MRNet", "gmm"): (0.90, 0.92), ("MRNet", "cbst_at_gmm_coverage"): (0.85, 0.86)}
    rows = []
    for (model, pseudo), per_seed in {**miou, **precision}.items():
        for seed in (0, 1):
            metrics = _metrics(tmp_path, f"{model}_{pseudo}", seed, miou[(model, pseudo)][seed]) \
                if (model, pseudo) in miou else ""
            quality = ""
            if (model, pseudo) in precision:
                quality = tmp_path / f"q_{model}_{pseudo}_{seed}.json"
                quality.write_text(json.dumps({"precision": precision[(model, pseudo)][seed], "coverage": 0.5,
                                               "class_mean_precision": None}))
            rows.append((model, pseudo, seed, metrics, quality))
    rows.reverse()     # models in the order they first come; each model's rows in Table 5's order
    table = pseudo_model_comparison(rows)
    assert list(zip(table["model"], table["pseudo_labels"])) == [
        ("MRNet", "-"), ("MRNet", "CBST"), ("MRNet", "Ours (GMM)"), ("MRNet", "CBST at the GMM's coverage"),
        ("mine", "-"), ("mine", "Ours (GMM)")]
    row = {(m, p): r for m, p, r in zip(table["model"], table["pseudo_labels"], table.to_dict("records"))}
    cbst, gmm = row[("MRNet", "CBST")], row[("MRNet", "Ours (GMM)")]
    # CBST over the model: +0.04, +0.05 -> 0.045, spread 0.00707: yes. GMM over CBST: +0.01, 0.00 -> no difference.
    assert cbst["vs_control"] == pytest.approx(0.045) and cbst["beats_control"] == "yes"
    assert cbst["vs_control_std"] == pytest.approx(math.sqrt(0.00005))
    assert gmm["gmm_vs_cbst"] == pytest.approx(0.005) and gmm["gmm_vs_cbst_real"] == "no difference"
    # precision at equal coverage: +0.05, +0.06 -> yes
    assert gmm["precision_gain_equal_coverage"] == pytest.approx(0.055)
    assert gmm["precision_gain_equal_coverage_real"] == "yes" and gmm["precision_mean"] == pytest.approx(0.91)
    assert math.isnan(gmm["class_mean_precision_mean"])
    assert row[("MRNet", "CBST at the GMM's coverage")]["n_seeds"] == 2
    assert math.isnan(row[("MRNet", "CBST at the GMM's coverage")]["miou_mean"])
    # the paper's column: Table 5's MRNet rows, and nothing for a model of your own
    assert gmm["paper_miou"] == PAPER_TABLE5[("MRNet", "gmm")][0] == 0.512
    assert gmm["paper_vs_model"] == pytest.approx(0.512 - 0.455) and gmm["paper_source"] == "Table 5"
    assert math.isnan(row[("mine", "Ours (GMM)")]["paper_miou"])
    # GMM on "mine": +0.01, -0.01 -> 0.0 +- 0.014: no difference; no CBST row, so no lead over CBST
    assert row[("mine", "Ours (GMM)")]["beats_control"] == "no difference"
    assert math.isnan(row[("mine", "Ours (GMM)")]["gmm_vs_cbst"])
    with pytest.raises(UncerdaError, match="unknown pseudo labels 'argmax'"):
        pseudo_model_comparison([("mine", "argmax", 0, "", "")])


def test_table5_command_writes_the_table_and_fig3(tmp_path):
    from uncerda_core.cli import main
    rows = []
    for pseudo, values in (("none", (0.40, 0.41)), ("cbst", (0.43, 0.45)), ("gmm", (0.44, 0.47))):
        for seed, value in enumerate(values):
            rows += ["--row", f"AdaptSegNet|{pseudo}|{seed}|{_metrics(tmp_path, pseudo, seed, value)}|"]
    out = tmp_path / "out"
    assert main(["table5", *rows, "--out-dir", str(out), "--figure", str(out / "fig3.png")]) == 0
    md = (out / "table5.md").read_text()
    assert "AdaptSegNet" in md and "47.8" in md and "42.4" in md     # the paper's values beside
    assert (out / "fig3.png").stat().st_size > 10_000 and (out / "table5.csv.provenance.json").is_file()
    assert main(["table5", "--row", "AdaptSegNet|gmm|x|a.json|", "--out-dir", str(out),
                 "--figure", str(out / "f.png")]) != 0



def test_online_table_pairs_every_run_with_upst_gmm_with_confidence_and_additions_with_none(tmp_path):
    from uncerda_core.cli import main
    import pandas as pd
    runs = {"+UPST": (0.44, 0.46), "online, confidence weights, from +TGAA": (0.41, 0.42),
            "online, gmm weights, from +TGAA": (0.43, 0.45), "online, gmm weights + MIC, from +TGAA": (0.44, 0.45),
            "online, gmm weights + chain draws, from +TGAA": (0.40, 0.43),
            "online, confidence weights + 3x iterations, from +TGAA": (0.45, 0.45),
            "online, gmm weights + 3x iterations, from +TGAA": (0.47, 0.48)}
    evals = [arg for setting, values in runs.items() for seed, value in enumerate(values)
             for arg in ("--eval", f"{setting}|{seed}|{_metrics(tmp_path, setting, seed, value)}")]
    out = tmp_path / "out"
    assert main(["online-table", *evals, "--reference", "+UPST", "--out-dir", str(out)]) == 0
    table = pd.read_csv(out / "online.csv")
    rows = {(s, c if isinstance(c, str) else ""): r for s, c, r in zip(table["setting"], table["control"],
                                                                          table.to_dict("records"))}
    # against +UPST: confidence -0.03, -0.04 -> -0.035 below; gmm -0.01, -0.01 -> spread 0 -> below
    assert rows[("online, confidence weights, from +TGAA", "+UPST")]["vs_control"] == pytest.approx(-0.035)
    assert rows[("online, confidence weights, from +TGAA", "+UPST")]["beats_control"] == "below"
    # GMM against confidence: +0.02, +0.03 -> yes; MIC against GMM: +0.01, 0.00 -> no difference
    gmm = rows[("online, gmm weights, from +TGAA", "online, confidence weights, from +TGAA")]
    assert gmm["vs_control"] == pytest.approx(0.025) and gmm["beats_control"] == "yes"
    mic = rows[("online, gmm weights + MIC, from +TGAA", "online, gmm weights, from +TGAA")]
    assert mic["vs_control"] == pytest.approx(0.005) and mic["beats_control"] == "no difference"
    # chain draws against uniform: -0.03, -0.02 -> below
    chain = rows[("online, gmm weights + chain draws, from +TGAA", "online, gmm weights, from +TGAA")]
    assert chain["vs_control"] == pytest.approx(-0.025) and chain["beats_control"] == "below"
    # a longer run against its own weighting at one length, and GMM against confidence at the same length
    longer = rows[("online, gmm weights + 3x iterations, from +TGAA", "online, gmm weights, from +TGAA")]
    assert longer["vs_control"] == pytest.approx(0.035) and longer["beats_control"] == "yes"
    assert rows[("online, gmm weights + 3x iterations, from +TGAA",
                 "online, confidence weights + 3x iterations, from +TGAA")]["vs_control"] == pytest.approx(0.025)
    assert rows[("online, confidence weights + 3x iterations, from +TGAA",
                 "online, confidence weights, from +TGAA")]["vs_control"] == pytest.approx(0.035)
    assert len(table) == 7 + 6   # every run against +UPST, and six pairs
