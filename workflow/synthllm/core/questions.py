"""The question record shared by Levels 1-3, and the generation stage they share.

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

from abc import abstractmethod
from collections import Counter

import pyarrow as pa

from synthllm.core.generation import GenerationStage, completion_status
from synthllm.core.llm import Completion
from synthllm.core.parsers import Parsed

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


class QuestionStage(GenerationStage):
    """Levels 1-3: each unit is one call on a document or concept set (`unit`, `doc_ids`,
    `call`); every parsed question becomes a row, at most `settings[cap]` per document or
    set, first calls first."""

    schema = SCHEMA
    output = "questions"
    level: int
    cap: str  # the settings key of the per-document (or per-set) cap

    @staticmethod
    @abstractmethod
    def parse(text: str) -> Parsed:
        """The level's parser (synthllm.core.parsers)."""

    def __init__(self, **parts):
        super().__init__(**parts)
        self.kept, self.capped = Counter(), 0

    def records(self, item: dict, completion: Completion) -> tuple[str, list[dict]]:
        parsed = self.parse(completion.text)
        status = completion_status(parsed.status, completion)
        rows = []
        for k, q in enumerate(parsed.records if status == "ok" else []):
            if self.kept[item["unit"]] >= self.settings[self.cap]:
                self.capped += 1
                continue
            self.kept[item["unit"]] += 1
            rows.append(
                {
                    "question_id": f"L{self.level}-{item['unit']}-c{item['call']}-q{k + 1}",
                    "level": self.level,
                    "doc_ids": item["doc_ids"],
                    "question": q["question"],
                    "origin": q.get("origin"),
                    "school_level": q.get("school_level"),
                    "concepts": q.get("concepts", []),
                    "call": item["call"],
                    **self.provenance,
                }
            )
        return status, rows

    def counts(self, units, rows, statuses):
        extra = {"unit": "calls", "questions": len(rows), "questions_over_cap": self.capped}
        return statuses, {**extra, "structured": self.settings["structured"], **self.extra}

    @property
    def extra(self) -> dict:
        """Counts of the level's own (documents without concepts, concept sets)."""
        return {}
