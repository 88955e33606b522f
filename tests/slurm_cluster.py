"""A private single-node SLURM cluster on localhost, for the tests.

Everything lives in one temporary folder: its own munge key and socket, its own
``slurm.conf`` (found by the SLURM commands through ``SLURM_CONF``), free TCP
ports, state, spool, logs and pid files. Nothing under /etc is written, so a
cluster already configured on the machine is left alone. The daemons run in the
foreground as children of the test process; ``stop()`` ends exactly those
processes (by the PIDs it started them with, checked against their pid files),
never anything found by name, and they get SIGTERM from the kernel if the test
process dies without stopping them.

The node has ``nproc`` CPUs, most of the machine's memory and fake GPUs
(``gres.conf``: ``File=/dev/null``, then ``/dev/zero``): a job that asks for a
GPU gets ``CUDA_VISIBLE_DEVICES=0`` (or 1) but no device behind it. Two fake
GPUs let a training and an inference job run side by side. There is no accounting
(``sacct`` has nothing to read), so finished jobs stay visible to ``squeue`` and
``scontrol`` for ``MinJobAge`` seconds instead.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")
PACKAGES = ("slurm-wlm", "munge")
# Character devices that exist everywhere; each stands for one fake GPU (CUDA_VISIBLE_DEVICES=0, 1, ...).
FAKE_GPU_FILES = ("/dev/null", "/dev/zero", "/dev/full")


class ClusterError(RuntimeError):
    """The cluster could not be installed, started or queried."""


def missing_programs() -> list[str]:
    return [p for p in DAEMONS if not os.access(p, os.X_OK)] + [c for c in CLIENTS if shutil.which(c) is None]


def ensure_installed(timeout: float = 900) -> str | None:
    """Install Debian's slurm-wlm and munge when missing; the reason when that is not possible, else None."""
    if not missing_programs():
        return None
    if os.environ.get("UNCERDA_SLURM_INSTALL", "1") == "0":
        return f"SLURM is not installed ({', '.join(missing_programs())} missing) and UNCERDA_SLURM_INSTALL=0"
    if os.geteuid() != 0:
        return f"SLURM is not installed ({', '.join(missing_programs())} missing) and installing it needs root"
    if shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install slurm-wlm and munge with"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + timeout
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s"
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            return f"`{' '.join(cmd)}` failed ({proc.returncode}): " + " | ".join(tail)
    if missing_programs():
        return f"installed {' and '.join(PACKAGES)} but still missing: {', '.join(missing_programs())}"
    return None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux prctl),
    so that a test process killed outright (no finally blocks run) leaves no daemons behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise ClusterError("no MemTotal in /proc/meminfo")


