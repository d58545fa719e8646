"""The concept graph of Level-3 as arrays (paper §1.2): a document's subset, the concept
pairs of the extraction rows, the node and document index, the (doc, node) incidence, the
three co-occurrence count matrices (topic-topic, topic-KC, KC-KC), the sampler's flat arrays,
and the edge and degree statistics of the report. Pure functions: nothing here reads or
writes files (synthllm.stages.concept_graph does) or needs graph-tool
(synthllm.stages.graph_record does).

The flat arrays (`sampler_arrays`, written as sampler.npz): for sub-graph g in tt, tk, kk:
g_indptr (int64), g_indices (int32; the target kind's local index: topic i is node i, KC j is
node T+j), g_cumcount (inclusive running sum of the counts along each row, uint32 or int64);
doc_indptr, doc_nodes (the nodes of each document, sorted); node_indptr, node_docs (the
documents of each node, sorted); n_topics.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import polars as pl
import scipy.sparse as sp
from numba import njit, prange

from synthllm.core.concepts import clean_label, concept_key

TOPIC, KC = 0, 1
SUBGRAPH_NAMES = {"tt": "topic_topic", "tk": "topic_kc", "kk": "kc_kc"}


def subset_of(doc_id: str, n_subsets: int) -> int:
    """The subset a document belongs to: stable across runs, machines and Python versions."""
    if n_subsets == 1:
        return 0
    digest = hashlib.blake2b(doc_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_subsets


def concept_pairs(extracted: pl.DataFrame) -> pl.DataFrame:
    """(doc_id, kind, surface) for every topic and KC string of the extraction rows
    (columns doc_id and topics: list<struct<name, key_concepts>>)."""
    topics = extracted.select("doc_id", "topics").explode("topics", empty_as_null=False)
    topics = topics.unnest("topics")
    topic_pairs = topics.select(
        "doc_id", pl.lit(TOPIC, pl.Int8).alias("kind"), pl.col("name").alias("surface")
    )
    kc_pairs = (
        topics.select("doc_id", "key_concepts")
        .explode("key_concepts", empty_as_null=False)
        .drop_nulls("key_concepts")
        .select(
            "doc_id", pl.lit(KC, pl.Int8).alias("kind"), pl.col("key_concepts").alias("surface")
        )
    )
    return pl.concat([topic_pairs, kc_pairs])


def dense_codes(column: pl.Series) -> tuple[np.ndarray, list[str]]:
    """Codes of a string column's values, numbered in the sorted order of its distinct
    values, and those values: strings are compared once, everything after is integers."""
    return (column.rank("dense").cast(pl.Int64).to_numpy() - 1, column.unique().sort().to_list())


def index_concepts(
    pairs: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray, np.ndarray]:
    """Nodes, documents and the (doc, node) incidence of the concept pairs.

    Returns nodes (node, kind, key, label, doc_freq; topics first, each kind sorted by key),
    docs (doc, doc_id; sorted by doc_id), and the unique (doc, node) pairs as two int32 arrays
    sorted by doc then node. Each distinct surface string is normalised once; a node's label
    is its most frequent cleaned surface form, ties to the alphabetically first.
    """
    pairs = pairs.drop_nulls()
    surface_code, surfaces = dense_codes(pairs.get_column("surface"))
    keys = [concept_key(s) for s in surfaces]
    cleans = [clean_label(s) for s in surfaces]
    key_values = sorted(set(keys) - {""})
    key_index = {k: i for i, k in enumerate(key_values)}
    clean_values = sorted(set(cleans))
    clean_index = {c: i for i, c in enumerate(clean_values)}
    surface_key = np.array([key_index.get(k, -1) for k in keys], np.int64)
    surface_clean = np.array([clean_index[c] for c in cleans], np.int64)

    pair_key = surface_key[surface_code] if len(surface_code) else np.zeros(0, np.int64)
    valid = pair_key >= 0
    kind = pairs.get_column("kind").to_numpy().astype(np.int64)[valid]
    surface_code, pair_key = surface_code[valid], pair_key[valid]
    n_keys = max(len(key_values), 1)
    node_composite, pair_node = np.unique(kind * n_keys + pair_key, return_inverse=True)
    n_nodes = len(node_composite)
    doc_code, doc_ids = dense_codes(pairs.get_column("doc_id").filter(pl.Series(valid)))
    incidence = np.unique(doc_code * max(n_nodes, 1) + pair_node)
    doc = (incidence // max(n_nodes, 1)).astype(np.int32)
    node = (incidence % max(n_nodes, 1)).astype(np.int32)

    n_clean = max(len(clean_values), 1)
    label_pairs, label_counts = np.unique(
        pair_node * n_clean + surface_clean[surface_code], return_counts=True
    )
    label_node, label_clean = label_pairs // n_clean, label_pairs % n_clean
    order = np.lexsort((label_clean, -label_counts, label_node))
    first = order[np.diff(label_node[order], prepend=-1) != 0]
    label = np.array(clean_values, dtype=object)[label_clean[first]] if n_nodes else []

    nodes = pl.DataFrame(
        {
            "node": np.arange(n_nodes, dtype=np.int32),
            "kind": np.where(node_composite // n_keys == TOPIC, "topic", "key_concept"),
            "key": np.array(key_values, dtype=object)[node_composite % n_keys] if n_nodes else [],
            "label": label,
            "doc_freq": np.bincount(node, minlength=n_nodes).astype(np.int32),
        },
        schema={
            "node": pl.Int32,
            "kind": pl.String,
            "key": pl.String,
            "label": pl.String,
            "doc_freq": pl.Int32,
        },
    )
    docs = pl.DataFrame(
        {"doc": np.arange(len(doc_ids), dtype=np.int32), "doc_id": doc_ids},
        schema={"doc": pl.Int32, "doc_id": pl.String},
    )
    return nodes, docs, doc, node


def incidence_csr(
    doc: np.ndarray, node: np.ndarray, n_docs: int, n_nodes: int
) -> dict[str, np.ndarray]:
    """Both directions of the (doc, node) incidence, given sorted by doc then node:
    doc_indptr/doc_nodes (each document's nodes, sorted) and node_indptr/node_docs (each
    node's documents, sorted)."""
    order = np.argsort(node, kind="stable")
    return {
        "doc_indptr": np.concatenate([[0], np.cumsum(np.bincount(doc, minlength=n_docs))]),
        "doc_nodes": node.astype(np.int32),
        "node_indptr": np.concatenate([[0], np.cumsum(np.bincount(node, minlength=n_nodes))]),
        "node_docs": doc[order].astype(np.int32),
    }


@njit(parallel=True, cache=True)
def _cooccurrence_rows(
    row_lo,
    n_rows,
    col_lo,
    n_cols,
    node_indptr,
    node_docs,
    doc_indptr,
    doc_nodes,
    indptr,
    indices,
    data,
    fill,
    n_blocks,
):
    """One pass over rows u in [row_lo, row_lo + n_rows): for every document of u, count its
    nodes v in [col_lo, col_lo + n_cols), v != u. With fill false, write each row's length to
    indptr[r + 1]; with fill true, write the entries, in first-seen order."""
    for b in prange(n_blocks):
        seen = np.zeros(n_cols, np.int32)
        touched = np.empty(n_cols, np.int32)
        for r in range(b * n_rows // n_blocks, (b + 1) * n_rows // n_blocks):
            u = row_lo + r
            n_touched = 0
            for x in range(node_indptr[u], node_indptr[u + 1]):
                d = node_docs[x]
                for y in range(doc_indptr[d], doc_indptr[d + 1]):
                    v = doc_nodes[y]
                    c = v - col_lo
                    if v == u or c < 0 or c >= n_cols:
                        continue
                    if seen[c] == 0:
                        touched[n_touched] = c
                        n_touched += 1
                    seen[c] += 1
            if fill:
                at = indptr[r]
                for t in range(n_touched):
                    indices[at + t] = touched[t]
                    data[at + t] = seen[touched[t]]
            else:
                indptr[r + 1] = n_touched
            for t in range(n_touched):
                seen[touched[t]] = 0


def cooccurrence(
    incidence: dict[str, np.ndarray], n_topics: int, n_nodes: int, threads: int | None = None
) -> dict[str, sp.csr_matrix]:
    """The three co-occurrence count matrices (topic-topic, topic-KC, KC-KC), no diagonal:
    entry (u, v) = number of documents that contain both u and v. Rows are topics or KCs
    (local numbering), each row's entries in a fixed order (first seen walking u's documents
    in doc order), so the sampler's draws do not depend on a library's sort."""
    n_blocks = 8 * (threads or os.cpu_count() or 1)
    n_kcs = n_nodes - n_topics
    out = {}
    for name, (row_lo, n_rows, col_lo, n_cols) in {
        "tt": (0, n_topics, 0, n_topics),
        "tk": (0, n_topics, n_topics, n_kcs),
        "kk": (n_topics, n_kcs, n_topics, n_kcs),
    }.items():
        indptr = np.zeros(n_rows + 1, np.int64)
        args = (
            row_lo,
            n_rows,
            col_lo,
            n_cols,
            incidence["node_indptr"],
            incidence["node_docs"],
            incidence["doc_indptr"],
            incidence["doc_nodes"],
        )
        _cooccurrence_rows(
            *args,
            indptr,
            np.zeros(0, np.int32),
            np.zeros(0, np.int32),
            False,
            max(1, min(n_blocks, n_rows)),
        )
        np.cumsum(indptr, out=indptr)
        indices, data = np.empty(indptr[-1], np.int32), np.empty(indptr[-1], np.int32)
        _cooccurrence_rows(*args, indptr, indices, data, True, max(1, min(n_blocks, n_rows)))
        out[name] = sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))
    return out


