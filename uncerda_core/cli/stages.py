"""The stage commands of ``uncerda``: configuration, data, training, evaluation, uncertainty, pseudo labels,
prediction and export, each with the same inputs and outputs as its rule.

Each command parses its arguments and calls one function of the package; no
logic lives here. Commands that take ``--config`` validate it against the
schema before doing any work.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from uncerda_core.cli.registry import add_config_options, command, config_from_args, has_config
from uncerda_core.errors import UncerdaError
from uncerda_core.uncertainty.equations import SAMPLING_READINGS


def _seed(args, config: dict) -> int:
    return config["seed"] if args.seed is None else args.seed


# --- configuration -----------------------------------------------------------------------------

@command("validate", "validate a config against the schema and print it with defaults filled in")
def cmd_validate(p=None, args=None):
    if args is None:
        add_config_options(p)
        p.add_argument("--no-check-paths", dest="check_paths", action="store_false",
                       help="do not check that data roots exist")
        return
    import yaml
    print(yaml.safe_dump(config_from_args(args), sort_keys=False), end="")


@command("write-config", "write the resolved config (defaults filled in) as YAML: the workflow's record of it")
def cmd_write_config(p=None, args=None):
    if args is None:
        add_config_options(p)
        p.add_argument("--out", required=True, help="YAML file, written atomically")
        return
    from uncerda_core.config import write_resolved_config
    args.check_paths = False
    write_resolved_config(config_from_args(args), args.out)


@command("provenance", "print where an artifact came from (config, code version, inputs)")
def cmd_provenance(p=None, args=None):
    if args is None:
        p.add_argument("file", help="checkpoint, maps file, table, JSON or output folder")
        return
    from uncerda_core.artifacts import read_provenance
    print(json.dumps(read_provenance(args.file), indent=2))


# --- data ----------------------------------------------------------------------------------------

@command("generate-demo", "generate the embedded demo data set into source.root and target.root")
def cmd_generate_demo(p=None, args=None):
    if args is None:
        add_config_options(p)
        return
    from uncerda_core.config import check_demo_roots
    from uncerda_core.data.demo import generate_demo
    args.check_paths = False
    config = config_from_args(args)
    check_demo_roots(config)
    demo = config["demo"]
    generate_demo(config["source"]["root"], config["target"]["root"], seed=demo["seed"], size=tuple(demo["size"]),
                  n_source=demo["n_source"], n_target_train=demo["n_target_train"],
                  n_target_val=demo["n_target_val"])


@command("index", "walk a data set split once, check every file, write the index table")
def cmd_index(p=None, args=None):
    if args is None:
        from uncerda_core.data.readers import DATASETS
        p.add_argument("--dataset", required=True, choices=DATASETS)
        p.add_argument("--root", required=True)
        p.add_argument("--split", required=True)
        p.add_argument("--out", required=True, help="index CSV")
        p.add_argument("--no-labels", action="store_true",
                       help="labels are not required (unlabelled target); labels found are still listed, "
                            "for the pseudo-label diagnostics only: training never reads them")
        p.add_argument("--workers", type=int, default=2)
        return
    from uncerda_core import artifacts
    from uncerda_core.data.index import build_index, write_index
    table = build_index(args.dataset, args.root, args.split, require_labels=not args.no_labels,
                        workers=args.workers)
    record = artifacts.provenance("index", extra={"dataset": args.dataset, "root": str(args.root),
                                                  "split": args.split})
    write_index(table, args.out, record)


@command("class-stats", "per-image, per-class pixel counts of the source labels")
def cmd_class_stats(p=None, args=None):
    if args is None:
        from uncerda_core.data.readers import DATASETS
        p.add_argument("--index", required=True, help="source index CSV")
        p.add_argument("--dataset", required=True, choices=DATASETS)
        p.add_argument("--out", required=True)
        p.add_argument("--workers", type=int, default=2)
        return
    from uncerda_core import artifacts
    from uncerda_core.data.class_stats import compute_class_stats, write_class_stats
    from uncerda_core.data.index import read_index
    table = compute_class_stats(read_index(args.index), args.dataset, workers=args.workers)
    write_class_stats(table, args.out, artifacts.provenance("class-stats", inputs={"index": args.index}))


@command("holdout-split", "hold out a seeded part of labelled target train for checkpoint selection")
def cmd_holdout_split(p=None, args=None):
    if args is None:
        add_config_options(p)
        p.add_argument("--index", required=True, help="target train index CSV (without labels)")
        p.add_argument("--labelled-index", required=True, help="the same split's index CSV with labels")
        p.add_argument("--adapt-out", required=True, help="index CSV of the images adaptation reads")
        p.add_argument("--holdout-out", required=True, help="index CSV of the held-out images (with labels)")
        p.add_argument("--labelled-adapt-out", required=True,
                       help="index CSV of the adaptation images with labels (the target oracle's)")
        return
    from uncerda_core import artifacts
    from uncerda_core.data.index import write_holdout_split
    config = config_from_args(args)
    fraction, seed = config["selection"]["holdout_fraction"], config["seed"]
    record = artifacts.provenance("holdout-split", config=config, seed=seed, inputs={
        "index": args.index, "labelled_index": args.labelled_index})
    adapt, held = write_holdout_split(args.index, args.labelled_index, fraction, seed, args.adapt_out,
                                      args.holdout_out, args.labelled_adapt_out, record)
    print(f"holdout-split: {held} target train images held out for checkpoint selection, {adapt} for adaptation")


# --- training ------------------------------------------------------------------------------------

def _add_train_io(p: argparse.ArgumentParser, target: bool = True, init: bool = True) -> None:
    add_config_options(p)
    p.add_argument("--source-index", required=True, help="source index CSV (labelled)")
    if target:
        p.add_argument("--target-index", required=True, help="target train index CSV")
    if init:
        p.add_argument("--init", help="checkpoint to start from (default: the config's model.init)")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--losses", help="losses CSV to write")
    p.add_argument("--seed", type=int, help="default: the config's seed")
    p.add_argument("--keep-snapshots", action="store_true",
                   help="also keep the weights every selection.keep_every iterations in <dir of --out>/snapshots/ "
                        "(the candidates of `uncerda select`)")


def _train(args, stage: str, image_translation: bool | None = None, adversarial_weight: float = 1.0,
           source_loss: str | None = None, **extra):
    from uncerda_core.train.loop import run_training, stage_settings
    config = config_from_args(args)
    settings = stage_settings(config, stage, image_translation=image_translation,
                              adversarial_weight=adversarial_weight, source_loss=source_loss)
    source_dataset = config["target"]["dataset"] if stage == "oracle" else config["source"]["dataset"]
    init = getattr(args, "init", None) or config["model"]["init"]
    # a training job stops when whatever started it is gone (not when called from Python, e.g. by the tests)
    if getattr(args, "own_process", False):
        from uncerda_core.train.guards import stop_with_parent
        stop_with_parent()
    run_training(config, settings, args.out, seed=_seed(args, config), source_dataset=source_dataset,
                 source_index=args.source_index, target_index=getattr(args, "target_index", None),
                 init=init, losses_csv=args.losses, keep_snapshots=args.keep_snapshots, **extra)


def _add_draw_options(p, weights_help: str) -> None:
    """The files that make a stage draw source images by class: a target-guided round's (adapt) and online
    self-training's under selftrain.online.source_draws: chain."""
    p.add_argument("--weights", help=weights_help)
    p.add_argument("--class-stats", help="source class statistics CSV (crop-level sampling)")
    p.add_argument("--rank", help="ranking CSV whose S_k centres the crops (crop-level sampling)")
    p.add_argument("--k", type=int, help="with --rank: S_k = the k classes ranked first (Fig. 8(b)'s sweep)")


