"""Benchmark decontamination (the decontam stage), on the real benchmarks where they exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from mathtext import (
    BENCH_DIR,
    GSM8K_TRAIN,
    gsm8k_train,
    needs_bench,
    needs_gsm8k,
    samples,
    stage_outputs,
)
from synthllm.core.eval_data import BENCHMARKS, load_benchmark
from synthllm.settings import schema_default
from synthllm.stages import decontam
from synthllm.stages.decontam import bench_index, benchmark_texts, decontaminate, field_matches

RULE = schema_default("decontam")
BENCH_FILES = {name: str(BENCH_DIR / name / "test.jsonl") for name in BENCHMARKS}

# Phrases of the genre that MATH problems and solutions share (issue 24) and MATH's
# Asymptote preamble, in new problems of our own: no benchmark problem is copied here, and a
# single 13-gram in common dropped each of them before the coverage rule
ASY_PREAMBLE = (
    "import graph; size(8cm); real lsf=0.5; pen dps=linewidth(0.7)+fontsize(10); "
    "defaultpen(dps); pen ds=black; real xmin=-1.5,xmax=18.5,ymin=-1.5,ymax=12.5;\n\n"
    "pen cqcqcq=rgb(0.75,0.75,0.75);\n\n"
    '/*grid*/ pen gs=linewidth(0.7)+cqcqcq+linetype("2 2"); real gx=1,gy=1;\n'
)
BOILERPLATE = [
    (
        "A stone is thrown upward from the roof of a 40-meter building; its height after t "
        "seconds is $h = 40 + 12t - 5t^2$. In how many seconds will the ball hit the ground? "
        "Express your answer as a decimal rounded to the nearest hundredth.",
        "Setting $h = 0$ gives $5t^2 - 12t - 40 = 0$, so $t = \\boxed{4.28}$.",
    ),
    (
        "What is the sum of the multiples of 7 between 10 and 100?",
        "The multiples are 14, 21, ..., 98, which is 13 terms. The sum of an arithmetic "
        "series is equal to the average of the first and last term, multiplied by the number "
        "of terms, so the sum is $(14 + 98)/2 \\cdot 13 = \\boxed{728}$.",
    ),
    (
        "The graph of a piecewise linear function $p$ is drawn below. How many solutions "
        f"does $p(x) = 3$ have on $[0, 18]$?\n\n[asy]\n{ASY_PREAMBLE}draw((0,2)--(9,8));\n[/asy]",
        "The line $y = 3$ meets the graph once, so there is $\\boxed{1}$ solution.",
    ),
]


@pytest.fixture(scope="module")
def bench():
    return benchmark_texts(BENCH_FILES)


@pytest.fixture(scope="module")
def six(bench):
    """The index of the six benchmarks at the schema's defaults, built once."""
    index = bench_index(bench, RULE)

    def check(table):
        return decontam.split_hits(table, bench, field_matches(table, index), RULE)

    return check


@needs_bench
def test_phrases_of_the_genre_and_drawing_code_are_no_evidence(six):
    table = samples([q for q, _ in BOILERPLATE], answers=[a for _, a in BOILERPLATE])
    clean, hits = six(table)
    assert hits.is_empty(), hits
    assert len(clean) == len(BOILERPLATE)


@needs_bench
@needs_gsm8k
def test_a_template_with_other_numbers_is_another_problem(six):
    # GSM8K train 1315 and 5163 are GSM8K test 602 ("A plane travels 1200 miles in 3 hours.
    # At the same rate, ... an additional 2000 miles?") with other numbers; their shared
    # wording covers 76 % of it
    rows = [
        json.loads(line)
        for line in GSM8K_TRAIN.read_text().splitlines()
        if "miles in 3 hours. At the same rate, how many additional hours" in line
    ]
    assert len(rows) == 2
    clean, hits = six(samples([r["question"] for r in rows], answers=[r["answer"] for r in rows]))
    assert hits.is_empty(), hits


def lightly_edited(text: str) -> str:
    """One word in the middle replaced: the wording a paraphrasing model might change."""
    words = text.split(" ")
    middle = len(words) // 2
    at = next(i for i in range(middle, len(words)) if re.fullmatch(r"[a-z]+", words[i]))
    words[at] = "certain"
    return " ".join(words)


