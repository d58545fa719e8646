"""The question record shared by Level-1, Level-2 (and Level-3), and the loop that turns
parsed completions into question rows.

Output schema (`level1/shard-*.parquet`, `level2/shard-*.parquet`):
    question_id    string   "L{level}-{unit}-c{call}-q{k}": stable, unique within the run; the
                            unit is the document (Level-1/2) or the concept set (Level-3)
    level          int8     1, 2 or 3
    doc_ids        list<string>  the reference document(s): one for Level-1/2, two for Level-3
    question       string
    origin         string   original_question | newly_created | null (Level-1 only)
    school_level   string   one of parsers.SCHOOL_LEVELS or null (Level-1 only)
    concepts       list<string>  concepts the model says it combined (Level-2/3)
    call           int32    which call on the document produced it
    model, template_hash (string), seed (int64): provenance
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import pyarrow as pa

from synthllm.generation import (
    final_status,
    fingerprint,
    finish_stage,
    generate_resumable,
    provenance,
)
from synthllm.llm import BackendSpec, Completion, Request, Sampling
from synthllm.parsers import Parsed

SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("level", pa.int8()),
        ("doc_ids", pa.list_(pa.string())),
        ("question", pa.string()),
        ("origin", pa.string()),
        ("school_level", pa.string()),
        ("concepts", pa.list_(pa.string())),
        ("call", pa.int32()),
        ("model", pa.string()),
        ("template_hash", pa.string()),
        ("seed", pa.int64()),
    ]
)


def question_rows(
    level: int,
    items: Sequence[dict],
    completions: Sequence[Completion],
    parse: Callable[[str], Parsed],
    questions_per_unit: int,
    prov: dict,
) -> tuple[list[dict], Counter, int]:
    """Rows for every parsed question, at most `questions_per_unit` per unit (first calls
    first). Returns the rows, the completion statuses and how many questions the cap dropped.
    `items` carry "unit" (a document id, or a Level-3 concept set id), "doc_ids" and "call",
    one per completion."""
    rows, statuses, kept, capped = [], Counter(), Counter(), 0
    for item, c in zip(items, completions):
        parsed = parse(c.text)
        status = final_status(parsed.status, c)
        statuses[status] += 1
        for k, q in enumerate(parsed.records if status == "ok" else []):
            if kept[item["unit"]] >= questions_per_unit:
                capped += 1
                continue
            kept[item["unit"]] += 1
            rows.append(
                {
                    "question_id": f"L{level}-{item['unit']}-c{item['call']}-q{k + 1}",
                    "level": level,
                    "doc_ids": item["doc_ids"],
                    "question": q["question"],
                    "origin": q.get("origin"),
                    "school_level": q.get("school_level"),
                    "concepts": q.get("concepts", []),
                    "call": item["call"],
                    **prov,
                }
            )
    return rows, statuses, capped


def generate(
    level: int,
    template: str,
    items: Sequence[dict],
    requests: Sequence[Request],
    parse: Callable[[str], Parsed],
    spec: BackendSpec,
    sampling: Sampling,
    output: str,
    counts_path: str,
    questions_per_unit: int,
    chunk_size: int,
    **extra,
) -> dict:
    """Generate (resumably), parse and write one shard of Level-`level` questions."""
    stage = f"level{level}"
    fp = fingerprint(stage=stage, spec=spec, sampling=sampling, requests=requests)
    completions, facts = generate_resumable(
        requests, spec, sampling, output, fp, chunk_size, desc=stage
    )
    rows, statuses, capped = question_rows(
        level, items, completions, parse, questions_per_unit, provenance(spec, template, sampling)
    )
    return finish_stage(
        stage,
        rows,
        SCHEMA,
        output,
        counts_path,
        len(items),
        statuses,
        unit="calls",
        questions=len(rows),
        questions_over_cap=capped,
        **extra,
        **facts,
    )
