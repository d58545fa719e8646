"""Throughput of synthllm's evaluation against bare vLLM generation plus the same grading.

On one vLLM engine, the same zero-shot chat prompts (a fixed sample of each of the six
benchmarks) go through `synthllm.stages.evaluate.run` (problem loading, the vLLM backend, progress
file, both graders, parquet and json writes) and through bare `LLM.generate` on the
pre-templated prompts followed by `synthllm.core.grading.grade` of every completion; alternating
`--rounds` times, best round of each. Target (issue 8): ours >= 0.95x bare. Engine start-up
is excluded from both (one engine serves both paths).

    .venv/bin/python benchmarks/eval_throughput.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from synthllm.core.chat import prompt_messages
from synthllm.core.eval_data import BENCHMARKS
from synthllm.core.grading import grade, parse_gold_math_verify
from synthllm.core.llm import Backend, BackendSpec, Sampling, VLLMBackend
from synthllm.settings import stage_settings
from synthllm.stages.evaluate import load_problems, run

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


class SharedEngine(Backend):
    """The one engine, handed to evaluate.run; closing it is left to this script."""

    def __init__(self, backend: VLLMBackend):
        self.backend = backend

    def stream(self, *args, **kwargs):
        return self.backend.stream(*args, **kwargs)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="resources/models/SmolLM2-135M-Instruct")
    ap.add_argument(
        "--benchmarks",
        default="resources/benchmarks",
        help="folder with <name>/test.jsonl for the six benchmarks",
    )
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--per-benchmark", type=int, default=8, help="problems per benchmark")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    benchmarks = {n: str(Path(args.benchmarks) / n / "test.jsonl") for n in BENCHMARKS}
    engine = {
        "backend": "vllm",
        "dtype": args.dtype,
        "max_model_len": 2048,
        "enforce_eager": True,
        "kv_cache_gib": 2,
    }
    backend = VLLMBackend(
        BackendSpec.from_config("evaluate.engine", {**engine, "model": args.model})
    )
    print(f"engine start-up: {backend.startup_s:.1f} s")
    llm = backend.llm
    tokenizer = llm.get_tokenizer()
    problems = load_problems(benchmarks, args.per_benchmark, 0)
    templated = [
        tokenizer.apply_chat_template(
            prompt_messages(p["question"], SYSTEM), tokenize=False, add_generation_prompt=True
        )
        for p in problems
    ]
    # evaluate.run's sampling, for the bare path
    sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=args.max_new_tokens, seed=0)

    # the four arguments of one evaluate job (rules/11_evaluate.smk); the engine's keys split into
    # settings and execution by config/schema.yaml, as the workflow splits them
    engine_settings, engine_execution = stage_settings(
        {"evaluate": {"engine": engine}}, engine="evaluate.engine"
    )
    settings = {
        "label": "bench",
        "budget": 0,
        "benchmarks": benchmarks,
        "max_records": args.per_benchmark,
        "seed": 0,
        "system_prompt": SYSTEM,
        "max_new_tokens": args.max_new_tokens,
        "grade_timeout_s": 3.0,
        **engine_settings,
    }
    execution = {"chunk_size": 256, "threads": 2, **engine_execution}

    def ours(out_dir: str) -> None:
        out = Path(out_dir)
        run(
            inputs={"checkpoint": args.model, "benchmarks": list(benchmarks.values())},
            outputs={
                "predictions": str(out / "predictions.parquet"),
                "settings": str(out / "settings.json"),
                "counts": str(out / "counts.json"),
            },
            settings=settings,
            execution=execution,
            open_backend_fn=lambda spec: SharedEngine(backend),
        )

    def bare(_: str) -> None:
        outputs = llm.generate(
            templated, backend.sampling_params(sampling, None, 0), use_tqdm=False
        )
        gold_cache = {}
        for p, o in zip(problems, outputs):
            if p["gold"] not in gold_cache:
                gold_cache[p["gold"]] = parse_gold_math_verify(p["gold"], 3.0)
            grade(
                o.outputs[0].text, p["gold"], p["benchmark"], 3.0, gold_parsed=gold_cache[p["gold"]]
            )

    bare("")  # warm-up: the first batch pays one-off allocations
    best = {"bare": float("inf"), "ours": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for name, fn in (("bare", bare), ("ours", ours)):
                t0 = time.time()
                fn(f"{tmp}/{round_no}")
                best[name] = min(best[name], time.time() - t0)
    n = len(problems)
    print(
        f"{n} problems ({args.per_benchmark} per benchmark), greedy, "
        f"max {args.max_new_tokens} new tokens, best of {args.rounds}"
    )
    print(
        f"bare LLM.generate + grading : {best['bare']:7.2f} s  {n / best['bare']:6.2f} problems/s"
    )
    print(
        f"synthllm evaluate           : {best['ours']:7.2f} s  {n / best['ours']:6.2f} problems/s"
        f"  ({best['bare'] / best['ours']:.3f}x bare)"
    )
    backend.close()


if __name__ == "__main__":
    main()
