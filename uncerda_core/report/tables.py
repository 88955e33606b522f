"""Result tables: the main chain's summary and the ablation ladder, as data frames, markdown and HTML."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from uncerda_core.artifacts import atomic_path, read_json, read_provenance, write_sidecar, write_text
from uncerda_core.data.labels import CLASS_NAMES, eval_class_ids
from uncerda_core.errors import UncerdaError
from uncerda_core.evaluate.evaluate import format_table, protocol_of
from uncerda_core.report.inputs import read_sk_classes
from uncerda_core.stages import CONTROL_LABELS, RUNG_CONTROLS, RUNG_LABELS


def metrics_frame(results: dict[str, dict]) -> pd.DataFrame:
    """One row per model: mIoU subsets, the evaluation protocol and per-class IoU (fractions)."""
    rows = []
    for name, res in results.items():
        row = {"model": name, "miou": res["miou"]}
        if "miou13" in res:
            row["miou13"] = res["miou13"]
        row["protocol"] = protocol_of(res)
        row.update({c: res["per_class_iou"][c] for c in CLASS_NAMES})
        rows.append(row)
    return pd.DataFrame(rows)


def chain_summary(evals: dict[str, str | Path], source_dataset: str,
                  rounds_dir: str | Path | None = None) -> tuple[str, pd.DataFrame]:
    """Markdown and table of the main chain: one row per rung, plus how the round loop ended."""
    results = {label: read_json(path, "metrics file") for label, path in evals.items()}
    subsets = eval_class_ids(source_dataset)
    lines = ["# Results on target val", "", format_table(results, subsets), ""]
    protocols = {label: protocol_of(res) for label, res in results.items()}
    if len(set(protocols.values())) == 1:
        lines += [f"Evaluation protocol: {next(iter(protocols.values()))}.", ""]
    else:
        lines += ["Evaluation protocols (they differ between rungs):", ""]
        lines += [f"- {label}: {protocol}" for label, protocol in protocols.items()] + [""]
    decisions = round_decisions(rounds_dir)
    if decisions:
        lines += ["## Target-guided rounds", ""]
        lines += [f"- {decision}" for decision in decisions]
        lines.append("")
    return "\n".join(lines), metrics_frame(results)


def round_decisions(rounds_dir: str | Path | None) -> list[str]:
    """``round <r>: <reason>`` for every round decision (``r<N>.json``) in ``rounds_dir``, in round order."""
    if rounds_dir is None or not Path(rounds_dir).is_dir():
        return []
    out = []
    for path in sorted(Path(rounds_dir).glob("r*.json"), key=lambda p: int(p.stem[1:])):
        decision = read_json(path, "round decision")
        out.append(f"round {path.stem[1:]}: {decision.get('reason', decision)}")
    return out


def write_chain_summary(evals: dict[str, str | Path], source_dataset: str, rounds_dir: str | Path | None,
                        out_md: str | Path, out_csv: str | Path | None = None) -> str:
    """:func:`chain_summary` written out: the markdown to ``out_md``, the table to ``out_csv`` (each
    atomically); returns the markdown."""
    markdown, table = chain_summary(evals, source_dataset, rounds_dir)
    write_text(out_md, markdown)
    if out_csv:
        with atomic_path(out_csv) as tmp:
            table.to_csv(tmp, index=False)
    return markdown


def _spread(values: list[float]) -> float:
    return float(pd.Series(values).std(ddof=1)) if len(values) > 1 else float("nan")


# The verdicts of a real change (:meth:`PairedChange.verdict`); the ladder figure marks these.
VERDICT_UP, VERDICT_DOWN = "yes", "below"
REAL_VERDICTS = (VERDICT_UP, VERDICT_DOWN)


@dataclass(frozen=True)
class PairedChange:
    """``a - b`` seed by seed over the seeds both have: the mean, the spread (standard deviation) of the
    differences and how many seeds were paired."""
    mean: float
    spread: float
    n_seeds: int

    @property
    def real(self) -> bool:
        """Larger than its spread: the one rule by which a change counts (two seeds at least)."""
        return self.n_seeds > 1 and abs(self.mean) > self.spread

    def verdict(self, *, direction: bool = False) -> str:
        """``yes`` (real), ``no difference`` or ``one seed``; with ``direction``, a real change reads
        ``yes`` when positive and ``below`` when negative."""
        if self.n_seeds == 0:
            return ""
        if self.n_seeds == 1:
            return "one seed"
        if not self.real:
            return "no difference"
        return VERDICT_DOWN if direction and self.mean < 0 else VERDICT_UP


def paired_change(a: dict[int, float], b: dict[int, float]) -> PairedChange:
    """:class:`PairedChange` of ``a - b``, both given per seed; NaN values (a number that was not
    measured) leave their seed out."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b)) if a[s] == a[s] and b[s] == b[s]]
    if not diffs:
        return PairedChange(float("nan"), float("nan"), 0)
    return PairedChange(float(pd.Series(diffs).mean()), _spread(diffs), len(diffs))


