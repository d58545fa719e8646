"""Level-3 questions (paper Fig. 10): a concept set sampled on the concept graph plus its
reference documents (top 2 by Jaccard); each question combines 2-3 key concepts of different
topics. Output schema: synthllm.core.questions.SCHEMA (doc_ids = the reference documents; the
question id's unit is the concept set's set_id).

Each job reads its shard's sets with their reference texts (synthllm.stages.level3_sets).
"""

from __future__ import annotations

import polars as pl

from synthllm.core.generation import render
from synthllm.core.llm import Request
from synthllm.core.parsers import level2_schema, parse_level2
from synthllm.core.questions import QuestionStage

MAX_QUESTIONS_PER_CALL = 3


def level3_request(
    topics: list[str], key_concepts: list[str], references: list[str], structured: bool
) -> Request:
    prompt = render(
        "level3",
        topics="; ".join(topics),
        key_concepts="; ".join(key_concepts),
        references=references,
        structured=structured,
    )
    return Request(
        [{"role": "user", "content": prompt}],
        {"json": level2_schema(MAX_QUESTIONS_PER_CALL)} if structured else None,
    )


class Level3(QuestionStage):
    """Inputs sets (one shard's, synthllm.stages.level3_sets). Settings: generation.level3,
    models.generator, generation.{structured, max_doc_chars}."""

    stage = template = "level3"
    level = 3
    cap = "questions_per_set"
    parse = staticmethod(parse_level2)

    def units(self) -> list[dict]:
        sets = pl.read_parquet(self.inputs["sets"]).to_dicts()
        self.n_sets = len(sets)
        return [
            {"unit": s["set_id"], "doc_ids": s["ref_doc_ids"], "call": call, "set": s}
            for s in sets
            for call in range(self.settings["calls_per_set"])
        ]

    def request(self, item: dict) -> Request:
        concept_set = item["set"]
        references = [text[: self.settings["max_doc_chars"]] for text in concept_set["ref_texts"]]
        return self.fitted(
            lambda refs: level3_request(
                concept_set["topics"],
                concept_set["key_concepts"],
                refs,
                self.settings["structured"],
            ),
            references,
        )

    @property
    def extra(self) -> dict:
        return {"concept_sets": self.n_sets}


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    return Level3(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()
