"""The config schema as data: the one place the settings' defaults and enumerations are written.

The schema is ``workflow/schemas/config.schema.yaml``, shipped in the package as
``resources/config.schema.yaml``. This module only reads it, so that the data and model layers can
take their enumerations (data set names, architectures, pseudo-label methods) from it without
importing the validation in :mod:`uncerda_core.config`, which sits above them.
"""

from __future__ import annotations

from importlib import resources

import yaml

_SCHEMA: dict | None = None


def schema() -> dict:
    """The parsed schema (read once)."""
    global _SCHEMA
    if _SCHEMA is None:
        text = resources.files("uncerda_core").joinpath("resources/config.schema.yaml").read_text()
        _SCHEMA = yaml.safe_load(text)
    return _SCHEMA


def enum(key: str) -> tuple:
    """The values the schema allows for ``key`` ("section.name"; an array's items for a list setting)."""
    root = node = schema()
    for part in key.split("."):
        node = node["properties"][part]
    if node.get("type") == "array":
        node = node["items"]
    if "$ref" in node:  # "#/definitions/<name>": a list the schema writes once for several keys
        node = root["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return tuple(node["enum"])
