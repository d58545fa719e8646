"""The Level-3 concept sets of each question shard, with their reference documents' texts
(paper §1.2 Level-3, step 3): the one job that reads the walks of every subset and the
reference documents of every shard, so that each Level-3 generation job reads one file.

The sets of all subsets are dealt to the question shards round-robin (set i goes to shard
i mod n_shards, in subset then walk order), at most generation.level3.max_sets_per_shard
per shard (the first ones), so Level-3 generation runs in as many resumable jobs as Level-1
and Level-2.

Output schema (`level3/sets/shard-{i}-of-{n}.parquet`): the walks' columns
(synthllm.stages.walks) plus
    ref_texts     list<string>  the text of each of ref_doc_ids, in that order
"""

from __future__ import annotations

import polars as pl

from synthllm.core.concepts import ConceptGraphError
from synthllm.core.files import write_counts, write_parquet_table


def deal_sets(sets: pl.DataFrame, n_shards: int, max_sets: int | None) -> list[pl.DataFrame]:
    """The sets of each shard: set i to shard i mod n_shards, the first max_sets of each."""
    dealt = sets.with_row_index("row").with_columns(shard=pl.col("row") % n_shards)
    if max_sets is not None:  # rows keep their order within a shard
        dealt = dealt.filter(pl.int_range(pl.len()).over("shard") < max_sets)
    parts = dealt.drop("row").partition_by("shard", as_dict=True, include_key=False)
    empty = sets.clear()
    return [parts.get((shard,), empty) for shard in range(n_shards)]


def reference_texts(doc_shards: list[str], doc_ids: set[str]) -> dict[str, str]:
    """The text of each of doc_ids, read from the document shards; every one must be there."""
    texts: dict[str, str] = {}
    wanted = pl.Series(sorted(doc_ids), dtype=pl.String)
    for path in doc_shards:
        frame = pl.read_parquet(path, columns=["doc_id", "text"]).filter(
            pl.col("doc_id").is_in(wanted)
        )
        texts.update(zip(frame.get_column("doc_id").to_list(), frame.get_column("text").to_list()))
    missing = doc_ids - texts.keys()
    if missing:
        raise ConceptGraphError(
            f"reference documents {sorted(missing)[:5]} (of {len(missing)}) are not in "
            f"the document shards {doc_shards[:3]}...: the walks and documents disagree"
        )
    return texts


def with_texts(sets: pl.DataFrame, texts: dict[str, str]) -> pl.DataFrame:
    return sets.with_columns(
        pl.Series(
            "ref_texts",
            [[texts[d] for d in ids] for ids in sets.get_column("ref_doc_ids").to_list()],
            dtype=pl.List(pl.String),
        )
    )


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Inputs walks (every subset), docs (every shard's reference documents); outputs sets
    (one file per question shard, in shard order), counts. Settings: max_sets_per_shard
    (generation.level3) and n_shards."""
    n_shards = settings["n_shards"]
    if len(outputs["sets"]) != n_shards:
        raise ConceptGraphError(
            f"level3_sets: {len(outputs['sets'])} output files for {n_shards} shards"
        )
    sets = pl.concat([pl.read_parquet(p) for p in inputs["walks"]])
    shards = deal_sets(sets, n_shards, settings["max_sets_per_shard"])
    needed = {
        d for shard in shards for ids in shard.get_column("ref_doc_ids").to_list() for d in ids
    }
    texts = reference_texts(inputs["docs"], needed)
    for shard, path in zip(shards, outputs["sets"]):
        write_parquet_table(with_texts(shard, texts).to_arrow(), path)
    dealt = sum(len(shard) for shard in shards)
    return write_counts(
        outputs["counts"],
        "level3_sets",
        len(sets),
        dealt,
        {"over_max_sets_per_shard": len(sets) - dealt},
        shards=n_shards,
        reference_documents=len(texts),
    )