def seed_columns(per_seed: dict[int, float]) -> dict:
    """A metric over seeds as table columns: ``n_seeds``, ``miou_mean``, its spread ``miou_std`` and each
    seed's value in seed order (``miou_seeds``)."""
    values = [per_seed[s] for s in sorted(per_seed)]
    return {"n_seeds": len(values), "miou_mean": float(pd.Series(values, dtype=float).mean()),
            "miou_std": _spread(values), "miou_seeds": ";".join(f"{v:.4f}" for v in values)}


def control_columns(change: PairedChange | None = None) -> dict:
    """A row's paired change against its control (``vs_control``, ``vs_control_std``, ``beats_control``);
    without one, empty cells."""
    if change is None:
        return {"vs_control": float("nan"), "vs_control_std": float("nan"), "beats_control": ""}
    return {"vs_control": change.mean, "vs_control_std": change.spread,
            "beats_control": change.verdict(direction=True)}


def ablation_ladder(evals: list[tuple[str, str, int, str | Path]], metric: str = "miou",
                    rung_controls: dict[str, str] | None = None) -> pd.DataFrame:
    """Table 3's ladder over seeds: mean, spread, the paired change from the previous rung and from the
    rung's control.

    ``evals`` holds ``(label, kind, seed, metrics_json)``; kind is ``rung`` (in
    ladder order) or ``control``. A rung's ``delta`` is the mean over seeds of
    its mIoU minus the previous rung's, seed by seed; it is ``significant``
    only when larger than the spread (standard deviation over seeds) of those
    paired differences, so a change within the noise reads as no difference.
    ``rung_controls`` maps a rung's label to the label of the control it must
    also beat (default: :data:`~uncerda_core.stages.RUNG_CONTROLS`); its row
    gets ``control``, the paired ``vs_control`` and ``vs_control_std``, and
    ``beats_control`` (``yes``, ``no difference`` or ``below``) by the same rule.
    """
    if rung_controls is None:
        rung_controls = {RUNG_LABELS[rung]: CONTROL_LABELS[control] for rung, control in RUNG_CONTROLS.items()}
    by_label: dict[str, dict[int, float]] = {}
    kinds: dict[str, str] = {}
    protocols: dict[str, list[str]] = {}
    for label, kind, seed, path in evals:
        metrics = read_json(path, "metrics file")
        by_label.setdefault(label, {})[seed] = metrics[metric]
        kinds[label] = kind
        add_protocol(protocols.setdefault(label, []), metrics)
    rows, previous = [], None
    for label, per_seed in by_label.items():
        row = {"rung": label, "kind": kinds[label], **seed_columns(per_seed),
               "delta": float("nan"), "delta_std": float("nan"), "significant": "",
               "control": "", **control_columns()}
        if kinds[label] == "rung" and previous is not None:
            change = paired_change(per_seed, previous)
            row.update(delta=change.mean, delta_std=change.spread, significant=change.verdict())
        control = rung_controls.get(label) if kinds[label] == "rung" else None
        if control in by_label:
            row.update(control=control, **control_columns(paired_change(per_seed, by_label[control])))
        if kinds[label] == "rung":
            previous = per_seed
        row["protocol"] = "; ".join(protocols[label])
        rows.append(row)
    return pd.DataFrame(rows)


