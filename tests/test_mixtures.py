"""Dedup, decontamination and nested SFT mixtures (stage 6), on real text where it exists."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from synthllm.core.chat import sft_messages
from synthllm.core.eval_data import BENCHMARKS, load_benchmark
from synthllm.core.textkeys import normal_form
from synthllm.stages import decontam
from synthllm.stages import dedup as dedup_stage
from synthllm.stages.decontam import benchmark_texts, decontaminate
from synthllm.stages.dedup import DedupError, NearDuplicates, dedup, minhash_signatures
from synthllm.stages.mixtures import MixtureError, count_tokens, level_quota, nested_subset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
GSM8K_TRAIN = SHARED / "gsm8k_train" / "train.jsonl"
BENCH_DIR = SHARED / "benchmarks"
TOKENIZER = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

needs_gsm8k = pytest.mark.skipif(
    not GSM8K_TRAIN.exists(), reason=f"{GSM8K_TRAIN} absent (../shared/data)"
)
needs_bench = pytest.mark.skipif(
    not BENCH_DIR.is_dir(), reason=f"{BENCH_DIR} absent (../shared/data)"
)
needs_tokenizer = pytest.mark.skipif(
    not TOKENIZER.is_dir(), reason="resources/models not filled: run ./install.sh"
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


@pytest.fixture(scope="module")
def gsm8k_questions() -> list[str]:
    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[:3000]]
    return [r["question"] for r in rows]


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def test_exact_and_near_duplicates_are_dropped_naming_the_kept_question():
    qs = [
        "What is the sum of the first 10 positive integers?",
        "what is the SUM of the first 10   positive integers?",  # exact after normalisation
        "Compute the derivative of x^2 sin x with respect to x, and simplify the result.",
        "Compute the derivative of x^2 sin(x) with respect to x, and simplify the result!",
        "A train travels 60 km in 1.5 hours. What is its average speed in km per hour?",
    ]
    kept, dropped = dedup(samples(qs), NearDuplicates())
    assert kept["question"].to_list() == [qs[0], qs[2], qs[4]]
    rows = {r["question_id"]: r for r in dropped.to_dicts()}
    assert rows["L1-d00001-c0-q0"]["reason"] == "exact"
    assert rows["L1-d00001-c0-q0"]["duplicate_of"] == "L1-d00000-c0-q0"
    assert rows["L1-d00003-c0-q0"]["reason"] == "near"
    assert rows["L1-d00003-c0-q0"]["duplicate_of"] == "L1-d00002-c0-q0"


def test_an_exact_copy_of_a_near_duplicate_names_the_kept_question():
    # the exact copy's first occurrence is itself dropped as a near duplicate: the copy must
    # point at the question that is kept, never at one that is dropped
    kept_q = (
        "A rectangular garden is 12 meters long and 8 meters wide. A path 1 meter wide runs around "
        "the outside of the garden. What is the area of the path in square meters?"
    )
    near_q = kept_q + " Show your work."
    kept, dropped = dedup(samples([kept_q, near_q, near_q.upper()]), NearDuplicates())
    assert kept["question"].to_list() == [kept_q]
    rows = {r["question_id"]: r for r in dropped.to_dicts()}
    assert {r["duplicate_of"] for r in rows.values()} == {"L1-d00000-c0-q0"}
    assert rows["L1-d00002-c0-q0"]["reason"] == "near"
    assert rows["L1-d00002-c0-q0"]["similarity"] == rows["L1-d00001-c0-q0"]["similarity"] < 1.0


def test_the_first_by_level_then_id_is_kept_across_levels():
    q = "How many positive divisors does 360 have? Explain how you count them."
    kept, dropped = dedup(samples([q, q], levels=[3, 1]), NearDuplicates())
    assert kept["level"].to_list() == [1]
    assert dropped["duplicate_of"].to_list() == ["L1-d00001-c0-q0"]


def test_unusable_answers_are_dropped_first_so_a_usable_copy_is_kept():
    q = "Find all real x with x^2 - 5x + 6 = 0 and check each root."
    kept, dropped = dedup(samples([q, q], statuses=["truncated", "ok"]), NearDuplicates())
    assert kept["question_id"].to_list() == ["L1-d00001-c0-q0"]
    assert dropped.to_dicts() == [
        {
            "question_id": "L1-d00000-c0-q0",
            "level": 1,
            "reason": "answer_truncated",
            "duplicate_of": None,
            "similarity": None,
        }
    ]


@needs_gsm8k
def test_a_paraphrase_below_the_threshold_survives(gsm8k_questions):
    original = gsm8k_questions[0]
    paraphrase = (
        "Natalia sold clips to 48 friends in April; in May she sold half that number. "
        "Across both months, what is the total number of clips she sold?"
    )
    assert jaccard(original, paraphrase) < 0.3
    kept, dropped = dedup(samples([original, paraphrase]), NearDuplicates())
    assert len(kept) == 2 and dropped.is_empty()


@needs_gsm8k
def test_planted_near_duplicates_in_real_questions_are_caught_and_nothing_else(gsm8k_questions):
    rng = random.Random(0)
    base = gsm8k_questions[:2000]
    planted = {}
    for i in rng.sample(range(len(base)), 50):
        words = base[i].split()
        if len(words) < 30:
            continue
        j = rng.randrange(len(words))
        words[j] = (
            words[j] + "s"
        )  # one changed word: Jaccard of 3-grams about 0.9 on long questions
        planted[len(base)] = i
        base.append(" ".join(words))
    table = samples(base)
    ids = table["question_id"].to_list()
    kept, dropped = dedup(table, NearDuplicates())
    found = {r["question_id"]: r["duplicate_of"] for r in dropped.to_dicts()}
    expected = {
        ids[copy]: ids[orig]
        for copy, orig in planted.items()
        if jaccard(base[copy], base[orig]) >= 0.85
    }
    assert len(expected) >= 20
    missed = [c for c in expected if found.get(c) != expected[c]]
    assert len(missed) <= len(expected) // 20, missed  # LSH at J >= 0.85 finds >= 95 %
    # whatever else was dropped is a genuine near duplicate by exact Jaccard
    for copy, orig in found.items():
        if copy not in expected:
            a, b = base[ids.index(copy)], base[ids.index(orig)]
            assert (
                normal_form(pl.Series([a]))[0] == normal_form(pl.Series([b]))[0]
                or jaccard(a, b) >= 0.6
            )


@needs_gsm8k
def test_minhash_agreement_estimates_jaccard(gsm8k_questions):
    pairs = [
        (gsm8k_questions[i], gsm8k_questions[i][: len(gsm8k_questions[i]) * 3 // 4] + " and more")
        for i in range(40)
    ]
    texts = pl.Series([t for p in pairs for t in p])
    sig = minhash_signatures(texts, NearDuplicates(num_perm=256, bands=16))
    est = (sig[0::2] == sig[1::2]).mean(axis=1)
    truth = np.array([jaccard(a, b) for a, b in pairs])
    assert np.abs(est - truth).mean() < 0.05


def test_only_unusable_answers_dropped_gives_a_typed_table():
    kept, dropped = dedup(
        samples(["What is 1 + 1?", "Name a prime above 10."], statuses=["empty", "ok"]),
        NearDuplicates(),
    )
    assert dropped.schema["duplicate_of"] == pl.String and dropped["reason"].to_list() == [
        "answer_empty"
    ]


def test_settings_are_checked_naming_the_key():
    with pytest.raises(DedupError, match="dedup.near"):
        NearDuplicates(num_perm=100, bands=16)
    with pytest.raises(DedupError, match="question ids are not unique"):
        table = samples(["a b c", "d e f"])
        dedup(table.with_columns(pl.lit("L1-x").alias("question_id")), NearDuplicates())


@needs_bench
def test_planted_benchmark_question_and_solution_are_caught():
    benchmarks = {name: str(BENCH_DIR / name / "test.jsonl") for name in BENCHMARKS}
    bench = benchmark_texts(benchmarks)
    math_record = load_benchmark("math", benchmarks["math"])[17]
    gsm_record = load_benchmark("gsm8k", benchmarks["gsm8k"])[3]
    solution_words = gsm_record["solution"].split()
    qs = [
        "Tom has 3 apples and buys 4 more. How many apples does he have now? Explain.",
        "Q: "
        + math_record["question"].upper()
        + " Show all steps.",  # case and wrapping do not hide it
        "Let f be a polynomial of degree 3 with integer roots. Describe all possible f.",
    ]
    answers = [
        "3 + 4 = 7, so \\boxed{7}.",
        "The answer is 2.",
        "We reason: " + " ".join(solution_words[:20]) + " ... done.",
    ]
    table = samples(qs, answers=answers)
    clean, hits = decontaminate(table, bench, 13, 6)
    assert clean["question_id"].to_list() == ["L1-d00000-c0-q0"]
    by_id = {r["question_id"]: r for r in hits.to_dicts()}
    assert by_id["L1-d00001-c0-q0"]["benchmark"] == "math"
    assert by_id["L1-d00001-c0-q0"]["field"] == "question"
    assert by_id["L1-d00002-c0-q0"]["benchmark"] == "gsm8k"
    assert by_id["L1-d00002-c0-q0"]["field"] == "answer"
    assert by_id["L1-d00002-c0-q0"]["benchmark_id"] == str(gsm_record["id"])
    assert len(by_id["L1-d00001-c0-q0"]["matched"].split()) == 13


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
    clean, hits = decontaminate(table, bench, 13, 6)
    assert hits["question_id"].to_list() == ["L1-d00001-c0-q0"]


@needs_bench
def test_a_short_real_math_question_copied_into_a_longer_one_is_caught():
    """MATH questions shorter than the 13-word n-gram (11.9 % of them) are one gram of
    themselves; copied into a longer question they share no 13-gram with it."""
    bench = benchmark_texts({"math": str(BENCH_DIR / "math" / "test.jsonl")})
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
    clean, hits = decontaminate(table, bench, 13, 6)
    by_id = {r["question_id"]: r for r in hits.to_dicts()}
    assert set(by_id) == {"L1-d00000-c0-q0", "L1-d00001-c0-q0", "L1-d00003-c0-q0"}
    assert by_id["L1-d00000-c0-q0"]["matched"] == "if 2 8 4 x what is the value of x"
    # five words embedded: below decontam.short_min_words, no evidence; verbatim: caught
    assert clean["question_id"].to_list() == ["L1-d00002-c0-q0"]


@needs_bench
def test_real_gsm8k_train_questions_are_not_flagged_against_the_test_sets():
    # GSM8K train and test are disjoint problems: a 13-gram rule that flags many of them
    # would be matching boilerplate, not contamination
    benchmarks = {name: str(BENCH_DIR / name / "test.jsonl") for name in BENCHMARKS}
    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[:1000]]
    table = samples([r["question"] for r in rows], answers=[r["answer"] for r in rows])
    clean, hits = decontaminate(table, benchmark_texts(benchmarks), 13, 6)
    assert len(hits) <= 10, hits


def pool(levels: list[int]) -> pl.DataFrame:
    n = len(levels)
    return pl.DataFrame(
        {
            "question_id": [f"q{i:04d}" for i in range(n)],
            "level": pl.Series(levels, dtype=pl.Int8),
            "tokens": pl.Series(np.arange(n) % 7 + 10, dtype=pl.Int32),
        }
    )


def test_subsets_are_nested_and_reproducible():
    p = pool([1, 2, 3] * 100)
    sizes = [10, 40, 160, 300]
    for levels, props in ((None, None), ([1, 2], [3.0, 1.0]), ([3], None)):
        limit = 300 if levels is None else (133 if levels == [1, 2] else 100)
        subs = [
            set(nested_subset(p, k, 7, levels, props)["question_id"]) for k in sizes if k <= limit
        ]
        assert all(a < b for a, b in zip(subs, subs[1:]))
        again = nested_subset(p, sizes[1], 7, levels, props)["question_id"].to_list()
        assert again == sorted(subs[1])
    assert set(nested_subset(p, 40, 8)["question_id"]) != set(
        nested_subset(p, 40, 7)["question_id"]
    )
    by_level = nested_subset(p, 40, 7, [1, 2], [3.0, 1.0])["level"].value_counts().sort("level")
    assert by_level["count"].to_list() == [30, 10]


def test_level_quota_uses_largest_remainders():
    assert level_quota(10, [1, 2, 3], [1, 1, 1]) == {1: 4, 2: 3, 3: 3}
    assert sum(level_quota(7, [1, 2], [0.3, 0.7]).values()) == 7


def test_asking_more_than_the_pool_names_the_key():
    with pytest.raises(
        MixtureError, match="mixtures.sample_counts: 31 samples asked, the clean pool holds 30"
    ):
        nested_subset(pool([1] * 30), 31, 0)
    with pytest.raises(MixtureError, match="level-2"):
        nested_subset(pool([1] * 30 + [2]), 10, 0, [1, 2])


def synthllm(stage: str, **parts: dict) -> subprocess.CompletedProcess:
    args = [f"--{name}={json.dumps(value)}" for name, value in parts.items()]
    return subprocess.run(
        [sys.executable, "-m", "synthllm", stage, *args], capture_output=True, text=True
    )


def mixture_settings(**changes) -> dict:
    settings = {
        "name": "all",
        "samples": 8,
        "seed": 0,
        "levels": None,
        "proportions": None,
        "size_key": "mixtures.sample_counts",
    }
    return {**settings, **changes}


def test_a_mixture_is_drawn_by_its_job_settings(tmp_path):
    pool([1, 2, 3] * 10).write_parquet(tmp_path / "pool.parquet")
    outputs = {"samples": str(tmp_path / "8.parquet"), "counts": str(tmp_path / "8.counts.json")}
    proc = synthllm(
        "mixture",
        inputs={"pool": str(tmp_path / "pool.parquet")},
        outputs=outputs,
        settings=mixture_settings(name="l12", levels=[1, 2], proportions=[3, 1]),
        execution={"threads": 1},
    )
    assert proc.returncode == 0, proc.stderr
    counts = json.loads((tmp_path / "8.counts.json").read_text())
    assert counts["mixture"] == "l12" and counts["per_level"] == {
        "level1": 6,
        "level2": 2,
        "level3": 0,
    }
    expected = nested_subset(pool([1, 2, 3] * 10), 8, 0, [1, 2], [3, 1])
    assert pl.read_parquet(tmp_path / "8.parquet").equals(expected)


def test_an_experiment_mixture_names_the_experiments_key_and_writes_nothing(tmp_path):
    """The rule passes the sizing key in the job's settings (mixture_job); the error names it."""
    pool([1] * 30 + [3] * 5).write_parquet(tmp_path / "pool.parquet")
    out = tmp_path / "level3" / "8.parquet"
    proc = synthllm(
        "mixture",
        inputs={"pool": str(tmp_path / "pool.parquet")},
        outputs={"samples": str(out), "counts": str(tmp_path / "8.counts.json")},
        settings=mixture_settings(name="level3", levels=[3], size_key="ablation.samples"),
    )
    assert proc.returncode == 2
    assert (
        "config key ablation.samples: 8 level-3 samples asked for 8, the clean pool holds 5"
        in proc.stderr
    )
    assert not out.exists() and not (tmp_path / "8.counts.json").exists()


