"""Dedup of the synthetic questions within and across levels (paper §1.2; method ours).

The paper states that questions were deduplicated but not how (its gaps list, item 7). Ours,
in this order, over the answered questions of all three levels:

1. unusable samples: an answer whose status is not in `usable` (config key
   dedup.answer_statuses, default only `ok`; truncated or empty answers are not worth
   training on) is dropped, reason `answer_<status>`; a question is never deduplicated
   against one we cannot train on;
2. exact duplicates: same normal form (synthllm.core.textkeys.normal_form), reason `exact`;
3. near duplicates: MinHash over hashed word n-grams (`ngram` words), LSH with `bands` bands
   of num_perm / bands rows; candidates of a bucket are verified by the fraction of equal
   signature entries (an unbiased estimate of their Jaccard similarity) >= `threshold`,
   reason `near`. Verified pairs are joined transitively (union-find).

Stable order: level, then question_id. Of every group of duplicates the first is kept and
every other records the kept one (`duplicate_of`) and its estimated Jaccard similarity to it;
an exact copy of a question that is itself a near duplicate is recorded as `near`, so
`duplicate_of` always names a kept question.

Output schema:
    dedup/questions.parquet   the kept samples, the answer stage's columns unchanged
                              (question_id, question, level, doc_ids, answer, final_answer, ...)
    dedup/dropped.parquet     question_id (string), level (int8), reason (string),
                              duplicate_of (string, null for unusable answers),
                              similarity (float32, 1.0 for exact, null for unusable)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from numba import njit, prange

from synthllm.core.files import StepLog, write_counts, write_parquet_table
from synthllm.core.textkeys import (
    HASH_SEED,
    gram_count,
    gram_hash,
    mix64,
    normal_form,
    normal_word_hashes,
)
from synthllm.errors import SynthllmError

CHUNK = 1 << 18  # texts split into words at a time
DROPPED_SCHEMA = {
    "question_id": pl.String,
    "level": pl.Int8,
    "reason": pl.String,
    "duplicate_of": pl.String,
    "similarity": pl.Float32,
}


class DedupError(SynthllmError):
    pass


@dataclass(frozen=True)
class NearDuplicates:
    """MinHash LSH settings (config key dedup.near)."""

    ngram: int = 3
    num_perm: int = 128
    bands: int = 16
    threshold: float = 0.8
    seed: int = 0

    def __post_init__(self):
        if self.num_perm % self.bands:
            raise DedupError(
                f"config key dedup.near: num_perm ({self.num_perm}) must be a "
                f"multiple of bands ({self.bands})"
            )
        if not 0.0 < self.threshold <= 1.0:
            raise DedupError(f"config key dedup.near.threshold: {self.threshold} not in (0, 1]")
        if self.ngram < 1:
            raise DedupError(f"config key dedup.near.ngram: {self.ngram} < 1")


@njit(cache=True, parallel=True)
def _signatures(offsets, hashes, n, a, b):
    """MinHash signatures: per permutation j, the minimum of (a_j * g + b_j) >> 32 over the
    text's n-gram hashes g (multiply-shift hashing, uint64 arithmetic wraps)."""
    m, p = len(offsets) - 1, len(a)
    sig = np.full((m, p), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    for i in prange(m):
        s, e = offsets[i], offsets[i + 1]
        for g in range(gram_count(e - s, n)):
            h = gram_hash(hashes, s + g, min(s + g + n, e))
            for j in range(p):
                v = np.uint32((a[j] * h + b[j]) >> np.uint64(32))
                if v < sig[i, j]:
                    sig[i, j] = v
    return sig


@njit(cache=True, parallel=True)
def _band_keys(sig, bands):
    m, rows = sig.shape[0], sig.shape[1] // bands
    keys = np.empty((bands, m), dtype=np.uint64)
    for i in prange(m):
        for band in range(bands):
            h = np.uint64(band + 1)
            for r in range(band * rows, (band + 1) * rows):
                h = mix64(h ^ np.uint64(sig[i, r]))
            keys[band, i] = h
    return keys


@njit(cache=True)
def _bucket_pairs(keys, order, alive):
    """Candidate pairs of one band: each member of a bucket with its first member and with its
    predecessor (members in stable order). Texts not alive (already dropped) take no part."""
    firsts, seconds = [], []
    start = 0
    m = len(order)
    while start < m:
        stop = start + 1
        while stop < m and keys[order[stop]] == keys[order[start]]:
            stop += 1
        first, prev = -1, -1
        for k in range(start, stop):
            i = order[k]
            if not alive[i]:
                continue
            if first >= 0:
                firsts.append(first)
                seconds.append(i)
                if prev != first:
                    firsts.append(prev)
                    seconds.append(i)
            else:
                first = i
            prev = i
        start = stop
    return np.array(firsts, dtype=np.int64), np.array(seconds, dtype=np.int64)


@njit(cache=True, parallel=True)
def _agreement(sig, firsts, seconds):
    out = np.empty(len(firsts), dtype=np.float32)
    p = sig.shape[1]
    for k in prange(len(firsts)):
        same = 0
        for j in range(p):
            same += sig[firsts[k], j] == sig[seconds[k], j]
        out[k] = same / p
    return out


@njit(cache=True)
def _union(parent, firsts, seconds):
    """Union-find whose root is always the smallest index: the first in stable order."""
    for k in range(len(firsts)):
        x, y = firsts[k], seconds[k]
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        while parent[y] != y:
            parent[y] = parent[parent[y]]
            y = parent[y]
        if x < y:
            parent[y] = x
        elif y < x:
            parent[x] = y
    for i in range(len(parent)):
        r = i
        while parent[r] != r:
            r = parent[r]
        parent[i] = r
    return parent


def fingerprints(texts: pl.Series, settings: NearDuplicates) -> tuple[np.ndarray, np.ndarray]:
    """(keys, signatures) of each text in one pass over its normal form: a 64-bit hash of the
    normal form (exact duplicates; among 10 M texts the chance of any collision is below
    3e-6) and its (num_perm,) uint32 MinHash signature. Texts are split into words a chunk at
    a time: a list column of every word of millions of texts would cost several times the text."""
    rng = np.random.default_rng(settings.seed)
    a = rng.integers(1, 2**63, size=settings.num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=settings.num_perm, dtype=np.uint64)
    keys = np.empty(len(texts), dtype=np.uint64)
    sig = np.empty((len(texts), settings.num_perm), dtype=np.uint32)
    for start in range(0, len(texts), CHUNK):
        normal = normal_form(texts.slice(start, CHUNK))
        keys[start : start + CHUNK] = normal.hash(seed=HASH_SEED).to_numpy()
        offsets, hashes = normal_word_hashes(normal)
        sig[start : start + CHUNK] = _signatures(offsets, hashes, settings.ngram, a, b)
    return keys, sig


def minhash_signatures(texts: pl.Series, settings: NearDuplicates) -> np.ndarray:
    return fingerprints(texts, settings)[1]


def near_duplicates(
    sig: np.ndarray, settings: NearDuplicates, alive: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(representative, similarity) per signature, texts in stable order. representative[i] ==
    i for a text that is kept; otherwise the index of the first text of its group, and
    similarity the estimated Jaccard similarity of the two. Texts with alive False are left
    alone."""
    m = len(sig)
    alive = np.ones(m, dtype=np.bool_) if alive is None else alive.astype(np.bool_)
    keys = _band_keys(sig, settings.bands)
    firsts, seconds = [], []
    for band in range(settings.bands):
        order = np.argsort(keys[band], kind="stable")
        f, s = _bucket_pairs(keys[band], order, alive)
        firsts.append(f)
        seconds.append(s)
    del keys
    pairs = np.unique(np.stack([np.concatenate(firsts), np.concatenate(seconds)]), axis=1)
    verified = _agreement(sig, pairs[0], pairs[1]) >= settings.threshold
    parent = _union(np.arange(m, dtype=np.int64), pairs[0][verified], pairs[1][verified])
    similarity = np.ones(m, dtype=np.float32)
    dup = np.flatnonzero(parent != np.arange(m))
    if len(dup):
        similarity[dup] = _agreement(sig, parent[dup], dup)
    return parent, similarity


def exact_duplicates(keys: np.ndarray) -> np.ndarray:
    """Per text, the index of the first text with the same key (itself when first)."""
    _, first_of_key, key_of_text = np.unique(keys, return_index=True, return_inverse=True)
    return first_of_key[key_of_text].astype(np.int64)


def stable_order(samples: pl.DataFrame) -> pl.DataFrame:
    return samples.sort(["level", "question_id"])


def dedup(
    samples: pl.DataFrame,
    settings: NearDuplicates,
    steps: StepLog | None = None,
    usable_statuses: tuple[str, ...] = ("ok",),
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, dropped) as described in the module docstring. `samples` needs question_id,
    level, question and status (of the answer)."""
    if samples["question_id"].n_unique() != len(samples):
        dups = (
            samples.filter(pl.col("question_id").is_duplicated())["question_id"].head(3).to_list()
        )
        raise DedupError(f"question ids are not unique (e.g. {dups}): answer shards overlap")
    steps = steps or StepLog("synthllm.stages.dedup")
    samples = stable_order(samples)
    ids = samples["question_id"].to_numpy()
    usable = samples["status"].is_in(list(usable_statuses)).to_numpy()
    reason = np.where(
        usable, None, "answer_" + samples["status"].fill_null("missing").to_numpy().astype(object)
    )
    duplicate_of = np.full(len(samples), None, dtype=object)
    similarity = np.full(len(samples), np.nan, dtype=np.float32)

    keys, sig = fingerprints(samples["question"], settings)
    steps("fingerprints")
    # exact: among usable samples only, so the kept copy is always a usable one
    usable_idx = np.flatnonzero(usable)
    first = exact_duplicates(keys[usable_idx])
    exact = first != np.arange(len(usable_idx))
    hit = usable_idx[exact]
    reason[hit] = "exact"
    duplicate_of[hit] = ids[usable_idx[first[exact]]]
    similarity[hit] = 1.0
    steps("exact")

    alive = reason == None  # noqa: E711 (elementwise on an object array)
    rep, sim = near_duplicates(sig, settings, alive=alive.astype(np.bool_))
    near = np.flatnonzero(alive & (rep != np.arange(len(samples))))
    reason[near] = "near"
    duplicate_of[near] = ids[rep[near]]
    similarity[near] = sim[near]
    # an exact copy whose first occurrence was just dropped as a near duplicate is a near
    # duplicate of that one's kept question (same normal form, so the same signature)
    first_of_hit = usable_idx[first[exact]]
    moved = rep[first_of_hit] != first_of_hit
    reason[hit[moved]] = "near"
    duplicate_of[hit[moved]] = ids[rep[first_of_hit[moved]]]
    similarity[hit[moved]] = sim[first_of_hit[moved]]
    steps("near")

    dropped_mask = reason != None  # noqa: E711
    dropped = pl.DataFrame(
        {
            "question_id": ids[dropped_mask],
            "level": samples["level"].to_numpy()[dropped_mask],
            "reason": reason[dropped_mask].tolist(),
            "duplicate_of": duplicate_of[dropped_mask].tolist(),
            "similarity": similarity[dropped_mask],
        },
        schema=DROPPED_SCHEMA,
    )
    dropped = dropped.with_columns(pl.col("similarity").fill_nan(None))
    return samples.filter(pl.Series(~dropped_mask)), dropped


DEDUP_COLUMNS = ["question_id", "level", "question", "status"]


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Dedup of the answer shards (inputs answers) into outputs questions, dropped, counts.
    Settings: config key dedup (near, answer_statuses) (rules/07_dedup.smk).

    Dedup reads only the columns it decides on; the kept rows, every column, are then
    streamed from the shards: at paper scale the answers alone are gigabytes."""
    near = NearDuplicates(**settings["near"])
    usable_statuses = tuple(settings["answer_statuses"])
    steps = StepLog("synthllm.stages.dedup")
    shards = pl.scan_parquet(inputs["answers"])
    counted_in = shards.group_by("level").len().collect()
    records_in = {int(lvl): int(n) for lvl, n in counted_in.iter_rows()}
    kept, dropped = dedup(shards.select(DEDUP_COLUMNS).collect(), near, steps, usable_statuses)
    kept_ids = kept.select("question_id")
    del kept
    steps("dedup")
    rows = (
        shards.join(kept_ids.lazy(), on="question_id", how="semi")
        .sort(["level", "question_id"])
        .collect()
    )
    write_parquet_table(rows.to_arrow(), outputs["questions"])
    write_parquet_table(dropped.to_arrow(), outputs["dropped"])
    steps("write")
    by_reason = dropped.group_by("reason").len().sort("reason")
    per_level = {
        f"level{lvl}": {"in": records_in.get(lvl, 0), "out": int((rows["level"] == lvl).sum())}
        for lvl in (1, 2, 3)
    }
    return write_counts(
        outputs["counts"],
        "dedup",
        sum(records_in.values()),
        len(rows),
        dict(zip(by_reason["reason"], by_reason["len"].to_list())),
        per_level=per_level,
        settings=asdict(near),
        answer_statuses=list(usable_statuses),
        seconds=steps.seconds(),
        steps=steps.steps,
    )
