"""The whole workflow end to end on the smoke preset, in a temporary working directory."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from uncerda_core.artifacts import file_sha256
from uncerda_core.cli import main
from workflow_helpers import (SMOKE, SMOKE_TIMEOUT, metrics_without_provenance, smoke_args, snakemake,
                              temporary_files)

pytestmark = pytest.mark.slow

RUNGS = ("source_only", "aa_it", "tgaa_r2", "st_gmm_r1")


def test_outputs_of_every_stage(smoke):
    seed = smoke.seed_dir
    # Demo roots are relative: generated inside the working directory.
    assert (smoke.workdir / "results" / "data" / "smoke" / "source" / "images").is_dir()
    assert (smoke.workdir / "results" / "data" / "smoke" / "target" / "leftImg8bit" / "val").is_dir()
    for name in ("source_index.csv", "target_train_index.csv", "target_val_index.csv", "source_class_stats.csv"):
        assert (smoke.results / "data" / name).is_file(), name
    for rung in RUNGS:
        assert (seed / "models" / rung / "checkpoint.pt").is_file(), rung
        assert (seed / "models" / rung / "losses.csv").is_file(), rung
        assert (seed / "eval" / f"{rung}.csv").is_file(), rung
        result = json.loads((seed / "eval" / f"{rung}.json").read_text())
        assert 0.0 <= result["miou"] <= 1.0 and result["images"] == 8
        assert all(v is None or 0.0 <= v <= 1.0 for v in result["per_class_iou"].values())
    for model in ("aa_it", "tgaa_r1", "tgaa_r2"):
        assert (seed / "maps" / f"{model}.h5").is_file() and (seed / "rank" / f"{model}.csv").is_file()
    for r in (1, 2):
        assert (seed / "weights" / f"tgaa_r{r}.csv").is_file()
    decisions = [json.loads((seed / "rounds" / f"r{r}.json").read_text()) for r in (1, 2)]
    assert decisions[-1]["continue"] is False and decisions[-1]["final_round"] == 2   # smoke: max_rounds 2
    summary = (seed / "summary.md").read_text()
    for label in ("Source only", "+IT", "+TGAA", "+UPST"):
        assert f"| {label} |" in summary
    assert len(pd.read_csv(seed / "summary.csv")) == 4
    # Nothing half-written or left over from resuming.
    assert temporary_files(smoke.workdir) == []
    assert list(smoke.workdir.rglob("*.resume.pt")) == []


def test_pseudo_label_folder(smoke):
    folder = smoke.seed_dir / "pseudo" / "tgaa_r2" / "gmm"
    pngs = sorted(folder.glob("*.png"))
    names = pd.read_csv(smoke.results / "data" / "target_train_index.csv", dtype={"name": str})["name"]
    assert [p.stem for p in pngs] == sorted(names)                    # one per target train image (16)
    for png in pngs[:4]:
        values = set(np.unique(np.asarray(Image.open(png))).tolist())
        assert values <= set(range(19)) | {255}
    assert (folder / "classes.csv").is_file() and (folder / "provenance.json").is_file()


def test_rerun_has_nothing_to_do(smoke):
    proc = snakemake(smoke.workdir, *smoke_args(smoke.workdir, "-n"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_more_rounds_or_seeds_do_not_retrain_what_exists(smoke):
    """selftrain.rounds, tgaa.max_rounds and ablation.seeds say how far to go, not how a model is trained."""
    proc = snakemake(smoke.workdir, *smoke_args(smoke.workdir, "selftrain={rounds: 2}",
                                                "ablation={seeds: [0, 1, 2]}", "-n"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "wildcards: seed=0, method=gmm, k=2" in out          # the new round is planned
    assert "k=1" not in out                                     # round 1 is kept
    # The resolved config is rewritten for the new round, and that alone retrains nothing.
    assert "rule resolved_config:" in out
    for rule in ("train_source_only", "adapt_round0", "adapt_tgaa"):
        assert f"rule {rule}:" not in out, rule


def test_dry_or_locked_runs_leave_the_running_workflows_config_alone(smoke):
    """A second invocation with other settings, dry or stopped by the lock, writes nothing: the jobs of a
    workflow already running keep reading the config it resolved."""
    resolved = smoke.results / "config.yaml"
    before = (resolved.read_bytes(), resolved.stat().st_mtime_ns)
    assert yaml.safe_load(before[0])["adapt"]["iterations"] == 3
    override = "adapt={iterations: 7}"
    proc = snakemake(smoke.workdir, *smoke_args(smoke.workdir, override, "-n"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    # The changed settings would rewrite the file and rerun adaptation, but not the source-only model.
    assert "rule resolved_config:" in out and "rule adapt_round0:" in out
    assert "rule train_source_only:" not in out
    assert (resolved.read_bytes(), resolved.stat().st_mtime_ns) == before
    # A running workflow holds the lock on the file (Snakemake's own lock format: one path a line).
    locks = smoke.workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = locks / "0.output.lock"
    lock.write_text(f"{resolved}\n")
    try:
        proc = snakemake(smoke.workdir, *smoke_args(smoke.workdir, override), timeout=300)
    finally:
        lock.unlink()
        locks.rmdir()
    assert proc.returncode != 0
    assert "LockException" in proc.stdout + proc.stderr
    assert (resolved.read_bytes(), resolved.stat().st_mtime_ns) == before


def test_provenance_of_each_kind_of_artifact(smoke, capsys):
    seed = smoke.seed_dir
    ckpt = seed / "models" / "aa_it" / "checkpoint.pt"
    proc = subprocess.run([sys.executable, "-m", "uncerda_core", "provenance", str(ckpt)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["stage"] == "train:aa" and record["seed"] == 0
    assert record["config"]["experiment"] == "smoke" and record["code"]["package"]
    assert record["inputs"]["init"]["sha256"] == file_sha256(seed / "models" / "source_only" / "checkpoint.pt")
    assert record["settings"]["image_translation"] is True

    def provenance(path):
        assert main(["provenance", str(path)]) == 0
        return json.loads(capsys.readouterr().out)

    maps = seed / "maps" / "tgaa_r2.h5"
    rec = provenance(maps)
    assert rec["stage"] == "dump"
    assert rec["inputs"]["checkpoint"]["sha256"] == file_sha256(seed / "models" / "tgaa_r2" / "checkpoint.pt")
    rec = provenance(seed / "eval" / "st_gmm_r1.json")
    assert rec["stage"] == "evaluate"
    assert rec["inputs"]["checkpoint"]["sha256"] == file_sha256(seed / "models" / "st_gmm_r1" / "checkpoint.pt")
    rec = provenance(seed / "rank" / "tgaa_r2.csv")
    assert rec["stage"] == "rank" and rec["inputs"]["maps"]["sha256"] == file_sha256(maps)
    rec = provenance(seed / "pseudo" / "tgaa_r2" / "gmm")
    assert rec["stage"] == "pseudo-labels" and rec["inputs"]["maps"]["sha256"] == file_sha256(maps)
    rec = provenance(smoke.results / "data" / "source_index.csv")
    assert rec["stage"] == "index"


def test_artifacts_are_readable_like_ordinary_files(smoke):
    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    for path in (smoke.seed_dir / "eval" / "aa_it.json", smoke.seed_dir / "models" / "aa_it" / "checkpoint.pt",
                 smoke.results / "config.yaml"):
        assert path.stat().st_mode & 0o777 == expected, path




def test_a_seed_added_to_the_ablation_is_scheduled(tmp_path):
    """Existing ablation tables must not hide a seed whose chain never ran (its round checkpoint is missing)."""
    tables = tmp_path / "results" / "smoke" / "ablation"
    tables.mkdir(parents=True)
    for name in ("ladder.csv", "ladder.md", "pseudo_methods.csv", "pseudo_methods.md"):
        (tables / name).write_text("from a run with fewer seeds\n")
    proc = snakemake(tmp_path, *smoke_args(tmp_path, "ablation={seeds: [3]}"), "-n", "--", "ablation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for rule in ("rule train_source_only:", "checkpoint decide_round:", "rule summary:", "rule ablation_tables:",
                 "rule ablation_sk_classes:"):
        assert rule in out, rule
    assert "wildcards: seed=3" in out


def test_table4_plans_one_round_per_strategy_from_round_0(tmp_path):
    """snakemake table4: No-Balance and Focal Loss draw uniformly, Soft-Balance every class at each lambda; only
    the focal round trains with the focal loss; all start from round 0 (+IT)."""
    proc = snakemake(tmp_path, *smoke_args(tmp_path, "ablation={seeds: [0]}", "table4={balances: [0.5, 1.0]}",
                                           "-n", "-p"), "--", "table4", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    commands = [line for line in out.splitlines() if " adapt " in line and "/models/t4_" in line]
    by_model = {re.search(r"/models/(t4_[^/]+)/checkpoint.pt", line).group(1):
                shlex.split(line[line.index(sys.executable):]) for line in commands}
    assert sorted(by_model) == ["t4_b0.5", "t4_b1", "t4_focal", "t4_uniform"]
    for model, argv in by_model.items():
        assert argv[argv.index("--init") + 1].endswith("/seed0/models/aa_it/checkpoint.pt"), model
        assert argv[argv.index("--source-loss") + 1] == ("focal" if model == "t4_focal" else "cross_entropy"), model
        weights = "uniform" if model in ("t4_uniform", "t4_focal") else model[3:]
        assert argv[argv.index("--weights") + 1].endswith(f"/seed0/weights/t4_{weights}.csv"), model
    weights_commands = [line for line in out.splitlines() if " weights " in line and "/weights/t4_" in line]
    assert any("--uniform" in line and "t4_uniform.csv" in line for line in weights_commands)
    assert any("--all-classes --balance 0.5" in line and "t4_b0.5.csv" in line for line in weights_commands)
    table = next(line for line in out.splitlines() if " table4 --row " in line)
    assert "--row 'Class-Balance||0|" in table and "--row 'Soft-Balance|0.5|0|" in table


def test_sensitivity_plans_one_round_per_setting_and_reuses_the_chains_own(tmp_path):
    """snakemake sensitivity: a round from round 0 per trained [alpha, mu] and per k; the config's own setting
    (alpha 80, mu 0.02, k 7) is the chain's tgaa_r1 and is not trained again."""
    proc = snakemake(tmp_path, *smoke_args(tmp_path, "ablation={seeds: [0]}",
                                           "sensitivity={trained: [[20, 0.02], [80, 0.02]], ks: [3, 7]}",
                                           "-n", "-p"), "--", "sensitivity", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    trained = sorted(set(re.findall(r"/models/(sens_[^/]+)/checkpoint.pt", out)))
    assert trained == ["sens_a20_m0.02", "sens_k3"]
    weights = {m: line for line in out.splitlines() if " weights " in line
               for m in trained if f"/weights/{m}.csv" in line}
    assert "--alpha 20 --mu 0.02" in weights["sens_a20_m0.02"] and "--k 3" in weights["sens_k3"]
    table = next(line for line in out.splitlines() if " sensitivity --class-stats " in line)
    argv = shlex.split(table[table.index(sys.executable):])
    evals = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--eval"]
    assert any(e.startswith("k=7|0|") and e.endswith("/eval/tgaa_r1.json") for e in evals)
    assert argv[argv.index("--reference") + 1] == "alpha=80 mu=0.02"


def test_ablation_matches_tgaa_with_as_many_sr_rounds(smoke):
    """+TGAA ran two rounds in the smoke run, so its control is +SR for two rounds: sr_r2 continues from sr."""
    assert (smoke.seed_dir / "models" / "tgaa_r2" / "checkpoint.pt").is_file()
    proc = snakemake(smoke.workdir, *smoke_args(smoke.workdir, "ablation={seeds: [0]}", "-n", "-p"), "--", "ablation",
                     timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "wildcards: seed=0, sr_model=sr_r2" in out and "wildcards: seed=0, sr_model=sr\n" in out
    command = next(line for line in out.splitlines() if "/models/sr_r2/checkpoint.pt" in line and " adapt " in line)
    argv = shlex.split(command[command.index(sys.executable):])
    assert argv[argv.index("--init") + 1] == str(smoke.seed_dir / "models" / "sr" / "checkpoint.pt")
    assert argv[argv.index("--weights") + 1] == str(smoke.seed_dir / "weights" / "sr.csv")
    assert "sr_r3" not in out


def test_sk_classes_table_compares_tgaa_with_its_control_on_the_classes_of_round_1s_sk(smoke, tmp_path):
    """Run for real in a copy of the smoke run (its +SR rounds must not change what other tests plan there)."""
    import shutil
    work = tmp_path / "smoke"
    shutil.copytree(smoke.workdir, work, symlinks=True)
    proc = snakemake(work, *smoke_args(work, "ablation={seeds: [0]}"), "--", "ablation_sk_classes", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed_dir = work / "results" / "smoke" / "seed0"
    table = pd.read_csv(work / "results" / "smoke" / "ablation" / "sk_classes.csv", keep_default_na=False)
    rank = pd.read_csv(seed_dir / "rank" / "aa_it.csv")
    sk = list(rank.loc[rank["in_sk"], "class"])
    assert table.loc[0, "classes_by_seed"] == "0: " + " ".join(sk)
    # Two target-guided rounds in the smoke run: the control is +SR after two rounds.
    for label, model in (("+IT", "aa_it"), ("+TGAA", "tgaa_r2"), ("+SR for as many rounds as +TGAA", "sr_r2")):
        per_class = json.loads((seed_dir / "eval" / f"{model}.json").read_text())["per_class_iou"]
        for group, classes in (("S_k of round 1", sk), ("other classes", [c for c in per_class if c not in sk])):
            values = [per_class[c] for c in classes if per_class[c] is not None]
            row = table[(table["classes"] == group) & (table["model"] == label)]
            assert float(row["miou_mean"].iloc[0]) == pytest.approx(sum(values) / len(values)), (group, label)
    assert set(table.loc[table["model"] == "+TGAA", "beats_control"]) == {"one seed"}
    assert (work / "results" / "smoke" / "ablation" / "sk_classes.csv.provenance.json").is_file()


def test_predict_target_writes_the_submission_that_scores_like_the_evaluation(smoke, tmp_path):
    import zipfile
    proc = snakemake(smoke.workdir, *smoke_args(smoke.workdir), "--", "predict", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = smoke.seed_dir / "predictions" / "st_gmm_r1" / "val"
    names = pd.read_csv(smoke.results / "data" / "target_val_index.csv", dtype={"name": str})["name"]
    with zipfile.ZipFile(smoke.seed_dir / "submission" / "st_gmm_r1_val.zip") as archive:
        zipped = sorted(name.rsplit("/", 1)[-1] for name in archive.namelist())
    assert zipped == sorted(f"{n}_labelIds.png" for n in names)
    out = tmp_path / "score.json"
    assert main(["score", "--pred-dir", str(preds), "--dataset", "cityscapes", "--id-type", "label",
                 "--root", str(smoke.workdir / "results" / "data" / "smoke" / "target"), "--split", "val",
                 "--out", str(out)]) == 0
    scored = json.loads(out.read_text())
    evaluated = json.loads((smoke.seed_dir / "eval" / "st_gmm_r1.json").read_text())
    assert scored["confusion_matrix"] == evaluated["confusion_matrix"] and scored["miou"] == evaluated["miou"]


# A working directory, results folder and data roots whose paths need quoting in a shell: a space, a single
# quote, a semicolon and non-ASCII letters.
AWKWARD = ("my data", "it's-ü")


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    """The smoke preset end to end on the user's own data (demo disabled), every path awkward."""
    from uncerda_core.data.demo import generate_demo
    work = tmp_path_factory.mktemp("awkward").joinpath(*AWKWARD)
    data = work / "data;sets"
    smoke = yaml.safe_load(SMOKE.read_text())["demo"]
    generate_demo(data / "gta 5", data / "city scapes", seed=0, size=tuple(smoke["size"]),
                  n_source=smoke["n_source"], n_target_train=smoke["n_target_train"],
                  n_target_val=smoke["n_target_val"], progress=False)
    work.mkdir(parents=True, exist_ok=True)
    extra = work / "my config.yaml"
    extra.write_text(yaml.safe_dump({"results_dir": str(work / "results"), "demo": {"enabled": False},
                                     "source": {"root": str(data / "gta 5")},
                                     "target": {"root": str(data / "city scapes")}}, allow_unicode=True))
    args = ["--cores", "2", "--configfile", str(SMOKE), str(extra)]
    proc = snakemake(work, *args, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return work, data, args


def test_a_second_run_gives_identical_results(smoke, awkward):
    """The second run is the awkward one below: the same smoke chain on the same generated data, read from
    another root, in another folder (demo disabled), so equal results also say that neither the paths nor
    where the data came from enter them."""
    again_seed_dir = awkward[0] / "results" / "smoke" / "seed0"
    first = smoke.eval_jsons()
    second = {p.stem: p for p in sorted((again_seed_dir / "eval").glob("*.json"))}
    assert list(first) == list(second) and set(RUNGS) <= set(first)
    for name in first:
        assert metrics_without_provenance(first[name]) == metrics_without_provenance(second[name]), name
    for rel in ("summary.csv", "rank/aa_it.csv", "rank/tgaa_r2.csv", "weights/tgaa_r2.csv", "rounds/r2.json"):
        assert (smoke.seed_dir / rel).read_bytes() == (again_seed_dir / rel).read_bytes(), rel
    for rung in RUNGS:
        a = torch.load(smoke.seed_dir / "models" / rung / "checkpoint.pt", weights_only=True)["model"]
        b = torch.load(again_seed_dir / "models" / rung / "checkpoint.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), rung


def test_paths_that_need_quoting_reach_every_command_intact(awkward):
    work, data, args = awkward
    results = work / "results" / "smoke"
    for rung in RUNGS:
        assert json.loads((results / "seed0" / "eval" / f"{rung}.json").read_text())["images"] == 8, rung
    assert (results / "seed0" / "summary.md").is_file()
    assert (results / "report" / "seed0" / "examples.png").is_file()
    # The index read the given roots, and pseudo labels were diagnosed against the target's ground truth.
    index = pd.read_csv(results / "data" / "source_index.csv")
    assert all(path.startswith(str(data / "gta 5")) for path in index["image"])
    assert (results / "seed0" / "pseudo" / "tgaa_r2" / "gmm" / "quality.csv").is_file()
    assert temporary_files(work) == []
    # The ablation table's command (planned here, not run) hands each label and path over as one argument.
    proc = snakemake(work, "-n", "-p", *args, "--config", "ablation={seeds: [0]}", "--", "ablation_tables")
    assert proc.returncode == 0, proc.stderr[-3000:]
    command = next(line for line in (proc.stdout + proc.stderr).splitlines() if " ablation-tables " in line)
    argv = shlex.split(command[command.index(sys.executable):])
    evals = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--eval"]
    assert f"Source only|rung|0|{results}/seed0/eval/source_only.json" in evals
    assert f"+UPST|rung|0|{results}/seed0/eval/st_gmm_r1.json" in evals


def test_table5_plans_each_adaptation_model_and_its_self_training(smoke):
    """snakemake table5 (planned where the chain has run, so that its final round is known): MRNet and ADVENT are
    round 0 without translation plus their one change, both from the source-only model; self-training from each
    starts at that model with its own pseudo labels; UncerDA's rows are the chain's own models; paper_tables plans
    Tables 1/2 and every other table."""
    proc = snakemake(smoke.workdir, *smoke_args(smoke.workdir, "ablation={seeds: [0]}", "-n", "-p"), "--",
                     "paper_tables", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    adapt = {m: shlex.split(line[line.index(sys.executable):]) for line in out.splitlines() if " adapt " in line
             for m in ("aa_mr", "aa_ent") if f"/models/{m}/checkpoint.pt" in line}
    assert adapt["aa_mr"][adapt["aa_mr"].index("--set") + 1] == "adapt.memory_weight=0.1"
    assert adapt["aa_ent"][adapt["aa_ent"].index("--set") + 1] == "adapt.disc_input=entropy"
    for argv in adapt.values():
        assert argv[argv.index("--image-translation") + 1] == "off"
        assert argv[argv.index("--init") + 1].endswith("/seed0/models/source_only/checkpoint.pt")
    for teacher in ("aa", "aa_mr", "aa_ent"):
        for method in ("cbst", "gmm"):
            line = next(line for line in out.splitlines()
                        if " self-train " in line and f"/models/{teacher}_st_{method}_r1/checkpoint.pt" in line)
            argv = shlex.split(line[line.index(sys.executable):])
            assert argv[argv.index("--init") + 1].endswith(f"/seed0/models/{teacher}/checkpoint.pt")
            assert argv[argv.index("--pseudo-dir") + 1].endswith(f"/seed0/pseudo/{teacher}/{method}")
    assert not re.search(r"/models/tgaa_r\d+_st_", out)       # UncerDA (AA): the chain's st_<method>_r1
    for rule in ("rule table5_table:", "rule per_class_table:", "rule table4_table:", "rule sensitivity_tables:",
                 "rule ablation_tables:", "rule paper_tables:"):   # Fig. 6 is the smoke run's own, already built
        assert rule in out, rule


def test_a_missing_table5_checkpoint_is_refused_before_any_job(tmp_path):
    proc = snakemake(tmp_path, *smoke_args(tmp_path, "table5={checkpoints: {mine: /nowhere/GTA5_25000.pth}}", "-n"),
                     "--", "table5", timeout=120)
    assert proc.returncode != 0
    assert "table5.checkpoints.mine: /nowhere/GTA5_25000.pth is not a file" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_table5_runs_on_a_model_file_of_your_own(smoke, tmp_path):
    """The smoke run's round-0 model saved as an AdaptSegNet file (DataParallel keys) goes through Table 5's whole
    chain in a copy of the smoke run: imported, its maps, CBST and GMM labels, self-training and the table. The
    imported model evaluates exactly as the model it was saved from."""
    import shutil

    from uncerda_core.runtime import load_checkpoint
    work = tmp_path / "smoke"
    shutil.copytree(smoke.workdir, work, symlinks=True)
    state = load_checkpoint(work / "results" / "smoke" / "seed0" / "models" / "aa_it" / "checkpoint.pt")["model"]
    ours_to_theirs = (("backbone.", ""), ("head_aux.branches.", "layer5.conv2d_list."),
                      ("head_main.branches.", "layer6.conv2d_list."))
    foreign = {}
    for key, tensor in state.items():
        for ours, theirs in ours_to_theirs:
            if key.startswith(ours):
                foreign["module." + theirs + key[len(ours):]] = tensor
                break
    weights = tmp_path / "GTA5_25000.pth"
    torch.save(foreign, weights)
    proc = snakemake(work, *smoke_args(work, "ablation={seeds: [0]}",
                                       f"table5={{models: [], checkpoints: {{mine: {weights}}}}}"), "--", "table5",
                     timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = work / "results" / "smoke"
    table = pd.read_csv(results / "ablation" / "table5.csv")
    assert list(table["model"]) == ["mine"] * 4
    assert list(table["pseudo_labels"]) == ["-", "CBST", "Ours (GMM)", "CBST at the GMM's coverage"]
    own = json.loads((results / "seed0" / "eval" / "aa_it.json").read_text())["miou"]
    assert table["miou_mean"][0] == pytest.approx(own, abs=1e-12)
    assert table["miou_mean"][1:3].notna().all() and pd.notna(table["precision_gain_equal_coverage"][2])
    assert (results / "seed0" / "models" / "ext_mine_st_gmm_r1" / "checkpoint.pt").is_file()
    assert (results / "report" / "ablation" / "fig3.png").is_file()


def test_online_self_training_runs_beside_upst_in_both_weightings(smoke, tmp_path):
    """snakemake online in a copy of the smoke run: the plan has nine online runs (confidence and GMM weights, and GMM
    with MIC, from +TGAA and from source only; GMM with the chain's source draws from +TGAA; both weightings from
    +TGAA at twice the length, from ablation.online_lengths) with no pseudo-label folder, the table and the curves;
    a chain-draw run reads the final round's weights. Two runs train for real, between them every addition (the
    table command is checked by hand in test_ablation_tables)."""
    import shutil
    work = tmp_path / "smoke"
    shutil.copytree(smoke.workdir, work, symlinks=True)
    args = smoke_args(work, "ablation={seeds: [0], online_lengths: [1, 2]}", "-p")
    plan = snakemake(work, *args, "-n", "--", "online", timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    out = plan.stdout + plan.stderr
    assert "rule online_table:" in out and "rule report_online_curves:" in out
    commands = [line for line in out.splitlines() if " self-train " in line and "online_" in line]
    assert len(commands) == 9 and not any("--pseudo-dir" in line for line in commands)
    for line in commands:
        argv = shlex.split(line[line.index(sys.executable):])
        model = re.search(r"/models/(online_[a-z]+_[a-z]+(_mic)?(_chain)?(_x2)?)/checkpoint.pt", line).group(1)
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        assert sets == ["selftrain.mode=online", f"selftrain.online.pixel_weights={model.split('_')[1]}",
                        "selftrain.target_only=false", *(["selftrain.online.mic=true"] if "_mic" in model else []),
                        *(["selftrain.online.source_draws=chain"] if "_chain" in model else []),
                        *(["selftrain.iterations=6"] if model.endswith("_x2") else [])]   # 2 x the smoke's 3
        start = argv[argv.index("--init") + 1]
        assert start.endswith("/models/source_only/checkpoint.pt") if "_src" in model else \
            re.search(r"/models/tgaa_r\d+/checkpoint.pt$", start)
        # the chain's draws: the weights of the round the start model finished, and its S_k's ranking
        final = re.search(r"tgaa_r(\d+)/checkpoint.pt$", start)
        assert ("--weights" in argv) == ("_chain" in model)
        if "_chain" in model:
            r = int(final.group(1))
            assert argv[argv.index("--weights") + 1].endswith(f"/seed0/weights/tgaa_r{r}.csv")
            assert argv[argv.index("--rank") + 1].endswith(f"/rank/{'aa_it' if r == 1 else f'tgaa_r{r - 1}'}.csv")
    models = work / "results" / "smoke" / "seed0" / "models"
    targets = [str(models / m / "checkpoint.pt") for m in ("online_gmm_tgaa_mic", "online_confidence_src_chain")]
    proc = snakemake(work, *args, "--", *targets, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = pd.read_csv(models / "online_gmm_tgaa_mic" / "losses.csv")
    assert "pl_weight" in losses and losses["st"].notna().all() and (losses["mic"] > 0).any()
    assert "mic" not in pd.read_csv(models / "online_confidence_src_chain" / "losses.csv")