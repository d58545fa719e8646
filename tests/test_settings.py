"""A stage's settings from the config: what changes outputs apart from what only changes how
a job runs (config/schema.yaml's `execution: true`), on the project's real configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate
from synthllm.settings import (
    SettingsError,
    lookup,
    merged,
    schema_default,
    schema_defaults,
    schema_node,
    stage_settings,
)

ROOT = Path(__file__).resolve().parents[1]


def config(name: str) -> dict:
    """A config as the workflow sees it: layered over the default, defaults filled in."""
    merged_config = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
    if name != "default":
        update_config(merged_config, yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text()))
    validate(merged_config, str(ROOT / "config" / "schema.yaml"), set_default=True)
    return merged_config


@pytest.mark.parametrize("name", ["default", "test", "paper"])
def test_engine_knobs_are_execution_and_sampling_is_a_setting(name):
    c = config(name)
    settings, execution = stage_settings(
        c, "generation.level2", model="models.generator", chunk_size="generation.chunk_size"
    )
    assert settings["sampling"] == c["generation"]["level2"]["sampling"]
    assert settings["model"]["model"] == c["models"]["generator"]["model"]
    for knob in ("tensor_parallel_size", "enforce_eager", "kv_cache_gib", "gpus"):
        assert knob not in settings["model"] and knob in execution["model"]
    assert "chunk_size" not in settings and execution["chunk_size"] == c["generation"]["chunk_size"]
    assert merged(settings, execution, "model") == c["models"]["generator"]


def test_training_launch_keys_are_execution():
    settings, execution = stage_settings(config("paper"), "train")
    assert {"threads", "cpu_processes", "checkpoint_every"} <= set(execution)
    assert {"learning_rate", "epochs", "global_batch_size"} <= set(settings)
    assert not set(settings) & set(execution)


def test_an_unknown_key_is_an_error_that_names_it():
    with pytest.raises(SettingsError, match="config key generation.level9: no such key"):
        stage_settings(config("default"), "generation.level9")


def test_schema_default_is_what_validation_fills_in():
    filled = schema_defaults(models={"train": [{"label": "m", "model": "m"}]})

    def keys(value: dict, prefix: str = ""):
        """The dotted keys of the objects in `value` that the schema describes by name (not
        the entries of a map such as mixtures.sets)."""
        for key, item in value.items():
            if isinstance(item, dict) and "properties" in schema_node(prefix + key):
                yield prefix + key
                yield from keys(item, f"{prefix}{key}.")

    checked = set(keys(filled)) - {"corpus", "models"}
    assert {"graph", "graph.walks", "models.embedding", "generation.level2.sampling"} <= checked
    for key in checked:
        assert schema_default(key) == lookup(filled, key), key
    # a key's own default wins over its $ref's (filter.synthetic.sampling over $defs/sampling)
    assert schema_default("filter.synthetic.sampling")["temperature"] == 0.8
    # a key with required settings: its other settings' defaults
    generator = schema_default("models.generator")
    assert "model" not in generator and generator["max_model_len"] == 2048
    # each call is a fresh copy
    schema_default("graph.walks")["topic_steps"].append(9)
    assert schema_default("graph.walks")["topic_steps"] == [1, 2]
