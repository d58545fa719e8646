"""Question and answer lengths per level (the length_stats stage, paper §5.1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mathtext import gsm8k_train, needs_gsm8k
from synthllm.stages import length_stats
from synthllm.stages.length_stats import length_table, sample_per_level, weighted_quantile

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
needs_tokenizer = pytest.mark.skipif(
    not TOKENIZER.is_dir(), reason="resources/models not filled: run ./install.sh"
)


def test_weighted_quantiles_equal_numpy_inverted_cdf_with_equal_weights():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 500, 333)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        expected = np.quantile(values, q, method="inverted_cdf")
        assert weighted_quantile(values, np.ones(len(values)), q) == expected


def test_the_all_row_weights_a_subsampled_level_by_its_pool_share():
    # level 1: 10 records of length 10 measured for 1,000 in the pool; level 2: 10 of 100, all
    levels = np.array(["1"] * 10 + ["2"] * 10)
    lengths = np.array([10] * 10 + [100] * 10)
    table = length_table(levels, {"1": 1000, "2": 10}, lengths, lengths).to_dicts()
    by_level = {r["level"]: r for r in table}
    assert by_level["1"]["question_tokens_median"] == 10 and by_level["1"]["samples"] == 1000
    assert by_level["all"]["samples"] == 1010 and by_level["all"]["measured"] == 20
    # the pool is 99 % level 1: its p90 is level 1's length, not the sample's 50/50 mix
    assert by_level["all"]["answer_tokens_p90"] == 10
    assert by_level["all"]["question_tokens_mean"] == pytest.approx(
        (1000 * 10 + 10 * 100) / 1010, abs=0.05
    )
    assert (
        by_level["1"]["paper_question_median"] == 32
        and by_level["all"]["paper_answer_median"] is None
    )


def test_the_sample_is_seeded_capped_per_level_and_in_pool_order():
    pool = pl.DataFrame({"level": pl.Series([1] * 50 + [3] * 5, dtype=pl.Int8), "i": range(55)})
    a, b = sample_per_level(pool, 20, 7), sample_per_level(pool, 20, 7)
    assert a.equals(b) and a["level"].value_counts().sort("level")["count"].to_list() == [20, 5]
    assert a["i"].to_list() == sorted(a["i"].to_list())
    assert not sample_per_level(pool, 20, 8).equals(a)


@needs_tokenizer
@needs_gsm8k
def test_the_stage_measures_real_questions_and_answers(tmp_path):
    rows = gsm8k_train(300)
    pool = pl.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(300)],
            "level": pl.Series([1 + i % 3 for i in range(300)], dtype=pl.Int8),
            "question": [r["question"] for r in rows],
            "answer": [r["answer"] for r in rows],
        }
    )
    pool.write_parquet(tmp_path / "pool.parquet")
    outputs = {
        "csv": str(tmp_path / "stats.csv"),
        "md": str(tmp_path / "stats.md"),
        "counts": str(tmp_path / "stats.counts.json"),
    }
    counts = length_stats.run(
        inputs={"pool": str(tmp_path / "pool.parquet")},
        outputs=outputs,
        settings={
            "tokenizer": str(TOKENIZER),
            "tokenizer_revision": None,
            "length_sample": 60,
            "seed": 0,
        },
        execution={"threads": 1},
    )
    assert (counts["in"], counts["out"], counts["measured"]) == (300, 300, 180)
    table = pl.read_csv(outputs["csv"])
    assert table["level"].to_list() == ["1", "2", "3", "all"]
    assert table["samples"].to_list() == [100, 100, 100, 300]
    assert table["measured"].to_list() == [60, 60, 60, 180]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    sample = length_stats.sample_per_level(pool, 60, 0).filter(pl.col("level") == 2)
    exact = [len(tok(q, add_special_tokens=False)["input_ids"]) for q in sample["question"]]
    level2 = table.filter(pl.col("level") == "2").to_dicts()[0]
    assert level2["question_tokens_median"] == np.quantile(exact, 0.5, method="inverted_cdf")
    # GSM8K: questions of some 50 tokens, worked answers of some 100 and more
    assert 30 < level2["question_tokens_median"] < level2["answer_tokens_median"] < 400
    assert "| 2 | 100 |" in Path(outputs["md"]).read_text()
    assert json.loads(Path(outputs["counts"]).read_text())["stage"] == "length_stats"
