"""Supervised fine-tuning on a mixture with DeepSpeed (paper §3.2, §5.1).

The paper fine-tunes Llama-3.2-1B/3B and Llama-3.1-8B on nested subsets of the L1+L2+L3
mixture with AdamW, learning rate 1e-5, a linear schedule, global batch 512 and 3 epochs.
Everything it leaves open (warm-up, weight decay, sequence length, packing, loss masking,
precision) is a config key under `training` (see config/schema.yaml).

Input: a mixture parquet with columns `question`, `answer` and `tokens` (the token count of
the chat-formatted sample; its sum is the D of the scaling law). Each sample becomes the
conversation `synthllm.chat.sft_messages(question, answer, chat.system_prompt)` rendered by
the tokenizer's chat template, the same format evaluation prompts with. By default the loss
covers only the assistant's turn (`training.loss_on: answer`); `all` covers every token.

Batching: a step sees `global_batch_size` samples (packed rows with `packing: true`), split
over the world as `micro_batch_size` x gradient accumulation x processes; the accumulation
is derived from the other three. The order is a fixed permutation per epoch (`training.seed`
+ epoch), so a resumed run sees exactly the batches an uninterrupted one would. The loss is
the mean over the step's label tokens, whatever rank or micro-batch holds them; a short last
batch fills empty micro-batch slots with zero-weight copies so every rank runs the same
number of forward/backward passes.

Outputs under `train/{model}/{budget}/`:
- `final/`: Hugging Face folder (config.json, model.safetensors, tokenizer with its chat
  template) that `AutoModelForCausalLM.from_pretrained` and vLLM load;
- `counts.json`: write_counts fields (samples in/out) plus `tokens` (the mixture's token
  total), `samples`, `steps`, `epochs`, `final_loss`, throughput and batch geometry;
- `log.jsonl`: one line per optimizer step: step, epoch, loss, lr, tokens, label_tokens,
  tokens_per_s, elapsed_s, cpu_s (this process's CPU time; on a shared machine the steadier
  figure), and mfu where the accelerator's peak FLOP/s is known;
- `checkpoints/`: DeepSpeed checkpoints every `checkpoint_every` steps, the newest
  `keep_checkpoints` kept, and `resume.json` naming the newest complete one with the run's
  fingerprint (settings, data, base model, world size); a rerun resumes from it when the
  fingerprint matches and starts afresh otherwise. Removed once the final model is saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from synthllm.errors import SynthllmError

log = logging.getLogger("synthllm.train")

IGNORE = -100
LOSS_ON = ("answer", "all")
PRECISIONS = ("fp32", "bf16")


class TrainError(SynthllmError):
    """Bad training input or settings; the message names the file or config key."""


@dataclass(frozen=True)
class TrainSettings:
    """The output-affecting keys of config key `training`, with the model's overrides (one
    field per key; config/schema.yaml holds their defaults and ranges). The execution keys
    (checkpoint cadence, peak_tflops, processes, threads) are not here: they change no
    output and no checkpoint's fingerprint."""

    zero_stage: int
    precision: str
    micro_batch_size: int
    global_batch_size: int
    gradient_checkpointing: bool
    max_seq_len: int
    packing: bool
    loss_on: str
    learning_rate: float
    warmup_ratio: float
    weight_decay: float
    adam_betas: tuple
    adam_eps: float
    max_grad_norm: float
    epochs: int
    seed: int

    @classmethod
    def from_config(cls, cfg: dict, key: str = "training") -> TrainSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise TrainError(f"config key {key}: unknown setting(s) {unknown}")
        missing = sorted(known - set(cfg))
        if missing:
            raise TrainError(f"config key {key}: missing setting(s) {missing}")
        values = dict(cfg)
        if "adam_betas" in values:
            values["adam_betas"] = tuple(values["adam_betas"])
        settings = cls(**values)
        settings.validate(key)
        return settings

    def validate(self, key: str = "training") -> None:
        checks = [
            (self.zero_stage in (0, 1, 2, 3), "zero_stage", "must be 0, 1, 2 or 3"),
            (self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}"),
            (self.loss_on in LOSS_ON, "loss_on", f"must be one of {LOSS_ON}"),
            (self.micro_batch_size >= 1, "micro_batch_size", "must be >= 1"),
            (self.global_batch_size >= 1, "global_batch_size", "must be >= 1"),
            (self.max_seq_len >= 8, "max_seq_len", "must be >= 8"),
            (self.learning_rate > 0, "learning_rate", "must be > 0"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (
                len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
                "adam_betas",
                "must be two numbers in [0, 1)",
            ),
            (self.epochs >= 1, "epochs", "must be >= 1"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise TrainError(f"config key {key}.{name}: {why} (got {getattr(self, name)!r})")

    def fingerprint(self, *extra: str) -> str:
        """What a checkpoint must match to be resumed: every setting plus the inputs."""
        blob = json.dumps([asdict(self), *extra], sort_keys=True, default=str)
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def gradient_accumulation(
    global_batch: int, micro_batch: int, world_size: int, key: str = "training"
) -> int:
    """Micro-batches per process per step so that micro x accumulation x world = global."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise TrainError(
            f"config key {key}.global_batch_size: {global_batch} is not a multiple of "
            f"micro_batch_size x processes = {micro_batch} x {world_size} = {per_step}"
        )
    return global_batch // per_step


# ---------------------------------------------------------------------------- samples


def encode_sample(
    tokenizer,
    question: str,
    answer: str,
    system_prompt: str,
    loss_on: str = "answer",
    max_seq_len: int | None = None,
) -> tuple[list[int], list[int], bool]:
    """Token ids and labels of one training conversation; True when it was truncated.

    With `loss_on="answer"` every token of the prompt (system and user turns and the
    assistant header) is masked, so the loss covers exactly what the model is asked to
    generate at evaluation time. The first token is always masked: nothing predicts it.
    """
    from synthllm.chat import prompt_messages, sft_messages

    ids = chat_ids(tokenizer, sft_messages(question, answer, system_prompt))
    labels = list(ids)
    if loss_on == "answer":
        prompt = chat_ids(
            tokenizer, prompt_messages(question, system_prompt), add_generation_prompt=True
        )
        if ids[: len(prompt)] != prompt:
            raise TrainError(
                "the chat template renders the prompt differently alone and "
                "inside the full conversation; loss_on: answer cannot mask it"
            )
        labels[: len(prompt)] = [IGNORE] * len(prompt)
    labels[0] = IGNORE
    truncated = max_seq_len is not None and len(ids) > max_seq_len
    if truncated:
        ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    return ids, labels, truncated


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation through the tokenizer's chat template (as the mixtures
    stage counts them)."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(out["input_ids"])


@dataclass
class Row:
    """One training sequence: a sample, or several packed back to back (`segments` holds
    each one's length so attention stays inside it)."""

    input_ids: list[int]
    labels: list[int]
    segments: list[int]


def pack(samples: list[tuple[list[int], list[int]]], max_len: int) -> list[Row]:
    """Greedy packing in the given order: each sample goes whole into the current row if it
    fits, else it starts a new row. Samples are never split."""
    rows: list[Row] = []
    for ids, labels in samples:
        if rows and len(rows[-1].input_ids) + len(ids) <= max_len:
            row = rows[-1]
            row.input_ids.extend(ids)
            row.labels.extend(labels)
            row.segments.append(len(ids))
        else:
            rows.append(Row(list(ids), list(labels), [len(ids)]))
    return rows


def collate(rows: list[Row], pad_id: int):
    """Right-padded tensors for one micro-batch.

    Packed rows get position ids restarting at each sample and a block-diagonal causal
    4-D attention mask, so a packed row computes exactly the losses of its samples alone.
    """
    import torch

    length = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(rows), length), dtype=torch.long)
    packed = any(len(r.segments) > 1 for r in rows)
    mask = (
        torch.zeros((len(rows), 1, length, length), dtype=torch.bool)
        if packed
        else torch.zeros((len(rows), length), dtype=torch.long)
    )
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        start = 0
        for seg in row.segments:
            position_ids[i, start : start + seg] = torch.arange(seg)
            if packed:
                mask[i, 0, start : start + seg, start : start + seg] = torch.tril(
                    torch.ones(seg, seg, dtype=torch.bool)
                )
            start += seg
        if not packed:
            mask[i, :n] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "attention_mask": mask,
    }


# ---------------------------------------------------------------------------- batches


def epoch_order(n_items: int, epoch: int, seed: int) -> np.ndarray:
    """The fixed order of one epoch."""
    return np.random.default_rng([seed, epoch]).permutation(n_items)


def steps_per_epoch(n_items: int, global_batch: int) -> int:
    return math.ceil(n_items / global_batch)


def step_items(n_items: int, global_batch: int, step: int, seed: int) -> tuple[int, np.ndarray]:
    """(epoch, item indices) of global step `step` (0-based); the last batch of an epoch
    may be short."""
    per_epoch = steps_per_epoch(n_items, global_batch)
    epoch, within = divmod(step, per_epoch)
    order = epoch_order(n_items, epoch, seed)
    return epoch, order[within * global_batch : (within + 1) * global_batch]


def rank_micro_batches(
    items: np.ndarray, rank: int, world: int, micro: int, accumulation: int
) -> list[list[int]]:
    """This rank's `accumulation` micro-batches of a step; slots past a short batch's end
    are empty lists (the caller runs them with zero weight)."""
    mine = [int(i) for i in items[rank::world]]
    return [mine[k * micro : (k + 1) * micro] for k in range(accumulation)]


def linear_schedule(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then linear decay to 0
    at `total` (the paper's linear schedule; Hugging Face's get_linear_schedule_with_warmup)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def deepspeed_config(s: TrainSettings, accumulation: int) -> dict:
    """The DeepSpeed config of a run: AdamW (torch's), ZeRO stage, precision, clipping."""
    return {
        "train_micro_batch_size_per_gpu": s.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": s.max_grad_norm,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": s.learning_rate,
                "betas": list(s.adam_betas),
                "eps": s.adam_eps,
                "weight_decay": s.weight_decay,
                "torch_adam": True,
            },
        },
        "bf16": {"enabled": s.precision == "bf16"},
        "zero_optimization": {
            "stage": s.zero_stage,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


# ---------------------------------------------------------------------------- run


def read_mixture(path: str | os.PathLike) -> tuple[list[str], list[str], int]:
    """Questions, answers and the token total of a mixture parquet."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = {"question", "answer", "tokens"} - set(table.column_names)
    if missing:
        raise TrainError(f"{path}: missing column(s) {sorted(missing)}")
    questions = table.column("question").to_pylist()
    answers = table.column("answer").to_pylist()
    for i, (q, a) in enumerate(zip(questions, answers)):
        if not q or not a:
            raise TrainError(f"{path}: record {i} has an empty question or answer")
    tokens = int(sum(t or 0 for t in table.column("tokens").to_pylist()))
    return questions, answers, tokens


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
    """Fine-tune `inputs["base"]` (an HF folder, e.g. `train/{model}/0/final`) on
    `inputs["mixture"]`, writing `final/`, `counts.json` and `log.jsonl` into the folder of
    `outputs["counts"]`. Run under torchrun (or alone, as a world of one). Settings: config
    key training with the model's overrides (`training`) and chat.system_prompt
    (`system_prompt`); execution: training.checkpoint_every, keep_checkpoints, peak_tflops
    and the job's threads, shared by the processes of a node (rules/train.smk). Returns the
    counts on rank 0."""
    import deepspeed
    import torch
    import torch.distributed as dist
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _die_with_launcher()
    mixture, base_model = inputs["mixture"], inputs["base"]
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
    out = Path(outputs["counts"]).parent
    ckpt_dir = out / "checkpoints"
    progress_log = ckpt_dir / "log.jsonl"
    torch.manual_seed(training.seed)

    questions, answers, mixture_tokens = read_mixture(mixture)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if not tokenizer.chat_template:
        raise TrainError(f"{base_model}: the tokenizer has no chat template")
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    encoded, truncated = [], 0
    for q, a in tqdm(
        zip(questions, answers), total=len(questions), desc="tokenize", disable=rank != 0
    ):
        ids, labels, cut = encode_sample(
            tokenizer, q, a, system_prompt, training.loss_on, training.max_seq_len
        )
        encoded.append((ids, labels))
        truncated += cut
    rows = (
        pack(encoded, training.max_seq_len)
        if training.packing
        else [Row(ids, labels, [len(ids)]) for ids, labels in encoded]
    )

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
        _file_digest(mixture),
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
        step_label_tokens = sum(sum(1 for x in rows[i].labels if x != IGNORE) for i in items)
        step_tokens = sum(len(rows[i].input_ids) for i in items)
        # Loss of a micro-batch = its token-loss sum / the step's label tokens, times the
        # accumulation and the world size that DeepSpeed divides by again: the gradient is
        # that of the mean over every label token of the step.
        scale = accumulation * world / max(1, step_label_tokens)
        lr = engine.get_lr()[0]
        local_sum = torch.zeros((), dtype=torch.float64)
        for slot in rank_micro_batches(items, rank, world, training.micro_batch_size, accumulation):
            weight = 1.0 if slot else 0.0
            batch = collate([rows[i] for i in (slot or [int(items[0])])], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            logits = engine(**batch).logits.float()
            token_loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE,
                reduction="sum",
            )
            engine.backward(token_loss * (scale * weight))
            engine.step()
            local_sum += token_loss.detach().double().cpu() * weight
        dist.all_reduce(local_sum)
        loss = float(local_sum) / max(1, step_label_tokens)
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
        if done % cadence["checkpoint_every"] == 0 and done < total_steps:
            _save_checkpoint(engine, ckpt_dir, done, fingerprint, cadence["keep_checkpoints"], rank)
    bar.close()
    wall = time.perf_counter() - t_run

    _save_final(engine, tokenizer, out, training, rank)
    if rank == 0:
        entries = _read_log(progress_log, total_steps)
        shutil.copyfile(progress_log, out / "log.jsonl")
        from synthllm.io import write_counts

        counts = write_counts(
            out / "counts.json",
            "train",
            len(questions),
            len(questions),
            {},
            samples=len(questions),
            tokens=mixture_tokens,
            rows=len(rows),
            truncated_samples=truncated,
            epochs=training.epochs,
            steps=total_steps,
            resumed_from_step=start,
            world_size=world,
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
    import socket

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


def _save_checkpoint(
    engine, ckpt_dir: Path, step: int, fingerprint: str, keep: int, rank: int
) -> None:
    """A DeepSpeed checkpoint of every rank; `resume.json` points at it only once all ranks
    have written theirs, so a kill at any moment leaves a loadable checkpoint named."""
    import torch.distributed as dist

    from synthllm.io import write_json

    tag = f"step-{step:08d}"
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


# ---------------------------------------------------------------------------- base models

ARCHITECTURE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "tie_word_embeddings",
)


@dataclass(frozen=True, kw_only=True)
class TrainModel:
    """One entry of config key `models.train`: a base model to fine-tune.

    `init: pretrained` fine-tunes the weights of `model` (an HF folder or hub id);
    `init: scratch` builds a fresh Llama from `model`'s config with the `architecture`
    overrides, initialised with `seed`, and keeps `model`'s tokenizer. `chat_template`
    (a Jinja file) replaces the tokenizer's template, for base models that ship none.
    """

    label: str
    model: str
    init: str
    architecture: dict | None = None  # init scratch only; the schema has no default
    seed: int
    chat_template: str | None

    @classmethod
    def from_config(cls, cfg: dict, key: str = "models.train[]") -> TrainModel:
        names = {f.name for f in fields(cls)}
        missing = sorted(n for n in names - set(cfg) if n != "architecture")
        if missing:
            raise TrainError(f"config key {key}: missing setting(s) {missing}")
        spec = cls(**{k: v for k, v in cfg.items() if k in names})
        if spec.init not in ("pretrained", "scratch"):
            raise TrainError(
                f"config key {key}.init: must be pretrained or scratch (got {spec.init!r})"
            )
        if spec.init == "pretrained" and spec.architecture:
            raise TrainError(f"config key {key}.architecture: only for init: scratch")
        unknown = sorted(set(spec.architecture or {}) - set(ARCHITECTURE_KEYS))
        if unknown:
            raise TrainError(f"config key {key}.architecture: unknown key(s) {unknown}")
        return spec


def scratch_config(base_config, architecture: dict, key: str = "models.train[]"):
    """`base_config` (a LlamaConfig) with the architecture overrides; head_dim follows the
    hidden size unless given."""
    config = base_config.__class__.from_dict(base_config.to_dict())
    for name, value in architecture.items():
        setattr(config, name, value)
    heads = config.num_attention_heads
    if "head_dim" not in architecture:
        if config.hidden_size % heads:
            raise TrainError(
                f"config key {key}.architecture: hidden_size {config.hidden_size} "
                f"is not a multiple of num_attention_heads {heads}"
            )
        config.head_dim = config.hidden_size // heads
    if heads % config.num_key_value_heads:
        raise TrainError(
            f"config key {key}.architecture: num_attention_heads {heads} is not a "
            f"multiple of num_key_value_heads {config.num_key_value_heads}"
        )
    return config


def materialise_base(
    spec: TrainModel,
    dest: str | os.PathLike,
    counts: str | os.PathLike,
    key: str = "models.train[]",
) -> dict:
    """Budget 0: write the untrained base model as an HF folder at `dest` (the starting
    point of every budget's training and what evaluation scores at D = 0)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from synthllm.io import write_counts

    tokenizer = AutoTokenizer.from_pretrained(spec.model)
    if spec.chat_template:
        tokenizer.chat_template = Path(spec.chat_template).read_text()
    if not tokenizer.chat_template:
        raise TrainError(
            f"config key {key}.chat_template: {spec.model} ships no chat "
            "template; name a Jinja file"
        )
    if spec.init == "scratch":
        config = scratch_config(
            AutoConfig.from_pretrained(spec.model), spec.architecture or {}, key
        )
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(spec.model, dtype="auto")
    dest = Path(dest)
    scratch = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    model.save_pretrained(scratch, safe_serialization=True)
    tokenizer.save_pretrained(scratch)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(scratch, dest)
    n_params = sum(p.numel() for p in model.parameters())
    return write_counts(
        counts,
        "base_model",
        0,
        0,
        {},
        samples=0,
        tokens=0,
        steps=0,
        epochs=0,
        parameters=n_params,
        init=spec.init,
        model=spec.model,
    )


def run_base_model(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Budget 0: the untrained base model of one entry of config key models.train (settings
    `model`: that entry without its launch layout and training overrides) as the HF folder
    `outputs["final"]`, with `outputs["counts"]` (rules/train.smk)."""
    key = f"models.train[label={settings['model']['label']}]"
    spec = TrainModel.from_config(settings["model"], key)
    counts = materialise_base(spec, outputs["final"], outputs["counts"], key)
    log.info("base model %s: %d parameters", spec.label, counts["parameters"])
    return counts
