"""Level-1 questions (paper Fig. 8): questions extracted from, or inspired by, one document.
Output schema: synthllm.questions.SCHEMA."""

from __future__ import annotations

import pyarrow.parquet as pq

from synthllm import questions
from synthllm.generation import render
from synthllm.llm import BackendSpec, Request, Sampling
from synthllm.parsers import SCHOOL_LEVELS, level1_schema, parse_level1

TEMPLATE = "level1"


def level1_request(text: str, structured: bool) -> Request:
    prompt = render(TEMPLATE, text=text, structured=structured, levels=SCHOOL_LEVELS)
    return Request(
        [{"role": "user", "content": prompt}], {"json": level1_schema()} if structured else None
    )


def run(
    docs_shard: str,
    output: str,
    counts_path: str,
    spec: BackendSpec,
    sampling: Sampling,
    structured: bool,
    max_doc_chars: int,
    calls_per_doc: int,
    questions_per_doc: int,
    chunk_size: int,
    max_docs: int | None = None,
) -> dict:
    docs = pq.read_table(docs_shard, columns=["doc_id", "text"]).to_pylist()[:max_docs]
    items = [
        {
            "unit": d["doc_id"],
            "doc_ids": [d["doc_id"]],
            "call": call,
            "text": d["text"][:max_doc_chars],
        }
        for d in docs
        for call in range(calls_per_doc)
    ]
    requests = [level1_request(it["text"], structured) for it in items]
    return questions.generate(
        1,
        TEMPLATE,
        items,
        requests,
        parse_level1,
        spec,
        sampling,
        output,
        counts_path,
        questions_per_doc,
        chunk_size,
        structured=structured,
    )
