"""Bad input at the command level: every error names the problem and the file, exits 2,
and nothing downstream is written.

The data layer's own checks are tested in test_readers.py, test_index.py,
test_weights.py and test_maps.py; here the same problems go through
``uncerda <command>`` (in process through ``cli.main``, and a few through
``python -m uncerda_core``), where a user meets them.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from fixtures_data import (cityscapes_paths, truncate_file, write_cityscapes_tree, write_gray_label,
                           write_gta5_tree, write_palette_label, write_synthia_label, write_synthia_tree)
from uncerda_core.cli import main
from uncerda_core.config import load_config
from uncerda_core.data.index import read_index
from uncerda_core.data.labels import CLASS_NAMES
from uncerda_core.models import build_model
from uncerda_core.runtime import load_checkpoint
from uncerda_core.uncertainty.maps import MapsWriter

REPO = Path(__file__).resolve().parent.parent


def _cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    return code, err


def _error(err: str, command: str) -> str:
    """The text after ``uncerda <command>: error:`` (progress bars may precede it)."""
    marker = f"uncerda {command}: error:"
    assert marker in err, err
    return err.split(marker, 1)[1]


def _no_leftovers(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*") if ".tmp" in p.name], "temporary files left behind"


# --------------------------------------------------------------------------- data roots and splits

def test_missing_data_root_through_python_m(tmp_path):
    missing, out = tmp_path / "no_such_root", tmp_path / "idx" / "source.csv"
    proc = subprocess.run([sys.executable, "-m", "uncerda_core", "index", "--dataset", "gta5", "--root",
                           str(missing), "--split", "all", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "uncerda index: error:" in proc.stderr and str(missing) in proc.stderr
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_empty_split(tmp_path, capsys):
    (tmp_path / "gta" / "images").mkdir(parents=True)
    (tmp_path / "gta" / "labels").mkdir()
    out = tmp_path / "source.csv"
    code, err = _cli(capsys, "index", "--dataset", "gta5", "--root", tmp_path / "gta", "--split", "all",
                     "--out", out)
    assert code == 2
    msg = _error(err, "index")
    assert str(tmp_path / "gta" / "images") in msg and "empty" in msg
    # Cityscapes: a val split folder without any image.
    (tmp_path / "cs" / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    code, err = _cli(capsys, "index", "--dataset", "cityscapes", "--root", tmp_path / "cs", "--split", "val",
                     "--out", out)
    assert code == 2 and "leftImg8bit" in _error(err, "index") and "_leftImg8bit.png" in err
    assert not out.exists()


def _bad_tree(tmp_path: Path, problem: str) -> tuple[str, Path, str, list[str]]:
    """A small tree with one problem: (dataset, root, split, strings the error must contain)."""
    if problem == "truncated_png":
        root = tmp_path / "gta"
        write_gta5_tree(root, 3, size=(16, 8))
        truncate_file(root / "images" / "00002.png", 0.5)
        return "gta5", root, "all", [str(root / "images" / "00002.png"), "truncated"]
    if problem == "label_id":
        root = tmp_path / "gta"
        write_gta5_tree(root, 3, size=(16, 8))
        ids = np.full((8, 16), 7)
        ids[0, 0] = 40                                          # no Cityscapes label id is 40
        write_palette_label(root / "labels" / "00003.png", ids)
        return "gta5", root, "all", [str(root / "labels" / "00003.png"), "label ids 40"]
    if problem == "synthia_8bit":
        root = tmp_path / "synthia"
        write_synthia_tree(root, 2, size=(16, 8))
        write_synthia_label(root / "GT" / "LABELS" / "0000001.png", np.full((8, 16), 3), bits=8)
        return "synthia", root, "all", [str(root / "GT" / "LABELS" / "0000001.png"), "8-bit", "16-bit"]
    if problem == "cityscapes_size":
        root = tmp_path / "cs"
        stems = write_cityscapes_tree(root, {"val": 2}, size=(16, 8))["val"]
        _, label = cityscapes_paths(root, "val", stems[1])
        write_gray_label(label, np.full((4, 8), 7))
        return "cityscapes", root, "val", [str(label), "8x4", "16x8"]
    raise AssertionError(problem)


@pytest.mark.parametrize("problem", ["truncated_png", "label_id", "synthia_8bit", "cityscapes_size"])
def test_index_command_names_the_bad_file(tmp_path, capsys, problem):
    dataset, root, split, expected = _bad_tree(tmp_path, problem)
    out = tmp_path / "out" / "index.csv"
    code, err = _cli(capsys, "index", "--dataset", dataset, "--root", root, "--split", split, "--out", out,
                     "--workers", 1)
    assert code == 2
    msg = _error(err, "index")
    assert "1 problem(s)" in msg
    for text in expected:
        assert text in msg
    assert not out.exists() and not Path(str(out) + ".provenance.json").exists()
    _no_leftovers(tmp_path)


def test_gta5_label_of_another_size_is_resized_and_counted(tmp_path, capsys):
    root = tmp_path / "gta"
    write_gta5_tree(root, 3, size=(16, 8), label_sizes={"00001": (15, 9)})
    out = tmp_path / "index.csv"
    assert main(["index", "--dataset", "gta5", "--root", str(root), "--split", "all", "--out", str(out),
                 "--workers", "1"]) == 0
    assert "3 images, 3 labelled, 1 labels resized to their image" in capsys.readouterr().out
    from uncerda_core.data.index import read_index
    table = read_index(out)
    assert table["label_resized"].tolist() == [True, False, False]
    # Training reads that label at its image's size.
    from uncerda_core.data.datasets import ImageSettings, SegmentationDataset
    assert SegmentationDataset("gta5", table, ImageSettings())[0]["label"].shape == (8, 16)


# --------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def target_val(tmp_path_factory):
    """A Cityscapes val tree (2 images of 32x32) and its index."""
    root = tmp_path_factory.mktemp("cs")
    write_cityscapes_tree(root / "cs", {"val": 2}, size=(32, 32))
    assert main(["index", "--dataset", "cityscapes", "--root", str(root / "cs"), "--split", "val",
                 "--out", str(root / "val.csv"), "--workers", "1"]) == 0
    return root / "val.csv"


def _config_file(path: Path, **model) -> Path:
    """A full config whose model section is the smoke model with ``model`` overrides
    (for the ResNet-101: its own section, since the small network's shape keys are refused there)."""
    preset = yaml.safe_load((REPO / "workflow" / "presets" / "smoke.yaml").read_text())
    base = {} if model.get("arch") == "deeplabv2_resnet101" else preset["model"]
    cfg = {"device": "cpu", "threads": 1, "model": {**base, **model}}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """An uncerda-style checkpoint of the smoke model (width 8), untrained."""
    root = tmp_path_factory.mktemp("ckpt")
    config = load_config(_config_file(root / "c.yaml"), check_paths=False)
    path = root / "checkpoint.pt"
    torch.save({"model": build_model(config["model"]).state_dict(), "model_config": config["model"],
                "config": config, "provenance": {"stage": "test"}}, path)
    return path


@pytest.mark.parametrize("command", ["evaluate", "dump"])
def test_checkpoint_of_another_architecture(tmp_path, capsys, small_checkpoint, target_val, command):
    wide = _config_file(tmp_path / "wide.yaml", width=16)
    resnet = _config_file(tmp_path / "resnet.yaml", arch="deeplabv2_resnet101", init=str(small_checkpoint))
    out = tmp_path / ("m.json" if command == "evaluate" else "m.h5")
    for cfg, expected in [(wide, "width: checkpoint 8 vs config 16"),
                          (resnet, "arch: checkpoint 'deeplabv2_small' vs config 'deeplabv2_resnet101'")]:
        code, err = _cli(capsys, command, "--config", cfg, "--checkpoint", small_checkpoint,
                         "--index", target_val, "--out", out)
        assert code == 2
        msg = _error(err, command)
        assert str(small_checkpoint) in msg and "architecture differs" in msg and expected in msg
        assert not out.exists()
    _no_leftovers(tmp_path)


class _Touch:
    """Unpickling this runs ``Path.touch(marker)``: what a weights-only load must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


class _System:
    """Unpickling this runs a shell command: torch words its refusal "unsupported GLOBAL ... is blocked"."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["list", "model_not_a_dict", "pickled_object", "pickled_call", "truncated",
                                  "garbage"])
def test_checkpoint_that_is_not_a_state_dict(tmp_path, capsys, small_checkpoint, target_val, kind):
    path, marker = tmp_path / "bad.pt", tmp_path / "MARKER"
    expected = {"list": "no 'model' entry", "model_not_a_dict": "'model' entry is a list",
                "pickled_object": "not a loadable checkpoint", "pickled_call": "not a loadable checkpoint",
                "truncated": "not a loadable checkpoint",
                "garbage": "not a loadable checkpoint"}[kind]
    if kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "model_not_a_dict":
        state = torch.load(small_checkpoint, weights_only=True)
        torch.save({**state, "model": [1, 2]}, path)
    elif kind == "pickled_object":
        torch.save({"model": {"w": torch.zeros(1)}, "extra": _Touch(marker)}, path)
    elif kind == "pickled_call":
        torch.save({"model": {"w": torch.zeros(1)}, "extra": _System(marker)}, path)
    elif kind == "truncated":
        path.write_bytes(small_checkpoint.read_bytes()[:4096])
    else:
        path.write_bytes(b"not a checkpoint at all\n")
    cfg = _config_file(tmp_path / "c.yaml")
    for command, extra in [("evaluate", ["--config", cfg, "--index", target_val, "--out", tmp_path / "m.json"]),
                           ("dump", ["--config", cfg, "--index", target_val, "--out", tmp_path / "m.h5"]),
                           ("provenance", [])]:
        if command == "provenance" and kind == "model_not_a_dict":
            continue                          # its provenance record is intact and readable
        args = [command, path] if command == "provenance" else [command, "--checkpoint", path, *extra]
        code, err = _cli(capsys, *args)
        assert code == 2, (command, err)
        msg = _error(err, command)
        assert str(path) in msg
        if command != "provenance" or kind in ("pickled_object", "pickled_call", "truncated", "garbage"):
            assert expected in msg, (command, msg)
        if kind.startswith("pickled"):
            assert "refused: loading it would run code (the pickle calls " in msg, msg
            assert "truncated" not in msg and "corrupt" not in msg
    assert not marker.exists(), "a pickled object was executed"
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "m.h5").exists()
    _no_leftovers(tmp_path)


def test_dump_without_config_needs_one_recorded(tmp_path, capsys, small_checkpoint, target_val):
    bare = tmp_path / "bare.pt"
    state = torch.load(small_checkpoint, weights_only=True)
    del state["config"]
    torch.save(state, bare)
    out = tmp_path / "m.h5"
    code, err = _cli(capsys, "dump", "--checkpoint", bare, "--index", target_val, "--out", out)
    assert code == 2 and "records no config" in _error(err, "dump") and str(bare) in err
    assert not out.exists()


def test_dump_without_config_uses_the_recorded_one_and_reads_the_checkpoint_once(
        tmp_path, capsys, small_checkpoint, target_val, monkeypatch):
    import uncerda_core.inference as inference
    import uncerda_core.uncertainty.dump as dump

    loads = []

    def counting_load(path, *args, **kwargs):
        loads.append(Path(path))
        return load_checkpoint(path, *args, **kwargs)

    monkeypatch.setattr(dump, "load_checkpoint", counting_load)
    monkeypatch.setattr(inference, "load_checkpoint", counting_load)
    out = tmp_path / "m.h5"
    code, err = _cli(capsys, "dump", "--checkpoint", small_checkpoint, "--index", target_val, "--out", out)
    assert code == 0, err
    assert loads == [small_checkpoint]
    with h5py.File(out, "r") as fh:
        assert fh["entropy"].shape[0] == len(read_index(target_val))


@pytest.mark.parametrize("command", ["evaluate", "dump"])
def test_image_truncated_after_indexing(tmp_path, capsys, small_checkpoint, command):
    root = tmp_path / "cs"
    stems = write_cityscapes_tree(root, {"val": 2}, size=(32, 32))["val"]
    index = tmp_path / "val.csv"
    assert main(["index", "--dataset", "cityscapes", "--root", str(root), "--split", "val", "--out", str(index),
                 "--workers", "1"]) == 0
    image, _ = cityscapes_paths(root, "val", stems[1])
    truncate_file(image, 0.5)
    out = tmp_path / "out" / ("m.json" if command == "evaluate" else "m.h5")
    code, err = _cli(capsys, command, "--config", _config_file(tmp_path / "c.yaml"), "--checkpoint",
                     small_checkpoint, "--index", index, "--out", out)
    assert code == 2
    msg = _error(err, command)
    assert str(image) in msg and "truncated" in msg
    assert not out.exists()
    _no_leftovers(tmp_path)


def _poisoned(small_checkpoint: Path, path: Path, kind: str) -> Path:
    """``nan_weights``: one weight tensor NaN. ``overflow``: finite weights whose logits overflow to inf."""
    state = torch.load(small_checkpoint, weights_only=True)
    model = dict(state["model"])
    if kind == "nan_weights":
        model["head_main.branches.0.weight"] = torch.full_like(model["head_main.branches.0.weight"], float("nan"))
    else:
        for key in [k for k in model if k.startswith("head_main.branches") and k.endswith("weight")]:
            model[key] = model[key].sign() * 3e38
    torch.save({**state, "model": model}, path)
    return path


@pytest.mark.parametrize("kind", ["nan_weights", "overflow"])
@pytest.mark.parametrize("command", ["dump", "evaluate", "adabn"])
def test_non_finite_weights_or_logits_stop_the_stage(tmp_path, capsys, small_checkpoint, target_val, kind, command):
    """Today a NaN checkpoint dumps as entropy 0 / argmax 18 everywhere and evaluates to a number."""
    bad = _poisoned(small_checkpoint, tmp_path / "bad.pt", kind)
    out = tmp_path / "out" / {"dump": "m.h5", "evaluate": "m.json", "adabn": "adabn.pt"}[command]
    io = {"dump": ["--index", target_val], "evaluate": ["--index", target_val],
          "adabn": ["--target-index", target_val]}[command]
    code, err = _cli(capsys, command, "--config", _config_file(tmp_path / "c.yaml"), "--checkpoint", bad, *io,
                     "--out", out)
    assert code == 2, err
    msg = _error(err, command)
    assert str(bad) in msg and "non-finite" in msg
    if kind == "nan_weights":
        assert "head_main.branches.0.weight" in msg
    else:
        assert "logits" in msg
    assert not out.exists()
    _no_leftovers(tmp_path)


# --------------------------------------------------------------------------- maps files

def _maps(path: Path, classes: int, n: int = 3) -> Path:
    names = list(CLASS_NAMES) if classes == 19 else [f"class{i}" for i in range(classes)]
    with MapsWriter(path, n, 8, 8, classes, names) as writer:
        for i in range(n):
            rng = np.random.default_rng(i)
            writer.write(i, f"img{i}", rng.integers(0, classes, (8, 8)).astype(np.uint8),
                         rng.random((8, 8)).astype(np.float16), rng.random((8, 8)).astype(np.float16))
    return path


@pytest.mark.parametrize("command", ["rank", "pseudo-labels", "provenance"])
def test_truncated_maps_file(tmp_path, capsys, command):
    good = _maps(tmp_path / "good.h5", 19)
    bad = tmp_path / "maps" / "aa.h5"
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    outs = {"rank": tmp_path / "rank.csv", "pseudo-labels": tmp_path / "pseudo"}
    args = {"rank": ["--maps", bad, "--k", 7, "--out", outs["rank"]],
            "pseudo-labels": ["--maps", bad, "--method", "argmax", "--out-dir", outs["pseudo-labels"]],
            "provenance": [bad]}[command]
    code, err = _cli(capsys, command, *args)
    assert code == 2
    msg = _error(err, command)
    assert str(bad) in msg and "truncated" in msg
    assert not any(p.exists() for p in outs.values())
    _no_leftovers(tmp_path)


def test_maps_with_another_class_count_are_refused_by_rank(tmp_path, capsys):
    maps = _maps(tmp_path / "five.h5", 5)
    out = tmp_path / "rank.csv"
    code, err = _cli(capsys, "rank", "--maps", maps, "--k", 7, "--out", out)
    assert code == 2
    msg = _error(err, "rank")
    assert str(maps) in msg and "5 classes" in msg and "19" in msg
    assert not out.exists()


def test_maps_with_another_class_count_are_refused_by_pseudo_labels(tmp_path, capsys):
    maps = _maps(tmp_path / "five.h5", 5)
    out = tmp_path / "pseudo"
    code, err = _cli(capsys, "pseudo-labels", "--config", REPO / "config.yaml", "--maps", maps,
                     "--method", "argmax", "--out-dir", out)
    assert code == 2 and "5 classes" in err
    assert not out.exists()


@pytest.mark.parametrize("problem", ["class_id_19", "nan_value"])
@pytest.mark.parametrize("command", ["rank", "pseudo-labels-gmm", "pseudo-labels-argmax"])
def test_maps_edited_after_the_dump_are_refused(tmp_path, capsys, problem, command):
    """The stored histograms no longer describe the maps: today rank writes a CSV from them
    and pseudo-labels dies with an IndexError."""
    maps = _maps(tmp_path / "maps" / "aa.h5", 19)
    with h5py.File(maps, "r+") as fh:
        if problem == "class_id_19":
            argmax = fh["argmax"][1]
            argmax[2, 3] = 19
            fh["argmax"][1] = argmax
        else:                       # in the statistic the command reads (argmax labels read maxprob)
            field = "maxprob" if command == "pseudo-labels-argmax" else "entropy"
            values = fh[field][1]
            values[2, 3] = np.nan
            fh[field][1] = values
    out = tmp_path / ("rank.csv" if command == "rank" else "pseudo")
    if command == "rank":
        args = ["rank", "--maps", maps, "--k", 7, "--out", out]
    else:
        args = ["pseudo-labels", "--config", REPO / "config.yaml", "--maps", maps,
                "--method", command.rsplit("-", 1)[1], "--out-dir", out]
    code, err = _cli(capsys, *args)
    assert code == 2, err
    msg = _error(err, args[0])
    assert str(maps) in msg and "'img1'" in msg and "re-run the dump" in msg
    assert ("class id 19" in msg) if problem == "class_id_19" else ("NaN" in msg)
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_dump_and_pseudo_labels_remove_what_a_killed_run_left(tmp_path, capsys, small_checkpoint, target_val):
    """A SIGKILL leaves the hidden temporary of the writer; the next run of the stage removes it."""
    out_dir = tmp_path / "seed0"
    maps, pseudo = out_dir / "maps" / "aa.h5", out_dir / "pseudo" / "aa" / "argmax"
    stale_file = maps.parent / f".{maps.name}.k1ll3d00.tmp.h5"
    stale_dir = pseudo.parent / f".{pseudo.name}.k1ll3d00.tmp"
    for folder in (maps.parent, stale_dir):
        folder.mkdir(parents=True)
    stale_file.write_bytes(b"half a maps file")
    (stale_dir / "img0.png").write_bytes(b"half a label")
    bystander = maps.parent / ".other.h5.k1ll3d00.tmp.h5"   # another output's: not this stage's to remove
    bystander.write_bytes(b"x")
    code, err = _cli(capsys, "dump", "--config", _config_file(tmp_path / "c.yaml"), "--checkpoint", small_checkpoint,
                     "--index", target_val, "--out", maps)
    assert code == 0, err
    assert not stale_file.exists() and bystander.exists()
    code, err = _cli(capsys, "pseudo-labels", "--config", REPO / "config.yaml", "--maps", maps, "--method", "argmax",
                     "--out-dir", pseudo)
    assert code == 0, err
    assert not stale_dir.exists() and (pseudo / "classes.csv").is_file()


# --------------------------------------------------------------------------- configs

@pytest.mark.parametrize("bad, expected", [
    ({"train": {"batch_sise": 4}}, ["'batch_sise' was unexpected", "'train'"]),
    ({"train": {"lr": "fast"}}, ["'train.lr'", "'fast' is not of type 'number'"]),
])
def test_stage_command_with_a_bad_config_writes_nothing(tmp_path, capsys, bad, expected):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(bad))
    out = tmp_path / "m" / "checkpoint.pt"
    code, err = _cli(capsys, "train-source", "--config", cfg, "--source-index", tmp_path / "none.csv",
                     "--out", out)
    assert code == 2
    msg = _error(err, "train-source")
    assert str(cfg) in msg
    for text in expected:
        assert text in msg
    assert not out.parent.exists()


def test_training_with_a_missing_index(tmp_path, capsys):
    cfg = _config_file(tmp_path / "c.yaml")
    out = tmp_path / "m" / "checkpoint.pt"
    code, err = _cli(capsys, "train-source", "--config", cfg, "--source-index", tmp_path / "none.csv", "--out", out)
    assert code == 2
    assert f"{tmp_path / 'none.csv'}: index table not found" in _error(err, "train-source")
    assert not out.exists()


def test_ground_truth_split_comes_from_the_flag_or_the_config(tmp_path, capsys):
    """--gt-split has no default of its own beside the schema's target.train_split."""
    maps = _maps(tmp_path / "m.h5", 19)
    out = tmp_path / "pseudo"
    code, err = _cli(capsys, "pseudo-labels", "--maps", maps, "--method", "argmax", "--gt-root", tmp_path / "gt",
                     "--out-dir", out)
    assert code == 2
    assert "--gt-root needs --gt-split, or a config" in _error(err, "pseudo-labels")
    assert not out.exists()
    # With a config, its target.train_split is the split looked up (here missing: the lookup names it).
    from fixtures_data import write_cityscapes_tree
    write_cityscapes_tree(tmp_path / "gt", {"train": 1}, with_images=False)
    code, err = _cli(capsys, "pseudo-labels", "--config", REPO / "config.yaml", "--set", "target.train_split=trainx",
                     "--maps", maps, "--method", "argmax", "--gt-root", tmp_path / "gt", "--out-dir", out)
    assert code == 2 and "trainx" in _error(err, "pseudo-labels")
    assert not out.exists()
