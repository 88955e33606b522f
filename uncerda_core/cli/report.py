"""The result tables' and the report's commands: ``uncerda summarize``, ``ablation-tables``, ``figure-*``
and ``table-html``, one command per rule.

Each figure command reads workflow files (:mod:`uncerda_core.report.inputs`), calls one function of
:mod:`uncerda_core.report.figures` and writes the figure with a provenance
sidecar (``<figure>.provenance.json``). Stage inputs are listed in chain order,
as workflow paths (the stage's name is read from the path: ``eval/tgaa_r2.json`` is ``+TGAA r2``) or
as ``LABEL=PATH``.
"""

from __future__ import annotations

from pathlib import Path

from uncerda_core.cli.registry import add_config_options, command, config_from_args
from uncerda_core.errors import UncerdaError


def _labelled(items: list[str] | None, what: str, name=None) -> dict[str, str]:
    """``PATH`` or ``LABEL=PATH`` items -> ordered {label: path}; without a label, ``name(path)``
    (by default the paper's name of the file's stage). A label given twice is an error."""
    from uncerda_core.report.inputs import model_name
    from uncerda_core.stages import stage_label
    name = name or (lambda path: stage_label(model_name(path)))
    out: dict[str, str] = {}
    for item in items or []:
        label, sep, path = item.partition("=")
        if not sep:
            label, path = name(item), item
        if not label or not path:
            raise UncerdaError(f"{what}: expected PATH or LABEL=PATH, got {item!r}")
        if label in out:
            raise UncerdaError(f"{what}: label {label!r} given twice (give LABEL=PATH to tell them apart)")
        out[label] = path
    return out


def _record(stage: str, out: str, inputs: dict[str, str], extra: dict | None = None, config: dict | None = None):
    from uncerda_core import artifacts
    artifacts.write_sidecar(out, artifacts.provenance(stage, config=config, inputs=inputs, extra=extra))
    print(f"wrote {out}")


# --- result tables -------------------------------------------------------------------------------

def row_fields(command_name: str, option: str, entry: str, form: str) -> tuple:
    """``entry`` of a repeated ``option`` split at '|' into the fields of ``form`` (e.g. ``METHOD|SEED|JSON``),
    the SEED field as an int; an entry of another shape is refused, naming the command, option and form."""
    parts, names = entry.split("|"), form.split("|")
    if len(parts) != len(names) or not parts[names.index("SEED")].isdigit():
        raise UncerdaError(f"{command_name}: {option} {entry!r}: expected {form} with an integer seed")
    parts[names.index("SEED")] = int(parts[names.index("SEED")])
    return tuple(parts)


@command("summarize", "the main chain's results table (markdown and CSV) from evaluation JSONs")
def cmd_summarize(p=None, args=None):
    if args is None:
        p.add_argument("evals", nargs="+", metavar="LABEL=METRICS_JSON")
        from uncerda_core.data.readers import SOURCE_DATASETS
        p.add_argument("--source-dataset", required=True, choices=SOURCE_DATASETS)
        p.add_argument("--rounds-dir", help="folder of the round decisions (r<N>.json)")
        p.add_argument("--out", required=True, help="markdown")
        p.add_argument("--csv", help="CSV")
        return
    from uncerda_core.report.tables import write_chain_summary
    evals = dict(item.split("=", 1) for item in args.evals)
    print(write_chain_summary(evals, args.source_dataset, args.rounds_dir, args.out, args.csv))


@command("ablation-tables", "Table 3 ladder (with controls) and Table 5 pseudo-label comparison over seeds")
def cmd_ablation_tables(p=None, args=None):
    if args is None:
        p.add_argument("--eval", action="append", default=[], metavar="LABEL|KIND|SEED|METRICS_JSON",
                       help="one evaluation; KIND is 'rung' (ladder order) or 'control'")
        p.add_argument("--pseudo", action="append", default=[], metavar="METHOD|SEED|QUALITY_JSON|ST_METRICS_JSON",
                       help="one pseudo-label method's labels and self-trained model (QUALITY_JSON may be empty)")
        p.add_argument("--out-dir", required=True, help="writes ladder.{csv,md} and pseudo_methods.{csv,md}")
        return
    from uncerda_core import artifacts
    from uncerda_core.report.tables import write_ablation_tables
    evals = [(label, kind, int(seed), path) for label, kind, seed, path in (e.split("|") for e in args.eval)]
    pseudo = [(m, int(seed), q, st) for m, seed, q, st in (e.split("|") for e in args.pseudo)]
    record = artifacts.provenance("ablation-tables", extra={"evals": args.eval, "pseudo": args.pseudo})
    for markdown in write_ablation_tables(evals, pseudo, args.out_dir, record).values():
        print(markdown, end="\n\n")


