"""Training throughput: our DeepSpeed trainer against a bare PyTorch loop.

The same base model (a from-scratch Llama from SmolLM2's tokenizer, by default the 7M
model of config/default.yaml), the same gsm8k samples, the same batches (micro-batch x
accumulation, answer-only loss) and AdamW with the same schedule, in one process each with
the same threads. Prints tokens/s of both (the first step of each left out: warm-up) and
the ratio, per wall second and per CPU second of the process (the steadier figure
when others share the cores); target >= 0.9 on CPU. On a GPU it also prints the MFU of both.

    .venv/bin/python benchmarks/train_throughput.py [--samples 96] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from synthllm.settings import schema_defaults, schema_node, split, stage_settings  # noqa: E402
from synthllm.stages import (  # noqa: E402
    base_model,
    train,
    train_data,
    train_settings,
    train_tokens,
)

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SEVEN_M = {
    "hidden_size": 128,
    "intermediate_size": 344,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
}


def bench_config(tokenizer: str, architecture: dict) -> dict:
    """A config with every schema default, training one from-scratch model from
    `tokenizer`'s folder."""
    model = {"label": "bench", "model": tokenizer, "init": "scratch"}
    return schema_defaults(models={"train": [{**model, "architecture": architecture}]})


def mixture(path: Path, data: Path, n: int, tokenizer_path: Path) -> None:
    """The first `n` records of `data` as a mixture, tokens counted as the mixture stage does."""
    import polars as pl
    from synthllm.stages.mixtures import count_tokens

    with open(data) as f:
        records = [json.loads(next(f)) for _ in range(n)]
    frame = pl.DataFrame(
        {"question": [r["question"] for r in records], "answer": [r["answer"] for r in records]}
    )
    tokens = count_tokens(frame, str(tokenizer_path), SYSTEM)
    frame.with_columns(pl.Series("tokens", tokens, dtype=pl.Int32)).write_parquet(path)


