"""Cluster submission through the SLURM profile (workflow/profiles/slurm).

The dry-run test needs only the executor plugin. The others start a private
single-node SLURM cluster on localhost (tests/slurm_cluster.py; Debian's
slurm-wlm and munge are installed when missing, else the tests skip with the
reason) with two fake GPUs, and check that:

- every job of the smoke chain runs as a SLURM job, with the threads, memory,
  runtime and GPU that the config's `resources` give its rule, and a GPU rule
  falls back to the CPU in a job that sees CUDA_VISIBLE_DEVICES=0 but no GPU;
- the results equal a local run's (metrics numbers, checkpoint tensors);
- a training job cancelled with scancel resumes from its resume file on rerun.

Set UNCERDA_SLURM_KEEP=1 to keep the cluster's folder (logs) after the tests.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from slurm_cluster import ClusterError, SlurmCluster, ensure_installed

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "Snakefile"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SMOKE = REPO / "workflow" / "presets" / "smoke.yaml"

# Resources of the test runs: small enough for any CI machine's node, distinct per kind so
# that each sbatch request can be traced back to its kind; GPU rules ask for the fake GPU.
RESOURCES = {
    "cpu": {"threads": 1, "mem_mb": 300, "runtime": 11, "gpu": 0},
    "train": {"threads": 1, "mem_mb": 700, "runtime": 23, "gpu": 1},
    "infer": {"threads": 1, "mem_mb": 500, "runtime": 17, "gpu": 1},
}
# The config kind whose resources each rule of the smoke chain takes (common.smk res()).
RULE_KIND = {
    "train_source_only": "train", "adapt_round0": "train", "adapt_tgaa": "train", "self_train": "train",
    "dump_maps": "infer", "evaluate": "infer",
    "generate_demo": "cpu", "index_source": "cpu", "index_target": "cpu", "class_stats": "cpu",
    "rank_classes": "cpu", "weights_tgaa": "cpu", "decide_round": "cpu", "pseudo_labels": "cpu",
    "summary": "cpu",
}
CHAIN_CONFIG = {"tgaa": {"max_rounds": 1}, "resources": RESOURCES}
# The smoke chain up to the first target-guided round and its stop decision (a checkpoint rule,
# so the DAG is re-evaluated after a SLURM job), with three models evaluated: 17 jobs of every
# kind. Pseudo labels, self-training and the summary are further jobs of the same kinds, left
# out to keep the SLURM status polling (a few seconds to half a minute per job) short.
CHAIN_TARGETS = [f"results/smoke/seed0/{t}" for t in (
    "eval/source_only.json", "eval/aa_it.json", "eval/tgaa_r1.json", "rounds/r1.json")]
# Slow polling is the main cost of a run through SLURM: look early (the cluster keeps
# finished jobs for MinJobAge = 1800 s >= 3x this, so squeue still sees them).
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "2"]

RUN_TIMEOUT = 1200   # seconds for one snakemake run through the cluster (a few minutes expected)


# --- helpers -------------------------------------------------------------------------------
def write_config(path: Path, extra: dict) -> Path:
    path.write_text(yaml.safe_dump(extra, sort_keys=False))
    return path


def snakemake_cmd(workdir: Path, configfile: Path, *args: str, profile: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
           "--configfile", str(SMOKE), str(configfile)]
    if profile:
        cmd += ["--workflow-profile", str(PROFILE)]
    return cmd + list(args)


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


def start(cmd: list[str], workdir: Path, env: dict, log: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, timeout: float, log: Path, what: str) -> int:
    """Wait for a snakemake run; past the timeout interrupt it (it cancels its SLURM jobs) and fail."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail(f"{what} did not finish within {timeout:.0f} s; its log ends with:\n{tail(log)}")