def add_protocol(seen: list[str], metrics: dict) -> None:
    """Collect the evaluation protocols of one row's metrics, each once, in order of appearance."""
    protocol = protocol_of(metrics)
    if protocol not in seen:
        seen.append(protocol)


# Table 5's reference method: every other row says by how much it is ahead (``gmm_*_gain`` columns).
PSEUDO_REFERENCE = "gmm"
# Precision pooled over pixels and its class mean (each class once: the view of the small classes, where
# a per-class selection should differ most), then the mIoU after self-training.
GAIN_KEYS = ("precision", "class_mean_precision", "miou")
# What Table 5 reads from each method's ``quality.json``; each gets a ``<key>_mean`` column.
QUALITY_KEYS = ("precision", "class_mean_precision", "coverage")


def pseudo_label_comparison(items: list[tuple[str, int, str | Path, str | Path]]) -> pd.DataFrame:
    """Table 5: per pseudo-label method, precision and coverage of its labels and the mIoU after ST.

    ``items`` holds ``(method, seed, quality_json or '', st_metrics_json or '')``; a method
    without self-training (CBST at the GMM's coverage, compared on precision) has no mIoU. Every
    other method's row also says by how much the reference method (``PSEUDO_REFERENCE``, the GMM)
    is ahead of it, seed by seed: ``gmm_precision_gain``, ``gmm_class_mean_precision_gain`` and
    ``gmm_miou_gain`` with their spreads and whether each is real (:class:`PairedChange`: ``yes``,
    ``no difference``, or ``below`` when the GMM is behind).
    """
    per_method: dict[str, dict[str, dict[int, float]]] = {}
    protocols: dict[str, list[str]] = {}
    for method, seed, quality, st_eval in items:
        entry = per_method.setdefault(method, {key: {} for key in (*QUALITY_KEYS, "miou")})
        protocols.setdefault(method, [])
        if quality and Path(quality).is_file():
            q = read_json(quality, "pseudo-label quality summary")
            for key in QUALITY_KEYS:
                value = q.get(key)
                entry[key][seed] = float("nan") if value is None else float(value)
        if st_eval:
            metrics = read_json(st_eval, "metrics file")
            entry["miou"][seed] = metrics["miou"]
            add_protocol(protocols[method], metrics)
    reference = PSEUDO_REFERENCE
    ref = per_method.get(reference)
    rows = []
    for method, e in per_method.items():
        mean = lambda v: float(pd.Series(list(v.values()), dtype=float).mean()) if v else float("nan")  # noqa: E731
        row = {"method": method, **{f"{key}_mean": mean(e[key]) for key in QUALITY_KEYS},
               "miou_mean": mean(e["miou"]), "miou_std": _spread(list(e["miou"].values())),
               "n_seeds": max(len(e["miou"]), len(e["precision"]))}
        if ref is not None and method != reference:
            for key in GAIN_KEYS:
                change = paired_change(ref[key], e[key])
                row.update({f"{reference}_{key}_gain": change.mean, f"{reference}_{key}_gain_std": change.spread,
                            f"{reference}_{key}_gain_real": change.verdict(direction=True)})
        row["protocol"] = "; ".join(protocols[method])
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table[[c for c in table.columns if c != "protocol"] + ["protocol"]]  # the reference's row has no gains


# The two class groups of :func:`sk_class_comparison`: the classes of the S_k that guided the first
# target-guided round (the uncertain classes the rounds are meant to rectify), and every other class.
SK_GROUP, OTHER_GROUP = "S_k of round 1", "other classes"


# Table 4 of the paper (GTA5 -> Cityscapes mIoU, %), as fractions, by (method, lambda in Table 4's convention:
# 0 = no balance, 1 = class balance; our tgaa.balance). Class balance is lambda 1.0: both read 45.7.
PAPER_TABLE4 = {("No-Balance", ""): 0.429, ("Class-Balance", ""): 0.457, ("Focal Loss", ""): 0.445,
                ("Soft-Balance", "0.3"): 0.447, ("Soft-Balance", "0.5"): 0.448, ("Soft-Balance", "0.7"): 0.459,
                ("Soft-Balance", "0.9"): 0.461, ("Soft-Balance", "1"): 0.457}
NO_BALANCE = "No-Balance"


