"""Level-3: concept normalisation, co-occurrence counts, the Eq. 6 sampler, exact top-k
Jaccard and the graph-tool graph of record."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from scipy.stats import chisquare
from synthllm.core.concepts import ConceptGraphError, clean_label, concept_key
from synthllm.core.files import StoredNpz
from synthllm.settings import schema_default
from synthllm.stages import concept_graph as graph
from synthllm.stages import graph_arrays, level3_sets, walks
from synthllm.stages import graph_record as record

ROOT = Path(__file__).resolve().parents[1]
GRAPH_PYTHON = ROOT / ".venv-graph" / "bin" / "python"


def walk_settings(**overrides) -> walks.WalkSettings:
    """graph.walks and graph.eps at the schema's defaults, but for `overrides`."""
    graph = schema_default("graph")
    return walks.WalkSettings(**{**graph["walks"], "eps": graph["eps"], **overrides})


@pytest.mark.parametrize(
    "a, b",
    [
        ("Pythagorean Theorem", "pythagorean theorem."),
        ("1.1 Derivatives", "derivative"),
        ("2) Probabilities", "Probability"),
        ("L'Hôpital's rule", "L'Hopital rule"),
        ("Cauchy-Schwarz inequality", "cauchy schwarz  inequality"),
        ("(a) Eigenvalues", "- eigenvalue"),
        ("Matrices", "matrix"),
        ("Taylor series", "Taylor Series"),
    ],
)
def test_the_same_concept_gets_the_same_key(a, b):
    assert concept_key(a) == concept_key(b) != ""


@pytest.mark.parametrize(
    "a, b",
    [
        ("Series", "Sery"),
        ("Analysis", "Analysi"),
        ("Calculus", "Calculu"),
        ("Physics", "Physic"),
        ("3D geometry", "D geometry"),
        ("Set", "Sets of sets"),
    ],
)
def test_different_concepts_keep_different_keys(a, b):
    assert concept_key(a) != concept_key(b)


def test_punctuation_only_concepts_are_skipped_and_labels_lose_numbering():
    assert concept_key(" 1.2  ... ") == ""
    assert clean_label("1.1   Chain  rule ") == "Chain rule"


def extraction(docs: dict[str, list[tuple[str, list[str]]]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": list(docs),
            "status": ["ok"] * len(docs),
            "topics": [
                [{"name": t, "key_concepts": kcs} for t, kcs in topics] for topics in docs.values()
            ],
        },
        schema={
            "doc_id": pl.String,
            "status": pl.String,
            "topics": pl.List(pl.Struct({"name": pl.String, "key_concepts": pl.List(pl.String)})),
        },
    )


def random_extraction(rng: np.random.Generator, n_docs: int, n_topics: int, n_kcs: int):
    docs = {}
    for d in range(n_docs):
        topics = rng.choice(n_topics, size=rng.integers(1, 4), replace=False)
        docs[f"doc{d:04d}"] = [
            (
                f"Topic {t}",
                [f"Concept {k}" for k in rng.choice(n_kcs, size=rng.integers(1, 6), replace=False)],
            )
            for t in topics
        ]
    return docs


def test_cooccurrence_counts_match_brute_force():
    rng = np.random.default_rng(3)
    docs = random_extraction(rng, 60, 8, 25)
    nodes, doc_table, doc, node = graph_arrays.index_concepts(
        graph_arrays.concept_pairs(extraction(docs))
    )
    n_topics = int((nodes.get_column("kind") == "topic").sum())
    counts = graph_arrays.cooccurrence(
        graph_arrays.incidence_csr(doc, node, doc_table.height, nodes.height),
        n_topics,
        nodes.height,
    )
    id_of = {(k, key): i for i, k, key in nodes.select("node", "kind", "key").iter_rows()}
    expected = {"tt": {}, "tk": {}, "kk": {}}
    for topics in docs.values():
        ts = {id_of["topic", concept_key(t)] for t, _ in topics}
        ks = {id_of["key_concept", concept_key(k)] - n_topics for _, kcs in topics for k in kcs}
        for name, a, b in (("tt", ts, ts), ("tk", ts, ks), ("kk", ks, ks)):
            for u in a:
                for v in b:
                    if name == "tk" or u != v:
                        expected[name][u, v] = expected[name].get((u, v), 0) + 1
    for name, m in counts.items():
        got = {(int(u), int(v)): int(c) for u, v, c in zip(*sp.find(m))}
        assert got == expected[name], name


