"""Stage 4b: the graph of record of one subset's concept graph (paper §1.2, Eq. 5), in
graph-tool, built from the flat arrays that synthllm.stages.concept_graph writes.

It is its own job so that nothing on the way to the Level-3 questions waits for it: the walks
read the same arrays, and at paper scale graph-tool's own build, components and save take
about 240 s and most of the memory of what was one job (benchmarks/graph_scale.py). The edges
are streamed from sampler.npz a block at a time, in the arrays' order (topic-topic, topic-KC,
KC-KC; rows in order), so the job holds graph-tool's graph and one block, never the arrays.

Outputs of one subset (`graph/subset-{i}-of-{n}/`):
    graph.gt           graph-tool graph: vertices are the topics (0..T-1) then the KCs
                       (T..T+K-1), as in nodes.parquet; vertex properties kind (short: 0 topic,
                       1 KC), key, label (string), doc_freq (int); edge properties count (int)
                       and weight (double, log(count + eps), Eq. 5); graph properties eps,
                       subset. An edge's sub-graph is the sum of its ends' kinds (0 topic-topic,
                       1 topic-KC, 2 KC-KC), so it is not stored: at paper scale every byte per
                       edge costs 0.25 GiB.
    graph.counts.json  in = the edges report.json counts, out = the edges of graph.gt (they
                       must agree, per sub-graph); its components (count, largest, largest
                       fraction) and wall time and peak memory per step
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import polars as pl

from synthllm.core.concepts import ConceptGraphError
from synthllm.core.files import StepLog, StoredNpz, atomic_path, write_counts
from synthllm.stages.graph_arrays import SUBGRAPH_NAMES

log = logging.getLogger("synthllm.stages.graph_record")

BLOCK = 4_000_000  # array entries per block handed to graph-tool (~0.2 GB with its copies)


def edge_blocks(
    arrays: StoredNpz, block: int = BLOCK
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(sub-graph, (n, 2) int64 vertex pairs, int64 counts) of every edge in the sampler
    arrays, whole rows at a time, about `block` entries each: topic-topic and KC-KC keep each
    undirected edge once (target > source), topic-KC every entry. A count is recovered from
    the row's running count (g_cumcount)."""
    n_topics = int(arrays.read("n_topics"))
    for name, row_offset, col_offset, upper in (
        ("tt", 0, 0, True),
        ("tk", 0, n_topics, False),
        ("kk", n_topics, n_topics, True),
    ):
        indptr = arrays.read(f"{name}_indptr")
        n_rows, row = len(indptr) - 1, 0
        while row < n_rows:
            # the rows whose entries fit in one block, at least one row
            end = int(np.searchsorted(indptr, indptr[row] + block, side="right")) - 1
            end = min(max(end, row + 1), n_rows)
            lo, hi = int(indptr[row]), int(indptr[end])
            lengths = np.diff(indptr[row : end + 1])
            if hi > lo:
                targets = arrays.read(f"{name}_indices", lo, hi).astype(np.int64)
                running = arrays.read(f"{name}_cumcount", lo, hi).astype(np.int64)
                counts = np.diff(running, prepend=0)
                starts = (indptr[row:end] - lo)[lengths > 0]
                counts[starts] = running[starts]
                sources = np.repeat(np.arange(row, end, dtype=np.int64), lengths)
                if upper:
                    keep = targets > sources
                    sources, targets, counts = sources[keep], targets[keep], counts[keep]
                yield name, np.column_stack([sources + row_offset, targets + col_offset]), counts
            row = end


def graph_of_record(
    nodes: pl.DataFrame,
    blocks: Callable[[], Iterable[tuple[str, np.ndarray, np.ndarray]]],
    eps: float,
    subset: str,
):
    """The graph-tool graph (see the module docstring) of `nodes` and the edges of `blocks()`
    (called twice: the edges first, then their counts, in the same order). Returns the graph
    and its edges per sub-graph (report.json's names)."""
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
    edges = dict.fromkeys(SUBGRAPH_NAMES.values(), 0)
    for name, pairs, _ in blocks():
        g.add_edge_list(pairs)
        edges[SUBGRAPH_NAMES[name]] += len(pairs)
    # the adjacency lists grew by doubling: give the slack back before the edge properties
    # take their 12 bytes per edge
    g.shrink_to_fit()
    # a fresh graph numbers its edges in insertion order: property arrays follow the counts
    g.ep.count, g.ep.weight = g.new_ep("int"), g.new_ep("double")
    start = 0
    for _, _, counts in blocks():
        g.ep.count.a[start : start + len(counts)] = counts
        g.ep.weight.a[start : start + len(counts)] = np.log(counts + eps)
        start += len(counts)
    if start != g.num_edges():
        raise AssertionError(f"graph has {g.num_edges()} edges, {start} counts")
    g.gp.eps = g.new_gp("double", eps)
    g.gp.subset = g.new_gp("string", subset)
    return g, edges


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


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The graph of record of one subset: inputs sampler, nodes and report (concept_graph),
    outputs graph and counts. Settings: graph.eps as eps, and the job's subset (e.g.
    000-of-001) (rules/04_graph.smk)."""
    steps = StepLog("synthllm.stages.graph_record")
    subset, n_subsets = (int(x) for x in settings["subset"].split("-of-"))
    name = f"{subset:03d}-of-{n_subsets:03d}"
    arrays = StoredNpz(inputs["sampler"])
    nodes = pl.read_parquet(inputs["nodes"])
    expected = json.loads(Path(inputs["report"]).read_text())["edges"]
    g, edges = graph_of_record(nodes, lambda: edge_blocks(arrays), settings["eps"], name)
    if edges != expected:
        raise ConceptGraphError(
            f"{inputs['sampler']}: edges per sub-graph {edges} differ from {inputs['report']}'s "
            f"{expected}; rebuild the concept graph of subset {name}"
        )
    # graph-tool adds the vertices an out-of-range edge end names, silently
    if g.num_vertices() != nodes.height:
        raise ConceptGraphError(
            f"{inputs['sampler']}: its edges reach {g.num_vertices()} vertices, "
            f"{inputs['nodes']} has {nodes.height}; rebuild the concept graph of subset {name}"
        )
    steps("graph-tool graph")
    found = components(g)
    steps("components")
    with atomic_path(outputs["graph"]) as tmp:
        g.save(str(tmp), fmt="gt")
    steps("graph.gt saved")
    counts = write_counts(
        outputs["counts"],
        "graph_record",
        sum(expected.values()),
        g.num_edges(),
        {},
        subset=name,
        vertices=g.num_vertices(),
        edges=edges,
        components=found,
        steps=steps.steps,
    )
    log.info("graph of record %s: %s", name, counts)
    return counts
