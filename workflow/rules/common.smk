# Configuration checks, paths and helpers shared by every rule file.
import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from uncerda_core.artifacts import UncerdaError
from uncerda_core.config import check_data_roots, check_demo_roots, dumps, validate_config
from uncerda_core.data.readers import split_has_labels
from uncerda_core.pseudo.labels import METHODS as PSEUDO_METHODS
from uncerda_core.stages import CONTROL_LABELS, RUNG_LABELS, SR_ROUND_PATTERN, sr_model, sr_round

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
# Table 5's model files of your own: each must exist before any job runs.
for _name, _path in config["table5"]["checkpoints"].items():
    if not os.path.isfile(_path):
        raise WorkflowError(f"table5.checkpoints.{_name}: {_path} is not a file; give the path of a trained model "
                            "file (a state dict or an uncerda checkpoint), or remove the entry")
LOGS = f"logs/{config['experiment']}"
BENCH = f"{EXP}/benchmarks"
# The resolved config (defaults and --config overrides applied) reaches every command on its command
# line (--config-json), from the Snakemake process that plans the job: nothing is read from or written
# to results/ while this file is parsed, so a dry run, or a second invocation stopped by the lock,
# cannot change what a running workflow's jobs train with. Rule resolved_config keeps a copy in
# RESOLVED as a record; no job reads it. Reruns are driven by each rule's params, which hold exactly
# the config sections that stage reads (CONFIG_JSON reaches the command through params.cmd, which
# Snakemake does not record, so it triggers nothing).
CONFIG_JSON = dumps(config)
RESOLVED = f"{EXP}/config.yaml"
UNCERDA = f"{shlex.quote(sys.executable)} -m uncerda_core"
# Training commands run under torchrun when a job trains with several processes (DDP).
PROCESSES = config["train"]["processes"]
TRAIN = (UNCERDA if PROCESSES == 1 else
         f"{shlex.quote(sys.executable)} -m torch.distributed.run --standalone --nproc_per_node {PROCESSES}"
         " -m uncerda_core")


class Command:
    """A rule's command prefix, ``params.cmd``: ``python -m uncerda_core <command>`` (under torchrun
    for a training command with several processes), followed by the resolved config when the
    command reads it.

    Snakemake reruns a job when its recorded params change, and records only params with a plain
    value; this object is not one, so neither the interpreter's path nor the whole config on the
    command line triggers a rerun: a stage reruns when the config sections in its ``settings``
    param change, as before.
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def uncerda(command, config_json=False, train=False):
    """The prefix of one ``uncerda <command>`` call in a rule's shell command (see :class:`Command`)."""
    text = f"{TRAIN if train else UNCERDA} {command}"
    if config_json:
        text += f" --config-json {shlex.quote(CONFIG_JSON)}"
    if train:
        text += KEEP_SNAPSHOTS   # training stages keep snapshots when checkpoint selection is on
    return Command(text)


SEED = config["seed"]
# Round 0 of adaptation: with image translation when the config enables it.
R0 = "aa_it" if config["adapt"]["image_translation"] else "aa"
R0_LABEL = RUNG_LABELS[R0]
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
    method="|".join(PSEUDO_METHODS),
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
# Table 5's model files of your own: models ext_<name>, imported once into EXTERNAL_DIR/<name>/.
EXTERNAL_PREFIX = "ext_"
EXTERNAL_DIR = f"{EXP}/external"
# What a training job adds to its command (see uncerda()) and params when selection is on; empty when off,
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
    """The checkpoint later stages read for a model: its last one, or its selected one when selection is on;
    a model file of your own (``ext_<name>``, Table 5) as ``uncerda import-model`` wrote it, for every seed."""
    if model.startswith(EXTERNAL_PREFIX) and model[len(EXTERNAL_PREFIX):] in config["table5"]["checkpoints"]:
        return f"{EXTERNAL_DIR}/{model[len(EXTERNAL_PREFIX):]}/checkpoint.pt"
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


# --- data (data.smk) ------------------------------------------------------------------------------
SOURCE_INDEX = f"{EXP}/data/source_index.csv"


def data_root(role):
    """The generated root as an input when the demo makes it; a real root is checked at start-up."""
    return [config[role]["root"]] if config["demo"]["enabled"] else []


