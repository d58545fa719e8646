"""A second opinion on contamination, optional (beyond the paper; config key decontam_judge,
off by default): after the n-gram rule of synthllm.stages.decontam, the questions that are
closest to a benchmark question by embedding are shown, each beside that question, to the
generator model, which judges whether the two are the same problem. A rephrased benchmark
problem keeps few of its n-grams and escapes the rule; it keeps its meaning, which an
embedding finds and a model can judge. The method is LMSYS's LLM decontaminator (Yang et
al. 2023, "Rethinking benchmark and contamination for language models with rephrased
samples"), as NeMo-Skills runs it: nearest neighbours by embedding, then an LLM on the
candidates only.

1. neighbours: each sample question and each benchmark question is embedded with
   models.embedding (mean-pooled, L2-normalised: synthllm.stages.embed); a sample's
   candidates are its decontam_judge.top_k most similar benchmark questions whose cosine
   similarity is at least decontam_judge.min_similarity (0.8: benchmarks/
   decontam_judge_candidates.py measures what it costs and finds);
2. judge: models.generator answers yes or no to prompts/decontam_judge.j2 for each
   candidate pair (greedy, constrained to those two words where the backend can);
3. a sample with a `yes` for any of its candidates is dropped, counted per benchmark
   (`judged_copy_<benchmark>`); a verdict that could not be read keeps the sample and is
   counted (`unjudged` pairs).

Output schema:
    decontam_judge/questions.parquet  the kept samples, columns of decontam/questions.parquet
    decontam_judge/judged.parquet     one row per candidate pair:
        question_id, benchmark, benchmark_id (string), similarity (float32: cosine),
        verdict (string: copy | distinct | null when unreadable), status (ok | unparsable |
        truncated | prompt_too_long), completion, finish_reason, model, template_hash
        (string), seed (int64)
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa

from synthllm.core.eval_data import load_benchmark
from synthllm.core.files import write_parquet_table
from synthllm.core.generation import GenerationStage, completion_status, render
from synthllm.core.llm import Completion, Request
from synthllm.errors import SynthllmError
from synthllm.settings import merged
from synthllm.stages.embed import Embedder, EmbeddingSpec

log = logging.getLogger(__name__)

TEMPLATE = "decontam_judge"
VERDICT_REGEX = r"(yes|no)"
VERDICTS = {"yes": "copy", "no": "distinct"}
JUDGED_COPY = "judged_copy"
SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("benchmark", pa.string()),
        ("benchmark_id", pa.string()),
        ("similarity", pa.float32()),
        ("verdict", pa.string()),
        ("status", pa.string()),
        ("completion", pa.string()),
        ("finish_reason", pa.string()),
        ("model", pa.string()),
        ("template_hash", pa.string()),
        ("seed", pa.int64()),
    ]
)
# sample rows compared against all benchmark questions at a time (a block of similarities)
BLOCK = 8192


class DecontamJudgeError(SynthllmError):
    pass


def benchmark_questions(benchmarks: dict[str, str]) -> pl.DataFrame:
    """benchmark, benchmark_id, question: every benchmark question, in config order."""
    rows = [
        (name, str(record["id"]), record["question"])
        for name, path in sorted(benchmarks.items())
        for record in load_benchmark(name, path)
        if record.get("question")
    ]
    if not rows:
        raise DecontamJudgeError(
            "config key evaluate.benchmarks: no benchmark question to compare with"
        )
    return pl.DataFrame(rows, schema=["benchmark", "benchmark_id", "question"], orient="row")


def nearest(
    samples: np.ndarray, bench: np.ndarray, top_k: int, min_similarity: float
) -> list[tuple[int, int, float]]:
    """(sample row, benchmark row, cosine) of each sample's `top_k` most similar benchmark
    rows with a cosine of at least `min_similarity`, by sample, most similar first.
    Both arrays hold L2-normalised rows, so a dot product is the cosine."""
    k = min(top_k, len(bench))
    pairs = []
    for start in range(0, len(samples), BLOCK):
        sims = samples[start : start + BLOCK] @ bench.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, (cols, values) in enumerate(zip(top, np.take_along_axis(sims, top, axis=1))):
            for j in np.argsort(-values, kind="stable"):
                if values[j] >= min_similarity:
                    pairs.append((start + row, int(cols[j]), float(values[j])))
    return pairs


def parse_verdict(text: str) -> tuple[str | None, str]:
    """(copy | distinct, ok) from a reply whose first word is yes or no; (None,
    unparsable) otherwise."""
    found = re.match(r"\W*(yes|no)\b", text.strip(), re.IGNORECASE)
    if not found:
        return None, "unparsable"
    return VERDICTS[found.group(1).lower()], "ok"


def judge_request(sample: str, benchmark: str, structured: bool) -> Request:
    content = render(TEMPLATE, sample=sample, benchmark=benchmark)
    constraint = {"regex": VERDICT_REGEX} if structured else None
    return Request([{"role": "user", "content": content}], constraint)


class DecontamJudge(GenerationStage):
    """Settings: decontam_judge's top_k, min_similarity and sampling, models.generator as
    model, models.embedding as embedding, generation.structured as structured and
    evaluate.benchmarks as benchmarks (rules/08_decontam.smk). Units are the candidate
    pairs; the counts are of samples (in: the decontaminated samples, out: those kept)."""

    stage = template = TEMPLATE
    schema = SCHEMA
    output = "judged"

    def units(self) -> list[dict]:
        self.samples = pl.read_parquet(self.inputs["questions"])
        self.bench = benchmark_questions(self.settings["benchmarks"])
        spec = EmbeddingSpec.from_config(merged(self.settings, self.execution, "embedding"))
        embedder = Embedder(spec)
        sample_vectors, _ = embedder.embed(self.samples["question"].to_list(), "embed samples")
        bench_vectors, _ = embedder.embed(self.bench["question"].to_list(), "embed benchmarks")
        pairs = nearest(
            sample_vectors,
            bench_vectors,
            self.settings["top_k"],
            self.settings["min_similarity"],
        )
        log.info(
            "decontam_judge: %d candidate pairs of %d samples against %d benchmark questions",
            len(pairs),
            len(self.samples),
            len(self.bench),
        )
        questions, ids = self.samples["question"], self.samples["question_id"]
        return [
            {
                "row": row,
                "question_id": ids[row],
                "question": questions[row],
                "benchmark": self.bench["benchmark"][col],
                "benchmark_id": self.bench["benchmark_id"][col],
                "benchmark_question": self.bench["question"][col],
                "similarity": similarity,
            }
            for row, col, similarity in pairs
        ]

    def request(self, pair: dict) -> Request:
        structured = self.settings["structured"]
        return self.fitted(
            lambda texts: judge_request(texts[0], texts[1], structured),
            [pair["question"], pair["benchmark_question"]],
        )

    def records(self, pair: dict, completion: Completion) -> tuple[str, list[dict]]:
        verdict, parsed = parse_verdict(completion.text)
        status = completion_status(parsed, completion)
        row = {
            "question_id": pair["question_id"],
            "benchmark": pair["benchmark"],
            "benchmark_id": pair["benchmark_id"],
            "similarity": pair["similarity"],
            "verdict": verdict if status == "ok" else None,
            "status": status,
            "completion": completion.text,
            "finish_reason": completion.finish_reason,
            **self.provenance,
        }
        return status, [row]

    def rows(self, pairs: list, completions: list[Completion]) -> tuple[list[dict], Counter]:
        """The judged pairs, and one status per sample: judged_copy_<benchmark> (of its first
        copy verdict, most similar first) or ok."""
        rows, self.pair_statuses = [], Counter()
        copied: dict[int, str] = {}
        for pair, completion in zip(pairs, completions):
            status, pair_rows = self.records(pair, completion)
            self.pair_statuses[status] += 1
            rows.extend(pair_rows)
            if pair_rows[0]["verdict"] == "copy":
                copied.setdefault(pair["row"], pair["benchmark"])
        self.copied = copied
        statuses = Counter(f"{JUDGED_COPY}_{name}" for name in copied.values())
        statuses["ok"] = len(self.samples) - len(copied)
        return rows, statuses

    def counts(self, pairs: list, rows: list[dict], statuses: Counter) -> tuple[Counter, dict]:
        verdicts = Counter(r["verdict"] for r in rows if r["verdict"])
        return statuses, {
            "benchmark_questions": len(self.bench),
            "pairs": len(pairs),
            "pairs_copy": verdicts["copy"],
            "pairs_distinct": verdicts["distinct"],
            "pairs_unjudged": sum(n for s, n in self.pair_statuses.items() if s != "ok"),
            "pair_statuses": dict(sorted(self.pair_statuses.items())),
            "top_k": self.settings["top_k"],
            "min_similarity": self.settings["min_similarity"],
        }

    def run(self) -> dict:
        counts = super().run()
        copied = pl.Series(sorted(self.copied), dtype=pl.UInt32)
        kept = self.samples.with_row_index("row").filter(~pl.col("row").is_in(copied)).drop("row")
        write_parquet_table(kept.to_arrow(), self.outputs["questions"])
        return counts


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The samples of inputs questions (the decontam stage's) that the judge does not find
    copied from a benchmark question, into outputs questions, judged and counts."""
    return DecontamJudge(
        inputs=inputs, outputs=outputs, settings=settings, execution=execution
    ).run()
