"""Stage 4a: the global concept graph of Level-3 (paper §1.2, Eq. 5).

Nodes are the distinct topics and key concepts (KCs) extracted from the reference documents
(merged by `concepts.concept_key`); two nodes are joined when they appear in the same
document, with the number of such documents as the edge's `count` and
`weight = log(count + eps)` (Eq. 5). The edges fall into three sub-graphs: topic-topic,
topic-KC and KC-KC.

graph-tool holds the graph of record (names, kinds, counts, weights; statistics come from it
or are checked against it). The walks do not step through graph-tool: at paper scale a
Python loop over its edges takes ~25 min for the 160,000 walks and keeping the graphs loaded
while sampling does not fit in memory (../shared/notes/graph-scale.md). The same edges are
therefore also written as flat CSR arrays, which the sampler (synthllm.walks) reads.

The documents may be split into `n_subsets` subsets, each with its own graph (the paper's
"each subset" in §5.1); a document's subset is a hash of its id.

Outputs of one subset (`graph/subset-{i}-of-{n}/`):
    graph.gt       graph-tool graph: vertices are the topics (0..T-1) then the KCs (T..T+K-1);
                   vertex properties kind (short: 0 topic, 1 KC), key, label (string),
                   doc_freq (int); edge properties count (int) and weight (double, Eq. 5);
                   graph properties eps, subset. An edge's sub-graph is the sum of its ends'
                   kinds (0 topic-topic, 1 topic-KC, 2 KC-KC), so it is not stored: at paper
                   scale every byte per edge costs 0.25 GiB.
    nodes.parquet  node (int32, vertex index), kind (string: topic | key_concept), key, label
                   (string), doc_freq (int32: documents that name it)
    docs.parquet   doc (int32, row in the arrays below; documents sorted by doc_id), doc_id
                   (string), n_topics, n_kcs (int32)
    sampler.npz    flat arrays; for sub-graph g in tt, tk, kk: g_indptr (int64), g_indices
                   (int32; the target kind's local index: topic i is node i, KC j is node T+j),
                   g_cumcount (inclusive running sum of the counts along each row, uint32 or
                   int64); doc_indptr, doc_nodes (the nodes of each document, sorted);
                   node_indptr, node_docs (the documents of each node, sorted); n_topics.
    report.json    nodes and edges per kind and sub-graph, degree distributions, components,
                   how often an edge has count 1, eps, wall time and peak memory per step
    counts.json    documents in; out = documents in the graph; dropped: other_subset,
                   no_concepts (extraction failed or named nothing)
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import scipy.sparse as sp
from numba import njit, prange

from synthllm.concepts import ConceptGraphError, clean_label, concept_key
from synthllm.io import StepLog, atomic_path, write_counts, write_json, write_parquet_table

log = logging.getLogger("synthllm.graph")

TOPIC, KC = 0, 1
CHUNK = 20_000_000  # edges per array handed to graph-tool or numpy at a time (~160-320 MB)
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


def edge_list(m: sp.csr_matrix, upper: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source row, target column, count) of a count matrix; `upper` keeps each undirected
    edge of a symmetric matrix once."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int32), np.diff(m.indptr))
    if not upper:
        return rows, m.indices, m.data
    keep = m.indices > rows
    return rows[keep], m.indices[keep], m.data[keep]


def graph_of_record(
    nodes: pl.DataFrame,
    edge_chunks: Iterable[np.ndarray],
    count_chunks: Callable[[], Iterable[np.ndarray]],
    eps: float,
    subset: str,
):
    """The graph-tool graph (see the module docstring): vertices from `nodes`, edges from
    (n, 2) arrays of vertex pairs, then their counts (chunks in the same order)."""
    from graph_tool import Graph

    g = Graph(directed=False)
    g.add_vertex(nodes.height)
    g.vp.kind = g.new_vp("short")
    g.vp.kind.a = (nodes.get_column("kind") == "key_concept").to_numpy().astype(np.int16)
    g.vp.doc_freq = g.new_vp("int")
    g.vp.doc_freq.a = nodes.get_column("doc_freq").to_numpy()
    g.vp.key, g.vp.label = g.new_vp("string"), g.new_vp("string")
    for v, k, lab in zip(
        range(nodes.height), nodes.get_column("key").to_list(), nodes.get_column("label").to_list()
    ):
        g.vp.key[v], g.vp.label[v] = k, lab
    for pairs in edge_chunks:
        g.add_edge_list(pairs)
    # the adjacency lists grew by doubling: give the slack back before the edge properties
    # take their 12 bytes per edge
    g.shrink_to_fit()
    # a fresh graph numbers its edges in insertion order: property arrays follow the counts
    g.ep.count, g.ep.weight = g.new_ep("int"), g.new_ep("double")
    start = 0
    for part in count_chunks():
        g.ep.count.a[start : start + len(part)] = part
        g.ep.weight.a[start : start + len(part)] = np.log(part + eps)
        start += len(part)
    if start != g.num_edges():
        raise AssertionError(f"graph has {g.num_edges()} edges, {start} counts")
    g.gp.eps = g.new_gp("double", eps)
    g.gp.subset = g.new_gp("string", subset)
    return g


def spill_edges(
    counts: dict[str, sp.csr_matrix],
    n_topics: int,
    pairs_file: BinaryIO,
    counts_file: BinaryIO,
    chunk: int = CHUNK,
) -> int:
    """Write every edge (topic-topic, topic-KC, KC-KC; vertex numbering) to `pairs_file` as
    int32 pairs and its count to `counts_file` as int32, freeing each count matrix on the
    way: at paper scale the edge arrays would otherwise sit in memory beside graph-tool's
    adjacency lists. Returns the number of edges."""
    offsets = {"tt": (0, 0), "tk": (0, n_topics), "kk": (n_topics, n_topics)}
    n_edges = 0
    for name in ("tt", "tk", "kk"):
        src, tgt, data = edge_list(counts.pop(name), upper=name != "tk")
        for lo in range(0, len(src), chunk):
            np.column_stack(
                [src[lo : lo + chunk] + offsets[name][0], tgt[lo : lo + chunk] + offsets[name][1]]
            ).astype(np.int32).tofile(pairs_file)
        data.astype(np.int32).tofile(counts_file)
        n_edges += len(src)
        del src, tgt, data
    return n_edges


def read_chunks(
    file: BinaryIO, n_items: int, width: int, chunk: int = CHUNK
) -> Iterator[np.ndarray]:
    """int32 records of `width` values from the start of `file`, `chunk` records at a time."""
    file.seek(0)
    for lo in range(0, n_items, chunk):
        yield np.fromfile(file, np.int32, width * min(chunk, n_items - lo)).reshape(-1, width)


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


def components(g) -> dict:
    from graph_tool.topology import label_components

    if not g.num_vertices():
        return {"count": 0}
    _, sizes = label_components(g)
    return {
        "count": int(len(sizes)),
        "largest": int(sizes.max()),
        "largest_fraction": round(float(sizes.max() / g.num_vertices()), 4),
    }


def build(pairs: pl.DataFrame, out_dir: str | Path, eps: float, subset: str) -> dict:
    """Index, count, write the sampler arrays, build and save the graph of record and its
    report: every output of the stage but counts.json. Returns the report.

    The order keeps the peak low at paper scale: the sampler arrays are written and freed,
    and the edges spilled to a scratch file, before graph-tool builds its adjacency lists."""
    out = Path(out_dir)
    steps = StepLog("synthllm.graph")
    nodes, docs, doc, node = index_concepts(pairs)
    del pairs  # the caller hands them over: at paper scale they hold 20 M strings
    n_topics = int((nodes.get_column("kind") == "topic").sum())
    log.info(
        "subset %s: %d documents, %d topics, %d key concepts, %d document-concept pairs",
        subset,
        docs.height,
        n_topics,
        nodes.height - n_topics,
        len(doc),
    )
    steps("index concepts")
    incidence = incidence_csr(doc, node, docs.height, nodes.height)
    del doc, node
    counts = cooccurrence(incidence, n_topics, nodes.height)
    steps("co-occurrence counts")
    arrays = sampler_arrays(counts, incidence, n_topics)
    per_doc = np.diff(arrays["doc_indptr"])
    topics_per_doc = (
        np.add.reduceat(arrays["doc_nodes"] < n_topics, arrays["doc_indptr"][:-1])
        if docs.height
        else np.zeros(0, np.int64)
    )
    docs = docs.with_columns(
        pl.Series("n_topics", topics_per_doc, pl.Int32),
        pl.Series("n_kcs", per_doc - topics_per_doc, pl.Int32),
    )
    with atomic_path(out / "sampler.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    write_parquet_table(nodes.to_arrow(), out / "nodes.parquet")
    write_parquet_table(docs.to_arrow(), out / "docs.parquet")
    del arrays, incidence
    steps("sampler arrays (written)")
    stats = count_statistics(counts)
    with (
        tempfile.TemporaryFile(dir=out) as pairs_file,
        tempfile.TemporaryFile(dir=out) as counts_file,
    ):
        n_edges = spill_edges(counts, n_topics, pairs_file, counts_file)
        steps("edge lists (spilled to disk)")
        g = graph_of_record(
            nodes,
            (p.astype(np.int64) for p in read_chunks(pairs_file, n_edges, 2)),
            lambda: (c.ravel() for c in read_chunks(counts_file, n_edges, 1)),
            eps,
            subset,
        )
    steps("graph-tool graph")
    stats["components"] = components(g)
    with atomic_path(out / "graph.gt") as tmp:
        g.save(str(tmp), fmt="gt")
    steps("components + graph.gt saved")
    report = {
        "subset": subset,
        "documents": docs.height,
        "eps": eps,
        "nodes": {"topic": n_topics, "key_concept": nodes.height - n_topics},
        **stats,
        "steps": steps.steps,
    }
    write_json(out / "report.json", report)
    return report


def read_extractions(paths: list[str]) -> pl.DataFrame:
    frames = [pl.read_parquet(p, columns=["doc_id", "topics", "status"]) for p in paths]
    return pl.concat(frames) if frames else pl.DataFrame()


# the outputs of `build`, by their names in the rule: all in one folder
OUTPUT_FILES = {
    "graph": "graph.gt",
    "sampler": "sampler.npz",
    "nodes": "nodes.parquet",
    "docs": "docs.parquet",
    "report": "report.json",
    "counts": "counts.json",
}


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The concept graph of one subset: inputs `extracted` (every extract shard), outputs
    OUTPUT_FILES in one folder. Settings: graph.eps as eps, and the job's subset (e.g.
    000-of-001) (rules/graph.smk)."""
    out_dir = Path(outputs["counts"]).parent
    for name, file in OUTPUT_FILES.items():
        if Path(outputs[name]) != out_dir / file:
            raise ConceptGraphError(
                f"output {name}: {outputs[name]} is not {out_dir / file} (the graph's files "
                "share one folder)"
            )
    subset, n_subsets = (int(x) for x in settings["subset"].split("-of-"))
    name = f"{subset:03d}-of-{n_subsets:03d}"
    extracted = read_extractions(inputs["extracted"])
    mine = extracted.filter(
        pl.col("doc_id").map_elements(
            lambda d: subset_of(d, n_subsets) == subset, return_dtype=pl.Boolean
        )
    )
    n_in, n_mine = extracted.height, mine.height
    pairs = [concept_pairs(mine.filter(pl.col("status") == "ok"))]
    del extracted, mine
    # popped, so that build holds the only reference and can free the strings
    report = build(pairs.pop(), out_dir, settings["eps"], name)
    counts = write_counts(
        outputs["counts"],
        "graph",
        n_in,
        report["documents"],
        {"other_subset": n_in - n_mine, "no_concepts": n_mine - report["documents"]},
        subset=name,
        topics=report["nodes"]["topic"],
        key_concepts=report["nodes"]["key_concept"],
        edges=report["edges"],
    )
    log.info("graph: %s", counts)
    return counts
