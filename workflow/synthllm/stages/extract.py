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

from synthllm.core.generation import GenerationStage, completion_status, render
from synthllm.core.llm import Completion, Request
from synthllm.core.parsers import extraction_schema, parse_extraction

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
    prompt = render("extract", text=text, structured=structured, min_kcs=min_kcs, max_kcs=max_kcs)
    constraint = {"json": extraction_schema(min_kcs, max_kcs)} if structured else None
    return Request([{"role": "user", "content": prompt}], constraint)


class Extract(GenerationStage):
    """Settings: generation.extract, models.generator, generation.{structured, max_doc_chars,
    max_docs_per_shard as max_docs} (rules/03_extract.smk)."""

    stage = template = "extract"
    schema = SCHEMA
    output = "extracted"

    def units(self) -> list[dict]:
        docs = pq.read_table(self.inputs["docs"], columns=["doc_id", "text"]).to_pylist()
        return docs[: self.settings["max_docs"]]

    def request(self, doc: dict) -> Request:
        s = self.settings
        text = doc["text"][: s["max_doc_chars"]]
        return self.fitted(
            lambda texts: extraction_request(texts[0], s["structured"], s["min_kcs"], s["max_kcs"]),
            [text],
        )

    def records(self, doc: dict, completion: Completion) -> tuple[str, list[dict]]:
        parsed = parse_extraction(completion.text)
        status = completion_status(parsed.status, completion)
        row = {
            "doc_id": doc["doc_id"],
            **parsed.fields,
            "topics": parsed.records if status == "ok" else [],
            "status": status,
            "completion": completion.text,
            "finish_reason": completion.finish_reason,
            **self.provenance,
        }
        return status, [row]

    def counts(self, units, rows, statuses):
        return statuses, {"structured": self.settings["structured"]}


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    return Extract(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()
