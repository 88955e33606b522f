"""Checkpoint selection on held-out target train images (``selection``; off by default).

The held-out split by hand, the snapshots the training loop keeps (and keeps across a
resume), ``uncerda select`` choosing the best snapshot and writing its files, and the
workflow's plan with selection on (holdout and select jobs, every later rule routed to the
selected checkpoint) and off (exactly the jobs planned before selection existed).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from fixtures_data import demo_setup
from uncerda_core.artifacts import UncerdaError, sidecar_path
from uncerda_core.config import check_data_roots, load_config
from uncerda_core.data.index import build_index, read_index, split_holdout, write_holdout_split, write_index
from uncerda_core.evaluate import select as select_module
from uncerda_core.evaluate.evaluate import checkpoint_metrics
from uncerda_core.evaluate.metrics import best_candidate
from uncerda_core.evaluate.select import select_checkpoint
from uncerda_core.runtime import load_checkpoint, snapshot_dir
from uncerda_core.train.checkpoint import resume_path
from uncerda_core.train.loop import run_training, stage_settings
from workflow_helpers import REPO, SMOKE, snakemake


def _table(names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"name": names, "image": [f"/img/{n}.png" for n in names], "label": [None] * len(names)})


# --- the held-out split ------------------------------------------------------------------------

@pytest.mark.parametrize("n, fraction, held", [
    (10, 0.1, 1),    # 1.0
    (10, 0.25, 3),   # 2.5 rounds half up
    (10, 0.5, 5),
    (5, 0.01, 1),    # 0.05: at least one image is held out
    (3, 0.5, 2),     # 1.5 -> 2 (one image is still adapted on)
    (2, 0.5, 1),
])
def test_holdout_size_by_hand(n, fraction, held):
    names = [f"img{i:02d}" for i in range(n)]
    adapt, holdout = split_holdout(_table(names), fraction, seed=0)
    assert len(holdout) == held and len(adapt) == n - held
    assert set(adapt["name"]).isdisjoint(holdout["name"])
    assert set(adapt["name"]) | set(holdout["name"]) == set(names)
    assert list(adapt["name"]) == sorted(adapt["name"]) and list(holdout["name"]) == sorted(holdout["name"])


def test_holdout_is_seeded_and_independent_of_row_order():
    names = [f"frankfurt_{i:06d}" for i in range(20)]
    table = _table(names)
    _, first = split_holdout(table, 0.2, seed=3)
    _, again = split_holdout(table, 0.2, seed=3)
    _, shuffled = split_holdout(table.sample(frac=1.0, random_state=1), 0.2, seed=3)
    assert list(first["name"]) == list(again["name"]) == list(shuffled["name"])
    # the rows travel whole: each held-out name keeps its own image
    assert all(row.image == f"/img/{row.name}.png" for row in first.itertuples())
    draws = {tuple(split_holdout(table, 0.2, seed=s)[1]["name"]) for s in range(6)}
    assert len(draws) > 1   # the seed decides the draw
    # pinned: a changed draw would silently move images between adaptation and selection
    assert list(split_holdout(_table(list("abcdefghij")), 0.2, seed=0)[1]["name"]) == PINNED_DRAW


PINNED_DRAW = ["e", "g"]


def test_holdout_refusals():
    with pytest.raises(UncerdaError, match="at least 2 target train images"):
        split_holdout(_table(["a"]), 0.1, 0)
    with pytest.raises(UncerdaError, match="twice, e.g. a"):
        split_holdout(_table(["a", "b", "a"]), 0.1, 0)
    for bad in (0.0, 0.6):
        with pytest.raises(UncerdaError, match="holdout_fraction"):
            split_holdout(_table(["a", "b"]), bad, 0)


def test_best_candidate_takes_the_earliest_of_ties_and_never_nan():
    assert best_candidate([0.2, 0.5, 0.5, 0.1]) == 1
    assert best_candidate([float("nan"), 0.1, 0.05]) == 1
    with pytest.raises(UncerdaError, match="no candidate"):
        best_candidate([float("nan")])
    with pytest.raises(UncerdaError, match="no candidate"):
        best_candidate([])


# --- the holdout files --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Demo data (6 source, 8 target train images), the target train index with and without labels,
    their holdout split (a quarter held out) and a smoke config with snapshots every 2 iterations."""
    root = tmp_path_factory.mktemp("selection_data")
    config, source, target = demo_setup(root, 6, 8, 1, "train", {
        "train": {"checkpoint_every": 2}, "source_only": {"iterations": 6},
        "selection": {"enabled": True, "holdout_fraction": 0.25}})
    labelled = root / "target_train_labelled.csv"
    write_index(build_index("cityscapes", root / "target", "train", workers=1, progress=False), labelled, {})
    files = {k: root / f"{k}.csv" for k in ("adapt", "holdout", "adapt_labelled", "unlabelled")}
    # the demo's target train has labels, which the index lists even when it does not require them
    write_index(read_index(target).assign(label=None), files["unlabelled"], {})
    counts = write_holdout_split(target, labelled, 0.25, config["seed"], files["adapt"], files["holdout"],
                                 files["adapt_labelled"], {"stage": "test"})
    return {"root": root, "config": config, "source": source, "target": target, "labelled": labelled,
            "counts": counts, **files}