def star_arrays(counts: list[int], eps: float) -> dict[str, np.ndarray]:
    """Topic 0 joined to topics 1..n with the given counts; each topic has one KC, KCs form a
    complete graph (so KC walks never dead-end)."""
    n = len(counts) + 1
    tt = sp.lil_matrix((n, n), dtype=np.int64)
    for v, c in enumerate(counts, start=1):
        tt[0, v] = tt[v, 0] = c
    tk = sp.identity(n, dtype=np.int64, format="csr")
    kk = sp.csr_matrix(np.ones((n, n), np.int64) - np.eye(n, dtype=np.int64))
    doc = np.arange(n, dtype=np.int32)
    return graph_arrays.sampler_arrays(
        {"tt": tt.tocsr(), "tk": tk, "kk": kk}, graph_arrays.incidence_csr(doc, doc, n, n), n
    )


def test_one_step_frequencies_follow_eq6_including_eps():
    counts, eps = [1, 2, 5, 12], 0.5
    arrays = star_arrays(counts, eps)
    settings = walk_settings(epochs=20_000, topic_steps=(1, 1), kc_steps=(0, 0), eps=eps, seed=11)
    w = walks.sample(arrays, settings)
    from_hub = w["topics"][w["start"] == 0][:, 1]
    observed = np.bincount(from_hub, minlength=len(counts) + 1)[1:]
    expected_p = (np.array(counts) + eps) / (sum(counts) + eps * len(counts))
    assert chisquare(observed, expected_p * observed.sum()).pvalue > 1e-3
    # the test has the power to reject a wrong law: plain counts without eps, or uniform
    assert chisquare(observed, np.full(4, observed.sum() / 4)).pvalue < 1e-6
    assert chisquare(observed, np.array(counts) / sum(counts) * observed.sum()).pvalue < 1e-3


def test_without_revisits_the_step_renormalises_over_unvisited_neighbours():
    counts = [1, 2, 5, 12]
    arrays = star_arrays(counts, 1e-6)
    settings = walk_settings(epochs=20_000, topic_steps=(2, 2), kc_steps=(0, 0), seed=5)
    w = walks.sample(arrays, settings)
    # leaf 4 (count 12) -> hub 0 (forced) -> one of leaves 1..3, never back to 4
    paths = w["topics"][w["start"] == 4]
    assert (paths[:, 1] == 0).all()
    observed = np.bincount(paths[:, 2], minlength=5)
    assert observed[4] == 0 and observed[0] == 0
    expected = np.array(counts[:3]) / sum(counts[:3]) * len(paths)
    assert chisquare(observed[1:4], expected).pvalue > 1e-3
    assert all(len(set(row[row >= 0])) == len(row[row >= 0]) for row in w["kcs"])


def test_step_counts_are_drawn_from_the_configured_ranges():
    arrays = star_arrays([3] * 6, 1e-6)
    arrays = {**arrays, **{f"tt_{k}": arrays[f"kk_{k}"] for k in ("indptr", "indices", "cumcount")}}
    w = walks.sample(arrays, walk_settings(epochs=300, topic_steps=(1, 2), kc_steps=(3, 4)))
    n_topics = (w["topics"] >= 0).sum(axis=1)
    n_kcs = (w["kcs"] >= 0).sum(axis=1)
    assert set(n_topics) == {2, 3} and set(n_kcs) == {4, 5}
    assert w["complete"].all()


def test_dead_ends_stop_the_walk_and_kc_start_is_honoured():
    # topic 0 - topic 1 only; topics 2.. isolated: walks from them end at once
    arrays = star_arrays([4], 1e-6)
    w = walks.sample(
        arrays, walk_settings(epochs=50, topic_steps=(2, 2), kc_steps=(1, 1), kc_start="start")
    )
    assert not w["complete"].any()  # two topic steps are never possible on one edge
    # KC j belongs to topic j only (identity topic-KC graph): the first KC is the start's
    assert (w["kcs"][:, 0] == w["start"]).all()
    w = walks.sample(
        arrays, walk_settings(epochs=50, topic_steps=(1, 1), kc_steps=(1, 1), kc_start="last")
    )
    last = w["topics"][np.arange(len(w["start"])), (w["topics"] >= 0).sum(axis=1) - 1]
    assert (w["kcs"][:, 0] == last).all()


