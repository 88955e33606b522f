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
