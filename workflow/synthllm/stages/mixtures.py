"""SFT records and nested mixtures at exact token counts (paper §1.4, §3).

The paper trains on "progressively larger subsets" of the mixed L1+L2+L3 set (100K ... 7.4M
samples) without saying how they were drawn. Ours are nested by construction: one seeded
permutation of the clean pool per level, and a subset of k samples takes the first k_l of
each level's permutation, with k_l from the mixture's level proportions (largest remainder);
so every smaller subset lies inside every larger one of the same mixture. A mixture without
proportions draws from one permutation of the whole pool (the natural level mix). Level-only
sets (the Level ablation) are mixtures with one level.

Token counts are exact: every sample is the conversation synthllm.core.chat.sft_messages(question,
answer, chat.system_prompt) through the training tokenizer's chat template, counted once for
the pool (mixtures/pool.parquet) and summed per subset.

SFT record schema (mixtures/pool.parquet and mixtures/{mixture}/{budget}.parquet):
    question_id (string), level (int8), question (string), answer (string),
    doc_ids (list<string>: the reference documents of the question), tokens (int32)
The chat-formatted view a trainer reads is synthllm.core.chat.sft_messages of each record.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
from tqdm import tqdm

from synthllm.core.chat import sft_messages
from synthllm.core.files import write_counts, write_parquet_table
from synthllm.errors import SynthllmError

SFT_COLUMNS = ["question_id", "level", "question", "answer", "doc_ids"]


class MixtureError(SynthllmError):
    pass


def count_tokens(
    records: pl.DataFrame,
    tokenizer_path: str,
    system_prompt: str,
    batch_size: int = 512,
    chat_template: str | None = None,
    revision: str | None = None,
) -> np.ndarray:
    """Exact chat-formatted token count of each record under the training tokenizer."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from synthllm.core.models import hub_source

    source, pinned = hub_source(tokenizer_path, revision)
    tokenizer = AutoTokenizer.from_pretrained(source, **pinned)
    if chat_template:
        if not Path(chat_template).is_file():
            raise MixtureError(f"config key mixtures.chat_template: {chat_template} does not exist")
        tokenizer.chat_template = Path(chat_template).read_text()
    if tokenizer.chat_template is None:
        raise MixtureError(
            f"config key mixtures.tokenizer: {tokenizer_path} has no chat template "
            "(set mixtures.chat_template)"
        )
    counts = np.empty(len(records), dtype=np.int32)
    questions, answers = records["question"].to_list(), records["answer"].to_list()
    for start in tqdm(range(0, len(records), batch_size), desc="tokens", unit="batch"):
        chats = [
            sft_messages(q, a, system_prompt)
            for q, a in zip(
                questions[start : start + batch_size], answers[start : start + batch_size]
            )
        ]
        ids = tokenizer.apply_chat_template(chats, tokenize=True, return_dict=False)
        counts[start : start + len(chats)] = [len(x) for x in ids]
    return counts


# the config key that sizes the scaling mixtures; the experiments' mixtures name their own
BUDGETS_KEY = "mixtures.sample_counts"


def level_quota(k: int, levels: list[int], proportions: list[float]) -> dict[int, int]:
    """k split over levels by proportion, largest remainder, ties to the earlier level."""
    weights = np.asarray(proportions, dtype=float)
    exact = k * weights / weights.sum()
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: k - quota.sum()]:
        quota[i] += 1
    return dict(zip(levels, quota.tolist()))


def nested_subset(
    pool: pl.DataFrame,
    k: int,
    seed: int,
    levels: list[int] | None = None,
    proportions: list[float] | None = None,
    key: str = BUDGETS_KEY,
) -> pl.DataFrame:
    """The first k samples of the mixture's seeded order (see the module docstring)."""
    if levels is None:
        if k > len(pool):
            raise MixtureError(
                f"config key {key}: {k} samples asked, the clean pool holds {len(pool)}"
            )
        order = np.random.default_rng(seed).permutation(len(pool))[:k]
        return pool[np.sort(order)]
    proportions = proportions or [1.0] * len(levels)
    if len(proportions) != len(levels) or min(proportions) < 0 or sum(proportions) <= 0:
        raise MixtureError(
            f"config key mixtures.sets: proportions {proportions} do not fit levels {levels}"
        )
    picked = []
    for level, quota in level_quota(k, levels, proportions).items():
        rows = np.flatnonzero((pool["level"] == level).to_numpy())
        if quota > len(rows):
            raise MixtureError(
                f"config key {key}: {quota} level-{level} samples asked for {k}, "
                f"the clean pool holds {len(rows)}"
            )
        picked.append(rows[np.random.default_rng([seed, level]).permutation(len(rows))[:quota]])
    return pool[np.sort(np.concatenate(picked))]


def run_pool(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The SFT pool (outputs pool, counts) of the clean samples (inputs questions, the
    decontam stage's) with exact token counts. Settings: mixtures.tokenizer as tokenizer,
    mixtures.tokenizer_revision as tokenizer_revision, mixtures.chat_template as chat_template
    (null: the tokenizer's own), chat.system_prompt as system_prompt (rules/09_mixtures.smk)."""
    tokenizer, chat_template = settings["tokenizer"], settings["chat_template"]
    started = time.monotonic()
    clean = pl.read_parquet(inputs["questions"], columns=SFT_COLUMNS)
    tokens = count_tokens(
        clean,
        tokenizer,
        settings["system_prompt"],
        chat_template=chat_template,
        revision=settings["tokenizer_revision"],
    )
    pool = clean.with_columns(pl.Series("tokens", tokens))
    write_parquet_table(pool.to_arrow(), outputs["pool"])
    return write_counts(
        outputs["counts"],
        "sft_pool",
        len(clean),
        len(pool),
        {},
        tokens=int(pool["tokens"].sum()),
        tokenizer=tokenizer,
        chat_template=chat_template,
        seconds=round(time.monotonic() - started, 2),
    )


def run_subset(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """One nested subset (outputs samples, counts) of the SFT pool (inputs pool). Settings:
    mixtures.seed as seed; the job's mixture `name`, its size `samples`, the set's `levels`
    and `proportions` (config mixtures.sets; null: the whole pool, equal shares) and
    `size_key`, the config key that set the size (rules/09_mixtures.smk)."""
    s = settings
    pool = pl.read_parquet(inputs["pool"])
    subset = nested_subset(
        pool, s["samples"], s["seed"], s["levels"], s["proportions"], key=s["size_key"]
    )
    write_parquet_table(subset.to_arrow(), outputs["samples"])
    per_level = {f"level{lvl}": int((subset["level"] == lvl).sum()) for lvl in (1, 2, 3)}
    return write_counts(
        outputs["counts"],
        "mixture",
        len(pool),
        len(subset),
        {"not_drawn": len(pool) - len(subset)},
        mixture=s["name"],
        samples=len(subset),
        tokens=int(subset["tokens"].sum()),
        per_level=per_level,
        seed=s["seed"],
    )
