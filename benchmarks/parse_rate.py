"""Parse rate of extraction, Level-1 and Level-2 outputs with and without structured outputs.

Runs the real prompts of the three stages on N documents of a corpus shard (math
StackExchange by default) through one vLLM engine, once constrained by the stages' JSON
schemas and once in the paper's free-text tag formats, and prints the share of completions
each parser accepts (status ok or not_suitable) per stage and mode.

    .venv/bin/python benchmarks/parse_rate.py --docs 16
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from synthllm.core.generation import completion_status
from synthllm.core.llm import BackendSpec, Sampling, VLLMBackend
from synthllm.core.parsers import parse_extraction, parse_level1, parse_level2
from synthllm.settings import schema_default
from synthllm.stages.extract import extraction_request
from synthllm.stages.level1 import level1_request
from synthllm.stages.level2 import level2_request


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="resources/models/SmolLM2-135M-Instruct")
    ap.add_argument(
        "--dtype", default="float32", help="float32 is the fast one on CPUs without bf16"
    )
    ap.add_argument(
        "--corpus", default="resources/demo_corpus/math_stackexchange/math_33votes.jsonl"
    )
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--max-doc-chars", type=int, default=1500)
    ap.add_argument("--max-tokens", type=int, default=320)
    args = ap.parse_args()

    with open(Path(args.corpus)) as fh:
        texts = [
            (r["input"] + "\n\n" + r["output"])[: args.max_doc_chars] for r in map(json.loads, fh)
        ][: args.docs]
    backend = VLLMBackend(
        BackendSpec.from_config(
            "models.generator", {"backend": "vllm", "model": args.model, "dtype": args.dtype}
        )
    )
    greedy = Sampling(
        **{
            **schema_default("generation.extract.sampling"),
            "temperature": 0.0,
            "max_tokens": args.max_tokens,
        }
    )
    sampled = Sampling(temperature=0.7, top_p=0.95, max_tokens=args.max_tokens, seed=1)
    positions = list(range(len(texts)))
    print(f"{len(texts)} documents, max_tokens {args.max_tokens}")
    print(f"{'stage':8} {'mode':11} {'parsed':>7}  statuses")
    for structured in (True, False):
        mode = "structured" if structured else "free text"
        extract_out = backend.generate(
            [extraction_request(t, structured, 2, 6) for t in texts], greedy, positions
        )
        parsed = [parse_extraction(c.text) for c in extract_out]
        # Level-2 needs concepts: use this mode's extractions where they parsed
        usable = [(t, p.records) for t, p in zip(texts, parsed) if p.status == "ok"]
        runs = {
            "extract": (extract_out, parse_extraction),
            "level1": (
                backend.generate(
                    [level1_request(t, structured) for t in texts], sampled, positions
                ),
                parse_level1,
            ),
            "level2": (
                backend.generate(
                    [level2_request(t, topics, structured) for t, topics in usable],
                    sampled,
                    positions[: len(usable)],
                ),
                parse_level2,
            ),
        }
        for stage, (completions, parse) in runs.items():
            statuses = Counter(completion_status(parse(c.text).status, c) for c in completions)
            good = statuses["ok"] + statuses["not_suitable"]
            rate = good / len(completions) if completions else float("nan")
            print(f"{stage:8} {mode:11} {rate:7.0%}  {dict(statuses)} (n={len(completions)})")


if __name__ == "__main__":
    main()
