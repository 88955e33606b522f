"""Writing artifacts safely and recording where they came from.

Every file a stage produces is written to a temporary name beside its final
path and renamed into place only when complete, so a killed job never leaves
a file that looks finished. Every artifact carries a provenance record: the
resolved config, code version, library versions, seed and input hashes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

# UncerdaError lives in errors.py (the pure modules raise it without importing I/O); it stays importable from
# here for the tests and the workflow, which import it from artifacts.
from uncerda_core.errors import UncerdaError  # noqa: F401

if TYPE_CHECKING:   # pandas only where a table is read
    import pandas as pd

PROVENANCE_SUFFIX = ".provenance.json"


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; artifacts get the usual
# permissions of a new file or folder instead (0666/0777 less the umask).
_UMASK = _current_umask()


# Below this much free space a failed write is taken for a full disk: a write that runs out of space
# fills the file system to the last block before it fails, whatever the library's wording (torch.save
# says "unexpected pos", h5py "file write failed").
NEARLY_FULL_BYTES = 1 << 20
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` (from a write into ``folder``) means the disk or quota is full."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
        return True
    text = str(exc)
    if "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text:
        return True   # h5py and torch wrap the system error in their own
    if isinstance(exc, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
        except OSError:
            return False
    return False


def no_space_error(path: Path, written: int, size_hint: int | None, exc: BaseException) -> UncerdaError:
    """The error for a write of ``path`` that ran out of space; the partial file is already removed."""
    try:
        usage = shutil.disk_usage(path.parent)
        free = f"{_size(usage.free)} free of {_size(usage.total)}"
    except OSError:
        free = "free space unknown"
    needed = (f"about {_size(size_hint)}" if size_hint else
              f"more than the {_size(written)} written" if written else "more than was free")
    return UncerdaError(f"{path}: no space left on the disk (or quota) of {path.parent}: this file needs {needed}, "
                        f"{free} now that the partial file is removed ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}). Free space there, or move results_dir "
                        "to a larger disk, then rerun")


def require_free_space(path: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse before any work when the disk of ``path`` has less than ``needed`` bytes free."""
    path = Path(path)
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UncerdaError(f"{path}: {what} needs at least {_size(needed)}, the disk of {folder} has {_size(free)} "
                           "free. Free space there, or move results_dir to a larger disk, then rerun")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None,
                size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    ``suffix`` keeps the extension (some writers infer the format from it).
    A write that runs out of space raises :class:`UncerdaError` naming the
    full disk, the space free and ``size_hint`` (the bytes the file needs, when
    the writer knows them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as exc:
        if _out_of_space(exc, path.parent):
            raise no_space_error(path, 0, size_hint, exc) from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException as exc:
        full = not isinstance(exc, UncerdaError) and _out_of_space(exc, path.parent)
        written = tmp_path.stat().st_size if full and tmp_path.exists() else 0
        tmp_path.unlink(missing_ok=True)
        if full:
            raise no_space_error(path, written, size_hint, exc) from exc
        raise


def remove_stale_temporaries(*paths: str | os.PathLike | None) -> None:
    """Remove the temporaries :func:`atomic_path` and :func:`atomic_dir` left beside ``paths`` when a run was killed.

    They are never complete (a finished write renames its file or folder), so a
    rerun may drop them. Only the stage that writes ``paths`` calls this, at
    its start: the workflow never runs two jobs for one output at once, and a
    training job holds a lock on its output first (``train/guards.py``).
    """
    for path in paths:
        if path is not None:
            path = Path(path)
            for stale in path.parent.glob(f".{path.name}.*.tmp*"):
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` on success.

    A write that runs out of space raises :class:`UncerdaError` naming the full disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as exc:
        full = not isinstance(exc, UncerdaError) and _out_of_space(exc, path.parent)
        written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) if full else 0
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise no_space_error(path, written, None, exc) from exc
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


_CODE_VERSION: dict[str, Any] | None = None


def code_version() -> dict[str, Any]:
    """Package version, git commit (when run from a checkout) and library versions."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        from uncerda_core import __version__
        libs = {}
        for name in ("torch", "torchvision", "numpy", "h5py", "PIL", "sklearn", "pandas", "cv2"):
            module = sys.modules.get(name)
            if module is not None:
                libs[name] = str(getattr(module, "__version__", "unknown"))
        _CODE_VERSION = {
            "package": __version__,
            "git_commit": _git_commit(),
            "python": platform.python_version(),
            "libraries": libs,
        }
    return dict(_CODE_VERSION)


def provenance(stage: str, config: dict | None = None, seed: int | None = None,
               inputs: dict[str, str | os.PathLike] | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A provenance record for an artifact made by ``stage``.

    ``inputs`` maps a role ("checkpoint", "weights", ...) to a file whose path
    and sha256 are recorded, so the artifact can be traced to what it was made from.
    """
    record: dict[str, Any] = {
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "code": code_version(),
        "seed": seed,
        "inputs": {role: {"path": str(p), "sha256": file_sha256(p)} for role, p in (inputs or {}).items()
                   if p is not None and Path(p).is_file()},
        "config": config,
    }
    if extra:
        record.update(extra)
    return record


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the provenance of a plain file (CSV, PNG folder, ...) is written."""
    path = Path(path)
    if path.is_dir():
        return path / "provenance.json"
    return path.with_name(path.name + PROVENANCE_SUFFIX)


def write_sidecar(path: str | os.PathLike, record: dict[str, Any]) -> None:
    write_json(sidecar_path(path), record)


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UncerdaError(f"{path}: unreadable {what} ({exc}); the file is truncated or corrupt") from exc


def read_csv(path: str | os.PathLike, what: str) -> pd.DataFrame:
    """A CSV table; a missing or unreadable file is an error naming it and ``what`` it should hold."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: {what} not found")
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise UncerdaError(f"{path}: cannot read the {what} ({err})") from None


def read_json(path: str | os.PathLike, what: str) -> dict:
    """A JSON file; a missing or invalid file is an error naming it and ``what`` it should hold."""
    path = Path(path)
    if not path.is_file():
        raise UncerdaError(f"{path}: {what} not found")
    return _load_json(path, what)


def describe_load_error(exc: BaseException) -> str:
    """One line on why ``torch.load(..., weights_only=True)`` failed.

    A file holding pickled objects other than tensors and plain containers
    would run code when unpickled (a pickle names a function to call); torch's
    message suggests loading it unsafely, this says it was refused and names
    the function. torch words it "Unsupported global: GLOBAL x.y was not an
    allowed global" or "Trying to load unsupported GLOBAL x.y whose module x
    is blocked" depending on the version and the function.
    """
    text = str(exc)
    found = re.search(r"unsupported global:?\s*(?:global\s+)?([\w.]+)", text, flags=re.IGNORECASE)
    if found:
        return (f"refused: loading it would run code (the pickle calls {found.group(1)}); weights-only loading "
                "accepts tensors and plain containers only. If you trust the file, load it yourself with "
                "torch.load(weights_only=False) and save its state dict")
    if text.startswith("Weights only load failed"):
        return "not a torch checkpoint, or a truncated or corrupt one"
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}"


def torch_load_weights_only(path: str | os.PathLike, what: str = "checkpoint", hint: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; any failure names the file.

    Files carrying arbitrary pickled objects are refused, never executed.
    """
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise UncerdaError(f"{path}: not a loadable {what} ({describe_load_error(exc)}){hint}") from exc

def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """The provenance of any artifact: checkpoint, HDF5 maps, JSON, or a file with a sidecar.

    A truncated, corrupt or unsafe file (a checkpoint that needs more than
    weights-only unpickling) raises :class:`UncerdaError` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise UncerdaError(f"{path}: no such file or directory")
    if path.is_dir() or sidecar_path(path).exists():
        side = sidecar_path(path)
        if not side.exists():
            raise UncerdaError(f"{path}: no provenance record ({side} is missing)")
        return _load_json(side, "provenance record")
    if path.suffix in (".h5", ".hdf5"):
        import h5py
        try:
            with h5py.File(path, "r") as fh:
                if "provenance" not in fh.attrs:
                    raise UncerdaError(f"{path}: HDF5 file without a 'provenance' attribute")
                text = fh.attrs["provenance"]
        except OSError as exc:
            raise UncerdaError(f"{path}: not a readable HDF5 file ({exc}); truncated or corrupt?") from exc
        try:
            return json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise UncerdaError(f"{path}: the 'provenance' attribute is not JSON ({exc})") from exc
    if path.suffix in (".pt", ".pth"):
        state = torch_load_weights_only(path)
        if not isinstance(state, dict) or "provenance" not in state:
            raise UncerdaError(f"{path}: checkpoint without a provenance record (not written by uncerda?)")
        return state["provenance"]
    if path.suffix == ".json":
        obj = _load_json(path, "JSON file")
        if isinstance(obj, dict) and "provenance" in obj:
            return obj["provenance"]
    raise UncerdaError(f"{path}: no provenance record found (no sidecar {sidecar_path(path).name})")
