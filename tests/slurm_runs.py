"""Runs through the private SLURM cluster of the tests (tests/slurm_cluster.py), and the helpers that read them.

A run through SLURM spends most of its time waiting: the executor plugin looks at its jobs'
states only every few seconds (2 s after a submission here, 10 s longer each time nothing has
finished). So the two long runs of test_slurm.py (the smoke chain, and a training job cancelled
and resumed) start at the session's first test, in threads beside the other tests
(:class:`SlurmBackground`, the ``slurm_background`` fixture of conftest.py), and their tests
collect what they made. The cluster itself is started in the main thread: its daemons are told to
die with the thread that started them.
"""
from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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
# The smoke preset as the session's smoke run has it, resources aside (they change where a job runs,
# not what it computes): the local reference is that run (the `smoke` fixture), not a run of its own.
CHAIN_CONFIG = {"resources": RESOURCES}
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


_STARTED: list[subprocess.Popen] = []   # every run started here, for SlurmBackground.close()
_STARTED_LOCK = threading.Lock()


def start(cmd: list[str], workdir: Path, env: dict, log: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    with _STARTED_LOCK:
        _STARTED.append(proc)
    return proc


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
    """Where two checkpoints differ: every tensor and number; the resolved config, provenance and the
    resume digest left out."""
    import torch
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = []
        if set(a) != set(b):
            diffs.append(f"{path}: keys {sorted(set(a) ^ set(b))}")
        for k in set(a) & set(b):
            # The digest hashes the run's settings with the paths of its init and weights files: it
            # tells whether a resume file belongs to this run, and differs between two working folders.
            if k not in ("provenance", "config", "digest"):
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


# --- the runs that go on in the background --------------------------------------------------------
@dataclass(frozen=True)
class ChainRun:
    workdir: Path
    log: str                       # the snakemake log of the run through SLURM
    local_counts: Counter          # rule -> jobs, as a local run of the same targets plans them
    seconds: float


def chain_through_slurm(cluster: SlurmCluster, tmp_path: Path) -> ChainRun:
    """The smoke chain up to the first target-guided round's decision, every job through SLURM."""
    work = tmp_path / "slurm"
    work.mkdir()
    config = write_config(work / "test-config.yaml", CHAIN_CONFIG)
    # The jobs a local run of these targets would run, from a dry run in a fresh folder.
    plan = subprocess.run(snakemake_cmd(tmp_path / "plan", config, "--dry-run", *CHAIN_TARGETS, profile=False),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-3000:]
    local_counts = Counter(b["rule"] for b in job_blocks(plan.stdout + plan.stderr) if b["rule"] != "all")
    t0 = time.monotonic()
    text = run(snakemake_cmd(work, config, *FAST_POLL, "--slurm-keep-successful-logs", *CHAIN_TARGETS),
               work, cluster.env, work / "snakemake.log", "the smoke run through SLURM", cluster=cluster)
    return ChainRun(work, text, local_counts, time.monotonic() - t0)


def cancel_and_resume(cluster: SlurmCluster, tmp_path: Path) -> None:
    """scancel a training job mid-run: snakemake stops cleanly, and its rerun resumes the training
    (every check of test_cancelled_training_job_resumes_on_rerun, made here, in the background)."""
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


# The runs started at the session's first test, by the name of the test that checks each.
SCENARIOS = {"test_smoke_chain_through_slurm_equals_local_run": chain_through_slurm,
             "test_cancelled_training_job_resumes_on_rerun": cancel_and_resume}


def start_cluster() -> SlurmCluster:
    """The test cluster, started; skips (no plugin, not root, SLURM not installable) or fails with the reason."""
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
    return c


class SlurmBackground:
    """The session's SLURM cluster and its background runs, for the selected tests marked ``slurm``.

    ``start()`` starts the cluster (in the calling thread) and each selected test's run in a thread;
    ``cluster()`` and ``result(test name)`` hand them to the tests, raising what starting or running
    them raised (a skip, a failure with its message); ``close()`` stops what still runs.
    """

    def __init__(self, tmp_path_factory, selected: set[str]):
        self._tmp = tmp_path_factory
        self._selected = selected
        self._cluster: SlurmCluster | None = None
        self._error: BaseException | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[str, Future] = {}

    def start(self) -> None:
        if not self._selected:
            return
        try:
            self._cluster = start_cluster()
        except BaseException as err:   # pytest's skip and fail are BaseExceptions
            self._error = err
            return
        names = [name for name in SCENARIOS if name in self._selected]
        if names:
            self._pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="slurm-run")
            for name in names:
                self._futures[name] = self._pool.submit(SCENARIOS[name], self._cluster, self._tmp.mktemp(name))

    def cluster(self) -> SlurmCluster:
        if self._error is not None:
            raise self._error
        if self._cluster is None:
            pytest.fail("the SLURM cluster was not started: no test marked slurm was selected")
        return self._cluster

    def result(self, name: str):
        self.cluster()
        if name not in self._futures:
            pytest.fail(f"no background run for {name}")
        return self._futures[name].result(timeout=3 * RUN_TIMEOUT)

    def close(self) -> None:
        if self._pool is not None:
            with _STARTED_LOCK:
                running = [p for p in _STARTED if p.poll() is None]
            for proc in running:   # a run whose test did not wait for it (the session was cut short)
                stop(proc)
            self._pool.shutdown(wait=True)
        if self._cluster is not None:
            self._cluster.stop()
