"""Experiment configuration: schema validation, defaults, and checks of the data roots.

The schema is ``workflow/schemas/config.schema.yaml`` (shipped in the package
as ``resources/config.schema.yaml``). The Snakefile and the console script
validate with it the same way, before any work starts.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import yaml

from uncerda_core.errors import UncerdaError
from uncerda_core.schema import schema


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" not in sub:
                    continue
                if name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
                elif isinstance(instance[name], dict) and isinstance(sub["default"], dict):
                    # A partial mapping whose default is a whole mapping (resources.train:
                    # {threads: 4}) keeps the default's other keys.
                    for key, value in sub["default"].items():
                        instance[name].setdefault(key, copy.deepcopy(value))
        yield from validate_properties(validator, properties, instance, schema_)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"{error.message} at '{where}'; allowed keys there: {', '.join(allowed)}"
    return f"'{where}': {error.message}"


def _resolve(node: dict, root: dict) -> dict:
    """The schema node behind a ``$ref`` (local ``#/definitions/...`` references only)."""
    while "$ref" in node:
        node = root["definitions"][node["$ref"].split("/")[-1]]
    return node


def _fits(value, node: dict, root: dict) -> bool:
    """Whether ``value`` is valid against the schema ``node`` (no defaults filled, nothing changed)."""
    return jsonschema.Draft7Validator({**node, "definitions": root.get("definitions", {})}).is_valid(value)


def _wants(node: dict, kind: str) -> bool:
    wanted = node.get("type")
    return kind in (wanted if isinstance(wanted, list) else [wanted])


def _parse_scalar(text: str):
    """A command-line string read as YAML, with ``1e-3`` (YAML 1.1 keeps it a string) as a number."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(parsed, str):
        for number in (int, float):
            try:
                return number(parsed)
            except ValueError:
                pass
    return parsed


def _coerce_strings(value, node: dict, root: dict):
    """Give values typed on the command line the type the schema asks for.

    ``snakemake --config source='{resize: [1280, 720]}'`` hands every nested value
    over as a string (``['1280', '720']``), ``model='{init: null}'`` as ``'null'``,
    and a top-level ``experiment=2024`` as an integer. A value the schema accepts as
    it is stays as it is unless it is a string whose YAML reading (number, boolean,
    null, list, mapping) the schema accepts too; alternatives (``oneOf``, ``anyOf``)
    are tried in order. A value that fits nowhere is returned in its most typed form,
    so that the schema's message shows what was meant (``16 is not one of [4, 8]``).
    """
    node = _resolve(node, root)
    alternatives = node.get("oneOf") or node.get("anyOf")
    if alternatives:
        for alt in alternatives:
            coerced = _coerce_strings(value, alt, root)
            if _fits(coerced, alt, root):
                return coerced
        return value
    if isinstance(value, str):
        parsed = _parse_scalar(value)
        if isinstance(parsed, str):
            return value
        parsed = _coerce_strings(parsed, node, root)
        if _fits(parsed, node, root) or not _fits(value, node, root):
            return parsed
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and _wants(node, "string") and not _fits(value, node, root):
        return str(value)
    if isinstance(value, dict):
        props = node.get("properties", {})
        return {k: _coerce_strings(v, props[k], root) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_coerce_strings(v, node["items"], root) for v in value]
    return value


# Files a ResNet-101 can start from; named in the error when model.init is missing.
RESNET101_INITS = ("DeepLab_resnet_pretrained_imagenet.pth (ImageNet)",
                   "DeepLab_resnet_pretrained_init-f81d91e8.pth (COCO)",
                   "a trained AdaptSegNet or ADVENT model")


def check_model(config: dict, given_model: dict) -> list[str]:
    """Problems of the ``model`` section that the schema alone cannot express.

    ``given_model``: the section as the user wrote it, before defaults were filled,
    so that keys the ResNet-101 has no use for are refused only when someone set them.
    """
    model = config["model"]
    problems = []
    if model["arch"] == "deeplabv2_resnet101":
        if model["output_stride"] != 8:
            problems.append(f"model.output_stride: deeplabv2_resnet101 is built at output stride 8 only, "
                            f"got {model['output_stride']}; set output_stride: 8 (4 exists for deeplabv2_small)")
        unused = [key for key in ("width", "blocks") if key in given_model]
        if unused:
            problems.append(f"model.{' and model.'.join(unused)}: deeplabv2_resnet101 has a fixed shape "
                            f"(width 64, blocks 3-4-23-3); remove {' and '.join(unused)}, which only "
                            "deeplabv2_small reads")
        if model["init"] is None:
            problems.append(
                "model.init: deeplabv2_resnet101 needs initial weights; from random ones, with frozen "
                "BatchNorm and Caffe-normalised inputs, the first loss is ~5e7 and every output is NaN "
                f"after one step. Set model.init to {', '.join(RESNET101_INITS[:-1])} or {RESNET101_INITS[-1]}, "
                "e.g. --config model='{init: /weights/DeepLab_resnet_pretrained_imagenet.pth}'")
    return problems


def _refuse_replaced_keys(config: dict, source: str) -> None:
    """Name the replacement of a key that older configs used, instead of a bare 'unknown key'."""
    model = config.get("model")
    if isinstance(model, dict) and "freeze_bn" in model:
        raise UncerdaError(
            f"{source}: model.freeze_bn was replaced by model.bn_mode; write bn_mode: frozen for freeze_bn: true "
            "or bn_mode: train for freeze_bn: false (bn_mode: train_frozen_affine is the reference code's BatchNorm)")


# One folder name: what the schema's pattern for ``experiment`` allows, apart from its "not dots alone".
_FOLDER_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def experiment_problem(name: object, results_dir: object = None) -> str | None:
    """Why ``name`` cannot be the ``experiment`` setting, or None when it can (or is not a string:
    the schema names a wrong type).

    Results go to ``<results_dir>/<experiment>/`` and logs to ``logs/<experiment>/``, so the name
    must be one folder of its own inside them: letters, digits, ``_``, ``.`` and ``-`` (no ``/``,
    so no way out through ``a/../..``), and not dots alone: ``.`` is results_dir itself and ``..``
    the folder above it (``snakemake --config experiment=..`` would write the run's ``config.yaml``
    over the project's own and every result into the project's root); ``...`` is refused with them.
    With both rules the folder is always a direct child of results_dir, whatever results_dir is.
    """
    if not isinstance(name, str):
        return None
    results_dir = results_dir if isinstance(results_dir, str) else schema()["properties"]["results_dir"]["default"]
    fix = ("Name the experiment with letters, digits, '_', '-' and '.', at least one of them not a dot, "
           "e.g. experiment: demo2 in the config file or --config experiment=demo2")
    if name and set(name) == {"."}:
        return (f"experiment: {name!r} is made only of dots; the experiment names the folder of this run's "
                f"results, {results_dir}/<experiment>/, and of its logs, logs/<experiment>/, but '.' is "
                f"{results_dir}/ itself and '..' the folder above it: this run's config.yaml and every result "
                f"would land there ('...' is refused with them). {fix}")
    if not _FOLDER_NAME.fullmatch(name):
        return (f"experiment: {name!r} is not one folder name: results go to {results_dir}/<experiment>/ "
                f"and logs to logs/<experiment>/, and a '/' or another character outside letters, digits, "
                f"'_', '-' and '.' could take them elsewhere. {fix}")
    return None


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place against the schema and fill its defaults.

    The ``experiment`` name gets a message of its own (:func:`experiment_problem`) in place of the
    schema's bare pattern error. Then check what the schema cannot: the model section against its
    architecture (:func:`check_model`), ``tgaa.k`` against the number of classes, and that
    ``adapt.init: model_init`` has a ``model.init``. Raises :class:`UncerdaError`
    naming every offending key.
    """
    if not isinstance(config, dict):
        raise UncerdaError(f"{source}: the config must be a mapping, got {type(config).__name__}")
    _refuse_replaced_keys(config, source)
    # Before the command line's strings are typed: experiment=~ would read as null, not as a bad name.
    experiment = experiment_problem(config.get("experiment"), config.get("results_dir"))
    config.update(_coerce_strings(config, schema(), schema()))
    given_model = copy.deepcopy(config.get("model") or {})
    errors = sorted(_Validator(schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if experiment:   # its own message replaces the schema's errors about the key
        errors = [e for e in errors if list(e.absolute_path)[:1] != ["experiment"]]
    if errors or experiment:
        lines = "\n  ".join(([experiment] if experiment else []) + [_describe(e) for e in errors])
        raise UncerdaError(f"{source}: invalid configuration (schema workflow/schemas/config.schema.yaml):\n  {lines}")
    problems = check_model(config, given_model)
    if config["tgaa"]["k"] > config["model"]["num_classes"]:
        problems.append(f"tgaa.k: {config['tgaa']['k']} is more than the {config['model']['num_classes']} classes "
                        "(model.num_classes); S_k takes the k most uncertain of them")
    if config["selftrain"]["class_balanced"] and config["selftrain"]["loss"] != "rectified_seguncertainty":
        problems.append(f"selftrain.class_balanced needs selftrain.loss: rectified_seguncertainty "
                        f"(got {config['selftrain']['loss']!r}); set class_balanced: false or change the loss")
    if config["train"]["target_bn_stats"] and config["model"]["bn_mode"] == "frozen":
        problems.append("train.target_bn_stats: true re-estimates BatchNorm statistics, but model.bn_mode: frozen "
                        "keeps them fixed; set target_bn_stats: false or choose bn_mode train/train_frozen_affine")
    if config["adapt"]["init"] == "model_init" and config["model"]["init"] is None:
        problems.append("adapt.init is model_init but model.init is not set; point model.init "
                        "at a state dict, or use adapt.init: source_only")
    if problems:
        lines = "\n  ".join(problems)
        raise UncerdaError(f"{source}: invalid configuration:\n  {lines}")
    return config


def complete_model_section(model: dict, source: str = "model") -> dict:
    """A ``model`` section with the schema's defaults for the keys it lacks (e.g. one that a checkpoint
    written before a key existed records). A ``freeze_bn`` of older versions reads as ``bn_mode``
    (true: ``frozen``, false: ``train``); keys the schema does not know are kept as given."""
    node = schema()["properties"]["model"]
    known = {k: copy.deepcopy(v) for k, v in model.items() if k in node["properties"]}
    if "bn_mode" not in known and "freeze_bn" in model:
        known["bn_mode"] = "frozen" if model["freeze_bn"] else "train"
    wrapped = {"model": known}
    errors = list(_Validator({"type": "object", "properties": {"model": node},
                              "definitions": schema().get("definitions", {})}).iter_errors(wrapped))
    if errors:
        lines = "\n  ".join(_describe(e) for e in errors)
        raise UncerdaError(f"{source}: invalid model section:\n  {lines}")
    return {**model, **wrapped["model"]}


def schema_defaults() -> dict:
    """The config the schema alone resolves (every default, nothing set).

    For a command run by hand without a config: its settings are still built complete, from the
    same defaults the workflow's resolved config starts from.
    """
    return validate_config({}, source="the schema's defaults")


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(*paths: str | Path, overrides: dict | None = None, check_paths: bool = True) -> dict:
    """Read one or more YAML configs (later ones override), validate, fill defaults."""
    config: dict = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UncerdaError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UncerdaError(f"{path}: not valid YAML: {exc}") from exc
        config = deep_merge(config, loaded)
    if overrides:
        config = deep_merge(config, overrides)
    validate_config(config, source=", ".join(str(p) for p in paths) or "config")
    if check_paths:
        check_data_roots(config)
    return config


def check_data_roots(config: dict) -> None:
    """A missing data root fails here, before any job runs (unless the demo generates it)."""
    if config["demo"]["enabled"]:
        _check_translated_root(config, source_exists=False)   # the demo's source is generated later
        return
    for role in ("source", "target"):
        root = Path(config[role]["root"])
        if not root.is_dir():
            raise UncerdaError(
                f"{role}.root: data root '{root}' does not exist. Point {role}.root at your "
                f"{config[role]['dataset']} folder (e.g. --config {role}='{{root: /data/...}}'), "
                "or set demo.enabled: true to generate the embedded demo data.")
    init = config["model"]["init"]
    if init is not None and not Path(init).is_file():
        raise UncerdaError(f"model.init: checkpoint '{init}' not found")
    _check_translated_root(config, source_exists=True)
    _check_selection_labels(config)


def _check_selection_labels(config: dict) -> None:
    """Checkpoint selection reads target train labels: a Cityscapes root without its train labels'
    folder fails here (one look at a folder); a folder missing single label files fails in the
    labelled index of target train, which names each missing file."""
    target = config["target"]
    if not config["selection"]["enabled"]:
        return
    labels_dir = Path(target["root"]) / "gtFine" / target["train_split"]
    if not labels_dir.is_dir():
        raise UncerdaError(
            f"selection.enabled: checkpoint selection evaluates on held-out labelled target train images, "
            f"but {labels_dir} does not exist; add the {target['train_split']} labels or set "
            "selection.enabled to false (selection never uses the val split)")


def _check_translated_root(config: dict, source_exists: bool) -> None:
    """source.translated_root: the folder exists and, once the source does, holds every source image."""
    source = config["source"]
    if source["translated_root"] is None:
        return
    from uncerda_core.data.readers import list_samples, translated_images
    samples = (list_samples(source["dataset"], source["root"], source["split"], require_labels=False)
               if source_exists else [])
    translated_images([sample.image for sample in samples], source["translated_root"])


def check_demo_roots(config: dict) -> None:
    """The demo's roots must lie inside ``<results_dir>/data/``, the folder the demo owns.

    The workflow checks this when ``demo.enabled`` is true: its demo rule declares both roots as
    outputs, and Snakemake deletes a job's outputs before running it, so a root pointing at a user's
    data would be deleted and replaced by demo images. Paths are compared resolved (symbolic links
    followed, relative paths from the working directory).
    """
    owned_name = f"{config['results_dir']}/data"
    owned = Path(owned_name).resolve()
    roots = {}
    for role in ("source", "target"):
        root = Path(config[role]["root"]).resolve()
        if owned not in root.parents:
            raise UncerdaError(
                f"{role}.root: '{config[role]['root']}' is outside {owned_name}/, the only place the demo "
                f"writes: with demo.enabled: true the demo rule deletes and regenerates {role}.root. "
                f"For your own data set set demo.enabled: false (e.g. --config demo='{{enabled: false}}'); "
                f"for the demo, leave {role}.root under {owned_name}/ (e.g. {owned_name}/demo/{role}).")
        roots[role] = root
    source, target = roots["source"], roots["target"]
    if source == target or source in target.parents or target in source.parents:
        raise UncerdaError(f"source.root and target.root: '{config['source']['root']}' and "
                           f"'{config['target']['root']}' overlap; the demo needs two separate folders "
                           f"(e.g. {owned_name}/demo/source and {owned_name}/demo/target).")


def dumps(config: dict) -> str:
    """Canonical JSON of a config (or a part of it), for params and provenance."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def write_resolved_config(config: dict, path: str | Path) -> str:
    """Write ``config`` as YAML to ``path`` (atomically). Returns the path.

    Called by a workflow job (rule ``resolved_config``), never while the Snakefile is read, so that a
    dry run, or a second run stopped by the lock, writes nothing.
    """
    from uncerda_core.artifacts import write_text
    write_text(Path(path), yaml.safe_dump(config, sort_keys=True))
    return str(path)