def sampling_comparison(items: list[tuple[str, str, int, str | Path, str | Path]]) -> pd.DataFrame:
    """Table 4 over seeds: each sampling strategy's mIoU, its paired change against the no-balance round
    (``vs_control``, verdict ``beats_control`` by the ladder's rule), how far its draws move the pixel share
    of the rarest classes against uniform draws (``rarest_draws``, from the weights' provenance record) and
    the paper's value beside.

    ``items`` holds ``(method, lambda, seed, metrics_json, weights_csv)`` in table order; ``lambda`` is the
    balance as Table 4 writes it ("" for the rows without one).
    """
    per_row: dict[tuple[str, str], dict[int, float]] = {}
    draws: dict[tuple[str, str], float] = {}
    for method, lam, seed, metrics_path, weights_path in items:
        per_row.setdefault((method, lam), {})[seed] = read_json(metrics_path, "metrics file")["miou"]
        if (method, lam) not in draws:
            summary = read_provenance(weights_path).get("draws", {})
            multiplier = summary.get("rarest_multiplier")
            draws[(method, lam)] = float("nan") if multiplier is None else float(multiplier)
    if not any(method == NO_BALANCE for method, _ in per_row):
        raise UncerdaError(f"Table 4: no '{NO_BALANCE}' row to compare the others with")
    baseline = next(seeds for (method, _), seeds in per_row.items() if method == NO_BALANCE)
    rows = []
    for (method, lam), per_seed in per_row.items():
        paper = PAPER_TABLE4.get((method, lam), float("nan"))
        is_baseline = method == NO_BALANCE
        rows.append({"method": method, "lambda": lam, **seed_columns(per_seed),
                     "control": "" if is_baseline else NO_BALANCE,
                     **control_columns(None if is_baseline else paired_change(per_seed, baseline)),
                     "rarest_draws": draws[(method, lam)], "paper_miou": paper,
                     "paper_vs_no_balance": paper - PAPER_TABLE4[(NO_BALANCE, "")]})
    return pd.DataFrame(rows)


def sensitivity_comparison(items: list[tuple[str, int, str | Path]], reference: str) -> pd.DataFrame:
    """Fig. 8's trained settings over seeds: each setting's mIoU and its paired change against the
    ``reference`` setting (the chain's own alpha, mu and k: its first target-guided round), by the ladder's
    rule. ``items`` holds ``(setting, seed, metrics_json)``; a setting reads ``alpha=A mu=M`` or ``k=K``."""
    per_setting: dict[str, dict[int, float]] = {}
    models: dict[str, str] = {}   # the model a setting's evaluation is of (the reference's k is its round)
    for setting, seed, path in items:
        per_setting.setdefault(setting, {})[seed] = read_json(path, "metrics file")["miou"]
        models.setdefault(setting, Path(path).stem)
    if reference not in per_setting:
        raise UncerdaError(f"sensitivity: no evaluation of the reference setting {reference!r}")
    rows = []
    for setting, per_seed in per_setting.items():
        is_reference = setting == reference
        rows.append({"setting": setting, "model": models[setting], **seed_columns(per_seed),
                     "control": "" if is_reference else reference,
                     **control_columns(None if is_reference else paired_change(per_seed, per_setting[reference]))})
    return pd.DataFrame(rows)


# Table 5 of the paper (GTA5 -> Cityscapes mIoU, as fractions) by (model, pseudo labels); ADVENT is not in
# Table 5: its adapted model's mIoU is Table 1's.
PAPER_TABLE5 = {("AdaptSegNet", "none"): (0.424, "Table 5"), ("AdaptSegNet", "cbst"): (0.471, "Table 5"),
                ("AdaptSegNet", "gmm"): (0.478, "Table 5"), ("MRNet", "none"): (0.455, "Table 5"),
                ("MRNet", "cbst"): (0.497, "Table 5"), ("MRNet", "gmm"): (0.512, "Table 5"),
                ("UncerDA (AA)", "none"): (0.488, "Table 5"), ("UncerDA (AA)", "cbst"): (0.512, "Table 5"),
                ("UncerDA (AA)", "gmm"): (0.526, "Table 5"), ("ADVENT", "none"): (0.455, "Table 1")}
