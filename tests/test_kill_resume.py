"""Nothing lost: a training process killed with SIGKILL resumes where its last checkpoint
left it and ends with the weights of an uninterrupted run; the same through Snakemake.
Ctrl-C stops a trainer with one line that names where its rerun resumes, and exit status 130.
Atomic writers never leave a file that looks finished."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from uncerda_core import artifacts
from uncerda_core.cli import main
from uncerda_core.data.demo import generate_demo
from uncerda_core.data.index import build_index, write_index
from uncerda_core.runtime import load_checkpoint
from uncerda_core.train.checkpoint import resume_path
from uncerda_core.train.guards import TrainingProgress, interrupts_deferred
from workflow_helpers import SMOKE, kill_group, snakemake, snakemake_command, temporary_files, wait_for

# Enough iterations that the rest of the run takes seconds after the first periodic
# checkpoint, while the tests poll for it every 20 ms.
ITERATIONS = 60
CHECKPOINT_EVERY = 10


# --------------------------------------------------------------------------- atomic writers

def test_atomic_path_leaves_nothing_on_failure_and_ordinary_permissions_on_success(tmp_path):
    target = tmp_path / "out" / "table.csv"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_text("half")
            assert tmp.name.startswith(".table.csv.") and ".tmp" in tmp.name and tmp.parent == target.parent
            raise RuntimeError("killed")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with artifacts.atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and [p.name for p in target.parent.iterdir()] == ["table.csv"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    folder = tmp_path / "pngs"
    with artifacts.atomic_dir(folder) as tmp:
        (tmp / "a.png").write_bytes(b"x")
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    with pytest.raises(RuntimeError):
        with artifacts.atomic_dir(folder) as tmp:
            (tmp / "b.png").write_bytes(b"y")
            raise RuntimeError("killed")
    # The old folder is untouched and no temporary folder is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pngs"]
    assert [p.name for p in folder.iterdir()] == ["a.png"]


# --------------------------------------------------------------------------- one training process

@pytest.fixture(scope="module")
def train_setup(tmp_path_factory):
    """Demo data, its index and a config whose source-only stage runs for some seconds."""
    root = tmp_path_factory.mktemp("kill")
    generate_demo(root / "source", root / "target", seed=0, size=(64, 32), n_source=8, n_target_train=2,
                  n_target_val=2, progress=False)
    write_index(build_index("gta5", root / "source", "all", workers=1, progress=False), root / "source.csv", {})
    preset = yaml.safe_load(SMOKE.read_text())
    config = {"device": "cpu", "threads": 1, "source": {"root": str(root / "source")},
              "target": {"root": str(root / "target")}, "model": preset["model"],
              "train": {"batch_size": 4, "checkpoint_every": CHECKPOINT_EVERY},
              "source_only": {"iterations": ITERATIONS}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def _command(root: Path, out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "uncerda_core", "train-source", "--config", str(root / "config.yaml"),
            "--source-index", str(root / "source.csv"), "--out", str(out_dir / "checkpoint.pt"),
            "--losses", str(out_dir / "losses.csv")]


@pytest.fixture(scope="module")
def reference_run(train_setup, tmp_path_factory) -> Path:
    """The folder of the source-only stage of ``train_setup`` run once, uninterrupted: the weights and
    losses every interrupted and resumed run must end with."""
    reference = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(_command(train_setup, reference), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return reference


def _assert_same_as_reference(reference: Path, out_dir: Path) -> None:
    """The checkpoint and losses in ``out_dir`` are those of the uninterrupted run, bit for bit."""
    a = load_checkpoint(reference / "checkpoint.pt")
    b = load_checkpoint(out_dir / "checkpoint.pt")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    assert a["iteration"] == b["iteration"] == ITERATIONS
    assert (reference / "losses.csv").read_bytes() == (out_dir / "losses.csv").read_bytes()


@pytest.mark.slow
def test_sigkill_then_the_same_command_resumes_to_the_same_weights(train_setup, reference_run, tmp_path):
    root = train_setup
    killed = tmp_path / "killed"
    out = killed / "checkpoint.pt"
    resume = resume_path(out)
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(_command(root, killed), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            assert wait_for(resume, process, timeout=600), "no periodic checkpoint appeared"
        finally:
            kill_group(process)
    assert process.returncode == -9
    # A kill leaves no final checkpoint, and nothing temporary that looks finished.
    assert not out.exists()
    state = load_checkpoint(resume)
    k = state["iteration"]
    assert k % CHECKPOINT_EVERY == 0 and 0 < k < ITERATIONS
    for path in killed.iterdir():   # the lock file stays, unlocked: the kernel dropped the dead holder's lock
        assert path.name in ("checkpoint.pt.resume.pt", "losses.csv", "checkpoint.pt.lock") or (
            path.name.startswith(".") and ".tmp" in path.name), path.name

    stale = set(temporary_files(killed))       # what the killed writer left (hidden, never renamed)

    again = subprocess.run(_command(root, killed), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {resume} at iteration {k}" in again.stderr
    assert not resume.exists() and set(temporary_files(killed)) <= stale
    _assert_same_as_reference(reference_run, killed)


# --------------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_stops_a_trainer_with_one_line_naming_where_the_rerun_resumes(train_setup, reference_run, tmp_path):
    """Issue 32: Ctrl-C used to end a trainer's log with a KeyboardInterrupt traceback."""
    root, out_dir = train_setup, tmp_path / "interrupted"
    out, log = out_dir / "checkpoint.pt", tmp_path / "interrupted.log"
    resume = resume_path(out)
    with open(log, "w") as fh:
        # SIGINT as a terminal leaves it, even where the tests run with it ignored (a background job
        # of a shell without job control ignores SIGINT, and its children inherit that).
        process = subprocess.Popen(_command(root, out_dir), stdout=fh, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            assert wait_for(resume, process, timeout=600), log.read_text()[-3000:]
            os.killpg(process.pid, signal.SIGINT)   # a terminal's Ctrl-C: the whole foreground process group
            status = process.wait(timeout=120)
        finally:
            kill_group(process)
    text = log.read_text()
    assert status == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text and text.endswith("\n")
    last = text.splitlines()[-1]
    stopped = re.fullmatch(rf"uncerda train-source: stage source_only: interrupted after (\d+) of {ITERATIONS} "
                           rf"iterations; the rerun resumes at iteration (\d+) from {re.escape(str(resume))}", last)
    assert stopped, last
    reached, resumes_at = int(stopped[1]), int(stopped[2])
    # The iteration it names is the resume file's; nothing else is left, the lock went with the clean exit.
    assert load_checkpoint(resume)["iteration"] == resumes_at
    assert resumes_at % CHECKPOINT_EVERY == 0 and 0 < resumes_at <= reached < ITERATIONS
    assert sorted(p.name for p in out_dir.iterdir()) == [resume.name]

    again = subprocess.run(_command(root, out_dir), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {resume} at iteration {resumes_at}" in again.stderr
    assert not resume.exists()
    _assert_same_as_reference(reference_run, out_dir)


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler during the test, even where the tests run with SIGINT ignored (see
    above); the inherited handler is put back after it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_during_a_checkpoint_write_takes_effect_after_it(tmp_path, python_sigint):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)   # the handler runs between bytecodes: here, had it not been deferred
            done.append("written")
    assert done == ["written"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    progress = TrainingProgress("aa", 200, tmp_path / "c.pt.resume.pt", done=7)
    assert str(progress.interrupted()) == ("stage aa: interrupted after 7 of 200 iterations; the rerun starts from "
                                           "the beginning (no resume checkpoint was written yet)")


def test_other_commands_stop_on_ctrl_c_with_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("uncerda_core.config.write_resolved_config", interrupted)
    assert main(["write-config", "--config", str(SMOKE), "--out", str(tmp_path / "c.yaml")]) == 130
    assert capsys.readouterr().err == "uncerda write-config: interrupted\n"
    assert not (tmp_path / "c.yaml").exists()


# --------------------------------------------------------------------------- orphans and a second trainer

# Starts the command in argv[2:], writes its pid to argv[1] and waits: the parent the test kills.
_PARENT = """
import subprocess, sys
with open(sys.argv[1] + ".log", "w") as log:
    child = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
    with open(sys.argv[1], "w") as fh:
        fh.write(str(child.pid))
    child.wait()
"""


_HOLD = """
import sys, time
from uncerda_core.train.guards import claim_output
claim_output(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_output_lock_refuses_a_second_holder_and_goes_away_with_a_clean_exit(tmp_path):
    out = tmp_path / "m" / "checkpoint.pt"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out), "3"], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run([sys.executable, "-c", _HOLD, str(out), "0"], capture_output=True, text=True,
                                env=env, timeout=60)
        assert second.returncode == 1 and f"(pid {holder.pid} on " in second.stderr
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()
    assert not (out.parent / "checkpoint.pt.lock").exists()          # a clean exit removes the file
    third = subprocess.run([sys.executable, "-c", _HOLD, str(out), "0"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert third.returncode == 0, third.stderr


def _long_command(root: Path, out_dir: Path) -> list[str]:
    """:func:`_command` for a run long enough to still be training whenever the test acts (it is killed)."""
    return [*_command(root, out_dir), "--set", "source_only.iterations=100000"]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that nobody reaped has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="watching the parent reads /proc (Linux)")
@pytest.mark.parametrize("through", ["direct", "shell"])
def test_a_trainer_whose_parent_is_killed_stops_and_writes_nothing_more(train_setup, tmp_path, through):
    """Before: the orphan trained on and wrote checkpoint.pt after a rerun could have used it.

    ``shell``: started as Snakemake starts a job, through ``bash -c`` (which outlives a killed Snakemake).
    """
    root, out_dir = train_setup, tmp_path / "orphan"
    out, pid_file = out_dir / "checkpoint.pt", tmp_path / "trainer.pid"
    command = _long_command(root, out_dir)
    if through == "shell":
        command = ["bash", "-c", f"set -euo pipefail; {shlex.join(command)} > {tmp_path / 'trainer.log'} 2>&1"]
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(pid_file), *command], start_new_session=True)
    try:
        assert wait_for(resume_path(out), parent, timeout=600), Path(f"{pid_file}.log").read_text()[-3000:]
        trainer = int(pid_file.read_text())
        if through == "shell":
            shell = trainer
            trainer = int(Path(f"/proc/{shell}/task/{shell}/children").read_text().split()[0])
        os.kill(parent.pid, signal.SIGKILL)                  # the parent alone, as `kill -9 <snakemake>`
        parent.wait(timeout=60)
        deadline = time.monotonic() + 10
        while _alive(trainer) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(trainer), "the trainer kept running without its parent"
        written = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir() if not p.name.startswith(".")}
        time.sleep(2)
        assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir() if not p.name.startswith(".")} == written
        assert not out.exists() and load_checkpoint(resume_path(out))["iteration"] % CHECKPOINT_EVERY == 0
        log = tmp_path / "trainer.log" if through == "shell" else Path(f"{pid_file}.log")
        assert f"the process that started this trainer (pid {parent.pid}) is gone: stopping" in log.read_text()
    finally:
        kill_group(parent)


@pytest.mark.slow
def test_a_second_trainer_on_the_same_outputs_refuses_while_the_first_runs(train_setup, tmp_path):
    """Before: the README's recovery after a kill of Snakemake alone started a second trainer beside the orphan."""
    root, out_dir = train_setup, tmp_path / "twice"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(_long_command(root, out_dir), stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            assert wait_for(resume_path(out_dir / "checkpoint.pt"), first, timeout=600)
            second = subprocess.run(_long_command(root, out_dir), capture_output=True, text=True, timeout=180)
            still_running = first.poll() is None
        finally:
            kill_group(first)
    assert still_running, (tmp_path / "first.log").read_text()[-3000:]
    assert second.returncode == 2, second.stderr[-3000:]
    lock = out_dir / "checkpoint.pt.lock"
    assert (f"{out_dir / 'checkpoint.pt'}: another training process is writing this stage's outputs "
            f"(pid {first.pid} on ") in second.stderr and str(lock) in second.stderr
    assert f"stop it (kill {first.pid})" in second.stderr
    assert "resuming" not in second.stderr and not (out_dir / "checkpoint.pt").exists()


# --------------------------------------------------------------------------- through Snakemake

@pytest.mark.slow
@pytest.mark.parametrize("kill", ["group", "snakemake_alone"])
def test_snakemake_killed_mid_training_unlocks_and_finishes(tmp_path, kill):
    """``snakemake_alone``: `kill -9 <snakemake>`; its job's shell lives on, and before, so did the trainer,
    beside the one the recovery below started."""
    work = tmp_path / "run"
    work.mkdir()
    longer = work / "longer.yaml"
    longer.write_text(yaml.safe_dump({"source_only": {"iterations": 40}, "train": {"checkpoint_every": 5}}))
    ckpt = work / "results" / "smoke" / "seed0" / "models" / "source_only" / "checkpoint.pt"
    args = [str(ckpt), "--cores", "2", "--configfile", str(SMOKE), str(longer),
            "--config", f"results_dir={work / 'results'}"]
    with open(tmp_path / "first.log", "w") as log:
        process = subprocess.Popen(snakemake_command(work, *args), stdout=log, stderr=subprocess.STDOUT,
                                   cwd=work, start_new_session=True)
        try:
            appeared = wait_for(resume_path(ckpt), process, timeout=900)
            if appeared and kill == "snakemake_alone":
                trainer = int(Path(f"{ckpt}.lock").read_text().split()[1])   # "pid N on HOST"
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
                deadline = time.monotonic() + 10
                while _alive(trainer) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert not _alive(trainer), "the trainer kept running after Snakemake was killed"
        finally:
            kill_group(process)
    assert appeared, (tmp_path / "first.log").read_text()[-3000:]
    assert not ckpt.exists()
    stale = set(temporary_files(work))

    # The kill leaves the working directory locked (either way; checked once).
    if kill == "group":
        locked = snakemake(work, *args, "--rerun-incomplete", timeout=300)
        assert locked.returncode != 0 and "Directory cannot be locked" in locked.stderr
    unlock = snakemake(work, *args, "--unlock", timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    done = snakemake(work, *args, "--rerun-incomplete", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ckpt.is_file() and not resume_path(ckpt).exists()
    assert load_checkpoint(ckpt)["iteration"] == 40
    log = (work / "logs" / "smoke" / "seed0" / "train_source_only.log").read_text()
    assert f"resuming from {resume_path(ckpt)} at iteration" in log
    assert set(temporary_files(work)) <= stale
