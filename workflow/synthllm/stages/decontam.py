"""Decontamination against the evaluation benchmarks (paper §1.2; method ours).

A synthetic sample is contaminated when its question or its answer shares one word n-gram
(13 words by default, config key decontam.ngram) with a benchmark record's question or
reference solution, all texts in the normal form of synthllm.core.textkeys (NFKC, case-folded,
words = runs of letters and digits). A benchmark text shorter than n words is one gram of
itself: a sample containing its words as a contiguous run (a short benchmark question
copied into a longer one) is contaminated too, when it has at least decontam.short_min_words
words; a shorter one only when the sample's question or answer is that text. This is the
n-gram-overlap rule of the GPT-3 / Llama decontamination reports, on the test sets of the
six benchmarks the evaluation stage reads (config key evaluate.benchmarks). Benchmark
n-grams of fewer than 3 distinct words (number tables, repeated tokens) are not indexed:
a looping model answer `1 1 1 ...` is no copy of a MATH solution's table of ones.

Output schema:
    decontam/questions.parquet  the clean samples, columns of dedup/questions.parquet
    decontam/hits.parquet       one row per contaminated sample:
        question_id (string), level (int8), field (string: question | answer, the first
        that hit), benchmark (string), benchmark_id (string), benchmark_field (string:
        question | solution), matched (string: the sample's words that matched)
    decontam/report.json        counts per benchmark and field, with the settings
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl
from numba import njit, prange

from synthllm.core.eval_data import load_benchmark
from synthllm.core.files import write_counts, write_json, write_parquet_table
from synthllm.core.textkeys import WORD, gram_distinct_words, ngram_hashes, normal_form, word_hashes
from synthllm.errors import SynthllmError

CHUNK = 1 << 18  # texts split into words at a time
MIN_DISTINCT_WORDS = 3
HIT_SCHEMA = {
    "question_id": pl.String,
    "level": pl.Int8,
    "field": pl.String,
    "benchmark": pl.String,
    "benchmark_id": pl.String,
    "benchmark_field": pl.String,
    "matched": pl.String,
}
CHECKED_FIELDS = ("question", "answer")


class DecontamError(SynthllmError):
    pass


def benchmark_texts(benchmarks: dict[str, str]) -> pl.DataFrame:
    """benchmark, benchmark_id, benchmark_field, text: every question and reference solution."""
    rows = []
    for name, path in sorted(benchmarks.items()):
        for record in load_benchmark(name, path):
            for field in ("question", "solution"):
                if record.get(field):
                    rows.append((name, str(record["id"]), field, record[field]))
    if not rows:
        raise DecontamError("config key evaluate.benchmarks: no benchmark text to check against")
    return pl.DataFrame(
        rows, schema=["benchmark", "benchmark_id", "benchmark_field", "text"], orient="row"
    )


class GramIndex:
    """The benchmark n-grams, sorted, each with the benchmark text it came from. Grams of
    fewer than `min_distinct` distinct words (a run of `1 1 1 ...` in a number table, a
    repeated phrase) are left out: a degenerate model output that loops on one token would
    otherwise "match" them, and they are no evidence of copying."""

    def __init__(
        self,
        texts: pl.Series,
        n: int,
        short_min_words: int,
        min_distinct: int = MIN_DISTINCT_WORDS,
    ):
        offsets, hashes = word_hashes(texts)
        gram_offsets, grams = ngram_hashes(offsets, hashes, n)
        owner = np.repeat(np.arange(len(texts), dtype=np.int64), np.diff(gram_offsets))
        informative = gram_distinct_words(offsets, hashes, n, gram_offsets) >= min(min_distinct, n)
        length = np.repeat(np.minimum(np.diff(offsets), n), np.diff(gram_offsets))
        self.n = n
        # every gram length to look for: n, and each length of a short benchmark text
        self.index = {}
        for k in sorted({n, *length[(length >= short_min_words) & (length < n)].tolist()}):
            keep = informative & (length == k) if k < n else informative
            order = np.argsort(grams[keep], kind="stable")
            self.index[k] = (grams[keep][order], owner[keep][order])

    def first_hits(self, texts: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(owner, position, length) per text: the benchmark text of its first matching gram
        (n words, else the longest short benchmark text it contains), the gram's word
        position in the text and its length in words; owner -1 when nothing matches."""
        owners, positions, lengths = [], [], []
        for start in range(0, len(texts), CHUNK):
            offsets, hashes = word_hashes(texts.slice(start, CHUNK))
            owner = np.full(len(offsets) - 1, -1, dtype=np.int64)
            pos = np.full(len(offsets) - 1, -1, dtype=np.int64)
            length = np.zeros(len(offsets) - 1, dtype=np.int64)
            for k in sorted(self.index, reverse=True):
                gram_offsets, grams = ngram_hashes(offsets, hashes, k)
                k_owner, k_pos = _first_hits(gram_offsets, grams, *self.index[k])
                new = (owner < 0) & (k_owner >= 0)
                owner[new], pos[new], length[new] = k_owner[new], k_pos[new], k
            owners.append(owner)
            positions.append(pos)
            lengths.append(length)
        if not owners:
            return (np.empty(0, np.int64),) * 3
        return np.concatenate(owners), np.concatenate(positions), np.concatenate(lengths)


