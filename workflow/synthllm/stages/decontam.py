"""Decontamination against the evaluation benchmarks (paper §1.2; method ours).

A synthetic sample is contaminated when its question or its answer reproduces most of one
benchmark record's question or reference solution, not when it shares a phrase with it:
1. coverage: the word n-grams (decontam.ngram, default 8) the sample shares with the
   benchmark text cover at least decontam.min_share (0.7) of that text's distinctive words,
   each word weighted by its rarity among the benchmark records (log of records over the
   records holding it), so that "the letters of the word" of a template counts less than
   the word ELLIPSE that makes the problem;
2. numbers: the sample holds at least decontam.min_number_share (0.8) of the benchmark
   text's distinct numbers (1 when it has none): MATH holds templates that differ only in
   their numbers ("we win $2 ... lose $1" and "$3 ... $2"), other problems with another
   answer.
Texts are compared in the normal form of synthllm.core.textkeys (NFKC, case-folded, words
= runs of letters and digits).

Coverage, not a single collision, is the rule of the Llama 2 contamination analysis (a test
sample is "dirty" when most of its tokens lie in n-grams also found in the training data).
The single 13-gram of GPT-3's overlap filter flags, on competition math, phrases every
solution uses ("the sum of an arithmetic series is equal to the average of the ..."): one
half of the MATH test set against the other half and the five other benchmarks loses
9.9 % of its problems to it. With coverage the n-gram can be short: a lightly reworded
copy keeps fewer of its 13-grams than of its 8-grams. At the defaults the table reads:
MATH half 1.8 % flagged, GSM8K train and CollegeMath 0 %; recall 1.0 on verbatim, embedded
and short copies, 0.96 on reworded ones (0.16 on reworded problems shorter than
decontam.short_words, below). 10 of MATH's 44 hits are near-verbatim duplicates within its
test set; most others are sibling problems of one template.
benchmarks/decontam_quality.py measures the rule on real text (false positives on disjoint
sets, recall on planted copies: verbatim, lightly edited, embedded in a longer question or
answer, short problems) over a grid of settings; the defaults are chosen from its table.
What it cannot separate, a reworded copy from a sibling template that changes a word or a
formula, sets the trade-off between the two.

What is no evidence of copying:
- boilerplate: an n-gram found in more than decontam.max_records (10) distinct benchmark
  records is a phrase of the genre, not of one problem (GPT-3 left out 13-grams found in
  more than 10 training documents for the same reason). Such n-grams neither match nor
  count: the share is taken over the words that a text's remaining n-grams cover (its
  distinctive words), so a verbatim copy covers all of a text whatever its boilerplate;
- drawing code: `[asy]...[/asy]` and `\\begin{asy}` / `\\begin{tikzpicture}` blocks are
  cut from every text before it is split into words (MATH's Asymptote preambles repeat in
  hundreds of problems, and a drawing is not a problem's wording);
- n-grams of fewer than 3 distinct words (number tables, a looping `1 1 1 ...` answer).

Short problems: a benchmark text of fewer than decontam.short_words (13) words, or than n,
counts only as a whole, one gram of itself: one 8-gram would otherwise cover most of "What is
$\\frac{1}{2} + \\frac{1}{3}$?" from inside any solution that adds those fractions. A sample
containing all its words as a contiguous run (a short benchmark question copied into a
longer one) covers it, when it has at least decontam.short_min_words words (6); a shorter
one counts only when the sample's question or answer is that text. (So a reworded copy of
a short problem is not caught: benchmarks/decontam_quality.py shows what that costs.)

Cost: the index holds every distinctive benchmark n-gram once per place it occurs; a
sample's n-grams are looked up by binary search (numba, in parallel), and only the few that
match are grouped per (sample, benchmark text) to measure the share, so the stage costs
about what hashing the samples' words costs.

Output schema:
    decontam/questions.parquet  the clean samples, columns of dedup/questions.parquet
    decontam/hits.parquet       one row per contaminated sample:
        question_id (string), level (int8), field (string: question | answer, the first
        that hit), benchmark (string), benchmark_id (string), benchmark_field (string:
        question | solution), share (float: of the benchmark text's distinctive words
        covered), sample_share (float: of the sample text's words covered), matched
        (string: the sample's longest run of matched words)
    decontam/report.json        counts per benchmark and field, the settings, and per
                                benchmark example hits (decontam.report_examples) with both
                                texts side by side and the shares, to judge the rule by eye
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
# drawing code, cut up to its end tag or, in a truncated text, to the end
DRAWING = (
    r"(?is)\[asy\].*?(?:\[/asy\]|\z)"
    r"|\\begin\{asy\}.*?(?:\\end\{asy\}|\z)"
    r"|\\begin\{tikzpicture\}.*?(?:\\end\{tikzpicture\}|\z)"
)
HIT_SCHEMA = {
    "question_id": pl.String,
    "level": pl.Int8,
    "field": pl.String,
    "benchmark": pl.String,
    "benchmark_id": pl.String,
    "benchmark_field": pl.String,
    "share": pl.Float32,
    "sample_share": pl.Float32,
    "matched": pl.String,
}
CHECKED_FIELDS = ("question", "answer")
RULE_KEYS = (
    "ngram",
    "min_share",
    "min_number_share",
    "max_records",
    "short_words",
    "short_min_words",
)
EXAMPLE_CHARS = 1200  # of each text in the report's examples: enough to see what was copied


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


def without_drawing(texts: pl.Series) -> pl.Series:
    return texts.fill_null("").str.replace_all(DRAWING, " ")


def text_words(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """word_hashes of the texts with their drawing code cut."""
    return word_hashes(without_drawing(texts))


def record_counts(grams: np.ndarray, record: np.ndarray) -> np.ndarray:
    """For each gram, the number of distinct records holding it."""
    if len(grams) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((record, grams))
    g, r = grams[order], record[order]
    new_gram = np.ones(len(g), dtype=bool)
    new_gram[1:] = g[1:] != g[:-1]
    new_pair = new_gram.copy()
    new_pair[1:] |= r[1:] != r[:-1]
    gram_id = np.cumsum(new_gram) - 1
    per_gram = np.bincount(gram_id, weights=new_pair).astype(np.int64)
    counts = np.empty(len(g), dtype=np.int64)
    counts[order] = per_gram[gram_id]
    return counts


class GramIndex:
    """The distinctive benchmark n-grams, sorted, each with the benchmark text it came from
    and its word position there, and per benchmark text the number of words they cover.
    Left out: grams of fewer than `min_distinct` distinct words (a degenerate model output
    that loops on one token would otherwise "match" a number table) and grams found in more
    than `max_records` distinct records (`record`: one id per benchmark record, shared by
    its question and solution)."""

    def __init__(
        self,
        texts: pl.Series,
        record: np.ndarray,
        n: int,
        short_words: int,
        short_min_words: int,
        max_records: int,
        min_distinct: int = MIN_DISTINCT_WORDS,
    ):
        offsets, hashes = text_words(texts)
        self.words = np.diff(offsets)
        self.offsets = offsets
        # a word's weight is its rarity among the records (inverse document frequency), so
        # that "the letters of the word" of a template counts less than the word ELLIPSE
        # that makes the problem
        word_record = np.repeat(record, self.words)
        weight = np.log(max(len(np.unique(record)), 2) / record_counts(hashes, word_record))
        self.cum_weight = np.concatenate([[0.0], np.cumsum(weight)])
        # short texts (fewer words than short_words or n) count as a whole: one n-gram of a
        # ten-word problem ("frac 1 2 frac 1 3" of "What is 1/2 + 1/3?") would cover most
        # of it from inside any solution that adds those fractions
        short_below = max(short_words, n)
        is_short = self.words < short_below
        whole = is_short & (self.words >= short_min_words)
        # texts below short_min_words only verbatim: the one gram of a sample that short
        verbatim_only = self.words < min(short_min_words, n)
        # every gram length to look for: n, and each length of a short benchmark text
        self.index = {}
        starts, stops, owners = [], [], []
        for k in sorted({n, *self.words[whole].tolist()}):
            gram_offsets, grams = ngram_hashes(offsets, hashes, k)
            owner = np.repeat(np.arange(len(texts), dtype=np.int64), np.diff(gram_offsets))
            pos = np.arange(len(grams), dtype=np.int64) - gram_offsets[owner]
            keep = gram_distinct_words(offsets, hashes, k, gram_offsets) >= min(min_distinct, k)
            keep &= record_counts(grams, record[owner]) <= max_records
            # the whole of a short text; its k-grams of other texts were counted above
            indexed = whole & (self.words == k)
            if k == n:
                indexed |= ~is_short | verbatim_only
            keep &= indexed[owner]
            order = np.argsort(grams[keep], kind="stable")
            self.index[k] = tuple(a[keep][order] for a in (grams, owner, pos))
            starts.append(pos[keep])
            stops.append(np.minimum(pos[keep] + k, self.words[owner[keep]]))
            owners.append(owner[keep])
        owners, starts, stops = (np.concatenate(a) for a in (owners, starts, stops))
        order = np.lexsort((starts, owners))
        self.distinctive = _covered_weight(
            owners[order], starts[order], stops[order], offsets, self.cum_weight
        )

    def best_matches(self, texts: pl.Series) -> dict[str, np.ndarray]:
        """Per text: owner (the benchmark text it covers the largest share of, -1 when it
        matches none), share (of that text's distinctive words), sample_share (of the
        text's own words) and the start and length of its longest matched run of words."""
        parts = []
        for start in range(0, len(texts), CHUNK):
            offsets, hashes = text_words(texts.slice(start, CHUNK))
            found = []
            for k, (index, owner, pos) in self.index.items():
                gram_offsets, grams = ngram_hashes(offsets, hashes, k)
                counts = _match_counts(gram_offsets, grams, index)
                match_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
                np.cumsum(counts, out=match_offsets[1:])
                text, spos, idx = _fill_matches(gram_offsets, grams, index, match_offsets)
                found.append((text, spos, owner[idx], pos[idx], np.full(len(idx), k)))
            text, spos, owner, bpos, k = (np.concatenate(a) for a in zip(*found))
            order = np.lexsort((bpos, owner, text))
            text, spos, owner, bpos, k = (a[order] for a in (text, spos, owner, bpos, k))
            groups = np.flatnonzero(
                (np.diff(text, prepend=-1) != 0) | (np.diff(owner, prepend=-1) != 0)
            )
            group_text, group_owner = text[groups], owner[groups]
            words = np.diff(offsets)
            covered_b, covered_s, run_start, run_len = _group_coverage(
                groups,
                spos,
                bpos,
                k,
                self.offsets[group_owner],
                self.words[group_owner],
                self.cum_weight,
                words[group_text],
            )
            distinctive = self.distinctive[group_owner]
            share = np.where(distinctive > 0, covered_b / np.maximum(distinctive, 1e-12), 0.0)
            share = np.minimum(share, 1.0)
            best = _best_per_text(group_text, share, len(words))
            result = {
                "owner": np.full(len(words), -1, dtype=np.int64),
                "share": np.zeros(len(words)),
                "sample_share": np.zeros(len(words)),
                "run_start": np.zeros(len(words), dtype=np.int64),
                "run_len": np.zeros(len(words), dtype=np.int64),
            }
            hit = best >= 0
            g = best[hit]
            result["owner"][hit] = group_owner[g]
            result["share"][hit] = share[g]
            result["sample_share"][hit] = covered_s[g] / np.maximum(words[hit], 1)
            result["run_start"][hit] = run_start[g]
            result["run_len"][hit] = run_len[g]
            parts.append(result)
        if not parts:
            return {
                "owner": np.empty(0, np.int64),
                "share": np.empty(0),
                "sample_share": np.empty(0),
                "run_start": np.empty(0, np.int64),
                "run_len": np.empty(0, np.int64),
            }
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


@njit(cache=True)
def _covered_weight(owner, starts, stops, offsets, cum_weight):
    """Per text, the weight of the words inside the union of its word intervals
    [starts, stops), sorted by (owner, start)."""
    covered = np.zeros(len(offsets) - 1)
    end = -1
    for i in range(len(owner)):
        if i > 0 and owner[i] != owner[i - 1]:
            end = -1
        if stops[i] > end:
            base = offsets[owner[i]]
            covered[owner[i]] += (
                cum_weight[base + stops[i]] - cum_weight[base + max(starts[i], end)]
            )
            end = stops[i]
    return covered


@njit(cache=True, parallel=True)
def _match_counts(gram_offsets, grams, index):
    m = len(gram_offsets) - 1
    counts = np.zeros(m, dtype=np.int64)
    for i in prange(m):
        c = 0
        for g in range(gram_offsets[i], gram_offsets[i + 1]):
            j = np.searchsorted(index, grams[g])
            while j < len(index) and index[j] == grams[g]:
                c += 1
                j += 1
        counts[i] = c
    return counts


@njit(cache=True, parallel=True)
def _fill_matches(gram_offsets, grams, index, match_offsets):
    """(text, position of the gram in the text, index entry) of every matching gram."""
    total = match_offsets[-1]
    text = np.empty(total, dtype=np.int64)
    spos = np.empty(total, dtype=np.int64)
    entry = np.empty(total, dtype=np.int64)
    for i in prange(len(gram_offsets) - 1):
        out = match_offsets[i]
        for g in range(gram_offsets[i], gram_offsets[i + 1]):
            j = np.searchsorted(index, grams[g])
            while j < len(index) and index[j] == grams[g]:
                text[out], spos[out], entry[out] = i, g - gram_offsets[i], j
                out += 1
                j += 1
    return text, spos, entry


@njit(cache=True, parallel=True)
def _group_coverage(groups, spos, bpos, k, bench_start, bench_words, cum_weight, sample_words):
    """Per (text, benchmark text) group of matches sorted by benchmark position: the weight of
    the benchmark text's words and the number of the sample's words covered by the matched
    grams, and the sample's longest covered run (start, length)."""
    n_groups = len(groups)
    covered_b = np.zeros(n_groups)
    covered_s = np.zeros(n_groups, dtype=np.int64)
    run_start = np.zeros(n_groups, dtype=np.int64)
    run_len = np.zeros(n_groups, dtype=np.int64)
    for g in prange(n_groups):
        lo = groups[g]
        hi = groups[g + 1] if g + 1 < n_groups else len(spos)
        end = -1
        for m in range(lo, hi):
            e = min(bpos[m] + k[m], bench_words[g])
            if e > end:
                base = bench_start[g]
                covered_b[g] += cum_weight[base + e] - cum_weight[base + max(bpos[m], end)]
                end = e
        order = np.argsort(spos[lo:hi]) + lo
        end = -1
        start = 0
        for m in order:
            s, e = spos[m], min(spos[m] + k[m], sample_words[g])
            if s > end:
                start = s
            if e > end:
                covered_s[g] += e - max(s, end)
                end = e
                if end - start > run_len[g]:
                    run_start[g], run_len[g] = start, end - start
    return covered_b, covered_s, run_start, run_len


@njit(cache=True)
def _best_per_text(group_text, share, n_texts):
    """Per text, its group of the largest share (the first on ties), -1 when none."""
    best = np.full(n_texts, -1, dtype=np.int64)
    for g in range(len(group_text)):
        t = group_text[g]
        if best[t] < 0 or share[g] > share[best[t]]:
            best[t] = g
    return best


def matched_words(texts: pl.Series, positions: np.ndarray, lengths: np.ndarray) -> list[str]:
    words = normal_form(without_drawing(texts)).str.extract_all(WORD).to_list()
    return [" ".join(w[p : p + k]) for w, p, k in zip(words, positions, lengths)]


def bench_index(bench: pl.DataFrame, rule: dict) -> GramIndex:
    """The GramIndex of benchmark_texts' table under the settings of `rule` (the
    decontam config keys), a record being (benchmark, benchmark_id)."""
    if rule["short_min_words"] > rule["ngram"]:
        raise DecontamError(
            f"config key decontam.short_min_words: {rule['short_min_words']} > decontam.ngram "
            f"{rule['ngram']} (a text between the two would be matched neither way)"
        )
    record = (
        bench.select(pl.struct("benchmark", "benchmark_id").rank("dense"))
        .to_series()
        .to_numpy()
        .astype(np.int64)
    )
    return GramIndex(
        bench["text"],
        record,
        rule["ngram"],
        rule["short_words"],
        rule["short_min_words"],
        rule["max_records"],
    )


def field_matches(samples: pl.DataFrame, index: GramIndex) -> dict[str, dict[str, np.ndarray]]:
    """GramIndex.best_matches of each checked field."""
    return {field: index.best_matches(samples[field]) for field in CHECKED_FIELDS}


def numbers(texts: pl.Series) -> pl.Series:
    """The distinct numbers (words of digits only) of each text, drawing code cut."""
    words = normal_form(without_drawing(texts)).str.extract_all(WORD)
    return words.list.eval(
        pl.element().filter(pl.element().str.contains(r"^\p{N}+$"))
    ).list.unique()


def number_shares(sample_texts: pl.Series, bench_texts: pl.Series) -> np.ndarray:
    """Per pair, the share of the benchmark text's distinct numbers found in the sample text
    (1 when it has none): a template with other numbers is another problem."""
    b, s = numbers(bench_texts), numbers(sample_texts)
    common = pl.DataFrame({"b": b, "s": s}).select(
        pl.col("b").list.set_intersection("s").list.len(), pl.col("b").list.len().alias("n")
    )
    n = common["n"].to_numpy()
    return np.where(n > 0, common["b"].to_numpy() / np.maximum(n, 1), 1.0)


def split_hits(
    samples: pl.DataFrame,
    bench: pl.DataFrame,
    matches: dict,
    rule: dict,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(clean, hits): the samples whose question or answer covers at least rule min_share of
    a benchmark text's distinctive words and holds at least min_number_share of its
    numbers, the question checked first."""
    min_share, min_number_share = rule["min_share"], rule["min_number_share"]
    hit_rows = []
    contaminated = np.zeros(len(samples), dtype=bool)
    for field in CHECKED_FIELDS:
        found = matches[field]
        new = np.flatnonzero((found["owner"] >= 0) & (found["share"] >= min_share) & ~contaminated)
        if len(new) and min_number_share > 0:
            held = number_shares(
                samples[field].gather(new), bench["text"].gather(found["owner"][new])
            )
            new = new[held >= min_number_share]
        contaminated[new] = True
        if len(new):
            src = bench[found["owner"][new]]
            hit_rows.append(
                pl.DataFrame(
                    {
                        "question_id": samples["question_id"].gather(new),
                        "level": samples["level"].gather(new),
                        "field": [field] * len(new),
                        "benchmark": src["benchmark"],
                        "benchmark_id": src["benchmark_id"],
                        "benchmark_field": src["benchmark_field"],
                        "share": found["share"][new],
                        "sample_share": found["sample_share"][new],
                        "matched": matched_words(
                            samples[field].gather(new),
                            found["run_start"][new],
                            found["run_len"][new],
                        ),
                    },
                    schema=HIT_SCHEMA,
                )
            )
    hits = pl.concat(hit_rows) if hit_rows else pl.DataFrame(schema=HIT_SCHEMA)
    return samples.filter(pl.Series(~contaminated)), hits.sort("question_id")


def decontaminate(
    samples: pl.DataFrame, bench: pl.DataFrame, rule: dict
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(clean, hits) of the samples against benchmark_texts' table under the settings of
    `rule`: the decontam config keys (module docstring)."""
    return split_hits(samples, bench, field_matches(samples, bench_index(bench, rule)), rule)


def example_hits(
    hits: pl.DataFrame, samples: pl.DataFrame, bench: pl.DataFrame, per_benchmark: int
) -> dict[str, list[dict]]:
    """Per benchmark, up to per_benchmark hits spread over the range of their shares, the
    lowest (the most doubtful) first, each with the sample's and the benchmark's text."""
    out = {}
    texts = samples.select("question_id", "question", "answer")
    for name, group in hits.sort("share").group_by("benchmark", maintain_order=True):
        picks = np.unique(np.linspace(0, len(group) - 1, min(per_benchmark, len(group))).round())
        chosen = group[picks.astype(np.int64)].join(texts, on="question_id", how="left")
        chosen = chosen.join(
            bench, on=["benchmark", "benchmark_id", "benchmark_field"], how="left"
        ).sort("share")
        out[name[0]] = [
            {
                "question_id": r["question_id"],
                "field": r["field"],
                "benchmark_id": r["benchmark_id"],
                "benchmark_field": r["benchmark_field"],
                "share": round(r["share"], 3),
                "sample_share": round(r["sample_share"], 3),
                "matched": r["matched"],
                "sample_text": (r[r["field"]] or "")[:EXAMPLE_CHARS],
                "benchmark_text": (r["text"] or "")[:EXAMPLE_CHARS],
            }
            for r in chosen.to_dicts()
        ]
    return dict(sorted(out.items()))


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The clean samples of inputs questions (the dedup stage's) into outputs questions,
    hits, report, counts. Settings: the keys of config decontam (RULE_KEYS and
    report_examples), evaluate.benchmarks (name -> jsonl) as benchmarks
    (rules/08_decontam.smk)."""
    benchmarks = settings["benchmarks"]
    if settings["ngram"] < 1:
        raise DecontamError(f"config key decontam.ngram: {settings['ngram']} < 1")
    rule = {k: settings[k] for k in RULE_KEYS}
    started = time.monotonic()
    samples = pl.read_parquet(inputs["questions"])
    bench = benchmark_texts(benchmarks)
    clean, hits = decontaminate(samples, bench, rule)
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
    examples = example_hits(hits, samples, bench, settings["report_examples"])
    write_json(
        outputs["report"],
        {
            **rule,
            "samples": len(samples),
            "contaminated": len(hits),
            "per_benchmark": per_benchmark,
            "per_field": by_field,
            "benchmark_files": dict(sorted(benchmarks.items())),
            "examples": examples,
        },
    )
    return write_counts(
        outputs["counts"],
        "decontam",
        len(samples),
        len(clean),
        {f"benchmark_{k}": v["hits"] for k, v in per_benchmark.items()},
        ngram=rule["ngram"],
        seconds=round(time.monotonic() - started, 2),
    )
