"""How many S_k pixels does a target-guided round train on? (diagnostic for +TGAA against +SR)

Eqs. 3-5 raise the draw probability of source images that hold S_k classes, but the network learns
from pixels, and an image holding a rider is still mostly road and building. This script replays the
source batches of one adaptation round exactly as the training loop draws them (the same
``BatchStream`` items and the dataset's own crop code, labels only) under several sampling regimes,
and reports the share of labelled pixels that belong to S_k, in total and per S_k class, and its ratio
to uniform draws of whole images, beside the ratio expected from the class statistics for whole images
(``uncertainty.weights.drawn_pixel_share``, what ``uncerda weights`` reports):

- ``uniform, whole images``: no weights, no crop (source only, round 0 of adaptation)
- ``weights, whole images``: the paper's image-level rule on the demo (no crop)
- ``uniform, random crops`` / ``weights, random crops``: the same with ``--crop`` (paper scale crops)
- ``weights, crops on S_k``: ``tgaa.sampling: crop``, crops centred on a pixel of an S_k class
- with ``--control-weights``: the +SR control's draws (its all-class weights; with ``--crop``, crops
  centred on a pixel of any class, as ``tgaa.sampling: crop`` does for +SR)

    python benchmarks/sampling_reach.py --source-index results/demo/data/source_index.csv \\
        --class-stats results/demo/data/source_class_stats.csv \\
        --weights results/demo/seed0/weights/tgaa_r1.csv --rank results/demo/seed0/rank/aa_it.csv \\
        [--control-weights results/demo/seed0/weights/sr.csv] [--crop 96 48]

``--iterations``, ``--batch-size``, ``--seed`` and ``--balance`` default to the demo's round
(config.yaml); the counts are exact for the draws of that seed, not an expectation.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from uncerda_core.data.datasets import BatchStream, ImageSettings, SegmentationDataset
from uncerda_core.data.index import read_index
from uncerda_core.data.labels import CLASS_NAMES, IGNORE, NUM_CLASSES
from uncerda_core.train.loop import SOURCE_STREAM, crop_focus_weights, read_sampling_weights
from uncerda_core.uncertainty.rank import read_sk
from uncerda_core.uncertainty.weights import drawn_pixel_share, read_class_counts


@dataclass(frozen=True)
class Regime:
    name: str
    probabilities: np.ndarray | None   # per image draw probability; None: uniform
    focus: np.ndarray | None           # (images, classes) crop-centre class weights; None: random crops
    crop: tuple[int, int] | None       # (width, height); None: whole images


def class_pixel_counts(labels, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Labelled pixels per class summed over ``labels`` (arrays of train ids; 255 is not counted)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for label in labels:
        values = np.asarray(label).ravel()
        counts += np.bincount(values[values != IGNORE], minlength=num_classes)[:num_classes]
    return counts


def sk_share(counts: np.ndarray, sk: list[int]) -> float:
    """Share of the labelled pixels in ``counts`` that belong to the classes ``sk``."""
    total = counts.sum()
    return float(counts[sk].sum() / total) if total else float("nan")


def replay_counts(dataset: SegmentationDataset, stream: BatchStream, iterations: int) -> np.ndarray:
    """Class pixel counts of every source item ``stream`` draws in ``iterations`` iterations."""
    labels = (dataset[item]["label"].numpy() for it in range(iterations) for item in stream.items(it))
    return class_pixel_counts(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-index", required=True)
    parser.add_argument("--source-dataset", default="gta5")
    parser.add_argument("--class-stats", required=True, help="source class statistics CSV (Eq. 4's counts)")
    parser.add_argument("--weights", required=True, help="the round's sampling weights CSV (Eqs. 3-5)")
    parser.add_argument("--rank", required=True, help="ranking CSV whose S_k the round used")
    parser.add_argument("--control-weights", help="the +SR control's weights CSV (all classes)")
    parser.add_argument("--resize", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"), help="source.resize")
    parser.add_argument("--crop", type=int, nargs=2, metavar=("WIDTH", "HEIGHT"), help="source.crop")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--balance", type=float, default=0.9, help="tgaa.balance (Eq. 3's lambda)")
    args = parser.parse_args()

    table = read_index(args.source_index)
    names = list(table["name"])
    sk = read_sk(args.rank)
    weights = read_sampling_weights(args.weights, names)
    # Eq. 4's numerators over S_k, per image: positive exactly where the image holds the class, so they
    # also say which images hold an S_k class (and the class statistics are read and matched once).
    sk_focus = crop_focus_weights(args.class_stats, names, sk, args.balance)
    crop = tuple(args.crop) if args.crop else None
    resize = tuple(args.resize) if args.resize else None
    regimes = [Regime("uniform, whole images", None, None, None),
               Regime("weights, whole images", weights, None, None)]
    control = read_sampling_weights(args.control_weights, names) if args.control_weights else None
    if control is not None:
        regimes.append(Regime("+SR control, whole images", control, None, None))
    if crop is not None:
        regimes += [Regime("uniform, random crops", None, None, crop),
                    Regime("weights, random crops", weights, None, crop),
                    Regime("weights, crops on S_k", weights, sk_focus, crop)]
        if control is not None:
            every_class = list(range(NUM_CLASSES))
            regimes.append(Regime("+SR control, crops on any class", control,
                                  crop_focus_weights(args.class_stats, names, every_class, args.balance), crop))

    # The expected S_k share of whole images drawn with each regime's probabilities, from the class statistics
    # (what `uncerda weights` reports), beside the replayed counts.
    stats_names, stats_counts = read_class_counts(args.class_stats)
    row_of = {name: i for i, name in enumerate(stats_names)}
    counts_in_index_order = stats_counts[[row_of[name] for name in names]]
    uniform_share = sk_share(drawn_pixel_share(np.full(len(names), 1.0 / len(names)), counts_in_index_order), sk)

    def expected(regime: Regime) -> str:
        if regime.crop is not None:
            return "-"
        probabilities = np.full(len(names), 1.0 / len(names)) if regime.probabilities is None else regime.probabilities
        return f"{sk_share(drawn_pixel_share(probabilities, counts_in_index_order), sk) / uniform_share:.2f}"

    holding = float((sk_focus > 0).any(axis=1).mean())
    print(f"S_k ({len(sk)}): {', '.join(CLASS_NAMES[c] for c in sk)}; {100 * holding:.0f} % of the source images "
          f"hold an S_k class; {args.iterations} iterations of {args.batch_size} source items, seed {args.seed}")
    header = ["regime", "S_k share %", "x uniform", "expected x uniform"] + [CLASS_NAMES[c] for c in sk]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    baseline = None
    cache: dict[tuple, SegmentationDataset] = {}
    for regime in regimes:
        if regime.crop not in cache:   # one dataset (and image cache) per input size
            cache[regime.crop] = SegmentationDataset(args.source_dataset, table, ImageSettings(resize=resize, crop=regime.crop),
                                                     label_source="index", cache=True)
        stream = BatchStream(len(names), args.batch_size, args.seed, SOURCE_STREAM, regime.probabilities,
                             regime.focus)
        counts = replay_counts(cache[regime.crop], stream, args.iterations)
        share = sk_share(counts, sk)
        baseline = share if baseline is None else baseline
        per_class = [f"{100 * counts[c] / counts.sum():.2f}" for c in sk]
        print(f"| {regime.name} | {100 * share:.2f} | {share / baseline:.2f} | {expected(regime)} | "
              + " | ".join(per_class) + " |")


if __name__ == "__main__":
    main()
