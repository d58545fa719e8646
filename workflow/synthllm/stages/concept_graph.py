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
therefore also written as flat CSR arrays, which the sampler (synthllm.stages.walks) reads.

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
    sampler.npz    the flat arrays the sampler reads: the sub-graphs' CSR rows with running
                   counts and both directions of the document-node incidence (layout in
                   synthllm.stages.graph_arrays)
    report.json    nodes and edges per kind and sub-graph, degree distributions, components,
                   how often an edge has count 1, eps, wall time and peak memory per step
    counts.json    documents in; out = documents in the graph; dropped: other_subset,
                   no_concepts (extraction failed or named nothing)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl
import scipy.sparse as sp

from synthllm.core.concepts import ConceptGraphError
from synthllm.core.files import StepLog, atomic_path, write_counts, write_json, write_parquet_table
from synthllm.stages.graph_arrays import (
    concept_pairs,
    cooccurrence,
    count_statistics,
    edge_list,
    incidence_csr,
    index_concepts,
    sampler_arrays,
    subset_of,
)

log = logging.getLogger("synthllm.stages.concept_graph")

CHUNK = 20_000_000  # edges per array handed to graph-tool or numpy at a time (~160-320 MB)


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
    steps = StepLog("synthllm.stages.concept_graph")
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
    000-of-001) (rules/04_graph.smk)."""
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
