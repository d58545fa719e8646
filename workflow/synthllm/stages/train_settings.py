"""The settings of SFT (paper §3.2, §5.1) and what follows from them: the gradient
accumulation, the learning-rate schedule and the DeepSpeed config.

The paper fine-tunes Llama-3.2-1B/3B and Llama-3.1-8B on nested subsets of the L1+L2+L3
mixture with AdamW, learning rate 1e-5, a linear schedule, global batch 512 and 3 epochs.
Everything it leaves open (warm-up, weight decay, sequence length, packing, loss masking,
precision) is a config key under `train` (see config/schema.yaml).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from synthllm.errors import SynthllmError

LOSS_ON = ("answer", "all")
PRECISIONS = ("fp32", "bf16")


class TrainError(SynthllmError):
    """Bad training input or settings; the message names the file or config key."""


@dataclass(frozen=True)
class TrainSettings:
    """The output-affecting keys of config key `train`, with the model's overrides (one
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
    def from_config(cls, cfg: dict, key: str = "train") -> TrainSettings:
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

    def validate(self, key: str = "train") -> None:
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
    global_batch: int, micro_batch: int, world_size: int, key: str = "train"
) -> int:
    """Micro-batches per process per step so that micro x accumulation x world = global."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise TrainError(
            f"config key {key}.global_batch_size: {global_batch} is not a multiple of "
            f"micro_batch_size x processes = {micro_batch} x {world_size} = {per_step}"
        )
    return global_batch // per_step


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
