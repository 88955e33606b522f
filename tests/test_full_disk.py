"""A full disk: every writer stops with an error naming the path and the space, and leaves no temporary.

On a small tmpfs where the tests may mount one (root on Linux); otherwise the
mounted tests are skipped and the low-level write is made to fail with ENOSPC.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from uncerda_core import artifacts
from uncerda_core.artifacts import UncerdaError
from uncerda_core.cli import main
from uncerda_core.config import load_config
from uncerda_core.models import build_model
from uncerda_core.train.checkpoint import save_checkpoint
from fixtures_data import write_cityscapes_tree

REPO = Path(__file__).resolve().parent.parent


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if not sys.platform.startswith("linux"):
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    return proc.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs, unmounted afterwards; the test is skipped where mounting is not permitted."""
    folder = tmp_path / "disk"
    if not _mount_tmpfs(folder, "512k"):
        pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)   # lazy: a test may still hold a file there


def _nothing_left(folder: Path) -> None:
    assert list(folder.iterdir()) == [], sorted(p.name for p in folder.iterdir())


def _space_message(msg: str, path: Path) -> None:
    assert f"{path}: no space left on the disk" in msg and "free" in msg and "move results_dir" in msg, msg


# --------------------------------------------------------------------------- without a mount

def test_enospc_at_the_low_level_write_names_the_path_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out" / "table.csv"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UncerdaError) as info:
        with artifacts.atomic_path(target, size_hint=3 << 20) as tmp:
            tmp.write_bytes(b"x" * 1000)
            full()
    _space_message(str(info.value), target)
    assert "needs about 3.0 MiB" in str(info.value)
    _nothing_left(target.parent)
    folder = tmp_path / "pngs"
    with pytest.raises(UncerdaError) as info:
        with artifacts.atomic_dir(folder) as tmp:
            (tmp / "a.png").write_bytes(b"x" * 10)
            full()
    _space_message(str(info.value), folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # an ordinary error stays what it was
    with pytest.raises(ValueError):
        with artifacts.atomic_path(target) as tmp:
            raise ValueError("not about space")


def test_a_dump_that_cannot_fit_is_refused_before_any_work(tmp_path, monkeypatch):
    from uncerda_core.uncertainty.maps import MapsWriter

    class Usage:
        total, used, free = 1 << 30, (1 << 30) - 1000, 1000

    monkeypatch.setattr(artifacts.shutil, "disk_usage", lambda path: Usage)
    path = tmp_path / "m.h5"
    with pytest.raises(UncerdaError, match=r"m\.h5: the maps file needs at least 12\.0 KiB, the disk of .* has "
                                           r"1000 B free"):
        with MapsWriter(path, 3, 32, 32, 3, ["a", "b", "c"]):
            raise AssertionError("the writer must refuse before it starts")
    _nothing_left(tmp_path)


# --------------------------------------------------------------------------- on a small tmpfs

def test_checkpoint_on_a_full_disk(small_disk):
    path = small_disk / "checkpoint.pt"
    state = {"model": {"w": torch.zeros(1 << 18)}}        # 1 MiB of float32 on a 512 KiB disk
    with pytest.raises(UncerdaError) as info:
        save_checkpoint(path, state)
    _space_message(str(info.value), path)
    assert "needs about 1.0 MiB" in str(info.value)
    _nothing_left(small_disk)


_WRITE_MAPS = """
import sys
import numpy as np
from uncerda_core.artifacts import UncerdaError
from uncerda_core.uncertainty.maps import MapsWriter
rng = np.random.default_rng(0)
try:
    # compressed floats: no size check before the work, the disk fills while the images are written
    with MapsWriter(sys.argv[1], 20, 128, 256, 19, [str(k) for k in range(19)], compress_floats=True) as w:
        for i in range(20):
            w.write(i, f"im{i}", rng.integers(0, 19, (128, 256)).astype(np.uint8),
                    rng.random((128, 256)).astype(np.float16), rng.random((128, 256)).astype(np.float16))
except UncerdaError as err:
    print("ERROR", err)
    sys.exit(2)
"""


def test_maps_writer_on_a_disk_that_fills_up(small_disk):
    """Before: a wall of h5py errors and a segmentation fault (exit 139) at exit."""
    path = small_disk / "maps.h5"
    proc = subprocess.run([sys.executable, "-c", _WRITE_MAPS, str(path)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    _space_message(proc.stdout, path)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    _nothing_left(small_disk)


def test_dump_command_on_a_full_disk(small_disk, tmp_path):
    root = tmp_path / "data"
    write_cityscapes_tree(root / "cs", {"val": 12}, size=(256, 128))
    assert main(["index", "--dataset", "cityscapes", "--root", str(root / "cs"), "--split", "val",
                 "--out", str(root / "val.csv"), "--workers", "1"]) == 0
    preset = yaml.safe_load((REPO / "workflow" / "presets" / "smoke.yaml").read_text())
    (root / "c.yaml").write_text(yaml.safe_dump({"device": "cpu", "threads": 1, "model": preset["model"]}))
    config = load_config(root / "c.yaml", check_paths=False)
    torch.save({"model": build_model(config["model"]).state_dict(), "model_config": config["model"],
                "config": config, "provenance": {"stage": "test"}}, root / "checkpoint.pt")
    out = small_disk / "maps" / "m.h5"
    proc = subprocess.run([sys.executable, "-m", "uncerda_core", "dump", "--config", str(root / "c.yaml"),
                           "--checkpoint", str(root / "checkpoint.pt"), "--index", str(root / "val.csv"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert f"{out}: the maps file needs at least 1.5 MiB" in proc.stderr, proc.stderr[-3000:]
    assert not out.exists() and not [p for p in small_disk.rglob("*") if p.is_file()]