@njit(cache=True, parallel=True)
def _first_hits(gram_offsets, grams, index, owner):
    m = len(gram_offsets) - 1
    hit_owner = np.full(m, -1, dtype=np.int64)
    hit_pos = np.full(m, -1, dtype=np.int64)
    for i in prange(m):
        for k in range(gram_offsets[i], gram_offsets[i + 1]):
            j = np.searchsorted(index, grams[k])
            if j < len(index) and index[j] == grams[k]:
                hit_owner[i] = owner[j]
                hit_pos[i] = k - gram_offsets[i]
                break
    return hit_owner, hit_pos


def matched_words(texts: pl.Series, positions: np.ndarray, lengths: np.ndarray) -> list[str]:
    words = normal_form(texts).str.extract_all(WORD).to_list()
    return [" ".join(w[p : p + k]) for w, p, k in zip(words, positions, lengths)]


def decontaminate(
    samples: pl.DataFrame, bench: pl.DataFrame, n: int, short_min_words: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(clean, hits): samples whose question or answer shares an n-gram with a benchmark
    text, or contains a short benchmark text (module docstring)."""
    index = GramIndex(bench["text"], n, short_min_words)
    hit_rows = []
    contaminated = np.zeros(len(samples), dtype=bool)
    for field in CHECKED_FIELDS:
        owner, pos, length = index.first_hits(samples[field])
        new = np.flatnonzero((owner >= 0) & ~contaminated)
        contaminated[new] = True
        if len(new):
            src = bench[owner[new]]
            hit_rows.append(
                pl.DataFrame(
                    {
                        "question_id": samples["question_id"].gather(new),
                        "level": samples["level"].gather(new),
                        "field": [field] * len(new),
                        "benchmark": src["benchmark"],
                        "benchmark_id": src["benchmark_id"],
                        "benchmark_field": src["benchmark_field"],
                        "matched": matched_words(samples[field].gather(new), pos[new], length[new]),
                    },
                    schema=HIT_SCHEMA,
                )
            )
    hits = pl.concat(hit_rows) if hit_rows else pl.DataFrame(schema=HIT_SCHEMA)
    return samples.filter(pl.Series(~contaminated)), hits.sort("question_id")


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The clean samples of inputs questions (the dedup stage's) into outputs questions,
    hits, report, counts. Settings: decontam.ngram as ngram, decontam.short_min_words,
    evaluate.benchmarks (name -> jsonl) as benchmarks (rules/08_decontam.smk)."""
    ngram, benchmarks = settings["ngram"], settings["benchmarks"]
    if ngram < 1:
        raise DecontamError(f"config key decontam.ngram: {ngram} < 1")
    started = time.monotonic()
    samples = pl.read_parquet(inputs["questions"])
    bench = benchmark_texts(benchmarks)
    clean, hits = decontaminate(samples, bench, ngram, settings["short_min_words"])
    write_parquet_table(clean.to_arrow(), outputs["questions"])
    write_parquet_table(hits.to_arrow(), outputs["hits"])
    per_benchmark = {
        name: {
            "records": int(bench.filter(pl.col("benchmark") == name)["benchmark_id"].n_unique()),
            "hits": int((hits["benchmark"] == name).sum()),
        }
        for name in sorted(benchmarks)
    }
    by_field = {f: int((hits["field"] == f).sum()) for f in CHECKED_FIELDS}
    write_json(
        outputs["report"],
        {
            "ngram": ngram,
            "short_min_words": settings["short_min_words"],
            "samples": len(samples),
            "contaminated": len(hits),
            "per_benchmark": per_benchmark,
            "per_field": by_field,
            "benchmark_files": dict(sorted(benchmarks.items())),
        },
    )
    return write_counts(
        outputs["counts"],
        "decontam",
        len(samples),
        len(clean),
        {f"benchmark_{k}": v["hits"] for k, v in per_benchmark.items()},
        ngram=ngram,
        seconds=round(time.monotonic() - started, 2),
    )
