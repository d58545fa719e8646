"""Level-3 questions (paper Fig. 10): a concept set sampled on the concept graph plus its
reference documents (top 2 by Jaccard); each question combines 2-3 key concepts of different
topics. Output schema: synthllm.questions.SCHEMA (doc_ids = the reference documents; the
question id's unit is the concept set's set_id).

The sets of all subsets are dealt to the question shards round-robin (set i goes to shard
i mod n_shards, in subset then walk order), so Level-3 generation runs in as many resumable
jobs as Level-1 and Level-2.
"""

from __future__ import annotations

import polars as pl

from synthllm.concepts import ConceptGraphError
from synthllm.generation import render
from synthllm.llm import Request
from synthllm.parsers import level2_schema, parse_level2
from synthllm.questions import QuestionStage

MAX_QUESTIONS_PER_CALL = 3


def shard_sets(
    walk_files: list[str], shard: int, n_shards: int, max_sets: int | None
) -> pl.DataFrame:
    sets = pl.concat([pl.read_parquet(p) for p in walk_files]).with_row_index("row")
    mine = sets.filter(pl.col("row") % n_shards == shard).drop("row")
    return mine.head(max_sets) if max_sets is not None else mine


def reference_texts(doc_shards: list[str], doc_ids: set[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in doc_shards:
        frame = pl.read_parquet(path, columns=["doc_id", "text"]).filter(
            pl.col("doc_id").is_in(list(doc_ids))
        )
        texts.update(zip(frame.get_column("doc_id").to_list(), frame.get_column("text").to_list()))
    missing = doc_ids - texts.keys()
    if missing:
        raise ConceptGraphError(
            f"reference documents {sorted(missing)[:5]} (of {len(missing)}) are not in "
            f"the document shards {doc_shards}: the walks and documents disagree"
        )
    return texts


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
    """Settings: generation.level3, models.generator, generation.{structured, max_doc_chars},
    and the job's shard (rules/questions.smk)."""

    stage = template = "level3"
    level = 3
    cap = "questions_per_set"
    parse = staticmethod(parse_level2)

    def units(self) -> list[dict]:
        shard, n_shards = (int(x) for x in self.settings["shard"].split("-of-"))
        max_sets = self.settings["max_sets_per_shard"]
        sets = shard_sets(self.inputs["walks"], shard, n_shards, max_sets).to_dicts()
        self.n_sets = len(sets)
        self.texts = reference_texts(
            self.inputs["docs"], {d for s in sets for d in s["ref_doc_ids"]}
        )
        return [
            {"unit": s["set_id"], "doc_ids": s["ref_doc_ids"], "call": call, "set": s}
            for s in sets
            for call in range(self.settings["calls_per_set"])
        ]

    def request(self, item: dict) -> Request:
        references = [self.texts[d][: self.settings["max_doc_chars"]] for d in item["doc_ids"]]
        concept_set = item["set"]
        return level3_request(
            concept_set["topics"],
            concept_set["key_concepts"],
            references,
            self.settings["structured"],
        )

    @property
    def extra(self) -> dict:
        return {"concept_sets": self.n_sets}


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    return Level3(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()