# --- training (train.smk) ------------------------------------------------------------------------
MODELS = f"{EXP}/seed{{seed}}/models"
TRAIN_INPUT = dict(
    source_index=SOURCE_INDEX,
    target_index=target_train_index(),
)
# Round-0 variants: aa (no image translation), aa_it (FDA, or the pre-translated images of
# source.translated_root when set), and the control with the
# adversarial losses switched off but target batches still passed through the network.
AA_VARIANTS = {
    "aa": "--image-translation off",
    "aa_it": "--image-translation on",
    "aa_noadv": "--image-translation config --adversarial-weight 0",
    # Table 5's other adaptation models: MRNet's memory regularisation, ADVENT's entropy-space discriminators.
    "aa_mr": f"--image-translation off --set adapt.memory_weight={config['table5']['mrnet_memory_weight']}",
    "aa_ent": "--image-translation off --set adapt.disc_input=entropy",
}


def adapt_init():
    if config["adapt"]["init"] == "source_only":
        return {"init": model_ckpt("source_only")}
    return {}


def init_flag(wildcards, input):
    """The source-only model when adaptation starts from it; else the command falls back to model.init."""
    return f"--init {shlex.quote(input.init)}" if "init" in input.keys() else ""


def round_start(r):
    """The model target-guided round ``r`` starts from (and whose ranking gave its S_k): round 0, or round r-1."""
    return R0 if r == 1 else f"tgaa_r{r - 1}"


def previous_model(wildcards):
    return round_start(int(wildcards.r))


# +SR's models: sr (round 1), sr_r2, sr_r3, ... (stages.sr_model).
SR_MODEL_PATTERN = f"sr|{SR_ROUND_PATTERN}"


def previous_sr(wildcards):
    """The model an +SR round starts from: round 0 for ``sr``, else the round before."""
    r = sr_round(wildcards.sr_model)
    return R0 if r == 1 else sr_model(r - 1)


# --- uncertainty (uncertainty.smk) ---------------------------------------------------------------
WEIGHT_FLAGS = (
    f"--balance {config['tgaa']['balance']} --alpha {config['tgaa']['alpha']} --mu {config['tgaa']['mu']}"
    f" --reading {config['tgaa']['reading']}"
)


# --- pseudo labels and self-training (selftrain.smk) ---------------------------------------------
def _target_train_has_labels():
    return config["demo"]["enabled"] or split_has_labels(config["target"]["dataset"], config["target"]["root"],
                                                         TRAIN_SPLIT)


# Pseudo-label precision and coverage need target train ground truth: a diagnosis, never used to train.
GT_FLAGS = (f"--gt-root {shlex.quote(config['target']['root'])} --gt-split {TRAIN_SPLIT}"
            if _target_train_has_labels() else "")


def st_teacher(wildcards):
    """Self-training round k learns from the pseudo labels of its first teacher (k = 1) or of round k-1. The
    chain's first teacher is its final AA model; Table 5's rounds ``<t5_teacher>_st_<method>_r<k>`` start
    from their adaptation model."""
    k = int(wildcards.k)
    first = getattr(wildcards, "t5_teacher", None)
    if k == 1:
        return first or final_aa(wildcards)
    return f"{first + '_' if first else ''}st_{wildcards.method}_r{k - 1}"


# Online self-training (selftrain.mode: online), beside the chain's offline +UPST: one run per pixel weighting
# (DACS's confidence share, or Eq. 6's GMM posterior) and start (the chain's final AA model, or source only).
# The GMM runs also with MIC's masked image consistency (_mic); from +TGAA also with the source images drawn as
# the chain's final round drew them (_chain), and both weightings from +TGAA at each longer length of
# ablation.online_lengths (_x<N>: N times selftrain.iterations).
ONLINE_MODEL_PATTERN = r"online_(confidence|gmm)_(tgaa|src)(_mic)?(_chain)?(_x[0-9]+)?"
ONLINE_RUNGS = {model: label for start, where in (("tgaa", "+TGAA"), ("src", "source only"))
                for model, label in ((f"online_confidence_{start}", f"online, confidence weights, from {where}"),
                                     (f"online_gmm_{start}", f"online, gmm weights, from {where}"),
                                     (f"online_gmm_{start}_mic", f"online, gmm weights + MIC, from {where}"))}
