"""An outside model (synthllm outside_model): one entry of config key `models.outside`, a
model evaluated as it is (paper Table 2's Instruct models and other data sets' models), staged
as a folder that the evaluation stage reads as it reads a trained checkpoint.

The folder links every file of the model (a hub model's staged snapshot, or a local folder)
except its tokenizer and generation config, which it writes: the tokenizer with the entry's
chat template (its own, or the entry's Jinja file), and a generation config whose end tokens
are the model's own plus the template's end of turn (synthllm.core.chat.end_of_turn_ids), so
that generation stops where the template closes the answer (an Instruct model whose
generation config names only its eos would run on to max_new_tokens). The weights are linked,
not copied: a 70B model is 140 GB.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from synthllm.core.chat import end_of_turn_ids, turn_end_token
from synthllm.core.files import write_counts
from synthllm.core.models import hub_cache, hub_offline, hub_repo
from synthllm.errors import SynthllmError

log = logging.getLogger(__name__)


class OutsideModelError(SynthllmError):
    """A bad models.outside entry; the message names the config key."""


def model_folder(model: str, revision: str | None, hub: dict, key: str) -> Path:
    """The folder of `model`'s files: a local folder as it is, a hub model's snapshot in the
    staged cache (downloaded there only when config key models.hub.offline is false)."""
    if hub_repo(model) is None:
        folder = Path(model)
        if not (folder / "config.json").is_file():
            raise OutsideModelError(f"config key {key}.model: {model} is no model folder")
        return folder.absolute()
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            model,
            revision=revision,
            cache_dir=hub_cache(hub),
            local_files_only=hub_offline(),
            ignore_patterns=list(hub.get("ignore_patterns", [])),
        )
    )


def stage_outside_model(spec: dict, dest: str | os.PathLike, hub: dict, key: str) -> dict:
    """Write the folder of one outside model (`spec`: label, model, revision, chat_template)
    at `dest`; what it holds, for the counts."""
    from transformers import AutoTokenizer, GenerationConfig

    model, revision = spec["model"], spec.get("revision")
    source = model_folder(model, revision, hub, key)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if spec.get("chat_template"):
        tokenizer.chat_template = Path(spec["chat_template"]).read_text()
    if not tokenizer.chat_template:
        raise OutsideModelError(
            f"config key {key}.chat_template: {model} ships no chat template; name a Jinja file"
        )
    turn_end = turn_end_token(tokenizer)
    if turn_end is None:
        log.warning(
            "%s: its chat template's assistant turn ends with no special token; generation "
            "stops on the model's end tokens only",
            model,
        )
    try:
        generation = GenerationConfig.from_pretrained(source)
    except OSError:  # a model without generation_config.json: its config's defaults
        from transformers import AutoConfig

        generation = GenerationConfig.from_model_config(AutoConfig.from_pretrained(source))
    own = generation.eos_token_id
    own = [own] if isinstance(own, int) else list(own or [])
    generation.eos_token_id = sorted(set(own) | set(end_of_turn_ids(tokenizer)))
    dest = Path(dest)
    scratch = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    tokenizer.save_pretrained(scratch)
    generation.save_pretrained(scratch)
    written = {p.name for p in scratch.iterdir()}
    # the model's own tokenizer files are replaced by the ones written (a stale
    # tokenizer.model beside a new tokenizer.json would be read by slow tokenizers)
    tokenizer_files = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"}
    tokenizer_files |= {"special_tokens_map.json", "chat_template.jinja", "chat_template.json"}
    tokenizer_files |= {"vocab.json", "merges.txt", "added_tokens.json"}
    linked = []
    for path in sorted(source.iterdir()):
        if path.name in written or path.name in tokenizer_files or path.name.startswith("."):
            continue
        (scratch / path.name).symlink_to(path.absolute())
        linked.append(path.name)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(scratch, dest)
    return {
        "source": str(source),
        "linked": len(linked),
        "end_token_ids": generation.eos_token_id,
        "turn_end_token_id": turn_end,
    }


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """One outside model (settings `model`: its entry of config key models.outside without
    its layout and group) as the folder `outputs["final"]`, with `outputs["counts"]`
    (rules/11_evaluate.smk); execution `hub` is config key models.hub."""
    spec = settings["model"]
    key = f"models.outside[label={spec['label']}]"
    facts = stage_outside_model(spec, outputs["final"], execution.get("hub") or {}, key)
    counts = write_counts(
        outputs["counts"], "outside_model", 1, 1, {}, model=spec["model"], **facts
    )
    log.info(
        "outside model %s: %d files linked from %s", spec["label"], facts["linked"], facts["source"]
    )
    return counts
