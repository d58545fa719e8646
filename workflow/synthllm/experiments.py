"""What the paper's other experiments share (§6 Figs. 5, 6, Table 3): the fixed random
documents of Fig. 5 and Fig. 6, and the evaluation results of checkpoints trained outside the
scaling ladder, keyed by the set they were trained on.

`synthllm experiment-docs`: `documents` reference documents drawn at random (seeded) from the
filtered shards, among those whose topic and concept extraction succeeded, so that Level-1,
Level-2, Level-3 and the augmentation baselines all start from the same documents. Writes

    experiments/docs.parquet     the filtered shards' columns, rows of the drawn documents,
                                 in doc_id order
    experiments/extract.parquet  their extraction rows (the extract stage's schema)
    experiments/docs.counts.json in: documents with an extraction, out: drawn, dropped:
                                 not_drawn; plus the documents without a usable extraction
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from synthllm.evaluate import summary_rows
from synthllm.io import write_counts, write_parquet_table


class ExperimentError(ValueError):
    """Bad experiment input; the message names the file or config key."""


def draw_documents(
    doc_ids: list[str], k: int, seed: int, key: str = "experiments.documents"
) -> list[str]:
    """k of the documents, uniformly without replacement (seeded), in sorted order.

    The draw depends only on the sorted id list and the seed, not on shard order."""
    pool = sorted(set(doc_ids))
    if k > len(pool):
        raise ExperimentError(
            f"config key {key}: {k} documents asked, only {len(pool)} filtered "
            "documents have a usable concept extraction"
        )
    picked = np.random.default_rng(seed).permutation(len(pool))[:k]
    return sorted(pool[i] for i in picked)


def run_docs(
    doc_shards: list[str],
    extract_shards: list[str],
    documents: int,
    seed: int,
    docs_out: str,
    extract_out: str,
    counts_path: str,
) -> dict:
    extracted = pl.concat([pl.read_parquet(p) for p in extract_shards], how="vertical_relaxed")
    usable = extracted.filter(pl.col("status") == "ok")
    chosen = draw_documents(usable["doc_id"].to_list(), documents, seed)
    docs = pl.concat([pl.read_parquet(p) for p in doc_shards], how="vertical_relaxed")
    docs = docs.filter(pl.col("doc_id").is_in(chosen)).unique("doc_id", keep="first").sort("doc_id")
    if len(docs) != len(chosen):
        missing = sorted(set(chosen) - set(docs["doc_id"].to_list()))
        raise ExperimentError(
            f"documents {missing[:5]} have an extraction but are in none of {doc_shards}"
        )
    write_parquet_table(docs.to_arrow(), docs_out)
    write_parquet_table(
        usable.filter(pl.col("doc_id").is_in(chosen)).sort("doc_id").to_arrow(), extract_out
    )
    n_usable = usable["doc_id"].n_unique()
    return write_counts(
        counts_path,
        "experiment_docs",
        n_usable,
        len(chosen),
        {"not_drawn": n_usable - len(chosen)},
        seed=seed,
        without_usable_extraction=len(extracted) - len(usable),
    )


def per_document_target(count_per_doc: int, overgenerate: float) -> int:
    """Questions to generate per document so that `count_per_doc` survive the pipeline's
    answer filtering, dedup and decontamination (overgenerate >= 1)."""
    return math.ceil(count_per_doc * overgenerate)


def labelled_rows(runs: list[tuple[str, str]]) -> list[dict]:
    """Long-format evaluation rows (synthllm.evaluate.summary_rows) of each (label, eval
    folder), with the label as the `set` column."""
    rows = []
    for label, folder in runs:
        if not Path(folder, "settings.json").exists():
            raise ExperimentError(f"{folder}: no settings.json (run synthllm evaluate on it first)")
        rows.extend({**r, "set": label} for r in summary_rows(folder))
    return rows


def parse_runs(items: list[str]) -> list[tuple[str, str]]:
    """`label=folder` command-line items as (label, folder) pairs."""
    runs = []
    for item in items:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise ExperimentError(f"--runs item {item!r}: expected label=eval_folder")
        runs.append((label, folder))
    return runs