def bare_loop(
    base: Path, tokens: Path, s: train_settings.TrainSettings, steps: int
) -> tuple[float, float]:
    """Plain PyTorch: the trainer's batches, loss and schedule without DeepSpeed, on the same
    token store. Tokens per wall second and per CPU second, after the first step."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    store = train_tokens.open_store(
        tokens,
        {
            "system_prompt": SYSTEM,
            "loss_on": s.loss_on,
            "max_seq_len": s.max_seq_len,
            "tokenizer": train_tokens.tokenizer_digest(tokenizer),
        },
    )
    table = train_data.Rows.of(store, s.max_seq_len, packing=False)
    rows = [train_data.read_row(store, table, i) for i in range(len(table))]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if s.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
    model.config.use_cache = False
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=s.learning_rate,
        betas=s.adam_betas,
        eps=s.adam_eps,
        weight_decay=s.weight_decay,
    )
    accumulation = train_settings.gradient_accumulation(s.global_batch_size, s.micro_batch_size, 1)
    total = train_data.steps_per_epoch(len(rows), s.global_batch_size) * s.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: train_settings.linear_schedule(k, total, 0)
    )
    tokens, t_start, c_start = 0, None, None
    for step in range(steps):
        if step == 1:
            t_start, c_start = time.perf_counter(), time.process_time()
        _, items = train_data.step_items(len(rows), s.global_batch_size, step, s.seed)
        n_labels = int(table.label_tokens[items].sum())
        for slot in train_data.rank_micro_batches(items, 0, 1, s.micro_batch_size, accumulation):
            batch = {
                k: v.to(device)
                for k, v in train_data.collate(
                    [rows[i] for i in slot], tokenizer.pad_token_id
                ).items()
            }
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            loss = (
                torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.size(-1)),
                    labels[:, 1:].reshape(-1),
                    ignore_index=train_data.IGNORE,
                    reduction="sum",
                )
                / n_labels
            )
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step >= 1:
            tokens += sum(len(rows[i].input_ids) for i in items)
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t_start, time.process_time() - c_start
    return tokens / wall, tokens / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "gsm8k_train" / "train.jsonl"
    )
    ap.add_argument("--tokenizer", default=str(ROOT / "resources/models/SmolLM2-135M-Instruct"))
    ap.add_argument(
        "--architecture-json",
        default=json.dumps(SEVEN_M),
        help="from-scratch Llama sizes (default: the 7M model of config/default.yaml)",
    )
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps timed (first left out)")
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--zero-stage", type=int, default=2)
    ap.add_argument("--precision", default="fp32", choices=train_settings.PRECISIONS)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    config = bench_config(args.tokenizer, json.loads(args.architecture_json))
    # the base_model job's settings (rules/10_train.smk): the model's entry without its
    # execution keys (nodes, gpus) and training overrides
    model, _ = split(config["models"]["train"][0], schema_node("models.train")["items"])
    model.pop("train", None)
    # the settings of the train job (rules/10_train.smk): config key train, with this
    # benchmark's batches, learning rate and one epoch; no checkpoint while timing
    settings, execution = stage_settings(config, training="train")
    settings["training"].update(
        zero_stage=args.zero_stage,
        precision=args.precision,
        micro_batch_size=args.micro_batch,
        global_batch_size=args.global_batch,
        learning_rate=1e-3,
        epochs=1,
        max_seq_len=1024,
    )
    settings["system_prompt"] = SYSTEM
    execution["training"]["checkpoint_every"] = 10**6
    execution["threads"] = args.threads
    training = train_settings.TrainSettings.from_config(settings["training"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        counts = base_model.run_base_model(
            inputs={},
            outputs={"final": str(base), "counts": str(tmp / "base.json")},
            settings={"model": model},
            execution={"threads": args.threads},
        )
        mix = tmp / "mix.parquet"
        mixture(mix, args.data, args.samples, base)
        # exactly `steps` steps: one epoch of steps x global batch samples
        n = min(args.samples, args.steps * args.global_batch)
        import pyarrow.parquet as pq

        pq.write_table(pq.read_table(mix).slice(0, n), mix)
        steps = train_data.steps_per_epoch(n, args.global_batch)

        tokens = tmp / "tokens"
        train_tokens.run(
            inputs={"mixture": str(mix), "base": str(base)},
            outputs={"tokens": str(tokens)},
            settings={
                "system_prompt": SYSTEM,
                "loss_on": training.loss_on,
                "max_seq_len": training.max_seq_len,
            },
            execution={"threads": args.threads},
        )
        bare_tps, bare_cpu = bare_loop(base, tokens, training, steps)
        ours = tmp / "ours"
        train.run(
            inputs={"tokens": str(tokens), "base": str(base)},
            outputs={
                "final": str(ours / "final"),
                "counts": str(ours / "counts.json"),
                "log": str(ours / "log.jsonl"),
            },
            settings=settings,
            execution=execution,
        )
        log = [json.loads(line) for line in (ours / "log.jsonl").read_text().splitlines()]
        timed = log[1:]
        ours_tps = sum(e["tokens"] for e in timed) / sum(e["elapsed_s"] for e in timed)
        ours_cpu = sum(e["tokens"] for e in timed) / sum(e["cpu_s"] for e in timed)

    print(
        f"model: {counts['parameters'] / 1e6:.1f} M parameters, {n} samples, {steps} steps "
        f"(first left out), micro-batch {args.micro_batch}, global batch {args.global_batch}, "
        f"ZeRO {args.zero_stage}, {args.precision}, {args.threads} threads"
    )
    print("                    tokens/wall-s  tokens/CPU-s (steadier on a shared machine)")
    print(f"bare PyTorch loop : {bare_tps:12.1f}  {bare_cpu:12.1f}")
    print(f"DeepSpeed trainer : {ours_tps:12.1f}  {ours_cpu:12.1f}")
    print(
        f"ratio             : {ours_tps / bare_tps:12.3f}  {ours_cpu / bare_cpu:12.3f}"
        "  (target >= 0.9)"
    )
    if timed and "mfu" in timed[0]:
        print(f"MFU (trainer)     : {sum(e['mfu'] for e in timed) / len(timed):8.1%}")


if __name__ == "__main__":
    main()
