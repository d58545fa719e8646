"""Answers (the answer stage): one per question as in the paper, or verified by agreement."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from mathtext import gsm8k_train, needs_gsm8k
from synthllm.stages import answer
from synthllm.stages.answer import AnswerError, majority

ROOT = Path(__file__).resolve().parents[1]
HF_MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
needs_model = pytest.mark.skipif(
    not (HF_MODEL / "config.json").exists(), reason="SmolLM2 HF folder absent: run ./install.sh"
)


@pytest.mark.parametrize(
    "finals, expected",
    [
        (["\\frac{1}{2}", "0.5", "2", None], (0, 0.5)),  # equal by value, as the grader reads
        (["5", "(x+1)^2", "x^2+2x+1"], (1, 2 / 3)),  # symbolically equal
        (["3", "4"], (0, 0.5)),  # a tie goes to the first answer
        (["12", "\\$12", "12.00", "twelve", "13"], (0, 0.8)),  # the harness reads words too
        ([None, None, None], (0, 0.0)),  # no final answer agrees with nothing
    ],
)
def test_the_majority_groups_final_answers_with_the_harness_grader(finals, expected):
    kept, agreement = majority(finals, timeout_s=3.0)
    assert (kept, agreement) == (expected[0], pytest.approx(expected[1]))


def settings(samples: int, temperature: float) -> dict:
    return {
        "model": {"backend": "transformers", "model": str(HF_MODEL), "max_model_len": 1024},
        "sampling": {"temperature": temperature, "top_p": 0.95, "max_tokens": 40, "seed": 3},
        "verify": {"samples": samples, "min_agreement": 0.5, "timeout_s": 3.0},
    }


def questions(tmp_path: Path, n: int) -> str:
    rows = gsm8k_train(n)
    table = pl.DataFrame(
        {
            "question_id": [f"L1-d{i}-c0-q1" for i in range(n)],
            "level": pl.Series([1] * n, dtype=pl.Int8),
            "doc_ids": [[f"d{i}"] for i in range(n)],
            "question": [r["question"] for r in rows],
        }
    )
    path = tmp_path / "questions.parquet"
    table.write_parquet(path)
    return str(path)


def run(tmp_path: Path, n: int, **kw) -> tuple[dict, pl.DataFrame]:
    outputs = {"answers": str(tmp_path / "a.parquet"), "counts": str(tmp_path / "a.json")}
    counts = answer.run(
        inputs={"questions": [questions(tmp_path, n)]},
        outputs=outputs,
        settings=settings(**kw),
        execution={"chunk_size": 8, "model": {"batch_size": 8}},
    )
    return counts, pl.read_parquet(outputs["answers"])


@needs_model
@needs_gsm8k
def test_verified_answers_keep_the_majority_with_its_agreement(tmp_path):
    """Real sampled answers of the 135M model to real GSM8K questions."""
    counts, rows = run(tmp_path, 3, samples=3, temperature=0.8)
    assert counts["in"] == 3 and len(rows) == 3
    assert counts["verify"]["answers_sampled"] == 9
    for row in rows.to_dicts():
        assert len(row["votes"]) == 3
        kept, agreement = majority(row["votes"], 3.0)
        assert row["agreement"] == pytest.approx(agreement)
        assert row["final_answer"] == row["votes"][kept]
        if row["status"] == "low_agreement":
            assert agreement < 0.5
        elif row["status"] == "ok":
            assert agreement >= 0.5
    dropped = counts["dropped"].get("low_agreement", 0)
    assert dropped == (rows["status"] == "low_agreement").sum()
    mean = counts["verify"]["mean_agreement"]
    assert mean == pytest.approx(rows["agreement"].mean(), abs=1e-4)


@needs_model
@needs_gsm8k
def test_one_answer_per_question_is_the_papers_unverified_answer(tmp_path):
    counts, rows = run(tmp_path, 2, samples=1, temperature=0.0)
    assert rows["agreement"].null_count() == 2 and rows["votes"].to_list() == [[], []]
    assert "verify" not in counts and counts["in"] == 2


def test_verification_needs_sampled_answers_and_names_the_key(tmp_path):
    with pytest.raises(AnswerError, match="generation.answer.sampling.temperature"):
        answer.Answer(
            inputs={"questions": []},
            outputs={},
            settings=settings(samples=3, temperature=0.0),
            execution={},
        )