@command("table4", "Table 4: sampling strategies, one round each from the same round-0 model, over seeds")
def cmd_table4(p=None, args=None):
    if args is None:
        p.add_argument("--row", action="append", default=[], required=True,
                       metavar="METHOD|LAMBDA|SEED|METRICS_JSON|WEIGHTS_CSV",
                       help="one round: its Table 4 method and lambda ('' when it has none), the seed, its "
                            "evaluation and the weights it drew with (their provenance says how far the draws "
                            "move the rarest classes); one METHOD must be No-Balance")
        p.add_argument("--out-dir", required=True, help="writes table4.{csv,md}")
        return
    from uncerda_core import artifacts
    from uncerda_core.report.tables import sampling_comparison, write_table
    items = [row_fields("table4", "--row", entry, "METHOD|LAMBDA|SEED|METRICS_JSON|WEIGHTS_CSV") for entry in args.row]
    table = sampling_comparison(items)
    record = artifacts.provenance("table4", extra={"rows": args.row})
    print(write_table(table, args.out_dir, "table4", record))


@command("table5", "Table 5 and Fig. 3: CBST and GMM pseudo labels from several adaptation models, over seeds")
def cmd_table5(p=None, args=None):
    if args is None:
        p.add_argument("--row", action="append", default=[], required=True,
                       metavar="MODEL|PSEUDO|SEED|METRICS_JSON|QUALITY_JSON",
                       help="one row of one seed: the adaptation model's label, the pseudo labels (none, cbst, gmm, "
                            "or cbst_at_gmm_coverage, measured on precision only), the evaluation ('' for none) and "
                            "the pseudo labels' quality.json ('' for none)")
        p.add_argument("--out-dir", required=True, help="writes table5.{csv,md}")
        p.add_argument("--figure", required=True, help="Fig. 3 (PNG)")
        return
    from uncerda_core import artifacts
    from uncerda_core.report import figures
    from uncerda_core.report.tables import pseudo_model_comparison, write_table
    items = [row_fields("table5", "--row", entry, "MODEL|PSEUDO|SEED|METRICS_JSON|QUALITY_JSON") for entry in args.row]
    table = pseudo_model_comparison(items)
    record = artifacts.provenance("table5", extra={"rows": args.row})
    print(write_table(table, args.out_dir, "table5", record))
    figures.table5_figure(table, args.figure)


@command("online-table", "online self-training beside +UPST over seeds: each run's paired change against +UPST, "
                         "GMM weights against confidence weights and an addition (MIC, chain draws, length) against none")
def cmd_online_table(p=None, args=None):
    if args is None:
        p.add_argument("--eval", action="append", default=[], required=True, metavar="SETTING|SEED|METRICS_JSON",
                       help="one run of one seed; SETTING 'online, <weights> weights, from <start>' or the reference")
        p.add_argument("--reference", required=True, help="the setting every run is compared with (+UPST)")
        p.add_argument("--out-dir", required=True, help="writes online.{csv,md}")
        return
    import pandas as pd

    from uncerda_core import artifacts
    from uncerda_core.report.tables import control_columns, paired_change, sensitivity_comparison, write_table
    items = [row_fields("online-table", "--eval", e, "SETTING|SEED|METRICS_JSON") for e in args.eval]
    table = sensitivity_comparison(items, args.reference)
    per_seed: dict[str, dict[int, float]] = {}
    for setting, seed, path in items:
        per_seed.setdefault(setting, {})[seed] = artifacts.read_json(path, "metrics file")["miou"]
    pairs = []   # an addition (+ MIC, + chain draws, + 3x iterations) against none; GMM against confidence weights
    for setting in per_seed:
        if not setting.startswith("online, "):
            continue
        run, start = setting.split(", from ", 1)
        others = [f"{run.split(' + ')[0]}, from {start}"] if " + " in run else []
        if "gmm weights" in run:
            others.append(setting.replace("gmm weights", "confidence weights"))
        for other in others:
            if other in per_seed:
                pairs.append({"setting": setting, "model": "", "control": other,
                              **control_columns(paired_change(per_seed[setting], per_seed[other]))})
    table = pd.concat([table, pd.DataFrame(pairs)], ignore_index=True)
    record = artifacts.provenance("online-table", extra={"evals": args.eval, "reference": args.reference})
    print(write_table(table, args.out_dir, "online", record))


