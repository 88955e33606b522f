"""Result tables: the main chain's summary and the ablation ladder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from uncerda_core.data.labels import CLASS_NAMES, eval_class_ids
from uncerda_core.errors import UncerdaError
from uncerda_core.evaluate.evaluate import format_table, protocol_of


def load_metrics(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: metrics file not found")
    return json.loads(path.read_text())


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
    results = {label: load_metrics(path) for label, path in evals.items()}
    subsets = eval_class_ids(source_dataset)
    lines = ["# Results on target val", "", format_table(results, subsets), ""]
    protocols = {label: protocol_of(res) for label, res in results.items()}
    if len(set(protocols.values())) == 1:
        lines += [f"Evaluation protocol: {next(iter(protocols.values()))}.", ""]
    else:
        lines += ["Evaluation protocols (they differ between rungs):", ""]
        lines += [f"- {label}: {protocol}" for label, protocol in protocols.items()] + [""]
    if rounds_dir is not None and Path(rounds_dir).is_dir():
        lines += ["## Target-guided rounds", ""]
        for path in sorted(Path(rounds_dir).glob("r*.json"), key=lambda p: int(p.stem[1:])):
            decision = json.loads(path.read_text())
            lines.append(f"- round {path.stem[1:]}: {decision.get('reason', decision)}")
        lines.append("")
    return "\n".join(lines), metrics_frame(results)


def _spread(values: list[float]) -> float:
    return float(pd.Series(values).std(ddof=1)) if len(values) > 1 else float("nan")


def ablation_ladder(evals: list[tuple[str, str, int, str | Path]], metric: str = "miou") -> pd.DataFrame:
    """Table 3's ladder over seeds: mean, spread and the paired change from the previous rung.

    ``evals`` holds ``(label, kind, seed, metrics_json)``; kind is ``rung`` (in
    ladder order) or ``control``. A rung's ``delta`` is the mean over seeds of
    its mIoU minus the previous rung's, seed by seed; it is ``significant``
    only when larger than the spread (standard deviation over seeds) of those
    paired differences, so a change within the noise reads as no difference.
    """
    by_label: dict[str, dict[int, float]] = {}
    kinds: dict[str, str] = {}
    protocols: dict[str, list[str]] = {}
    for label, kind, seed, path in evals:
        metrics = load_metrics(path)
        by_label.setdefault(label, {})[seed] = metrics[metric]
        kinds[label] = kind
        _add_protocol(protocols.setdefault(label, []), metrics)
    rows, previous = [], None
    for label, per_seed in by_label.items():
        values = [per_seed[s] for s in sorted(per_seed)]
        row = {"rung": label, "kind": kinds[label], "n_seeds": len(values),
               "miou_mean": float(pd.Series(values).mean()), "miou_std": _spread(values),
               "miou_seeds": ";".join(f"{v:.4f}" for v in values),
               "delta": float("nan"), "delta_std": float("nan"), "significant": ""}
        if kinds[label] == "rung" and previous is not None:
            common = sorted(set(per_seed) & set(previous))
            diffs = [per_seed[s] - previous[s] for s in common]
            if diffs:
                row["delta"] = float(pd.Series(diffs).mean())
                row["delta_std"] = _spread(diffs)
                spread = row["delta_std"]
                row["significant"] = ("yes" if len(diffs) > 1 and abs(row["delta"]) > spread
                                      else "no difference" if len(diffs) > 1 else "one seed")
        if kinds[label] == "rung":
            previous = per_seed
        row["protocol"] = "; ".join(protocols[label])
        rows.append(row)
    return pd.DataFrame(rows)


def _add_protocol(seen: list[str], metrics: dict) -> None:
    """Collect the evaluation protocols of one row's metrics, each once, in order of appearance."""
    protocol = protocol_of(metrics)
    if protocol not in seen:
        seen.append(protocol)


def pseudo_label_comparison(items: list[tuple[str, int, str | Path, str | Path]]) -> pd.DataFrame:
    """Table 5: per pseudo-label method, precision and coverage of its labels and the mIoU after ST.

    ``items`` holds ``(method, seed, quality_json or '', st_metrics_json or '')``; a method
    without self-training (CBST at the GMM's coverage, compared on precision) has no mIoU.
    """
    per_method: dict[str, dict[str, list[float]]] = {}
    for method, seed, quality, st_eval in items:
        entry = per_method.setdefault(method, {"precision": [], "coverage": [], "miou": [], "protocol": []})
        if quality and Path(quality).is_file():
            q = json.loads(Path(quality).read_text())
            for key in ("precision", "coverage"):
                value = q.get(key)
                entry[key].append(float("nan") if value is None else float(value))
        if st_eval:
            metrics = load_metrics(st_eval)
            entry["miou"].append(metrics["miou"])
            _add_protocol(entry["protocol"], metrics)
    rows = []
    for method, e in per_method.items():
        mean = lambda v: float(pd.Series(v).mean()) if v else float("nan")  # noqa: E731
        rows.append({"method": method, "precision_mean": mean(e["precision"]), "coverage_mean": mean(e["coverage"]),
                     "miou_mean": mean(e["miou"]), "miou_std": _spread(e["miou"]),
                     "n_seeds": max(len(e["miou"]), len(e["precision"])),
                     "protocol": "; ".join(e["protocol"])})
    return pd.DataFrame(rows)


def frame_to_markdown(df: pd.DataFrame, percent: tuple[str, ...] = ()) -> str:
    """A plain markdown table; columns in ``percent`` are shown as percentages with one decimal."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                cells.append("-" if v != v else (f"{100 * v:.1f}" if c in percent else f"{v:.4g}"))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
