"""Guards around a training run: a run that diverges stops early; a trainer owns its outputs.

- :class:`DivergenceGuard`: the loop calls ``observe`` with each logged row of losses.
- :func:`take_outputs`: a trainer holds an exclusive lock on ``<checkpoint>.lock`` while it runs, so a
  second trainer of the same stage (a rerun started while an orphan still trains) refuses to start.
- :func:`stop_with_parent`: a training command stops when the process that started it is gone (a
  ``kill -9`` of Snakemake, of torchrun or of a SLURM job step), instead of training on as an orphan
  that rewrites the checkpoint after a rerun has used it.
- :class:`TrainingProgress` and :func:`interrupts_deferred`: Ctrl-C stops a trainer with one line that
  names the iteration it reached and the one its rerun resumes at.
"""

from __future__ import annotations

import atexit
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from uncerda_core import artifacts
from uncerda_core.errors import Interrupted, UncerdaError

# What makes a DeepLab run diverge in practice, most likely first; the learning rate is rarely the cause
# when the published settings are used.
DIVERGENCE_HINT = (
    "Usual causes, most likely first: the initial weights (model.init missing, so the network starts from a "
    "random init, or a file whose keys did not match: see the 'initial weights' line at the top of this log); "
    "an input normalisation that does not match those weights (train.normalize: caffe_bgr for the Caffe-converted "
    "DeepLab/AdaptSegNet/ADVENT weights, imagenet for torchvision ones); BatchNorm statistics updated from small "
    "batches (model.bn_mode: train_frozen_affine or frozen for batch sizes 1-2); only then the learning rate (train.lr, "
    "train.head_lr_mult)")

# Cross-entropy terms of the logged rows (source segmentation, both heads; self-training).
CROSS_ENTROPY_KEYS = ("seg", "seg_aux", "st")


class TrainingDiverged(UncerdaError):
    """The segmentation loss stayed far above what a random guess costs."""


@dataclass
class DivergenceGuard:
    """Stops a run whose cross-entropy stays above ``factor`` x log C for ``patience`` logged rows in a row.

    Why these numbers: a network that predicts the uniform distribution over C
    classes has a cross-entropy of exactly log C (2.94 for 19 classes); a fresh
    network starts near it and a healthy run only goes down. A mean loss of
    100 x log C (294 for 19 classes) means logits hundreds of units wrong with
    full confidence on most pixels, which no learning run passes through. One
    logged value can spike on a hard batch, so it takes ``patience`` (3)
    consecutive logged rows; at most 3 x 50 iterations at the loop's logging
    interval, a negligible part of a run, and the divergence is caught long
    before the loss overflows to NaN (which the loop catches on its own).
    """

    num_classes: int
    factor: float = 100.0
    patience: int = 3
    _streak: int = field(default=0, init=False)

    @property
    def limit(self) -> float:
        return self.factor * math.log(self.num_classes)

    def observe(self, row: Mapping[str, float]) -> bool:
        """Record one logged row; True while the run has not diverged."""
        worst = max((row[k] for k in CROSS_ENTROPY_KEYS if k in row), default=0.0)
        self._streak = self._streak + 1 if worst > self.limit else 0
        return self._streak < self.patience

    def error(self, stage: str, iteration: int, row: Mapping[str, float], resume: object) -> TrainingDiverged:
        values = ", ".join(f"{k}={row[k]:.4g}" for k in CROSS_ENTROPY_KEYS if k in row)
        return TrainingDiverged(
            f"stage {stage}: training diverged at iteration {iteration}: the segmentation loss stayed above "
            f"{self.factor:g} x log C = {self.limit:.0f} for {self.patience} logged iterations in a row ({values}; "
            f"a uniform guess costs log C = {math.log(self.num_classes):.2f}). {DIVERGENCE_HINT}. The last periodic "
            f"checkpoint ({resume}) may already hold diverged weights: after a change of model or train settings "
            "the run starts over by itself")


# --------------------------------------------------------------------------- one trainer per output

_HELD: dict[Path, int] = {}   # lock file -> descriptor, held by this process until it exits


def lock_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".lock")


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text().strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "a process that wrote nothing into it yet"


def claim_output(out: str | os.PathLike) -> Path:
    """Hold an exclusive lock on ``<out>.lock`` until this process exits; another holder is an error.

    ``fcntl.flock`` locks belong to the open file: the kernel drops them when
    the process dies, however it dies, so a killed trainer never leaves a
    stale lock. A clean exit also removes the file. Claiming again from the
    same process (a test, or a resumed run in one process) keeps the lock.
    """
    import fcntl

    lock = lock_path(out).absolute()
    if lock in _HELD:
        return lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(10):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(lock)
            pid = holder.split()[1] if holder.startswith("pid ") else "<pid>"
            raise UncerdaError(
                f"{out}: another training process is writing this stage's outputs ({holder}; lock {lock}). "
                f"Wait for it to finish, or stop it (kill {pid}) if it is an orphan of a killed run, then rerun") \
                from None
        except OSError as exc:   # a file system without locks (some network mounts): run unguarded, say so
            os.close(fd)
            print(f"uncerda: cannot lock {lock} ({exc}); nothing stops a second trainer on these outputs",
                  file=sys.stderr)
            return lock
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)   # the holder removed the file between our open and lock: lock the new one
    else:
        raise UncerdaError(f"{lock}: could not lock it (it keeps being replaced); is another trainer starting?")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n{' '.join(sys.argv)}\n".encode())
    _HELD[lock] = fd
    if len(_HELD) == 1:
        atexit.register(_release_all)
    return lock


