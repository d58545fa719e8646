"""Level-2 questions (paper Fig. 9): one document plus the concepts extracted from it; the
model picks 2-3 key concepts per question. Output schema: synthllm.questions.SCHEMA."""

from __future__ import annotations

import pyarrow.parquet as pq

from synthllm import questions
from synthllm.generation import render
from synthllm.llm import BackendSpec, Request, Sampling
from synthllm.parsers import level2_schema, parse_level2

TEMPLATE = "level2"


def concept_list(topics: list[dict]) -> str:
    """The concept block of the prompt: one line per topic with its key concepts."""
    return "\n".join(
        f"{i}. {t['name']}: " + "; ".join(t["key_concepts"]) for i, t in enumerate(topics, start=1)
    )


def level2_request(text: str, topics: list[dict], structured: bool) -> Request:
    prompt = render(TEMPLATE, text=text, concepts=concept_list(topics), structured=structured)
    return Request(
        [{"role": "user", "content": prompt}], {"json": level2_schema()} if structured else None
    )


def run(
    docs_shard: str,
    extract_shard: str,
    output: str,
    counts_path: str,
    spec: BackendSpec,
    sampling: Sampling,
    structured: bool,
    max_doc_chars: int,
    calls_per_doc: int,
    questions_per_doc: int,
    chunk_size: int,
) -> dict:
    texts = dict(zip(*pq.read_table(docs_shard, columns=["doc_id", "text"]).to_pydict().values()))
    extracted = pq.read_table(extract_shard, columns=["doc_id", "topics", "status"]).to_pylist()
    usable = [e for e in extracted if e["status"] == "ok"]
    items = [
        {"unit": e["doc_id"], "doc_ids": [e["doc_id"]], "call": call, "topics": e["topics"]}
        for e in usable
        for call in range(calls_per_doc)
    ]
    requests = [
        level2_request(texts[it["unit"]][:max_doc_chars], it["topics"], structured) for it in items
    ]
    return questions.generate(
        2,
        TEMPLATE,
        items,
        requests,
        parse_level2,
        spec,
        sampling,
        output,
        counts_path,
        questions_per_doc,
        chunk_size,
        structured=structured,
        documents_without_concepts=len(extracted) - len(usable),
    )
