"""Dedup and decontamination at paper scale: 7.5 M synthetic questions (L1 + L2 + L3 before the
final merge, paper §1.4) through the real `synthllm dedup` and `synthllm decontam` commands,
against the six benchmarks. Prints wall time and peak memory of each (target: 10 minutes and
12 GiB or less on 2 cores) and how many planted duplicates and benchmark copies were caught.

The questions are random word sequences (20-80 words, about the paper's median question
lengths) over the vocabulary of real math text (GSM8K train and the benchmark problems when
../shared/data is present), each with its own final answer. Planted: exact copies (case and
spacing changed), near copies (one word replaced: 3-gram Jaccard about 0.9) with the
source's answer (one problem: to be dropped), value copies (one word replaced by a number)
with another answer (another problem: to be kept) and verbatim benchmark questions.
Answers are one short line each; `--answer-words N` makes them N words long to time answer
checking too.

    .venv/bin/python benchmarks/dedup_scale.py               # 7.5 M
    .venv/bin/python benchmarks/dedup_scale.py --scale 0.1   # 750 K
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BENCHMARKS = ("gsm8k", "math", "minerva_math", "olympiadbench", "college_math", "gaokao2023en")
PAPER_QUESTIONS = 7_500_000
CHUNK = 500_000


def vocabulary() -> np.ndarray:
    texts = []
    if (SHARED / "gsm8k_train" / "train.jsonl").exists():
        texts += [
            json.loads(x)["question"] for x in (SHARED / "gsm8k_train" / "train.jsonl").open()
        ]
    words = sorted(set(re.findall(r"[A-Za-z]+|\d+", " ".join(texts))))
    if len(words) < 2000:
        words += [f"w{i}" for i in range(5000)]
    return np.array(words, dtype=object)


def questions_chunk(rng, vocab, n, min_words=20, max_words=80) -> list[str]:
    lengths = rng.integers(min_words, max_words + 1, size=n)
    idx = rng.integers(0, len(vocab), size=int(lengths.sum()))
    frame = pl.DataFrame({"q": np.repeat(np.arange(n), lengths), "w": vocab[idx].tolist()})
    return frame.group_by("q", maintain_order=True).agg(pl.col("w").str.join(" "))["w"].to_list()


def make_shard(
    path: Path, n: int, seed: int, answer_words: int, bench_questions: list[str]
) -> dict:
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    questions = []
    for start in range(0, n, CHUNK):
        questions += questions_chunk(rng, vocab, min(CHUNK, n - start))
    n_exact, n_near, n_value = n // 20, n // 20, n // 40
    n_plant = n_exact + n_near + n_value
    final = np.arange(n) % 997
    # targets and sources disjoint, so no source is overwritten by another plant
    picked = rng.choice(n, size=2 * n_plant + len(bench_questions), replace=False)
    targets, sources = picked[:n_plant], picked[n_plant : 2 * n_plant]
    planted = {"exact": [], "near": [], "value": [], "benchmark": []}
    for k, (t, s) in enumerate(zip(targets, sources)):
        if k < n_exact:
            questions[t] = "  " + questions[s].upper() + " "
            planted["exact"].append((int(t), int(s)))
        elif k < n_exact + n_near:
            words = questions[s].split()
            words[len(words) // 2] = "zzplanted"
            questions[t] = " ".join(words)
            final[t] = final[s]
            planted["near"].append((int(t), int(s)))
        else:
            words = questions[s].split()
            words[len(words) // 2] = "1999"
            questions[t] = " ".join(words)
            final[t] = (final[s] + 1) % 997
            planted["value"].append((int(t), int(s)))
    for t, q in zip(picked[2 * n_plant :], bench_questions):
        questions[t] = q
        planted["benchmark"].append(int(t))
    levels = np.sort(rng.integers(1, 4, size=n)).astype(np.int8)
    ids = [f"L{lvl}-b{i:08d}-c0-q0" for i, lvl in enumerate(levels)]
    if answer_words:
        answers = []
        for start in range(0, n, CHUNK):
            answers += questions_chunk(
                rng, vocab, min(CHUNK, n - start), answer_words, answer_words
            )
    else:
        answers = [f"So the result is \\boxed{{{a}}}." for a in final.tolist()]
    pl.DataFrame(
        {
            "question_id": ids,
            "question": questions,
            "level": levels,
            "doc_ids": [[f"doc-{i}"] for i in range(n)],
            "answer": answers,
            "final_answer": final.astype(str),
            "status": ["ok"] * n,
        }
    ).write_parquet(path)
    return {
        "exact": [(ids[t], ids[s]) for t, s in planted["exact"]],
        "near": [(ids[t], ids[s]) for t, s in planted["near"]],
        "value": [(ids[t], ids[s]) for t, s in planted["value"]],
        "benchmark": [ids[t] for t in planted["benchmark"]],
    }


def timed(stage: str, **parts: dict) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak GiB) of `synthllm <stage>` with the four JSON parts,
    measured by a fresh parent so that each figure is the command's own. CPU seconds (user +
    system) say what the command costs when other work shares the cores; wall time is the
    target's measure on an idle machine. The CLI sets NUMBA_NUM_THREADS from
    execution.threads."""
    cmd = [sys.executable, "-m", "synthllm", stage]
    cmd += [f"--{name}={json.dumps(value)}" for name, value in parts.items()]
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "r = resource.getrusage(resource.RUSAGE_CHILDREN); print(r.ru_maxrss, r.ru_utime + r.ru_stime)"
    )
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], check=True, stdout=subprocess.PIPE, text=True
    )
    peak_kib, cpu = out.stdout.split()[-2:]
    return time.perf_counter() - t0, float(cpu), int(peak_kib) / 2**20


