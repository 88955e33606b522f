# Configuration checks, paths and helpers shared by every rule file.
import json
import os
import shlex
import sys

from snakemake.exceptions import WorkflowError

from uncerda_core.artifacts import UncerdaError
from uncerda_core.config import check_data_roots, check_demo_roots, dumps, validate_config

# The schema check names every offending key and fills the defaults in place.
# Missing data roots, and demo roots outside the demo's own folder, fail here, before any job runs.
try:
    validate_config(config, source="config")
    check_data_roots(config)
    if config["demo"]["enabled"]:
        check_demo_roots(config)
except UncerdaError as err:
    raise WorkflowError(str(err))

EXP = f"{config['results_dir']}/{config['experiment']}"
LOGS = f"logs/{config['experiment']}"
BENCH = f"{EXP}/benchmarks"
# The resolved config (defaults and --config overrides applied) reaches every command on its command
# line (--config-json), from the Snakemake process that plans the job: nothing is read from or written
# to results/ while this file is parsed, so a dry run, or a second invocation stopped by the lock,
# cannot change what a running workflow's jobs train with. Rule resolved_config keeps a copy in
# RESOLVED as a record; no job reads it. Reruns are driven by each rule's params, which hold exactly
# the config sections that stage reads (CONFIG_JSON is not a param, so it triggers nothing).
CONFIG_JSON = dumps(config)
RESOLVED = f"{EXP}/config.yaml"
UNCERDA = f"{shlex.quote(sys.executable)} -m uncerda_core"
# Training commands run under torchrun when a job trains with several processes (DDP).
PROCESSES = config["train"]["processes"]
TRAIN = (UNCERDA if PROCESSES == 1 else
         f"{shlex.quote(sys.executable)} -m torch.distributed.run --standalone --nproc_per_node {PROCESSES}"
         " -m uncerda_core")
SEED = config["seed"]
# Round 0 of adaptation: with image translation when the config enables it.
R0 = "aa_it" if config["adapt"]["image_translation"] else "aa"
R0_LABEL = "+IT" if R0 == "aa_it" else "+AA"
# The last self-training round, and its model trained on GMM pseudo labels (+UPST).
ST_FINAL = f"r{config['selftrain']['rounds']}"
ST_LAST = f"st_gmm_{ST_FINAL}"
TRAIN_SPLIT = config["target"]["train_split"]
VAL_SPLIT = config["target"]["val_split"]


# Table 5's comparison at equal coverage: CBST set to select the GMM's share of the pixels.
CBST_AT_GMM = "cbst_at_gmm_coverage"

wildcard_constraints:
    seed=r"\d+",
    r=r"[1-9]\d*",
    k=r"[1-9]\d*",
    method="gmm|cbst|threshold|argmax",
    split=r"[A-Za-z0-9_]+",


def settings(*sections, omit=()):
    """Canonical JSON of the config sections a stage reads: its params, so a change reruns it.

    ``omit``: ``"section.key"`` entries the stage does not read (how many seeds or rounds the
    workflow runs), so that changing them does not retrain what is already built.
    """
    chosen = {s: dict(config[s]) for s in sections}
    for entry in omit:
        section, key = entry.split(".")
        chosen[section].pop(key)
    return dumps(chosen)


def res(kind):
    """Resources of one kind of rule; ``gres`` replaces ``gpu`` for clusters that need it."""
    r = config["resources"][kind]
    out = {"mem_mb": r["mem_mb"], "runtime": r["runtime"], "gpu": r["gpu"]}
    if r.get("gres"):
        out["gres"] = r["gres"]
        out.pop("gpu")
    if r.get("gpu_model"):
        out["gpu_model"] = r["gpu_model"]
    return out


def threads_of(kind):
    return config["resources"][kind]["threads"]


def seed_dir(seed):
    return f"{EXP}/seed{seed}"


# Checkpoint selection (selection.enabled): a seeded part of the labelled target train split is held
# out of adaptation; every training stage keeps snapshots, and the one best on the held-out images
# replaces the stage's last checkpoint downstream. The reported val split is never used to select.
SELECTION = config["selection"]["enabled"]
SELECTION_DATA = f"{EXP}/data/selection"
# Models no training loop writes (nothing to select from): used as they are.
UNSELECTED_MODELS = ("source_only_adabn",)
# What a training rule adds to its command and params when selection is on; empty when it is off,
# so that the jobs and their commands stay exactly as without selection.
KEEP_SNAPSHOTS = " --keep-snapshots" if SELECTION else ""
# (the held-out share reaches the rules that read target train through their index input)
SELECTION_PARAMS = {"selection": settings("selection", omit=("selection.holdout_fraction",))} if SELECTION else {}


def target_train_index(labelled=False):
    """The target train images adaptation reads (dump, pseudo labels, training, AdaBN): the whole
    split, or without the held-out images when selection is on. ``labelled``: the same images with
    their labels (the target oracle's training set)."""
    if SELECTION:
        return f"{SELECTION_DATA}/target_adapt{'_labelled' if labelled else ''}_index.csv"
    return f"{EXP}/data/{'labelled/' if labelled else ''}target_{TRAIN_SPLIT}_index.csv"


def model_ckpt(model, seed="{seed}"):
    """The checkpoint every later rule reads for a stage: its last, or its selected one when selection is on."""
    if SELECTION and model not in UNSELECTED_MODELS:
        return f"{EXP}/seed{seed}/selected/{model}/checkpoint.pt"
    return f"{EXP}/seed{seed}/models/{model}/checkpoint.pt"


def final_round_of(seed):
    """The last target-guided round of a seed: follow the decisions until one says stop."""
    r = 1
    while True:
        decision = checkpoints.decide_round.get(seed=str(seed), r=str(r)).output[0]
        with open(decision) as fh:
            if not json.load(fh)["continue"]:
                return r
        r += 1


def final_round(wildcards):
    return final_round_of(wildcards.seed)


def final_aa_of(seed):
    """The final target-guided model of a seed, ``tgaa_r<last round>``."""
    return f"tgaa_r{final_round_of(seed)}"


def final_aa(wildcards):
    return final_aa_of(wildcards.seed)


def main_targets():
    """The main chain of one seed: every rung evaluated and the summary table."""
    return [f"{seed_dir(SEED)}/summary.md"]


rule resolved_config:
    """The resolved config as YAML: a record of the settings the last run resolved (every artifact's
    provenance holds the exact config it was made with)."""
    output:
        RESOLVED,
    params:
        config=CONFIG_JSON,
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/resolved_config.log",
    shell:
        "{UNCERDA} write-config --config-json {params.config:q} --out {output:q} > {log:q} 2>&1"
