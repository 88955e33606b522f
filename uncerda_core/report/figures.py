"""Figures of the Snakemake report: data in, one PNG file out.

Every ``*_figure`` function takes plain data (dicts, data frames, arrays),
draws one matplotlib figure with the Agg backend and writes it atomically to
``out``; it returns the path. Reading the workflow's files into that data is
:mod:`uncerda_core.report.inputs`' job. Nothing here knows about Snakemake.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from uncerda_core.artifacts import atomic_path  # noqa: E402
from uncerda_core.data.labels import CLASS_NAMES, IGNORE, TRAIN_ID_COLORS, colorize  # noqa: E402
from uncerda_core.errors import UncerdaError  # noqa: E402
from uncerda_core.report.inputs import Example  # noqa: E402
from uncerda_core.report.tables import REAL_VERDICTS  # noqa: E402
from uncerda_core.uncertainty.equations import logistic_weight, reading_weight  # noqa: E402
from uncerda_core.uncertainty.rank import sk_flags  # noqa: E402
from uncerda_core.uncertainty.weights import draw_summary  # noqa: E402

DPI = 110
FIRST_COLOR = "#9e9e9e"   # the baseline stage (source only)
LAST_COLOR = "#d62728"    # the final stage (self-training)
SELECT_COLOR = "#2ca02c"  # positive component and selected entropy intervals
REJECT_COLOR = "#d62728"  # negative component
MISSING_COLOR = "#eeeeee"


def _save(fig, out: str | os.PathLike) -> Path:
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)
    return out


def stage_colors(n: int) -> list[str]:
    """Colours of ``n`` ordered stages: grey first, red last, blues in between (light to dark)."""
    if n <= 0:
        return []
    if n == 1:
        return [LAST_COLOR]
    middle = plt.get_cmap("Blues")(np.linspace(0.45, 0.9, max(n - 2, 1)))[: n - 2]
    return [FIRST_COLOR, *[to_hex(c) for c in middle], LAST_COLOR]


def _percent(value: Any) -> float:
    return float("nan") if value is None else 100.0 * float(value)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666", fontsize=9,
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# --- per-class IoU per stage (Fig. 6) ----------------------------------------------------------------

def iou_figure(results: Mapping[str, Mapping[str, Any]], out: str | os.PathLike,
               class_names: Sequence[str] = CLASS_NAMES, highlight: Sequence[str] = (),
               title: str = "Per-class IoU on target val, per stage") -> Path:
    """Grouped bars: one group per class (and mIoU last), one bar per stage, IoU in %.

    ``results`` maps a stage label (in chain order) to an evaluation result
    with ``per_class_iou`` (class -> fraction or None when the class appears
    neither in the ground truth nor in the predictions) and ``miou``.
    ``highlight`` names classes to mark (e.g. round 0's S_k): their tick
    labels are bold with an asterisk.
    """
    if not results:
        raise UncerdaError("iou figure: no evaluation results given")
    stages = list(results)
    groups = list(class_names) + ["mIoU"]
    values = np.full((len(stages), len(groups)), np.nan)
    for i, stage in enumerate(stages):
        per_class = results[stage].get("per_class_iou", {})
        for j, name in enumerate(class_names):
            values[i, j] = _percent(per_class.get(name))
        values[i, -1] = _percent(results[stage].get("miou"))
    colors = stage_colors(len(stages))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.45 * len(groups) + 1.5), 5.2))
    x = np.arange(len(groups), dtype=float)
    x[-1] += 0.6  # set mIoU apart
    width = 0.85 / len(stages)
    for i, stage in enumerate(stages):
        offset = (i - (len(stages) - 1) / 2) * width
        ax.bar(x + offset, np.nan_to_num(values[i]), width, color=colors[i], label=stage,
               edgecolor="white", linewidth=0.3)
    absent = np.all(np.isnan(values[:, :-1]), axis=0)
    for j in np.flatnonzero(absent):
        ax.text(x[j], 1.0, "n/a", ha="center", va="bottom", fontsize=7, color="#888888", rotation=90)
    top = np.nanmax(values) if np.isfinite(values).any() else 0.0
    ax.set_ylim(0, max(10.0, min(100.0, top * 1.15 + 2)))
    ax.axvline(x[-1] - 0.8, color="#cccccc", linewidth=0.8)
    highlight = set(highlight)
    labels = [f"{g}*" if g in highlight else g for g in groups]
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=9, rotation_mode="anchor")
    for tick, g in zip(ax.get_xticklabels(), groups):
        if g in highlight or g == "mIoU":
            tick.set_fontweight("bold")
        if g in class_names and absent[list(class_names).index(g)]:
            tick.set_color("#999999")
    ax.set_ylabel("IoU (%)")
    ax.set_xlim(x[0] - 0.6, x[-1] + 0.6)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    note = "\n* = in round 0's S_k; n/a = class in neither ground truth nor predictions" if highlight else ""
    ax.set_title(title + note, fontsize=10)
    ax.legend(ncol=min(len(stages), 6), fontsize=8, frameon=False, loc="upper left")
    fig.tight_layout()
    return _save(fig, out)


# --- class-uncertainty ranking per round -------------------------------------------------------------

def rank_figure(rankings: Mapping[str, pd.DataFrame], out: str | os.PathLike,
                notes: Mapping[str, str] | None = None,
                title: str = "Class uncertainty (Eq. 1) per round: rank and S_k") -> Path:
    """A class x round heat map: colour = mean normalised entropy, number = rank, boxed = in S_k.

    ``rankings`` maps a round label (in order) to its ranking table
    (``class_id,class,mean_entropy,pixels,rank,in_sk``). A class predicted
    nowhere (no mean) is hatched grey. ``notes`` adds a line under a round.
    """
    if not rankings:
        raise UncerdaError("rank figure: no ranking tables given")
    rounds = list(rankings)
    first = rankings[rounds[0]].sort_values("class_id")
    classes = list(first["class"])
    n = len(classes)
    ent = np.full((n, len(rounds)), np.nan)
    rank = np.zeros((n, len(rounds)), dtype=int)
    in_sk = np.zeros((n, len(rounds)), dtype=bool)
    for j, label in enumerate(rounds):
        df = rankings[label].sort_values("class_id")
        if list(df["class"]) != classes:
            raise UncerdaError(f"rank figure: round {label!r} lists other classes than round {rounds[0]!r}")
        ent[:, j] = pd.to_numeric(df["mean_entropy"], errors="coerce").to_numpy()
        rank[:, j] = df["rank"].to_numpy()
        in_sk[:, j] = sk_flags(df)
    finite = ent[np.isfinite(ent)]
    vmax = max(float(finite.max()) if finite.size else 1.0, 1e-3)
    cmap = plt.get_cmap("YlOrRd").with_extremes(bad=MISSING_COLOR)
    fig, ax = plt.subplots(figsize=(3.2 + 1.25 * len(rounds), 0.34 * n + 2.2))
    image = ax.imshow(np.ma.masked_invalid(ent), cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    for i in range(n):
        for j in range(len(rounds)):
            if not np.isfinite(ent[i, j]):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#c8c8c8",
                                       linewidth=0))
            if in_sk[i, j]:
                ax.add_patch(Rectangle((j - 0.46, i - 0.44), 0.92, 0.88, fill=False, edgecolor="#1f3b73",
                                       linewidth=2.0))
            dark = np.isfinite(ent[i, j]) and ent[i, j] > 0.6 * vmax
            ax.text(j, i, str(rank[i, j]), ha="center", va="center", fontsize=8,
                    fontweight="bold" if in_sk[i, j] else "normal", color="white" if dark else "#222222")
    ax.set_yticks(range(n))
    ax.set_yticklabels(classes, fontsize=8)
    xlabels = []
    for label in rounds:
        k = int(in_sk[:, rounds.index(label)].sum())
        extra = f"\n{notes[label]}" if notes and notes.get(label) else ""
        xlabels.append(f"{label}\n|S_k| = {k}{extra}")
    ax.set_xticks(range(len(rounds)))
    ax.set_xticklabels(xlabels, fontsize=8)
    ax.xaxis.set_ticks_position("top")
    ax.tick_params(length=0)
    cbar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03)
    cbar.set_label("mean normalised entropy of the pixels predicted as the class", fontsize=8)
    handles = [Patch(facecolor="white", edgecolor="#1f3b73", linewidth=2, label="in S_k (bold rank)"),
               Patch(facecolor=MISSING_COLOR, hatch="///", edgecolor="#c8c8c8",
                     label="never predicted (ranked most uncertain)")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=1, fontsize=8, frameon=False)
    ax.set_title(title + "\nnumber = rank (1 = most uncertain)", fontsize=10, pad=12)
    fig.tight_layout()
    return _save(fig, out)


# --- source sampling weights per round (Eqs. 3-5) ----------------------------------------------------

eq5 = logistic_weight    # Eq. 5's curve as printed (the weighted_mean reading's weight)


def weights_figure(weights: Mapping[str, pd.DataFrame], out: str | os.PathLike,
                   alpha: float | None = None, mu: float | None = None,
                   sk: Mapping[str, Sequence[str]] | None = None, reading: str = "class_draw",
                   draws: Mapping[str, Mapping[str, Any]] | None = None,
                   title: str = "Source sampling weights per target-guided round") -> Path:
    """Left: Eq. 5 under ``reading`` (weight against the normalised image probability p_i), every image a dot.
    Right: the distribution of each image's sampling probability relative to uniform sampling.

    ``weights`` maps a round label to its table (``name,p_i,p_norm,weight,probability``);
    ``sk`` the S_k class names that drove each round (legend); ``draws`` each round's draw summary
    (``uncertainty.weights.DrawSummary`` as a dict): the legend says how its draws move the pixel share of
    S_k and of the rarest classes against uniform draws.
    """
    if not weights:
        raise UncerdaError("weights figure: no weight tables given")
    rounds = list(weights)
    colors = plt.get_cmap("tab10")(np.arange(len(rounds)) % 10)
    fig, (left, right) = plt.subplots(2, 1, figsize=(9.5, 9.0))
    if alpha is not None and mu is not None:
        grid = np.linspace(0, 1, 400)
        left.plot(grid, reading_weight(grid, alpha, mu, reading), color="#333333", linewidth=1.2,
                  label=f"Eq. 5, {reading} reading (alpha={alpha:g}, mu={mu:g})")
    rel_all = []
    for color, label in zip(colors, rounds):
        df = weights[label]
        left.scatter(df["p_norm"], df["weight"], s=9, alpha=0.55, color=color, label=label, linewidths=0)
        rel_all.append(np.asarray(df["probability"], dtype=np.float64) * len(df))
    left.set_xlabel("p_i / max p_i (Eqs. 3-4, normalised)")
    left.set_ylabel("weight (Eq. 5)")
    left.set_xlim(-0.02, 1.02)
    left.set_ylim(0.0, max(1.2, 1.05 * max(float(weights[label]["weight"].max()) for label in rounds)))
    left.grid(color="#eeeeee")
    left.legend(fontsize=8, frameon=False, loc="lower right")
    left.set_title("Eq. 5 smoothing of each source image's probability (one dot per image)", fontsize=10)
    # At least [0.9, 1.1]: near-uniform weights then read as one bar at 1, not as float noise.
    lo = min(0.9, min(float(r.min()) for r in rel_all))
    hi = max(1.1, max(float(r.max()) for r in rel_all))
    bins = np.linspace(lo, hi, 31)
    for color, label, rel in zip(colors, rounds, rel_all):
        n = len(rel)
        top = max(1, int(math.ceil(0.1 * n)))
        share = np.sort(rel)[::-1][:top].sum() / rel.sum()
        below = float(np.mean(rel < 0.5))
        text = (f"{label}: the top {top} images ({100 * top / n:.0f}%) get {100 * share:.0f}% of the draws;\n"
                f"    {100 * below:.0f}% of images are drawn less than half as often as uniform;\n"
                f"    {100 * draw_summary(weights[label]).moved_share:.1f}% of the draws go elsewhere than uniform")
        summary = (draws or {}).get(label, {})
        if summary.get("sk_multiplier") is not None:
            text += f"\n    S_k pixels drawn x{summary['sk_multiplier']:.2f} of uniform draws"
        if summary.get("rarest_multiplier") is not None:
            text += (f"\n    the {len(summary.get('rarest', []))} rarest classes' pixels "
                     f"x{summary['rarest_multiplier']:.2f}")
        if sk and sk.get(label):
            text += f"\n    S_k = {', '.join(sk[label])}"
        right.hist(rel, bins=bins, histtype="stepfilled", alpha=0.35, color=color,
                   weights=np.full(n, 100.0 / n))
        right.hist(rel, bins=bins, histtype="step", color=color, linewidth=1.4, weights=np.full(n, 100.0 / n),
                   label=text)
    right.axvline(1.0, color="#333333", linestyle="--", linewidth=1, label="uniform sampling (round 0)")
    right.set_xlabel("sampling probability x number of source images (1 = uniform)")
    right.ticklabel_format(axis="x", useOffset=False, style="plain")
    right.set_xlim(lo - 0.02, hi + 0.02)
    right.set_ylabel("% of source images")
    right.grid(color="#eeeeee")
    right.legend(fontsize=8, frameon=False, loc="upper left")
    right.set_title("How unevenly the source images are drawn", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


# --- entropy histograms with the fitted mixture (Fig. 4) ---------------------------------------------

def parse_intervals(text: Any) -> list[tuple[float, float]]:
    """``"[0, 0.19]; [0.69, 1]"`` (classes.csv ``intervals``) -> [(0, 0.19), (0.69, 1)]."""
    if not isinstance(text, str) or not text.strip():
        return []
    out = []
    for lo, hi in re.findall(r"\[\s*([^,\]]+)\s*,\s*([^\]]+)\]", text):
        out.append((float(lo), float(hi)))
    return out


def _normal_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def gmm_figure(hist: np.ndarray, values: np.ndarray, classes: pd.DataFrame, out: str | os.PathLike,
               bins: int = 60, title: str = "Entropy per class with the fitted 2-component mixture (Eq. 6)") -> Path:
    """One panel per class: histogram (density) of the statistic of the pixels predicted as the
    class, the fitted positive and negative components, and the selected intervals shaded.

    ``hist`` (C, K) counts per value, ``values`` (K,) the value of each bin
    (float16 codes: :func:`uncerda_core.uncertainty.codes.code_values`);
    ``classes`` the pseudo-label folder's ``classes.csv`` (one row per class).
    """
    hist = np.asarray(hist)
    values = np.asarray(values, dtype=np.float64)
    if hist.ndim != 2 or hist.shape[1] != values.shape[0]:
        raise UncerdaError(f"gmm figure: histogram {hist.shape} does not match {values.shape[0]} bin values")
    if len(classes) != hist.shape[0]:
        raise UncerdaError(f"gmm figure: classes.csv has {len(classes)} rows, the histogram {hist.shape[0]} classes")
    classes = classes.sort_values("class_id").reset_index(drop=True)
    statistic = str(classes["statistic"].iloc[0]) if "statistic" in classes else "entropy"
    unit = str(classes["unit"].iloc[0]) if "unit" in classes else "pixel"
    c = hist.shape[0]
    totals = hist.sum(axis=1)
    shown = [k for k in range(c) if totals[k] > 0]
    never = [str(classes.iloc[k].get("class", k)) for k in range(c) if totals[k] == 0]
    ncols = max(1, min(3, len(shown)))
    nrows = max(1, int(math.ceil(len(shown) / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * max(ncols, 3), 2.5 * nrows + 1.5), squeeze=False)
    axes = axes.ravel()
    for ax, k in zip(axes, shown):
        row = classes.iloc[k]
        counts = hist[k]
        total = counts.sum()
        name = str(row.get("class", k))
        reason = row.get("degenerate")
        reason = reason if isinstance(reason, str) and reason else ""
        nz = values[counts > 0]
        hi = float(min(1.0, max(nz.max() * 1.08, nz.min() + 0.05)))
        edges = np.linspace(0.0, hi, bins + 1)
        density, _ = np.histogram(values, bins=edges, weights=counts.astype(np.float64))
        density = density / (total * (edges[1] - edges[0]))
        ax.stairs(density, edges, fill=True, color="#b0b0b0", alpha=0.8, label="data")
        for lo_i, hi_i in parse_intervals(row.get("intervals")):
            ax.axvspan(max(lo_i, 0.0), min(hi_i, hi), color=SELECT_COLOR, alpha=0.13, linewidth=0)
        grid = np.linspace(0.0, hi, 400)
        has_fit = all(np.isfinite(float(row.get(col, np.nan))) for col in
                      ("weight_pos", "mean_pos", "std_pos", "weight_neg", "mean_neg", "std_neg"))
        if has_fit:
            pos = row["weight_pos"] * _normal_pdf(grid, row["mean_pos"], row["std_pos"])
            neg = row["weight_neg"] * _normal_pdf(grid, row["mean_neg"], row["std_neg"])
            ax.plot(grid, pos, color=SELECT_COLOR, linewidth=1.3)
            ax.plot(grid, neg, color=REJECT_COLOR, linewidth=1.3)
            ax.plot(grid, pos + neg, color="#222222", linewidth=0.9, linestyle="--")
        threshold = row.get("threshold")
        if threshold is not None and np.isfinite(float(threshold)):
            ax.axvline(float(threshold), color="#1f3b73", linewidth=1.2, linestyle=":")
        ax.set_xlim(0.0, hi)
        ax.set_ylim(0, max(float(density.max()) * 1.25, 1e-6))
        fraction = row.get("selected_fraction")
        selected = f", {100 * float(fraction):.0f}% selected" if fraction is not None and np.isfinite(
            float(fraction)) else ""
        ax.set_title(f"{name}: {int(total):,} {unit}s{selected}", fontsize=9)
        if reason:
            ax.text(0.98, 0.95, reason, ha="right", va="top", transform=ax.transAxes, fontsize=6.5, color="#7f4f00",
                    wrap=True)
        ax.tick_params(labelsize=7)
    for ax in axes[len(shown):]:
        ax.axis("off")
    if not shown:
        _no_data(axes[0], "no class was predicted")
    fig.legend(handles=[
        Patch(facecolor="#b0b0b0", label=f"{statistic} of the {unit}s predicted as the class"),
        Line2D([], [], color=SELECT_COLOR, label="positive component (w N(m, s))"),
        Line2D([], [], color=REJECT_COLOR, label="negative component"),
        Line2D([], [], color="#222222", linestyle="--", label="mixture"),
        Patch(facecolor=SELECT_COLOR, alpha=0.25, label="selected as pseudo labels"),
    ], loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title + f"\nx: normalised {statistic}; y: density", fontsize=10)
    bottom = 0.75 / fig.get_figheight()
    if never:
        text = "never predicted (no pseudo labels): " + ", ".join(never)
        lines = textwrap.wrap(text, 110)
        fig.text(0.5, bottom, "\n".join(lines), ha="center", va="bottom", fontsize=8, color="#666666")
        bottom += (0.1 + 0.16 * len(lines)) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return _save(fig, out)


# --- pseudo-label precision and coverage --------------------------------------------------------------

def pseudo_quality_figure(classes: pd.DataFrame, out: str | os.PathLike, quality: pd.DataFrame | None = None,
                          overall: Mapping[str, Any] | None = None, label: str = "",
                          title: str = "Pseudo labels per class") -> Path:
    """Bars per class: precision (correct / selected pixels with a label), coverage (selected /
    predicted) and recall (correct / ground-truth pixels) of the pseudo labels, in %.

    Without ground truth (``quality`` None) only the coverage from
    ``classes.csv`` is shown. Classes neither predicted nor in the ground
    truth are left out.
    """
    classes = classes.sort_values("class_id").reset_index(drop=True)
    if quality is not None:
        q = quality.sort_values("class_id").reset_index(drop=True)
        keep = (q["predicted_pixels"] > 0) | (q["gt_pixels"] > 0)
        q = q[keep]
        names = list(q["class"])
        series = {"precision (correct / selected with a label)": q["precision"],
                  "coverage (selected / predicted)": q["coverage"],
                  "recall (correct / ground-truth pixels)": q["gt_coverage"]}
        colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
        predicted = q["predicted_pixels"].to_numpy()
        selected = q["selected_pixels"].to_numpy()
    else:
        keep = classes["predicted_pixels"] > 0
        c = classes[keep]
        names = list(c["class"])
        series = {"coverage (selected / predicted)": c["selected_fraction"]}
        colors = ["#ff7f0e"]
        predicted = c["predicted_pixels"].to_numpy()
        selected = c["selected_pixels"].to_numpy()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.42 * len(names) + 2.0), 5.0))
    if not names:
        _no_data(ax, "no class was predicted")
    x = np.arange(len(names))
    width = 0.8 / max(len(series), 1)
    for i, ((key, vals), color) in enumerate(zip(series.items(), colors)):
        v = 100.0 * pd.to_numeric(vals, errors="coerce").to_numpy(dtype=np.float64)
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, np.nan_to_num(v), width, color=color, label=key)
    for j, (n, sel) in enumerate(zip(predicted, selected)):
        if n == 0 or sel == 0:
            ax.text(x[j], 1.5, "never predicted" if n == 0 else "none selected", ha="center", va="bottom",
                    fontsize=7, color="#888888", rotation=90)
    if names:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=40, ha="right", fontsize=9)
        ax.set_ylim(0, 122)
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("%")
        ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(fontsize=8, frameon=False, ncol=3, loc="upper left")
    head = f"{title}{' (' + label + ')' if label else ''}"
    if overall:
        parts = []
        for key, name in (("precision", "precision"), ("coverage", "coverage"), ("gt_coverage", "recall")):
            if overall.get(key) is not None:
                parts.append(f"{name} {100 * float(overall[key]):.1f}%")
        if overall.get("images_with_gt") is not None:
            parts.append(f"{overall['images_with_gt']} images with ground truth")
        head += "\nall classes: " + ", ".join(parts)
    elif quality is None:
        head += "\nno ground truth for the target train images: precision cannot be measured"
    ax.set_title(head, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


# --- target val examples (Figs. 5 and 7) --------------------------------------------------------------


def examples_figure(examples: Sequence[Example], out: str | os.PathLike,
                    title: str = "Target val examples: ground truth, prediction per stage, entropy") -> Path:
    """One column per image; rows: image, ground truth, each stage's prediction, each entropy map.

    (Portrait, so the grid stays legible where the report shows it next to its caption.)
    """
    if not examples:
        raise UncerdaError("examples figure: no images given")
    stages = list(examples[0].predictions)
    ent_stages = list(examples[0].entropy)
    rows = ["image", "ground truth", *stages, *[f"entropy\n{s}" for s in ent_stages]]
    h, w = examples[0].label.shape
    panel_w = min(2.4, 9.0 / len(examples))
    panel_h = panel_w * h / w
    fig, axes = plt.subplots(len(rows), len(examples), squeeze=False,
                             figsize=(panel_w * len(examples) + 2.2, panel_h * len(rows) * 1.08 + 2.0))
    present: set[int] = set()
    ent_image = None
    for c_idx, ex in enumerate(examples):
        panels = [ex.image, colorize(ex.label)]
        present.update(int(c) for c in np.unique(ex.label) if c != IGNORE)
        for s in stages:
            pred = ex.predictions[s]
            panels.append(colorize(pred))
            present.update(int(c) for c in np.unique(pred) if c != IGNORE)
        for r_idx, panel in enumerate(panels):
            axes[r_idx, c_idx].imshow(panel, interpolation="nearest")
        for e_idx, s in enumerate(ent_stages):
            ent_image = axes[len(panels) + e_idx, c_idx].imshow(ex.entropy[s], cmap="magma", vmin=0.0, vmax=1.0,
                                                                interpolation="nearest")
        axes[0, c_idx].set_title(ex.name, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    for r_idx, name in enumerate(rows):
        axes[r_idx, 0].set_ylabel(name, fontsize=9, rotation=0, ha="right", va="center")
    present = sorted(c for c in present if c < len(CLASS_NAMES))
    handles = [Patch(facecolor=TRAIN_ID_COLORS[c] / 255.0, label=CLASS_NAMES[c]) for c in present]
    handles.append(Patch(facecolor="black", label="ignored / unlabelled"))
    ncol = 5
    legend_rows = int(math.ceil(len(handles) / ncol))
    fig.suptitle(title, fontsize=10)
    bottom = (0.2 + 0.2 * legend_rows) / fig.get_figheight()
    right = 1.0 - 0.8 / fig.get_figwidth() if ent_image is not None else 1.0
    fig.tight_layout(rect=(0, bottom, right, 1), h_pad=0.3, w_pad=0.3)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    if ent_image is not None:
        top_ax = axes[len(rows) - len(ent_stages), -1].get_position()
        low_ax = axes[-1, -1].get_position()
        cax = fig.add_axes((right + 0.1 / fig.get_figwidth(), low_ax.y0, 0.12 / fig.get_figwidth(),
                            top_ax.y1 - low_ax.y0))
        cbar = fig.colorbar(ent_image, cax=cax)
        cbar.set_label("normalised entropy", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    return _save(fig, out)


# --- training curves per stage and mIoU along the chain --------------------------------------------

# losses.csv columns by panel (train/loop.py writes them; a stage has only those it computes).
TASK_LOSSES = (("seg", "segmentation (main)"), ("seg_aux", "segmentation (aux)"), ("st", "self-training"),
               ("total", "total"), ("memory", "memory regularisation"), ("mic", "masked image consistency"))
ADVERSARIAL_LOSSES = (("adv_main", "adversarial (main)"), ("adv_aux", "adversarial (aux)"),
                      ("d_main", "discriminator (main)"), ("d_aux", "discriminator (aux)"))
# A discriminator that cannot tell the domains apart sits at the binary cross-entropy of 0.5: ln 2.
CHANCE_BCE = math.log(2.0)


def loss_change(values: Sequence[float], fraction: float = 0.1) -> float:
    """Relative change of a loss from the mean of its first to the mean of its last ``fraction`` of
    rows: -0.4 is a 40 % drop; NaN without finite values at both ends."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("nan")
    n = max(1, int(round(v.size * fraction)))
    first, last = v[:n].mean(), v[-n:].mean()
    return float((last - first) / first) if first != 0 else float("nan")


def training_curves_figure(losses: Mapping[str, pd.DataFrame], out: str | os.PathLike,
                           miou: Mapping[str, float | None] | None = None,
                           title: str = "Training curves per stage, and mIoU along the chain") -> Path:
    """One row per training stage (chain order): its task losses (segmentation, self-training,
    total), its adversarial and discriminator losses (ln 2 marks a discriminator at chance; near 0
    it wins), and its learning rate, against the iteration; the panel title gives the change of
    the main segmentation (or self-training) loss from the first to the last tenth of the run.
    ``miou`` (stage -> fraction, None when not evaluated) adds a last row: mIoU of each model
    along the chain.
    """
    if not losses:
        raise UncerdaError("training curves: no losses tables given")
    for stage, df in losses.items():
        if "iteration" not in df or df.empty:
            raise UncerdaError(f"training curves: the losses table of {stage} has no rows or no 'iteration' column")
    stages = list(losses)
    rows = len(stages) + (1 if miou else 0)
    fig, axes = plt.subplots(rows, 3, squeeze=False, figsize=(13.0, 2.6 * rows + 0.8))
    colors = plt.get_cmap("tab10")
    for r, stage in enumerate(stages):
        df = losses[stage]
        it = pd.to_numeric(df["iteration"], errors="coerce").to_numpy(dtype=np.float64)
        ax_task, ax_adv, ax_lr = axes[r]
        for j, (col, name) in enumerate(TASK_LOSSES):
            if col in df:
                ax_task.plot(it, pd.to_numeric(df[col], errors="coerce"), color=colors(j), lw=1.2, label=name)
        key = "st" if "st" in df else "seg"
        change = loss_change(pd.to_numeric(df[key], errors="coerce")) if key in df else float("nan")
        note = f", {key} {change:+.0%} first to last tenth" if np.isfinite(change) else ""
        ax_task.set_title(f"{stage}: task losses{note}", fontsize=9)
        present = [(col, name) for col, name in ADVERSARIAL_LOSSES if col in df]
        if present:
            for j, (col, name) in enumerate(present):
                ax_adv.plot(it, pd.to_numeric(df[col], errors="coerce"), color=colors(4 + j), lw=1.2, label=name,
                            linestyle="-" if col.startswith("adv") else "--")
            ax_adv.axhline(CHANCE_BCE, color="#888888", lw=0.8, linestyle=":", label="ln 2 (chance)")
            ax_adv.set_title(f"{stage}: adversarial and discriminator", fontsize=9)
            ax_adv.legend(fontsize=7, frameon=False)
        else:
            _no_data(ax_adv, f"{stage}: no adversarial losses in this stage")
        if "lr" in df:
            ax_lr.plot(it, pd.to_numeric(df["lr"], errors="coerce"), color="#333333", lw=1.2)
            ax_lr.set_title(f"{stage}: learning rate (backbone)", fontsize=9)
        else:
            _no_data(ax_lr, "no learning rate logged")
        ax_task.legend(fontsize=7, frameon=False)
        for ax in (ax_task, ax_adv, ax_lr):
            if ax.has_data():
                ax.set_xlabel("iteration", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(color="#eeeeee", linewidth=0.6)
    if miou:
        gs = axes[-1, 0].get_gridspec()
        for ax in axes[-1]:
            ax.remove()
        ax = fig.add_subplot(gs[-1, :])
        labels = list(miou)
        values = np.array([_percent(miou[label]) for label in labels])
        x = np.arange(len(labels))
        ax.plot(x, values, marker="o", color=LAST_COLOR, lw=1.5)
        for xi, v in zip(x, values):
            ax.text(xi, (v if np.isfinite(v) else 0) + 0.5, "n/a" if not np.isfinite(v) else f"{v:.1f}",
                    ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=8)
        finite = values[np.isfinite(values)]
        ax.set_ylim(0, max(10.0, (float(finite.max()) if finite.size else 0.0) * 1.2 + 2))
        ax.set_ylabel("mIoU (%)", fontsize=8)
        ax.set_title("mIoU on target val of each model along the chain", fontsize=9)
        ax.grid(axis="y", color="#eeeeee", linewidth=0.6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


# --- the ablation ladder and the pseudo-label comparison ----------------------------------------------

def _float_list(value: Any) -> list[float]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    return [float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", str(value))]


def _as_percent(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Fractions -> % (when every finite value is within [0, 1]); values already in % stay."""
    finite = values[np.isfinite(values)]
    fraction = finite.size == 0 or float(np.abs(finite).max()) <= 1.0
    return (values * 100.0 if fraction else values), fraction


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "*")


def control_note(vs_control: float, verdict: Any) -> str:
    """The line under a rung that has a control: its paired difference to the control in points, * when
    larger than its spread (``beats_control`` yes or below); empty without a control."""
    if not np.isfinite(vs_control):
        return ""
    mark = "*" if str(verdict).strip().lower() in REAL_VERDICTS else ""
    return f"\nvs control {vs_control:+.1f}{mark}"


# What the paper's Fig. 8 says in its text (the figure's values are not printed): alpha 80 and mu 0.02 are chosen
# to rise quickly near 0 and stay flat near 1, and the model is stable for k from 5 to 9.
PAPER_ALPHA_MU = (80.0, 0.02)
PAPER_STABLE_K = (5, 9)


def sensitivity_figure(grid: pd.DataFrame, trained: pd.DataFrame, reading: str, out: str | os.PathLike) -> Path:
    """Fig. 8 on this data. (a) Eq. 5 under ``reading`` for every ``(alpha, mu)`` of ``grid`` (rows of
    ``uncertainty.weights.eq5_grid_draws``, seed-averaged; the legend gives the share of images on the
    curve's rise and the S_k draw multiplier) with the mIoU of the trained pairs; (b) mIoU against k.
    ``trained`` is ``report.tables.sensitivity_comparison``'s table (settings ``alpha=A mu=M`` and ``k=K``)."""
    if grid.empty:
        raise UncerdaError("sensitivity figure: no alpha x mu rows")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13.0, 5.0))
    z = np.linspace(0.0, 0.3, 400)
    miou = {row["setting"]: (row["miou_mean"], row["miou_std"]) for _, row in trained.iterrows()}
    for _, row in grid.iterrows():
        setting = f"alpha={row['alpha']:g} mu={row['mu']:g}"
        label = (f"alpha {row['alpha']:g}, mu {row['mu']:g}: {100 * row['on_rise']:.0f}% of images on the rise, "
                 f"S_k x{row['sk_multiplier']:.2f}")
        if setting in miou:
            label += f", mIoU {100 * miou[setting][0]:.1f}"
        if (float(row["alpha"]), float(row["mu"])) == PAPER_ALPHA_MU:
            label += " (the paper's choice)"
        left.plot(z, reading_weight(z, row["alpha"], row["mu"], reading), linewidth=1.2, label=label)
    left.set_xlabel("p_i / max p_i")
    left.set_ylabel(f"draw weight (Eq. 5, {reading} reading)")
    left.set_title("(a) Eq. 5 for each alpha and mu (x up to 0.3: the curves are flat beyond)", fontsize=10)
    left.legend(fontsize=6.5, frameon=False, loc="lower right")
    left.grid(color="#eeeeee")
    ks = trained[trained["setting"].str.startswith("k=")].copy()
    if not ks.empty:
        ks["k"] = ks["setting"].str[2:].astype(int)
        ks = ks.sort_values("k")
        right.errorbar(ks["k"], 100 * ks["miou_mean"], yerr=100 * ks["miou_std"].fillna(0.0), marker="o",
                       capsize=3, color="#1f77b4")
        right.set_xticks(list(ks["k"]))
    right.axvspan(*PAPER_STABLE_K, color="#2ca02c", alpha=0.08,
                  label=f"the paper: stable for k {PAPER_STABLE_K[0]}-{PAPER_STABLE_K[1]} (GTA5 and SYNTHIA)")
    right.legend(fontsize=7, frameon=False, loc="lower right")
    right.set_xlabel("k (the number of most uncertain classes in S_k)")
    right.set_ylabel("mIoU after one target-guided round (%), mean and std over seeds")
    right.set_title("(b) mIoU against k", fontsize=10)
    right.grid(color="#eeeeee")
    fig.tight_layout()
    return _save(fig, out)


def ladder_figure(ladder: pd.DataFrame, out: str | os.PathLike,
                  title: str = "Ablation ladder (Table 3): mIoU on target val over seeds") -> Path:
    """Bars of the mean mIoU per rung with the seed standard deviation, one dot per seed, and the
    change from the previous rung above each bar (* = significant); controls (``kind`` =
    ``control``) hatched, set apart after the rungs.

    Columns: ``rung,n_seeds,miou_mean,miou_std,miou_seeds,delta,significant`` and optionally
    ``kind`` (``rung`` or ``control``), ``model`` and ``vs_control``/``beats_control`` (the change
    against the rung's control, written under its label by :func:`control_note`).
    """
    if ladder.empty:
        raise UncerdaError("ladder figure: the ladder table has no rows")
    ladder = ladder.reset_index(drop=True)
    kinds = (ladder["kind"].astype(str).str.lower() if "kind" in ladder
             else pd.Series(["rung"] * len(ladder)))
    order = [i for i in range(len(ladder)) if kinds[i] != "control"] + \
            [i for i in range(len(ladder)) if kinds[i] == "control"]
    ladder, kinds = ladder.iloc[order].reset_index(drop=True), kinds.iloc[order].reset_index(drop=True)
    control = (kinds == "control").to_numpy()
    mean = pd.to_numeric(ladder["miou_mean"], errors="coerce").to_numpy(dtype=np.float64)
    mean_pct, fraction = _as_percent(mean)
    scale = 100.0 if fraction else 1.0

    def column(name: str) -> np.ndarray:
        if name not in ladder:
            return np.full(len(ladder), np.nan)
        return pd.to_numeric(ladder[name], errors="coerce").to_numpy(dtype=np.float64) * scale

    std, delta, vs_control = column("miou_std"), column("delta"), column("vs_control")
    verdicts = ladder["beats_control"] if "beats_control" in ladder else [""] * len(ladder)
    labels = []
    for i in range(len(ladder)):
        label = "\n".join(textwrap.wrap(str(ladder["rung"].iloc[i]), 16))
        if "model" in ladder and str(ladder["model"].iloc[i]) not in ("", "nan"):
            label += f"\n({ladder['model'].iloc[i]})"
        label += control_note(vs_control[i], verdicts[i])
        labels.append(label)
    n_rungs = int((~control).sum())
    colors = stage_colors(n_rungs) + ["#d9d9d9"] * int(control.sum())
    x = np.arange(len(ladder), dtype=float)
    x[control] += 0.6
    fig, ax = plt.subplots(figsize=(max(7.0, 1.05 * len(ladder) + 1.5), 5.2))
    bars = ax.bar(x, np.nan_to_num(mean_pct), 0.62, yerr=np.nan_to_num(std), color=colors, capsize=4,
                  error_kw={"elinewidth": 1, "ecolor": "#333333"})
    for bar, is_control in zip(bars, control):
        if is_control:
            bar.set_hatch("//")
            bar.set_edgecolor("#888888")
    top = np.nan_to_num(mean_pct + np.nan_to_num(std))
    seeds_col = ladder["miou_seeds"] if "miou_seeds" in ladder else [None] * len(ladder)
    for j, seeds in enumerate(seeds_col):
        vals = np.asarray(_float_list(seeds)) * scale
        if vals.size:
            jitter = np.linspace(-0.12, 0.12, vals.size) if vals.size > 1 else np.zeros(1)
            ax.scatter(x[j] + jitter, vals, s=14, color="#111111", zorder=3, linewidths=0)
            top[j] = max(top[j], float(vals.max()))
        if not control[j] and np.isfinite(delta[j]):
            sig = "*" if "significant" in ladder and _truthy(ladder["significant"].iloc[j]) else ""
            ax.text(x[j], top[j] + 0.6, f"{delta[j]:+.1f}{sig}", ha="center", va="bottom", fontsize=8)
    if control.any() and n_rungs:
        ax.axvline((x[n_rungs - 1] + x[n_rungs]) / 2, color="#bbbbbb", linewidth=0.8, linestyle="--")
        ax.text(x[n_rungs], 1.0, "controls", transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize=8, color="#666666")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("mIoU (%)")
    ymax = float(np.nanmax(top)) if np.isfinite(top).any() else 1.0
    ax.set_ylim(0, ymax * 1.18 + 1.0)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)
    note = ("bar = mean, whisker = std, dot = one seed, number = change from the rung before, "
            "'vs control' = change against the rung's control (* = larger than its spread over seeds)")
    ax.set_title(title + "\n" + "\n".join(textwrap.wrap(note, int(fig.get_figwidth() * 12))), fontsize=9, pad=14)
    fig.tight_layout()
    return _save(fig, out)


def pseudo_methods_figure(methods: pd.DataFrame, out: str | os.PathLike,
                          title: str = "Pseudo-label methods (Table 5), mean over seeds") -> Path:
    """Three panels per method: pseudo-label precision, coverage, and the self-trained mIoU (± std).

    Columns: ``method,precision_mean,coverage_mean,miou_mean,miou_std,n_seeds``.
    """
    if methods.empty:
        raise UncerdaError("pseudo-methods figure: the table has no rows")
    names = [str(m) for m in methods["method"]]
    colors = plt.get_cmap("tab10")(np.arange(len(names)) % 10)
    fig, axes = plt.subplots(1, 3, figsize=(max(10.0, 0.9 * len(names) * 3 + 1.5), 4.2))
    panels = [("precision_mean", None, "pseudo-label precision (%)"),
              ("coverage_mean", None, "coverage: selected / predicted (%)"),
              ("miou_mean", "miou_std", "mIoU after self-training (%)")]
    x = np.arange(len(names))
    for ax, (col, err_col, ylabel) in zip(axes, panels):
        vals = pd.to_numeric(methods.get(col), errors="coerce").to_numpy(dtype=np.float64)
        vals, fraction = _as_percent(vals)
        err = None
        if err_col and err_col in methods:
            err = np.nan_to_num(pd.to_numeric(methods[err_col], errors="coerce").to_numpy(dtype=np.float64)
                                * (100.0 if fraction else 1.0))
        ax.bar(x, np.nan_to_num(vals), 0.6, yerr=err, color=colors, capsize=4)
        for j, v in enumerate(vals):
            ax.text(x[j], (0 if not np.isfinite(v) else v) + (err[j] if err is not None else 0) + 0.5,
                    "n/a" if not np.isfinite(v) else f"{v:.1f}", ha="center", va="bottom", fontsize=8)
        finite = vals[np.isfinite(vals)]
        upper = max(10.0, (float(finite.max()) if finite.size else 0) * 1.2 + 2)
        ax.set_ylim(0, min(upper, 112.0) if fraction else upper)
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
    seeds = methods["n_seeds"].iloc[0] if "n_seeds" in methods else None
    fig.suptitle(title + (f" ({seeds} seeds)" if seeds is not None else ""), fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


# Fig. 3's bars: the model itself, then self-training on CBST's and on the GMM's pseudo labels.
T5_BARS = (("-", "model itself", FIRST_COLOR), ("CBST", "+ ST on CBST labels", "#1f77b4"),
           ("Ours (GMM)", "+ ST on GMM labels (ours)", LAST_COLOR))


def table5_figure(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Fig. 3: per adaptation model, mIoU of the model and after self-training on CBST's and the GMM's labels;
    left ours (bar = mean, whisker = std, dots = seeds), right the paper's values for the models it reports.

    ``table`` is :func:`uncerda_core.report.tables.pseudo_model_comparison`'s frame.
    """
    if table.empty:
        raise UncerdaError("Fig. 3: the Table 5 frame has no rows")
    models = list(dict.fromkeys(str(m) for m in table["model"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 2.2 * len(models) * 2), 4.4), sharey=True)
    width = 0.8 / len(T5_BARS)
    x = np.arange(len(models))
    for ax, what in zip(axes, ("ours", "paper")):
        for j, (row_name, label, color) in enumerate(T5_BARS):
            means, errs, seeds = [], [], []
            for model in models:
                hit = table[(table["model"] == model) & (table["pseudo_labels"] == row_name)]
                if hit.empty:
                    means.append(np.nan), errs.append(0.0), seeds.append([])
                    continue
                row = hit.iloc[0]
                if what == "ours":
                    means.append(100 * float(row["miou_mean"]))
                    errs.append(100 * float(np.nan_to_num(row["miou_std"])))
                    seeds.append([100 * float(v) for v in _float_list(row["miou_seeds"])])
                else:
                    means.append(100 * float(row["paper_miou"])), errs.append(0.0), seeds.append([])
            pos = x + (j - (len(T5_BARS) - 1) / 2) * width
            vals = np.array(means, dtype=np.float64)
            ax.bar(pos, np.nan_to_num(vals), width * 0.92, yerr=errs if what == "ours" else None, color=color,
                   capsize=3, label=label)
            for k, v in enumerate(vals):
                if np.isfinite(v):
                    ax.text(pos[k], v + errs[k] + 0.4, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
                else:
                    ax.text(pos[k], 1.0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                ax.plot([pos[k]] * len(seeds[k]), seeds[k], "o", color="#222222", ms=2.5, zorder=3)
        ax.set_xticks(x)
        ax.set_xticklabels(models, fontsize=9)
        ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        seeds_n = int(pd.to_numeric(table["n_seeds"], errors="coerce").max())
        ax.set_title(f"ours ({seeds_n} seeds)" if what == "ours" else "the paper (GTA5 -> Cityscapes)", fontsize=9)
    axes[0].set_ylabel("mIoU on target val (%)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, frameon=False, loc="lower center", ncol=len(T5_BARS))
    fig.suptitle("Pseudo labels across adaptation models (Table 5, Fig. 3)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, out)
