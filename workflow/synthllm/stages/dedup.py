"""Dedup of the synthetic questions within and across levels (paper §1.2; method ours).

The paper states that questions were deduplicated but not how (its gaps list, item 7). Ours,
in this order, over the answered questions of all three levels:

1. unusable samples: an answer whose status is not in `usable` (config key
   dedup.answer_statuses, default only `ok`; truncated or empty answers are not worth
   training on) is dropped, reason `answer_<status>`; a question is never deduplicated
   against one we cannot train on;
2. exact duplicates: same normal form (synthllm.core.textkeys.normal_form), reason `exact`,
   whatever their answers;
3. near duplicates: two questions are one problem only when they are near-identical *and*
   either their final answers agree or the tokens in which they differ carry no mathematical
   content. Near-identical: MinHash over hashed n-grams (`ngram` tokens) of the symbol-aware
   tokens of synthllm.core.dedup_tokens (signs, operators, relations and brackets count;
   formatting does not), LSH with `bands` bands of num_perm / bands rows, candidates of a
   bucket verified by the fraction of equal signature entries (an unbiased estimate of their
   Jaccard similarity) >= `threshold`. Answers agree: the final answers (the answer stage's
   `final_answer`, else the answer's last `\\boxed{}`), normalised as the evaluation does,
   are equal by the evaluation's `math_equal` without its percentage leniency (either way
   round, each within `answer_timeout_s`; over it, or no answer, is not equal). No
   mathematical content: every differing token is a function word
   (synthllm.core.dedup_tokens.content_free_difference).
   Why not similarity alone: Level-2 and Level-3 write templated variants that change one
   value, sign, operator or word (`f(3)` to `f(-7)`, `>` to `<`, `area` to `perimeter`);
   they keep most n-grams but are different problems, and on real competition problems most
   near-identical pairs had different answers. Accepted pairs are joined transitively
   (union-find). A dropped question's reason is `near` when its answer agrees with the kept
   question's, else `near_wording`.

Stable order: level, then question_id. Of every group of duplicates the first is kept and
every other records the kept one (`duplicate_of`) and its estimated Jaccard similarity to it;
an exact copy of a question that is itself a near duplicate takes that one's reason, so
`duplicate_of` always names a kept question.

Output schema:
    dedup/questions.parquet   the kept samples, the answer stage's columns unchanged
                              (question_id, question, level, doc_ids, answer, final_answer, ...)
    dedup/dropped.parquet     question_id (string), level (int8), reason (string),
                              duplicate_of (string, null for unusable answers),
                              similarity (float32, 1.0 for exact, null for unusable)
    dedup/report.json         per reason (`exact`, `near`, `near_wording`, and `distinct`: a
                              near-identical pair kept as two problems) its count and a few
                              example pairs: both questions, ids and answers, similarity
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from numba import njit, prange

from synthllm.core.answer_extraction import extract_answer, normalize_gold
from synthllm.core.dedup_tokens import (
    content_free_difference,
    dedup_tokens,
    normal_token_hashes,
)
from synthllm.core.files import StepLog, write_counts, write_json, write_parquet_table
from synthllm.core.grading import GradeTimeout, _time_limit, math_equal
from synthllm.core.textkeys import HASH_SEED, gram_count, gram_hash, mix64, normal_form
from synthllm.errors import SynthllmError

CHUNK = 1 << 18  # texts split into tokens at a time
REPORT_EXAMPLES = 5  # example pairs per reason in dedup/report.json
INTEGER = re.compile(r"-?\d+")
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
    """Near-duplicate settings (config key dedup.near): MinHash LSH and the answer check."""

    ngram: int = 3
    num_perm: int = 128
    bands: int = 16
    threshold: float = 0.8
    seed: int = 0
    answer_timeout_s: float = 1.0

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
        if self.answer_timeout_s <= 0:
            raise DedupError(
                f"config key dedup.near.answer_timeout_s: {self.answer_timeout_s} <= 0"
            )


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
    3e-6) and the (num_perm,) uint32 MinHash signature of its dedup tokens. Texts are split
    into tokens a chunk at a time: a list column of every token of millions of texts would
    cost several times the text."""
    rng = np.random.default_rng(settings.seed)
    a = rng.integers(1, 2**63, size=settings.num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=settings.num_perm, dtype=np.uint64)
    keys = np.empty(len(texts), dtype=np.uint64)
    sig = np.empty((len(texts), settings.num_perm), dtype=np.uint32)
    for start in range(0, len(texts), CHUNK):
        normal = normal_form(texts.slice(start, CHUNK))
        keys[start : start + CHUNK] = normal.hash(seed=HASH_SEED).to_numpy()
        offsets, hashes = normal_token_hashes(normal)
        sig[start : start + CHUNK] = _signatures(offsets, hashes, settings.ngram, a, b)
    return keys, sig


