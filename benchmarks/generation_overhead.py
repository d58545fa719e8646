"""Overhead of synthllm's vLLM backend over bare `vllm.LLM.generate`, on one engine.

The same chat prompts (templated by the model's chat template) go through
`VLLMBackend.generate` and through `LLM.generate` with the pre-templated strings, greedy,
batch = all prompts, alternating `--rounds` times; the best round of each is reported.
Target (issue 3): ours >= 0.95x bare; about 340 tokens/s with SmolLM2-135M at batch 32 on
2 cores. Also prints the engine start-up time and the cost of structured (JSON) outputs.

    .venv/bin/python benchmarks/generation_overhead.py
"""

from __future__ import annotations

import argparse
import time

from synthllm.core.llm import BackendSpec, Request, Sampling, VLLMBackend
from synthllm.core.parsers import level2_schema
from synthllm.settings import schema_default

TOPICS = [
    "circles",
    "primes",
    "derivatives",
    "matrices",
    "probability",
    "triangles",
    "sequences",
    "logarithms",
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="resources/models/SmolLM2-135M-Instruct")
    ap.add_argument(
        "--dtype", default="float32", help="float32 is the fast one on CPUs without bf16"
    )
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    spec = BackendSpec.from_config(
        "models.generator", {"backend": "vllm", "model": args.model, "dtype": args.dtype}
    )
    backend = VLLMBackend(spec)
    print(f"engine start-up: {backend.startup_s:.1f} s")
    llm = backend.llm
    tokenizer = llm.get_tokenizer()
    messages = [
        [
            {
                "role": "user",
                "content": f"Write a hard exam question about "
                f"{TOPICS[i % len(TOPICS)]} (variant {i}) and solve it.",
            }
        ]
        for i in range(args.prompts)
    ]
    requests = [Request(m) for m in messages]
    templated = [
        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for m in messages
    ]
    sampling = Sampling(
        **{
            **schema_default("generation.level2.sampling"),
            "temperature": 0.0,
            "max_tokens": args.max_tokens,
        }
    )
    positions = list(range(args.prompts))

    def ours() -> int:
        out = backend.generate(requests, sampling, positions)
        return sum(len(tokenizer.encode(c.text, add_special_tokens=False)) for c in out)

    def bare() -> int:
        params = backend.sampling_params(sampling, None, 0)
        out = llm.generate(templated, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in out)

    def structured() -> int:
        reqs = [Request(m, {"json": level2_schema()}) for m in messages]
        out = backend.generate(reqs, sampling, positions)
        return sum(len(tokenizer.encode(c.text, add_special_tokens=False)) for c in out)

    bare()  # warm-up: first batch pays one-off allocations
    best = {"bare": 0.0, "ours": 0.0, "structured": 0.0}
    for _ in range(args.rounds):
        for name, fn in (("bare", bare), ("ours", ours), ("structured", structured)):
            t0 = time.time()
            tokens = fn()
            best[name] = max(best[name], tokens / (time.time() - t0))
    print(f"prompts {args.prompts}, max_tokens {args.max_tokens}, greedy, best of {args.rounds}")
    print(f"bare LLM.generate       : {best['bare']:7.1f} tokens/s")
    print(
        f"synthllm VLLMBackend    : {best['ours']:7.1f} tokens/s  ({best['ours'] / best['bare']:.3f}x bare)"
    )
    print(
        f"  with JSON constraint  : {best['structured']:7.1f} tokens/s  ({best['structured'] / best['bare']:.3f}x bare)"
    )


if __name__ == "__main__":
    main()