def test_walks_are_reproducible_for_a_seed():
    rng = np.random.default_rng(0)
    docs = random_extraction(rng, 80, 10, 30)
    nodes, doc_table, doc, node = graph_arrays.index_concepts(
        graph_arrays.concept_pairs(extraction(docs))
    )
    n_topics = int((nodes.get_column("kind") == "topic").sum())
    incidence = graph_arrays.incidence_csr(doc, node, doc_table.height, nodes.height)
    arrays = graph_arrays.sampler_arrays(
        graph_arrays.cooccurrence(incidence, n_topics, nodes.height), incidence, n_topics
    )
    a = walks.sample(arrays, walk_settings(seed=7))
    b = walks.sample(arrays, walk_settings(seed=7))
    c = walks.sample(arrays, walk_settings(seed=8))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["kcs"], c["kcs"])


@pytest.mark.parametrize(
    "bad", [dict(topic_steps=(2, 1)), dict(kc_start="first"), dict(dead_end="skip"), dict(epochs=0)]
)
def test_bad_walk_settings_name_the_config_key(bad):
    with pytest.raises(ConceptGraphError, match="graph.walks"):
        walk_settings(**bad)


def test_top_k_jaccard_is_exact_against_brute_force():
    rng = np.random.default_rng(1)
    n_docs, n_nodes = 300, 40
    doc_sets = [
        set(rng.choice(n_nodes, size=rng.integers(1, 9), replace=False).tolist())
        for _ in range(n_docs)
    ]
    x = sp.csr_matrix(
        (
            np.ones(sum(map(len, doc_sets))),
            (
                np.repeat(np.arange(n_docs), [len(s) for s in doc_sets]),
                np.concatenate([sorted(s) for s in doc_sets]),
            ),
        ),
        shape=(n_docs, n_nodes),
    )
    xc = x.tocsc()
    queries = [np.unique(rng.choice(n_nodes, size=rng.integers(1, 8))) for _ in range(500)]
    best, best_j = walks.top_k_jaccard(
        queries, xc.indptr, xc.indices, np.diff(x.indptr), k=2, threads=2
    )
    for q, b, bj in zip(queries, best, best_j):
        qs = set(q.tolist())
        scored = sorted(
            ((-len(qs & s) / len(qs | s), d) for d, s in enumerate(doc_sets) if qs & s)
        )[:2]
        assert b[: len(scored)].tolist() == [d for _, d in scored]
        assert np.allclose(bj[: len(scored)], [-j for j, _ in scored])
        assert (b[len(scored) :] == -1).all()


