"""Question and answer lengths per level (paper §5.1), read off the clean SFT pool.

The paper reports the median question and answer length of each level (questions 32 / 66 /
80 tokens, answers 358 / 497 / 545 for Levels 1 / 2 / 3); this stage gives, per level, the
sample count and the mean, quantiles and median of both, with the paper's medians beside.
Lengths are the texts' own tokens under the training tokenizer (config key
mixtures.tokenizer), no chat template and no special tokens. The counts are the whole pool's;
the lengths are measured on a seeded sample of at most mixtures.length_sample records per
level (a quantile of 50,000 draws is within a fraction of a token of the pool's).

Outputs:
    mixtures/length_stats.csv and .md  one row per level and one for all levels:
        level (string: 1 | 2 | 3 | all), samples (int), measured (int: records tokenised),
        question_tokens_{mean,p10,p25,median,p75,p90} and answer_tokens_{...} (float),
        paper_question_median, paper_answer_median (float or null)
    mixtures/length_stats.counts.json  in = out = the pool's records
"""

from __future__ import annotations

import numpy as np
import polars as pl

from synthllm.core.files import atomic_path, write_counts
from synthllm.core.models import hub_source

# §5.1 "the median lengths of questions and answers" (tokens; tokenizer not stated)
PAPER_MEDIANS = {"1": (32, 358), "2": (66, 497), "3": (80, 545)}
QUANTILES = {"p10": 0.10, "p25": 0.25, "median": 0.50, "p75": 0.75, "p90": 0.90}
BATCH = 1024


def sample_per_level(pool: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    """At most `limit` records of each level, a seeded draw, in pool order."""
    parts = []
    for level in sorted(pool["level"].unique().to_list()):
        rows = np.flatnonzero((pool["level"] == level).to_numpy())
        if len(rows) > limit:
            rows = np.sort(np.random.default_rng([seed, level]).choice(rows, limit, replace=False))
        parts.append(pool[rows])
    return pl.concat(parts) if parts else pool


def token_lengths(texts: list[str], tokenizer) -> np.ndarray:
    lengths = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(texts), BATCH):
        ids = tokenizer(texts[start : start + BATCH], add_special_tokens=False)["input_ids"]
        lengths[start : start + len(ids)] = [len(x) for x in ids]
    return lengths


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The smallest value whose weighted share of the values at or below it reaches q (numpy's
    `inverted_cdf`, with weights)."""
    order = np.argsort(values, kind="stable")
    shares = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][min(np.searchsorted(shares, q), len(values) - 1)])


def summary(lengths: np.ndarray, weights: np.ndarray, prefix: str) -> dict[str, float | None]:
    if len(lengths) == 0:
        return {f"{prefix}_{k}": None for k in ("mean", *QUANTILES)}
    row = {f"{prefix}_mean": round(float(np.average(lengths, weights=weights)), 1)}
    for name, q in QUANTILES.items():
        row[f"{prefix}_{name}"] = weighted_quantile(lengths, weights, q)
    return row


def length_table(
    levels: np.ndarray, counts: dict[str, int], questions: np.ndarray, answers: np.ndarray
) -> pl.DataFrame:
    """One row per level and one for all levels. Each measured record stands for its level's
    pool count over its level's sample size, so that `all` describes the pool, not the
    sample, when a level was subsampled."""
    measured = {level: int((levels == level).sum()) for level in counts}
    weights = np.array([counts[v] / measured[v] for v in levels], dtype=float)
    rows = []
    for level in [*sorted(counts), "all"]:
        picked = np.ones(len(levels), dtype=bool) if level == "all" else levels == level
        w = weights[picked]
        paper = PAPER_MEDIANS.get(level, (None, None))
        rows.append(
            {
                "level": level,
                "samples": sum(counts.values()) if level == "all" else counts[level],
                "measured": int(picked.sum()),
                **summary(questions[picked], w, "question_tokens"),
                **summary(answers[picked], w, "answer_tokens"),
                "paper_question_median": paper[0],
                "paper_answer_median": paper[1],
            }
        )
    return pl.DataFrame(rows)


def markdown(table: pl.DataFrame) -> str:
    head = (
        "| level | samples | question tokens: mean / median (p10-p90) | paper median "
        "| answer tokens: mean / median (p10-p90) | paper median |\n"
        "|---|---:|---|---:|---|---:|\n"
    )

    def cell(r, prefix):
        if r[f"{prefix}_mean"] is None:
            return "-"
        return (
            f"{r[f'{prefix}_mean']:.1f} / {r[f'{prefix}_median']:.0f} "
            f"({r[f'{prefix}_p10']:.0f}-{r[f'{prefix}_p90']:.0f})"
        )

    lines = [
        f"| {r['level']} | {r['samples']:,} | {cell(r, 'question_tokens')} "
        f"| {r['paper_question_median'] or '-'} | {cell(r, 'answer_tokens')} "
        f"| {r['paper_answer_median'] or '-'} |"
        for r in table.to_dicts()
    ]
    return head + "\n".join(lines) + "\n"


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    from transformers import AutoTokenizer

    pool = pl.read_parquet(inputs["pool"], columns=["level", "question", "answer"])
    counts = {str(k): v for k, v in pool["level"].value_counts().iter_rows()}
    sample = sample_per_level(pool, settings["length_sample"], settings["seed"])
    source, pinned = hub_source(settings["tokenizer"], settings["tokenizer_revision"])
    tokenizer = AutoTokenizer.from_pretrained(source, **pinned)
    table = length_table(
        sample["level"].cast(pl.String).to_numpy(),
        counts,
        token_lengths(sample["question"].to_list(), tokenizer),
        token_lengths(sample["answer"].to_list(), tokenizer),
    )
    with atomic_path(outputs["csv"]) as tmp:
        table.write_csv(tmp)
    with atomic_path(outputs["md"]) as tmp:
        tmp.write_text(markdown(table))
    return write_counts(
        outputs["counts"], "length_stats", len(pool), len(pool), {}, measured=len(sample)
    )
