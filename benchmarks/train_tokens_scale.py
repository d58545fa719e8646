"""Tokenise once (issue 21, item 1): the token store against tokenising on every rank.

(a) Tokeniser throughput on real gsm8k samples through SmolLM2's chat template, in the same
run: the loop training ran at every start before the token store (apply_chat_template per
sample, twice with loss_on answer) against the train_tokens stage (batched rendering, the
fast tokenizer's batch encoder over --threads, the store written); samples/s per wall and
per CPU second (the steadier figure on a shared machine), and whether the ids and labels
are the same.

(b) Training start-up at scale: token stores of --small and --large samples (default 74K
and 7.4M, the paper's largest budget) whose lengths and label starts are drawn from (a)'s
real samples and whose ids are random, written through the stage's own writer; then the
real training code (`synthllm train`, one process, DS_ACCELERATOR=cpu, the tests' ~3M
parameter model from SmolLM2's tokenizer) on each: seconds from process start to its first
optimizer step, and its peak RSS then (VmHWM) and after a few more steps. Also the time
and size of the row tables of a rank (Rows.of, unpacked and packed). The stores go under
--tmp and are removed.

    .venv/bin/python benchmarks/train_tokens_scale.py [--samples 8000] [--large 7400000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from synthllm.core.chat import prompt_messages, sft_messages  # noqa: E402
from synthllm.settings import schema_defaults, stage_settings  # noqa: E402
from synthllm.stages import base_model, train_data, train_tokens  # noqa: E402

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
# the tests' tiny model (tests/test_train.py TINY): one layer, one head of 64
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 1,
    "num_key_value_heads": 1,
}
MAX_SEQ_LEN = 1024


def old_loop(tokenizer, questions, answers, max_seq_len):
    """What every training rank ran at every start before the token store: per sample, the
    conversation and the prompt through apply_chat_template, labels masked as lists."""
    encoded = []
    for q, a in zip(questions, answers):
        ids = list(
            tokenizer.apply_chat_template(
                sft_messages(q, a, SYSTEM), tokenize=True, return_dict=True
            )["input_ids"]
        )
        prompt = list(
            tokenizer.apply_chat_template(
                prompt_messages(q, SYSTEM),
                tokenize=True,
                return_dict=True,
                add_generation_prompt=True,
            )["input_ids"]
        )
        if ids[: len(prompt)] != prompt:
            raise AssertionError("the template renders the prompt differently")
        labels = list(ids)
        labels[: len(prompt)] = [train_data.IGNORE] * len(prompt)
        labels[0] = train_data.IGNORE
        encoded.append((ids[:max_seq_len], labels[:max_seq_len]))
    return encoded


def write_mixture(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "question": [r["question"] for r in records],
                "answer": [r["answer"] for r in records],
                "tokens": pa.array([0] * len(records), pa.int32()),
            }
        ),
        path,
    )


def throughput(args, tmp: Path, tokenizer) -> train_tokens.TokenStore:
    """Part (a); returns the real store (its lengths and label starts seed part (b))."""
    with open(args.data) as f:
        records = [json.loads(line) for _, line in zip(range(args.samples), f)]
    n = len(records)
    questions = [r["question"] for r in records]
    answers = [r["answer"] for r in records]
    t, c = time.perf_counter(), time.process_time()
    old = old_loop(tokenizer, questions, answers, MAX_SEQ_LEN)
    old_wall, old_cpu = time.perf_counter() - t, time.process_time() - c

    mixture = tmp / "gsm8k.parquet"
    write_mixture(mixture, records)
    t, c = time.perf_counter(), time.process_time()
    train_tokens.run(
        inputs={"mixture": str(mixture), "base": str(args.tokenizer)},
        outputs={"tokens": str(tmp / "real")},
        settings={"system_prompt": SYSTEM, "loss_on": "answer", "max_seq_len": MAX_SEQ_LEN},
        execution={"threads": args.threads},
    )
    new_wall, new_cpu = time.perf_counter() - t, time.process_time() - c
    store = train_tokens.open_store(tmp / "real", settings(tokenizer))
    rows = train_data.Rows.of(store, MAX_SEQ_LEN, packing=False)
    same = all(
        (row := train_data.read_row(store, rows, i)).input_ids.tolist() == ids
        and row.labels.tolist() == labels
        for i, (ids, labels) in enumerate(old)
    )
    tokens = int(store.offsets[-1])
    print(
        f"(a) {n} gsm8k samples, {tokens / n:.0f} tokens each on average (SmolLM2 template), "
        f"{args.threads} threads"
    )
    print("                             samples/wall-s  samples/CPU-s   wall s    CPU s")
    for name, wall, cpu in (
        ("old: encode_sample loop", old_wall, old_cpu),
        ("new: train_tokens stage", new_wall, new_cpu),
    ):
        print(f"{name:28s} {n / wall:14.0f} {n / cpu:14.0f} {wall:8.2f} {cpu:8.2f}")
    print(
        f"ratio new/old               {old_wall / new_wall:14.2f} {old_cpu / new_cpu:14.2f}"
        f"   ids and labels identical: {same}"
    )
    # what the old loop's lists hold per token (the ids and labels of every sample, kept by
    # every rank for the whole run), traced on a share of the samples
    import tracemalloc

    share = min(n, 1000)
    tracemalloc.start()
    kept = old_loop(tokenizer, questions[:share], answers[:share], MAX_SEQ_LEN)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_token = held / sum(len(ids) for ids, _ in kept)
    del kept
    large_tokens = args.large * tokens / n
    print(
        f"    the old loop at {args.large:,} samples: {args.large / (n / old_cpu) / 3600:.1f} "
        f"CPU-h at every start of every rank, holding {per_token:.0f} bytes per token: "
        f"{large_tokens * per_token / 1e9:.0f} GB per rank"
    )
    return store


def settings(tokenizer) -> dict:
    return {
        "system_prompt": SYSTEM,
        "loss_on": "answer",
        "max_seq_len": MAX_SEQ_LEN,
        "tokenizer": train_tokens.tokenizer_digest(tokenizer),
    }


def synthetic_store(dest: Path, n: int, real, tokenizer, seed: int = 0) -> tuple[float, dict]:
    """A store of n samples, lengths and label starts drawn from the real store's, random
    ids, through the stage's writer; (seconds, counts)."""
    rng = np.random.default_rng(seed)
    lengths = np.diff(np.asarray(real.offsets))
    starts = np.asarray(real.label_start)
    vocab = len(tokenizer)

    def batches():
        for done in range(0, n, 1 << 16):
            pick = rng.integers(0, len(lengths), size=min(1 << 16, n - done))
            k = lengths[pick]
            ids = rng.integers(0, vocab, size=int(k.sum()), dtype=np.int32)
            yield train_tokens.Encoded(ids, k, starts[pick].astype(np.int32), 0)

    t = time.perf_counter()
    # `tokens` is a mixture's own count (the D of the scaling law): none here
    counts = train_tokens.write_store(dest, n, batches(), settings(tokenizer), tokens=None)
    return time.perf_counter() - t, counts


