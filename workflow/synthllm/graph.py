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
                   doc_freq (int); edge properties subgraph (short: 0 topic-topic, 1 topic-KC,
                   2 KC-KC), count (int), weight (double, Eq. 5); graph properties eps, subset.
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
                   how often an edge has count 1, the settings
    counts.json    documents in; out = documents in the graph; dropped: other_subset,
                   no_concepts (extraction failed or named nothing)
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from synthllm.concepts import clean_label, concept_key
from synthllm.io import atomic_path, write_counts, write_json, write_parquet_table

log = logging.getLogger("synthllm.graph")

TOPIC, KC = 0, 1
SUBGRAPHS = {"tt": 0, "tk": 1, "kk": 2}
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
    topic_pairs = topics.select("doc_id", pl.lit(TOPIC, pl.Int8).alias("kind"),
                                pl.col("name").alias("surface"))
    kc_pairs = (topics.select("doc_id", "key_concepts").explode("key_concepts", empty_as_null=False)
                .drop_nulls("key_concepts")
                .select("doc_id", pl.lit(KC, pl.Int8).alias("kind"),
                        pl.col("key_concepts").alias("surface")))
    return pl.concat([topic_pairs, kc_pairs])


def index_concepts(pairs: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray,
                                                  np.ndarray]:
    """Nodes, documents and the (doc, node) incidence of the concept pairs.

    Returns nodes (node, kind, key, label, doc_freq; topics first, each kind sorted by key),
    docs (doc, doc_id; sorted by doc_id), and the unique (doc, node) pairs as two int32 arrays.
    Each distinct surface string is normalised once.
    """
    surfaces = pairs.get_column("surface").unique()
    keys = pl.DataFrame({"surface": surfaces,
                         "key": [concept_key(s) for s in surfaces.to_list()],
                         "clean": [clean_label(s) for s in surfaces.to_list()]})
    keyed = pairs.join(keys, on="surface").filter(pl.col("key") != "")
    labels = (keyed.group_by("kind", "key", pl.col("clean").alias("surface")).len()
              .sort(["kind", "key", "len", "surface"], descending=[False, False, True, False])
              .group_by("kind", "key", maintain_order=True).first()
              .select("kind", "key", pl.col("surface").alias("label")))
    nodes = labels.sort("kind", "key").with_row_index("node")
    docs = keyed.select("doc_id").unique().sort("doc_id").with_row_index("doc")
    incidence = (keyed.join(nodes.select("kind", "key", "node"), on=["kind", "key"])
                 .join(docs, on="doc_id").select("doc", "node").unique()
                 .sort("doc", "node"))
    doc_freq = incidence.group_by("node").len().rename({"len": "doc_freq"})
    nodes = (nodes.join(doc_freq, on="node").sort("node")
             .select(pl.col("node").cast(pl.Int32),
                     pl.when(pl.col("kind") == TOPIC).then(pl.lit("topic"))
                     .otherwise(pl.lit("key_concept")).alias("kind"),
                     "key", "label", pl.col("doc_freq").cast(pl.Int32)))
    return (nodes, docs.with_columns(pl.col("doc").cast(pl.Int32)),
            incidence.get_column("doc").to_numpy().astype(np.int32),
            incidence.get_column("node").to_numpy().astype(np.int32))


def cooccurrence(doc: np.ndarray, node: np.ndarray, n_docs: int, n_topics: int,
                 n_nodes: int) -> dict[str, sp.csr_matrix]:
    """The three co-occurrence count matrices (topic-topic, topic-KC, KC-KC), diagonals
    removed: entry (u, v) = number of documents that contain both u and v."""
    x = sp.csr_matrix((np.ones(len(doc), np.int32), (doc, node)), shape=(n_docs, n_nodes))
    xt = x[:, :n_topics].tocsc()
    xk = x[:, n_topics:].tocsc()
    out = {"tt": (xt.T @ xt).tocsr(), "tk": (xt.T @ xk).tocsr(), "kk": (xk.T @ xk).tocsr()}
    for name in ("tt", "kk"):
        m = out[name]
        m.setdiag(0)
        m.eliminate_zeros()
    for m in out.values():
        m.sort_indices()
    return out


def row_cumcount(m: sp.csr_matrix) -> np.ndarray:
    """Inclusive running sum of each row's counts, in the narrowest type that holds it."""
    cum = np.cumsum(m.data, dtype=np.int64)
    starts = np.concatenate([[0], cum])[m.indptr[:-1]]
    cum -= np.repeat(starts, np.diff(m.indptr))
    return cum.astype(np.uint32) if cum.size == 0 or cum.max() < 2**32 else cum


