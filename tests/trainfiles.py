"""What the training and token-store tests share: real gsm8k samples, the SmolLM2 tokenizer's
folder, and a mixture file written as the mixture stage writes one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthllm.core.chat import sft_messages

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


def write_mixture(path: Path, records: list[dict], tokenizer) -> int:
    """A mixture parquet (question, answer, tokens: the sample's chat-template length) of
    `records`; returns its tokens."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tokens = [
        len(
            tokenizer.apply_chat_template(
                sft_messages(r["question"], r["answer"], SYSTEM), tokenize=True, return_dict=True
            )["input_ids"]
        )
        for r in records
    ]
    pq.write_table(
        pa.table(
            {
                "question": [r["question"] for r in records],
                "answer": [r["answer"] for r in records],
                "tokens": pa.array(tokens, pa.int32()),
            }
        ),
        path,
    )
    return sum(tokens)
