"""The ratings of a fine-grained filtering round (paper §4.1, Fig. 3): at iteration t the
rater LLM scores a sample of D(t-1) plus a fresh random corpus sample 1-10 (prompts/rate.j2),
none of them rated at an earlier iteration. The fine-grained regressor (synthllm.stages.classifiers)
trains on every ok rating so far.

Output schema (`filter/iter-{t}/ratings.parquet`): synthllm.stages.classifiers.RATINGS_SCHEMA, one row
per rated document (unusable ratings stay visible): doc_id, shard, row, origin (reference |
random), rating (float, null unless ok), status (ok | unparsable | out_of_range |
truncated), completion, finish_reason, model, template_hash, seed.

The sample is drawn with numpy's default_rng from filter.seed + t (recorded in the counts).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow.parquet as pq

from synthllm.core.generation import GenerationStage, completion_status, render
from synthllm.core.llm import Completion, Request
from synthllm.stages.classifiers import (
    RATINGS_SCHEMA,
    load_scores,
    sample_rows,
    shard_name_of,
    shard_sizes,
)

TEMPLATE = "rate"
RATING_REGEX = r"Rating: (10|[1-9])"
ORIGINS = ("reference", "random")

_RATING_PATTERNS = (
    re.compile(r"rating\W{0,5}(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE),
    re.compile(r"^\W*(\d+(?:\.\d+)?)\W*$"),
)


def rating_request(text: str, structured: bool) -> Request:
    constraint = {"regex": RATING_REGEX} if structured else None
    return Request([{"role": "user", "content": render(TEMPLATE, text=text)}], constraint)


def parse_rating(text: str) -> tuple[float | None, str]:
    """(rating, status): the number after "Rating", before "/10" or "out of 10", or a
    completion that is only a number. status ok | out_of_range (outside 1-10) | unparsable."""
    for pattern in _RATING_PATTERNS:
        found = pattern.findall(text.strip())
        if found:
            value = float(found[-1])
            return (value, "ok") if 1 <= value <= 10 else (None, "out_of_range")
    return None, "unparsable"


def rate_sample(
    previous_scores: str,
    shards: list[str],
    n_reference: int,
    n_random: int,
    seed: int,
    already_rated: set[str],
) -> list[dict]:
    """D(t-1) (up to n_reference documents) plus n_random other random corpus documents,
    none rated before: (doc_id, shard index, row, origin)."""
    rng = np.random.default_rng(seed)
    scores = load_scores(previous_scores).to_pylist()
    index = {shard_name_of(s): i for i, s in enumerate(shards)}
    reference = [r for r in scores if r["kept"] and r["doc_id"] not in already_rated]
    picked = rng.choice(len(reference), size=min(n_reference, len(reference)), replace=False)
    chosen = [
        {
            "doc_id": reference[i]["doc_id"],
            "s": index[reference[i]["shard"]],
            "row": reference[i]["row"],
            "origin": "reference",
        }
        for i in sorted(picked)
    ]
    rated_pairs = {(index[r["shard"]], r["row"]) for r in scores if r["doc_id"] in already_rated}
    exclude = {(c["s"], c["row"]) for c in chosen} | rated_pairs
    for s, row in sample_rows(shard_sizes(shards), n_random, rng, exclude):
        chosen.append({"doc_id": None, "s": s, "row": row, "origin": "random"})
    return chosen


class Rate(GenerationStage):
    """Settings: filter.finegrained.{reference_sample, random_sample, max_doc_chars,
    sampling}, filter.seed as seed, generation.structured as structured, models.rater as
    model, and the iteration (rules/02_filter.smk); the sample's seed is seed + iteration."""

    stage = template = TEMPLATE
    schema = RATINGS_SCHEMA
    output = "ratings"
    model_key = "models.rater"

    @property
    def seed(self) -> int:
        return self.settings["seed"] + self.settings["iteration"]

    def units(self) -> list[dict]:
        """The documents to rate, each with its doc_id and text read from its shard."""
        shards = self.inputs["shards"]
        already = set()
        for path in self.inputs["previous_ratings"]:
            already |= set(pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist())
        s = self.settings
        chosen = rate_sample(
            self.inputs["previous_scores"],
            shards,
            s["reference_sample"],
            s["random_sample"],
            self.seed,
            already,
        )
        for i in sorted({c["s"] for c in chosen}):
            table = pq.read_table(shards[i], columns=["doc_id", "text"]).to_pylist()
            for c in chosen:
                if c["s"] == i:
                    c["doc_id"], c["text"] = table[c["row"]]["doc_id"], table[c["row"]]["text"]
        return chosen

    def request(self, doc: dict) -> Request:
        text = doc["text"][: self.settings["max_doc_chars"]]
        structured = self.settings["structured"]
        return self.fitted(lambda texts: rating_request(texts[0], structured), [text])

    def records(self, doc: dict, completion: Completion) -> tuple[str, list[dict]]:
        rating, parsed = parse_rating(completion.text)
        status = completion_status(parsed, completion)
        row = {
            "doc_id": doc["doc_id"],
            "shard": shard_name_of(self.inputs["shards"][doc["s"]]),
            "row": doc["row"],
            "origin": doc["origin"],
            "rating": rating,
            "status": status,
            "completion": completion.text,
            "finish_reason": completion.finish_reason,
            **self.provenance,
        }
        return status, [row]

    def counts(self, units, rows, statuses):
        return statuses, {
            "origins": {o: sum(1 for d in units if d["origin"] == o) for o in ORIGINS},
            "histogram": {str(k): sum(1 for r in rows if r["rating"] == k) for k in range(1, 11)},
            "seed": self.seed,
            "structured": self.settings["structured"],
        }


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The ratings of iteration settings["iteration"] and their counts."""
    return Rate(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()