@command("per-class-table", "Tables 1/2: per-class IoU of the final AA and ST models over seeds, the paper's "
                            "UncerDA rows beside")
def cmd_per_class_table(p=None, args=None):
    if args is None:
        p.add_argument("--row", action="append", default=[], required=True, metavar="LABEL|SEED|METRICS_JSON",
                       help="one seed's evaluation of a row's model; LABEL 'UncerDA (AA)' or 'UncerDA (ST)' gets "
                            "the paper's row beside it")
        from uncerda_core.data.readers import SOURCE_DATASETS
        p.add_argument("--source-dataset", required=True, choices=SOURCE_DATASETS,
                       help="the classes the table has (Table 1: gta5, Table 2: synthia)")
        p.add_argument("--out-dir", required=True, help="writes per_class.{csv,md}")
        return
    from uncerda_core import artifacts
    from uncerda_core.report.per_class import write_per_class_table
    items = [row_fields("per-class-table", "--row", entry, "LABEL|SEED|METRICS_JSON") for entry in args.row]
    record = artifacts.provenance("per-class-table", extra={"rows": args.row, "source_dataset": args.source_dataset})
    print(write_per_class_table(items, args.source_dataset, args.out_dir, record))


@command("sensitivity", "Fig. 8: Eq. 5's alpha and mu (draw statistics, trained pairs) and k, over seeds")
def cmd_sensitivity(p=None, args=None):
    if args is None:
        from uncerda_core.uncertainty.equations import SAMPLING_READINGS
        p.add_argument("--class-stats", required=True, help="source class statistics CSV")
        p.add_argument("--rank", action="append", default=[], required=True, metavar="SEED|RANK_CSV",
                       help="each seed's ranking whose S_k guides round 1")
        # The config's tgaa.balance and tgaa.reading, and sensitivity.alphas / mus: defaults in the schema only.
        p.add_argument("--balance", type=float, required=True)
        p.add_argument("--reading", choices=SAMPLING_READINGS, required=True)
        p.add_argument("--alphas", type=float, nargs="+", required=True)
        p.add_argument("--mus", type=float, nargs="+", required=True)
        p.add_argument("--eval", action="append", default=[], required=True, metavar="SETTING|SEED|METRICS_JSON",
                       help="one trained setting ('alpha=A mu=M' or 'k=K') of one seed")
        p.add_argument("--reference", required=True, help="the setting of the chain's own round 1")
        p.add_argument("--out-dir", required=True, help="writes sensitivity_draws.{csv,md} and sensitivity.{csv,md}")
        p.add_argument("--figure", required=True, help="Fig. 8 (PNG)")
        return
    import pandas as pd

    from uncerda_core import artifacts
    from uncerda_core.report import figures
    from uncerda_core.report.tables import sensitivity_comparison, write_table
    from uncerda_core.uncertainty.rank import read_sk
    from uncerda_core.uncertainty.weights import eq5_grid_draws, read_class_counts

    _, counts = read_class_counts(args.class_stats)
    grids = []
    for entry in args.rank:
        seed, rank = row_fields("sensitivity", "--rank", entry, "SEED|RANK_CSV")
        grid = eq5_grid_draws(counts, read_sk(rank), args.balance, args.reading, args.alphas, args.mus)
        grids.append(grid.assign(seed=seed))
    draws = pd.concat(grids, ignore_index=True)
    items = [row_fields("sensitivity", "--eval", e, "SETTING|SEED|METRICS_JSON") for e in args.eval]
    trained = sensitivity_comparison(items, args.reference)
    record = artifacts.provenance("sensitivity", inputs={"class_stats": args.class_stats},
                                  extra={"ranks": args.rank, "evals": args.eval, "balance": args.balance,
                                         "reading": args.reading, "alphas": args.alphas, "mus": args.mus})
    print(write_table(draws, args.out_dir, "sensitivity_draws", record))
    print(write_table(trained, args.out_dir, "sensitivity", record))
    mean_grid = draws.drop(columns="seed").groupby(["alpha", "mu"], as_index=False, sort=False).mean()
    figures.sensitivity_figure(mean_grid, trained, args.reading, args.figure)
    _record("sensitivity", args.figure, {"class_stats": args.class_stats},
            extra={"ranks": args.rank, "evals": args.eval, "alphas": args.alphas, "mus": args.mus})


