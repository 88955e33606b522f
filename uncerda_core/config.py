"""Experiment configuration: schema validation, defaults, and checks of the data roots.

The schema is ``workflow/schemas/config.schema.yaml`` (shipped in the package
as ``resources/config.schema.yaml``). The Snakefile and the console script
validate with it the same way, before any work starts.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from uncerda_core.artifacts import UncerdaError

_SCHEMA: dict | None = None


def schema() -> dict:
    global _SCHEMA
    if _SCHEMA is None:
        text = resources.files("uncerda_core").joinpath("resources/config.schema.yaml").read_text()
        _SCHEMA = yaml.safe_load(text)
    return _SCHEMA


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


def _coerce_strings(value, node: dict, root: dict):
    """Parse string leaves where the schema wants a number, boolean, array or null.

    Snakemake hands nested ``--config key='{sub: 4}'`` values over as strings;
    a value a user typed on the command line should mean what it says.
    """
    if "$ref" in node:
        node = root["definitions"][node["$ref"].split("/")[-1]]
    if isinstance(value, dict):
        props = node.get("properties", {})
        return {k: _coerce_strings(v, props[k], root) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_coerce_strings(v, node["items"], root) for v in value]
    if isinstance(value, str):
        wanted = node.get("type")
        wanted = set(wanted) if isinstance(wanted, list) else {wanted}
        for alt in node.get("oneOf", []):
            alt = root["definitions"][alt["$ref"].split("/")[-1]] if "$ref" in alt else alt
            wanted.add(alt.get("type"))
        if "string" not in wanted and wanted & {"integer", "number", "boolean", "array", "null"}:
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                return value
    return value


def validate_config(config: dict, source: str = "config") -> dict:
    """Validate ``config`` in place against the schema and fill its defaults.

    Raises :class:`UncerdaError` naming every offending key.
    """
    if not isinstance(config, dict):
        raise UncerdaError(f"{source}: the config must be a mapping, got {type(config).__name__}")
    config.update(_coerce_strings(config, schema(), schema()))
    errors = sorted(_Validator(schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n  ".join(_describe(e) for e in errors)
        raise UncerdaError(f"{source}: invalid configuration (schema workflow/schemas/config.schema.yaml):\n  {lines}")
    if config["adapt"]["init"] == "model_init" and config["model"]["init"] is None:
        raise UncerdaError(f"{source}: adapt.init is model_init but model.init is not set; point model.init "
                           "at a state dict, or use adapt.init: source_only")
    return config


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
    """Write ``config`` as YAML to ``path`` (atomically) unless the file already holds exactly it.

    Called by a workflow job (rule ``resolved_config``), never while the Snakefile is read, so that a
    dry run, or a second run stopped by the lock, writes nothing. Returns the path.
    """
    from uncerda_core.artifacts import write_text
    path = Path(path)
    text = yaml.safe_dump(config, sort_keys=True)
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)
    return str(path)
