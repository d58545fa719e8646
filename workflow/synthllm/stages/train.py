"""Supervised fine-tuning on a mixture with DeepSpeed (paper §3.2, §5.1): the training
loop, its logs and checkpoints (synthllm train). The settings are synthllm.stages.train_settings,
the rows and batches synthllm.stages.train_data, read from the mixture's token store
(synthllm.stages.train_tokens), the untrained base synthllm.stages.base_model.

The loss is the mean over the step's label tokens, whatever rank or micro-batch holds them;
a short last batch fills empty micro-batch slots with zero-weight copies so every rank runs
the same number of forward/backward passes.

Outputs under `train/{model}/{budget}/`:
- `final/`: Hugging Face folder (config.json, model.safetensors, tokenizer with its chat
  template) that `AutoModelForCausalLM.from_pretrained` and vLLM load;
- `counts.json`: write_counts fields (samples in/out) plus `tokens` (the mixture's token
  total), `samples`, `truncated_samples` (both the token store's), `steps`, `epochs`,
  `final_loss`, throughput and batch geometry;
- `log.jsonl`: one line per optimizer step: step, epoch, loss, lr, tokens, label_tokens,
  tokens_per_s, elapsed_s, cpu_s (this process's CPU time; on a shared machine the steadier
  figure), and mfu where the accelerator's peak FLOP/s is known;
- `checkpoints/`: DeepSpeed checkpoints every `checkpoint_every` steps, the newest
  `keep_checkpoints` kept, and `resume.json` naming the newest complete one with the run's
  fingerprint (settings, the token store's digest, base model, world size); a rerun
  resumes from it when the fingerprint matches and starts afresh otherwise. Removed once
  the final model is saved.

A SIGTERM (SLURM's, `--signal` before the time limit; it reaches every rank) stops the run at
the next step boundary, the same one on every rank (the flag rides on the step's loss
all-reduce): a checkpoint as above is saved at that step, and the job exits with status 75
(synthllm.core.stop) for the rerun to resume from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from synthllm.core import stop
from synthllm.stages.train_data import (
    Rows,
    collate,
    label_loss_sum,
    rank_micro_batches,
    read_row,
    step_items,
    steps_per_epoch,
)
from synthllm.stages.train_settings import (
    TrainError,
    TrainSettings,
    deepspeed_config,
    gradient_accumulation,
    linear_schedule,
)
from synthllm.stages.train_tokens import open_store, tokenizer_digest

log = logging.getLogger("synthllm.stages.train")


def _file_digest(path: str | os.PathLike) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["step"] <= upto]


def _peak_flops(peak_tflops: float | None, device_type: str) -> float | None:
    """Peak FLOP/s of one accelerator: the config's, else None (no MFU on CPUs)."""
    if peak_tflops:
        return peak_tflops * 1e12
    if device_type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name()
    dense_bf16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "B200": 2250e12}
    return next((v for k, v in dense_bf16.items() if k in name), None)


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict | None:
    """Fine-tune `inputs["base"]` (an HF folder, e.g. `train/{model}/0/final`) on the
    token store `inputs["tokens"]` (a folder, synthllm.stages.train_tokens), writing `final/`, `counts.json` and `log.jsonl` into the folder of
    `outputs["counts"]`. Run under torchrun (or alone, as a world of one). Settings: config
    key train with the model's overrides (`training`) and chat.system_prompt
    (`system_prompt`); execution: train.checkpoint_every, keep_checkpoints, peak_tflops
    and the job's threads, shared by the processes of a node (rules/10_train.smk). Returns the
    counts on rank 0. After a SIGTERM: a checkpoint at the next step boundary, then
    stop.Stopped (exit status 75)."""
    with stop.handling():
        return _train(inputs=inputs, outputs=outputs, settings=settings, execution=execution)


