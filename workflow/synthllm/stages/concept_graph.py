"""Stage 4a: the global concept graph of Level-3 (paper §1.2, Eq. 5).

Nodes are the distinct topics and key concepts (KCs) extracted from the reference documents
(merged by `concepts.concept_key`); two nodes are joined when they appear in the same
document, with the number of such documents as the edge's `count` and
`weight = log(count + eps)` (Eq. 5). The edges fall into three sub-graphs: topic-topic,
topic-KC and KC-KC.

The edges are written as flat CSR arrays, which the sampler (synthllm.stages.walks) reads,
and from which synthllm.stages.graph_record builds the graph-tool graph of record in a job of
its own. The walks do not step through graph-tool: at paper scale a Python loop over its
edges takes ~25 min for the 160,000 walks, keeping the graphs loaded while sampling does not
fit in memory (../shared/notes/graph-scale.md), and graph-tool's build and save alone take
longer than the arrays, the walks and the references together (benchmarks/graph_scale.py).
Nothing here depends on eps: the weights are log(count + eps) of the counts written here.

The documents may be split into `n_subsets` subsets, each with its own graph (the paper's
"each subset" in §5.1); a document's subset is a hash of its id.

Outputs of one subset (`graph/subset-{i}-of-{n}/`):
    nodes.parquet  node (int32, vertex index), kind (string: topic | key_concept), key, label
                   (string), doc_freq (int32: documents that name it)
    docs.parquet   doc (int32, row in the arrays below; documents sorted by doc_id), doc_id
                   (string), n_topics, n_kcs (int32)
    sampler.npz    the flat arrays the sampler reads: the sub-graphs' CSR rows with running
                   counts and both directions of the document-node incidence (layout in
                   synthllm.stages.graph_arrays)
    report.json    nodes and edges per kind and sub-graph, degree distributions, how often
                   an edge has count 1, wall time and peak memory per step
    counts.json    documents in; out = documents in the graph; dropped: other_subset,
                   no_concepts (extraction failed or named nothing)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from synthllm.core.concepts import ConceptGraphError
from synthllm.core.files import StepLog, atomic_path, write_counts, write_json, write_parquet_table
from synthllm.stages.graph_arrays import (
    concept_pairs,
    cooccurrence,
    count_statistics,
    incidence_csr,
    index_concepts,
    sampler_arrays,
    subset_of,
)

log = logging.getLogger("synthllm.stages.concept_graph")


def build(pairs: pl.DataFrame, out_dir: str | Path, subset: str) -> dict:
    """Index, count, write the sampler arrays, the node and document tables and the report:
    every output of the stage but counts.json. Returns the report."""
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
    del counts
    steps("statistics")
    report = {
        "subset": subset,
        "documents": docs.height,
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
    "sampler": "sampler.npz",
    "nodes": "nodes.parquet",
    "docs": "docs.parquet",
    "report": "report.json",
    "counts": "counts.json",
}


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The concept graph of one subset: inputs `extracted` (every extract shard), outputs
    OUTPUT_FILES in one folder. Settings: the job's subset (e.g. 000-of-001)
    (rules/04_graph.smk)."""
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
    report = build(pairs.pop(), out_dir, name)
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
