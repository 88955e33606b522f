"""Result tables: the main chain's summary and the ablation ladder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from uncerda_core.artifacts import UncerdaError
from uncerda_core.data.labels import CLASS_NAMES, eval_class_ids
from uncerda_core.evaluate.evaluate import format_table


def load_metrics(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: metrics file not found")
    return json.loads(path.read_text())


def metrics_frame(results: dict[str, dict]) -> pd.DataFrame:
    """One row per model: mIoU subsets and per-class IoU (fractions)."""
    rows = []
    for name, res in results.items():
        row = {"model": name, "miou": res["miou"]}
        if "miou13" in res:
            row["miou13"] = res["miou13"]
        row.update({c: res["per_class_iou"][c] for c in CLASS_NAMES})
        rows.append(row)
    return pd.DataFrame(rows)


def chain_summary(evals: dict[str, str | Path], source_dataset: str,
                  rounds_dir: str | Path | None = None) -> tuple[str, pd.DataFrame]:
    """Markdown and table of the main chain: one row per rung, plus how the round loop ended."""
    results = {label: load_metrics(path) for label, path in evals.items()}
    subsets = eval_class_ids(source_dataset)
    lines = ["# Results on target val", "", format_table(results, subsets), ""]
    if rounds_dir is not None and Path(rounds_dir).is_dir():
        lines += ["## Target-guided rounds", ""]
        for path in sorted(Path(rounds_dir).glob("r*.json"), key=lambda p: int(p.stem[1:])):
            decision = json.loads(path.read_text())
            lines.append(f"- round {path.stem[1:]}: {decision.get('reason', decision)}")
        lines.append("")
    return "\n".join(lines), metrics_frame(results)
