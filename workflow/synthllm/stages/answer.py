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

from synthllm.core.generation import GenerationStage, completion_status, render
from synthllm.core.llm import Completion, Request
from synthllm.core.parsers import parse_answer

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


class Answer(GenerationStage):
    """Settings: generation.answer, models.answerer (rules/06_answer.smk). An answer cut at
    max_tokens is kept but flagged truncated: the paper does not verify answers."""

    stage = template = "answer"
    schema = SCHEMA
    output = "answers"
    model_key = "models.answerer"

    def units(self) -> list[dict]:
        columns = ["question_id", "question", "level", "doc_ids"]
        shards = self.inputs["questions"]
        return pa.concat_tables([pq.read_table(p, columns=columns) for p in shards]).to_pylist()

    def request(self, q: dict) -> Request:
        return Request([{"role": "user", "content": render("answer", question=q["question"])}])

    def records(self, q: dict, completion: Completion) -> tuple[str, list[dict]]:
        parsed = parse_answer(completion.text)
        status = completion_status(parsed.status, completion, free_text=True)
        row = {
            **q,
            "answer": completion.text,
            "final_answer": parsed.fields.get("final_answer"),
            "status": status,
            "finish_reason": completion.finish_reason,
            **self.provenance,
        }
        return status, [row]


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    return Answer(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()