@njit(cache=True)
def _largest_row_sum(indptr, data):
    largest = 0
    for r in range(len(indptr) - 1):
        total = 0
        for i in range(indptr[r], indptr[r + 1]):
            total += data[i]
        largest = max(largest, total)
    return largest


@njit(cache=True)
def _row_cumsum(indptr, data, out):
    for r in range(len(indptr) - 1):
        running = 0
        for i in range(indptr[r], indptr[r + 1]):
            running += data[i]
            out[i] = running


def row_cumcount(m: sp.csr_matrix) -> np.ndarray:
    """Inclusive running sum of each row's counts, in the narrowest type that holds it
    (uint32 unless a row's total reaches 2**32)."""
    largest = _largest_row_sum(m.indptr, m.data) if m.nnz else 0
    out = np.empty(m.nnz, np.uint32 if largest < 2**32 else np.int64)
    _row_cumsum(m.indptr, m.data, out)
    return out


def sampler_arrays(
    counts: dict[str, sp.csr_matrix], incidence: dict[str, np.ndarray], n_topics: int
) -> dict[str, np.ndarray]:
    """The flat arrays of sampler.npz (see the module docstring); they share memory with the
    count matrices where the types agree."""
    arrays = {"n_topics": np.array(n_topics), **incidence}
    for name, m in counts.items():
        arrays[f"{name}_indptr"] = np.asarray(m.indptr, np.int64)
        arrays[f"{name}_indices"] = np.asarray(m.indices, np.int32)
        arrays[f"{name}_cumcount"] = row_cumcount(m)
    return arrays