ONLINE_RUNGS["online_gmm_tgaa_chain"] = "online, gmm weights + chain draws, from +TGAA"
ONLINE_RUNGS.update({f"online_{w}_tgaa_x{n}": f"online, {w} weights + {n}x iterations, from +TGAA"
                     for n in config["ablation"]["online_lengths"] if n > 1 for w in ("confidence", "gmm")})
ONLINE_REFERENCE = "+UPST (offline, GMM labels)"
ONLINE_TABLE = f"{EXP}/ablation/online.csv"
ONLINE_CURVES = f"{EXP}/report/ablation/online_curves.png"   # the main seed's runs, beside +UPST's


def online_curve_models():
    """(label, model) of the curves figure: +UPST and every online run."""
    return [("+UPST", ST_LAST), *((model, model) for model in ONLINE_RUNGS)]


def online_init(wildcards):
    """An online run starts from the chain's final AA model (UncerDA's chain) or from source only (DACS's)."""
    start = final_aa(wildcards) if online_parts(wildcards.online_model)[1] == "tgaa" else "source_only"
    return model_ckpt(start, wildcards.seed)


def online_parts(model):
    """(pixel weights, start, MIC, chain draws, length factor) of an online run's name (ONLINE_MODEL_PATTERN)."""
    weights, start, mic, chain, length = re.fullmatch(ONLINE_MODEL_PATTERN, model).groups()
    return weights, start, bool(mic), bool(chain), int(length[2:]) if length else 1


def online_flags(model):
    """An online run's settings over the config's: online mode, its pixel weights, and source batches beside the
    mixed ones (ClassMix pastes source images, as in DACS, whatever selftrain.target_only says for offline); its
    additions; its length when it is a multiple of selftrain.iterations."""
    weights, _, mic, chain, length = online_parts(model)
    return (f"--set selftrain.mode=online --set selftrain.online.pixel_weights={weights}"
            " --set selftrain.target_only=false" + (" --set selftrain.online.mic=true" if mic else "")
            + (" --set selftrain.online.source_draws=chain" if chain else "")
            + (f" --set selftrain.iterations={length * config['selftrain']['iterations']}" if length > 1 else ""))


def online_draw_inputs(wildcards):
    """What an online run drawing its source images as the chain did (a ``_chain`` run, or
    selftrain.online.source_draws: chain) reads: the final target-guided round's sampling weights, the ranking
    its S_k came from (crop-level sampling) and the source class statistics; nothing for uniform draws."""
    if not online_parts(wildcards.online_model)[3] and config["selftrain"]["online"]["source_draws"] != "chain":
        return {}
    r = final_round_of(wildcards.seed)
    return {"weights": f"{seed_dir(wildcards.seed)}/weights/tgaa_r{r}.csv",
            "rank": f"{seed_dir(wildcards.seed)}/rank/{round_start(r)}.csv",
            "class_stats": rules.class_stats.output[0]}


def draw_flags(input):
    """The command's options for the files of :func:`online_draw_inputs` that ``input`` holds."""
    return " ".join(f"--{name.replace('_', '-')} {shlex.quote(str(getattr(input, name)))}"
                    for name in ("weights", "rank", "class_stats") if hasattr(input, name))


def online_evals(wildcards):
    """(label, seed, metrics JSON) of +UPST and every online run, every seed of ablation.seeds."""
    return [(label, seed, _eval(seed, model)) for seed in ABL_SEEDS
            for label, model in ((ONLINE_REFERENCE, ST_LAST), *((l, m) for m, l in ONLINE_RUNGS.items()))]


# --- evaluation (evaluate.smk) -------------------------------------------------------------------
def chain_rungs(wildcards):
    """The main chain's rungs, in the order of Table 3: label -> eval JSON."""
    base = f"{seed_dir(wildcards.seed)}/eval"
    return {
        RUNG_LABELS["source_only"]: f"{base}/source_only.json",
        R0_LABEL: f"{base}/{R0}.json",
        RUNG_LABELS["tgaa"]: f"{base}/{final_aa(wildcards)}.json",
        RUNG_LABELS["st"]: f"{base}/{ST_LAST}.json",
    }


