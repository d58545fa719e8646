"""A stage's settings, read from the config through `config/schema.yaml`, the one place that
holds every key's type, range, default and description.

The schema also says which keys only change how a job runs (`execution: true`: GPU counts,
tensor-parallel size, eager mode, KV-cache size, chunk size, threads, batch sizes of
batching-invariant code, retries, timeouts of a server). A stage gets two dicts:

- `settings`: everything that changes its outputs. It is the rule's params (so a change
  reruns the job and its dependants) and the fingerprint of resumable generation;
- `execution`: the rest. Changing it reruns nothing and keeps in-flight progress.

Both keep the config's nesting. The workflow (rules/common.smk) builds them with
`stage_settings`; a stage joins a part back with `merged` where one object needs both
(a backend spec, say). Only the standard library and yaml are imported here: the workflow's
own process reads this module.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import yaml

from synthllm.errors import SynthllmError

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


class SettingsError(SynthllmError):
    """A config key that no schema entry describes, or a settings part a stage lacks."""


@cache
def schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def _resolve(node: dict) -> dict:
    """A schema node with its local $ref (#/$defs/...) resolved; its own keys win."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target = schema()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(target), **{k: v for k, v in node.items() if k != "$ref"}}


def schema_node(key: str) -> dict:
    """The schema of a dotted config key, e.g. `generation.level2` or `models.generator`."""
    node = schema()
    for part in key.split("."):
        props = _resolve(node).get("properties", {})
        if part not in props:
            raise SettingsError(f"config key {key}: no such key in {SCHEMA.name}")
        node = props[part]
    return _resolve(node)


_MISSING = object()


def split(value, node: dict) -> tuple:
    """(what changes outputs, what only changes how the job runs) of one config value; a
    part that is empty on one side is _MISSING there."""
    node = _resolve(node)
    if node.get("execution"):
        return _MISSING, value
    if isinstance(value, dict) and "properties" in node:
        settings, execution = {}, {}
        for key, item in value.items():
            s, e = split(item, node["properties"].get(key, {}))
            if s is not _MISSING:
                settings[key] = s
            if e is not _MISSING:
                execution[key] = e
        return settings, (execution or _MISSING)
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        parts = [split(item, node["items"]) for item in value]
        if any(e is not _MISSING for _, e in parts):
            return [s for s, _ in parts], [{} if e is _MISSING else e for _, e in parts]
    return value, _MISSING


def lookup(config: dict, key: str):
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise SettingsError(f"config key {key} is not set")
        value = value[part]
    return value


def stage_settings(config: dict, *merge: str, **named: str) -> tuple[dict, dict]:
    """A stage's (settings, execution) from the config: the keys of each config key in
    `merge` at the top level, and each config key of `named` under its name, e.g.
    `stage_settings(config, "generation.level2", model="models.generator")`."""
    settings, execution = {}, {}
    parts = [(None, key) for key in merge] + list(named.items())
    for name, key in parts:
        node = schema_node(key)
        s, e = split(copy.deepcopy(lookup(config, key)), node)
        if name is None:
            settings.update({} if s is _MISSING else s)
            execution.update({} if e is _MISSING else e)
            continue
        if s is not _MISSING:
            settings[name] = s
        if e is not _MISSING:
            execution[name] = e
    return settings, execution


def _filled(value, node: dict):
    """`value` with every default of `node` filled in where it leaves a key out, at every
    depth, as validation (set_default) fills a config."""
    node = _resolve(node)
    if not isinstance(value, dict) or "properties" not in node:
        return value
    value = dict(value)
    for key, item in node["properties"].items():
        if key not in value and "default" in item:
            value[key] = copy.deepcopy(item["default"])
        if key in value:
            value[key] = _filled(value[key], item)
    return value


@cache
def _schema_default(key: str) -> dict:
    node = schema_node(key)
    return _filled(node.get("default", {}), node)


def schema_default(key: str) -> dict:
    """The defaults of a dotted config key, e.g. `graph.walks`: what validation fills in
    where a config leaves the key out (or sets it to {}, for a key without a default of its
    own); a setting without a default is absent. For an object built from a partial entry
    (a backend spec in a test or benchmark), so that a default is written only in the
    schema; unlike schema_defaults it needs no valid config, so it also serves keys with
    required settings (`models.generator`). A fresh copy each call: callers may change it."""
    return copy.deepcopy(_schema_default(key))


def merged(settings: dict, execution: dict, name: str) -> dict:
    """One named part of a stage's settings with its execution keys joined back in."""
    if name not in settings and name not in execution:
        raise SettingsError(f"the stage's settings have no part {name!r}")
    return {**settings.get(name, {}), **execution.get(name, {})}


def schema_defaults(**keys) -> dict:
    """The smallest valid config with `keys` (e.g. models=...) and every other default of the
    schema filled in, as the workflow validates it: for tests and benchmarks that build a
    stage's settings without a config file."""
    from snakemake.utils import validate

    config = {"results": "results", "corpus": {"sources": [{"name": "x", "glob": "x"}]}, **keys}
    validate(config, str(SCHEMA), set_default=True)
    return config
