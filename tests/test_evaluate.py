"""Evaluation stage on the real small model and real benchmark files: NLL, summary, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from synthllm.core.eval_data import BENCHMARKS
from synthllm.core.files import write_json, write_parquet
from synthllm.core.grading import grade
from synthllm.stages.eval_nll import encode_for_nll, run_nll
from synthllm.stages.eval_summary import run_summary
from synthllm.stages.evaluate import load_problems, run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "benchmarks"
MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")
needs_model = pytest.mark.skipif(
    not (MODEL / "config.json").exists(), reason="resources/models not filled: run ./install.sh"
)
BENCH = {name: str(DATA / name / "test.jsonl") for name in BENCHMARKS}


@needs_data
@needs_model
def test_nll_is_the_same_batched_or_alone_and_masks_the_prompt(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    two = {"math": BENCH["math"], "college_math": BENCH["college_math"]}
    for batch_size in (1, 4):
        run_nll(
            inputs={"checkpoint": str(MODEL), "benchmarks": list(two.values())},
            outputs={
                "nll": str(tmp_path / f"nll{batch_size}.parquet"),
                "counts": str(tmp_path / f"counts{batch_size}.json"),
            },
            settings={
                "benchmarks": two,
                "max_records": 2,
                "seed": 0,
                "system_prompt": SYSTEM,
                "nll": {"max_tokens": 192, "dtype": "float32"},
            },
            execution={"threads": 1, "nll": {"batch_size": batch_size}},
        )
    alone = pl.read_parquet(tmp_path / "nll1.parquet")
    batched = pl.read_parquet(tmp_path / "nll4.parquet")
    assert alone["id"].to_list() == batched["id"].to_list()
    assert batched["target_kind"].to_list() == ["solution", "solution", "answer", "answer"]
    for a, b in zip(alone["nll_sum"], batched["nll_sum"]):
        assert math.isclose(a, b, rel_tol=1e-4)

    # by hand for the first record: only the target's tokens are scored
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    problem = load_problems(two, 2, 0)[0]
    ids, prompt_len, _, truncated = encode_for_nll(tokenizer, problem, SYSTEM, 192)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    expected = -sum(float(logp[t - 1, ids[t]]) for t in range(prompt_len, len(ids)))
    assert math.isclose(alone["nll_sum"][0], expected, rel_tol=1e-4)
    assert alone["tokens"][0] == len(ids) - prompt_len and alone["truncated"][0] == truncated
    assert json.loads((tmp_path / "counts1.json").read_text())["out"] == 4


def _eval_dir(
    folder: Path,
    model: str,
    budget: int,
    tokens: int,
    answers: dict[str, str],
    nll_per_token: float,
) -> str:
    """An eval folder graded from hand-written completions (one problem per benchmark)."""
    from synthllm.stages.eval_nll import NLL_SCHEMA
    from synthllm.stages.evaluate import PREDICTIONS_SCHEMA

    rows, nll_rows = [], []
    for name in BENCHMARKS:
        gold = "4"
        completion = f"So the answer is $\\boxed{{{answers.get(name, '5')}}}$."
        rows.append(
            {
                "benchmark": name,
                "id": "0",
                "question": "2+2?",
                "gold": gold,
                "messages": "[]",
                "completion": completion,
                "finish_reason": "stop",
                **grade(completion, gold, name),
            }
        )
        nll_rows.append(
            {
                "benchmark": name,
                "id": "0",
                "target_kind": "answer",
                "tokens": 10,
                "truncated": False,
                "nll_sum": 10 * nll_per_token,
            }
        )
    write_parquet(rows, PREDICTIONS_SCHEMA, folder / "predictions.parquet")
    write_parquet(nll_rows, NLL_SCHEMA, folder / "nll.parquet")
    write_json(folder / "settings.json", {"model": model, "budget": budget, "tokens": tokens})
    return str(folder)


def test_summary_long_format_and_average(tmp_path):
    base = _eval_dir(tmp_path / "m" / "0", "m", 0, 0, {}, 2.0)
    # right on gsm8k and math (as 4.0 and \frac{8}{2}), wrong elsewhere
    trained = _eval_dir(
        tmp_path / "m" / "100", "m", 100, 5000, {"gsm8k": "4.0", "math": "\\frac{8}{2}"}, 1.5
    )
    run_summary(
        inputs={
            name: [f"{d}/{name}.{ext}" for d in (trained, base)]
            for name, ext in (("predictions", "parquet"), ("settings", "json"), ("nll", "parquet"))
        },
        outputs={
            "summary": str(tmp_path / "summary.parquet"),
            "csv": str(tmp_path / "s.csv"),
            "markdown": str(tmp_path / "s.md"),
        },
        settings={},
        execution={"threads": 1},
    )
    summary = pl.read_parquet(tmp_path / "summary.parquet")
    assert summary.schema == {
        "model": pl.String,
        "budget": pl.Int64,
        "tokens": pl.Int64,
        "benchmark": pl.String,
        "metric": pl.String,
        "value": pl.Float64,
    }
    assert summary["budget"].to_list()[0] == 0  # sorted by budget
    assert len(summary) == 2 * 3 * 7

    def value(budget, benchmark, metric):
        return summary.filter(
            (pl.col("budget") == budget)
            & (pl.col("benchmark") == benchmark)
            & (pl.col("metric") == metric)
        )["value"].item()

    assert value(100, "gsm8k", "accuracy") == 100.0 == value(100, "math", "accuracy_harness")
    assert value(100, "olympiadbench", "accuracy") == 0.0
    assert math.isclose(value(100, "average", "accuracy"), 200 / 6)
    assert value(0, "average", "accuracy_harness") == 0.0
    assert math.isclose(value(100, "average", "nll"), 1.5)
    assert summary.filter(pl.col("budget") == 100)["tokens"].unique().to_list() == [5000]
    assert "| m | 100 | 5000 | accuracy |" in (tmp_path / "s.md").read_text()
    assert (tmp_path / "s.csv").read_text().splitlines()[0].endswith("gaokao2023en,average")


ENGINE = {"backend": "vllm", "dtype": "float32", "max_model_len": 1024}
ENGINE_EXECUTION = {
    "enforce_eager": True,
    "kv_cache_gib": 1,
    "tensor_parallel_size": 1,
    "gpus": 0,
    "batch_size": 32,
}


def evaluate_parts(tmp_path: Path, train_counts: Path, **execution) -> dict:
    """The four parts of an evaluate job of checkpoint smol/0, one problem per benchmark."""
    out = tmp_path / "eval" / "smol" / "0"
    return {
        "inputs": {
            "checkpoint": str(MODEL),
            "train_counts": str(train_counts),
            "benchmarks": list(BENCH.values()),
        },
        "outputs": {
            name: str(out / file)
            for name, file in (
                ("predictions", "predictions.parquet"),
                ("settings", "settings.json"),
                ("counts", "counts.json"),
            )
        },
        "settings": {
            "label": "smol",
            "budget": 0,
            "benchmarks": BENCH,
            "max_records": 1,
            "seed": 0,
            "system_prompt": SYSTEM,
            "engine": ENGINE,
            "max_new_tokens": 16,
            "grade_timeout_s": 3,
        },
        "execution": {"threads": 1, "chunk_size": 256, "engine": ENGINE_EXECUTION, **execution},
    }


class FakeEngine:
    """A backend that answers every request with a boxed 4, and can fail after some calls
    (a killed job)."""

    def __init__(self, calls: list, fail_after: int | None = None):
        self.calls, self.fail_after = calls, fail_after

    def generate(self, requests, sampling, positions):
        from synthllm.core.llm import Completion

        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("killed")
        self.calls.append(list(positions))
        return [Completion("The answer is $\\boxed{4}$.", "stop") for _ in requests]

    def close(self):
        pass


@needs_data
def test_evaluate_resumes_whatever_the_execution_knobs(tmp_path):
    """The progress of a killed evaluation is kept when only execution keys change (chunk
    size, eager mode, KV cache, tensor parallelism): its fingerprint has none of them."""
    train_counts = tmp_path / "train_counts.json"
    train_counts.write_text(json.dumps({"tokens": 1234}))
    calls = []
    first = evaluate_parts(tmp_path, train_counts, chunk_size=2)
    with pytest.raises(RuntimeError, match="killed"):
        run(**first, open_backend_fn=lambda spec: FakeEngine(calls, fail_after=1))
    assert calls == [[0, 1]]
    knobs = {"enforce_eager": False, "kv_cache_gib": 4, "tensor_parallel_size": 2, "gpus": 2}
    again = evaluate_parts(
        tmp_path, train_counts, chunk_size=4, engine={**ENGINE_EXECUTION, **knobs}
    )
    specs = []
    counts = run(**again, open_backend_fn=lambda spec: specs.append(spec) or FakeEngine(calls))
    assert calls == [[0, 1], [2, 3, 4, 5]]
    assert counts["resumed"] == 2 and counts["generated"] == 4
    assert specs[0].tensor_parallel_size == 2 and specs[0].model == str(MODEL)
    settings = json.loads(Path(again["outputs"]["settings"]).read_text())
    assert settings["engine"] == dict(sorted({**ENGINE, **ENGINE_EXECUTION, **knobs}.items()))
    assert settings["tokens"] == 1234 and settings["budget"] == 0 and settings["model"] == "smol"

    # a setting that changes the completions starts afresh
    calls.clear()
    with pytest.raises(RuntimeError, match="killed"):
        run(**first, open_backend_fn=lambda spec: FakeEngine(calls, fail_after=1))
    changed = evaluate_parts(tmp_path, train_counts)
    changed["settings"]["max_new_tokens"] = 8
    counts = run(**changed, open_backend_fn=lambda spec: FakeEngine(calls))
    assert counts["resumed"] == 0 and counts["generated"] == 6


@needs_data
@needs_model
def test_evaluate_cli_on_the_small_model(tmp_path):
    """One problem per benchmark, a few tokens: a real vLLM run through the CLI."""
    train_counts = tmp_path / "train_counts.json"
    train_counts.write_text(json.dumps({"tokens": 1234}))
    out = tmp_path / "eval" / "smol" / "0"
    parts = evaluate_parts(tmp_path, train_counts)
    subprocess.run(
        [sys.executable, "-m", "synthllm", "evaluate"]
        + [arg for name, part in parts.items() for arg in (f"--{name}", json.dumps(part))],
        check=True,
        cwd=ROOT,
    )
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions["benchmark"].to_list() == list(BENCHMARKS)
    assert predictions["completion"].str.len_chars().min() > 0
    first = json.loads(predictions["messages"][0])
    assert first[0] == {"role": "system", "content": SYSTEM} and first[1]["role"] == "user"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["tokens"] == 1234 and settings["sampling"]["max_new_tokens"] == 16
    assert set(settings["benchmarks"]) == set(BENCHMARKS)
    assert not (out / "predictions.parquet.progress.jsonl").exists()