def minhash_signatures(texts: pl.Series, settings: NearDuplicates) -> np.ndarray:
    return fingerprints(texts, settings)[1]


def similar_pairs(
    sig: np.ndarray, settings: NearDuplicates, alive: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(firsts, seconds, similarity): the LSH candidate pairs (first < second in stable order)
    whose estimated Jaccard similarity is >= threshold. Texts with alive False take no part."""
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
    similarity = _agreement(sig, pairs[0], pairs[1])
    verified = similarity >= settings.threshold
    return pairs[0][verified], pairs[1][verified], similarity[verified]


def near_duplicates(
    sig: np.ndarray,
    settings: NearDuplicates,
    alive: np.ndarray | None = None,
    accept=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(representative, similarity, rejected): per signature, texts in stable order,
    representative[i] == i for a text that is kept; otherwise the index of the first text of
    its group, and similarity the estimated Jaccard similarity of the two. `accept(firsts,
    seconds)` (a boolean per similar pair; default all) says which similar pairs are one
    problem; rejected is (firsts, seconds, similarity) of those that are not. Texts with
    alive False are left alone."""
    m = len(sig)
    firsts, seconds, pair_similarity = similar_pairs(sig, settings, alive)
    ok = np.ones(len(firsts), dtype=np.bool_) if accept is None else accept(firsts, seconds)
    parent = _union(np.arange(m, dtype=np.int64), firsts[ok], seconds[ok])
    similarity = np.ones(m, dtype=np.float32)
    dup = np.flatnonzero(parent != np.arange(m))
    if len(dup):
        similarity[dup] = _agreement(sig, parent[dup], dup)
    return parent, similarity, (firsts[~ok], seconds[~ok], pair_similarity[~ok])


class SameProblem:
    """The answer and wording checks of near-identical pairs (module docstring, step 3), on the
    rows of `samples` by index. Answers are computed only for the texts of similar pairs, once
    each (a few percent of the texts; grading is Python), tokens only for the pairs whose
    answers disagree, a chunk at a time: token lists of millions of texts would cost
    gigabytes of Python objects."""

    def __init__(self, samples: pl.DataFrame, timeout_s: float):
        self.samples = samples
        self.timeout_s = timeout_s
        self.answer: dict[int, str | None] = {}
        self.normal: dict[str, str] = {}  # raw final answer -> normalised: answers repeat
        self.agree: dict[tuple[int, int], bool] = {}
        self.graded = False

    def prepare(self, idx: np.ndarray) -> None:
        idx = np.unique(idx)
        idx = idx[[i not in self.answer for i in idx.tolist()]]
        if not len(idx):
            return
        rows = self.samples[idx]
        if "final_answer" in rows.columns:
            answers = [self.normalise(a) if a else None for a in rows["final_answer"].to_list()]
        else:
            answers = [extract_answer(a or "", "math") or None for a in rows["answer"].to_list()]
        self.answer.update(zip(idx.tolist(), answers))

    def normalise(self, raw: str) -> str:
        """normalize_gold, which leaves an integer as it is; it costs about a millisecond
        (its unit words are a few hundred regular expressions)."""
        if INTEGER.fullmatch(raw):
            return raw
        if raw not in self.normal:
            self.normal[raw] = normalize_gold(raw, "math")
        return self.normal[raw]

    def answers_agree(self, i: int, j: int) -> bool:
        if (i, j) not in self.agree:
            a, b = self.answer[i], self.answer[j]
            if a is None or b is None:
                same = False
            elif a == b:
                same = True
            else:
                if not self.graded:
                    # the grader imports sympy lazily; an import cut short by its time limit
                    # would leave sympy half-loaded
                    import latex2sympy2_extended  # noqa: F401
                    import sympy  # noqa: F401

                    self.graded = True
                same = self.equal(a, b) or self.equal(b, a)
            self.agree[i, j] = same
        return self.agree[i, j]

    def equal(self, a: str, b: str) -> bool:
        """The evaluation's math_equal within the time limit, as the harness grades, but
        without its percentage leniency (`3` equals `300` there: a prediction may drop the %
        of a reference answer; two answers of ours are two values)."""
        try:
            with _time_limit(self.timeout_s):
                return math_equal(a, b, include_percentage=False)
        except GradeTimeout:
            return False

    def wording_only(self, firsts: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        out = np.empty(len(firsts), dtype=np.bool_)
        for start in range(0, len(firsts), CHUNK):
            f, s = firsts[start : start + CHUNK], seconds[start : start + CHUNK]
            idx, pos = np.unique(np.concatenate([f, s]), return_inverse=True)
            tokens = dedup_tokens(self.samples["question"].gather(idx)).to_list()
            out[start : start + len(f)] = [
                content_free_difference(tokens[a], tokens[b])
                for a, b in zip(pos[: len(f)].tolist(), pos[len(f) :].tolist())
            ]
        return out

    def __call__(self, firsts: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        self.prepare(np.concatenate([firsts, seconds]))
        same = np.array(
            [self.answers_agree(i, j) for i, j in zip(firsts.tolist(), seconds.tolist())],
            dtype=np.bool_,
        )
        rest = np.flatnonzero(~same)
        same[rest] = self.wording_only(firsts[rest], seconds[rest])
        return same


def exact_duplicates(keys: np.ndarray) -> np.ndarray:
    """Per text, the index of the first text with the same key (itself when first)."""
    _, first_of_key, key_of_text = np.unique(keys, return_index=True, return_inverse=True)
    return first_of_key[key_of_text].astype(np.int64)


def stable_order(samples: pl.DataFrame) -> pl.DataFrame:
    return samples.sort(["level", "question_id"])


def spread(similarity: np.ndarray, k: int) -> np.ndarray:
    """Up to k positions whose similarities span the range, lowest and highest included: the
    examples of a report, borderline ones among them."""
    if len(similarity) <= k:
        return np.argsort(similarity, kind="stable")
    order = np.argsort(similarity, kind="stable")
    return order[np.unique(np.linspace(0, len(order) - 1, k).round().astype(np.int64))]


def examples(
    samples: pl.DataFrame, judge: SameProblem, kept: np.ndarray, other: np.ndarray, sim
) -> list[dict]:
    """Report entries of pairs (kept[k], other[k]): ids, questions, final answers (normalised
    as compared), similarity."""
    pick = spread(np.asarray(sim), REPORT_EXAMPLES)
    kept, other, sim = kept[pick], other[pick], np.asarray(sim)[pick]
    judge.prepare(np.concatenate([kept, other]))
    ids, questions = samples["question_id"], samples["question"]
    return [
        {
            "question_id": [ids[int(i)], ids[int(j)]],
            "question": [questions[int(i)], questions[int(j)]],
            "answer": [judge.answer[int(i)], judge.answer[int(j)]],
            "similarity": round(float(x), 4),
        }
        for i, j, x in zip(kept, other, sim)
    ]


def dedup(
    samples: pl.DataFrame,
    settings: NearDuplicates,
    steps: StepLog | None = None,
    usable_statuses: tuple[str, ...] = ("ok",),
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """(kept, dropped, report) as described in the module docstring. `samples` needs
    question_id, level, question, status (of the answer) and final_answer or answer."""
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
    kept_of = np.full(len(samples), -1, dtype=np.int64)  # index of duplicate_of
    similarity = np.full(len(samples), np.nan, dtype=np.float32)

    keys, sig = fingerprints(samples["question"], settings)
    steps("fingerprints")
    # exact: among usable samples only, so the kept copy is always a usable one
    usable_idx = np.flatnonzero(usable)
    first = exact_duplicates(keys[usable_idx])
    exact = first != np.arange(len(usable_idx))
    hit = usable_idx[exact]
    reason[hit] = "exact"
    kept_of[hit] = usable_idx[first[exact]]
    similarity[hit] = 1.0
    steps("exact")

    alive = reason == None  # noqa: E711 (elementwise on an object array)
    judge = SameProblem(samples, settings.answer_timeout_s)
    rep, sim, distinct = near_duplicates(sig, settings, alive=alive.astype(np.bool_), accept=judge)
    near = np.flatnonzero(alive & (rep != np.arange(len(samples))))
    judge.prepare(np.concatenate([near, rep[near]]))
    agree = [judge.answers_agree(int(r), int(i)) for r, i in zip(rep[near], near)]
    reason[near] = np.where(np.array(agree, dtype=np.bool_), "near", "near_wording")
    kept_of[near] = rep[near]
    similarity[near] = sim[near]
    # an exact copy whose first occurrence was just dropped as a near duplicate is a near
    # duplicate of that one's kept question (same normal form, so the same signature)
    first_of_hit = usable_idx[first[exact]]
    moved = rep[first_of_hit] != first_of_hit
    reason[hit[moved]] = reason[first_of_hit[moved]]
    kept_of[hit[moved]] = rep[first_of_hit[moved]]
    similarity[hit[moved]] = sim[first_of_hit[moved]]
    steps("near")

    report = {}
    for name in ("exact", "near", "near_wording"):
        d = np.flatnonzero(reason == name)
        report[name] = {
            "count": len(d),
            "examples": examples(samples, judge, kept_of[d], d, similarity[d]),
        }
    report["distinct"] = {
        "count": len(distinct[0]),
        "examples": examples(samples, judge, *distinct),
    }
    steps("report")

    dropped_mask = reason != None  # noqa: E711
    duplicate_of = np.where(kept_of >= 0, ids[np.maximum(kept_of, 0)], None)
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
    return samples.filter(pl.Series(~dropped_mask)), dropped, report


DEDUP_COLUMNS = ["question_id", "level", "question", "status"]
SCHEMA_VERSION = 1  # of dedup/report.json


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Dedup of the answer shards (inputs answers) into outputs questions, dropped, report,
    counts. Settings: config key dedup (near, answer_statuses) (rules/07_dedup.smk).

    Dedup reads only the columns it decides on (of the answer, the short `final_answer`
    where the shards have it); the kept rows, every column, are then streamed from the
    shards: at paper scale the answers alone are gigabytes."""
    near = NearDuplicates(**settings["near"])
    usable_statuses = tuple(settings["answer_statuses"])
    steps = StepLog("synthllm.stages.dedup")
    shards = pl.scan_parquet(inputs["answers"])
    counted_in = shards.group_by("level").len().collect()
    records_in = {int(lvl): int(n) for lvl, n in counted_in.iter_rows()}
    answer = "final_answer" if "final_answer" in shards.collect_schema().names() else "answer"
    kept, dropped, report = dedup(
        shards.select([*DEDUP_COLUMNS, answer]).collect(), near, steps, usable_statuses
    )
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
    write_json(
        outputs["report"],
        {"schema": SCHEMA_VERSION, "settings": asdict(near), "reasons": report},
    )
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
        near_pairs_distinct=report["distinct"]["count"],
        seconds=steps.seconds(),
        steps=steps.steps,
    )
