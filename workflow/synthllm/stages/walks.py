"""Stage 4b: random-walk sampling of concept combinations (paper §1.2 Level-3, step 2,
Eq. 6) and their reference documents by exact Jaccard similarity (step 3).

Eq. 6: from node u the walk moves to neighbour v with probability softmax over N(u) of
w(u, v) = log(count(u, v) + eps), which is (count(u, v) + eps) / sum_v' (count(u, v') + eps).
The sampler draws exactly that from the flat arrays of synthllm.stages.concept_graph: a uniform number
times the row total, then a binary search in the row's running counts (+ eps per entry).

For each epoch and for every topic as start, in that order:
  1. a walk of `topic_steps` steps on the topic-topic graph adds related topics;
  2. one step on the topic-KC graph picks the first key concept (KC);
  3. a walk of `kc_steps` steps on the KC-KC graph adds KCs.

Choices the paper leaves open, each a config key (graph.walks.*) with its default:
  topic_steps [1, 2]  inclusive range; each walk draws its length uniformly from it
  kc_steps    [3, 4]  the same for the KC walk
  kc_start    last    which sampled topic step 2 starts from: `last` (where the topic walk
                      ended, so the walk continues), `start` (the start topic) or `uniform`
                      (a uniformly drawn sampled topic)
  revisit     false   a walk never returns to a node it visited: the step draws from the
                      unvisited neighbours with Eq. 6 renormalised over them (rejection
                      sampling, then an exact draw over the row if rejections keep failing)
  dead_end    stop    no (unvisited) neighbour left: `stop` keeps the nodes reached so far
                      (complete = false); `drop` discards the set
A start topic whose step 2 is impossible (a topic with no KC) gives no set (dropped:
no_key_concept).

Reproducible: one generator seeded with `seed` and a fixed walk order, so a seed gives the
same sets on every machine.

Reference documents: the `references` (2 in the paper) documents with the highest Jaccard
similarity between the set's nodes (topics and KCs) and the document's; ties go to the
document whose doc_id sorts first. Exact, over an inverted index: MinHash misses most of the
true top 2 at this similarity range (../shared/notes/graph-scale.md).

Output schema (`walks/subset-{i}-of-{n}.parquet`):
    set_id        string  "s{i}-e{epoch}-t{start topic}", unique within the run
    subset        string
    epoch         int32
    topic_nodes   list<int32>   graph vertices of the topics, walk order (first = start)
    kc_nodes      list<int32>   graph vertices of the KCs, walk order
    topics        list<string>  their labels
    key_concepts  list<string>
    complete      bool    every step of both walks was taken
    ref_doc_ids   list<string>  reference documents, best first
    ref_jaccard   list<float64>
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from numba import njit, prange

from synthllm.core.concepts import ConceptGraphError
from synthllm.core.files import write_counts, write_parquet_table

log = logging.getLogger("synthllm.stages.walks")

KC_START = {"last": 0, "start": 1, "uniform": 2}
DEAD_END = ("stop", "drop")
# step-2 outcome codes of _walks
_OK, _NO_KEY_CONCEPT = 0, 1


@dataclass(frozen=True)
class WalkSettings:
    """Config key graph.walks plus graph.eps (config/schema.yaml holds the defaults)."""

    epochs: int
    topic_steps: tuple[int, int]
    kc_steps: tuple[int, int]
    kc_start: str
    revisit: bool
    dead_end: str
    eps: float
    seed: int

    def __post_init__(self):
        for name in ("topic_steps", "kc_steps"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConceptGraphError(
                    f"graph.walks.{name}: need 0 <= low <= high, got {[lo, hi]}"
                )
        if self.kc_start not in KC_START:
            raise ConceptGraphError(
                f"graph.walks.kc_start: one of {sorted(KC_START)}, got {self.kc_start!r}"
            )
        if self.dead_end not in DEAD_END:
            raise ConceptGraphError(
                f"graph.walks.dead_end: one of {DEAD_END}, got {self.dead_end!r}"
            )
        if self.epochs < 1 or self.eps <= 0:
            raise ConceptGraphError("graph.walks.epochs must be >= 1 and graph.eps > 0")


@njit(cache=True)
def _seed(seed):
    np.random.seed(seed)


@njit(cache=True)
def _seen(visited, n_visited, v):
    for i in range(n_visited):
        if visited[i] == v:
            return True
    return False


@njit(cache=True)
def _step(indptr, indices, cum, eps, u, visited, n_visited, revisit):
    """One Eq. 6 step from u; -1 when u has no (unvisited) neighbour."""
    lo, hi = indptr[u], indptr[u + 1]
    deg = hi - lo
    if deg == 0:
        return -1
    total = cum[hi - 1] + deg * eps
    for _ in range(64):
        r = np.random.random() * total
        a, b = 0, deg - 1
        while a < b:  # first entry whose running weight exceeds r
            m = (a + b) // 2
            if cum[lo + m] + (m + 1) * eps > r:
                b = m
            else:
                a = m + 1
        v = indices[lo + a]
        if revisit or not _seen(visited, n_visited, v):
            return v
    # the unvisited neighbours carry little weight: draw among them exactly
    total = 0.0
    for i in range(deg):
        if not _seen(visited, n_visited, indices[lo + i]):
            total += cum[lo + i] - (cum[lo + i - 1] if i > 0 else 0) + eps
    if total == 0.0:
        return -1
    r = np.random.random() * total
    last = -1
    for i in range(deg):
        v = indices[lo + i]
        if not _seen(visited, n_visited, v):
            last = v
            r -= cum[lo + i] - (cum[lo + i - 1] if i > 0 else 0) + eps
            if r < 0:
                return v
    return last


@njit(cache=True)
def _extend(indptr, indices, cum, eps, path, n, steps, revisit):
    """Up to `steps` Eq. 6 steps from path[n - 1], appended to path; returns the new length
    and whether every step was taken."""
    for _ in range(steps):
        v = _step(indptr, indices, cum, eps, path[n - 1], path, n, revisit)
        if v < 0:
            return n, False
        path[n] = v
        n += 1
    return n, True


@njit(cache=True)
def _walks(
    tt_indptr,
    tt_indices,
    tt_cum,
    tk_indptr,
    tk_indices,
    tk_cum,
    kk_indptr,
    kk_indices,
    kk_cum,
    eps,
    n_topics,
    epochs,
    t_lo,
    t_hi,
    k_lo,
    k_hi,
    kc_start,
    revisit,
    seed,
):
    _seed(seed)
    n = epochs * n_topics
    topics = np.full((n, t_hi + 1), -1, np.int32)
    kcs = np.full((n, k_hi + 1), -1, np.int32)
    complete = np.zeros(n, np.bool_)
    outcome = np.zeros(n, np.int8)
    i = 0
    for _ in range(epochs):
        for t0 in range(n_topics):
            topics[i, 0] = t0
            steps = t_lo + np.random.randint(0, t_hi - t_lo + 1)
            nt, done = _extend(tt_indptr, tt_indices, tt_cum, eps, topics[i], 1, steps, revisit)
            if kc_start == 0:
                src = topics[i, nt - 1]
            elif kc_start == 1:
                src = t0
            else:
                src = topics[i, np.random.randint(0, nt)]
            k = _step(tk_indptr, tk_indices, tk_cum, eps, src, kcs[i], 0, True)
            if k < 0:
                outcome[i] = _NO_KEY_CONCEPT
                i += 1
                continue
            kcs[i, 0] = k
            steps = k_lo + np.random.randint(0, k_hi - k_lo + 1)
            _, kc_done = _extend(kk_indptr, kk_indices, kk_cum, eps, kcs[i], 1, steps, revisit)
            complete[i] = done and kc_done
            i += 1
    return topics, kcs, complete, outcome


def sample(arrays: dict[str, np.ndarray], settings: WalkSettings) -> dict[str, np.ndarray]:
    """All walks: topics (n, max topics) and kcs (n, max KCs) as local ids padded with -1,
    complete (n,), outcome (n,: 0 ok, 1 no_key_concept), epoch and start (n,)."""
    n_topics = int(arrays["n_topics"])
    s = settings
    args = [
        arrays[f"{g}_{part}"]
        for g in ("tt", "tk", "kk")
        for part in ("indptr", "indices", "cumcount")
    ]
    topics, kcs, complete, outcome = _walks(
        *args,
        s.eps,
        n_topics,
        s.epochs,
        *s.topic_steps,
        *s.kc_steps,
        KC_START[s.kc_start],
        s.revisit,
        s.seed,
    )
    return {
        "topics": topics,
        "kcs": kcs,
        "complete": complete,
        "outcome": outcome,
        "epoch": np.repeat(np.arange(s.epochs, dtype=np.int32), n_topics),
        "start": np.tile(np.arange(n_topics, dtype=np.int32), s.epochs),
    }


@njit(parallel=True, cache=True)
def _top_k_jaccard(q_indptr, q_nodes, node_indptr, node_docs, doc_sizes, k, n_blocks):
    nq = len(q_indptr) - 1
    n_docs = len(doc_sizes)
    best_doc = np.full((nq, k), -1, np.int32)
    best_j = np.zeros((nq, k), np.float64)
    for b in prange(n_blocks):
        overlap = np.zeros(n_docs, np.int32)
        touched = np.empty(n_docs, np.int32)
        for q in range(b * nq // n_blocks, (b + 1) * nq // n_blocks):
            n_touched = 0
            q_size = q_indptr[q + 1] - q_indptr[q]
            for p in range(q_indptr[q], q_indptr[q + 1]):
                node = q_nodes[p]
                for x in range(node_indptr[node], node_indptr[node + 1]):
                    d = node_docs[x]
                    if overlap[d] == 0:
                        touched[n_touched] = d
                        n_touched += 1
                    overlap[d] += 1
            for t in range(n_touched):
                d = touched[t]
                inter = overlap[d]
                overlap[d] = 0
                j = inter / (q_size + doc_sizes[d] - inter)
                pos = k
                while pos > 0 and (
                    best_doc[q, pos - 1] < 0
                    or j > best_j[q, pos - 1]
                    or (j == best_j[q, pos - 1] and d < best_doc[q, pos - 1])
                ):
                    pos -= 1
                if pos < k:
                    for s in range(k - 1, pos, -1):
                        best_doc[q, s] = best_doc[q, s - 1]
                        best_j[q, s] = best_j[q, s - 1]
                    best_doc[q, pos] = d
                    best_j[q, pos] = j
    return best_doc, best_j


def top_k_jaccard(
    queries: list[np.ndarray],
    node_indptr: np.ndarray,
    node_docs: np.ndarray,
    doc_sizes: np.ndarray,
    k: int,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each query node set: the k documents of highest Jaccard similarity (doc indices,
    -1 where fewer than k documents share a node) and their similarities. Ties go to the
    smaller document index. Queries must hold distinct nodes."""
    q_indptr = np.zeros(len(queries) + 1, np.int64)
    q_indptr[1:] = np.cumsum([len(q) for q in queries])
    q_nodes = np.concatenate(queries).astype(np.int32) if queries else np.zeros(0, np.int32)
    n_blocks = max(1, min(len(queries), 4 * (threads or os.cpu_count() or 1)))
    return _top_k_jaccard(
        q_indptr, q_nodes, node_indptr, node_docs, doc_sizes.astype(np.int32), k, n_blocks
    )


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The concept sets of one subset and their reference documents: inputs sampler, nodes,
    docs (synthllm.stages.concept_graph), outputs walks, counts. Settings: graph.walks as walks, graph.eps
    as eps, graph.references as references, and the job's subset (rules/04_graph.smk)."""
    walk_settings = WalkSettings(**settings["walks"], eps=settings["eps"])
    references = settings["references"]
    with np.load(inputs["sampler"]) as z:
        arrays = {name: z[name] for name in z.files}
    nodes = pl.read_parquet(inputs["nodes"])
    docs = pl.read_parquet(inputs["docs"])
    subset = settings["subset"]
    n_topics = int(arrays["n_topics"])
    walks = sample(arrays, walk_settings)
    n_in = len(walks["complete"])
    keep = walks["outcome"] == _OK
    dead_ends = keep & ~walks["complete"]
    if walk_settings.dead_end == "drop":
        keep &= walks["complete"]
    # global vertex ids: topics keep theirs, KC j is vertex n_topics + j
    topic_nodes = [row[row >= 0] for row in walks["topics"][keep]]
    kc_nodes = [row[row >= 0] + n_topics for row in walks["kcs"][keep]]
    queries = [np.unique(np.concatenate([t, c])) for t, c in zip(topic_nodes, kc_nodes)]
    ref_doc, ref_j = top_k_jaccard(
        queries,
        arrays["node_indptr"],
        arrays["node_docs"],
        np.diff(arrays["doc_indptr"]),
        references,
        execution["threads"],
    )
    label = np.array(nodes.get_column("label").to_list(), dtype=object)
    doc_ids = np.array(docs.get_column("doc_id").to_list(), dtype=object)
    epochs, starts = walks["epoch"][keep], walks["start"][keep]
    table = pl.DataFrame(
        {
            "set_id": [f"s{subset}-e{e}-t{t}" for e, t in zip(epochs, starts)],
            "subset": [subset] * len(queries),
            "epoch": epochs,
            "topic_nodes": [t.tolist() for t in topic_nodes],
            "kc_nodes": [c.tolist() for c in kc_nodes],
            "topics": [label[t].tolist() for t in topic_nodes],
            "key_concepts": [label[c].tolist() for c in kc_nodes],
            "complete": walks["complete"][keep],
            "ref_doc_ids": [doc_ids[d[d >= 0]].tolist() for d in ref_doc],
            "ref_jaccard": [j[d >= 0].tolist() for d, j in zip(ref_doc, ref_j)],
        },
        schema={
            "set_id": pl.String,
            "subset": pl.String,
            "epoch": pl.Int32,
            "topic_nodes": pl.List(pl.Int32),
            "kc_nodes": pl.List(pl.Int32),
            "topics": pl.List(pl.String),
            "key_concepts": pl.List(pl.String),
            "complete": pl.Boolean,
            "ref_doc_ids": pl.List(pl.String),
            "ref_jaccard": pl.List(pl.Float64),
        },
    )
    write_parquet_table(table.to_arrow(), outputs["walks"])
    dropped = {"no_key_concept": int((walks["outcome"] == _NO_KEY_CONCEPT).sum())}
    if walk_settings.dead_end == "drop":
        dropped["dead_end"] = int(dead_ends.sum())
    sizes = [len(q) for q in queries]
    log.info(
        "subset %s: %d walks, %d sets kept (%d ended early), dropped %s",
        subset,
        n_in,
        len(queries),
        int(dead_ends.sum()),
        dropped,
    )
    return write_counts(
        outputs["counts"],
        "walks",
        n_in,
        len(queries),
        dropped,
        subset=subset,
        settings=asdict(walk_settings),
        references=references,
        ended_early=int(dead_ends.sum()),
        mean_concepts_per_set=round(float(np.mean(sizes)), 3) if sizes else None,
    )
