"""Document filtering (paper §4.1, Fig. 3): a cold-start classifier, then T rounds of a
fine-grained one, both random forests on document embeddings (synthllm.embed).

1. `synthetic`: the generator LLM writes synthetic mathematics documents (blog posts, exam
   papers, textbook sections) from a syllabus (resources/syllabus/mathematics.yaml,
   discipline -> subject -> topic, shaped like GLAN's).
   Schema (`filter/synthetic/docs.parquet`): doc_id, text, kind, subject, topic, level,
   status (ok | truncated | empty), finish_reason, model, template_hash, seed.
   ok and truncated documents are positives (a document cut at max_tokens is still one).
2. `coldstart`: a random-forest classifier, the synthetic documents' embeddings as
   positives and a random corpus sample's as negatives; applied to every shard it gives
   P(math). D0 = documents with P >= coldstart.threshold.
3. For t = 1..T, `rate`: the rater LLM scores D(t-1) (a sample of it) plus a fresh random
   corpus sample 1-10 (prompts/rate.j2); `finegrained`: a random-forest regressor on
   (embedding, rating) of every rating so far, applied to every shard. D(t) = documents
   scoring above finegrained.threshold.
   Ratings schema (`filter/iter-{t}/ratings.parquet`): doc_id, shard, row, origin
   (reference | random), rating (float, null unless ok), status (ok | unparsable |
   out_of_range | truncated), completion, finish_reason, model, template_hash, seed.
Scores schema (`filter/iter-{t}/scores.parquet`, t = 0 is the cold start): doc_id, shard,
row (the document's row in its corpus shard and embeddings), score (float64), kept (bool).
4. `filter_docs` per shard: the corpus columns of the documents kept by the last iteration
   plus `scores` (list<float64>, one per iteration 0..T) and `score` (the last).

Samples are drawn with numpy's default_rng from `filter.seed` (+ the iteration), forests
are seeded by their own `forest.seed`; both are recorded in every report.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from synthllm.embed import load as load_embeddings
from synthllm.generation import fingerprint, finish_stage, generate_resumable, provenance, render
from synthllm.io import atomic_path, write_counts, write_json, write_parquet, write_parquet_table
from synthllm.llm import BackendSpec, Completion, Request, Sampling

log = logging.getLogger(__name__)

SYNTHETIC_TEMPLATE = "synthetic_doc"
RATE_TEMPLATE = "rate"
RATING_REGEX = r"Rating: (10|[1-9])"

SYNTHETIC_SCHEMA = pa.schema(
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
RATINGS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("row", pa.int64()),
        ("origin", pa.string()),
        ("rating", pa.float64()),
        ("status", pa.string()),
        ("completion", pa.string()),
        ("finish_reason", pa.string()),
        ("model", pa.string()),
        ("template_hash", pa.string()),
        ("seed", pa.int64()),
    ]
)
SCORES_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("shard", pa.string()),
        ("row", pa.int64()),
        ("score", pa.float64()),
        ("kept", pa.bool_()),
    ]
)


class FilterError(Exception):
    """Bad input or settings of a filtering job; the message names the file or config key."""


@dataclass(frozen=True)
class Forest:
    """Config key filter.<coldstart|finegrained>.forest."""

    n_estimators: int = 200
    max_depth: int | None = None
    min_samples_leaf: int = 1
    max_features: str | float = "sqrt"
    seed: int = 0

    def sklearn_kwargs(self, threads: int) -> dict:
        return {
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "min_samples_leaf": self.min_samples_leaf,
            "max_features": self.max_features,
            "random_state": self.seed,
            "n_jobs": threads,
        }


# ---------------------------------------------------------------- syllabus and synthetic docs


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


def synthetic_status(c: Completion, min_chars: int) -> str:
    if len(c.text.strip()) < min_chars:
        return "empty"
    return "truncated" if c.finish_reason == "length" else "ok"


def run_synthetic(
    syllabus: str,
    kinds: list[str],
    n_docs: int,
    min_chars: int,
    output: str,
    counts_path: str,
    spec: BackendSpec,
    sampling: Sampling,
    chunk_size: int,
) -> dict:
    from synthllm.corpus import doc_id_of

    plan = synthetic_plan(load_syllabus(syllabus), kinds, n_docs, sampling.seed)
    requests = [
        Request([{"role": "user", "content": render(SYNTHETIC_TEMPLATE, **p)}]) for p in plan
    ]
    fp = fingerprint(stage=SYNTHETIC_TEMPLATE, spec=spec, sampling=sampling, requests=requests)
    completions, facts = generate_resumable(
        requests, spec, sampling, output, fp, chunk_size, desc="synthetic docs"
    )
    prov = provenance(spec, SYNTHETIC_TEMPLATE, sampling)
    rows, statuses = [], {}
    for p, c in zip(plan, completions):
        status = synthetic_status(c, min_chars)
        statuses[status] = statuses.get(status, 0) + 1
        rows.append(
            {
                "doc_id": doc_id_of(c.text.strip() or f"{p}"),
                "text": c.text.strip(),
                "kind": p["kind"],
                "subject": p["subject"],
                "topic": p["topic"],
                "level": p["level"],
                "status": status,
                "finish_reason": c.finish_reason,
                **prov,
            }
        )
    # every row is written (the classifier reads ok and truncated ones); empty ones are dropped
    usable = {k: v for k, v in statuses.items() if k != "empty"}
    return finish_stage(
        "synthetic_docs",
        rows,
        SYNTHETIC_SCHEMA,
        output,
        counts_path,
        len(plan),
        {"ok": sum(usable.values()), "empty": statuses.get("empty", 0)},
        by_status=statuses,
        **facts,
    )


# ---------------------------------------------------------------- corpus index and samples


def shard_name_of(path: str) -> str:
    m = re.search(r"shard-(\d{5}-of-\d{5})", Path(path).name)
    if not m:
        raise FilterError(f"{path}: not a shard file (shard-NNNNN-of-NNNNN)")
    return m.group(1)


def shard_sizes(shards: list[str]) -> list[int]:
    return [pq.read_metadata(s).num_rows for s in shards]


def sample_rows(
    sizes: list[int], n: int, rng: np.random.Generator, exclude: set[tuple[int, int]] = frozenset()
) -> list[tuple[int, int]]:
    """Up to n distinct (shard index, row) pairs drawn uniformly from the corpus, none in exclude."""
    offsets = np.cumsum([0] + list(sizes))
    excluded = np.array(sorted(int(offsets[s]) + r for s, r in exclude), dtype=np.int64)
    candidates = np.setdiff1d(np.arange(int(offsets[-1]), dtype=np.int64), excluded)
    picked = np.sort(
        candidates[rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)]
    )
    shard = np.searchsorted(offsets, picked, side="right") - 1
    return [(int(s), int(g - offsets[s])) for s, g in zip(shard, picked)]


def gather_embeddings(
    pairs: list[tuple[int, int]], shards: list[str], embeddings: list[str], sizes: list[int]
) -> np.ndarray:
    """The embedding rows of (shard index, row) pairs, in order, reading each file once (mmap)."""
    if not pairs:
        return np.zeros((0, 0), dtype=np.float32)
    rows = []
    for s in sorted({s for s, _ in pairs}):
        vectors = np.load(embeddings[s], mmap_mode="r")
        if vectors.shape[0] != sizes[s]:
            raise FilterError(
                f"{embeddings[s]}: {vectors.shape[0]} rows, but {shards[s]} has "
                f"{sizes[s]} documents"
            )
        rows.extend(((s, r), np.asarray(vectors[r])) for ss, r in pairs if ss == s)
    found = dict(rows)
    return np.stack([found[p] for p in pairs])


# ---------------------------------------------------------------- the forests (pure)


def train_classifier(
    positives: np.ndarray, negatives: np.ndarray, forest: Forest, threads: int = 1
):
    from sklearn.ensemble import RandomForestClassifier

    if len(positives) == 0 or len(negatives) == 0:
        raise FilterError(
            f"cold-start classifier: {len(positives)} positives and "
            f"{len(negatives)} negatives; it needs both"
        )
    x = np.concatenate([positives, negatives])
    y = np.concatenate([np.ones(len(positives), dtype=int), np.zeros(len(negatives), dtype=int)])
    model = RandomForestClassifier(class_weight="balanced", **forest.sklearn_kwargs(threads))
    return model.fit(x, y)


def positive_probability(model, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return np.zeros(0)
    return model.predict_proba(x)[:, list(model.classes_).index(1)]


def train_regressor(x: np.ndarray, y: np.ndarray, forest: Forest, threads: int = 1):
    from sklearn.ensemble import RandomForestRegressor

    if len(x) < 2:
        raise FilterError(f"fine-grained regressor: {len(x)} usable ratings; it needs at least 2")
    return RandomForestRegressor(**forest.sklearn_kwargs(threads)).fit(x, y)


def heldout_regression(
    x: np.ndarray, y: np.ndarray, forest: Forest, test_fraction: float, seed: int, threads: int = 1
) -> dict:
    """MAE and R2 of a regressor trained on a random (1 - test_fraction) of the ratings and
    scored on the rest; nulls when either side would be under 2 documents."""
    from sklearn.metrics import mean_absolute_error, r2_score

    n_test = int(round(len(x) * test_fraction))
    if n_test < 2 or len(x) - n_test < 2:
        return {"n_train": len(x) - n_test, "n_test": n_test, "mae": None, "r2": None}
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    pred = train_regressor(x[train], y[train], forest, threads).predict(x[test])
    r2 = r2_score(y[test], pred) if len(set(y[test].tolist())) > 1 else None
    return {
        "n_train": len(train),
        "n_test": n_test,
        "mae": float(mean_absolute_error(y[test], pred)),
        "r2": None if r2 is None else float(r2),
    }


def precision_recall(kept: np.ndarray, positive: np.ndarray) -> dict:
    tp = int(np.sum(kept & positive))
    n_kept, n_pos = int(kept.sum()), int(positive.sum())
    return {
        "precision": tp / n_kept if n_kept else None,
        "recall": tp / n_pos if n_pos else None,
        "kept": n_kept,
        "positives": n_pos,
    }


def heldout_classification(
    positives: np.ndarray,
    negatives: np.ndarray,
    forest: Forest,
    test_fraction: float,
    seed: int,
    threshold: float = 0.5,
    threads: int = 1,
) -> dict:
    """Precision and recall of the classifier on a stratified held-out split."""
    from sklearn.model_selection import train_test_split

    x = np.concatenate([positives, negatives])
    y = np.concatenate([np.ones(len(positives), dtype=bool), np.zeros(len(negatives), dtype=bool)])
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    model = train_classifier(x_tr[y_tr], x_tr[~y_tr], forest, threads)
    kept = positive_probability(model, x_te) >= threshold
    return {"n_train": len(x_tr), "n_test": len(x_te), **precision_recall(kept, y_te)}


# ---------------------------------------------------------------- ratings


def rating_request(text: str, structured: bool) -> Request:
    constraint = {"regex": RATING_REGEX} if structured else None
    return Request([{"role": "user", "content": render(RATE_TEMPLATE, text=text)}], constraint)


_RATING_PATTERNS = (
    re.compile(r"rating\W{0,5}(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE),
    re.compile(r"^\W*(\d+(?:\.\d+)?)\W*$"),
)


def parse_rating(text: str) -> tuple[float | None, str]:
    """(rating, status): the number after "Rating", before "/10" or "out of 10", or a
    completion that is only a number. status ok | out_of_range (outside 1-10) | unparsable."""
    for pattern in _RATING_PATTERNS:
        found = pattern.findall(text.strip())
        if found:
            value = float(found[-1])
            return (value, "ok") if 1 <= value <= 10 else (None, "out_of_range")
    return None, "unparsable"


def load_scores(path: str) -> pa.Table:
    return pq.read_table(path, schema=SCORES_SCHEMA)


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


def run_rate(
    previous_scores: str,
    previous_ratings: list[str],
    shards: list[str],
    output: str,
    counts_path: str,
    spec: BackendSpec,
    sampling: Sampling,
    structured: bool,
    n_reference: int,
    n_random: int,
    seed: int,
    max_doc_chars: int,
    chunk_size: int,
) -> dict:
    already = set()
    for path in previous_ratings:
        already |= set(pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist())
    chosen = rate_sample(previous_scores, shards, n_reference, n_random, seed, already)
    texts = {}
    for s in sorted({c["s"] for c in chosen}):
        table = pq.read_table(shards[s], columns=["doc_id", "text"]).to_pylist()
        for c in chosen:
            if c["s"] == s:
                c["doc_id"], texts[(s, c["row"])] = (
                    table[c["row"]]["doc_id"],
                    table[c["row"]]["text"],
                )
    requests = [
        rating_request(texts[(c["s"], c["row"])][:max_doc_chars], structured) for c in chosen
    ]
    fp = fingerprint(stage=RATE_TEMPLATE, spec=spec, sampling=sampling, requests=requests)
    completions, facts = generate_resumable(
        requests, spec, sampling, output, fp, chunk_size, desc="rate"
    )
    prov = provenance(spec, RATE_TEMPLATE, sampling)
    rows, statuses = [], {}
    for c, comp in zip(chosen, completions):
        rating, status = parse_rating(comp.text)
        if status != "ok" and comp.finish_reason == "length":
            status = "truncated"
        statuses[status] = statuses.get(status, 0) + 1
        rows.append(
            {
                "doc_id": c["doc_id"],
                "shard": shard_name_of(shards[c["s"]]),
                "row": c["row"],
                "origin": c["origin"],
                "rating": rating,
                "status": status,
                "completion": comp.text,
                "finish_reason": comp.finish_reason,
                **prov,
            }
        )
    histogram = {str(k): sum(1 for r in rows if r["rating"] == k) for k in range(1, 11)}
    # every row is written (unusable ratings stay visible); only ok ones train the regressor
    write_parquet(rows, RATINGS_SCHEMA, output)
    from synthllm.generation import progress_path

    progress_path(output).unlink(missing_ok=True)
    dropped = {k: v for k, v in statuses.items() if k != "ok"}
    return write_counts(
        counts_path,
        "rate",
        len(rows),
        statuses.get("ok", 0),
        dropped,
        origins={o: sum(1 for c in chosen if c["origin"] == o) for o in ("reference", "random")},
        histogram=histogram,
        seed=seed,
        structured=structured,
        **facts,
    )


# ---------------------------------------------------------------- applying a model to the corpus


def score_corpus(predict, shards: list[str], embeddings: list[str], keep) -> pa.Table:
    """Scores of every document of every shard (predict: embeddings -> scores; keep: scores -> bool)."""
    parts = []
    for shard, emb in zip(shards, embeddings):
        ids = pq.read_table(shard, columns=["doc_id"]).column("doc_id")
        vectors = load_embeddings(emb, len(ids), shard)
        score = predict(vectors) if len(ids) else np.zeros(0)
        parts.append(
            pa.table(
                {
                    "doc_id": ids.combine_chunks().cast(pa.string()),
                    "shard": pa.array([shard_name_of(shard)] * len(ids), pa.string()),
                    "row": pa.array(np.arange(len(ids)), pa.int64()),
                    "score": pa.array(score, pa.float64()),
                    "kept": pa.array(keep(score), pa.bool_()),
                },
                schema=SCORES_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def labelled_check(scores: pa.Table, shards: list[str], positive_sources: list[str]) -> dict | None:
    """Precision/recall of the kept documents against corpus sources taken as labels (config
    key filter.labels.positive_sources), or None when no source is labelled."""
    if not positive_sources:
        return None
    positive = (
        np.concatenate(
            [
                np.isin(
                    pq.read_table(s, columns=["source"])
                    .column("source")
                    .to_numpy(zero_copy_only=False),
                    positive_sources,
                )
                for s in shards
            ]
        )
        if shards
        else np.zeros(0, dtype=bool)
    )
    kept = scores.column("kept").to_numpy(zero_copy_only=False)
    return {"positive_sources": positive_sources, **precision_recall(kept, positive)}


def _save_model(model, path: str) -> None:
    import joblib

    with atomic_path(path) as tmp:
        joblib.dump(model, tmp)


def run_coldstart(
    synthetic_docs: str,
    synthetic_embeddings: str,
    shards: list[str],
    embeddings: list[str],
    scores_out: str,
    model_out: str,
    report_out: str,
    n_negatives: int,
    threshold: float,
    forest: Forest,
    seed: int,
    test_fraction: float,
    positive_sources: list[str],
    threads: int = 1,
) -> dict:
    if len(shards) != len(embeddings):
        raise FilterError("coldstart: one embeddings file per shard is needed")
    started = time.time()
    status = pq.read_table(synthetic_docs, columns=["status"]).column("status").to_pylist()
    vectors = load_embeddings(synthetic_embeddings, len(status), synthetic_docs)
    positives = vectors[[i for i, s in enumerate(status) if s in ("ok", "truncated")]]
    sizes = shard_sizes(shards)
    negatives = gather_embeddings(
        sample_rows(sizes, n_negatives, np.random.default_rng(seed)), shards, embeddings, sizes
    )
    heldout = (
        heldout_classification(
            positives, negatives, forest, test_fraction, seed, threshold, threads
        )
        if min(len(positives), len(negatives)) >= 4
        else None
    )
    model = train_classifier(positives, negatives, forest, threads)
    scores = score_corpus(
        lambda x: positive_probability(model, x), shards, embeddings, lambda p: p >= threshold
    )
    write_parquet_table(scores, scores_out)
    _save_model(model, model_out)
    kept = int(pc_sum(scores.column("kept")))
    report = {
        "iteration": 0,
        "classifier": "RandomForestClassifier",
        "positives": len(positives),
        "negatives": len(negatives),
        "threshold": threshold,
        "forest": forest.__dict__,
        "sample_seed": seed,
        "documents": scores.num_rows,
        "kept": kept,
        "heldout_synthetic_vs_sample": heldout,
        "labelled": labelled_check(scores, shards, positive_sources),
        "seconds": round(time.time() - started, 2),
    }
    write_json(report_out, report)
    return report


def pc_sum(column) -> int:
    import pyarrow.compute as pc

    return pc.sum(column).as_py() or 0


def run_finegrained(
    iteration: int,
    ratings: list[str],
    shards: list[str],
    embeddings: list[str],
    scores_out: str,
    model_out: str,
    report_out: str,
    threshold: float,
    forest: Forest,
    test_fraction: float,
    seed: int,
    positive_sources: list[str],
    threads: int = 1,
) -> dict:
    """Regressor on every ok rating of iterations 1..t (a document rated twice: the latest)."""
    started = time.time()
    rated: dict[str, dict] = {}
    for path in ratings:
        for r in pq.read_table(path, schema=RATINGS_SCHEMA).to_pylist():
            if r["status"] == "ok":
                rated[r["doc_id"]] = r
    index = {shard_name_of(s): i for i, s in enumerate(shards)}
    items = list(rated.values())
    sizes = shard_sizes(shards)
    x = gather_embeddings([(index[r["shard"]], r["row"]) for r in items], shards, embeddings, sizes)
    y = np.array([r["rating"] for r in items], dtype=float)
    heldout = heldout_regression(x, y, forest, test_fraction, seed, threads)
    model = train_regressor(x, y, forest, threads)
    scores = score_corpus(model.predict, shards, embeddings, lambda s: s > threshold)
    write_parquet_table(scores, scores_out)
    _save_model(model, model_out)
    report = {
        "iteration": iteration,
        "regressor": "RandomForestRegressor",
        "ratings": len(items),
        "rating_histogram": {str(k): int(np.sum(y == k)) for k in range(1, 11)},
        "threshold": threshold,
        "forest": forest.__dict__,
        "split_seed": seed,
        "documents": scores.num_rows,
        "kept": int(pc_sum(scores.column("kept"))),
        "heldout": heldout,
        "labelled": labelled_check(scores, shards, positive_sources),
        "seconds": round(time.time() - started, 2),
    }
    write_json(report_out, report)
    return report


# ---------------------------------------------------------------- the filtered shards and the report


def run_filter_docs(shard: str, scores: list[str], output: str, counts_path: str) -> dict:
    """The documents of `shard` kept by the last iteration, with the scores of every iteration."""
    name = shard_name_of(shard)
    table = pq.read_table(shard)
    per_iteration, kept = [], None
    for path in scores:
        s = _shard_scores(path, name)
        if s.num_rows != table.num_rows:
            raise FilterError(
                f"{path}: {s.num_rows} scores for shard {name}, which has "
                f"{table.num_rows} documents"
            )
        per_iteration.append(s.column("score").to_numpy())
        kept = s.column("kept").to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(kept)
    out = table.take(pa.array(rows, pa.int64()))
    matrix = np.stack(per_iteration, axis=1)[rows] if len(rows) else np.zeros((0, len(scores)))
    out = out.append_column(
        "scores", pa.array([list(map(float, m)) for m in matrix], pa.list_(pa.float64()))
    )
    out = out.append_column("score", pa.array(matrix[:, -1] if len(rows) else [], pa.float64()))
    write_parquet_table(out, output)
    return write_counts(
        counts_path,
        "filter_docs",
        table.num_rows,
        len(rows),
        {"below_threshold": table.num_rows - len(rows)},
        iterations=len(scores) - 1,
    )


def _shard_scores(path: str, name: str) -> pa.Table:
    import pyarrow.compute as pc

    t = load_scores(path)
    t = t.filter(pc.equal(t.column("shard"), name))
    return t.sort_by("row")


def run_report(
    reports: list[str],
    rate_counts: list[str],
    filter_counts: list[str],
    output: str,
    markdown: str,
    counts_path: str,
) -> dict:
    iterations = [json.loads(Path(p).read_text()) for p in reports]
    rates = [json.loads(Path(p).read_text()) for p in rate_counts]
    for it, rate in zip(iterations[1:], rates):
        it["rated"] = {
            "in": rate["in"],
            "ok": rate["out"],
            "dropped": rate["dropped"],
            "histogram": rate["histogram"],
            "origins": rate["origins"],
        }
    docs_in = sum(json.loads(Path(p).read_text())["in"] for p in filter_counts)
    docs_out = sum(json.loads(Path(p).read_text())["out"] for p in filter_counts)
    report = {"documents": docs_in, "kept": docs_out, "iterations": iterations}
    write_json(output, report)
    lines = [
        "# Document filtering",
        "",
        f"{docs_out} of {docs_in} corpus documents kept.",
        "",
        "| iteration | model | trained on | kept | held-out | labelled precision | labelled recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for it in iterations:
        lab = it.get("labelled") or {}
        if it["iteration"] == 0:
            trained = f"{it['positives']} synthetic + {it['negatives']} corpus"
            h = it.get("heldout_synthetic_vs_sample") or {}
            held = f"P {_fmt(h.get('precision'))} R {_fmt(h.get('recall'))}"
        else:
            trained = f"{it['ratings']} ratings"
            held = f"MAE {_fmt(it['heldout']['mae'])} R2 {_fmt(it['heldout']['r2'])}"
        lines.append(
            f"| {it['iteration']} | {it.get('classifier') or it.get('regressor')} | "
            f"{trained} | {it['kept']} | {held} | {_fmt(lab.get('precision'))} | "
            f"{_fmt(lab.get('recall'))} |"
        )
    for it in iterations[1:]:
        hist = it["rating_histogram"]
        lines += [
            "",
            f"Ratings of iteration {it['iteration']} (1-10): "
            + ", ".join(f"{k}: {v}" for k, v in hist.items() if v),
        ]
    with atomic_path(markdown) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_counts(
        counts_path, "filter_report", docs_in, docs_out, {"below_threshold": docs_in - docs_out}
    )
    return report


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"