def sampler_arrays(counts: dict[str, sp.csr_matrix], doc: np.ndarray, node: np.ndarray,
                   n_docs: int, n_nodes: int, n_topics: int) -> dict[str, np.ndarray]:
    arrays = {"n_topics": np.array(n_topics)}
    for name, m in counts.items():
        arrays[f"{name}_indptr"] = m.indptr.astype(np.int64)
        arrays[f"{name}_indices"] = m.indices.astype(np.int32)
        arrays[f"{name}_cumcount"] = row_cumcount(m)
    x = sp.csr_matrix((np.ones(len(doc), np.int8), (doc, node)), shape=(n_docs, n_nodes))
    arrays["doc_indptr"], arrays["doc_nodes"] = x.indptr.astype(np.int64), x.indices.astype(np.int32)
    xc = x.tocsc()
    arrays["node_indptr"], arrays["node_docs"] = xc.indptr.astype(np.int64), xc.indices.astype(np.int32)
    return arrays


def edge_list(m: sp.csr_matrix, upper: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source row, target column, count) of a count matrix; `upper` keeps each undirected
    edge of a symmetric matrix once."""
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int32), np.diff(m.indptr))
    cols, data = m.indices, m.data
    if upper:
        keep = cols > rows
        rows, cols, data = rows[keep], cols[keep], data[keep]
    return rows, cols, data


def graph_of_record(nodes: pl.DataFrame, counts: dict[str, sp.csr_matrix], n_topics: int,
                    eps: float, subset: str, chunk: int = 20_000_000):
    """The graph-tool graph (see the module docstring for its properties)."""
    from graph_tool import Graph

    g = Graph(directed=False)
    g.add_vertex(nodes.height)
    kind = g.new_vp("short")
    kind.a = (nodes.get_column("kind") == "key_concept").to_numpy().astype(np.int16)
    doc_freq = g.new_vp("int")
    doc_freq.a = nodes.get_column("doc_freq").to_numpy()
    key, label = g.new_vp("string"), g.new_vp("string")
    for v, k, lab in zip(g.iter_vertices(), nodes.get_column("key").to_list(),
                         nodes.get_column("label").to_list()):
        key[v], label[v] = k, lab
    g.vp.kind, g.vp.doc_freq, g.vp.key, g.vp.label = kind, doc_freq, key, label

    offsets = {"tt": (0, 0), "tk": (0, n_topics), "kk": (n_topics, n_topics)}
    edge_counts, edge_kinds = [], []
    for name, m in counts.items():
        rows, cols, data = edge_list(m, upper=name != "tk")
        row_off, col_off = offsets[name]
        for start in range(0, len(rows), chunk):
            stop = start + chunk
            g.add_edge_list(np.column_stack([rows[start:stop].astype(np.int64) + row_off,
                                             cols[start:stop].astype(np.int64) + col_off]))
        edge_counts.append(data.astype(np.int32))
        edge_kinds.append(np.full(len(data), SUBGRAPHS[name], np.int16))
        del rows, cols, data
    # a fresh graph numbers its edges in insertion order, so whole arrays can be assigned
    count, subgraph, weight = g.new_ep("int"), g.new_ep("short"), g.new_ep("double")
    count.a = np.concatenate(edge_counts)
    subgraph.a = np.concatenate(edge_kinds)
    weight.a = np.log(count.a + eps)
    g.ep.count, g.ep.subgraph, g.ep.weight = count, subgraph, weight
    g.gp.eps = g.new_gp("double", eps)
    g.gp.subset = g.new_gp("string", subset)
    return g


def degree_summary(degrees: np.ndarray) -> dict:
    if degrees.size == 0:
        return {"nodes": 0}
    bins = 2 ** np.arange(0, int(np.log2(max(degrees.max(), 1))) + 2)
    hist, _ = np.histogram(degrees, bins=np.concatenate([[0], bins]))
    return {"nodes": int(degrees.size), "isolated": int((degrees == 0).sum()),
            "min": int(degrees.min()), "median": float(np.median(degrees)),
            "mean": round(float(degrees.mean()), 3), "p99": float(np.percentile(degrees, 99)),
            "max": int(degrees.max()),
            "histogram": {f"[{lo},{hi})": int(n) for lo, hi, n in
                          zip(np.concatenate([[0], bins[:-1]]), bins, hist)}}


def statistics(g, counts: dict[str, sp.csr_matrix], n_topics: int) -> dict:
    """Sizes, degree distributions and components; edge totals are checked against the
    graph of record."""
    from graph_tool.topology import label_components

    n_edges = {SUBGRAPH_NAMES[k]: int(m.nnz // (1 if k == "tk" else 2)) for k, m in counts.items()}
    if sum(n_edges.values()) != g.num_edges():
        raise AssertionError(f"graph has {g.num_edges()} edges, the count matrices {n_edges}")
    tk = counts["tk"]
    degrees = {"topic_topic": np.diff(counts["tt"].indptr),
               "topic_kc (topics)": np.diff(tk.indptr),
               "topic_kc (key concepts)": np.bincount(tk.indices, minlength=tk.shape[1]),
               "kc_kc": np.diff(counts["kk"].indptr)}
    components = {}
    if g.num_vertices():
        comp, sizes = label_components(g)
        components = {"count": int(len(sizes)), "largest": int(sizes.max()),
                      "largest_fraction": round(float(sizes.max() / g.num_vertices()), 4)}
    all_counts = np.concatenate([m.data for m in counts.values()]) if counts else np.array([])
    return {"nodes": {"topic": n_topics, "key_concept": g.num_vertices() - n_topics},
            "edges": n_edges,
            "edges_with_count_1": round(float((all_counts == 1).mean()), 4) if all_counts.size else None,
            "degrees": {k: degree_summary(v) for k, v in degrees.items()},
            "components": components}


def read_extractions(paths: list[str]) -> pl.DataFrame:
    frames = [pl.read_parquet(p, columns=["doc_id", "topics", "status"]) for p in paths]
    return pl.concat(frames) if frames else pl.DataFrame()


def run(extract_shards: list[str], out_dir: str, counts_path: str, subset: int, n_subsets: int,
        eps: float) -> dict:
    t0 = time.perf_counter()
    name = f"{subset:03d}-of-{n_subsets:03d}"
    extracted = read_extractions(extract_shards)
    n_in = extracted.height
    mine = extracted.filter(pl.col("doc_id").map_elements(
        lambda d: subset_of(d, n_subsets) == subset, return_dtype=pl.Boolean))
    usable = mine.filter(pl.col("status") == "ok")
    nodes, docs, doc, node = index_concepts(concept_pairs(usable))
    n_topics = int((nodes.get_column("kind") == "topic").sum())
    log.info("subset %s: %d documents, %d topics, %d key concepts, %d document-concept pairs",
             name, docs.height, n_topics, nodes.height - n_topics, len(doc))
    counts = cooccurrence(doc, node, docs.height, n_topics, nodes.height)
    arrays = sampler_arrays(counts, doc, node, docs.height, nodes.height, n_topics)
    per_doc = np.diff(arrays["doc_indptr"])
    topics_per_doc = np.add.reduceat(arrays["doc_nodes"] < n_topics, arrays["doc_indptr"][:-1]) \
        if docs.height else np.zeros(0, np.int64)
    docs = docs.with_columns(pl.Series("n_topics", topics_per_doc, pl.Int32),
                             pl.Series("n_kcs", per_doc - topics_per_doc, pl.Int32))
    t_counts = time.perf_counter()
    g = graph_of_record(nodes, counts, n_topics, eps, name)
    t_graph = time.perf_counter()

    out = Path(out_dir)
    with atomic_path(out / "sampler.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    write_parquet_table(nodes.to_arrow(), out / "nodes.parquet")
    write_parquet_table(docs.to_arrow(), out / "docs.parquet")
    stats = statistics(g, counts, n_topics)
    with atomic_path(out / "graph.gt") as tmp:
        g.save(str(tmp), fmt="gt")
    report = {"subset": name, "documents": docs.height, "eps": eps, **stats,
              "seconds": {"counts": round(t_counts - t0, 1), "graph_tool": round(t_graph - t_counts, 1),
                          "total": round(time.perf_counter() - t0, 1)}}
    write_json(out / "report.json", report)
    return write_counts(counts_path, "graph", n_in, docs.height,
                        {"other_subset": n_in - mine.height,
                         "no_concepts": mine.height - docs.height},
                        subset=name, topics=n_topics, key_concepts=nodes.height - n_topics,
                        edges=stats["edges"])