def degree_summary(degrees: np.ndarray) -> dict:
    if degrees.size == 0:
        return {"nodes": 0}
    bins = 2 ** np.arange(0, int(np.log2(max(degrees.max(), 1))) + 2)
    hist, _ = np.histogram(degrees, bins=np.concatenate([[0], bins]))
    return {
        "nodes": int(degrees.size),
        "isolated": int((degrees == 0).sum()),
        "min": int(degrees.min()),
        "median": float(np.median(degrees)),
        "mean": round(float(degrees.mean()), 3),
        "p99": float(np.percentile(degrees, 99)),
        "max": int(degrees.max()),
        "histogram": {
            f"[{lo},{hi})": int(n)
            for lo, hi, n in zip(np.concatenate([[0], bins[:-1]]), bins, hist)
        },
    }


def count_statistics(counts: dict[str, sp.csr_matrix]) -> dict:
    """Edges and degree distributions per sub-graph, from the count matrices."""
    tk = counts["tk"]
    degrees = {
        "topic_topic": np.diff(counts["tt"].indptr),
        "topic_kc (topics)": np.diff(tk.indptr),
        "topic_kc (key concepts)": np.bincount(tk.indices, minlength=tk.shape[1]),
        "kc_kc": np.diff(counts["kk"].indptr),
    }
    n_count_1 = sum(int((m.data == 1).sum()) for m in counts.values())
    n_entries = sum(m.nnz for m in counts.values())
    return {
        "edges": {
            SUBGRAPH_NAMES[k]: int(m.nnz // (1 if k == "tk" else 2)) for k, m in counts.items()
        },
        "edges_with_count_1": round(n_count_1 / n_entries, 4) if n_entries else None,
        "degrees": {k: degree_summary(v) for k, v in degrees.items()},
    }
