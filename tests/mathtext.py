"""Real math text and sample tables shared by the dedup, decontamination and mixture tests."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GSM8K_TRAIN = SHARED / "gsm8k_train" / "train.jsonl"
BENCH_DIR = SHARED / "benchmarks"

needs_gsm8k = pytest.mark.skipif(
    not GSM8K_TRAIN.exists(), reason=f"{GSM8K_TRAIN} absent (../shared/data)"
)
needs_bench = pytest.mark.skipif(
    not BENCH_DIR.is_dir(), reason=f"{BENCH_DIR} absent (../shared/data)"
)


def samples(
    questions: list[str],
    levels: list[int] | None = None,
    statuses: list[str] | None = None,
    answers: list[str] | None = None,
) -> pl.DataFrame:
    n = len(questions)
    levels = levels or [1] * n
    return pl.DataFrame(
        {
            "question_id": [f"L{lvl}-d{i:05d}-c0-q0" for i, lvl in enumerate(levels)],
            "level": pl.Series(levels, dtype=pl.Int8),
            "question": questions,
            "answer": answers or [f"The answer is \\boxed{{{i}}}." for i in range(n)],
            "doc_ids": [[f"doc-{i}"] for i in range(n)],
            "status": statuses or ["ok"] * n,
        }
    )


def stage_outputs(folder: Path, stage: str, **names: str) -> dict[str, str]:
    """A stage's `outputs` argument: each name (with its file extension) as a file
    `<stage>-<name>.<ext>` in `folder`."""
    return {name: str(folder / f"{stage}-{name}.{ext}") for name, ext in names.items()}


def gsm8k_train(n: int) -> list[dict]:
    """The first n GSM8K train records (question, answer)."""
    return [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[:n]]


def benchmark_records(name: str) -> list[dict]:
    """Every record of one benchmark's test file, as the evaluation reads it (question, gold)."""
    from synthllm.core.eval_data import load_benchmark

    return load_benchmark(name, str(BENCH_DIR / name / "test.jsonl"))


def boxed(answers: list[str]) -> list[str]:
    """Answer texts whose final answer (the last \\boxed{}) is each of `answers`."""
    return [f"So the final answer is $\\boxed{{{a}}}$." for a in answers]
