"""The command registry of ``uncerda``: the ``@command`` decorator and the config options every stage shares.

Apart from the command modules (:mod:`.stages`, :mod:`.report`) so that each registers its commands
without importing the package ``__init__`` that imports them all.
"""

from __future__ import annotations

import argparse
import json

from uncerda_core.errors import UncerdaError

COMMANDS: dict[str, tuple[str, callable]] = {}


def command(name: str, help_text: str):
    """Register ``func`` as ``uncerda <name>``: called with ``p=`` to add its arguments, with ``args=`` to run."""
    def register(func):
        COMMANDS[name] = (help_text, func)
        return func
    return register


def config_from_args(args) -> dict:
    """The validated config of a command: ``--config`` files or ``--config-json``, then every ``--set``."""
    from uncerda_core.config import deep_merge, load_config
    overrides = {}
    for item in getattr(args, "set", None) or []:
        key, _, value = item.partition("=")
        import yaml
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    check_paths = getattr(args, "check_paths", True)
    if getattr(args, "config_json", None) is not None:
        try:
            given = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise UncerdaError(f"--config-json: not valid JSON: {exc}") from exc
        if not isinstance(given, dict):
            raise UncerdaError(f"--config-json: the config must be a mapping, got {type(given).__name__}")
        return load_config(overrides=deep_merge(given, overrides), check_paths=check_paths)
    return load_config(*args.config, overrides=overrides, check_paths=check_paths)


def has_config(args) -> bool:
    return bool(args.config) or getattr(args, "config_json", None) is not None


def add_config_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    source = p.add_mutually_exclusive_group(required=required)
    source.add_argument("--config", action="append", default=None, metavar="YAML",
                        help="experiment config (repeat to layer presets; later files override)")
    # The workflow's route: each job gets the config its Snakemake process resolved, so a dry run or a
    # second invocation never changes what a running workflow's jobs read.
    source.add_argument("--config-json", metavar="JSON",
                        help="the whole config as one JSON mapping (how the workflow passes its resolved config)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.batch_size=4")