@dataclass
class SlurmCluster:
    """``start()`` it, use ``env`` for every SLURM command and for Snakemake, ``stop()`` it in a finally block."""

    min_job_age: int = 1800          # seconds a finished job stays visible (no accounting)
    gpus: int = 2                    # fake GPUs, at most len(FAKE_GPU_FILES)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    memory_mb: int = field(default_factory=lambda: int(_memory_mb() * 0.8))
    root: Path | None = None
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _log_handles: list = field(default_factory=list)
    _own_root: bool = False

    # --- layout -----------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment that points SLURM commands (and jobs, through --export=ALL) at this cluster."""
        env = dict(os.environ, SLURM_CONF=str(self.conf),
                   PATH=f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
        for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_")) and k != "SLURM_CONF"]:
            del env[key]  # not inside someone else's job
        return env

    def _write_config(self) -> None:
        r = self.root
        for sub in ("bin", "etc", "state", "spool", "log", "run", "munge", "munge-key"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)                  # munged wants o+x on every folder above its socket
        os.chmod(r / "munge", 0o755)
        os.chmod(r / "munge-key", 0o700)
        key = r / "munge-key" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = _free_port()
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        self.conf.write_text("\n".join([
            "ClusterName=uncerdatest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge' / 'munge.socket'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            f"MinJobAge={self.min_job_age}",
            "ReturnToService=2",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "GresTypes=gpu",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            f"PlugStackConfig={r / 'etc' / 'plugstack.conf'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb}{gres} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        (r / "etc" / "plugstack.conf").write_text("")
        # Inside a job, the Snakemake job step runs its command with `srun` after dropping every
        # SLURM_* variable but the job's identity, SLURM_CONF included: a real cluster's srun finds
        # /etc/slurm/slurm.conf, this one's finds its config through this wrapper (first on PATH).
        srun = r / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{shutil.which("srun") or "/usr/bin/srun"}" "$@"\n')
        os.chmod(srun, 0o755)
        # Fake GPUs: slurmd only needs a device file per GPU to hand out its index.
        (r / "etc" / "gres.conf").write_text("".join(
            f"NodeName=localhost Name=gpu File={device}\n" for device in FAKE_GPU_FILES[: self.gpus]))

    # --- life cycle -------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "wb")
        self._log_handles.append(out)
        # Its own session: a Ctrl-C meant for pytest reaches the daemons only through stop().
        self._procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_parent)

    def start(self, timeout: float = 90) -> "SlurmCluster":
        if self.root is None:
            # Not under pytest's tmp folder: munged needs o+x on every folder above its socket.
            self.root = Path(tempfile.mkdtemp(prefix="uncerda-slurm-"))
            self._own_root = True
        if not 0 <= self.gpus <= len(FAKE_GPU_FILES):
            raise ClusterError(f"at most {len(FAKE_GPU_FILES)} fake GPUs")
        self._write_config()
        r = self.root
        try:
            self._spawn("munged", ["/usr/sbin/munged", "--foreground", "--force",
                                   f"--socket={r / 'munge' / 'munge.socket'}",
                                   f"--key-file={r / 'munge-key' / 'munge.key'}",
                                   f"--pid-file={r / 'run' / 'munged.pid'}",
                                   f"--seed-file={r / 'run' / 'munged.seed'}",
                                   f"--log-file={r / 'log' / 'munged.log'}"])
            self._wait(lambda: (r / "munge" / "munge.socket").exists(), timeout, "munged to create its socket")
            self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._wait(lambda: "UP" in self._run(["scontrol", "ping"], check=False).stdout, timeout,
                       "slurmctld to answer")
            self._spawn("slurmd", ["/usr/sbin/slurmd", "-D", "-N", "localhost", "-f", str(self.conf)])
            self._wait(lambda: self.node_state() in ("idle", "mixed", "allocated"), timeout, "the node to be idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise ClusterError(f"{name} exited ({proc.returncode}) while waiting for {what}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")

    def stop(self) -> None:
        """Cancel this cluster's jobs, end the daemons it started (by PID) and remove its folder."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            self._run(["scancel", "--quiet", "--partition=debug"], check=False)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.squeue(states="RUNNING,PENDING,COMPLETING"):
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            # Our own child, whose PID its pid file records; a pid file naming another process
            # (it should not happen) is left alone rather than trusted.
            pid_file = self.root / "run" / f"{name}.pid"
            recorded = pid_file.read_text().strip() if pid_file.exists() else ""
            if recorded and recorded != str(proc.pid):
                print(f"warning: {pid_file} names {recorded}, not {name}'s {proc.pid}; ending {proc.pid} only")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for fh in self._log_handles:
            fh.close()
        self._log_handles.clear()
        if self._own_root and os.environ.get("UNCERDA_SLURM_KEEP") != "1":
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- queries ----------------------------------------------------------
    def _run(self, cmd: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            if check:
                raise ClusterError(f"`{' '.join(cmd)}` did not answer within {timeout} s") from err
            return subprocess.CompletedProcess(cmd, 124, "", "timeout")
        if check and proc.returncode != 0:
            raise ClusterError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def node_state(self) -> str:
        proc = self._run(["sinfo", "-h", "-N", "-o", "%T"], check=False)
        return proc.stdout.strip().lower() if proc.returncode == 0 else ""

    def squeue(self, states: str = "all") -> list[dict[str, str]]:
        """Jobs slurmctld still knows: id, name, state, comment (Snakemake puts the rule there)."""
        proc = self._run(["squeue", "-h", f"--states={states}", "-o", "%i|%j|%T|%k"], check=False)
        jobs = []
        for line in proc.stdout.splitlines():
            parts = line.split("|", 3)
            if len(parts) == 4:
                jobs.append(dict(zip(("id", "name", "state", "comment"), parts)))
        return jobs

    def show_job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -d`` as key/value pairs (the values that sbatch was given and got)."""
        text = self._run(["scontrol", "show", "job", "-d", "-o", str(job_id)]).stdout
        fields: dict[str, str] = {}
        for token in text.split():
            if "=" in token:
                key, value = token.split("=", 1)
                fields.setdefault(key, value)
        return fields

    def cancel(self, job_id: str) -> None:
        self._run(["scancel", str(job_id)])

    def logs(self, lines: int = 30) -> str:
        """The tail of every daemon log, for failure messages."""
        if self.root is None:
            return ""
        out = []
        for path in sorted((self.root / "log").glob("*")):
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)
