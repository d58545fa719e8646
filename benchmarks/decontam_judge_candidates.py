"""What decontam_judge.min_similarity costs and finds, on real math text: the share of
questions that would go to the judge, and the share of reworded benchmark questions that
would, for each threshold (the embedding of the stage: models.embedding, the default's
all-MiniLM-L6-v2; top_k 1).

    cost     the 7,473 GSM8K train questions against the questions of the six benchmarks
             (a disjoint set of the same kind as the synthetic questions: each one that
             passes the threshold is a judge call)
    found    up to 300 benchmark questions (seeded, at least two sentences), reworded: their
             sentences in another order (the question last, as it was) and their first
             sentence's first words moved to its end; each counts when its own benchmark
             question is its nearest one above the threshold

The judge's calls per question are the cost share times top_k at most; `synthllm plan`
prices every question judged (the upper bound). Prints the CPU seconds of the embeddings.

    .venv/bin/python benchmarks/decontam_judge_candidates.py
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BENCHMARKS = ("gsm8k", "math", "minerva_math", "olympiadbench", "college_math", "gaokao2023en")
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
REWORDED = 300


def reworded(question: str) -> str | None:
    """The question's sentences in another order, its first sentence turned around; None
    for a question of one sentence."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", question.strip()) if s]
    if len(sentences) < 2:
        return None
    *body, last = sentences
    words = body[0].rstrip(".").split()
    cut = max(1, len(words) // 3)
    body[0] = " ".join(words[cut:] + words[:cut]) + "."
    return " ".join(body[1:] + body[:1] + [last])


def main() -> None:
    sys.path.insert(0, str(ROOT / "workflow"))
    from synthllm.stages.decontam_judge import benchmark_questions, nearest
    from synthllm.stages.embed import Embedder, EmbeddingSpec

    files = {b: SHARED / "benchmarks" / b / "test.jsonl" for b in BENCHMARKS}
    train_file = SHARED / "gsm8k_train" / "train.jsonl"
    missing = [p for p in [*files.values(), train_file] if not p.exists()]
    if missing:
        raise SystemExit(f"{missing[0]} missing: this benchmark needs ../shared/data")
    # the questions the stage compares with, as it reads them
    bench = benchmark_questions({name: str(path) for name, path in files.items()})["question"]
    bench = bench.to_list()
    train = [json.loads(line)["question"] for line in train_file.read_text().splitlines()]
    rng = np.random.default_rng(0)
    copies = []
    for i in rng.permutation(len(bench)):
        text = reworded(bench[i])
        if text is not None:
            copies.append((int(i), text))
        if len(copies) == REWORDED:
            break

    # the default's models.embedding, as the stage would use it
    defaults = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())["models"]["embedding"]
    embedder = Embedder(EmbeddingSpec.from_config(defaults))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    bench_vectors, _ = embedder.embed(bench, "benchmarks")
    train_vectors, _ = embedder.embed(train, "gsm8k train")
    copy_vectors, _ = embedder.embed([t for _, t in copies], "reworded")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(
        f"{defaults['model']} (max_tokens {defaults['max_tokens']}): {len(bench):,} benchmark, "
        f"{len(train):,} GSM8K train and {len(copies)} reworded questions embedded in "
        f"{wall:.0f} s wall, {cpu:.0f} s CPU"
    )
    print(f"{'min_similarity':>14} {'judged (GSM8K train)':>22} {'reworded found':>16}")
    for threshold in THRESHOLDS:
        judged = len(nearest(train_vectors, bench_vectors, 1, threshold))
        pairs = nearest(copy_vectors, bench_vectors, 1, threshold)
        found = sum(bench_row == copies[row][0] for row, bench_row, _ in pairs)
        print(f"{threshold:>14.2f} {judged / len(train):>21.1%} {found / len(copies):>15.1%}")


if __name__ == "__main__":
    main()