# Table 5's pseudo-label rows in order, as the paper names them; the equal-coverage row is compared on precision.
T5_ROWS = {"none": "-", "cbst": "CBST", "gmm": "Ours (GMM)", "cbst_at_gmm_coverage": "CBST at the GMM's coverage"}


def pseudo_model_comparison(items: list[tuple[str, str, int, str | Path, str | Path]]) -> pd.DataFrame:
    """Table 5 over seeds: for each adaptation model, the model itself and the self-training on its CBST and
    GMM pseudo labels, with paired changes by the ladder's rule.

    ``items`` holds ``(model, pseudo, seed, metrics_json or '', quality_json or '')``, ``pseudo`` one of
    :data:`T5_ROWS`. Each self-trained row's ``vs_control`` is its change over the model itself; the GMM row
    also gives its lead over CBST (``gmm_vs_cbst``) and, when CBST at the GMM's coverage was measured, its
    precision lead at that equal coverage (``precision_gain_equal_coverage``). The paper's value is beside.
    """
    miou: dict[tuple[str, str], dict[int, float]] = {}
    quality: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    order: list[tuple[str, str]] = []
    for model, pseudo, seed, metrics, quality_path in items:
        if pseudo not in T5_ROWS:
            raise UncerdaError(f"Table 5: unknown pseudo labels {pseudo!r} (expected one of {', '.join(T5_ROWS)})")
        key = (model, pseudo)
        if key not in order:
            order.append(key)
        if metrics:
            miou.setdefault(key, {})[seed] = read_json(metrics, "metrics file")["miou"]
        if quality_path:
            q = read_json(quality_path, "pseudo-label quality summary")
            for name in QUALITY_KEYS:
                value = q.get(name)
                quality.setdefault(key, {}).setdefault(name, {})[seed] = float("nan") if value is None else float(value)
    models = list(dict.fromkeys(model for model, _ in order))   # as given; each model's rows in T5_ROWS's order
    rows = []
    for model, pseudo in [(m, p) for m in models for p in T5_ROWS if (m, p) in order]:
        per_seed = miou.get((model, pseudo), {})
        q = quality.get((model, pseudo), {})
        base = miou.get((model, "none"))
        mean = lambda v: float(pd.Series(list(v.values()), dtype=float).mean()) if v else float("nan")  # noqa: E731
        row = {"model": model, "pseudo_labels": T5_ROWS[pseudo],
               **(seed_columns(per_seed) if per_seed else {"n_seeds": len(q.get("precision", {})), "miou_mean": float("nan"),
                                                          "miou_std": float("nan"), "miou_seeds": ""}),
               **control_columns(paired_change(per_seed, base) if per_seed and base and pseudo != "none" else None),
               **{f"{name}_mean": mean(q.get(name, {})) for name in QUALITY_KEYS}}
        gain = gain_eq = None
        if pseudo == "gmm":
            cbst = miou.get((model, "cbst"))
            gain = paired_change(per_seed, cbst) if cbst else None
            at = quality.get((model, "cbst_at_gmm_coverage"), {}).get("precision")
            gain_eq = paired_change(q.get("precision", {}), at) if at else None
        for name, change in (("gmm_vs_cbst", gain), ("precision_gain_equal_coverage", gain_eq)):
            row.update({name: float("nan") if change is None else change.mean,
                        f"{name}_std": float("nan") if change is None else change.spread,
                        f"{name}_real": "" if change is None else change.verdict(direction=True)})
        paper, where = PAPER_TABLE5.get((model, pseudo), (float("nan"), ""))
        paper_base = PAPER_TABLE5.get((model, "none"), (float("nan"), ""))[0]
        row.update(paper_miou=paper, paper_vs_model=paper - paper_base if pseudo != "none" else float("nan"),
                   paper_source=where)
        rows.append(row)
    return pd.DataFrame(rows)


def group_iou(per_class_iou: dict[str, float | None], classes: list[str]) -> float:
    """Mean IoU over ``classes``, leaving out a class without a value (absent from the evaluated split);
    NaN when none has one."""
    values = [per_class_iou[c] for c in classes if per_class_iou.get(c) is not None]
    return float(sum(values) / len(values)) if values else float("nan")


