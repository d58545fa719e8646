"""Answers (paper §4.3): one greedy answer per question, unverified, as in the paper; or,
with generation.answer.verify.samples = k > 1 (beyond the paper), answers checked by
agreement (self-consistency, Wang et al. 2023).

Verification: k answers are sampled per question (generation.answer.sampling, which must
then have a temperature above 0). Their final answers (the last \\boxed{}, normalised as the
Qwen2.5-Math harness normalises a prediction) are grouped by the harness's `math_equal`
(each grouping step time-limited, verify.timeout_s); the largest group is the majority, ties
to the group whose first answer came first, and its first answer is kept. Its agreement is
the group's size over k (an answer with no final answer agrees with nothing). A question
whose agreement is below verify.min_agreement gets status `low_agreement`, which dedup drops
and counts like any unusable answer.

Output schema (`answer/shard-*.parquet`), one row per question:
    question_id, question (string), level (int8), doc_ids (list<string>)
    answer         string   the raw completion (with verification: the kept one)
    final_answer   string   content of its last \\boxed{}, or null
    status         string   ok | empty | truncated | low_agreement | prompt_too_long
    finish_reason  string
    agreement      float32  the majority's share of the k answers; null unverified
    votes          list<string>  the k final answers (null where none); empty unverified
    model, template_hash (string), seed (int64): provenance of the answer
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from synthllm.core.answer_extraction import strip_string
from synthllm.core.generation import GenerationStage, completion_status, render
from synthllm.core.grading import grade_harness
from synthllm.core.llm import Completion, Request
from synthllm.core.parsers import parse_answer
from synthllm.errors import SynthllmError
from synthllm.settings import schema_default

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
        ("agreement", pa.float32()),
        ("votes", pa.list_(pa.string())),
        ("model", pa.string()),
        ("template_hash", pa.string()),
        ("seed", pa.int64()),
    ]
)
LOW_AGREEMENT = "low_agreement"


class AnswerError(SynthllmError):
    pass


def majority(finals: list[str | None], timeout_s: float) -> tuple[int, float]:
    """(the index of the kept answer, the agreement) of k final answers: the first answer
    of the largest group of equal ones (module docstring)."""
    groups: list[tuple[str, list[int]]] = []  # (normalised first answer, members)
    for i, final in enumerate(finals):
        if final is None:
            continue
        normal = strip_string(final)
        for head, members in groups:
            if grade_harness(normal, head, timeout_s):
                members.append(i)
                break
        else:
            groups.append((normal, [i]))
    if not groups:
        return 0, 0.0
    _, members = max(groups, key=lambda g: len(g[1]))  # max keeps the first of equals
    return members[0], len(members) / len(finals)


class Answer(GenerationStage):
    """Settings: generation.answer (sampling, verify), models.answerer (rules/06_answer.smk).
    An answer cut at max_tokens is kept but flagged truncated."""

    stage = template = "answer"
    schema = SCHEMA
    output = "answers"
    model_key = "models.answerer"

    def __init__(self, **parts):
        super().__init__(**parts)
        # the schema's defaults where the settings leave verify out (a tool's or test's)
        self.verify = {
            **schema_default("generation.answer.verify"),
            **self.settings.get("verify", {}),
        }
        self.k = self.verify["samples"]
        if self.k > 1 and self.sampling.temperature <= 0:
            raise AnswerError(
                "config key generation.answer.sampling.temperature: verification "
                f"(generation.answer.verify.samples = {self.k}) samples its answers and "
                "needs a temperature above 0"
            )

    def units(self) -> list[dict]:
        columns = ["question_id", "question", "level", "doc_ids"]
        shards = self.inputs["questions"]
        questions = pa.concat_tables([pq.read_table(p, columns=columns) for p in shards])
        # the k samples of a question lie next to each other: distinct positions, seeds
        return [q for q in questions.to_pylist() for _ in range(self.k)]

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
            "agreement": None,
            "votes": [],
            **self.provenance,
        }
        return status, [row]

    def rows(self, units, completions):
        if self.k == 1:
            return super().rows(units, completions)
        rows, statuses = [], Counter()
        for start in range(0, len(units), self.k):
            samples = [
                self.records(q, c)[1][0]
                for q, c in zip(units[start : start + self.k], completions[start : start + self.k])
            ]
            votes = [s["final_answer"] for s in samples]
            kept, agreement = majority(votes, self.verify["timeout_s"])
            row = {**samples[kept], "agreement": agreement, "votes": votes}
            if row["status"] == "ok" and agreement < self.verify["min_agreement"]:
                row["status"] = LOW_AGREEMENT
            statuses[row["status"]] += 1
            rows.append(row)
        return rows, statuses

    def counts(self, units, rows, statuses):
        if self.k == 1:
            return statuses, {}
        agreements = [r["agreement"] for r in rows]
        return statuses, {
            "verify": {
                **self.verify,
                "answers_sampled": len(units),
                "mean_agreement": round(sum(agreements) / max(len(agreements), 1), 4),
                "agreement_histogram": dict(
                    sorted(Counter(f"{a:.2f}" for a in agreements).items())
                ),
            }
        }


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    return Answer(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()