def _draws(args) -> dict:
    """run_training's keyword arguments from :func:`_add_draw_options`' options."""
    sk = None
    if args.rank:
        from uncerda_core.uncertainty.rank import read_sk
        sk = read_sk(args.rank, args.k)
    return dict(weights=args.weights, class_stats=args.class_stats, sk=sk)


@command("train-source", "source-only training (Table 3 'Source only')")
def cmd_train_source(p=None, args=None):
    if args is None:
        _add_train_io(p, target=False)
        return
    _train(args, "source_only")


@command("train-oracle", "train on labelled target images (analysis only: the upper bound of the gap)")
def cmd_train_oracle(p=None, args=None):
    if args is None:
        _add_train_io(p, target=False)
        return
    _train(args, "oracle")


@command("adapt", "multi-level adversarial adaptation: round 0, a target-guided round, or +SR")
def cmd_adapt(p=None, args=None):
    if args is None:
        _add_train_io(p)
        _add_draw_options(p, "sampling weights CSV (target-guided rounds and +SR)")
        p.add_argument("--image-translation", choices=["config", "on", "off"], default="config",
                       help="image translation of the source images: FDA, or source.translated_root when set "
                            "(default: adapt.image_translation)")
        p.add_argument("--adversarial-weight", type=float, default=1.0,
                       help="scale of the adversarial losses (0: the no-adversarial control)")
        p.add_argument("--source-loss", choices=["config", "cross_entropy", "focal"], default="config",
                       help="loss on the source pixels (default: adapt.source_loss; focal: Table 4's focal-loss round, "
                            "gamma adapt.focal_gamma)")
        return
    it = {"config": None, "on": True, "off": False}[args.image_translation]
    _train(args, "tgaa" if args.weights else "aa", image_translation=it,
           adversarial_weight=args.adversarial_weight,
           source_loss=None if args.source_loss == "config" else args.source_loss, **_draws(args))