@command("ablation-sk-classes", "+TGAA against its matched +SR control on round 1's S_k and on the other classes")
def cmd_ablation_sk_classes(p=None, args=None):
    if args is None:
        p.add_argument("--seed-models", action="append", default=[], required=True,
                       metavar="SEED|RANK_CSV|START_JSON|TGAA_JSON|CONTROL_JSON",
                       help="one seed: the ranking whose S_k guided round 1, and the metrics of the rounds' starting "
                            "model, the final target-guided model and +SR run for as many rounds")
        from uncerda_core.data.readers import SOURCE_DATASETS
        p.add_argument("--source-dataset", required=True, choices=SOURCE_DATASETS,
                       help="the classes mIoU is reported over")
        p.add_argument("--out-dir", required=True, help="writes sk_classes.{csv,md}")
        return
    from uncerda_core import artifacts
    from uncerda_core.data.labels import eval_class_ids
    from uncerda_core.report.inputs import model_name
    from uncerda_core.report.tables import sk_class_comparison, write_table
    from uncerda_core.stages import CONTROL_LABELS, RUNG_LABELS, stage_label
    reference, control = RUNG_LABELS["tgaa"], CONTROL_LABELS["sr_matched"]
    items = []
    for entry in args.seed_models:
        fields = entry.split("|")
        if len(fields) != 5 or not fields[0].isdigit():
            raise UncerdaError(f"--seed-models: expected SEED|RANK_CSV|START_JSON|TGAA_JSON|CONTROL_JSON with an "
                               f"integer SEED, got {entry!r}")
        seed, rank, start, tgaa, sr = fields
        items.append((int(seed), rank, {stage_label(model_name(start)): start, reference: tgaa, control: sr}))
    table = sk_class_comparison(items, reference, control, eval_class_ids(args.source_dataset)["miou"])
    record = artifacts.provenance("ablation-sk-classes", extra={"seed_models": args.seed_models})
    print(write_table(table, args.out_dir, "sk_classes", record))


# --- report figures ------------------------------------------------------------------------------

@command("figure-iou", "per-class IoU per stage on target val as grouped bars (the paper's Fig. 6)")
def cmd_figure_iou(p=None, args=None):
    if args is None:
        p.add_argument("evals", nargs="+", metavar="METRICS_JSON",
                       help="evaluation JSON of each stage, in chain order (or LABEL=METRICS_JSON)")
        p.add_argument("--highlight-rank", metavar="RANK_CSV", help="mark the classes of this ranking's S_k")
        p.add_argument("--out", required=True, help="PNG")
        return
    from uncerda_core.report import figures, inputs
    evals = _labelled(args.evals, "evaluations")
    results = {label: inputs.read_json(path, "metrics file") for label, path in evals.items()}
    highlight = inputs.read_sk_classes(args.highlight_rank) if args.highlight_rank else []
    figures.iou_figure(results, args.out, highlight=highlight)
    _record("figure-iou", args.out, {**evals, **({"highlight_rank": args.highlight_rank} if args.highlight_rank
                                                  else {})})


@command("figure-rank", "class-uncertainty ranking and S_k of every round as a heat map")
def cmd_figure_rank(p=None, args=None):
    if args is None:
        p.add_argument("ranks", nargs="+", metavar="RANK_CSV",
                       help="ranking of each round, round 0 first (or LABEL=RANK_CSV)")
        p.add_argument("--decisions", nargs="*", default=[], metavar="DECISION_JSON",
                       help="round decisions rounds/r<N>.json: why the loop went on or stopped after round N")
        p.add_argument("--out", required=True, help="PNG")
        return
    from uncerda_core.report import figures, inputs
    ranks = _labelled(args.ranks, "rankings", name=lambda path: inputs.round_label(inputs.model_name(path)))
    tables = {label: inputs.read_rank_table(path) for label, path in ranks.items()}
    notes = inputs.read_round_notes(args.decisions, list(ranks))
    figures.rank_figure(tables, args.out, notes=notes)
    _record("figure-rank", args.out, {**ranks, **{f"decision {i}": d for i, d in enumerate(args.decisions)}})