# --- Table 4 (table4.smk) ------------------------------------------------------------------------
# One round each from round 0, tgaa.iterations long, every source image drawn by a weights file: uniform
# (No-Balance, and Focal Loss with the focal loss on source pixels) or every class at one balance
# (Soft-Balance; balance 1 is also Class-Balance, which Table 4 gives the same score).
T4_BALANCES = [format(b, "g") for b in config["table4"]["balances"]]
T4_WEIGHTS_PATTERN = r"uniform|b[01](\.\d+)?"
T4_MODEL_PATTERN = r"t4_(uniform|focal|b[01](\.\d+)?)"
TABLE4 = f"{EXP}/ablation/table4.csv"


def t4_weights_of(model):
    """The weights file a Table 4 round draws with: uniform for No-Balance and Focal Loss."""
    return "uniform" if model in ("t4_uniform", "t4_focal") else model[len("t4_"):]


def table4_rows(wildcards):
    """(method, lambda, seed, metrics JSON, weights CSV) of every Table 4 row and seed, in the table's order."""
    rows = [("No-Balance", "", "t4_uniform"), ("Focal Loss", "", "t4_focal")]
    if "1" in T4_BALANCES:
        rows.insert(1, ("Class-Balance", "", "t4_b1"))
    rows += [("Soft-Balance", b, f"t4_b{b}") for b in T4_BALANCES]
    return [(method, lam, seed, f"{seed_dir(seed)}/eval/{model}.json",
             f"{seed_dir(seed)}/weights/t4_{t4_weights_of(model)}.csv")
            for method, lam, model in rows for seed in ABL_SEEDS]


# --- Fig. 8 (sensitivity.smk) --------------------------------------------------------------------
# One target-guided round from round 0 per setting: the [alpha, mu] pairs of sensitivity.trained and the k
# of sensitivity.ks; the chain's own setting is its first target-guided round (tgaa_r1).
SENS = config["sensitivity"]
SENS_MODEL_PATTERN = r"sens_(a[0-9.]+_m[0-9.e-]+|k\d+)"
SENS_DIR = f"{EXP}/ablation"
SENS_FIGURE = f"{EXP}/report/ablation/fig8.png"   # beside the other ablation figures (REPORT)


def sens_reference():
    return f"alpha={config['tgaa']['alpha']:g} mu={config['tgaa']['mu']:g}"


def sens_settings():
    """(setting label, model) of every trained setting; the chain's own alpha, mu and k are tgaa_r1."""
    own = (float(config["tgaa"]["alpha"]), float(config["tgaa"]["mu"]))
    out = [(sens_reference(), "tgaa_r1")]
    for alpha, mu in SENS["trained"]:
        if (float(alpha), float(mu)) != own:
            out.append((f"alpha={alpha:g} mu={mu:g}", f"sens_a{alpha:g}_m{mu:g}"))
    for k in SENS["ks"]:
        out.append((f"k={k}", "tgaa_r1" if k == config["tgaa"]["k"] else f"sens_k{k}"))
    return out


def sens_weight_flags(model):
    """The weights command's flags of a sensitivity round: its alpha and mu, or its k."""
    if model.startswith("sens_k"):
        alpha, mu, k = config["tgaa"]["alpha"], config["tgaa"]["mu"], f" --k {model[len('sens_k'):]}"
    else:
        alpha, mu = model[len("sens_a"):].split("_m")
        k = ""
    return (f"--balance {config['tgaa']['balance']} --alpha {alpha} --mu {mu}"
            f" --reading {config['tgaa']['reading']}{k}")


# --- Table 5 (table5.smk) ------------------------------------------------------------------------
# Pseudo labels (none, CBST, GMM) from several adaptation models, each followed by the chain's self-training.
T5 = config["table5"]
T5_RECIPES = {"adaptsegnet": "aa", "mrnet": "aa_mr", "advent": "aa_ent"}   # uncerda: the final target-guided model
T5_LABELS = {"adaptsegnet": "AdaptSegNet", "mrnet": "MRNet", "advent": "ADVENT", "uncerda": "UncerDA (AA)"}
T5_TEACHER_PATTERN = "|".join([*T5_RECIPES.values(), EXTERNAL_PREFIX + "[A-Za-z0-9]+"])
T5_METHODS = ("cbst", "gmm")
TABLE5 = f"{EXP}/ablation/table5.csv"
TABLE5_FIGURE = f"{EXP}/report/ablation/fig3.png"


