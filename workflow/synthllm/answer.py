"""Answers (paper §4.3): one answer per question, no verification (as in the paper).

Output schema (`answer/shard-*.parquet`):
    question_id, question (string), level (int8), doc_ids (list<string>)
    answer         string   the raw completion
    final_answer   string   content of its last \\boxed{}, or null
    status         string   ok | empty | truncated
    finish_reason  string
    model, template_hash (string), seed (int64): provenance of the answer
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from synthllm.generation import fingerprint, finish_stage, generate_resumable, provenance, render
from synthllm.llm import BackendSpec, Request, Sampling
from synthllm.parsers import parse_answer

TEMPLATE = "answer"
SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("question", pa.string()),
        ("level", pa.int8()),
        ("doc_ids", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("final_answer", pa.string()),
        ("status", pa.string()),
        ("finish_reason", pa.string()),
        ("model", pa.string()),
        ("template_hash", pa.string()),
        ("seed", pa.int64()),
    ]
)


def run(
    question_shards: list[str],
    output: str,
    counts_path: str,
    spec: BackendSpec,
    sampling: Sampling,
    chunk_size: int,
) -> dict:
    qs = pa.concat_tables(
        [
            pq.read_table(p, columns=["question_id", "question", "level", "doc_ids"])
            for p in question_shards
        ]
    ).to_pylist()
    requests = [
        Request([{"role": "user", "content": render(TEMPLATE, question=q["question"])}]) for q in qs
    ]
    fp = fingerprint(stage=TEMPLATE, spec=spec, sampling=sampling, requests=requests)
    completions, facts = generate_resumable(
        requests, spec, sampling, output, fp, chunk_size, desc="answer"
    )
    prov = provenance(spec, TEMPLATE, sampling)
    rows, statuses = [], {}
    for q, c in zip(qs, completions):
        parsed = parse_answer(c.text)
        # an answer cut at max_tokens is kept but flagged: the paper does not verify answers
        status = "truncated" if c.finish_reason == "length" else parsed.status
        statuses[status] = statuses.get(status, 0) + 1
        rows.append(
            {
                **q,
                "answer": c.text,
                "final_answer": parsed.fields.get("final_answer"),
                "status": status,
                "finish_reason": c.finish_reason,
                **prov,
            }
        )
    return finish_stage("answer", rows, SCHEMA, output, counts_path, len(qs), statuses, **facts)