def test_holdout_files(data):
    assert data["counts"] == (6, 2)
    adapt, holdout = read_index(data["adapt"]), read_index(data["holdout"])
    adapt_labelled = read_index(data["adapt_labelled"])
    assert len(holdout) == 2 and holdout["label"].notna().all()          # selection evaluates on these
    # the adapt part is the rows of the index adaptation reads, unchanged
    target = read_index(data["target"]).set_index("name")
    pd.testing.assert_frame_equal(adapt.set_index("name"), target.loc[list(adapt["name"])])
    assert list(adapt["name"]) == list(adapt_labelled["name"]) and adapt_labelled["label"].notna().all()
    assert set(adapt["name"]).isdisjoint(holdout["name"])
    assert set(adapt["name"]) | set(holdout["name"]) == set(read_index(data["target"])["name"])
    _, expected = split_holdout(read_index(data["labelled"]), 0.25, data["config"]["seed"])
    assert list(holdout["name"]) == list(expected["name"])
    sidecar = json.loads(sidecar_path(data["holdout"]).read_text())
    assert (sidecar["holdout_fraction"], sidecar["holdout_images"], sidecar["part"]) == (0.25, 2, "holdout")


def test_holdout_split_command_reads_the_fraction_and_seed_of_the_config(data, tmp_path):
    import subprocess
    outs = {k: tmp_path / f"{k}.csv" for k in ("adapt", "holdout", "adapt_labelled")}
    proc = subprocess.run([sys.executable, "-m", "uncerda_core", "holdout-split", "--config-json",
                           json.dumps(data["config"]), "--index", str(data["target"]), "--labelled-index",
                           str(data["labelled"]), "--adapt-out", str(outs["adapt"]), "--holdout-out",
                           str(outs["holdout"]), "--labelled-adapt-out", str(outs["adapt_labelled"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 target train images held out" in proc.stdout
    for key, path in outs.items():
        assert path.read_bytes() == data[key].read_bytes(), key


def test_holdout_split_refuses_an_index_without_labels(data, tmp_path):
    outs = [tmp_path / f"{k}.csv" for k in ("a", "h", "al")]
    with pytest.raises(UncerdaError, match=r"needs the labels of the target train split, 8 image\(s\) have none"):
        write_holdout_split(data["target"], data["unlabelled"], 0.25, 0, *outs, {})
    assert not any(p.exists() for p in outs)


def test_config_refuses_selection_without_target_train_labels(tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "target" / "leftImg8bit" / "train").mkdir(parents=True)
    overrides = {"demo": {"enabled": False}, "source": {"root": str(tmp_path / "source")},
                 "target": {"root": str(tmp_path / "target")}, "selection": {"enabled": True}}
    config = load_config(REPO / "config.yaml", overrides=overrides, check_paths=False)
    with pytest.raises(UncerdaError, match=r"selection.enabled: .*gtFine/train does not exist"):
        check_data_roots(config)
    check_data_roots({**config, "selection": {**config["selection"], "enabled": False}})
    (tmp_path / "target" / "gtFine" / "train").mkdir(parents=True)
    check_data_roots(config)


# --- snapshots in the training loop ------------------------------------------------------------

def _train(data, out: Path, config: dict | None = None, **kwargs):
    config = config or data["config"]
    return run_training(config, stage_settings(config, "source_only"), out, seed=0, source_dataset="gta5",
                        source_index=data["source"], losses_csv=out.with_name("losses.csv"), progress=False,
                        **kwargs)


def _iterations(folder: Path) -> list[int]:
    return sorted(int(re.fullmatch(r"iter_(\d+)\.pt", p.name).group(1)) for p in folder.iterdir())


@pytest.fixture(scope="module")
def trained(data):
    """source_only, 6 iterations, snapshots every train.checkpoint_every = 2."""
    out = data["root"] / "so" / "checkpoint.pt"
    _train(data, out, keep_snapshots=True)
    return out


def test_snapshots_every_keep_every_and_the_last(data, trained, tmp_path):
    assert _iterations(snapshot_dir(trained)) == [2, 4, 6]
    last = load_checkpoint(snapshot_dir(trained) / "iter_000006.pt")
    final = load_checkpoint(trained)
    assert last["iteration"] == 6 and "optimizers" not in last          # weights only
    assert all(torch.equal(last["model"][k], final["model"][k]) for k in final["model"])
    config = {**data["config"], "selection": {**data["config"]["selection"], "keep_every": 4}}
    out = tmp_path / "every4" / "checkpoint.pt"
    _train(data, out, config=config, keep_snapshots=True)
    assert _iterations(snapshot_dir(out)) == [4, 6]
    plain = tmp_path / "plain" / "checkpoint.pt"
    _train(data, plain)
    assert not snapshot_dir(plain).exists()                              # only when asked


def test_a_killed_run_resumes_and_keeps_its_snapshots(data, trained, tmp_path):
    out = tmp_path / "resumed" / "checkpoint.pt"
    assert _train(data, out, keep_snapshots=True, stop_after=2) == {"stopped_at": 2}
    first = snapshot_dir(out) / "iter_000002.pt"
    assert _iterations(snapshot_dir(out)) == [2] and resume_path(out).exists()
    written = first.stat().st_mtime_ns
    interrupted = snapshot_dir(out) / ".iter_000004.pt.1a2b.tmp"    # what a kill during a write leaves
    interrupted.write_bytes(b"half a snapshot")
    _train(data, out, keep_snapshots=True)
    assert not interrupted.exists()
    assert _iterations(snapshot_dir(out)) == [2, 4, 6]
    assert first.stat().st_mtime_ns == written                           # not rewritten on resume
    for it in (2, 4, 6):   # the resumed run's snapshots are those of the uninterrupted one
        a = load_checkpoint(snapshot_dir(out) / f"iter_{it:06d}.pt")["model"]
        b = load_checkpoint(snapshot_dir(trained) / f"iter_{it:06d}.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), it


def test_a_fresh_run_drops_an_older_runs_snapshots(data, tmp_path):
    out = tmp_path / "fresh" / "checkpoint.pt"
    snapshot_dir(out).mkdir(parents=True)
    torch.save({"model": {}}, snapshot_dir(out) / "iter_000008.pt")     # from a longer, older run
    _train(data, out, keep_snapshots=True)
    assert _iterations(snapshot_dir(out)) == [2, 4, 6]


# --- uncerda select ------------------------------------------------------------------------------

def test_select_picks_the_best_snapshot_and_the_earliest_of_ties(data, trained, tmp_path, monkeypatch):
    scores = {"iter_000002.pt": 0.30, "iter_000004.pt": 0.55, "iter_000006.pt": 0.55}
    seen = []

    def fake_metrics(config, checkpoint, index, keep_predictions=False, progress=True):
        seen.append((Path(checkpoint).name, Path(index)))
        return {"miou": scores[Path(checkpoint).name], "protocol": {"name": "single"}}, {}

    monkeypatch.setattr(select_module, "checkpoint_metrics", fake_metrics)
    result = select_checkpoint(data["config"], trained, data["holdout"], tmp_path / "sel", progress=False)
    assert seen == [(name, data["holdout"]) for name in scores]          # every snapshot, on the holdout only
    assert result["chosen"]["snapshot"] == "iter_000004.pt" and result["chosen"]["iteration"] == 4
    written = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert [c["miou"] for c in written["candidates"]] == [0.30, 0.55, 0.55]
    assert written["holdout_fraction"] == 0.25 and written["holdout_images"] == 2
    assert written["protocol"] == {"name": "single"}
    assert (tmp_path / "sel" / "checkpoint.pt").read_bytes() == \
        (snapshot_dir(trained) / "iter_000004.pt").read_bytes()
    assert sorted(p.name for p in (tmp_path / "sel").iterdir()) == ["checkpoint.pt", "selection.json"]


def test_select_scores_with_the_evaluation_code(data, trained, tmp_path):
    """Without monkeypatching: each candidate's score is the evaluation's mIoU of that snapshot."""
    result = select_checkpoint(data["config"], trained, data["holdout"], tmp_path / "sel", progress=False)
    for candidate in result["candidates"]:
        metrics, _ = checkpoint_metrics(data["config"], snapshot_dir(trained) / candidate["snapshot"], data["holdout"],
                                        progress=False)
        assert candidate["miou"] == pytest.approx(metrics["miou"])
    best = max(c["miou"] for c in result["candidates"])
    assert result["chosen"]["miou"] == best
    assert result["chosen"] == next(c for c in result["candidates"] if c["miou"] == best)
    assert result["protocol"]["name"] == data["config"]["evaluate"]["protocol"]


def test_select_refuses_before_writing(data, trained, tmp_path):
    plain = tmp_path / "plain" / "checkpoint.pt"
    plain.parent.mkdir()
    plain.write_bytes(trained.read_bytes())
    with pytest.raises(UncerdaError, match="trained without --keep-snapshots"):
        select_checkpoint(data["config"], plain, data["holdout"], tmp_path / "a", progress=False)
    with pytest.raises(UncerdaError, match="selection needs labelled held-out images"):
        select_checkpoint(data["config"], trained, data["unlabelled"], tmp_path / "b", progress=False)
    stale = tmp_path / "stale" / "checkpoint.pt"
    snapshot_dir(stale).mkdir(parents=True)
    stale.write_bytes(trained.read_bytes())                              # iteration 6
    (snapshot_dir(stale) / "iter_000004.pt").write_bytes((snapshot_dir(trained) / "iter_000004.pt").read_bytes())
    with pytest.raises(UncerdaError, match="belong to another run"):
        select_checkpoint(data["config"], stale, data["holdout"], tmp_path / "c", progress=False)
    assert not any((tmp_path / d).exists() for d in "abc")


def test_select_command(data, trained, tmp_path):
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "uncerda_core", "select", "--config-json",
                           json.dumps(data["config"]), "--checkpoint", str(trained), "--holdout-index",
                           str(data["holdout"]), "--out", str(tmp_path / "sel")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    chosen = json.loads((tmp_path / "sel" / "selection.json").read_text())["chosen"]["snapshot"]
    assert (tmp_path / "sel" / "checkpoint.pt").read_bytes() == (snapshot_dir(trained) / chosen).read_bytes()


# --- the workflow's plan -------------------------------------------------------------------------

TARGETS = [f"results/smoke/seed0/{t}" for t in ("eval/aa_it.json", "eval/oracle.json", "eval/source_only_adabn.json",
                                                 "maps/aa_it.h5")]
# The plan for TARGETS before selection existed (dry run of the smoke preset at d7f4125): rule, inputs, outputs.
PLAN_WITHOUT_SELECTION = sorted([
    ("adabn", "results/smoke/seed0/models/source_only/checkpoint.pt, results/smoke/data/target_train_index.csv",
     "results/smoke/seed0/models/source_only_adabn/checkpoint.pt"),
    ("adapt_round0", "results/smoke/data/source_index.csv, results/smoke/data/target_train_index.csv, "
     "results/smoke/seed0/models/source_only/checkpoint.pt",
     "results/smoke/seed0/models/aa_it/checkpoint.pt, results/smoke/seed0/models/aa_it/losses.csv"),
    ("dump_maps", "results/smoke/seed0/models/aa_it/checkpoint.pt, results/smoke/data/target_train_index.csv",
     "results/smoke/seed0/maps/aa_it.h5"),
    ("evaluate", "results/smoke/seed0/models/aa_it/checkpoint.pt, results/smoke/data/target_val_index.csv",
     "results/smoke/seed0/eval/aa_it.json, results/smoke/seed0/eval/aa_it.csv"),
    ("evaluate", "results/smoke/seed0/models/oracle/checkpoint.pt, results/smoke/data/target_val_index.csv",
     "results/smoke/seed0/eval/oracle.json, results/smoke/seed0/eval/oracle.csv"),
    ("evaluate", "results/smoke/seed0/models/source_only_adabn/checkpoint.pt, results/smoke/data/target_val_index.csv",
     "results/smoke/seed0/eval/source_only_adabn.json, results/smoke/seed0/eval/source_only_adabn.csv"),
    ("generate_demo", "", "results/data/smoke/source, results/data/smoke/target"),
    ("index_source", "results/data/smoke/source", "results/smoke/data/source_index.csv"),
    ("index_target", "results/data/smoke/target", "results/smoke/data/target_train_index.csv"),
    ("index_target", "results/data/smoke/target", "results/smoke/data/target_val_index.csv"),
    ("index_target_labelled", "results/data/smoke/target", "results/smoke/data/labelled/target_train_index.csv"),
    ("train_oracle", "results/smoke/data/labelled/target_train_index.csv",
     "results/smoke/seed0/models/oracle/checkpoint.pt, results/smoke/seed0/models/oracle/losses.csv"),
    ("train_source_only", "results/smoke/data/source_index.csv",
     "results/smoke/seed0/models/source_only/checkpoint.pt, results/smoke/seed0/models/source_only/losses.csv"),
])


def _plan(workdir: Path, *config: str) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """(rule, inputs, outputs) of every planned job, sorted, and each job's shell command by its first output."""
    proc = snakemake(workdir, "--cores", "1", "--configfile", SMOKE, *(("--config", *config) if config else ()),
                     "-n", "-p", "--", *TARGETS, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs, shells = [], {}
    for block in re.split(r"\n(?=(?:rule|checkpoint) \w+:)", proc.stdout + proc.stderr):
        head = re.match(r"(?:rule|checkpoint) (\w+):", block)
        if not head:
            continue
        field = {k: (m.group(1) if (m := re.search(rf"^    {k}: (.*)$", block, re.M)) else "")
                 for k in ("input", "output")}
        jobs.append((head.group(1), field["input"], field["output"]))
        shells[field["output"].split(", ")[0]] = re.search(r"^Shell command: (.*)$", block, re.M).group(1)
    return sorted(jobs), shells


def test_workflow_without_selection_plans_exactly_the_jobs_of_before(tmp_path):
    jobs, shells = _plan(tmp_path)
    assert jobs == PLAN_WITHOUT_SELECTION
    assert not any("--keep-snapshots" in s or "selected/" in s or "data/selection" in s for s in shells.values())


def test_workflow_with_selection_plans_holdout_and_select_and_routes_to_the_selection(tmp_path):
    jobs, shells = _plan(tmp_path, "selection={enabled: true}")
    rules = [rule for rule, _, _ in jobs]
    assert rules.count("holdout_split") == 1
    selected = sorted(out.split(", ")[0] for rule, _, out in jobs if rule == "select_model")
    # every trained model is selected; the AdaBN control (no training loop) is not
    assert selected == [f"results/smoke/seed0/selected/{m}/checkpoint.pt" for m in ("aa_it", "oracle", "source_only")]
    by_rule = {(rule, out.split(", ")[0]): inputs for rule, inputs, out in jobs}
    adapt, holdout = "results/smoke/data/selection/target_adapt_index.csv", \
        "results/smoke/data/selection/target_holdout_index.csv"
    # adaptation, the dump and AdaBN read the adapt part; the oracle its labelled version
    assert adapt in by_rule[("adapt_round0", "results/smoke/seed0/models/aa_it/checkpoint.pt")]
    assert adapt in by_rule[("dump_maps", "results/smoke/seed0/maps/aa_it.h5")]
    assert adapt in by_rule[("adabn", "results/smoke/seed0/models/source_only_adabn/checkpoint.pt")]
    assert by_rule[("train_oracle", "results/smoke/seed0/models/oracle/checkpoint.pt")] == \
        "results/smoke/data/selection/target_adapt_labelled_index.csv"
    assert not any("target_train_index.csv" in inputs for (rule, _), inputs in by_rule.items()
                   if rule in ("adapt_round0", "dump_maps", "adabn", "train_oracle"))
    # downstream rules read the selected checkpoints
    assert "seed0/selected/source_only/checkpoint.pt" in by_rule[("adapt_round0",
                                                                  "results/smoke/seed0/models/aa_it/checkpoint.pt")]
    assert "seed0/selected/source_only/checkpoint.pt" in by_rule[("adabn",
                                                                  "results/smoke/seed0/models/source_only_adabn/checkpoint.pt")]
    assert by_rule[("dump_maps", "results/smoke/seed0/maps/aa_it.h5")].startswith(
        "results/smoke/seed0/selected/aa_it/checkpoint.pt")
    for model in ("aa_it", "oracle"):
        assert by_rule[("evaluate", f"results/smoke/seed0/eval/{model}.json")].startswith(
            f"results/smoke/seed0/selected/{model}/checkpoint.pt")
    assert by_rule[("evaluate", "results/smoke/seed0/eval/source_only_adabn.json")].startswith(
        "results/smoke/seed0/models/source_only_adabn/checkpoint.pt")
    assert all(holdout in by_rule[("select_model", s)] for s in selected)
    # evaluation stays on val; training rules keep snapshots
    assert all("target_val_index.csv" in inputs for (rule, _), inputs in by_rule.items() if rule == "evaluate")
    for ckpt in ("source_only", "aa_it", "oracle"):
        assert "--keep-snapshots" in shells[f"results/smoke/seed0/models/{ckpt}/checkpoint.pt"]