def _release_all() -> None:
    for lock, fd in list(_HELD.items()):
        lock.unlink(missing_ok=True)   # while still locked: a waiting claimant sees the inode change
        os.close(fd)
        del _HELD[lock]


def take_outputs(out: str | os.PathLike, main_process: bool, *others: str | os.PathLike | None) -> None:
    """On the main process: lock ``out`` (:func:`claim_output`), then remove the temporaries a killed run left.

    In this order, so that a second trainer never removes the temporaries of a live one.
    """
    if main_process:
        claim_output(out)
        artifacts.remove_stale_temporaries(out, *others)


# --------------------------------------------------------------------------- stop with the parent

# Processes between a trainer and what started it that only wait for their child: shells (Snakemake runs
# each job as `bash -c`, which does not exec the last command), `time`/`timeout`, and torchrun's agent.
# The trainer watches the whole chain up to the first other process, so a kill -9 of Snakemake (whose
# shell lives on) stops it too.
_WRAPPERS = {"sh", "bash", "dash", "zsh", "ksh", "fish", "time", "timeout", "env", "nice", "stdbuf"}
POLL_SECONDS = 0.5


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of ``pid`` from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _is_wrapper(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    args = [a.decode(errors="replace") for a in argv if a]
    torchrun = any(a == "torch.distributed.run" or a.endswith("/torchrun") or a == "torchrun" for a in args)
    return comm in _WRAPPERS or torchrun


def _ancestors() -> list[tuple[int, int]]:
    """(pid, start time) of the parent and, through wrappers, up to the first process that is not one."""
    chain = []
    pid = os.getppid()
    while pid > 1:
        stat = _proc_stat(pid)
        if stat is None:
            break
        chain.append((pid, stat[2]))
        if not _is_wrapper(pid):
            break
        pid = stat[1]
    return chain


_WATCH: dict[str, object] = {}


def _gone() -> int | None:
    """The pid of a watched ancestor that has exited, or None."""
    if "ancestors" in _WATCH:
        for pid, started in _WATCH["ancestors"]:
            stat = _proc_stat(pid)
            if stat is None or stat[0] in ("Z", "X") or stat[2] != started:   # exited, or its pid reused
                return pid
        return None
    if "ppid" in _WATCH and os.getppid() != _WATCH["ppid"]:   # no /proc: the parent changed, we were orphaned
        return int(_WATCH["ppid"])
    return None


def _orphaned(pid: int) -> str:
    return (f"the process that started this trainer (pid {pid}) is gone: stopping, so that a rerun does not "
            "meet a second trainer on the same outputs; the last periodic checkpoint is kept")


def stop_with_parent() -> None:
    """From now on this process stops (SIGTERM to itself) when its parent, or the process a chain of shells
    or torchrun leads up to, exits. Polls every ``POLL_SECONDS`` in a daemon thread.

    Why not only ``prctl(PR_SET_PDEATHSIG)``: it fires when the parent *thread* that started the process
    exits, even while the parent process lives on, and it sees only the direct parent, which for a
    Snakemake job is the shell that outlives Snakemake. Linux only; elsewhere the parent pid is compared.
    """
    if _WATCH:
        return
    if Path("/proc/self/stat").exists():
        _WATCH["ancestors"] = _ancestors()
    else:
        _WATCH["ppid"] = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(POLL_SECONDS)
            pid = _gone()
            if pid is not None:
                print(f"uncerda: {_orphaned(pid)}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="uncerda-parent-watch", daemon=True).start()


def check_parent() -> None:
    """Raise :class:`UncerdaError` if :func:`stop_with_parent` is on and the parent is gone.

    Called before each checkpoint write, so that no write starts after the parent died.
    """
    pid = _gone() if _WATCH else None
    if pid is not None:
        raise UncerdaError(_orphaned(pid))


# --------------------------------------------------------------------------- Ctrl-C

@dataclass
class TrainingProgress:
    """Where a training run is, kept by the loop for the message of a Ctrl-C (:meth:`interrupted`).

    ``done``: iterations finished; ``resumable``: the iteration the resume file on disk holds for
    these settings (None: none, so a rerun starts over); ``written``: the stage's final checkpoint
    once it is written (and the resume file removed).
    """

    stage: str
    total: int
    resume: Path
    done: int = 0
    resumable: int | None = None
    written: Path | None = None

    def interrupted(self) -> Interrupted:
        """The one line a trainer stopped by Ctrl-C ends with, as the exception that carries it."""
        if self.written is not None:
            return Interrupted(f"stage {self.stage}: interrupted after its last iteration ({self.total}), "
                               f"with {self.written} written")
        if self.resumable is None:
            rerun = "the rerun starts from the beginning (no resume checkpoint was written yet)"
        else:
            rerun = f"the rerun resumes at iteration {self.resumable} from {self.resume}"
        return Interrupted(f"stage {self.stage}: interrupted after {self.done} of {self.total} iterations; {rerun}")


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """A Ctrl-C (SIGINT) during the block takes effect when the block ends, as ``KeyboardInterrupt``.

    Around a checkpoint write and the note of which iteration it holds, so that what a Ctrl-C
    prints always matches the resume file on disk (the write itself is atomic either way). Only in
    the main thread and while Python's own handler is installed: a SIGINT that is ignored (a
    background job of a shell) stays ignored, and another handler is left alone.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt
