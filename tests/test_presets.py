"""The paper presets as users run them: real-layout folders with files at the real sizes and names,
planned (and run at a tiny scale on the CPU) with only the data roots and an init file given.

Trees (written once per module, 2-3 files per split):

- GTA5: ``images/00001.png`` 1914x1052 RGB, ``labels/00001.png`` palette PNGs of Cityscapes label
  ids, one label a few pixels smaller than its image (as some real pairs are);
- Cityscapes: ``leftImg8bit/{train,val}/<city>/<city>_000000_000019_leftImg8bit.png`` 2048x1024 and
  ``gtFine/<split>/<city>/..._gtFine_labelIds.png``;
- SYNTHIA: ``RGB/0000000.png`` 1280x760 and ``GT/LABELS/0000000.png`` 16-bit with the class id in R.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from fixtures_data import write_cityscapes_tree, write_gta5_tree, write_synthia_tree
from uncerda_core.config import complete_model_section, load_config
from uncerda_core.models import build_model
from workflow_helpers import REPO, snakemake

PRESETS = REPO / "workflow" / "presets"
GTA5_SIZE, CITYSCAPES_SIZE, SYNTHIA_SIZE = (1914, 1052), (2048, 1024), (1280, 760)
SMALLER_LABEL = {"00002": (1910, 1049)}
SOURCE_OF = {"gta5_cityscapes": "gta5", "synthia_cityscapes": "synthia"}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """Real-layout GTA5, SYNTHIA and Cityscapes folders, and a (small) init state dict."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(12)
    write_gta5_tree(root / "gta5", 3, size=GTA5_SIZE, rng=rng, label_sizes=SMALLER_LABEL)
    write_synthia_tree(root / "synthia", 3, size=SYNTHIA_SIZE, rng=rng)
    write_cityscapes_tree(root / "cityscapes", {"train": 2, "val": 2}, size=CITYSCAPES_SIZE, rng=rng)
    init = root / "DeepLab_resnet_pretrained_imagenet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, init)  # planning only needs the file to exist
    return {"gta5": root / "gta5", "synthia": root / "synthia", "cityscapes": root / "cityscapes", "init": init}


def _preset_args(preset: str, trees: dict[str, Path], *config: str) -> list[str]:
    source = trees[SOURCE_OF[preset]]
    return ["--configfile", str(PRESETS / f"{preset}.yaml"), "--config", f"source={{root: {source}}}",
            f"target={{root: {trees['cityscapes']}}}", *config]


