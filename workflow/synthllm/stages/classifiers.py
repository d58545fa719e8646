"""Document filtering (paper §4.1, Fig. 3): a cold-start classifier, then T rounds of a
fine-grained one, both random forests on document embeddings (synthllm.stages.embed).

1. `synthetic_docs` (synthllm.stages.synthetic_docs): the generator LLM writes synthetic
   mathematics documents from a syllabus; ok and truncated ones are the positives.
2. `coldstart`: a random-forest classifier, the synthetic documents' embeddings as
   positives and a random corpus sample's as negatives; applied to every shard it gives
   P(math). D0 = documents with P >= coldstart.threshold.
3. For t = 1..T, `rate` (synthllm.stages.rate): the rater LLM scores D(t-1) (a sample of it) plus a
   fresh random corpus sample 1-10; `finegrained`: a random-forest regressor on
   (embedding, rating) of every rating so far, applied to every shard. D(t) = documents
   scoring above finegrained.threshold.
   Ratings schema (`filter/iter-{t}/ratings.parquet`, RATINGS_SCHEMA): doc_id, shard, row,
   origin (reference | random), rating (float, null unless ok), status (ok | unparsable |
   out_of_range | truncated), completion, finish_reason, model, template_hash, seed.
Scores schema (`filter/iter-{t}/scores.parquet`, t = 0 is the cold start): doc_id, shard,
row (the document's row in its corpus shard and embeddings), score (float64), kept (bool).
4. `filter_docs` (synthllm.stages.filter_docs) per shard: the corpus columns of the documents kept
   by the last iteration plus their scores; `filter_report` (synthllm.stages.filter_report): the
   sizes and checks of every iteration.

Samples are drawn with numpy's default_rng from `filter.seed` (+ the iteration), forests
are seeded by their own `forest.seed`; both are recorded in every report.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthllm.core.files import atomic_path, write_json, write_parquet_table
from synthllm.errors import SynthllmError
from synthllm.stages.embed import load as load_embeddings

log = logging.getLogger(__name__)

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


class FilterError(SynthllmError):
    """Bad input or settings of a filtering job; the message names the file or config key."""


@dataclass(frozen=True)
class Forest:
    """Config key filter.<coldstart|finegrained>.forest (config/schema.yaml holds the
    defaults)."""

    n_estimators: int
    max_depth: int | None
    min_samples_leaf: int
    max_features: str | float
    seed: int

    def sklearn_kwargs(self, threads: int) -> dict:
        return {
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "min_samples_leaf": self.min_samples_leaf,
            "max_features": self.max_features,
            "random_state": self.seed,
            "n_jobs": threads,
        }


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


def load_scores(path: str) -> pa.Table:
    return pq.read_table(path, schema=SCORES_SCHEMA)


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


def rating_histogram(ratings) -> dict[str, int]:
    """Ratings per whole number 1-10, each rounded half up to the nearest (an expected
    rating, synthllm.stages.rate, is fractional)."""
    rounded = np.clip(np.floor(np.asarray(ratings, dtype=float) + 0.5), 1, 10)
    return {str(k): int(np.sum(rounded == k)) for k in range(1, 11)}


def rating_stats(ratings) -> dict:
    """n, mean, std, min, max and the interquartile range (iqr: how far apart the middle
    half of the ratings lie, the spread the report's floor reads) of ratings."""
    y = np.asarray(ratings, dtype=float)
    if not len(y):
        return dict.fromkeys(("mean", "std", "min", "max", "iqr"), None) | {"n": 0}
    q25, q75 = np.percentile(y, [25, 75])
    return {
        "n": len(y),
        "mean": float(y.mean()),
        "std": float(y.std()),
        "min": float(y.min()),
        "max": float(y.max()),
        "iqr": float(q75 - q25),
    }


def labelled_ratings(
    items: list[dict], shards: list[str], positive_sources: list[str]
) -> dict | None:
    """rating_stats of the rated documents from the labelled sources (config key
    filter.positive_sources) and of the others, or None when no source is labelled: whether
    the rater tells math from the rest."""
    if not positive_sources:
        return None
    source = {
        shard_name_of(s): pq.read_table(s, columns=["source"])
        .column("source")
        .to_numpy(zero_copy_only=False)
        for s in shards
    }
    positive = [source[r["shard"]][r["row"]] in positive_sources for r in items]
    return {
        "positive_sources": positive_sources,
        "positive": rating_stats([r["rating"] for r, p in zip(items, positive) if p]),
        "other": rating_stats([r["rating"] for r, p in zip(items, positive) if not p]),
    }


def _save_model(model, path: str) -> None:
    import joblib

    with atomic_path(path) as tmp:
        joblib.dump(model, tmp)


def run_coldstart(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The cold-start classifier D0: synthetic documents against a random corpus sample.
    Settings: filter.coldstart (negatives, threshold, test_fraction, forest), filter.seed as
    seed, filter.positive_sources as positive_sources (rules/02_filter.smk)."""
    shards, embeddings = inputs["shards"], inputs["embeddings"]
    if len(shards) != len(embeddings):
        raise FilterError("coldstart: one embeddings file per shard is needed")
    threads = execution["threads"]
    forest, seed, threshold = Forest(**settings["forest"]), settings["seed"], settings["threshold"]
    started = time.time()
    synthetic = inputs["synthetic"]
    status = pq.read_table(synthetic, columns=["status"]).column("status").to_pylist()
    vectors = load_embeddings(inputs["synthetic_embeddings"], len(status), synthetic)
    positives = vectors[[i for i, s in enumerate(status) if s in ("ok", "truncated")]]
    sizes = shard_sizes(shards)
    negatives = gather_embeddings(
        sample_rows(sizes, settings["negatives"], np.random.default_rng(seed)),
        shards,
        embeddings,
        sizes,
    )
    heldout = (
        heldout_classification(
            positives, negatives, forest, settings["test_fraction"], seed, threshold, threads
        )
        if min(len(positives), len(negatives)) >= 4
        else None
    )
    model = train_classifier(positives, negatives, forest, threads)
    scores = score_corpus(
        lambda x: positive_probability(model, x), shards, embeddings, lambda p: p >= threshold
    )
    write_parquet_table(scores, outputs["scores"])
    _save_model(model, outputs["model"])
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
        "labelled": labelled_check(scores, shards, settings["positive_sources"]),
        "seconds": round(time.time() - started, 2),
    }
    write_json(outputs["report"], report)
    log.info("coldstart: D0 has %d of %d documents", report["kept"], report["documents"])
    return report


def pc_sum(column) -> int:
    import pyarrow.compute as pc

    return pc.sum(column).as_py() or 0


def run_finegrained(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The regressor D(t) on every ok rating of iterations 1..t (a document rated twice: the
    latest). Settings: filter.finegrained.{threshold, forest, test_fraction}, filter.seed as
    seed, filter.positive_sources as positive_sources, and the iteration (rules/02_filter.smk)."""
    shards, embeddings = inputs["shards"], inputs["embeddings"]
    threads = execution["threads"]
    forest, seed, threshold = Forest(**settings["forest"]), settings["seed"], settings["threshold"]
    iteration = settings["iteration"]
    started = time.time()
    rated: dict[str, dict] = {}
    for path in inputs["ratings"]:
        for r in pq.read_table(path, schema=RATINGS_SCHEMA).to_pylist():
            if r["status"] == "ok":
                rated[r["doc_id"]] = r
    index = {shard_name_of(s): i for i, s in enumerate(shards)}
    items = list(rated.values())
    sizes = shard_sizes(shards)
    x = gather_embeddings([(index[r["shard"]], r["row"]) for r in items], shards, embeddings, sizes)
    y = np.array([r["rating"] for r in items], dtype=float)
    heldout = heldout_regression(x, y, forest, settings["test_fraction"], seed, threads)
    model = train_regressor(x, y, forest, threads)
    scores = score_corpus(model.predict, shards, embeddings, lambda s: s > threshold)
    write_parquet_table(scores, outputs["scores"])
    _save_model(model, outputs["model"])
    report = {
        "iteration": iteration,
        "regressor": "RandomForestRegressor",
        "ratings": len(items),
        "rating_histogram": rating_histogram(y),
        "rating_stats": rating_stats(y),
        "labelled_ratings": labelled_ratings(items, shards, settings["positive_sources"]),
        "threshold": threshold,
        "forest": forest.__dict__,
        "split_seed": seed,
        "documents": scores.num_rows,
        "kept": int(pc_sum(scores.column("kept"))),
        "heldout": heldout,
        "labelled": labelled_check(scores, shards, settings["positive_sources"]),
        "seconds": round(time.time() - started, 2),
    }
    write_json(outputs["report"], report)
    log.info(
        "finegrained %d: D%d has %d of %d documents",
        iteration,
        iteration,
        report["kept"],
        report["documents"],
    )
    return report
