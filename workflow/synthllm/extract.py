"""Topic and key-concept extraction (paper Fig. 11), one row per document.

Output schema (`extract/shard-*.parquet`):
    doc_id         string
    level          string   educational level, one of parsers.EDU_LEVELS, or null
    subject        string   or null
    topics         list<struct<name: string, key_concepts: list<string>>>  (empty unless ok)
    status         string   ok | empty | malformed | truncated
    completion     string   the model's raw output
    finish_reason  string
    model, template_hash (string), seed (int64): provenance
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from synthllm.generation import (
    final_status,
    fingerprint,
    finish_stage,
    generate_resumable,
    provenance,
    render,
)
from synthllm.llm import BackendSpec, Request, Sampling
from synthllm.parsers import extraction_schema, parse_extraction

TEMPLATE = "extract"
TOPICS = pa.list_(pa.struct([("name", pa.string()), ("key_concepts", pa.list_(pa.string()))]))
SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("level", pa.string()),
        ("subject", pa.string()),
        ("topics", TOPICS),
        ("status", pa.string()),
        ("completion", pa.string()),
        ("finish_reason", pa.string()),
        ("model", pa.string()),
        ("template_hash", pa.string()),
        ("seed", pa.int64()),
    ]
)


def extraction_request(text: str, structured: bool, min_kcs: int, max_kcs: int) -> Request:
    prompt = render(TEMPLATE, text=text, structured=structured, min_kcs=min_kcs, max_kcs=max_kcs)
    constraint = {"json": extraction_schema(min_kcs, max_kcs)} if structured else None
    return Request([{"role": "user", "content": prompt}], constraint)


def run(
    corpus_shard: str,
    output: str,
    counts_path: str,
    spec: BackendSpec,
    sampling: Sampling,
    structured: bool,
    max_doc_chars: int,
    min_kcs: int,
    max_kcs: int,
    chunk_size: int,
    max_docs: int | None = None,
) -> dict:
    docs = pq.read_table(corpus_shard, columns=["doc_id", "text"]).to_pylist()[:max_docs]
    requests = [
        extraction_request(d["text"][:max_doc_chars], structured, min_kcs, max_kcs) for d in docs
    ]
    fp = fingerprint(stage=TEMPLATE, spec=spec, sampling=sampling, requests=requests)
    completions, facts = generate_resumable(
        requests, spec, sampling, output, fp, chunk_size, desc="extract"
    )
    prov = provenance(spec, TEMPLATE, sampling)
    rows, statuses = [], {}
    for doc, c in zip(docs, completions):
        parsed = parse_extraction(c.text)
        status = final_status(parsed.status, c)
        statuses[status] = statuses.get(status, 0) + 1
        rows.append(
            {
                "doc_id": doc["doc_id"],
                **parsed.fields,
                "topics": parsed.records if status == "ok" else [],
                "status": status,
                "completion": c.text,
                "finish_reason": c.finish_reason,
                **prov,
            }
        )
    return finish_stage(
        "extract",
        rows,
        SCHEMA,
        output,
        counts_path,
        len(docs),
        statuses,
        structured=structured,
        **facts,
    )