def vm_hwm(pid: int) -> float:
    """Peak resident memory of a process so far, GiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def first_steps(tokens: Path, base: Path, out: Path, threads: int, steps: int) -> dict:
    """`synthllm train` alone (a world of one) on a store: seconds from process start to
    the first logged step, VmHWM then and after `steps` steps; then killed."""
    config = schema_defaults(models={"train": [{"label": "tiny", "model": str(base)}]})
    train_settings, execution = stage_settings(config, training="train")
    train_settings["training"].update(
        max_seq_len=MAX_SEQ_LEN, loss_on="answer", packing=False, epochs=1
    )
    train_settings["system_prompt"] = SYSTEM
    execution["training"]["checkpoint_every"] = 10**9
    execution["threads"] = threads
    parts = {
        "inputs": {"tokens": str(tokens), "base": str(base)},
        "outputs": {
            "final": str(out / "final"),
            "counts": str(out / "counts.json"),
            "log": str(out / "log.jsonl"),
        },
        "settings": train_settings,
        "execution": execution,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow"), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "synthllm", "train"]
    cmd += [arg for name, part in parts.items() for arg in (f"--{name}", json.dumps(part))]
    progress = out / "checkpoints" / "log.jsonl"
    out.mkdir(parents=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=open(out / "run.log", "w"), stderr=subprocess.STDOUT
    )
    result = {}
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError((out / "run.log").read_text()[-3000:])
            logged = progress.read_text().count("\n") if progress.exists() else 0
            if logged >= 1 and "first_s" not in result:
                result["first_s"] = time.perf_counter() - started
                result["first_cpu"] = cpu_seconds(proc.pid)
                result["first_gib"] = vm_hwm(proc.pid)
            if logged >= steps:
                result["steps_gib"] = vm_hwm(proc.pid)
                last = json.loads(progress.read_text().splitlines()[-1])
                result["step_s"], result["step_cpu"] = last["elapsed_s"], last["cpu_s"]
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "gsm8k_train" / "train.jsonl"
    )
    ap.add_argument("--tokenizer", default=str(ROOT / "resources/models/SmolLM2-135M-Instruct"))
    ap.add_argument("--samples", type=int, default=8000, help="real samples of part (a)")
    ap.add_argument("--small", type=int, default=74_000)
    ap.add_argument("--large", type=int, default=7_400_000)
    ap.add_argument("--steps", type=int, default=3, help="steps before the second RSS reading")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tmp", default="/tmp", help="where the stores go (7.4M: ~7 GB)")
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: absent (../shared/data)")
    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="train_tokens_scale.", dir=args.tmp))
    try:
        base = tmp / "base"
        base_model.run_base_model(
            inputs={},
            outputs={"final": str(base), "counts": str(tmp / "base.json")},
            settings={
                "model": {
                    "label": "tiny",
                    "model": args.tokenizer,
                    "init": "scratch",
                    "seed": 0,
                    "chat_template": None,
                    "architecture": TINY,
                }
            },
            execution={"threads": args.threads},
        )
        tokenizer = AutoTokenizer.from_pretrained(base)
        real = throughput(args, tmp, tokenizer)

        print(
            f"(b) training start-up, one process, {args.threads} threads, the tests' "
            f"~3M-parameter model, max_seq_len {MAX_SEQ_LEN}, no packing"
        )
        print(
            "   samples  store GB  write s  start->step 1: wall s  CPU s  RSS at step 1 GiB  "
            f"RSS at step {args.steps} GiB  rows s  rows MB  packed rows s"
        )
        for n in (args.small, args.large):
            store_dir = tmp / f"store-{n}"
            write_s, counts = synthetic_store(store_dir, n, real, tokenizer)
            size = sum(p.stat().st_size for p in store_dir.iterdir()) / 1e9
            run = first_steps(store_dir, base, tmp / f"run-{n}", args.threads, args.steps)
            store = train_tokens.open_store(store_dir, settings(tokenizer))
            t = time.perf_counter()
            rows = train_data.Rows.of(store, MAX_SEQ_LEN, packing=False)
            rows_s = time.perf_counter() - t
            rows_mb = sum(a.nbytes for a in (rows.bounds, rows.tokens, rows.label_tokens)) / 1e6
            t = time.perf_counter()
            packed = train_data.Rows.of(store, MAX_SEQ_LEN, packing=True)
            packed_s = time.perf_counter() - t
            print(
                f"{n:>10,} {size:9.2f} {write_s:8.1f} {run['first_s']:21.1f} "
                f"{run['first_cpu']:6.1f} {run['first_gib']:18.2f} {run['steps_gib']:18.2f} "
                f"{rows_s:7.2f} {rows_mb:8.0f} {packed_s:14.2f}"
            )
            print(
                f"           ({counts['stored_tokens']:,} tokens; {len(packed):,} packed rows; "
                f"step {args.steps} took {run['step_s']:.2f} s, {run['step_cpu']:.2f} CPU-s)"
            )
            del store, rows, packed
            shutil.rmtree(store_dir)
            shutil.rmtree(tmp / f"run-{n}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