@command("self-train", "self-training on pseudo-labelled target images (with source images unless selftrain.target_only)")
def cmd_self_train(p=None, args=None):
    if args is None:
        _add_train_io(p)
        p.add_argument("--pseudo-dir", help="pseudo-label folder (<name>.png); not read under selftrain.mode: online, "
                                            "where an EMA teacher labels each target batch")
        _add_draw_options(p, "the chain's sampling weights CSV (online self-training with "
                             "selftrain.online.source_draws: chain only)")
        return
    _train(args, "st", pseudo_dir=args.pseudo_dir, **_draws(args))


@command("import-model", "a trained model file of another project (AdaptSegNet, ADVENT, Seg-Uncertainty) as an uncerda checkpoint")
def cmd_import_model(p=None, args=None):
    if args is None:
        add_config_options(p)
        p.add_argument("--weights", required=True, help="the model file (a state dict, or an uncerda checkpoint)")
        p.add_argument("--out", required=True, help="checkpoint to write")
        return
    from uncerda_core.train.checkpoint import import_model
    print(import_model(config_from_args(args), args.weights, args.out))


@command("adabn", "re-estimate BatchNorm statistics on target images (control, no training)")
def cmd_adabn(p=None, args=None):
    if args is None:
        add_config_options(p)
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--target-index", required=True)
        p.add_argument("--out", required=True)
        return
    from uncerda_core.train.adabn import adapt_batchnorm
    adapt_batchnorm(config_from_args(args), args.checkpoint, args.target_index, args.out)


# --- evaluation ----------------------------------------------------------------------------------

@command("evaluate", "mIoU of a checkpoint on the target val set (JSON and CSV)")
def cmd_evaluate(p=None, args=None):
    if args is None:
        add_config_options(p)
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--index", required=True, help="target val index CSV")
        p.add_argument("--out", required=True, help="metrics JSON")
        p.add_argument("--csv", help="per-class IoU CSV")
        p.add_argument("--pred-dir", help="also write the predictions as PNGs here")
        p.add_argument("--name", help="row name in the printed table")
        return
    from uncerda_core.data.labels import eval_class_ids
    from uncerda_core.evaluate.evaluate import evaluate_checkpoint, format_table, protocol_of
    config = config_from_args(args)
    result = evaluate_checkpoint(config, args.checkpoint, args.index, args.out, args.csv, args.pred_dir)
    print(format_table({args.name or Path(args.checkpoint).parent.name: result},
                       eval_class_ids(config["source"]["dataset"])))
    print(f"evaluation protocol: {protocol_of(result)}")


