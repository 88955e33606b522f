"""Running the workflow in a temporary working directory, for the tests.

``snakemake(workdir, *args)`` runs ``python -m snakemake -s <repo>/Snakefile
--directory <workdir>``; demo data roots in the configs are relative, so they
land in the working directory. ``smoke_run(tmp_path_factory)`` runs the smoke
preset once per test session and hands every caller the same finished run
(the ``smoke`` fixture of ``conftest.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "Snakefile"
SMOKE = REPO / "workflow" / "presets" / "smoke.yaml"
SMOKE_TIMEOUT = 1500                           # seconds; ~70 s on an idle 2-core machine


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), *map(str, args)]


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir`` (created if needed); stdout and stderr captured as text."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=workdir)


def smoke_args(workdir: Path, *extra: str) -> list[str]:
    """The smoke preset with every result under ``workdir``."""
    return ["--cores", "2", "--configfile", str(SMOKE), "--config", f"results_dir={workdir / 'results'}", *extra]


@dataclass(frozen=True)
class SmokeRun:
    workdir: Path
    results: Path          # <workdir>/results/smoke
    seed_dir: Path         # <results>/seed0
    process: subprocess.CompletedProcess
    seconds: float

    def eval_jsons(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted((self.seed_dir / "eval").glob("*.json"))}


_RUNS: dict[str, SmokeRun] = {}


def run_smoke(workdir: Path, *extra: str) -> SmokeRun:
    start = time.monotonic()
    proc = snakemake(workdir, *smoke_args(workdir, *extra), timeout=SMOKE_TIMEOUT)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise AssertionError(f"smoke run in {workdir} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    results = workdir / "results" / "smoke"
    return SmokeRun(workdir, results, results / "seed0", proc, seconds)


def smoke_run(tmp_path_factory, key: str = "main") -> SmokeRun:
    """The smoke preset run end to end once per session (per ``key``); later calls reuse it."""
    if key not in _RUNS:
        _RUNS[key] = run_smoke(tmp_path_factory.mktemp(f"smoke_{key}"))
    return _RUNS[key]


def metrics_without_provenance(path: Path) -> dict:
    """A metrics JSON minus its provenance record (timestamps, host, paths)."""
    data = json.loads(path.read_text())
    data.pop("provenance", None)
    return data


def temporary_files(root: Path) -> list[Path]:
    """Files or folders an atomic writer left behind (``.<name>.<random>.tmp*``)."""
    return [p for p in root.rglob(".*") if ".tmp" in p.name and ".snakemake" not in p.parts]


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> bool:
    """Poll for ``path`` every 20 ms while ``process`` runs; True when it appeared."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if process.poll() is not None:
            return path.exists()
        time.sleep(0.02)
    return False


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group of ``process`` (started with ``start_new_session=True``)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)