def test_trees_have_the_real_sizes_and_names(trees):
    from PIL import Image
    assert Image.open(trees["gta5"] / "images" / "00001.png").size == GTA5_SIZE
    assert Image.open(trees["gta5"] / "labels" / "00002.png").size == SMALLER_LABEL["00002"]
    assert Image.open(trees["gta5"] / "labels" / "00001.png").mode == "P"
    city = trees["cityscapes"] / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    assert Image.open(city).size == CITYSCAPES_SIZE
    assert (trees["cityscapes"] / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png").is_file()
    import cv2
    label = cv2.imread(str(trees["synthia"] / "GT" / "LABELS" / "0000000.png"), cv2.IMREAD_UNCHANGED)
    assert label.dtype == np.uint16 and label.shape == (SYNTHIA_SIZE[1], SYNTHIA_SIZE[0], 3)


@pytest.mark.parametrize("preset", ["gta5_cityscapes", "synthia_cityscapes"])
def test_paper_preset_plans_with_only_the_roots_and_an_init(tmp_path, trees, preset):
    dataset = SOURCE_OF[preset]
    work = tmp_path / "run"
    proc = snakemake(work, "-n", "-p", *_preset_args(preset, trees, f"model={{init: {trees['init']}}}"),
                     timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for rule in ("index_source", "index_target", "train_source_only", "adapt_round0"):
        assert f"rule {rule}:" in out, rule
    assert f"index --dataset {dataset} --root {trees[dataset]} --split all" in out
    assert f"index --dataset cityscapes --root {trees['cityscapes']} --split train --no-labels" in out
    assert "This was a dry-run" in out
    # A dry run writes nothing; the resolved config is what the planned jobs get on their command line.
    assert "rule resolved_config:" in out and not (work / "results").exists()
    resolved = _planned_config(out)
    # The preset alone decides the experiment: nothing of the demo config.yaml leaks in.
    model = resolved["model"]
    assert model["arch"] == "deeplabv2_resnet101" and model["output_stride"] == 8
    assert "width" not in model and "blocks" not in model and model["init"] == str(trees["init"])
    assert resolved["adapt"]["disc_ndf"] == 64 and resolved["demo"]["enabled"] is False
    # Snakemake's layering and the console script's are the same: defaults, preset, overrides.
    cli = load_config(PRESETS / f"{preset}.yaml", overrides={
        "source": {"root": str(trees[dataset])}, "target": {"root": str(trees["cityscapes"])},
        "model": {"init": str(trees["init"])}})
    assert resolved == cli


def _planned_config(out: str) -> dict:
    """The resolved config that a dry run (``-n -p``) hands to the planned source-only training job."""
    command = next(line for line in out.splitlines() if " train-source " in line and "--config-json" in line)
    argv = shlex.split(command[command.index(sys.executable):])
    return json.loads(argv[argv.index("--config-json") + 1])


def test_demo_config_is_used_only_without_a_configfile(tmp_path):
    proc = snakemake(tmp_path / "demo", "-n", "-p", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = _planned_config(proc.stdout + proc.stderr)
    assert resolved == load_config(REPO / "config.yaml", check_paths=False)
    assert resolved["model"]["output_stride"] == 4 and resolved["adapt"]["disc_ndf"] == 32  # config.yaml's


@pytest.mark.parametrize("config, expected", [
    (("model={init: INIT, output_stride: 4}",), "model.output_stride: deeplabv2_resnet101 is built at output stride 8"),
    (("model={init: INIT, width: 16}",), "model.width: deeplabv2_resnet101 has a fixed shape"),
    ((), "model.init: deeplabv2_resnet101 needs initial weights"),
    (("model={init: INIT}", "tgaa={k: 20}"), "tgaa.k: 20 is more than the 19 classes"),
])
def test_paper_preset_refuses_a_bad_combination_before_any_job(tmp_path, trees, config, expected):
    work = tmp_path / "run"
    config = [c.replace("INIT", str(trees["init"])) for c in config]
    proc = snakemake(work, "-n", *_preset_args("gta5_cityscapes", trees, *config), timeout=300)
    assert proc.returncode != 0
    assert expected in proc.stdout + proc.stderr
    assert not (work / "results").exists() and not (work / "logs").exists()


def test_command_line_lists_and_enums_reach_the_schema_typed(tmp_path, trees):
    work = tmp_path / "run"
    proc = snakemake(work, "-n", "-p", "--configfile", str(PRESETS / "gta5_cityscapes.yaml"), "--config",
                     f"source={{root: {trees['gta5']}, resize: [640, 360], crop: [512, 256]}}",
                     f"target={{root: {trees['cityscapes']}, resize: [512, 256]}}",
                     f"model={{init: {trees['init']}, output_stride: 8, aspp_branches: 2}}",
                     "ablation={seeds: [3, 4]}", "tgaa={k: 5, balance: 0.5}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = _planned_config(proc.stdout + proc.stderr)
    assert resolved["source"]["resize"] == [640, 360] and resolved["source"]["crop"] == [512, 256]
    assert resolved["target"]["resize"] == [512, 256]
    assert resolved["model"]["output_stride"] == 8 and resolved["model"]["aspp_branches"] == 2
    assert resolved["ablation"]["seeds"] == [3, 4]
    assert resolved["tgaa"]["k"] == 5 and resolved["tgaa"]["balance"] == 0.5


# The presets' settings at a CPU scale: the small network, tiny inputs, a few iterations.
TINY = ("model={arch: deeplabv2_small, width: 8, blocks: [1, 1, 1, 1], init: INIT}",
        "threads=1", "train={num_workers: 0, batch_size: 2}",
        "source_only={iterations: 3}", "adapt={iterations: 2}", "tgaa={iterations: 2, max_rounds: 1}",
        "selftrain={iterations: 2}", "dump={batch_size: 2}")


# What each preset's run builds. Every report figure is drawn from the stages' generic CSV/JSON files and
# is checked on the smoke run (test_report.py); here SYNTHIA's 16-class evaluation goes through every figure
# drawn per class (IoU, the ranking, the weights, the GMM and the pseudo labels' quality), and GTA5 runs to
# the summary (every stage) and the resolved config; both draw the one figure that reads the preset's own
# images and models (the examples), so the suite does not draw the class-free figures twice.
TARGETS = {preset: [f"results/{preset}/config.yaml", f"results/{preset}/seed0/summary.md",
                    f"results/{preset}/report/seed0/examples.png"] for preset in ("gta5_cityscapes", "synthia_cityscapes")}
TARGETS["synthia_cityscapes"] += [f"results/synthia_cityscapes/report/seed0/{name}" for name in
                                  ("iou_per_class.png", "rank.png", "weights.png", "entropy_gmm.png",
                                   "pseudo_quality.png")]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["gta5_cityscapes", "synthia_cityscapes"])
def test_paper_preset_runs_end_to_end_at_cpu_scale(tmp_path, trees, preset):
    dataset = SOURCE_OF[preset]
    init = tmp_path / "small_init.pth"
    torch.manual_seed(0)
    torch.save(build_model(complete_model_section({"arch": "deeplabv2_small", "width": 8, "blocks": [1, 1, 1, 1]}))
               .state_dict(), init)
    tiny = [c.replace("INIT", str(init)) for c in TINY]
    work = tmp_path / "run"
    proc = snakemake(work, "--cores", "2", "--configfile", str(PRESETS / f"{preset}.yaml"), "--config",
                     f"source={{root: {trees[dataset]}, resize: [96, 48], crop: [64, 32]}}",
                     f"target={{root: {trees['cityscapes']}, resize: [64, 32]}}", *tiny, "--", *TARGETS[preset],
                     timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = work / "results" / preset
    assert (results / "report" / "seed0" / "examples.png").is_file()
    for target in TARGETS[preset]:
        assert (work / target).is_file(), target
    resolved = yaml.safe_load((results / "config.yaml").read_text())
    assert resolved["train"]["normalize"] == "caffe_bgr" and resolved["model"]["bn_mode"] == "train_frozen_affine"
    assert (results / "seed0" / "summary.md").is_file()
    tables = sorted((results / "seed0" / "models").glob("*/losses.csv"))
    assert {p.parent.name for p in tables} >= {"source_only", "aa_it", "tgaa_r1"}
    for table in tables:
        values = pd.read_csv(table).drop(columns=["iteration"], errors="ignore").to_numpy(dtype=float)
        assert values.size and np.isfinite(values).all(), table
    evals = [json.loads(p.read_text()) for p in sorted((results / "seed0" / "eval").glob("*.json"))]
    assert evals and all(np.isfinite(e["miou"]) for e in evals)


def test_paper_preset_plans_the_paper_tables(tmp_path, trees):
    """snakemake paper_tables at paper scale plans with the same command: Table 5's other adaptation models and
    their self-training appear in the plan before the chain's rounds are decided."""
    work = tmp_path / "run"
    proc = snakemake(work, "-n", "-p", *_preset_args("gta5_cityscapes", trees, f"model={{init: {trees['init']}}}"),
                     "--", "paper_tables", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for model in ("aa", "aa_mr", "aa_ent", "aa_st_gmm_r1", "aa_mr_st_cbst_r1", "aa_ent_st_gmm_r1"):
        assert f"/models/{model}/checkpoint.pt" in out, model
    assert "--set adapt.memory_weight=0.1" in out and "--set adapt.disc_input=entropy" in out
    assert "rule decide_round:" in out or "checkpoint decide_round:" in out


def test_paper_preset_plans_online_self_training(tmp_path, trees):
    """snakemake online at paper scale: DACS's keys from the preset reach the planned runs, which train with
    source batches although the preset's offline self-training is target-only."""
    proc = snakemake(tmp_path / "run", "-n", "-p", *_preset_args("gta5_cityscapes", trees,
                                                                 f"model={{init: {trees['init']}}}"),
                     "--", "online", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    line = next(line for line in out.splitlines() if " self-train " in line and "/models/online_gmm_src/" in line)
    argv = shlex.split(line[line.index(sys.executable):])
    config = json.loads(argv[argv.index("--config-json") + 1])
    assert config["selftrain"]["online"]["threshold"] == 0.968 and config["selftrain"]["online"]["ema_decay"] == 0.99
    assert config["selftrain"]["target_only"] is True      # the preset's offline setting ...
    assert "selftrain.target_only=false" in argv          # ... overridden for the online runs
