"""How well decontamination tells a copied problem from a shared phrase, on real math text.

False positives: samples from a set disjoint from the benchmark they are checked against,
each against the six benchmarks of the evaluation with the sample's own set taken out
(what the stage would see):
    MATH half      one half of the MATH test set (question + solution, seeded split)
                   against the other half and the five other benchmarks
    GSM8K train    the 7,473 GSM8K train problems (question + answer) against all six
    CollegeMath    the 2,818 CollegeMath questions against the five others (MATH among them)
Recall: copies of benchmark texts of at least decontam.short_min_words words (up to 80
records per benchmark, seeded) planted in real text, checked against all six; a copy is
caught when it is flagged against its own benchmark:
    verbatim       a question as the sample's question (case and spacing changed), or a
                   reference solution as its answer
    edited         the same with one word of the wording in EDIT_EVERY (at least one)
                   replaced, deleted or doubled, formulas and numbers kept: texts of at
                   least decontam.short_words words, and (edited short) of fewer
    embedded       a question between two GSM8K train questions, or a solution between two
                   GSM8K train answers
    short          a question of 6-12 words (short: decontam.short_words) inside a longer
                   one
Targets (issue 24): false positives <= 1 % per pair, recall >= 0.95 per kind.

Each row is a setting of decontam.ngram (n), decontam.min_share (share),
decontam.min_number_share (numbers) and decontam.max_records (records; "-" = no boilerplate
cut); "any" is the one-gram rule the stage had before coverage (drawing code cut). Wall
and CPU seconds are those of building the index and matching every set, once per (n,
records). Then the default's hits on the disjoint pairs, the lowest shares first, to
judge by eye, and how many are near-verbatim (share >= 0.95: the sets' own duplicates).

    .venv/bin/python benchmarks/decontam_quality.py          # the grid, about 5 minutes
    .venv/bin/python benchmarks/decontam_quality.py --quick  # the default and the old rule
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from synthllm.core.eval_data import BENCHMARKS
from synthllm.settings import schema_default
from synthllm.stages.decontam import (
    bench_index,
    benchmark_texts,
    field_matches,
    split_hits,
    text_words,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BENCH_DIR = SHARED / "benchmarks"
GSM8K_TRAIN = SHARED / "gsm8k_train" / "train.jsonl"
PER_BENCHMARK = 80
EDIT_EVERY = 20
SEED = 0
NO_CUT = 10**9
ANY = 1e-9  # a share every match reaches: the one-gram rule
SHARES = (0.5, 0.6, 0.7, 0.8)
NUMBER_SHARES = (0.0, 0.8)
SHORT_MIN_WORDS = schema_default("decontam")["short_min_words"]
SHORT_WORDS = schema_default("decontam")["short_words"]


def table(questions: list[str], answers: list[str], prefix: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "question_id": [f"{prefix}-{i}" for i in range(len(questions))],
            "level": pl.Series([1] * len(questions), dtype=pl.Int8),
            "question": questions,
            "answer": answers,
        }
    )


def edited(text: str, rng: np.random.Generator) -> str:
    """One word of the wording in EDIT_EVERY (at least one) replaced, deleted or doubled:
    the words of plain English between the formulas, which are kept as they are."""
    tokens = text.split(" ")
    wording = [i for i, t in enumerate(tokens) if re.fullmatch(r"[A-Za-z]+[,.?:;]?", t)]
    n_edits = min(max(1, len(tokens) // EDIT_EVERY), len(wording))
    for at in sorted(rng.choice(wording, size=n_edits, replace=False))[::-1]:
        kind = rng.integers(3)
        if kind == 0:
            tokens[at] = "thing"
        elif kind == 1:
            del tokens[at]
        else:
            tokens.insert(at, tokens[at])
    return " ".join(tokens)


def word_count(texts: list[str]) -> np.ndarray:
    offsets, _ = text_words(pl.Series(texts, dtype=pl.String))
    return np.diff(offsets)


def disjoint_sets(bench: pl.DataFrame, train: list[dict]) -> dict[str, tuple]:
    """name -> (samples, index texts)."""
    math = bench.filter(pl.col("benchmark") == "math")
    ids = math["benchmark_id"].unique().sort().to_numpy()
    half = set(np.random.default_rng(SEED).permutation(ids)[: len(ids) // 2].tolist())
    a = math.filter(pl.col("benchmark_id").is_in(list(half)))
    pivot = a.pivot(on="benchmark_field", index="benchmark_id", values="text")
    others = bench.filter(pl.col("benchmark") != "math")
    college = bench.filter(pl.col("benchmark") == "college_math")
    return {
        "MATH half": (
            table(pivot["question"].to_list(), pivot["solution"].to_list(), "math-a"),
            pl.concat([math.filter(~pl.col("benchmark_id").is_in(list(half))), others]),
        ),
        "GSM8K train": (
            table([r["question"] for r in train], [r["answer"] for r in train], "gsm8k-train"),
            bench,
        ),
        "CollegeMath": (
            table(college["text"].to_list(), [""] * len(college), "college"),
            bench.filter(pl.col("benchmark") != "college_math"),
        ),
    }


def planted(bench: pl.DataFrame, train: list[dict]) -> dict[str, tuple[pl.DataFrame, list]]:
    """kind -> (samples, the (benchmark, benchmark_id) each copies)."""
    rng = np.random.default_rng(SEED)
    host_q = [r["question"] for r in train]
    host_a = [r["answer"] for r in train]

    def host(texts):
        return texts[int(rng.integers(len(texts)))]

    picks = []
    for name in sorted(bench["benchmark"].unique()):
        records = bench.filter(pl.col("benchmark") == name)
        ids = records["benchmark_id"].unique().sort().to_numpy()
        for bid in rng.permutation(ids)[:PER_BENCHMARK]:
            rows = records.filter(pl.col("benchmark_id") == bid)
            fields = dict(zip(rows["benchmark_field"], rows["text"]))
            length = {f: word_count([t])[0] for f, t in fields.items()}
            # alternate questions and solutions where a benchmark has solutions; a text of
            # fewer words than short_min_words (`\\boxed{1}.`) counts only verbatim
            use_solution = "solution" in fields and len(picks) % 2 == 1
            field = "solution" if use_solution else "question"
            if length[field] >= SHORT_MIN_WORDS:
                picks.append((name, str(bid), field, fields[field], length[field]))
    kinds = {}
    long = [p for p in picks if p[4] >= SHORT_WORDS]
    for kind, chosen in (
        ("verbatim", picks),
        ("edited", long),
        ("edited short", [p for p in picks if p[4] < SHORT_WORDS]),
        ("embedded", picks),
    ):
        qs, ans = [], []
        for _, _, field, text, _ in chosen:
            hosts = host_q if field == "question" else host_a
            if kind == "verbatim":
                copy = "  " + text.upper().replace(" ", "   ") + " "
            elif kind.startswith("edited"):
                copy = edited(text, rng)
            else:
                copy = f"{host(hosts)}\n{text}\n{host(hosts)}"
            qs.append(copy if field == "question" else host(host_q))
            ans.append(copy if field == "solution" else host(host_a))
        kinds[kind] = (table(qs, ans, kind.replace(" ", "-")), [(p[0], p[1]) for p in chosen])
    questions = bench.filter(pl.col("benchmark_field") == "question")
    words = word_count(questions["text"].to_list())
    short = questions.filter(pl.Series((words >= SHORT_MIN_WORDS) & (words < SHORT_WORDS)))
    short = short[rng.permutation(len(short))[: PER_BENCHMARK * 3]]
    qs = [
        f"{host(host_q)} Before that, a warm-up: {t} Then answer the first question."
        for t in short["text"]
    ]
    kinds["short"] = (
        table(qs, [host(host_a) for _ in qs], "short"),
        list(zip(short["benchmark"], short["benchmark_id"])),
    )
    return kinds


def scores(hits: pl.DataFrame, samples: pl.DataFrame, copies: list | None) -> float:
    """The share of samples flagged (copies None), else of copies flagged against their own
    benchmark (a record of minerva_math repeats its preamble in its siblings; a MATH
    problem may be in the test set twice: a hit on the sibling is a copy caught)."""
    if copies is None:
        return len(hits) / len(samples)
    caught = dict(zip(hits["question_id"], hits["benchmark"]))
    return float(np.mean([caught.get(q) == c[0] for q, c in zip(samples["question_id"], copies)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the default and the old rule")
    parser.add_argument("--show", type=int, default=8, help="hits of the default to print per pair")
    args = parser.parse_args()
    if not BENCH_DIR.is_dir() or not GSM8K_TRAIN.exists():
        sys.exit(f"{BENCH_DIR} or {GSM8K_TRAIN} absent (../shared/data): nothing to measure")
    defaults = schema_default("decontam")
    default = (
        defaults["ngram"],
        defaults["max_records"],
        defaults["min_share"],
        defaults["min_number_share"],
    )
    # (n, records) -> [(share, number share)]: the index is built once per (n, records)
    grid = {(13, NO_CUT): [(ANY, 0.0)]}
    grid.setdefault(default[:2], []).append(default[2:])
    if not args.quick:
        grid.setdefault((default[0], NO_CUT), []).append(default[2:])  # what the cut buys
        for n in (6, 8, 10, 13):
            grid.setdefault((n, defaults["max_records"]), []).extend(
                (share, numbers) for share in SHARES for numbers in NUMBER_SHARES
            )
    bench = benchmark_texts({b: str(BENCH_DIR / b / "test.jsonl") for b in BENCHMARKS})
    train = [json.loads(x) for x in GSM8K_TRAIN.read_text().splitlines()]
    # name -> (samples, index texts, copies or None)
    sets = {k: (s, i, None) for k, (s, i) in disjoint_sets(bench, train).items()}
    sets |= {k: (s, bench, c) for k, (s, c) in planted(bench, train).items()}
    print(
        "samples:",
        ", ".join(f"{k} {len(v[0])}" for k, v in sets.items()),
        f"\n(false positives: % of a disjoint set flagged; recall: share of planted copies caught;"
        f" short_min_words {defaults['short_min_words']})",
    )
    head = f"{'n':>3} {'share':>5} {'numbers':>7} {'records':>7} | " + " | ".join(
        f"{c:>12}" for c in sets
    )
    print(head + " |  wall s   CPU s")
    print("-" * len(head))
    shown = {}
    for (n, records), shares in grid.items():
        wall, cpu = time.perf_counter(), time.process_time()
        matched = {}
        for name, (samples, index_texts, _) in sets.items():
            key = id(index_texts)
            if key not in matched:
                matched[key] = bench_index(
                    index_texts, {**defaults, "ngram": n, "max_records": records}
                )
            matched[name] = field_matches(samples, matched[key])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        for share, numbers in sorted(set(shares)):
            cells = []
            for name, (samples, index_texts, copies) in sets.items():
                _, hits = split_hits(
                    samples,
                    index_texts,
                    matched[name],
                    {"min_share": share, "min_number_share": numbers},
                )
                score = scores(hits, samples, copies)
                cells.append(f"{100 * score:>11.2f}%" if copies is None else f"{score:>12.3f}")
                if (n, records, share, numbers) == default:
                    shown[name] = hits
            print(
                f"{n:>3} {'any' if share == ANY else f'{share:.2f}':>5} {numbers:>7.2f} "
                f"{'-' if records == NO_CUT else records:>7} | "
                + " | ".join(cells)
                + f" | {wall:7.1f} {cpu:7.1f}"
                + ("  <- default" if (n, records, share, numbers) == default else "")
            )
    for name, (samples, index_texts, copies) in sets.items():
        if copies is not None or not args.show:
            continue
        hits = shown[name]
        near = int((hits["share"] >= 0.95).sum())
        print(
            f"\n{name}: {len(hits)} hits at the default ({near} near-verbatim, share >= 0.95),"
            " the lowest shares first"
        )
        rows = (
            samples.join(hits.sort("share").head(args.show), on="question_id")
            .join(index_texts, on=["benchmark", "benchmark_id", "benchmark_field"])
            .sort("share")
        )
        for r in rows.to_dicts():
            print(
                f"  share {r['share']:.2f} (sample {r['sample_share']:.2f}) "
                f"{r['benchmark']} {r['benchmark_id']} {r['benchmark_field']}\n"
                f"    matched:   {r['matched'][:160]!r}\n"
                f"    sample:    {r[r['field']][:240]!r}\n"
                f"    benchmark: {r['text'][:240]!r}"
            )


if __name__ == "__main__":
    main()
