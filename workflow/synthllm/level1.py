"""Level-1 questions (paper Fig. 8): questions extracted from, or inspired by, one document.
Output schema: synthllm.questions.SCHEMA."""

from __future__ import annotations

import pyarrow.parquet as pq

from synthllm import questions
from synthllm.generation import fingerprint, generate_resumable, progress_path, provenance, render
from synthllm.io import write_counts, write_parquet
from synthllm.llm import BackendSpec, Request, Sampling
from synthllm.parsers import SCHOOL_LEVELS, level1_schema, parse_level1

TEMPLATE = "level1"


def level1_request(text: str, structured: bool) -> Request:
    prompt = render(TEMPLATE, text=text, structured=structured, levels=SCHOOL_LEVELS)
    return Request([{"role": "user", "content": prompt}],
                   {"json": level1_schema()} if structured else None)


def run(docs_shard: str, output: str, counts_path: str, spec: BackendSpec, sampling: Sampling,
        structured: bool, max_doc_chars: int, calls_per_doc: int, questions_per_doc: int,
        chunk_size: int, max_docs: int | None = None) -> dict:
    docs = pq.read_table(docs_shard, columns=["doc_id", "text"]).to_pylist()[:max_docs]
    items = [{"doc_id": d["doc_id"], "call": call, "text": d["text"][:max_doc_chars]}
             for d in docs for call in range(calls_per_doc)]
    requests = [level1_request(it["text"], structured) for it in items]
    fp = fingerprint(stage=TEMPLATE, spec=spec, sampling=sampling, requests=requests)
    completions, facts = generate_resumable(requests, spec, sampling, output, fp, chunk_size,
                                            desc="level1")
    rows, statuses, capped = questions.question_rows(
        1, items, completions, parse_level1, questions_per_doc, provenance(spec, TEMPLATE, sampling))
    write_parquet(rows, questions.SCHEMA, output)
    ok = statuses.pop("ok", 0)
    counts = write_counts(counts_path, "level1", len(items), ok, statuses, unit="calls",
                          questions=len(rows), questions_over_cap=capped,
                          structured=structured, **facts)
    progress_path(output).unlink(missing_ok=True)
    return counts
