"""Configuration: schema errors name the key, defaults fill nested sections, data roots are
checked before any job runs; through load_config, ``uncerda validate`` and ``snakemake -n``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from uncerda_core.artifacts import UncerdaError
from uncerda_core.cli import main
from uncerda_core.config import check_demo_roots, deep_merge, dumps, load_config, validate_config
from workflow_helpers import REPO, snakemake

PRESETS = REPO / "workflow" / "presets"


def _yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# --------------------------------------------------------------------------- load_config

def test_unknown_key_is_named_with_its_section(tmp_path):
    cfg = _yaml(tmp_path / "c.yaml", {"train": {"batch_sise": 4}})
    with pytest.raises(UncerdaError) as info:
        load_config(cfg)
    msg = str(info.value)
    assert str(cfg) in msg
    assert "'batch_sise' was unexpected" in msg and "at 'train'" in msg and "batch_size" in msg
    with pytest.raises(UncerdaError, match=r"'trian' was unexpected\) at '<top level>'"):
        load_config(_yaml(tmp_path / "top.yaml", {"trian": {"lr": 0.1}}))


@pytest.mark.parametrize("bad, expected", [
    ({"train": {"lr": "fast"}}, "'train.lr': 'fast' is not of type 'number'"),
    ({"device": "gpu"}, "'device': 'gpu' is not one of ['auto', 'cpu', 'cuda']"),
    ({"model": {"blocks": [1, 1]}}, "'model.blocks'"),
    ({"demo": {"size": [64, 4]}}, "'demo.size.1': 4 is less than the minimum of 8"),
    ({"seed": 1.5}, "'seed': 1.5 is not of type 'integer'"),
])
def test_wrong_type_is_named(tmp_path, bad, expected):
    with pytest.raises(UncerdaError) as info:
        load_config(_yaml(tmp_path / "c.yaml", bad))
    assert expected in str(info.value)


def test_every_error_is_reported_together(tmp_path):
    cfg = _yaml(tmp_path / "c.yaml", {"train": {"lr": "fast", "batch_sise": 2}, "seed": -1})
    with pytest.raises(UncerdaError) as info:
        load_config(cfg)
    msg = str(info.value)
    assert "'seed': -1 is less than the minimum of 0" in msg
    assert "'train.lr'" in msg and "'batch_sise' was unexpected" in msg


def test_missing_data_root_with_demo_disabled(tmp_path):
    cfg = _yaml(tmp_path / "c.yaml", {"demo": {"enabled": False}, "source": {"root": str(tmp_path / "gta")},
                                      "target": {"root": str(tmp_path / "cs")}})
    with pytest.raises(UncerdaError) as info:
        load_config(cfg)
    assert f"source.root: data root '{tmp_path / 'gta'}' does not exist" in str(info.value)
    (tmp_path / "gta").mkdir()
    with pytest.raises(UncerdaError, match=r"target\.root: data root '.*cs' does not exist"):
        load_config(cfg)
    (tmp_path / "cs").mkdir()
    assert load_config(cfg)["source"]["root"] == str(tmp_path / "gta")
    # A missing init checkpoint is named too; check_paths=False skips every path check.
    with pytest.raises(UncerdaError, match=r"model\.init: checkpoint '.*none\.pth' not found"):
        load_config(cfg, overrides={"model": {"init": str(tmp_path / "none.pth")}})
    load_config(cfg, overrides={"source": {"root": "/no/where"}, "model": {"init": "/no.pth"}}, check_paths=False)
    # With the demo enabled, the roots are generated later: not checked.
    load_config(_yaml(tmp_path / "demo.yaml", {"source": {"root": str(tmp_path / "later")}}))


def test_unreadable_config_files(tmp_path):
    with pytest.raises(UncerdaError, match=r"none\.yaml: config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [0.1\n")
    with pytest.raises(UncerdaError, match=r"bad\.yaml: not valid YAML(.|\n)*line 2, column 1"):
        load_config(bad)  # file, line and column: what the README points users to
    with pytest.raises(UncerdaError, match="must be a mapping, got list"):
        validate_config([1, 2])


def test_defaults_fill_nested_sections(tmp_path):
    config = load_config(_yaml(tmp_path / "c.yaml", {"experiment": "x", "train": {"lr": 0.5}}))
    assert config["experiment"] == "x" and config["results_dir"] == "results" and config["seed"] == 0
    # A section given in part keeps its other defaults; absent sections get all of theirs.
    assert config["train"]["lr"] == 0.5 and config["train"]["batch_size"] == 8
    assert config["train"]["checkpoint_every"] == 100 and config["train"]["normalize"] == "imagenet"
    assert config["demo"] == {"enabled": True, "seed": 0, "size": [128, 64], "n_source": 600,
                              "n_target_train": 400, "n_target_val": 200}
    assert config["model"]["arch"] == "deeplabv2_small" and config["model"]["blocks"] == [1, 1, 1, 1]
    assert config["pseudo"]["method"] == "gmm" and config["selftrain"]["loss"] == "rectified"
    assert config["resources"]["train"] == {"threads": 2, "mem_mb": 8000, "runtime": 720, "gpu": 0}


def test_partial_resources_keep_the_other_defaults(tmp_path):
    config = load_config(_yaml(tmp_path / "c.yaml", {"resources": {"train": {"threads": 4}}}))
    assert config["resources"]["train"] == {"threads": 4, "mem_mb": 8000, "runtime": 720, "gpu": 0}
    assert config["resources"]["cpu"] == {"threads": 1, "mem_mb": 4000, "runtime": 60, "gpu": 0}


def test_layered_configs_override_only_what_they_set(tmp_path):
    config = load_config(REPO / "config.yaml", PRESETS / "smoke.yaml", overrides={"train": {"lr": 0.5}})
    assert config["experiment"] == "smoke"
    assert config["train"] == {**config["train"], "lr": 0.5, "batch_size": 4, "checkpoint_every": 2}
    assert config["adapt"]["fda_beta"] == 0.05 and config["adapt"]["disc_ndf"] == 8   # config.yaml, then smoke
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


# --------------------------------------------------------------------------- uncerda validate

def test_validate_command_exit_code_and_stderr(tmp_path):
    cfg = _yaml(tmp_path / "c.yaml", {"train": {"batch_sise": 4}})
    proc = subprocess.run([sys.executable, "-m", "uncerda_core", "validate", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("uncerda validate: error:") and "'batch_sise' was unexpected" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_command_in_process(tmp_path, capsys):
    wrong = _yaml(tmp_path / "w.yaml", {"train": {"lr": "fast"}})
    assert main(["validate", "--config", str(wrong)]) == 2
    assert "'train.lr': 'fast' is not of type 'number'" in capsys.readouterr().err
    missing = _yaml(tmp_path / "m.yaml", {"demo": {"enabled": False}, "source": {"root": "/no/such/gta5"}})
    assert main(["validate", "--config", str(missing)]) == 2
    assert "source.root: data root '/no/such/gta5' does not exist" in capsys.readouterr().err
    # --no-check-paths accepts it and prints the config with every default filled in.
    assert main(["validate", "--config", str(missing), "--no-check-paths"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["source"]["root"] == "/no/such/gta5" and printed["train"]["batch_size"] == 8
    # --set overrides one value, parsed as YAML.
    assert main(["validate", "--config", str(REPO / "config.yaml"), "--set", "train.batch_size=3",
                 "--set", "adapt.image_translation=false"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["batch_size"] == 3 and printed["adapt"]["image_translation"] is False


# --------------------------------------------------------------------------- snakemake -n

def test_snakemake_refuses_a_bad_config_before_any_job(tmp_path):
    bad = _yaml(tmp_path / "bad.yaml", {"train": {"batch_sise": 4, "lr": "fast"}})
    work = tmp_path / "run"
    proc = snakemake(work, "-n", "--configfile", str(bad), timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "'batch_sise' was unexpected" in out and "'train.lr': 'fast' is not of type 'number'" in out
    assert not (work / "results").exists() and not (work / "logs").exists()


def test_snakemake_refuses_a_missing_data_root_before_any_job(tmp_path):
    work = tmp_path / "run"
    proc = snakemake(work, "-n", "--configfile", str(PRESETS / "gta5_cityscapes.yaml"), "--config",
                     f"source={{root: {tmp_path / 'no_gta5'}}}", f"target={{root: {tmp_path}}}",
                     f"model={{init: {tmp_path / 'init.pth'}}}", timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"source.root: data root '{tmp_path / 'no_gta5'}' does not exist" in out
    assert not (work / "results").exists()


def test_command_line_strings_are_parsed_where_the_schema_wants_numbers():
    # Snakemake passes nested --config values such as train='{batch_size: 4}' on as strings.
    config = validate_config({"train": {"batch_size": "4", "flip": "false"}, "source": {"resize": "[1280, 720]",
                                                                                        "root": "123"}})
    assert config["train"]["batch_size"] == 4 and config["train"]["flip"] is False
    assert config["source"]["resize"] == [1280, 720]
    assert validate_config({"ablation": {"seeds": ["0", "2"]}})["ablation"]["seeds"] == [0, 2]
    assert config["source"]["root"] == "123"  # a string where the schema wants a string stays one
    with pytest.raises(UncerdaError, match="'train.batch_size': 'four' is not of type 'integer'"):
        validate_config({"train": {"batch_size": "four"}})


def test_command_line_values_reach_every_kind_of_schema_node():
    # What snakemake --config source='{root: /data/gta5, resize: [1280, 720], crop: [1024, 512]}'
    # model='{output_stride: 4, init: null}' ... hands over: every nested scalar a string.
    config = validate_config({
        "source": {"root": "/data/gta5", "resize": ["1280", "720"], "crop": ["1024", "512"]},  # oneOf: null | size
        "target": {"resize": "null", "train_split": 7},                    # null through oneOf; int -> string
        "model": {"output_stride": "4", "init": "null", "blocks": ["2", "1", "1", "1"]},  # enum of ints
        "train": {"lr": "1e-3", "weight_decay": "5.0e-4", "bf16": "False"},   # YAML 1.1 keeps 1e-3 a string
        "resources": {"train": {"threads": "3", "gpu": "1"}},              # through $ref, keeps other defaults
        "ablation": {"pseudo_methods": ["gmm", "cbst"], "seeds": "[0, 1]"},  # list given as one string
        "dump": {"prob_size": "[64, 32]"},
        "experiment": 2024,                                                 # snakemake: experiment=2024 is an int
    })
    assert config["source"]["resize"] == [1280, 720] and config["source"]["crop"] == [1024, 512]
    assert config["target"]["resize"] is None and config["target"]["train_split"] == "7"
    assert config["model"]["output_stride"] == 4 and config["model"]["init"] is None
    assert config["model"]["blocks"] == [2, 1, 1, 1]
    assert config["train"]["lr"] == 1e-3 and config["train"]["weight_decay"] == 5e-4
    assert config["train"]["bf16"] is False
    assert config["resources"]["train"] == {"threads": 3, "gpu": 1, "mem_mb": 8000, "runtime": 720}
    assert config["ablation"]["seeds"] == [0, 1] and config["dump"]["prob_size"] == [64, 32]
    assert config["experiment"] == "2024"
    # A value that fits nowhere is named in its typed form.
    with pytest.raises(UncerdaError, match=r"'model.output_stride': 16 is not one of \[4, 8\]"):
        validate_config({"model": {"output_stride": "16"}})
    with pytest.raises(UncerdaError, match="'source.resize'"):
        validate_config({"source": {"resize": ["1280", "wide"]}})
    # Strings the schema wants as strings stay strings, even when YAML would read them otherwise.
    assert validate_config({"experiment": "yes", "model": {"init": "/w/1.pth"}})["experiment"] == "yes"


# --------------------------------------------------------------------------- the experiment's folder

@pytest.mark.parametrize("name", ["..", ".", "...", "a/../..", "../x", "my run", "~"])
def test_an_experiment_name_that_leaves_its_folder_is_refused_by_name(name):
    """Issue 32: '..' planned results/../config.yaml, the project's own config.yaml."""
    with pytest.raises(UncerdaError) as info:
        validate_config({"experiment": name, "results_dir": "out", "train": {"lr": "fast"}})
    msg = str(info.value)
    dots = set(name) == {"."}
    expected = (f"experiment: {name!r} is made only of dots; the experiment names the folder of this run's "
                "results, out/<experiment>/, and of its logs, logs/<experiment>/, but '.' is out/ itself"
                if dots else f"experiment: {name!r} is not one folder name: results go to out/<experiment>/")
    assert expected in msg
    assert "e.g. experiment: demo2 in the config file or --config experiment=demo2" in msg
    # Said once, in place of the schema's pattern error; the config's other errors are still listed.
    assert msg.count(f"experiment: {name!r}") == 1 and "does not match" not in msg
    assert "'train.lr': 'fast' is not of type 'number'" in msg