def t5_models(seed, chain=None):
    """(label, adaptation model) of the Table 5 models of a seed, in the config's order, files of your own last.
    ``chain`` True: only UncerDA (AA), the chain's final model (known once the seed's rounds are decided); False:
    only the others, which a plan can show before then; None: all."""
    out = []
    for name in T5["models"]:
        if chain is None or chain == (name == "uncerda"):
            out.append((T5_LABELS[name], final_aa_of(seed) if name == "uncerda" else T5_RECIPES[name]))
    if not chain:
        out += [(name, f"{EXTERNAL_PREFIX}{name}") for name in T5["checkpoints"]]
    return out


def t5_self_trained(teacher, method):
    """The model the last self-training round from ``teacher`` writes: the chain's own for its final AA model."""
    return f"st_{method}_{ST_FINAL}" if teacher.startswith("tgaa_r") else f"{teacher}_st_{method}_{ST_FINAL}"


def table5_rows(wildcards, chain=None):
    """(model label, pseudo labels, seed, metrics JSON or '', quality JSON or '') of every Table 5 row and seed
    (``chain`` as in :func:`t5_models`): the model itself ("none"), CBST and GMM (self-trained), and CBST at
    the GMM's coverage (precision only)."""
    if not T5["models"] and not T5["checkpoints"]:
        raise WorkflowError("table5: table5.models is empty and table5.checkpoints names no file: nothing to compare")
    rows = []
    for seed in ABL_SEEDS:
        for label, teacher in t5_models(seed, chain):
            pseudo = f"{seed_dir(seed)}/pseudo/{teacher}"
            rows.append((label, "none", seed, _eval(seed, teacher), ""))
            for method in T5_METHODS:
                rows.append((label, method, seed, _eval(seed, t5_self_trained(teacher, method)),
                             f"{pseudo}/{method}/quality.json" if GT_FLAGS else ""))
            if GT_FLAGS:
                rows.append((label, CBST_AT_GMM, seed, "", f"{pseudo}/{CBST_AT_GMM}/quality.json"))
    return rows


def table5_inputs(chain):
    """An input function: the metrics files and pseudo-label folders (a folder is a job's output, its
    quality.json is not) of the chain's model (``chain`` True) or of the others. Two functions, so that a plan
    shows the other models' jobs before the chain's rounds are decided."""
    def inputs(wildcards):
        files = set()
        for *_, metrics, quality in table5_rows(wildcards, chain):
            files.update(p for p in (metrics, str(Path(quality).parent) if quality else "") if p)
        return sorted(files)
    return inputs


# --- Tables 1/2 and every paper table (paper.smk) ------------------------------------------------
PER_CLASS = f"{EXP}/ablation/per_class.csv"


def per_class_rows(wildcards):
    """(label, seed, metrics JSON) of the final AA and ST models of every seed: Tables 1/2's UncerDA rows."""
    return [(label, seed, _eval(seed, model)) for seed in ABL_SEEDS
            for label, model in (("UncerDA (AA)", final_aa_of(seed)), ("UncerDA (ST)", ST_LAST))]


# --- ablation (ablation.smk) ---------------------------------------------------------------------
ABL_SEEDS = config["ablation"]["seeds"]
ABL_METHODS = config["ablation"]["pseudo_methods"]
ABLATION_TABLES = {
    "ladder": f"{EXP}/ablation/ladder.csv",
    "ladder_md": f"{EXP}/ablation/ladder.md",
    "methods": f"{EXP}/ablation/pseudo_methods.csv",
    "methods_md": f"{EXP}/ablation/pseudo_methods.md",
}
# +TGAA against its matched +SR control on round 1's S_k and on the other classes (rule ablation_sk_classes).
SK_CLASS_TABLE = f"{EXP}/ablation/sk_classes.csv"


def _eval(seed, model):
    return f"{seed_dir(seed)}/eval/{model}.json"


