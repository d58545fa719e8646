"""The cold-start positives of document filtering (paper §4.1, Fig. 3): the generator LLM
writes synthetic mathematics documents (blog posts, exam papers, textbook sections) from a
syllabus (resources/syllabus/mathematics.yaml, discipline -> subject -> topic, shaped like
GLAN's).

Output schema (`filter/synthetic/docs.parquet`), one row per planned document:
    doc_id         string   corpus.doc_id_of the text (of the plan entry when it is empty)
    text           string   the completion, stripped
    kind, subject, topic, level  string  the plan entry it was written for
    status         string   ok | truncated | empty (under min_chars)
    finish_reason  string
    model, template_hash (string), seed (int64): provenance
ok and truncated documents are positives (a document cut at max_tokens is still one); the
counts report both as ok and keep the split in `by_status`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

from synthllm.core.generation import GenerationStage, completion_status, render
from synthllm.core.llm import Completion, Request
from synthllm.core.prompt_fit import TOO_LONG
from synthllm.stages.classifiers import FilterError
from synthllm.stages.corpus import doc_id_of

TEMPLATE = "synthetic_doc"
SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("text", pa.string()),
        ("kind", pa.string()),
        ("subject", pa.string()),
        ("topic", pa.string()),
        ("level", pa.string()),
        ("status", pa.string()),
        ("finish_reason", pa.string()),
        ("model", pa.string()),
        ("template_hash", pa.string()),
        ("seed", pa.int64()),
    ]
)


def load_syllabus(path: str) -> list[dict]:
    """(discipline, subject, level, topic) of every topic of a syllabus file, in file order."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise FilterError(
            f"config key filter.synthetic.syllabus: cannot read {path}: {exc}"
        ) from exc
    topics = []
    try:
        for s in data["subjects"]:
            for topic in s["topics"]:
                topics.append(
                    {
                        "discipline": data["discipline"],
                        "subject": s["name"],
                        "level": s["level"],
                        "topic": str(topic),
                    }
                )
    except (KeyError, TypeError) as exc:
        raise FilterError(
            f"{path}: expected discipline and subjects (name, level, topics): missing {exc}"
        ) from exc
    if not topics:
        raise FilterError(f"{path}: no topics")
    return topics


def synthetic_plan(topics: list[dict], kinds: list[str], n: int, seed: int) -> list[dict]:
    """n (topic, kind) pairs: every topic x kind pair once in a seeded order before any repeats."""
    pairs = [{**t, "kind": k} for t in topics for k in kinds]
    order = np.random.default_rng(seed).permutation(len(pairs))
    return [pairs[order[i % len(pairs)]] for i in range(n)]


class SyntheticDocs(GenerationStage):
    """Settings: filter.synthetic (kinds, documents, min_chars, sampling; its syllabus is
    the input `syllabus`), models.generator as `model` (rules/02_filter.smk)."""

    stage = "synthetic_docs"
    template = TEMPLATE
    schema = SCHEMA
    output = "docs"
    free_text = True

    def units(self) -> list[dict]:
        topics = load_syllabus(self.inputs["syllabus"])
        s = self.settings
        return synthetic_plan(topics, s["kinds"], s["documents"], self.sampling.seed)

    def request(self, plan: dict) -> Request:
        return Request([{"role": "user", "content": render(TEMPLATE, **plan)}])

    def records(self, plan: dict, completion: Completion) -> tuple[str, list[dict]]:
        text = completion.text.strip()
        parsed = "empty" if len(text) < self.settings["min_chars"] else "ok"
        status = completion_status(parsed, completion, free_text=self.free_text)
        row = {
            "doc_id": doc_id_of(text or f"{plan}"),
            "text": text,
            "kind": plan["kind"],
            "subject": plan["subject"],
            "topic": plan["topic"],
            "level": plan["level"],
            "status": status,
            "finish_reason": completion.finish_reason,
            **self.provenance,
        }
        return status, [row]

    def counts(self, units, rows, statuses):
        # every row is written (the classifier reads ok and truncated ones); empty ones are dropped
        usable = sum(n for status, n in statuses.items() if status not in ("empty", TOO_LONG))
        reported = Counter(ok=usable, empty=statuses["empty"])
        if statuses[TOO_LONG]:
            reported[TOO_LONG] = statuses[TOO_LONG]
        return reported, {"by_status": dict(statuses)}


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The synthetic documents of the plan, one per completion, and their counts."""
    return SyntheticDocs(
        inputs=inputs, outputs=outputs, settings=settings, execution=execution
    ).run()