@command("figure-weights", "distribution of the source sampling weights of every target-guided round")
def cmd_figure_weights(p=None, args=None):
    if args is None:
        p.add_argument("weights", nargs="+", metavar="WEIGHTS_CSV",
                       help="sampling weights of each round, in round order (or LABEL=WEIGHTS_CSV)")
        p.add_argument("--alpha", type=float, help="Eq. 5's alpha (draws the curve)")
        p.add_argument("--mu", type=float, help="Eq. 5's mu")
        p.add_argument("--out", required=True, help="PNG")
        return
    from uncerda_core.report import figures, inputs
    paths = _labelled(args.weights, "weights", name=lambda path: inputs.weights_label(inputs.model_name(path)))
    tables, sk, records = inputs.read_weight_tables(paths)
    readings = {r["reading"] for r in records.values() if "reading" in r}
    if len(readings) > 1:
        raise UncerdaError(f"figure-weights: the tables were made with different readings "
                           f"({', '.join(sorted(readings))}); "
                           "draw each reading's rounds in a figure of its own")
    figures.weights_figure(tables, args.out, alpha=args.alpha, mu=args.mu, sk=sk,
                           reading=readings.pop() if readings else "weighted_mean",
                           draws={label: r["draws"] for label, r in records.items() if "draws" in r})
    _record("figure-weights", args.out, paths, extra={"alpha": args.alpha, "mu": args.mu})


@command("figure-gmm", "each class's entropy histogram with the fitted mixture and the selection (Fig. 4)")
def cmd_figure_gmm(p=None, args=None):
    if args is None:
        p.add_argument("--maps", required=True, help="maps file (.h5) the pseudo labels were made from")
        p.add_argument("--pseudo-dir", required=True, help="pseudo-label folder (its classes.csv)")
        p.add_argument("--label", default="", help="model name for the title")
        p.add_argument("--bins", type=int, default=60)
        p.add_argument("--out", required=True, help="PNG")
        return
    from uncerda_core.report import figures, inputs
    hist, values, classes = inputs.load_gmm_inputs(args.maps, args.pseudo_dir)
    title = "Entropy per class with the fitted 2-component mixture (Eq. 6)"
    if args.label:
        title += f": {args.label}"
    figures.gmm_figure(hist, values, classes, args.out, bins=args.bins, title=title)
    _record("figure-gmm", args.out, {"maps": args.maps, "classes": str(Path(args.pseudo_dir) / "classes.csv")})


@command("figure-pseudo-quality", "precision and coverage of the pseudo labels per class")
def cmd_figure_pseudo_quality(p=None, args=None):
    if args is None:
        p.add_argument("--pseudo-dir", required=True, help="pseudo-label folder (classes.csv, quality.csv)")
        p.add_argument("--label", default="", help="what the labels are, for the title")
        p.add_argument("--out", required=True, help="PNG")
        return
    from uncerda_core.pseudo.folder import read_pseudo_dir
    from uncerda_core.report import figures
    classes, quality, overall = read_pseudo_dir(args.pseudo_dir)
    figures.pseudo_quality_figure(classes, args.out, quality=quality, overall=overall, label=args.label)
    folder = Path(args.pseudo_dir)
    _record("figure-pseudo-quality", args.out,
            {name: str(folder / name) for name in ("classes.csv", "quality.csv", "quality.json")})