@pytest.mark.skipif(not GRAPH_PYTHON.exists(), reason=".venv-graph missing: run ./install.sh")
def test_graph_of_record_holds_counts_weights_and_labels(tmp_path):
    docs = {
        "a": [("Algebra", ["Linear equations", "Slope"]), ("Geometry", ["Slope"])],
        "b": [("1. algebra", ["linear equation", "Quadratic formula"])],
        "c": [("Probability", ["Bayes' theorem"])],
        "d": [],
    }
    frame = extraction(docs).with_columns(
        pl.when(pl.col("doc_id") == "d")
        .then(pl.lit("malformed"))
        .otherwise("status")
        .alias("status")
    )
    frame.write_parquet(tmp_path / "extract.parquet")
    out = tmp_path / "graph" / "subset-000-of-001"
    env = {"PYTHONPATH": str(ROOT / "workflow"), "PATH": "/usr/bin:/bin"}
    outputs = {name: str(out / file) for name, file in graph.OUTPUT_FILES.items()}
    proc = subprocess.run(
        [
            str(GRAPH_PYTHON),
            "-m",
            "synthllm",
            "concept_graph",
            "--inputs",
            json.dumps({"extracted": [str(tmp_path / "extract.parquet")]}),
            "--outputs",
            json.dumps(outputs),
            "--settings",
            json.dumps({"subset": "000-of-001"}),
            "--execution",
            json.dumps({"threads": 1}),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    counts = json.loads((out / "counts.json").read_text())
    assert (counts["in"], counts["out"], counts["dropped"]) == (4, 3, {"no_concepts": 1})
    assert not (out / "graph.gt").exists()  # the graph of record is a job of its own
    record = {"graph": str(out / "graph.gt"), "counts": str(out / "graph.counts.json")}
    proc = subprocess.run(
        [
            str(GRAPH_PYTHON),
            "-m",
            "synthllm",
            "graph_record",
            "--inputs",
            json.dumps({name: outputs[name] for name in ("sampler", "nodes", "report")}),
            "--outputs",
            json.dumps(record),
            "--settings",
            json.dumps({"subset": "000-of-001", "eps": 0.5}),
            "--execution",
            json.dumps({}),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    check = r"""
import json, sys, math
from graph_tool import load_graph
g = load_graph(sys.argv[1])
print(json.dumps({
  "vertices": [[int(g.vp.kind[v]), g.vp.key[v], g.vp.label[v], int(g.vp.doc_freq[v])] for v in g.vertices()],
  "edges": sorted([[g.vp.key[e.source()], g.vp.key[e.target()],
                    int(g.vp.kind[e.source()] + g.vp.kind[e.target()]),
                    int(g.ep.count[e]), float(g.ep.weight[e])] for e in g.edges()]),
  "eps": float(g.gp.eps)}))
"""
    got = json.loads(
        subprocess.run(
            [str(GRAPH_PYTHON), "-c", check, str(out / "graph.gt")],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert got["eps"] == 0.5
    vertices = {(k, key): (label, df) for k, key, label, df in got["vertices"]}
    assert vertices[0, "algebra"] == ("Algebra", 2)  # "1. algebra" merged, numbering dropped
    assert vertices[1, "linear equation"][1] == 2
    assert vertices[1, "slope"] == ("Slope", 1)  # "Slope" twice in one document: once
    assert len(vertices) == 3 + 4
    edges = {(min(a, b), max(a, b), sub): (c, w) for a, b, sub, c, w in got["edges"]}
    assert edges["algebra", "geometry", 0] == (1, pytest.approx(math.log(1.5)))
    assert edges["algebra", "linear equation", 1] == (2, pytest.approx(math.log(2.5)))
    assert edges["linear equation", "quadratic formula", 2][0] == 1
    assert ("algebra", "probability", 0) not in edges
    # 1 topic-topic, 5 topic-KC (algebra: 3 KCs, geometry: 2, probability: 1 -> 6), KC-KC 1+1
    assert sum(1 for k in edges if k[2] == 1) == 6
    report = json.loads((out / "report.json").read_text())
    assert report["edges"] == {"topic_topic": 1, "topic_kc": 6, "kc_kc": 2}
    record_counts = json.loads((out / "graph.counts.json").read_text())
    assert (record_counts["in"], record_counts["out"]) == (9, 9)
    assert record_counts["edges"] == report["edges"] and record_counts["vertices"] == 7
    assert record_counts["components"]["count"] == 2
    # the walks over it, by keyword: the subset comes from the job, not the folder's name
    walk_out = tmp_path / "walks"
    counts = walks.run(
        inputs={name: outputs[name] for name in ("sampler", "nodes", "docs")},
        outputs={"walks": str(walk_out / "w.parquet"), "counts": str(walk_out / "w.counts.json")},
        settings={
            "subset": "000-of-001",
            "eps": 0.5,
            "references": 2,
            "walks": {
                "epochs": 2,
                "topic_steps": [1, 1],
                "kc_steps": [1, 1],
                "kc_start": "last",
                "revisit": False,
                "dead_end": "stop",
                "seed": 3,
            },
        },
        execution={"threads": 1},
    )
    sets = pl.read_parquet(walk_out / "w.parquet")
    assert counts == json.loads((walk_out / "w.counts.json").read_text())
    assert counts["in"] == 2 * 3 and counts["out"] == sets.height > 0
    assert counts["settings"]["eps"] == 0.5 and counts["settings"]["seed"] == 3
    assert set(sets["subset"]) == {"000-of-001"}
    assert sets["set_id"][0].startswith("s000-of-001-e0-t")
    # a nodes table that lacks a vertex the edges reach (graph-tool would add it silently)
    short = tmp_path / "short-nodes.parquet"
    pl.read_parquet(outputs["nodes"]).head(6).write_parquet(short)
    failed = subprocess.run(
        [str(GRAPH_PYTHON), "-m", "synthllm", "graph_record"]
        + [
            "--inputs",
            json.dumps({**{n: outputs[n] for n in ("sampler", "report")}, "nodes": str(short)}),
        ]
        + [
            "--outputs",
            json.dumps({"graph": str(tmp_path / "g.gt"), "counts": str(tmp_path / "c.json")}),
        ]
        + ["--settings", json.dumps({"subset": "000-of-001", "eps": 0.5}), "--execution", "{}"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2
    assert f"reach 7 vertices, {short} has 6" in failed.stderr
    assert not (tmp_path / "g.gt").exists()


def test_edge_blocks_give_every_edge_once_with_its_count(tmp_path):
    """Blocks cut anywhere in a row or between rows give back each sub-graph's edges and
    counts from the running counts on disk, in the arrays' order."""
    rng = np.random.default_rng(4)
    doc_sets = [rng.choice(40, size=rng.integers(2, 12), replace=False) for _ in range(60)]
    doc = np.repeat(np.arange(60), [len(s) for s in doc_sets]).astype(np.int32)
    node = np.concatenate([np.sort(s) for s in doc_sets]).astype(np.int32)
    n_topics = 9
    incidence = graph_arrays.incidence_csr(doc, node, 60, 40)
    counts = graph_arrays.cooccurrence(incidence, n_topics, 40, threads=1)
    np.savez(tmp_path / "sampler.npz", **graph_arrays.sampler_arrays(counts, incidence, n_topics))
    stored = StoredNpz(tmp_path / "sampler.npz")
    offsets = {"tt": (0, 0), "tk": (0, n_topics), "kk": (n_topics, n_topics)}
    expected = {}
    for name, m in counts.items():
        coo = (sp.triu(m, 1) if name != "tk" else m).tocoo()
        expected[name] = sorted(
            zip(coo.row + offsets[name][0], coo.col + offsets[name][1], coo.data)
        )
    for block in (1, 7, 10**9):
        got = dict.fromkeys(offsets, [])
        for name, pairs, c in record.edge_blocks(stored, block):
            got[name] = got[name] + list(zip(pairs[:, 0], pairs[:, 1], c))
        assert {k: sorted(v) for k, v in got.items()} == expected, block
        sources = [u for u, _, _ in got["kk"]]
        assert sources == sorted(sources)  # rows in order


def test_graph_outputs_must_share_one_folder(tmp_path):
    outputs = {name: str(tmp_path / file) for name, file in graph.OUTPUT_FILES.items()}
    outputs["report"] = str(tmp_path / "elsewhere" / "report.json")
    with pytest.raises(ConceptGraphError, match="output report"):
        graph.run(
            inputs={"extracted": []},
            outputs=outputs,
            settings={"subset": "000-of-001"},
            execution={"threads": 1},
        )


def _sets(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "set_id": [f"s{i}" for i in range(n)],
            "ref_doc_ids": [[f"d{i}", f"d{i + 1}"] for i in range(n)],
        }
    )


def test_sets_are_dealt_round_robin_and_capped_per_shard():
    shards = level3_sets.deal_sets(_sets(7), 3, None)
    assert [s.get_column("set_id").to_list() for s in shards] == [
        ["s0", "s3", "s6"],
        ["s1", "s4"],
        ["s2", "s5"],
    ]
    capped = level3_sets.deal_sets(_sets(7), 3, 1)
    assert [s.get_column("set_id").to_list() for s in capped] == [["s0"], ["s1"], ["s2"]]
    short = level3_sets.deal_sets(_sets(2), 3, None)  # a shard may get no set
    assert [len(s) for s in short] == [1, 1, 0] and short[2].columns == ["set_id", "ref_doc_ids"]


def test_each_shard_file_carries_its_sets_reference_texts(tmp_path):
    walks_file, docs = tmp_path / "walks.parquet", [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    _sets(4).write_parquet(walks_file)
    pl.DataFrame({"doc_id": ["d0", "d1", "d2"], "text": ["t0", "t1", "t2"]}).write_parquet(docs[0])
    pl.DataFrame({"doc_id": ["d3", "d4", "dx"], "text": ["t3", "t4", "tx"]}).write_parquet(docs[1])
    outputs = {
        "sets": [str(tmp_path / "0.parquet"), str(tmp_path / "1.parquet")],
        "counts": str(tmp_path / "counts.json"),
    }
    counts = level3_sets.run(
        inputs={"walks": [str(walks_file)], "docs": [str(d) for d in docs]},
        outputs=outputs,
        settings={"n_shards": 2, "max_sets_per_shard": 1},
        execution={},
    )
    first, second = (pl.read_parquet(p) for p in outputs["sets"])
    assert first.get_column("ref_texts").to_list() == [["t0", "t1"]]
    assert second.get_column("ref_texts").to_list() == [["t1", "t2"]]
    assert (counts["in"], counts["out"], counts["dropped"]) == (
        4,
        2,
        {"over_max_sets_per_shard": 2},
    )


def test_a_reference_missing_from_the_documents_names_it(tmp_path):
    docs = tmp_path / "docs.parquet"
    pl.DataFrame({"doc_id": ["d0"], "text": ["t0"]}).write_parquet(docs)
    with pytest.raises(ConceptGraphError, match=r"\['d1'\] \(of 1\)"):
        level3_sets.reference_texts([str(docs)], {"d0", "d1"})