def sk_class_comparison(items: list[tuple[int, str | Path, dict[str, str | Path]]], reference: str, control: str,
                        class_ids: tuple[int, ...] | None = None) -> pd.DataFrame:
    """Where a target-guided chain's change against its control lies: on the classes it was guided by,
    or on the others.

    ``items`` holds ``(seed, rank_csv, {label: metrics_json})``: the ranking whose S_k guided the first
    target-guided round, and the models to compare, in the order of the rows (the rounds' starting model,
    ``reference`` = the final target-guided model, ``control`` = +SR run for as many rounds). For each
    class group (:data:`SK_GROUP`, that seed's S_k; :data:`OTHER_GROUP`, the rest of ``class_ids``, all
    19 classes by default) a row per model holds the group's mean IoU over seeds (``miou_mean``, its
    spread and each seed's value); the ``reference`` row also holds its paired change against
    ``control`` (:class:`PairedChange`: ``vs_control``, ``vs_control_std``, ``beats_control``). The first
    row names each seed's S_k (``classes_by_seed``).
    """
    names = [CLASS_NAMES[c] for c in (class_ids if class_ids is not None else range(len(CLASS_NAMES)))]
    if not items:
        return pd.DataFrame()
    # group -> model label -> seed -> the group's mean IoU
    values: dict[str, dict[str, dict[int, float]]] = {SK_GROUP: {}, OTHER_GROUP: {}}
    sk_by_seed: dict[int, list[str]] = {}
    for seed, rank_csv, models in items:
        sk = [c for c in read_sk_classes(rank_csv) if c in names]
        sk_by_seed[seed] = sk
        groups = {SK_GROUP: sk, OTHER_GROUP: [c for c in names if c not in sk]}
        for label, path in models.items():
            per_class = read_json(path, "metrics file")["per_class_iou"]
            for group, classes in groups.items():
                values[group].setdefault(label, {})[seed] = group_iou(per_class, classes)
    rows = []
    for group, per_label in values.items():
        for label, per_seed in per_label.items():
            change = None
            if label == reference and control in per_label:
                change = paired_change(per_seed, per_label[control])
            rows.append({"classes": group, "model": label, **seed_columns(per_seed), **control_columns(change),
                         "classes_by_seed": ""})
    rows[0]["classes_by_seed"] = "; ".join(f"{s}: {' '.join(sk)}" for s, sk in sorted(sk_by_seed.items()))
    return pd.DataFrame(rows)


# Columns holding fractions, shown as percentages with one decimal in the markdown and HTML tables: the
# summary's mIoU and per-class IoU, the ladder's and the pseudo-label comparison's means, spreads and changes.
FRACTION_COLUMNS = frozenset({"miou", "miou13", *CLASS_NAMES, "miou_mean", "miou_std", "delta", "delta_std",
                              "vs_control", "vs_control_std", "paper_miou", "paper_vs_no_balance", "paper_vs_model",
                              "gmm_vs_cbst", "gmm_vs_cbst_std", "precision_gain_equal_coverage",
                              "precision_gain_equal_coverage_std",
                              *(f"{key}_mean" for key in QUALITY_KEYS),
                              *(f"{PSEUDO_REFERENCE}_{key}_gain{suffix}"
                                for key in GAIN_KEYS for suffix in ("", "_std"))})
# Columns whose largest value is no "best" (spreads, counts, per-seed lists, differences to a control or to
# another method).
NOT_BEST = ("std", "spread", "seeds", "n_", "pixels", "count", "kind", "images", "control", "gain", "paper", "draws")


def format_cell(value, column: str, percent: tuple[str, ...] | frozenset[str] = ()) -> str:
    """One table cell: a float as a percentage with one decimal (columns in ``percent``) or with 4
    significant digits, NaN as ``-``; anything else as text."""
    if isinstance(value, float):
        return "-" if value != value else (f"{100 * value:.1f}" if column in percent else f"{value:.4g}")
    return str(value)


