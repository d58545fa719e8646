"""What the training and token-store tests share: real gsm8k samples, the SmolLM2 tokenizer's
folder, and a mixture file written as the mixture stage writes one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TRAIN = ROOT.parent / "shared" / "data" / "gsm8k_train" / "train.jsonl"
TOKENIZER = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

NEEDS_DATA = [
    pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"{GSM8K_TRAIN} absent (../shared/data)"),
    pytest.mark.skipif(
        not TOKENIZER.is_dir(), reason="resources/models not filled: run ./install.sh"
    ),
]


def gsm8k(n: int) -> list[dict]:
    with open(GSM8K_TRAIN) as f:
        return [json.loads(next(f)) for _ in range(n)]


def write_mixture(path: Path, records: list[dict], tokenizer_path: Path) -> int:
    """A mixture parquet (question, answer, tokens: the sample's chat-template length, as the
    mixture stage counts it) of `records`; returns its tokens."""
    import polars as pl
    from synthllm.stages.mixtures import count_tokens

    frame = pl.DataFrame(
        {"question": [r["question"] for r in records], "answer": [r["answer"] for r in records]}
    )
    tokens = count_tokens(frame, str(tokenizer_path), SYSTEM)
    frame.with_columns(pl.Series("tokens", tokens, dtype=pl.Int32)).write_parquet(path)
    return int(tokens.sum())