@pytest.mark.parametrize("name", ["demo", "a..", ".hidden", "run-2.b_3", "2024"])
def test_ordinary_experiment_names_are_accepted(name, tmp_path):
    assert validate_config({"experiment": name})["experiment"] == name
    assert load_config(_yaml(tmp_path / "c.yaml", {"experiment": name}))["experiment"] == name


def test_a_dry_run_with_experiment_dot_dot_stops_before_any_job(tmp_path):
    work = tmp_path / "run"
    proc = snakemake(work, "-n", "--cores", "2", "--configfile", str(PRESETS / "smoke.yaml"), "--config",
                     f"results_dir={work / 'results'}", "experiment=..", timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"experiment: '..' is made only of dots; the experiment names the folder of this run's results, " \
           f"{work / 'results'}/<experiment>/" in out
    assert "--config experiment=demo2" in out
    assert "rule resolved_config:" not in out and "Traceback" not in out
    # Nothing planned, nothing written: no results folder, no config.yaml where results/../ points.
    assert sorted(p.name for p in work.iterdir() if p.name != ".snakemake") == []


RESNET = {"arch": "deeplabv2_resnet101", "init": "/weights/DeepLab_resnet_pretrained_imagenet.pth"}


@pytest.mark.parametrize("model, expected", [
    ({**RESNET, "output_stride": 4}, "model.output_stride: deeplabv2_resnet101 is built at output stride 8 only"),
    ({**RESNET, "width": 16}, "model.width: deeplabv2_resnet101 has a fixed shape"),
    ({**RESNET, "blocks": [1, 1, 1, 1]}, "model.blocks: deeplabv2_resnet101 has a fixed shape"),
    ({**RESNET, "width": 16, "blocks": [1, 1, 1, 1]}, "model.width and model.blocks"),
])
def test_model_keys_the_architecture_does_not_take_are_refused(model, expected):
    with pytest.raises(UncerdaError) as info:
        validate_config({"model": model})
    assert expected in str(info.value)


def test_width_and_blocks_default_only_for_the_small_network(tmp_path):
    resnet = validate_config({"model": dict(RESNET)})["model"]
    assert "width" not in resnet and "blocks" not in resnet and resnet["output_stride"] == 8
    small = validate_config({})["model"]
    assert small["width"] == 16 and small["blocks"] == [1, 1, 1, 1]
    # The resolved config of a ResNet-101 run validates again (every stage re-reads it).
    resolved = _yaml(tmp_path / "resolved.yaml", validate_config({"model": dict(RESNET)}))
    assert load_config(resolved, check_paths=False)["model"] == resnet


def test_resnet101_without_init_is_refused_naming_the_files():
    with pytest.raises(UncerdaError) as info:
        validate_config({"model": {"arch": "deeplabv2_resnet101"}})
    msg = str(info.value)
    assert "model.init" in msg
    for name in ("DeepLab_resnet_pretrained_imagenet.pth", "DeepLab_resnet_pretrained_init-f81d91e8.pth",
                 "AdaptSegNet", "ADVENT"):
        assert name in msg
    # The small network may start from scratch (the demo does).
    assert validate_config({"model": {"arch": "deeplabv2_small"}})["model"]["init"] is None


def test_tgaa_k_above_the_class_count_is_refused():
    with pytest.raises(UncerdaError, match=r"tgaa.k: 20 is more than the 19 classes"):
        validate_config({"tgaa": {"k": 20}})
    with pytest.raises(UncerdaError, match=r"tgaa.k: 6 is more than the 5 classes"):
        validate_config({"tgaa": {"k": 6}, "model": {"num_classes": 5}})
    assert validate_config({"tgaa": {"k": 19}})["tgaa"]["k"] == 19


def test_adapting_from_model_init_needs_one():
    with pytest.raises(UncerdaError, match="adapt.init is model_init but model.init is not set"):
        validate_config({"adapt": {"init": "model_init"}})
    config = validate_config({"adapt": {"init": "model_init"}, "model": {"init": "/weights/init.pth"}})
    assert config["model"]["init"] == "/weights/init.pth"


def test_a_dry_run_writes_nothing_under_results(tmp_path):
    """The resolved config is written by a job, never while the Snakefile is read (issue: a dry run, or a
    second run stopped by the lock, used to rewrite the file a running workflow's jobs read)."""
    work = tmp_path / "run"
    proc = snakemake(work, "-n", "--cores", "2", "--configfile", str(PRESETS / "smoke.yaml"), "--config",
                     f"results_dir={work / 'results'}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rule resolved_config:" in proc.stdout + proc.stderr
    assert not (work / "results").exists() and not (work / "logs").exists()


# --------------------------------------------------------------------------- the resolved config

def test_commands_take_the_resolved_config_as_json(tmp_path, capsys):
    """The workflow's route: the config its Snakemake process resolved, on each job's command line."""
    config = load_config(REPO / "config.yaml", PRESETS / "smoke.yaml",
                         overrides={"results_dir": str(tmp_path / "results")})
    out = tmp_path / "results" / "smoke" / "config.yaml"
    assert main(["write-config", "--config-json", dumps(config), "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == config
    # Validated like a file, --set applies on top; a file and JSON together are refused by the parser.
    assert main(["validate", "--config-json", dumps(config), "--set", "train.batch_size=3"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == deep_merge(config, {"train": {"batch_size": 3}})
    assert main(["validate", "--config-json", '{"train": {"lr": "fast"}}']) == 2
    assert "'train.lr': 'fast' is not of type 'number'" in capsys.readouterr().err
    assert main(["write-config", "--config-json", "{not json", "--out", str(tmp_path / "x.yaml")]) == 2
    assert "--config-json: not valid JSON" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()
    with pytest.raises(SystemExit):
        main(["validate", "--config", str(out), "--config-json", "{}"])
    assert "not allowed with argument" in capsys.readouterr().err


# --------------------------------------------------------------------------- demo data roots

def _demo_config(tmp_path: Path, **roots) -> dict:
    config = {"results_dir": str(tmp_path / "results")}
    config.update({role: {"root": str(root)} for role, root in roots.items()})
    return validate_config(config)


def test_demo_roots_must_lie_in_the_demo_folder(tmp_path):
    results_data = tmp_path / "results" / "data"
    check_demo_roots(_demo_config(tmp_path, source=results_data / "demo" / "source",
                                  target=results_data / "demo" / "target"))
    mine = tmp_path / "my_cityscapes"
    with pytest.raises(UncerdaError) as info:
        check_demo_roots(_demo_config(tmp_path, source=results_data / "s", target=mine))
    msg = str(info.value)
    assert msg.startswith(f"target.root: '{mine}' is outside {tmp_path / 'results'}/data/")
    assert "demo.enabled: false" in msg
    # The demo's folder itself, a way out through '..' or through a symbolic link: refused.
    for root in (results_data, results_data / ".." / ".." / "elsewhere"):
        with pytest.raises(UncerdaError, match="source.root"):
            check_demo_roots(_demo_config(tmp_path, source=root, target=results_data / "t"))
    results_data.mkdir(parents=True)
    mine.mkdir()
    (results_data / "link").symlink_to(mine)
    with pytest.raises(UncerdaError, match="target.root"):
        check_demo_roots(_demo_config(tmp_path, source=results_data / "s", target=results_data / "link"))
    with pytest.raises(UncerdaError, match="overlap"):
        check_demo_roots(_demo_config(tmp_path, source=results_data / "d", target=results_data / "d" / "t"))


def test_demo_never_replaces_a_users_data(tmp_path, capsys):
    """With the demo enabled, a root pointing at real data is refused before any job; the data stays."""
    mine = tmp_path / "my_gta5"
    mine.mkdir()
    sentinel = mine / "keep.txt"
    sentinel.write_text("my data\n")
    work = tmp_path / "run"
    proc = snakemake(work, "--forceall", "--cores", "1", "--configfile", str(PRESETS / "smoke.yaml"),
                     "--config", f"results_dir={work / 'results'}", f"source={{root: {mine}}}", timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"source.root: '{mine}' is outside" in out and "demo.enabled: false" in out
    assert sentinel.read_text() == "my data\n" and sorted(mine.iterdir()) == [sentinel]
    assert not (work / "results").exists()
    # The command refuses the same roots when run by hand.
    cfg = _yaml(tmp_path / "c.yaml", {"source": {"root": str(mine)}, "target": {"root": str(tmp_path / "t")}})
    assert main(["generate-demo", "--config", str(cfg)]) == 2
    assert f"source.root: '{mine}' is outside" in capsys.readouterr().err
    assert sorted(mine.iterdir()) == [sentinel] and not (tmp_path / "t").exists()


def test_demo_oracle_trains_as_long_as_the_longest_chain_behind_upst():
    """docs/method.md's rule for the demo's upper bound: the target oracle gets as many iterations as
    source only + adaptation + every target-guided round + every self-training round, so a change of
    one stage's budget without the oracle's fails here."""
    config = load_config(REPO / "config.yaml")
    chain = (config["source_only"]["iterations"] + config["adapt"]["iterations"]
             + config["tgaa"]["max_rounds"] * config["tgaa"]["iterations"]
             + config["selftrain"]["rounds"] * config["selftrain"]["iterations"])
    assert chain == 600 + 200 + 2 * 200 + 200
    assert config["ablation"]["oracle_iterations"] == chain