@command("select", "checkpoint selection: the snapshot with the best mIoU on held-out target train images")
def cmd_select(p=None, args=None):
    if args is None:
        add_config_options(p)
        p.add_argument("--checkpoint", required=True,
                       help="a stage's final checkpoint, trained with --keep-snapshots (snapshots/ beside it)")
        p.add_argument("--holdout-index", required=True, help="held-out target train index CSV (with labels)")
        p.add_argument("--out", required=True, help="folder: checkpoint.pt (the chosen snapshot) and selection.json")
        return
    from uncerda_core.evaluate.select import select_checkpoint
    select_checkpoint(config_from_args(args), args.checkpoint, args.holdout_index, args.out)


@command("score", "score a folder of predicted label PNGs against a data set's ground truth")
def cmd_score(p=None, args=None):
    if args is None:
        p.add_argument("--pred-dir", required=True,
                       help="prediction PNGs, in city sub-folders or not, named <stem>.png, <stem>_leftImg8bit.png, "
                            "<stem>_trainIds.png or <stem>_labelIds.png (train ids: 255 = no prediction)")
        from uncerda_core.data.readers import DATASETS
        p.add_argument("--dataset", required=True, choices=DATASETS)
        p.add_argument("--root", required=True)
        p.add_argument("--split", required=True)
        p.add_argument("--out", required=True, help="metrics JSON")
        p.add_argument("--csv", help="per-class IoU CSV")
        p.add_argument("--classes", choices=["19", "synthia"], default="19",
                       help="'synthia': report mIoU over 16 classes and mIoU* over 13")
        p.add_argument("--id-type", choices=["auto", "train", "label"], default="auto",
                       help="what the PNGs hold: train ids, Cityscapes label ids, or 'auto' by name "
                            "(*_labelIds.png label ids, any other name train ids)")
        return
    from uncerda_core.data.labels import eval_class_ids
    from uncerda_core.evaluate.evaluate import format_table, score_predictions
    subsets = eval_class_ids("synthia" if args.classes == "synthia" else "gta5")
    result = score_predictions(args.pred_dir, args.dataset, args.root, args.split, args.out, args.csv, subsets,
                               id_type=args.id_type)
    print(format_table({Path(args.pred_dir).name: result}, subsets))


# --- uncertainty ---------------------------------------------------------------------------------

@command("dump", "run a checkpoint over target images and write entropy/probability maps (HDF5)")
def cmd_dump(p=None, args=None):
    if args is None:
        p.add_argument("--checkpoint", required=True)
        from uncerda_core.data.readers import DATASETS
        p.add_argument("--dataset", choices=DATASETS, help="default: the config's target.dataset")
        p.add_argument("--root", help="data root (with --split), or give --index")
        p.add_argument("--split", help="default: the config's target.train_split")
        p.add_argument("--index", help="index CSV instead of --root/--split")
        p.add_argument("--out", required=True, help="maps file (.h5)")
        add_config_options(p, required=False)
        return
    from uncerda_core.uncertainty.dump import dump_maps
    config = config_from_args(args) if has_config(args) else None
    dump_maps(args.checkpoint, args.out, config=config, dataset=args.dataset, root=args.root,
              split=args.split, index=args.index)


@command("rank", "class uncertainty (Eq. 1) per class, rank, and S_k")
def cmd_rank(p=None, args=None):
    if args is None:
        p.add_argument("--maps", required=True)
        p.add_argument("--k", type=int, required=True, help="size of S_k (the config's tgaa.k)")
        p.add_argument("--out", required=True, help="ranking CSV")
        p.add_argument("--workers", type=int, default=2, help="processes for the histogram pass")
        p.add_argument("--recount", action="store_true",
                       help="count the pixels again instead of using the histogram stored in the maps file")
        return
    from uncerda_core import artifacts
    from uncerda_core.data.labels import CLASS_NAMES
    from uncerda_core.uncertainty.rank import rank_classes, write_rank
    table = rank_classes(args.maps, args.k, CLASS_NAMES, workers=args.workers, stored=not args.recount)
    write_rank(table, args.out, artifacts.provenance("rank", inputs={"maps": args.maps}, extra={"k": args.k}))
    print(table.to_string(index=False))


