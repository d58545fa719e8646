"""The printed plan: the table of rows and the footnotes naming every assumption."""

from __future__ import annotations

from synthllm.setup.plan.estimate import SHARD_GROUPED, Row, Sizes
from synthllm.setup.plan.rates import MFU, PEAK_TFLOPS


def _number(value: float) -> str:
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def _bytes(value: float) -> str:
    if not value:
        return "-"
    for limit, suffix in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if value >= limit:
            return f"{value / limit:.1f} {suffix}"
    return f"{value:.0f} B"


def _hours(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f}" if value >= 10 or value == 0 else f"{value:.1f}"


def table(rows: list[Row]) -> str:
    """The fixed-width plan table, with a total row."""
    header = (
        "stage",
        "jobs",
        "GPUs/job",
        "GPU-h limit",
        "tokens",
        "GPU-h est",
        "loads",
        "disk",
    )
    lines = [header]
    for r in rows:
        gpu_cells = "/".join(str(g) for g in r.gpus) or "0"
        tokens = f"{_number(r.tokens)} {r.kind[:3]}" if r.tokens and r.kind else "-"
        est = _hours(r.est_gpu_h) if any(r.gpus) or r.est_gpu_h is None else "-"
        if r.over_limit:
            est += f" ({r.over_limit}>lim)"
        lines.append(
            (
                r.rule,
                str(r.jobs),
                gpu_cells,
                _hours(r.limit_gpu_h) if any(r.gpus) else "-",
                tokens,
                est,
                str(round(r.loads)) if r.loads else "-",
                _bytes(r.disk),
            )
        )
    estimates = [r.est_gpu_h for r in rows]
    lines.append(
        (
            "total",
            str(sum(r.jobs for r in rows)),
            "",
            _hours(sum(r.limit_gpu_h for r in rows)),
            "",
            _hours(sum(e for e in estimates if e is not None))
            + ("+?" if None in estimates else ""),
            str(round(sum(r.loads for r in rows))),
            _bytes(sum(r.disk for r in rows)),
        )
    )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        if n == len(lines) - 1:
            out.append("  ".join("-" * w for w in widths))
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
            )
        )
    return "\n".join(out)


def footnotes(rows: list[Row], s: Sizes, config: dict) -> list[str]:
    """The assumptions behind the estimates, one line each."""
    notes = [
        "GPU-h limit: sum over jobs of GPUs x the runtime asked at the first attempt "
        "(config resources); a retry of a job that cannot resume asks for up to twice as long",
        "tokens: gen(erated) = records x calls x sampling max_tokens, an upper bound (the "
        "paper's median answers are 358-545 tokens); tra(in) = samples x epochs x "
        f"train.max_seq_len ({config['train']['max_seq_len']}), an upper bound (the "
        "paper's SFT samples average ~608 tokens); for(ward) = records x the max_tokens read",
        "GPU-h est: tokens / tokens/s per GPU (synthllm/setup/plan.py: rough public vLLM figures, "
        f"and 6N/2N FLOPs per token at {MFU:.0%} of {PEAK_TFLOPS} TFLOPS for training and "
        "forward passes) plus engine loads; assumptions, not measurements",
        *s.notes,
        "disk: records x bytes per record (synthllm/setup/plan.py RECORD_BYTES); checkpoints "
        "2 bytes/parameter (bf16)",
    ]
    scratch = max((r.scratch for r in rows), default=0)
    if scratch:
        notes.append(
            f"train also holds up to {_bytes(scratch)} per job of DeepSpeed checkpoints "
            "(14 bytes/parameter) while it runs, removed at the end"
        )
    generation = config["generation"]
    if generation["shards_per_job"] > 1 and generation["engine_keepalive_s"]:
        notes.append(
            f"loads: the shard jobs of {', '.join(sorted(SHARD_GROUPED))} run "
            f"{generation['shards_per_job']} to an allocation on one engine "
            "(generation.shards_per_job)"
        )
    if any(r.kind == "api" for r in rows):
        notes.append("rate: an API model (models.rater backend openai): tokens, no GPU time")
    over = [r.rule for r in rows if r.over_limit]
    if over:
        notes.append(
            f"(n>lim): n jobs of {', '.join(over)} would outrun their runtime limit at the "
            "upper-bound estimate"
        )
    unmodelled = [r.rule for r in rows if not r.modelled]
    if unmodelled:
        notes.append(f"?: no size model for {', '.join(unmodelled)} (jobs and limits only)")
    return notes
