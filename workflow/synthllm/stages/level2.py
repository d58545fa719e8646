"""Level-2 questions (paper Fig. 9): one document plus the concepts extracted from it; the
model picks 2-3 key concepts per question. Output schema: synthllm.core.questions.SCHEMA."""

from __future__ import annotations

import pyarrow.parquet as pq

from synthllm.core.generation import render
from synthllm.core.llm import Request
from synthllm.core.parsers import level2_schema, parse_level2
from synthllm.core.questions import QuestionStage


def concept_list(topics: list[dict]) -> str:
    """The concept block of the prompt: one line per topic with its key concepts."""
    return "\n".join(
        f"{i}. {t['name']}: " + "; ".join(t["key_concepts"]) for i, t in enumerate(topics, start=1)
    )


def level2_request(text: str, topics: list[dict], structured: bool) -> Request:
    prompt = render("level2", text=text, concepts=concept_list(topics), structured=structured)
    return Request(
        [{"role": "user", "content": prompt}], {"json": level2_schema()} if structured else None
    )


class Level2(QuestionStage):
    """Settings: generation.level2, models.generator, generation.{structured, max_doc_chars}
    (rules/05_questions.smk). Documents whose extraction failed have no concepts to recombine."""

    stage = template = "level2"
    level = 2
    cap = "questions_per_doc"
    parse = staticmethod(parse_level2)

    def units(self) -> list[dict]:
        docs = pq.read_table(self.inputs["docs"], columns=["doc_id", "text"]).to_pydict()
        self.texts = dict(zip(*docs.values()))
        columns = ["doc_id", "topics", "status"]
        extracted = pq.read_table(self.inputs["extracted"], columns=columns).to_pylist()
        usable = [e for e in extracted if e["status"] == "ok"]
        self.without_concepts = len(extracted) - len(usable)
        return [
            {"unit": e["doc_id"], "doc_ids": [e["doc_id"]], "call": call, "topics": e["topics"]}
            for e in usable
            for call in range(self.settings["calls_per_doc"])
        ]

    def request(self, item: dict) -> Request:
        text = self.texts[item["unit"]][: self.settings["max_doc_chars"]]
        structured = self.settings["structured"]
        return self.fitted(
            lambda texts: level2_request(texts[0], item["topics"], structured), [text]
        )

    @property
    def extra(self) -> dict:
        return {"documents_without_concepts": self.without_concepts}


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    return Level2(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()