@pytest.mark.parametrize(
    "stage, parts, named",
    [
        ("dedup", {"settings": "{near: 1}"}, "--settings: not JSON"),
        ("decontam", {"inputs": "[1, 2]"}, "--inputs: a JSON object is needed"),
        ("mixture", {"settings": json.dumps({"seed": 0})}, "--settings: no key 'samples'"),
        ("sft_pool", {}, "--settings: no key 'tokenizer'"),
        ("mixture", {"inputs": "{}", "settings": json.dumps(mixture_settings())}, "no key 'pool'"),
    ],
)
def test_bad_stage_arguments_exit_2_with_one_line_naming_them(tmp_path, stage, parts, named):
    pool([1] * 10).write_parquet(tmp_path / "pool.parquet")
    given = {
        "inputs": json.dumps({"pool": str(tmp_path / "pool.parquet")}),
        "outputs": json.dumps({"samples": str(tmp_path / "s.parquet")}),
        "settings": "{}",
        **parts,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "synthllm", stage]
        + [f"--{name}={value}" for name, value in given.items()],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert named in proc.stderr and proc.stderr.startswith(f"synthllm {stage}: error:")


def test_dedup_and_decontam_stages_read_their_settings(tmp_path):
    table = samples(
        ["What is 1 + 1?", "What is 1 + 1?", "Name a prime above 10.", "Why?"],
        levels=[1, 2, 1, 1],
        statuses=["ok", "ok", "ok", "truncated"],
    )
    table.write_parquet(tmp_path / "answers.parquet")
    near = {"ngram": 3, "num_perm": 128, "bands": 16, "threshold": 0.8, "seed": 0}
    dedup_out = {
        name: str(tmp_path / f"dedup-{name}.{ext}")
        for name, ext in (("questions", "parquet"), ("dropped", "parquet"), ("counts", "json"))
    }
    counts = dedup_stage.run(
        inputs={"answers": [str(tmp_path / "answers.parquet")]},
        outputs=dedup_out,
        settings={"near": near, "answer_statuses": ["ok"]},
        execution={"threads": 1},
    )
    assert counts["dropped"] == {"answer_truncated": 1, "exact": 1}
    assert counts["settings"] == near and counts["answer_statuses"] == ["ok"]
    bench = tmp_path / "gsm8k.jsonl"
    bench.write_text(
        json.dumps({"question": "Name a prime above 10.", "answer": "11 is.\n#### 11"})
    )
    out = {
        name: str(tmp_path / f"decontam-{name}.{ext}")
        for name, ext in (
            ("questions", "parquet"),
            ("hits", "parquet"),
            ("report", "json"),
            ("counts", "json"),
        )
    }
    counts = decontam.run(
        inputs={"questions": dedup_out["questions"], "benchmarks": [str(bench)]},
        outputs=out,
        settings={"ngram": 13, "short_min_words": 6, "benchmarks": {"gsm8k": str(bench)}},
        execution={"threads": 1},
    )
    assert (counts["in"], counts["out"], counts["dropped"]) == (2, 1, {"benchmark_gsm8k": 1})
    assert json.loads(Path(out["report"]).read_text())["benchmark_files"] == {"gsm8k": str(bench)}


@needs_tokenizer
def test_token_counts_are_exact_chat_formatted_lengths():
    from transformers import AutoTokenizer

    records = samples(
        ["What is 2 + 2?", "Integrate x e^x dx. " * 30],
        answers=["\\boxed{4}", "By parts: x e^x - e^x + C, so \\boxed{(x-1)e^x + C}."],
    )
    counts = count_tokens(records, str(TOKENIZER), SYSTEM, batch_size=1)
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    for i, row in enumerate(records.to_dicts()):
        text = tok.apply_chat_template(
            sft_messages(row["question"], row["answer"], SYSTEM), tokenize=False
        )
        assert counts[i] == len(tok(text, add_special_tokens=False)["input_ids"])
    assert counts[1] > counts[0] + 100
