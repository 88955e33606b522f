from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Real files in native layouts, beside the checkout when present (never in the repo).
REAL_SAMPLES = Path(os.environ.get("UNCERDA_REAL_SAMPLES", REPO.parent / "shared" / "real-samples"))


@pytest.fixture
def real_samples() -> Path:
    if not REAL_SAMPLES.is_dir():
        pytest.skip(f"real samples not available at {REAL_SAMPLES}")
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """The smoke preset run end to end once per session (``workflow_helpers.smoke_run``): its `all` builds
    every stage of the main seed and every report figure; tests read it, or run dry or extra targets in it."""
    from workflow_helpers import smoke_run
    return smoke_run(tmp_path_factory)


@pytest.fixture(scope="session", autouse=True)
def slurm_background(request, tmp_path_factory):
    """The SLURM test cluster and test_slurm.py's long runs, started at the session's first test when a
    test marked ``slurm`` is selected, so that their waiting on SLURM's status polling overlaps the other
    tests (``slurm_runs.SlurmBackground``); nothing when none is selected."""
    selected = {item.originalname for item in request.session.items if item.get_closest_marker("slurm")}
    if not selected:
        yield None
        return
    from slurm_runs import SlurmBackground
    background = SlurmBackground(tmp_path_factory, selected)
    background.start()
    try:
        yield background
    finally:
        background.close()
