"""Level-1 questions (paper Fig. 8): questions extracted from, or inspired by, one document.
Output schema: synthllm.core.questions.SCHEMA."""

from __future__ import annotations

import pyarrow.parquet as pq

from synthllm.core.generation import render
from synthllm.core.llm import Request
from synthllm.core.parsers import SCHOOL_LEVELS, level1_schema, parse_level1
from synthllm.core.questions import QuestionStage


def level1_request(text: str, structured: bool) -> Request:
    prompt = render("level1", text=text, structured=structured, levels=SCHOOL_LEVELS)
    return Request(
        [{"role": "user", "content": prompt}],
        {"json": level1_schema()} if structured else None,
    )


class Level1(QuestionStage):
    """Settings: generation.level1, models.generator, generation.{structured, max_doc_chars,
    max_docs_per_shard as max_docs} (rules/05_questions.smk)."""

    stage = template = "level1"
    level = 1
    cap = "questions_per_doc"
    parse = staticmethod(parse_level1)

    def units(self) -> list[dict]:
        docs = pq.read_table(self.inputs["docs"], columns=["doc_id", "text"]).to_pylist()
        return [
            {"unit": d["doc_id"], "doc_ids": [d["doc_id"]], "call": call, "text": d["text"]}
            for d in docs[: self.settings["max_docs"]]
            for call in range(self.settings["calls_per_doc"])
        ]

    def request(self, item: dict) -> Request:
        text = item["text"][: self.settings["max_doc_chars"]]
        structured = self.settings["structured"]
        return self.fitted(lambda texts: level1_request(texts[0], structured), [text])


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    return Level1(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()
