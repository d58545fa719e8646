"""Level-3 questions (paper Fig. 10): a concept set sampled on the concept graph plus its
reference documents (top 2 by Jaccard); each question combines 2-3 key concepts of different
topics. Output schema: synthllm.questions.SCHEMA (doc_ids = the reference documents; the
question id's unit is the concept set's set_id).

The sets of all subsets are dealt to the question shards round-robin (set i goes to shard
i mod n_shards, in subset then walk order), so Level-3 generation runs in as many resumable
jobs as Level-1 and Level-2.
"""

from __future__ import annotations

import polars as pl

from synthllm import questions
from synthllm.concepts import ConceptGraphError
from synthllm.generation import render
from synthllm.llm import BackendSpec, Request, Sampling
from synthllm.parsers import level2_schema, parse_level2

TEMPLATE = "level3"
MAX_QUESTIONS_PER_CALL = 3


def shard_sets(
    walk_files: list[str], shard: int, n_shards: int, max_sets: int | None
) -> pl.DataFrame:
    sets = pl.concat([pl.read_parquet(p) for p in walk_files]).with_row_index("row")
    mine = sets.filter(pl.col("row") % n_shards == shard).drop("row")
    return mine.head(max_sets) if max_sets is not None else mine


def reference_texts(doc_shards: list[str], doc_ids: set[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in doc_shards:
        frame = pl.read_parquet(path, columns=["doc_id", "text"]).filter(
            pl.col("doc_id").is_in(list(doc_ids))
        )
        texts.update(zip(frame.get_column("doc_id").to_list(), frame.get_column("text").to_list()))
    missing = doc_ids - texts.keys()
    if missing:
        raise ConceptGraphError(
            f"reference documents {sorted(missing)[:5]} (of {len(missing)}) are not in "
            f"the document shards {doc_shards}: the walks and documents disagree"
        )
    return texts


def level3_request(
    topics: list[str], key_concepts: list[str], references: list[str], structured: bool
) -> Request:
    prompt = render(
        TEMPLATE,
        topics="; ".join(topics),
        key_concepts="; ".join(key_concepts),
        references=references,
        structured=structured,
    )
    return Request(
        [{"role": "user", "content": prompt}],
        {"json": level2_schema(MAX_QUESTIONS_PER_CALL)} if structured else None,
    )


def run(
    walk_files: list[str],
    doc_shards: list[str],
    shard: int,
    n_shards: int,
    output: str,
    counts_path: str,
    spec: BackendSpec,
    sampling: Sampling,
    structured: bool,
    max_doc_chars: int,
    calls_per_set: int,
    questions_per_set: int,
    chunk_size: int,
    max_sets: int | None = None,
) -> dict:
    sets = shard_sets(walk_files, shard, n_shards, max_sets).to_dicts()
    texts = reference_texts(doc_shards, {d for s in sets for d in s["ref_doc_ids"]})
    items = [
        {"unit": s["set_id"], "doc_ids": s["ref_doc_ids"], "call": call, "set": s}
        for s in sets
        for call in range(calls_per_set)
    ]
    requests = [
        level3_request(
            it["set"]["topics"],
            it["set"]["key_concepts"],
            [texts[d][:max_doc_chars] for d in it["doc_ids"]],
            structured,
        )
        for it in items
    ]
    return questions.generate(
        3,
        TEMPLATE,
        items,
        requests,
        parse_level2,
        spec,
        sampling,
        output,
        counts_path,
        questions_per_set,
        chunk_size,
        structured=structured,
        concept_sets=len(sets),
    )