@command("figure-examples", "target val images: ground truth, prediction per stage, entropy (Figs. 5, 7)")
def cmd_figure_examples(p=None, args=None):
    if args is None:
        add_config_options(p)
        p.add_argument("--checkpoint", nargs="+", required=True, metavar="CHECKPOINT",
                       help="checkpoint of each stage, in chain order (or LABEL=CHECKPOINT)")
        p.add_argument("--index", required=True, help="target val index CSV")
        p.add_argument("--n-images", type=int, default=4, help="images, spread evenly over the index")
        p.add_argument("--entropy", nargs="*", default=[], metavar="STAGE",
                       help="also show the entropy maps of these stages (label or model name, e.g. aa_it)")
        p.add_argument("--out", required=True, help="PNG")
        return
    from uncerda_core.report import figures, inputs
    if args.n_images < 1:
        raise UncerdaError("--n-images must be at least 1")
    config = config_from_args(args)
    checkpoints = _labelled(args.checkpoint, "--checkpoint")
    entropy = inputs.stage_labels(args.entropy, checkpoints, "--entropy")
    examples = inputs.load_examples(config, checkpoints, args.index, args.n_images, entropy)
    figures.examples_figure(examples, args.out)
    _record("figure-examples", args.out, {**checkpoints, "index": args.index}, config=config,
            extra={"images": [ex.name for ex in examples]})


@command("figure-curves", "training curves of every stage (losses.csv) and the mIoU along the chain")
def cmd_figure_curves(p=None, args=None):
    if args is None:
        p.add_argument("losses", nargs="+", metavar="LOSSES_CSV",
                       help="models/<model>/losses.csv of each stage, in chain order (or LABEL=LOSSES_CSV)")
        p.add_argument("--evals", nargs="*", default=[], metavar="METRICS_JSON",
                       help="evaluation JSON of each model along the chain (or LABEL=METRICS_JSON)")
        p.add_argument("--out", required=True, help="PNG")
        return
    from uncerda_core.report import figures, inputs
    from uncerda_core.stages import stage_label
    paths = _labelled(args.losses, "losses", name=lambda path: stage_label(Path(path).parent.name))
    tables = {label: inputs.require_columns(inputs.read_csv(path, "losses table"), ["iteration"], path)
              for label, path in paths.items()}
    evals = _labelled(args.evals, "evaluations")
    miou = {label: inputs.read_json(path, "metrics file").get("miou") for label, path in evals.items()}
    figures.training_curves_figure(tables, args.out, miou=miou)
    _record("figure-curves", args.out, {**{f"losses {k}": v for k, v in paths.items()},
                                        **{f"eval {k}": v for k, v in evals.items()}})


@command("figure-ladder", "the ablation ladder (Table 3) over seeds as bars with seeds and gains")
def cmd_figure_ladder(p=None, args=None):
    if args is None:
        p.add_argument("--csv", required=True, help="ladder.csv")
        p.add_argument("--out", required=True, help="PNG")
        return
    from uncerda_core.report import figures, inputs
    ladder = inputs.require_columns(inputs.read_csv(args.csv, "ablation ladder"),
                                     ["rung", "miou_mean"], args.csv)
    figures.ladder_figure(ladder, args.out)
    _record("figure-ladder", args.out, {"ladder": args.csv})


@command("figure-pseudo-methods", "pseudo-label methods (Table 5): precision, coverage and mIoU")
def cmd_figure_pseudo_methods(p=None, args=None):
    if args is None:
        p.add_argument("--csv", required=True, help="pseudo_methods.csv")
        p.add_argument("--out", required=True, help="PNG")
        return
    from uncerda_core.report import figures, inputs
    methods = inputs.require_columns(inputs.read_csv(args.csv, "pseudo-label comparison"),
                                      ["method", "precision_mean", "coverage_mean", "miou_mean"], args.csv)
    figures.pseudo_methods_figure(methods, args.out)
    _record("figure-pseudo-methods", args.out, {"pseudo_methods": args.csv})


@command("table-html", "a result table (summary, ladder, pseudo-label methods) as a standalone HTML page")
def cmd_table_html(p=None, args=None):
    if args is None:
        p.add_argument("--csv", required=True, help="the table (summary.csv, ladder.csv, pseudo_methods.csv)")
        p.add_argument("--title", default="uncerda results")
        p.add_argument("--rounds-dir", help="folder of the round decisions (r<N>.json), listed under the table")
        p.add_argument("--out", required=True, help="HTML")
        return
    from uncerda_core.report import inputs, tables
    frame = inputs.read_csv(args.csv, "result table")
    tables.html_page(frame, args.out, args.title, notes=tables.round_decisions(args.rounds_dir),
                     source=Path(args.csv).name)
    _record("table-html", args.out, {"table": args.csv, **({"rounds_dir": args.rounds_dir} if args.rounds_dir
                                                          else {})})
