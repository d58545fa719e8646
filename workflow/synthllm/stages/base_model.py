"""Budget 0 of every model (synthllm base_model): the base model of one entry of config
key `models.train`, pretrained or built from scratch, written untrained as an HF folder,
the starting point of every budget's training and what evaluation scores at D = 0.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from synthllm.core.chat import end_of_turn_ids, turn_end_token
from synthllm.core.models import hub_source
from synthllm.stages.train_settings import TrainError

log = logging.getLogger(__name__)

ARCHITECTURE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "tie_word_embeddings",
)


@dataclass(frozen=True, kw_only=True)
class TrainModel:
    """One entry of config key `models.train`: a base model to fine-tune.

    `init: pretrained` fine-tunes the weights of `model` (an HF folder or hub id);
    `init: scratch` builds a fresh Llama from `model`'s config with the `architecture`
    overrides, initialised with `seed`, and keeps `model`'s tokenizer. `chat_template`
    (a Jinja file) replaces the tokenizer's template, for base models that ship none.
    """

    label: str
    model: str
    init: str
    architecture: dict | None = None  # init scratch only; the schema has no default
    seed: int
    chat_template: str | None
    revision: str | None = None  # a hub model's commit (synthllm fetch-models); no default

    @classmethod
    def from_config(cls, cfg: dict, key: str = "models.train[]") -> TrainModel:
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names - set(cfg) if n not in ("architecture", "revision"))
        if missing:
            raise TrainError(f"config key {key}: missing setting(s) {missing}")
        spec = cls(**{k: v for k, v in cfg.items() if k in names})
        if spec.init not in ("pretrained", "scratch"):
            raise TrainError(
                f"config key {key}.init: must be pretrained or scratch (got {spec.init!r})"
            )
        if spec.init == "pretrained" and spec.architecture:
            raise TrainError(f"config key {key}.architecture: only for init: scratch")
        unknown = sorted(set(spec.architecture or {}) - set(ARCHITECTURE_KEYS))
        if unknown:
            raise TrainError(f"config key {key}.architecture: unknown key(s) {unknown}")
        return spec


def scratch_config(base_config, architecture: dict, key: str = "models.train[]"):
    """`base_config` (a LlamaConfig) with the architecture overrides; head_dim follows the
    hidden size unless given."""
    config = base_config.__class__.from_dict(base_config.to_dict())
    for name, value in architecture.items():
        setattr(config, name, value)
    heads = config.num_attention_heads
    if "head_dim" not in architecture:
        if config.hidden_size % heads:
            raise TrainError(
                f"config key {key}.architecture: hidden_size {config.hidden_size} "
                f"is not a multiple of num_attention_heads {heads}"
            )
        config.head_dim = config.hidden_size // heads
    if heads % config.num_key_value_heads:
        raise TrainError(
            f"config key {key}.architecture: num_attention_heads {heads} is not a "
            f"multiple of num_key_value_heads {config.num_key_value_heads}"
        )
    return config


def materialise_base(
    spec: TrainModel,
    dest: str | os.PathLike,
    counts: str | os.PathLike,
    key: str = "models.train[]",
) -> dict:
    """Budget 0: write the untrained base model as an HF folder at `dest` (the starting
    point of every budget's training and what evaluation scores at D = 0)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from synthllm.core.files import write_counts

    source, pinned = hub_source(spec.model, spec.revision)
    tokenizer = AutoTokenizer.from_pretrained(source, **pinned)
    if spec.chat_template:
        tokenizer.chat_template = Path(spec.chat_template).read_text()
    if not tokenizer.chat_template:
        raise TrainError(
            f"config key {key}.chat_template: {spec.model} ships no chat "
            "template; name a Jinja file"
        )
    if turn_end_token(tokenizer) is None:
        raise TrainError(
            f"config key {key}.chat_template: its assistant turns do not end with a special "
            f"token of {spec.model}'s tokenizer, so a model trained on it could not stop"
        )
    if spec.init == "scratch":
        config = scratch_config(
            AutoConfig.from_pretrained(source, **pinned), spec.architecture or {}, key
        )
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype="auto", **pinned)
    # every checkpoint trained from this one inherits its end tokens (generation_config.json),
    # and generation from any of them stops where training taught it to end a turn
    model.generation_config.eos_token_id = end_of_turn_ids(tokenizer)
    dest = Path(dest)
    scratch = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    model.save_pretrained(scratch, safe_serialization=True)
    tokenizer.save_pretrained(scratch)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(scratch, dest)
    n_params = sum(p.numel() for p in model.parameters())
    return write_counts(
        counts,
        "base_model",
        0,
        0,
        {},
        samples=0,
        tokens=0,
        steps=0,
        epochs=0,
        parameters=n_params,
        init=spec.init,
        model=spec.model,
    )


def run_base_model(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Budget 0: the untrained base model of one entry of config key models.train (settings
    `model`: that entry without its launch layout and training overrides) as the HF folder
    `outputs["final"]`, with `outputs["counts"]` (rules/10_train.smk)."""
    key = f"models.train[label={settings['model']['label']}]"
    spec = TrainModel.from_config(settings["model"], key)
    counts = materialise_base(spec, outputs["final"], outputs["counts"], key)
    log.info("base model %s: %d parameters", spec.label, counts["parameters"])
    return counts