@needs_bench
def test_planted_copies_of_each_kind_are_caught(six):
    math = load_benchmark("math", BENCH_FILES["math"])
    gsm = load_benchmark("gsm8k", BENCH_FILES["gsm8k"])
    long_question = next(r for r in math if 40 <= len(r["question"].split()) <= 60)
    host_q, host_a = gsm8k_train(2)[0]["question"], gsm8k_train(2)[1]["answer"]
    plants = {
        "verbatim question": (math[17], "question", "Q: " + math[17]["question"].upper(), None),
        "verbatim solution": (gsm[3], "solution", None, gsm[3]["solution"]),
        "edited question": (
            long_question,
            "question",
            lightly_edited(long_question["question"]),
            None,
        ),
        "embedded question": (
            math[40],
            "question",
            f"{host_q} Here is a harder one. {math[40]['question']} Solve both.",
            None,
        ),
        "embedded solution": (
            math[41],
            "solution",
            None,
            f"{host_a}\nNow the second problem.\n{math[41]['solution']}\nBoth are done.",
        ),
    }
    table = samples(
        [q or "What is the sum of the first five primes?" for _, _, q, _ in plants.values()],
        answers=[a or "2 + 3 + 5 + 7 + 11 = \\boxed{28}." for _, _, _, a in plants.values()],
    )
    clean, hits = six(table)
    assert clean.is_empty(), clean
    by_id = {r["question_id"]: r for r in hits.to_dicts()}
    for qid, (kind, (record, field, _, _)) in zip(table["question_id"], plants.items()):
        hit = by_id[qid]
        assert (hit["benchmark"], hit["benchmark_id"], hit["benchmark_field"]) == (
            record["benchmark"],
            str(record["id"]),
            field,
        ), kind
        assert hit["field"] == ("question" if field == "question" else "answer"), kind
        assert hit["share"] >= RULE["min_share"], kind
    assert by_id[table["question_id"][0]]["share"] == pytest.approx(1.0)
    # the copy is a small part of the embedded answer, all of the benchmark solution
    assert by_id[table["question_id"][4]]["sample_share"] < 0.8


def test_degenerate_repetition_is_no_evidence_of_contamination():
    bench = pl.DataFrame(
        {
            "benchmark": ["math"],
            "benchmark_id": ["7"],
            "benchmark_field": ["solution"],
            "text": [
                "The table reads 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 in its first row, then a sum."
            ],
        }
    )
    table = samples(
        ["How many ones are there?", "What is the sum of the first row of the table?"],
        answers=[
            "1 " * 40,
            "The table reads 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 in its first row, then",
        ],
    )
    clean, hits = decontaminate(table, bench, RULE)
    assert hits["question_id"].to_list() == ["L1-d00001-c0-q0"]


@needs_bench
def test_a_short_real_math_question_copied_into_a_longer_one_is_caught():
    """MATH questions of fewer than decontam.short_words (13) words (11.9 % of them) count
    only as a whole: copied into a longer question, all their words are one run of it."""
    bench = benchmark_texts({"math": BENCH_FILES["math"]})
    problems = bench.filter(pl.col("benchmark_field") == "question")["text"].to_list()
    eleven = next(q for q in problems if q == "If $2^8=4^x$, what is the value of $x$?")
    five = next(q for q in problems if q == "Evaluate $(1+2i)6-3i$.")
    table = samples(
        [
            f"A student is practising exponent rules before an exam. {eleven} Explain each step.",
            eleven,  # the question itself
            f"Before moving on, try this: {five} Then check the result by substitution.",
            five,
        ]
    )
    clean, hits = decontaminate(table, bench, RULE)
    by_id = {r["question_id"]: r for r in hits.to_dicts()}
    assert set(by_id) == {"L1-d00000-c0-q0", "L1-d00001-c0-q0", "L1-d00003-c0-q0"}
    assert by_id["L1-d00000-c0-q0"]["matched"] == "if 2 8 4 x what is the value of x"
    # five words embedded: below decontam.short_min_words, no evidence; verbatim: caught
    assert clean["question_id"].to_list() == ["L1-d00002-c0-q0"]


@needs_bench
def test_real_gsm8k_train_questions_are_not_flagged_against_the_test_sets(six):
    # GSM8K train and test are disjoint problems: a rule that flags many of them would be
    # matching boilerplate, not contamination
    rows = gsm8k_train(1000)
    _, hits = six(samples([r["question"] for r in rows], answers=[r["answer"] for r in rows]))
    assert len(hits) <= 2, hits


def test_the_stage_reads_its_settings_and_shows_its_hits(tmp_path):
    samples(["What is 1 + 1?", "Name a prime above 10 and below 14."]).write_parquet(
        tmp_path / "q.parquet"
    )
    bench = tmp_path / "gsm8k.jsonl"
    bench.write_text(
        json.dumps({"question": "Name a prime above 10 and below 14.", "answer": "11.\n#### 11"})
    )
    out = stage_outputs(
        tmp_path, "decontam", questions="parquet", hits="parquet", report="json", counts="json"
    )
    counts = decontam.run(
        inputs={"questions": str(tmp_path / "q.parquet"), "benchmarks": [str(bench)]},
        outputs=out,
        settings={**RULE, "benchmarks": {"gsm8k": str(bench)}},
        execution={"threads": 1},
    )
    assert (counts["in"], counts["out"], counts["dropped"]) == (2, 1, {"benchmark_gsm8k": 1})
    report = json.loads(Path(out["report"]).read_text())
    assert report["benchmark_files"] == {"gsm8k": str(bench)}
    assert report["min_share"] == RULE["min_share"]
    (example,) = report["examples"]["gsm8k"]
    assert (
        example["sample_text"] == example["benchmark_text"] == "Name a prime above 10 and below 14."
    )
    assert example["share"] == 1.0
