"""What the paper's other experiments share (§6 Figs. 5, 6, Table 3): the fixed random
documents of Fig. 5 and Fig. 6, and the evaluation results of checkpoints trained outside the
scaling ladder, keyed by the set they were trained on.

`synthllm experiment_docs` (run_docs): `documents` reference documents drawn at random
(seeded) from the filtered shards, among those whose topic and concept extraction succeeded,
so that Level-1, Level-2, Level-3 and the augmentation baselines all start from the same
documents. Writes

    experiments/docs.parquet     the filtered shards' columns, rows of the drawn documents,
                                 in doc_id order
    experiments/extract.parquet  their extraction rows (the extract stage's schema)
    experiments/docs.counts.json in: documents with an extraction, out: drawn, dropped:
                                 not_drawn; plus the documents without a usable extraction
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import polars as pl

from synthllm.core.files import write_counts, write_parquet_table
from synthllm.errors import SynthllmError
from synthllm.stages.eval_summary import summary_rows

log = logging.getLogger(__name__)


class ExperimentError(SynthllmError):
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


def run_docs(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The experiment documents: inputs docs and extracted (every filtered and every extract
    shard), outputs docs, extracted, counts. Settings: experiments.documents as documents,
    experiments.seed as seed (rules/experiments/shared.smk)."""
    doc_shards, extract_shards = inputs["docs"], inputs["extracted"]
    seed = settings["seed"]
    extracted = pl.concat([pl.read_parquet(p) for p in extract_shards], how="vertical_relaxed")
    usable = extracted.filter(pl.col("status") == "ok")
    chosen = draw_documents(usable["doc_id"].to_list(), settings["documents"], seed)
    docs = pl.concat([pl.read_parquet(p) for p in doc_shards], how="vertical_relaxed")
    docs = docs.filter(pl.col("doc_id").is_in(chosen)).unique("doc_id", keep="first").sort("doc_id")
    if len(docs) != len(chosen):
        missing = sorted(set(chosen) - set(docs["doc_id"].to_list()))
        raise ExperimentError(
            f"documents {missing[:5]} have an extraction but are in none of {doc_shards}"
        )
    write_parquet_table(docs.to_arrow(), outputs["docs"])
    write_parquet_table(
        usable.filter(pl.col("doc_id").is_in(chosen)).sort("doc_id").to_arrow(),
        outputs["extracted"],
    )
    n_usable = usable["doc_id"].n_unique()
    counts = write_counts(
        outputs["counts"],
        "experiment_docs",
        n_usable,
        len(chosen),
        {"not_drawn": n_usable - len(chosen)},
        seed=seed,
        without_usable_extraction=len(extracted) - len(usable),
    )
    log.info("experiment documents: %d of %d", counts["out"], counts["in"])
    return counts


def per_document_target(count_per_doc: int, overgenerate: float) -> int:
    """Questions to generate per document so that `count_per_doc` survive the pipeline's
    answer filtering, dedup and decontamination (overgenerate >= 1)."""
    return math.ceil(count_per_doc * overgenerate)


def labelled_rows(runs: list[tuple[str, str]]) -> list[dict]:
    """Long-format evaluation rows (synthllm.stages.eval_summary.summary_rows) of each (label, eval
    folder), with the label as the `set` column."""
    rows = []
    for label, folder in runs:
        if not Path(folder, "settings.json").exists():
            raise ExperimentError(f"{folder}: no settings.json (run synthllm evaluate on it first)")
        rows.extend({**r, "set": label} for r in summary_rows(folder))
    return rows


# the files of one eval folder (synthllm.stages.eval_summary.summary_rows), by input name
EVAL_INPUTS = {
    "predictions": "predictions.parquet",
    "eval_settings": "settings.json",
    "nll": "nll.parquet",
}


def eval_runs(labels: list[str], inputs: dict) -> list[tuple[str, str]]:
    """(label, eval folder) of each run: the i-th label names the folder of the i-th file
    of every input of EVAL_INPUTS (one list each, one file per run)."""
    files = {name: list(inputs[name]) for name in EVAL_INPUTS}
    for name, paths in files.items():
        if len(paths) != len(labels):
            raise ExperimentError(
                f"input {name}: {len(paths)} files for {len(labels)} runs {labels}"
            )
    runs = []
    for i, label in enumerate(labels):
        folder = Path(files["eval_settings"][i]).parent
        for name, file in EVAL_INPUTS.items():
            if Path(files[name][i]) != folder / file:
                raise ExperimentError(
                    f"input {name}: {files[name][i]} is not {folder / file} (run {label!r}: "
                    "an eval folder's files are read together)"
                )
        runs.append((label, str(folder)))
    return runs