def jaccard3(a: str, b: str) -> float:
    x, y = (
        [tuple(w[i : i + 3]) for i in range(max(len(w) - 2, 1))]
        for w in (re.findall(r"\w+", a.lower()), re.findall(r"\w+", b.lower()))
    )
    x, y = set(x), set(y)
    return len(x & y) / len(x | y)


def caught(pairs: list[tuple[str, str]], dropped: pl.DataFrame) -> int:
    """Planted pairs that ended in one group: the kept one of a group is its own representative."""
    rep = dict(zip(dropped["question_id"], dropped["duplicate_of"]))
    return sum(rep.get(t, t) == rep.get(s, s) for t, s in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 7.5 M questions")
    parser.add_argument("--answer-words", type=int, default=0)
    parser.add_argument(
        "--workdir",
        default=None,
        help="keep the synthetic files here; a rerun with the same sizes reuses them",
    )
    args = parser.parse_args()
    benchmarks = {b: str(SHARED / "benchmarks" / b / "test.jsonl") for b in BENCHMARKS}
    missing = [p for p in benchmarks.values() if not Path(p).exists()]
    if missing:
        raise SystemExit(
            f"benchmark files missing ({missing[0]}): this benchmark needs ../shared/data"
        )
    sys.path.insert(0, str(ROOT / "workflow"))
    from synthllm.core.eval_data import load_benchmark

    bench_questions = [
        r["question"] for r in load_benchmark("math", benchmarks["math"], max_records=200, seed=1)
    ]
    n = int(PAPER_QUESTIONS * args.scale)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dedup-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    shard = work / "answers.parquet"
    t0 = time.perf_counter()
    made = work / f"planted-v2-{n}-{args.answer_words}.json"
    if shard.exists() and made.exists():  # a --workdir of an earlier run with the same sizes
        planted = {
            k: [tuple(x) if isinstance(x, list) else x for x in v]
            for k, v in json.loads(made.read_text()).items()
        }
    else:
        planted = make_shard(shard, n, 0, args.answer_words, bench_questions)
        made.write_text(json.dumps(planted))
    print(
        f"{n:,} synthetic questions ready in {time.perf_counter() - t0:.0f} s "
        f"({shard.stat().st_size / 2**20:.0f} MiB); planted exact {len(planted['exact']):,}, "
        f"near {len(planted['near']):,}, value {len(planted['value']):,}, "
        f"benchmark {len(planted['benchmark'])}"
    )

    # the four arguments of each job, as rules/07_dedup.smk and 08_decontam.smk build them;
    # settings: the schema's defaults of config keys dedup and decontam; threads: every core
    from synthllm.settings import schema_default

    execution = {"threads": os.cpu_count()}
    dedup_s, dedup_cpu, dedup_gib = timed(
        "dedup",
        inputs={"answers": [str(shard)]},
        outputs={
            "questions": str(work / "kept.parquet"),
            "dropped": str(work / "dropped.parquet"),
            "report": str(work / "dedup.report.json"),
            "counts": str(work / "dedup.counts.json"),
        },
        settings=schema_default("dedup"),
        execution=execution,
    )
    decon_s, decon_cpu, decon_gib = timed(
        "decontam",
        inputs={"questions": str(work / "kept.parquet"), "benchmarks": list(benchmarks.values())},
        outputs={
            "questions": str(work / "clean.parquet"),
            "hits": str(work / "hits.parquet"),
            "report": str(work / "report.json"),
            "counts": str(work / "decontam.counts.json"),
        },
        settings={**schema_default("decontam"), "benchmarks": benchmarks},
        execution=execution,
    )
    dropped = pl.read_parquet(work / "dropped.parquet")
    hits = set(pl.read_parquet(work / "hits.parquet")["question_id"])
    by_reason = dict(dropped.group_by("reason").len().iter_rows())
    steps = {
        k: v["seconds"]
        for k, v in json.loads((work / "dedup.counts.json").read_text())["steps"].items()
    }
    print(
        f"dedup:    {dedup_s:7.1f} s wall, {dedup_cpu:7.1f} s CPU, peak {dedup_gib:5.2f} GiB  dropped {by_reason}; steps {steps}"
    )
    print(
        f"          planted exact pairs caught {caught(planted['exact'], dropped)}/{len(planted['exact'])}, "
        f"near {caught(planted['near'], dropped)}/{len(planted['near'])}; value pairs "
        f"(another answer) kept apart {len(planted['value']) - caught(planted['value'], dropped)}"
        f"/{len(planted['value'])}"
    )
    text = dict(
        zip(*pl.read_parquet(shard, columns=["question_id", "question"]).to_dict().values())
    )
    above = [p for p in planted["near"] if jaccard3(text[p[0]], text[p[1]]) >= 0.8]
    below = list(set(planted["near"]) - set(above))
    print(
        f"          near pairs with true 3-gram Jaccard >= 0.8 caught {caught(above, dropped)}/{len(above)}; "
        f"below 0.8 (should survive) caught {caught(below, dropped)}/{len(below)}"
    )
    print(
        f"decontam: {decon_s:7.1f} s wall, {decon_cpu:7.1f} s CPU, peak {decon_gib:5.2f} GiB  hits {len(hits)}; planted benchmark "
        f"questions caught {len(hits & set(planted['benchmark']))}/{len(planted['benchmark'])}"
    )
    print(
        f"total {dedup_s + decon_s:.1f} s wall, {dedup_cpu + decon_cpu:.1f} s CPU on {os.cpu_count()} cores "
        f"(target 600 s wall, 12 GiB)"
    )


if __name__ == "__main__":
    main()
