"""Cluster submission through the SLURM profile (workflow/profiles/slurm).

The dry-run test needs only the executor plugin. The others use a private
single-node SLURM cluster on localhost (tests/slurm_cluster.py; Debian's
slurm-wlm and munge are installed when missing, else the tests skip with the
reason) with two fake GPUs, and check that:

- every job of the smoke chain runs as a SLURM job, with the threads, memory,
  runtime and GPU that the config's `resources` give its rule, and a GPU rule
  falls back to the CPU in a job that sees CUDA_VISIBLE_DEVICES=0 but no GPU;
- the results equal the session's local smoke run's (metrics numbers, checkpoint tensors);
- a training job cancelled with scancel resumes from its resume file on rerun.

The cluster and the two long runs start at the session's first test and go on
beside the other tests (tests/slurm_runs.py, the `slurm_background` fixture):
they mostly wait on SLURM's status polling. Set UNCERDA_SLURM_KEEP=1 to keep
the cluster's folder (logs) after the tests.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from slurm_runs import (CHAIN_CONFIG, RESOURCES, RULE_KIND, PROFILE, checkpoint_differences, job_blocks, numbers,
                        run_id, snakemake_cmd, submitted_jobs, tail, write_config)


# --- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def cluster(slurm_background):
    """The session's test cluster (started by the slurm_background fixture of conftest.py)."""
    return slurm_background.cluster()


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
def test_smoke_chain_through_slurm_equals_local_run(slurm_background, smoke):
    """The chain through SLURM (run in the background: slurm_runs.chain_through_slurm), against the
    session's local smoke run (the same config, resources aside)."""
    cluster = slurm_background.cluster()
    chain = slurm_background.result("test_smoke_chain_through_slurm_equals_local_run")
    text, work = chain.log, chain.workdir
    print(f"\nsmoke chain through SLURM: {chain.seconds:.0f} s")

    # Every job went through SLURM: none ran on the submitting side, one SLURM job per job of
    # the local run, all of them COMPLETED in the cluster.
    blocks = job_blocks(text)
    assert not [b["rule"] for b in blocks if b["local"]], "jobs ran outside SLURM"
    jobs = submitted_jobs(text)
    assert Counter(j["rule"] for j in jobs) == chain.local_counts
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

    # Same numbers and tensors as the local run (which went on to further stages: compare what both made).
    ref, got_dir = smoke.seed_dir, work / "results" / "smoke" / "seed0"
    metrics = sorted(p.relative_to(got_dir) for p in got_dir.rglob("*.json")
                     if not p.name.endswith("provenance.json") and p.name != "provenance.json")
    assert {str(p) for p in metrics} >= {"eval/source_only.json", "eval/aa_it.json", "eval/tgaa_r1.json",
                                         "rounds/r1.json"}
    for rel in metrics:
        a, b = numbers(json.loads((ref / rel).read_text())), numbers(json.loads((got_dir / rel).read_text()))
        assert a == b, f"{rel}: {[k for k in a if a.get(k) != b.get(k)][:10]}"
    import torch
    checkpoints = sorted(p.relative_to(got_dir) for p in got_dir.glob("models/*/checkpoint.pt"))
    assert [str(p.parent.name) for p in checkpoints] == ["aa_it", "source_only", "tgaa_r1"]
    for rel in checkpoints:
        diffs = checkpoint_differences(torch.load(ref / rel, weights_only=True),
                                       torch.load(got_dir / rel, weights_only=True))
        assert not diffs, f"{rel}: {diffs[:10]}"
    for rel in ("rank/aa_it.csv", "rank/tgaa_r1.csv", "weights/tgaa_r1.csv"):
        assert (ref / rel).read_text() == (got_dir / rel).read_text(), rel


@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_training_job_resumes_on_rerun(slurm_background):
    """scancel a training job mid-run: snakemake stops cleanly, and its rerun resumes the training
    (run and checked in the background: slurm_runs.cancel_and_resume)."""
    slurm_background.result("test_cancelled_training_job_resumes_on_rerun")