def stop(proc: subprocess.Popen) -> None:
    """End a snakemake run started here: SIGINT first (it then scancels its jobs), by its PID."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def run(cmd: list[str], workdir: Path, env: dict, log: Path, what: str, timeout: float = RUN_TIMEOUT,
        cluster: SlurmCluster | None = None) -> str:
    proc = start(cmd, workdir, env, log)
    try:
        rc = finish(proc, timeout, log, what)
    finally:
        stop(proc)
    if rc != 0:
        pytest.fail(f"{what} failed ({rc}); its log ends with:\n{tail(log)}"
                    + (f"\n\nSLURM job logs:\n{slurm_job_logs(workdir)}\n\ncluster logs:\n{cluster.logs()}"
                       if cluster else ""))
    return log.read_text(errors="replace")


def slurm_job_logs(workdir: Path, newest: int = 3) -> str:
    """The tails of the newest SLURM job logs (kept for failed jobs) of a run."""
    logs = sorted((workdir / ".snakemake" / "slurm_logs").glob("**/*.log"), key=lambda p: p.stat().st_mtime)
    return "\n".join(f"--- {p}\n{tail(p, 25)}" for p in logs[-newest:]) or "(none)"


HEADER = re.compile(r"^(local)?(rule|checkpoint) (\w+):\s*$")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


def job_blocks(text: str) -> list[dict]:
    """The job blocks Snakemake prints: rule, local or not, jobid, threads, resources, line number."""
    blocks, current = [], None
    for i, line in enumerate(text.splitlines()):
        m = HEADER.match(line)
        if m:
            current = {"rule": m.group(3), "local": bool(m.group(1)), "threads": 1, "resources": {}, "line": i}
            blocks.append(current)
            continue
        if current is None:
            continue
        if not line.startswith("    "):
            current = None
            continue
        key, _, value = line.strip().partition(": ")
        if key == "jobid":
            current["jobid"] = value
        elif key == "threads":
            current["threads"] = int(value)
        elif key == "resources":
            for item in value.split(", "):
                k, _, v = item.partition("=")
                current["resources"][k] = v
    return blocks


def submitted_jobs(text: str) -> list[dict]:
    """Every job submitted to SLURM: its block (rule, threads, resources) and its SLURM job id."""
    starts = {b["line"]: b for b in job_blocks(text)}
    latest: dict[str, dict] = {}
    jobs = []
    for i, line in enumerate(text.splitlines()):
        if i in starts and "jobid" in starts[i]:
            latest[starts[i]["jobid"]] = starts[i]
        sub = SUBMITTED.search(line)
        if sub:
            block = latest.get(sub.group(1))
            assert block is not None, f"no job block before: {line}"
            jobs.append({**block, "slurm_id": sub.group(2)})
    return jobs


def run_id(text: str) -> str:
    m = re.search(r"SLURM run ID: (\S+)", text)
    assert m, "no 'SLURM run ID' in the snakemake log"
    return m.group(1)


def numbers(obj, path="") -> dict[str, float]:
    """Every number in a JSON document by its path, provenance left out."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "provenance":
                out.update(numbers(v, f"{path}/{k}"))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{path}[{i}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[path] = obj
    return out


def checkpoint_differences(a, b, path="") -> list[str]:
    """Where two checkpoints differ: every tensor and number, the resolved config and provenance left out."""
    import torch
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = []
        if set(a) != set(b):
            diffs.append(f"{path}: keys {sorted(set(a) ^ set(b))}")
        for k in set(a) & set(b):
            if k not in ("provenance", "config"):
                diffs += checkpoint_differences(a[k], b[k], f"{path}/{k}")
        return diffs
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in checkpoint_differences(x, y, f"{path}[{i}]")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [f"{path}: tensors differ"]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="the SLURM executor plugin is not installed")
    if os.geteuid() != 0:
        pytest.skip("the test cluster runs its daemons (slurmd starts jobs) as root; not root here")
    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    c = SlurmCluster()
    try:
        c.start()
    except ClusterError as err:
        pytest.fail(f"the local SLURM cluster did not start: {err}")
    try:
        yield c
    finally:
        c.stop()