def _train(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict | None:
    import deepspeed
    import torch
    import torch.distributed as dist
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _die_with_launcher()
    base_model = inputs["base"]
    system_prompt = settings["system_prompt"]
    training = TrainSettings.from_config(settings["training"])
    cadence = execution["training"]
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, execution["threads"] // per_node))
    for name, default in (
        ("RANK", "0"),
        ("LOCAL_RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", str(_free_port())),
    ):
        os.environ.setdefault(name, default)  # without torchrun: a world of one
    deepspeed.init_distributed(dist_backend=_backend(), auto_mpi_discovery=False)
    rank, world = dist.get_rank(), dist.get_world_size()
    host = socket.gethostname()
    log.info("rank %d of %d on %s (local rank %s)", rank, world, host, os.environ["LOCAL_RANK"])
    # which node ran which rank, into the counts: a multi-node layout is visible after the job
    hosts = [None] * world
    dist.all_gather_object(hosts, host)
    ranks_by_node = {
        h: [r for r, other in enumerate(hosts) if other == h] for h in sorted(set(hosts))
    }
    out = Path(outputs["counts"]).parent
    ckpt_dir = out / "checkpoints"
    progress_log = ckpt_dir / "log.jsonl"
    torch.manual_seed(training.seed)

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if not tokenizer.chat_template:
        raise TrainError(f"{base_model}: the tokenizer has no chat template")
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    # the samples as this run's settings and tokenizer make them, tokenised once (its own job)
    store = open_store(
        inputs["tokens"],
        {
            "system_prompt": system_prompt,
            "loss_on": training.loss_on,
            "max_seq_len": training.max_seq_len,
            "tokenizer": tokenizer_digest(tokenizer),
        },
    )
    rows = Rows.of(store, training.max_seq_len, training.packing)

    accumulation = gradient_accumulation(
        training.global_batch_size, training.micro_batch_size, world
    )
    per_epoch = steps_per_epoch(len(rows), training.global_batch_size)
    total_steps = per_epoch * training.epochs
    warmup = int(training.warmup_ratio * total_steps)
    ds_config = deepspeed_config(training, accumulation)

    dtype = torch.bfloat16 if training.precision == "bf16" else torch.float32
    hf_zero3 = None
    if training.zero_stage == 3:
        # keeps from_pretrained partitioning the weights as it loads (zero.Init)
        from transformers.integrations import HfDeepSpeedConfig

        hf_zero3 = HfDeepSpeedConfig(ds_config)  # noqa: F841 (must stay alive)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    model.config.use_cache = False
    if training.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    n_params = (
        sum(p.numel() for p in model.parameters())
        if training.zero_stage != 3
        else sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    )

    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: linear_schedule(step, total_steps, warmup)
        ),
    )
    del hf_zero3

    fingerprint = training.fingerprint(
        store.counts["digest"],
        str(world),
        system_prompt,
        _file_digest(Path(base_model) / "config.json"),
    )
    start = _resume(engine, ckpt_dir, fingerprint, rank)
    history = _read_log(progress_log, start) if rank == 0 else []
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        with open(progress_log, "w") as f:
            f.writelines(json.dumps(e) + "\n" for e in history)

    peak = _peak_flops(
        cadence["peak_tflops"], engine.device.type if hasattr(engine.device, "type") else "cpu"
    )
    device = engine.device
    t_run = time.perf_counter()
    trained_tokens = 0
    bar = tqdm(total=total_steps, initial=start, desc="train", disable=rank != 0)
    for step in range(start, total_steps):
        t0, c0 = time.perf_counter(), time.process_time()
        epoch, items = step_items(len(rows), training.global_batch_size, step, training.seed)
        step_label_tokens = int(rows.label_tokens[items].sum())
        step_tokens = int(rows.tokens[items].sum())
        # Loss of a micro-batch = its token-loss sum / the step's label tokens, times the
        # accumulation and the world size that DeepSpeed divides by again: the gradient is
        # that of the mean over every label token of the step.
        scale = accumulation * world / max(1, step_label_tokens)
        lr = engine.get_lr()[0]
        # [this rank's token-loss sum, whether it got SIGTERM], summed over ranks below; on
        # the engine's device, as NCCL reduces only GPU tensors
        local = torch.zeros(2, dtype=torch.float64, device=device)
        for slot in rank_micro_batches(items, rank, world, training.micro_batch_size, accumulation):
            weight = 1.0 if slot else 0.0
            batch = collate([read_row(store, rows, i) for i in (slot or [int(items[0])])], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            token_loss = label_loss_sum(engine, batch)
            engine.backward(token_loss * (scale * weight))
            engine.step()
            local[0] += token_loss.detach().double() * weight
        # read after the step's work: a SIGTERM during it stops the run after this step
        local[1] = float(stop.requested())
        dist.all_reduce(local)
        loss_sum, stopping = local.tolist()
        loss = loss_sum / max(1, step_label_tokens)
        if not math.isfinite(loss):
            raise TrainError(f"step {step + 1}: loss is {loss}")
        elapsed = time.perf_counter() - t0
        trained_tokens += step_tokens
        done = step + 1
        entry = {
            "step": done,
            "epoch": epoch + 1,
            "loss": loss,
            "lr": lr,
            "tokens": step_tokens,
            "label_tokens": step_label_tokens,
            "tokens_per_s": step_tokens / elapsed,
            "elapsed_s": elapsed,
            "cpu_s": time.process_time() - c0,
        }
        if peak:
            entry["mfu"] = 6 * n_params * step_tokens / elapsed / (peak * world)
        if rank == 0:
            with open(progress_log, "a") as f:
                f.write(json.dumps(entry) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{entry['tokens_per_s']:.0f}")
        # every rank has the same `stopping` (the all-reduced flag): all stop after this step
        if done < total_steps and (done % cadence["checkpoint_every"] == 0 or stopping):
            _save_checkpoint(engine, ckpt_dir, done, fingerprint, cadence["keep_checkpoints"], rank)
        if stopping and done < total_steps:
            bar.close()
            stop.exit(
                f"train: stopped by SIGTERM after step {done} of {total_steps}; checkpoint "
                f"{ckpt_dir / _tag(done)} saved; rerun resumes from it",
                announce=rank == 0,
            )
    bar.close()
    wall = time.perf_counter() - t_run

    _save_final(engine, tokenizer, out, training, rank)
    if rank == 0:
        entries = _read_log(progress_log, total_steps)
        shutil.copyfile(progress_log, out / "log.jsonl")
        from synthllm.core.files import write_counts

        counts = write_counts(
            out / "counts.json",
            "train",
            len(store),
            len(store),
            {},
            samples=len(store),
            tokens=store.counts["tokens"],
            rows=len(rows),
            truncated_samples=store.counts["truncated_samples"],
            epochs=training.epochs,
            steps=total_steps,
            resumed_from_step=start,
            world_size=world,
            ranks_by_node=ranks_by_node,
            gradient_accumulation=accumulation,
            global_batch_size=training.global_batch_size,
            micro_batch_size=training.micro_batch_size,
            parameters=n_params,
            final_loss=entries[-1]["loss"] if entries else None,
            tokens_per_s=(trained_tokens / wall) if wall > 0 and trained_tokens else None,
        )
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    dist.barrier()
    return counts if rank == 0 else None


def _die_with_launcher() -> None:
    """torchrun starts its workers in their own sessions, so a SIGKILLed launcher (a killed
    job) would leave them training on, racing the rerun. On Linux each worker asks the
    kernel for SIGKILL when its parent dies."""
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    if os.getppid() == 1:  # the launcher died before the request
        os.kill(os.getpid(), signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def _resume(engine, ckpt_dir: Path, fingerprint: str, rank: int) -> int:
    """Load the checkpoint `resume.json` names if it belongs to this run; the step to
    continue from (0 without one)."""
    import torch.distributed as dist

    marker = ckpt_dir / "resume.json"
    if not marker.exists():
        return 0
    meta = json.loads(marker.read_text())
    if meta.get("fingerprint") != fingerprint:
        log.warning(
            "%s: checkpoint %s is from other settings or data; starting afresh",
            ckpt_dir,
            meta.get("tag"),
        )
        dist.barrier()
        if rank == 0:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        dist.barrier()
        return 0
    path, client = engine.load_checkpoint(str(ckpt_dir), tag=meta["tag"])
    if path is None:
        raise TrainError(f"{ckpt_dir}: DeepSpeed could not load checkpoint {meta['tag']}")
    log.info("resumed from %s at step %d", path, client["step"])
    return int(client["step"])


def _tag(step: int) -> str:
    return f"step-{step:08d}"


def _save_checkpoint(
    engine, ckpt_dir: Path, step: int, fingerprint: str, keep: int, rank: int
) -> None:
    """A DeepSpeed checkpoint of every rank; `resume.json` points at it only once all ranks
    have written theirs, so a kill at any moment leaves a loadable checkpoint named."""
    import torch.distributed as dist

    from synthllm.core.files import write_json

    tag = _tag(step)
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"step": step})
    dist.barrier()
    if rank == 0:
        write_json(ckpt_dir / "resume.json", {"tag": tag, "step": step, "fingerprint": fingerprint})
        tags = sorted(p.name for p in ckpt_dir.glob("step-*") if p.is_dir())
        for old in tags[:-keep]:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    dist.barrier()


def _save_final(engine, tokenizer, out: Path, settings: TrainSettings, rank: int) -> None:
    """The trained weights as a Hugging Face folder, written aside and renamed into place."""
    state = engine._zero3_consolidated_16bit_state_dict() if settings.zero_stage == 3 else None
    if rank == 0:
        final, scratch = out / "final", out / ".final.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        model = engine.module
        model.config.use_cache = True
        model.save_pretrained(scratch, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(scratch, final)