def ablation_evals(wildcards):
    """(label, kind, seed, metrics JSON) for every rung and control of every seed."""
    items = []
    for seed in ABL_SEEDS:
        final = final_aa_of(seed)
        models = {"source_only": "source_only", "aa": "aa", "aa_it": "aa_it", "sr": "sr", "tgaa": final,
                  "st": ST_LAST}
        rungs = [(label, models[stage]) for stage, label in RUNG_LABELS.items()]
        # +SR for as many rounds as +TGAA ran in this seed: the iteration-matched control of +TGAA.
        matched = {"sr_matched": sr_model(final_round_of(seed))}
        controls = [(label, matched.get(model, model)) for model, label in CONTROL_LABELS.items()]
        items += [(label, "rung", seed, _eval(seed, model)) for label, model in rungs]
        items += [(label, "control", seed, _eval(seed, model)) for label, model in controls]
    return items


def ablation_pseudo(wildcards):
    """(method, seed, quality JSON or '', self-trained model's metrics) for Table 5."""
    items = []
    for seed in ABL_SEEDS:
        final = final_aa_of(seed)
        for method in ABL_METHODS:
            quality = f"{seed_dir(seed)}/pseudo/{final}/{method}/quality.json" if GT_FLAGS else ""
            items.append((method, seed, quality, _eval(seed, f"st_{method}_{ST_FINAL}")))
        if GT_FLAGS and {"gmm", "cbst"} <= set(ABL_METHODS):  # precision only: no self-training from it
            items.append(("cbst at gmm's coverage", seed,
                          f"{seed_dir(seed)}/pseudo/{final}/{CBST_AT_GMM}/quality.json", ""))
    return items


def ablation_sk_models(wildcards):
    """(seed, ranking whose S_k guided round 1, the round start's, +TGAA's and its matched +SR control's
    metrics) for every seed of the ablation."""
    items = []
    for seed in ABL_SEEDS:
        final_round = final_round_of(seed)
        items.append((seed, f"{seed_dir(seed)}/rank/{R0}.csv", _eval(seed, R0), _eval(seed, f"tgaa_r{final_round}"),
                      _eval(seed, sr_model(final_round))))
    return items


def _ablation_inputs(wildcards):
    files = [path for *_, path in ablation_evals(wildcards)]
    for method, seed, quality, st in ablation_pseudo(wildcards):
        if st:
            files.append(st)
        if quality:
            files.append(str(Path(quality).parent))
    return sorted(set(files))


# --- report (report.smk) -------------------------------------------------------------------------
REPORT = f"{EXP}/report"
REPORT_SEED = f"{EXP}/report/seed{{seed}}"
# Target val images in the examples grid, spread evenly over the val index.
EXAMPLE_IMAGES = 4
REPORT_FIGURES = ["summary.html", "iou_per_class.png", "examples.png", "rank.png", "weights.png",
                  "entropy_gmm.png", "pseudo_quality.png", "training_curves.png"]
ABLATION_FIGURES = [f"{REPORT}/ablation/{name}" for name in
                    ("ladder.html", "ladder.png", "pseudo_methods.html", "pseudo_methods.png")]


def report_rounds(wildcards):
    """Target-guided rounds 1..final of a seed."""
    return list(range(1, final_round(wildcards) + 1))


def report_models(wildcards):
    """Every stage of a seed in chain order: source only, round 0, each target-guided round, ST.
    The figure commands name each stage from its file (``tgaa_r2`` -> ``+TGAA r2``)."""
    return ["source_only", R0, *[f"tgaa_r{r}" for r in report_rounds(wildcards)], ST_LAST]


def report_checkpoints(wildcards):
    """The stages of the examples grid (Fig. 5: baseline, round 0, final round, ST)."""
    return [model_ckpt(m, wildcards.seed) for m in ("source_only", R0, final_aa(wildcards), ST_LAST)]


def report_pseudo_dir(wildcards):
    """The GMM pseudo labels the first self-training round learns from (final adapted model)."""
    return f"{seed_dir(wildcards.seed)}/pseudo/{final_aa(wildcards)}/gmm"


def report_labels(figure):
    return {"figure": figure, "seed": "{seed}"}


def report_figure_files(seed=SEED):
    """Every report figure of one seed, plus the ablation's once its tables exist."""
    files = [f"{REPORT}/seed{seed}/{name}" for name in REPORT_FIGURES]
    if all(os.path.exists(path) for path in ABLATION_TABLES.values()):
        files += ABLATION_FIGURES
    return files


# --- prediction (predict.smk) --------------------------------------------------------------------
PREDICT_SPLIT = config["predict"]["split"] or VAL_SPLIT