# --- tests ---------------------------------------------------------------------------------
def test_profile_dry_run_gives_each_rule_its_config_resources(tmp_path):
    """Without a cluster: the SLURM profile parses, and every job carries its kind's resources."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="the SLURM executor plugin is not installed")
    config = write_config(tmp_path / "test-config.yaml", CHAIN_CONFIG)
    proc = subprocess.run(snakemake_cmd(tmp_path, config, "--dry-run"), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"workflow specific profile {PROFILE}" in out
    blocks = [b for b in job_blocks(out) if b["rule"] != "all"]
    assert {b["rule"] for b in blocks} >= {"generate_demo", "train_source_only", "adapt_round0", "dump_maps",
                                           "adapt_tgaa", "decide_round"}
    kinds = {(r["mem_mb"], r["runtime"], r["gpu"]): kind for kind, r in RESOURCES.items()}
    for b in blocks:
        got = b["resources"]
        kind = kinds.get((int(got["mem_mb"]), int(got["runtime"]), int(got["gpu"])))
        assert kind is not None, f"{b['rule']}: resources {got} are none of the config's kinds"
        if b["rule"] in RULE_KIND:  # the rules of the chain that the cluster tests run
            assert kind == RULE_KIND[b["rule"]], (b["rule"], kind)
        assert not b["local"], f"{b['rule']} would run on the submitting machine"


@pytest.mark.slurm
def test_fake_gpu_job_sees_a_gpu_id_but_trains_on_the_cpu(cluster, tmp_path):
    """A job given a fake GPU sees CUDA_VISIBLE_DEVICES=0, no usable device, and device auto picks the CPU."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent("""
        import os, warnings, torch
        from uncerda_core.runtime import resolve_device
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            device = resolve_device("auto")
        print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}")
        print(f"available={torch.cuda.is_available()} device={device.type}")
        print("warning=" + "|".join(str(w.message) for w in caught))
    """))
    out = tmp_path / "probe.out"
    sub = subprocess.run(["sbatch", "--parsable", "--gpus=1", "--mem=500", "-t", "5", "--cpus-per-task=1",
                          f"--output={out}", f"--chdir={tmp_path}",
                          f"--wrap={sys.executable} {script}"],
                         env=cluster.env, capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = cluster.show_job(job_id).get("JobState")
        if state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            break
        time.sleep(1)
    assert state == "COMPLETED", f"probe job {job_id} ended {state}:\n{tail(out)}\n{cluster.logs()}"
    text = out.read_text()
    assert re.search(r"^CUDA_VISIBLE_DEVICES=[01]$", text, re.M), text  # index of a fake GPU
    assert "available=False device=cpu" in text, text
    assert "no GPU visible: running on the CPU" in text, text


@pytest.mark.slurm
@pytest.mark.slow
def test_smoke_chain_through_slurm_equals_local_run(cluster, tmp_path):
    """The chain through SLURM, and the same chain run locally at the same time as the reference."""
    local, work = tmp_path / "local", tmp_path / "slurm"
    for d in (local, work):
        d.mkdir()
        write_config(d / "test-config.yaml", CHAIN_CONFIG)
    t0 = time.monotonic()
    local_proc = start(snakemake_cmd(local, local / "test-config.yaml", "--cores", "1", *CHAIN_TARGETS,
                                     profile=False), local, dict(os.environ), local / "snakemake.log")
    try:
        text = run(snakemake_cmd(work, work / "test-config.yaml", *FAST_POLL, "--slurm-keep-successful-logs",
                                 *CHAIN_TARGETS), work, cluster.env, work / "snakemake.log",
                   "the smoke run through SLURM", cluster=cluster)
        seconds = time.monotonic() - t0
        rc = finish(local_proc, RUN_TIMEOUT, local / "snakemake.log", "the local smoke run")
    finally:
        stop(local_proc)
    assert rc == 0, f"the local smoke run failed ({rc}):\n{tail(local / 'snakemake.log')}"
    local_log = (local / "snakemake.log").read_text()
    elapsed = re.findall(r"Elapsed time: (\S+)", local_log)
    print(f"\nsmoke chain through SLURM: {seconds:.0f} s (the local run beside it: {elapsed[-1] if elapsed else '?'})")

    # Every job went through SLURM: none ran on the submitting side, one SLURM job per job of
    # the local run, all of them COMPLETED in the cluster.
    blocks = job_blocks(text)
    assert not [b["rule"] for b in blocks if b["local"]], "jobs ran outside SLURM"
    jobs = submitted_jobs(text)
    local_counts = Counter(b["rule"] for b in job_blocks(local_log) if b["rule"] != "all")
    assert Counter(j["rule"] for j in jobs) == local_counts
    in_queue = {j["id"]: j for j in cluster.squeue() if j["name"] == run_id(text)}
    for job in jobs:
        seen = in_queue.get(job["slurm_id"])
        assert seen is not None, f"SLURM never knew job {job['slurm_id']} ({job['rule']})"
        assert seen["state"] == "COMPLETED", (job, seen)
        assert seen["comment"].startswith(f"rule_{job['rule']}"), (job, seen)

    # What each job asked SLURM for: its rule's threads, and its kind's memory, runtime and GPU.
    for job in jobs:
        want = RESOURCES[RULE_KIND[job["rule"]]]
        got = cluster.show_job(job["slurm_id"])
        where = f"{job['rule']} (SLURM job {job['slurm_id']})"
        assert got["CPUs/Task"] == str(job["threads"]), (where, got["CPUs/Task"])
        assert got["MinMemoryNode"] == f"{want['mem_mb']}M", (where, got["MinMemoryNode"])
        assert got["TimeLimit"] == f"00:{want['runtime']:02d}:00", (where, got["TimeLimit"])
        gres = got.get("TresPerJob", "") + got.get("JOB_GRES", "")
        if want["gpu"]:
            assert "gpu:1" in gres, (where, gres)
        else:
            assert "gpu" not in gres, (where, gres)

    # GPU rules ran where SLURM gave them the fake GPU: the CPU, with the warning.
    for log in ("train_source_only", "adapt_aa_it", "adapt_tgaa_r1", "dump_aa_it", "evaluate_source_only"):
        text_log = (work / "logs" / "smoke" / "seed0" / f"{log}.log").read_text()
        assert "no GPU visible: running on the CPU" in text_log, log

    # Same numbers and tensors as the local run.
    ref, got_dir = local / "results" / "smoke" / "seed0", work / "results" / "smoke" / "seed0"
    metrics = sorted(p.relative_to(ref) for p in ref.rglob("*.json") if not p.name.endswith("provenance.json")
                     and p.name != "provenance.json")
    assert any(str(p).startswith("eval/") for p in metrics)
    for rel in metrics:
        a, b = numbers(json.loads((ref / rel).read_text())), numbers(json.loads((got_dir / rel).read_text()))
        assert a == b, f"{rel}: {[k for k in a if a.get(k) != b.get(k)][:10]}"
    import torch
    checkpoints = sorted(p.relative_to(ref) for p in ref.glob("models/*/checkpoint.pt"))
    assert len(checkpoints) == 3
    for rel in checkpoints:
        diffs = checkpoint_differences(torch.load(ref / rel, weights_only=True),
                                       torch.load(got_dir / rel, weights_only=True))
        assert not diffs, f"{rel}: {diffs[:10]}"
    for rel in ("rank/aa_it.csv", "rank/tgaa_r1.csv", "weights/tgaa_r1.csv"):
        assert (ref / rel).read_text() == (got_dir / rel).read_text(), rel


@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_training_job_resumes_on_rerun(cluster, tmp_path):
    """scancel a training job mid-run: snakemake stops cleanly, and its rerun resumes the training."""
    work = tmp_path / "resume"
    work.mkdir()
    iterations, every = 40, 4
    config = write_config(work / "test-config.yaml", {
        "train": {"checkpoint_every": every}, "source_only": {"iterations": iterations}, "resources": RESOURCES})
    target = "results/smoke/seed0/models/source_only/checkpoint.pt"
    ckpt = work / target
    resume = ckpt.with_name(ckpt.name + ".resume.pt")
    log = work / "logs" / "smoke" / "seed0" / "train_source_only.log"
    cmd = snakemake_cmd(work, config, *FAST_POLL, target)

    # The demo data and the source index are made locally: only the training goes through SLURM.
    run(snakemake_cmd(work, config, "--cores", "2", "results/smoke/data/source_index.csv", profile=False),
        work, dict(os.environ), work / "snakemake-0.log", "the local data stages")

    # First run: cancel the training job once it has written a resume file.
    first_log = work / "snakemake-1.log"
    proc = start(cmd, work, cluster.env, first_log)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not resume.exists():
            if proc.poll() is not None:
                pytest.fail(f"snakemake ended ({proc.returncode}) before training wrote {resume}:\n{tail(first_log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {resume} after {RUN_TIMEOUT} s:\n{tail(first_log)}\n{tail(log)}")
            time.sleep(0.2)
        uuid = run_id(first_log.read_text())
        jobs = [j for j in cluster.squeue() if j["name"] == uuid]
        assert [(j["comment"].split("_wildcards_")[0], j["state"]) for j in jobs] == \
            [("rule_train_source_only", "RUNNING")], jobs
        cancelled = jobs[0]["id"]
        cluster.cancel(cancelled)
        rc = finish(proc, 600, first_log, "the run whose job was cancelled")
    finally:
        stop(proc)
    assert rc != 0, "snakemake did not notice the cancelled job"
    assert cluster.show_job(cancelled)["JobState"] == "CANCELLED"
    assert "SLURM status is: 'CANCELLED'" in first_log.read_text(), tail(first_log)
    assert resume.exists(), "the resume file went with the failed job's outputs"
    assert not ckpt.exists()
    assert not any((work / ".snakemake" / "locks").glob("*")), "the cancelled run left a lock (--unlock needed)"

    # Rerun as it was (rerun-incomplete is in the profile; no --unlock after a clean exit).
    text = run(cmd, work, cluster.env, work / "snakemake-2.log", "the rerun after scancel", cluster=cluster)
    jobs = submitted_jobs(text)
    assert [j["rule"] for j in jobs] == ["train_source_only"], "only the cancelled job should rerun"
    assert jobs[0]["slurm_id"] != cancelled
    m = re.search(r"resuming from \S+ at iteration (\d+)", log.read_text())
    assert m, f"the rerun did not resume:\n{tail(log)}"
    assert every <= int(m.group(1)) < iterations and int(m.group(1)) % every == 0, m.group(0)
    assert ckpt.exists() and not resume.exists()
    done = [int(line.split(",")[0]) for line in (ckpt.parent / "losses.csv").read_text().splitlines()[1:]]
    assert done == sorted(set(done)) and done[-1] == iterations, done