@command("weights", "sampling weight per source image (Eqs. 3-5)")
def cmd_weights(p=None, args=None):
    if args is None:
        p.add_argument("--class-stats", required=True)
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--rank", help="ranking CSV whose S_k drives the weights")
        group.add_argument("--all-classes", action="store_true", help="+SR: S_k = all classes, no target signal")
        group.add_argument("--uniform", action="store_true",
                           help="every image alike (Table 4's no-balance round); balance, alpha and mu unused")
        p.add_argument("--k", type=int, help="with --rank: S_k = the k classes ranked first instead of its in_sk "
                                             "column (Fig. 8(b)'s sweep)")
        # The config's tgaa.balance, tgaa.alpha and tgaa.mu: their defaults live in the schema only.
        p.add_argument("--balance", type=float, required=True)
        p.add_argument("--alpha", type=float, required=True)
        p.add_argument("--mu", type=float, required=True)
        # tgaa.reading (docs/method.md, "Source sampling"); the default lives in the schema.
        p.add_argument("--reading", choices=SAMPLING_READINGS, required=True)
        p.add_argument("--out", required=True)
        return
    from uncerda_core import artifacts
    from uncerda_core.uncertainty.rank import read_sk
    from uncerda_core.uncertainty.weights import (draw_summary, read_class_counts, uniform_weights, weights_table,
                                                  write_weights)
    sk = None if args.all_classes or args.uniform else read_sk(args.rank, args.k)
    names, counts = read_class_counts(args.class_stats)   # read once: the weights and their draw summary
    if args.uniform:
        table = uniform_weights(names)
    else:
        table = weights_table(names, counts, sk, args.balance, args.alpha, args.mu, args.reading)
    summary = draw_summary(table, counts, sk)
    record = artifacts.provenance("weights", inputs={"class_stats": args.class_stats, "rank": args.rank},
                                  extra={"sk": sk, "balance": args.balance, "alpha": args.alpha, "mu": args.mu,
                                         "reading": "uniform" if args.uniform else args.reading,
                                         "draws": asdict(summary)})
    write_weights(table, args.out, record)
    print(f"[weights] {args.out}: {summary.describe()}")


@command("decide-round", "whether another target-guided round is needed (S_k changed, rounds left)")
def cmd_decide_round(p=None, args=None):
    if args is None:
        p.add_argument("--round", type=int, required=True, help="the round just finished (>= 1)")
        p.add_argument("--rank", required=True, help="ranking of this round's model")
        p.add_argument("--previous-rank", required=True, help="ranking of the previous round's model")
        p.add_argument("--max-rounds", type=int, required=True)
        p.add_argument("--out", required=True, help="decision JSON")
        return
    from uncerda_core.uncertainty.rank import read_sk
    from uncerda_core.uncertainty.rounds import decide, write_decision
    decision = decide(args.round, read_sk(args.rank), read_sk(args.previous_rank), args.max_rounds)
    write_decision(args.out, decision)
    print(json.dumps(decision))


# --- pseudo labels -------------------------------------------------------------------------------

