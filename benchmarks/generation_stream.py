"""Generation without a chunk barrier (issue 21 item 4): the streaming loop against one big
engine call and against the old chunked loop, on one vLLM engine, with completion lengths
that vary as real ones do.

The prompts are real GSM8K train questions in the default's answer prompt (answer.j2), with
the default's answer sampling (config/default.yaml generation.answer.sampling: T 0.7,
max_tokens 384), on the default's model (models.generator, SmolLM2-135M-Instruct). Three ways,
on the same engine, interleaved `--rounds` times:

- `one call`: one `LLM.chat` over every prompt (vLLM's own batching; `LLM.generate` after
  the chat rendering), nothing written;
- `chunked`: the loop before this change, reproduced here: `LLM.chat` over `--chunk`
  prompts at a time (config/default.yaml generation.chunk_size), each chunk appended to a
  progress log; every chunk waits for its longest completion;
- `stream`: `synthllm.core.generation.generate_resumable` with a progress log, at most
  `--chunk` requests in flight, each replaced as it finishes (VLLMBackend.stream).

Prints the completion-length spread (tokens: min, median, p90, max), then per way the
tokens generated, wall and CPU seconds (this process and the engine's, summed), tokens/s,
and the ratios stream / one call (target >= 0.95) and stream / chunked. `--wide` adds the
stream with every prompt in flight (the window's own cost). With `--identity N`, a greedy
check: N prompts through the stream with 1 and with `--chunk` in flight and through one
call, and how many completions agree (vLLM's numerics change with batch composition).

    .venv/bin/python benchmarks/generation_stream.py --prompts 48 --max-tokens 256 --wide
    .venv/bin/python benchmarks/generation_stream.py --prompts 8 --max-tokens 32 --chunk 4 --identity 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import yaml
from synthllm.core.generation import ProgressLog, generate_resumable, render
from synthllm.core.llm import Backend, BackendSpec, Completion, Request, Sampling, VLLMBackend

ROOT = Path(__file__).resolve().parents[1]


class Shared(Backend):
    """The one engine, handed to generate_resumable; closing it is left to this script."""

    def __init__(self, backend: VLLMBackend):
        self.backend = backend

    def stream(self, *args, **kwargs):
        return self.backend.stream(*args, **kwargs)


def cpu_seconds() -> float:
    """CPU seconds of this process and every process under it (the engine core, its worker)."""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def spread(lengths: list[int]) -> str:
    ranked = sorted(lengths)
    p90 = ranked[min(len(ranked) - 1, int(0.9 * len(ranked)))]
    return (
        f"min {ranked[0]}, median {statistics.median(ranked):.0f}, p90 {p90}, max {ranked[-1]}"
        f" (mean {statistics.mean(ranked):.0f}; {sum(n == ranked[-1] for n in ranked)} at max)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=str(ROOT / "config" / "default.yaml"))
    ap.add_argument(
        "--questions", default=str(ROOT.parent / "shared" / "data" / "gsm8k_train" / "train.jsonl")
    )
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--chunk", type=int, help="default: the config's generation.chunk_size")
    ap.add_argument("--max-tokens", type=int, help="default: the config's answer max_tokens")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--wide", action="store_true", help="also the stream with all in flight")
    ap.add_argument("--identity", type=int, default=0, help="prompts of the greedy check")
    args = ap.parse_args()

    config = yaml.safe_load(Path(args.config).read_text())
    chunk = args.chunk or config["generation"]["chunk_size"]
    answer_sampling = config["generation"]["answer"]["sampling"]
    sampling = Sampling(
        **{
            "top_p": 1.0,
            **answer_sampling,
            **({"max_tokens": args.max_tokens} if args.max_tokens else {}),
        }
    )
    os.chdir(ROOT)  # the config's model path is relative to the checkout
    spec = BackendSpec.from_config("models.generator", config["models"]["generator"])
    backend = VLLMBackend(spec)
    llm, tokenizer = backend.llm, backend.llm.get_tokenizer()
    print(f"model {spec.model} ({spec.dtype}), engine start-up {backend.startup_s:.1f} s")

    with open(args.questions) as fh:
        questions = [json.loads(line)["question"] for line in fh][: args.prompts]
    requests = [
        Request([{"role": "user", "content": render("answer", question=q)}]) for q in questions
    ]
    positions = list(range(len(requests)))
    n = len(requests)

    def params(sampling, indices):
        return [backend.sampling_params(sampling, None, i) for i in indices]

    def one_call(tmp: Path, sampling=sampling) -> list[str]:
        out = llm.chat([r.messages for r in requests], params(sampling, positions), use_tqdm=False)
        return [o.outputs[0].text for o in out]

    def chunked(tmp: Path, sampling=sampling, size=chunk) -> list[str]:
        # the loop this change replaced: one engine call per chunk, each chunk on disk
        progress = ProgressLog(tmp / "chunked.progress.jsonl", "bench")
        texts = []
        for start in range(0, n, size):
            part = positions[start : start + size]
            out = llm.chat(
                [requests[i].messages for i in part], params(sampling, part), use_tqdm=False
            )
            got = [Completion(o.outputs[0].text, o.outputs[0].finish_reason or "stop") for o in out]
            progress.append(list(zip(part, got)))
            texts += [c.text for c in got]
        return texts

    def stream(tmp: Path, sampling=sampling, size=chunk) -> list[str]:
        out, _ = generate_resumable(
            requests,
            spec,
            sampling,
            tmp / f"stream-{size}.parquet",
            "bench",
            size,
            "stream",
            open_backend_fn=lambda s: Shared(backend),
        )
        return [c.text for c in out]

    ways = {"one call": one_call, f"chunked {chunk}": chunked, f"stream {chunk}": stream}
    if args.wide:
        ways[f"stream {n}"] = lambda tmp: stream(tmp, size=n)
    llm.chat([requests[0].messages], params(sampling, [0]), use_tqdm=False)  # warm-up
    runs: dict[str, list[tuple[int, float, float]]] = {name: [] for name in ways}
    lengths: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for name, fn in ways.items():
                folder = Path(tmp) / f"{round_no}-{name.replace(' ', '-')}"
                folder.mkdir()
                cpu, t0 = cpu_seconds(), time.perf_counter()
                texts = fn(folder)
                wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu
                counts = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
                lengths += counts
                runs[name].append((sum(counts), wall, cpu))
                print(
                    f"  round {round_no + 1} {name:12}: {sum(counts):6d} tokens "
                    f"{wall:7.1f} s wall {cpu:7.1f} CPU-s  {sum(counts) / wall:6.1f} tokens/s",
                    flush=True,
                )

    print(
        f"\n{n} GSM8K questions, answer prompt, T {sampling.temperature} top_p {sampling.top_p} "
        f"max_tokens {sampling.max_tokens}, {chunk} in flight / per chunk, {args.rounds} round(s)"
    )
    print(f"completion tokens over every run: {spread(lengths)}")
    rate = {}
    for name, results in runs.items():
        tokens = sum(r[0] for r in results)
        wall = sum(r[1] for r in results)
        cpu = sum(r[2] for r in results)
        rate[name] = tokens / wall
        print(
            f"{name:12}: {tokens:7d} tokens {wall:7.1f} s wall {cpu:7.1f} CPU-s "
            f"{rate[name]:6.1f} tokens/s {tokens / cpu:6.1f} tokens/CPU-s"
        )
    new = rate[f"stream {chunk}"]
    print(
        f"stream / one call: {new / rate['one call']:.3f}x (target >= 0.95)   "
        f"stream / chunked: {new / rate[f'chunked {chunk}']:.3f}x"
    )
    if args.wide:
        print(f"stream {n} / one call: {rate[f'stream {n}'] / rate['one call']:.3f}x")

    if args.identity:
        greedy = Sampling(temperature=0.0, top_p=1.0, max_tokens=64, seed=0)
        m = args.identity
        with tempfile.TemporaryDirectory() as tmp:
            out = llm.chat(
                [r.messages for r in requests[:m]], params(greedy, positions[:m]), use_tqdm=False
            )
            base = [o.outputs[0].text for o in out]
            for size in (1, chunk):
                sub = Path(tmp) / str(size)
                sub.mkdir()
                got = generate_resumable(
                    requests[:m],
                    spec,
                    greedy,
                    sub / "x.parquet",
                    "bench",
                    size,
                    "stream",
                    open_backend_fn=lambda s: Shared(backend),
                )[0]
                same = sum(a == c.text for a, c in zip(base, got))
                print(f"greedy, {m} prompts, 64 tokens: stream {size} = one call for {same}/{m}")
    backend.close()


if __name__ == "__main__":
    main()