def frame_to_markdown(df: pd.DataFrame, percent: tuple[str, ...] | frozenset[str] = ()) -> str:
    """A plain markdown table; columns in ``percent`` are shown as percentages with one decimal."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(format_cell(row[c], c, percent) for c in cols) + " |")
    return "\n".join(lines)


def best_cells(df: pd.DataFrame) -> pd.DataFrame:
    """True where a cell holds its column's largest value, in every numeric column that is no spread or
    count (``NOT_BEST``) and whose values differ. Controls (``kind`` = ``control``, e.g. the target oracle)
    are no candidates."""
    best = pd.DataFrame(False, index=df.index, columns=df.columns)
    candidates = df["kind"].astype(str).str.lower() != "control" if "kind" in df else pd.Series(True, df.index)
    if candidates.sum() < 2:
        return best
    for column in df.columns:
        if any(word in str(column).lower() for word in NOT_BEST) or not pd.api.types.is_numeric_dtype(df[column]) \
                or pd.api.types.is_bool_dtype(df[column]):
            continue
        values = df.loc[candidates, column].astype(float).dropna()
        if len(values) > 1 and values.max() > values.min():
            best[column] = candidates & (df[column] == values.max())
    return best


HTML_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 13px;
       color: #222; margin: 16px; }
h1 { font-size: 20px; margin: 4px 0 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d0d0; padding: 3px 6px; white-space: nowrap; text-align: right; }
th { background: #f0f2f5; font-weight: 600; }
td:first-child { text-align: left; }
tr:nth-child(even) td { background-color: #fafafa; }
strong.best { font-weight: 700; background: #e6f4ea; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
p.source { color: #777; font-size: 12px; }
"""


def frame_to_html(df: pd.DataFrame, percent: tuple[str, ...] | frozenset[str] = (), mark_best: bool = True) -> str:
    """The table as HTML (``DataFrame.to_html``), cells formatted as in :func:`frame_to_markdown`; with
    ``mark_best`` the largest value of each column (:func:`best_cells`) is marked ``<strong class="best">``."""
    best = best_cells(df) if mark_best else pd.DataFrame(False, index=df.index, columns=df.columns)
    shown = pd.DataFrame({c: [html.escape(format_cell(v, c, percent)) for v in df[c]] for c in df.columns},
                         index=df.index)
    shown = shown.mask(best, '<strong class="best">' + shown + "</strong>")
    shown.columns = [html.escape(str(c)) for c in df.columns]
    return shown.to_html(index=False, escape=False, border=0)


def html_page(df: pd.DataFrame, out: str | os.PathLike, title: str, notes: list[str] = (),
              source: str | None = None) -> Path:
    """A standalone HTML page (inline style, no scripts): ``title``, the table (fractions as percentages,
    the best of each column marked), ``notes`` as a list under it, and the file it came from."""
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    foot = f'<p class="source">From <code>{html.escape(source)}</code>.</p>' if source else ""
    text = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{HTML_STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f"{frame_to_html(df, FRACTION_COLUMNS)}\n{f'<ul>{items}</ul>' if items else ''}\n{foot}\n"
            "</body></html>\n")
    out = Path(out)
    with atomic_path(out, suffix=".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


def write_ablation_tables(evals: list[tuple[str, str, int, str | Path]],
                          pseudo: list[tuple[str, int, str | Path, str | Path]], out_dir: str | Path,
                          record: dict) -> dict[str, str]:
    """Table 3's ladder (:func:`ablation_ladder`) and Table 5's comparison (:func:`pseudo_label_comparison`)
    written to ``out_dir``: ``ladder.{csv,md}`` and ``pseudo_methods.{csv,md}``, each CSV with the provenance
    ``record`` beside it. Returns each table's markdown by name."""
    return {name: write_table(df, out_dir, name, record)
            for name, df in (("ladder", ablation_ladder(evals)), ("pseudo_methods", pseudo_label_comparison(pseudo)))}


def write_table(df: pd.DataFrame, out_dir: str | Path, name: str, record: dict) -> str:
    """``df`` as ``<name>.csv`` with the provenance ``record`` beside it and as ``<name>.md`` (fractions as
    percentages) in ``out_dir``; returns the markdown."""
    out = Path(out_dir)
    with atomic_path(out / f"{name}.csv") as tmp:
        df.to_csv(tmp, index=False)
    write_sidecar(out / f"{name}.csv", record)
    markdown = frame_to_markdown(df, FRACTION_COLUMNS)
    write_text(out / f"{name}.md", markdown + "\n")
    return markdown
