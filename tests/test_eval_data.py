"""Benchmark loaders on the real harness files in ../shared/data/benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthllm.core.eval_data import BENCHMARKS, BenchmarkError, last_boxed, load_benchmark

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "benchmarks"
EXPECTED = {
    "gsm8k": 1319,
    "math": 5000,
    "minerva_math": 272,
    "olympiadbench": 675,
    "college_math": 2818,
    "gaokao2023en": 385,
    "math500": 500,
}
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} is absent")


@needs_data
@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_record_has_a_gold_answer(name):
    records = load_benchmark(name, str(DATA / name / "test.jsonl"))
    assert len(records) == EXPECTED[name]
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert r["benchmark"] == name
        assert isinstance(r["gold"], str) and r["gold"].strip(), r["id"]
        assert r["question"].strip(), r["id"]
        # a reference solution, where the benchmark has one, contains its gold answer's box
        if name in ("gsm8k", "math", "minerva_math"):
            assert last_boxed(r["solution"]) is not None, r["id"]


@needs_data
def test_gold_rules_on_known_records():
    gsm8k = load_benchmark("gsm8k", str(DATA / "gsm8k" / "test.jsonl"))
    assert gsm8k[0]["gold"] == "18"
    assert "<<" not in gsm8k[0]["solution"] and gsm8k[0]["solution"].endswith("$\\boxed{18}$.")
    math = load_benchmark("math", str(DATA / "math" / "test.jsonl"))
    assert math[2]["gold"] == "\\dfrac{9}{7}"
    olympiad = load_benchmark("olympiadbench", str(DATA / "olympiadbench" / "test.jsonl"))
    assert olympiad[1]["gold"] == "\\frac{1}{2 n+2}"
    college = load_benchmark("college_math", str(DATA / "college_math" / "test.jsonl"))
    assert college[0]["gold"] == "10-4 n" and college[0]["solution"] is None
    gaokao = {
        r["id"]: r
        for r in load_benchmark("gaokao2023en", str(DATA / "gaokao2023en" / "test.jsonl"))
    }
    # the answer that the file left in the question is taken out of it
    assert gaokao["HMMT2023General_9"]["gold"] == "\\frac{3}{10}"
    assert "answers:" not in gaokao["HMMT2023General_9"]["question"]
    assert gaokao["052023SATS4_11"]["gold"] == "A"


@needs_data
def test_sample_is_fixed_by_seed_and_in_file_order():
    path = str(DATA / "math" / "test.jsonl")
    a = load_benchmark("math", path, max_records=20, seed=3)
    b = load_benchmark("math", path, max_records=20, seed=3)
    c = load_benchmark("math", path, max_records=20, seed=4)
    assert [r["id"] for r in a] == [r["id"] for r in b] != [r["id"] for r in c]
    assert [int(r["id"]) for r in a] == sorted(int(r["id"]) for r in a)
    assert len(load_benchmark("math", path, max_records=10_000)) == 5000


def test_last_boxed():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert last_boxed("$\\boxed 5$") == "5"
    assert last_boxed("no box") is None
    assert last_boxed("cut \\boxed{1 + {2") is None


def test_bad_input_names_file_and_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n")
    with pytest.raises(BenchmarkError, match=r"test.jsonl line 1"):
        load_benchmark("math", str(path))
    with pytest.raises(BenchmarkError, match="unknown benchmark"):
        load_benchmark("mmlu", str(path))
    with pytest.raises(BenchmarkError, match="evaluate.benchmarks.gsm8k"):
        load_benchmark("gsm8k", str(tmp_path / "missing.jsonl"))
    assert set(BENCHMARKS) < set(EXPECTED)