@command("pseudo-labels", "pseudo labels from a maps file (GMM, CBST, threshold or argmax)")
def cmd_pseudo_labels(p=None, args=None):
    if args is None:
        p.add_argument("--maps", required=True)
        from uncerda_core.pseudo.labels import METHODS
        p.add_argument("--method", choices=METHODS)
        p.add_argument("--out-dir", required=True)
        p.add_argument("--gt-root", help="target root with ground truth for the maps' images (diagnosis only)")
        p.add_argument("--gt-split", help="split of --gt-root (default: the config's target.train_split)")
        p.add_argument("--workers", type=int, default=2, help="processes for the histogram pass")
        p.add_argument("--recount", action="store_true",
                       help="count the pixels again instead of using the histogram stored in the maps file")
        p.add_argument("--cbst-at-coverage-of", metavar="PSEUDO_DIR",
                       help="CBST whose portion is the overall coverage of another selection (its classes.csv): "
                            "the two methods compared at equal coverage")
        add_config_options(p, required=False)
        return
    from uncerda_core.config import schema_defaults
    from uncerda_core.pseudo.labels import PseudoSettings, coverage_of, generate_pseudo_labels, ground_truth_for_maps
    config = config_from_args(args) if has_config(args) else None
    settings = PseudoSettings.from_config((config or schema_defaults())["pseudo"])
    if args.method:
        settings = PseudoSettings.from_config({**vars(settings), "method": args.method})
    if args.cbst_at_coverage_of:
        if args.method not in (None, "cbst"):
            raise UncerdaError("--cbst-at-coverage-of selects with CBST; drop --method or give --method cbst")
        portion = coverage_of(args.cbst_at_coverage_of)
        settings = PseudoSettings.from_config({**vars(settings), "method": "cbst", "cbst_portion": portion})
        print(f"pseudo-labels: CBST at the coverage of {args.cbst_at_coverage_of}: portion {portion:.6f}",
              file=sys.stderr)
    gt_lookup = None
    if args.gt_root and not args.gt_split:
        if config is None:
            raise UncerdaError("--gt-root needs --gt-split, or a config (--config/--config-json) whose "
                               "target.train_split names the split")
        args.gt_split = config["target"]["train_split"]
    if args.gt_root:
        gt_lookup = ground_truth_for_maps(args.maps, args.gt_root, args.gt_split)
    from uncerda_core import artifacts
    record = artifacts.provenance("pseudo-labels", config=config, inputs={"maps": args.maps},
                                  extra={"settings": vars(settings)})
    expected = config["model"]["num_classes"] if config else None
    table = generate_pseudo_labels(args.maps, settings, args.out_dir, gt_lookup=gt_lookup, record=record,
                                   expected_classes=expected, workers=args.workers, stored=not args.recount)
    print(table.to_string(index=False))


# --- using the adapted model (predict, export) ---------------------------------------------------

@command("predict", "predictions for every image in a folder: train ids, Cityscapes label ids, colours")
def cmd_predict(p=None, args=None):
    if args is None:
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--input", required=True, help="folder of PNG/JPEG images, searched recursively")
        p.add_argument("--out-dir", required=True, help="written mirroring the input's sub-folders")
        p.add_argument("--formats", nargs="+", choices=["trainIds", "labelIds", "color"],
                       default=["trainIds", "labelIds", "color"], help="which files to write per image")
        p.add_argument("--evaluation-protocol", metavar="{single,multiscale_flip}",
                       help="single pass, or the config's evaluate.scales with flips (default: evaluate.protocol)")
        p.add_argument("--entropy", action="store_true",
                       help="also write the normalised entropy as a 16-bit PNG (<stem>_entropy.png)")
        p.add_argument("--zip", help="also zip the *_labelIds.png files here (a benchmark submission)")
        add_config_options(p, required=False)
        return
    from uncerda_core.predict import predict_folder, write_submission_zip
    if args.zip and "labelIds" not in args.formats:
        raise UncerdaError("--zip packs the *_labelIds.png files: add labelIds to --formats")
    args.check_paths = False   # inference reads no data set root
    config = config_from_args(args) if has_config(args) else None
    summary = predict_folder(args.checkpoint, args.input, args.out_dir, formats=tuple(args.formats),
                             protocol=args.evaluation_protocol, entropy=args.entropy, config=config)
    print(f"{summary['images']} images -> {args.out_dir} ({', '.join(summary['formats'])}, "
          f"protocol {summary['protocol']})")
    if args.zip:
        count = write_submission_zip(args.out_dir, args.zip)
        print(f"{count} label-id PNGs -> {args.zip}")


@command("export", "the segmentation network alone, for deployment (torch.export .pt2, or .onnx)")
def cmd_export(p=None, args=None):
    if args is None:
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--out", required=True, help="model.pt2 (torch.export) or model.onnx")
        add_config_options(p, required=False)
        return
    from uncerda_core.export import export_model
    args.check_paths = False   # exporting reads no data set root
    config = config_from_args(args) if has_config(args) else None
    info = export_model(args.checkpoint, args.out, config=config)
    print(f"wrote {args.out}: input {info['input']}, output {info['output']}")
