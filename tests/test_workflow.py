"""Real Snakemake runs of the workflow on config/test.yaml, end to end."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from slurmrun import PROFILE_ARGS, job_stats, sacct_jobs, slurm_run_id, snakemake_command

ROOT = Path(__file__).resolve().parents[1]
DEMO_CORPUS = ROOT / "resources" / "demo_corpus"

pytestmark = pytest.mark.skipif(
    not (DEMO_CORPUS / "math_stackexchange").is_dir(),
    reason="resources/demo_corpus not filled: run ./install.sh with ../shared beside the checkout",
)


def snakemake(*args: str, check: bool = True, slurm: bool = False) -> subprocess.CompletedProcess:
    """A real snakemake run: local on 2 cores, or through the SLURM profile."""
    how = PROFILE_ARGS if slurm else ("--cores", "2")
    proc = subprocess.run(
        [*snakemake_command(slurm), *how, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(*args: str) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when nothing is to be done)."""
    out = snakemake("-n", *args).stdout
    if "Job stats:" not in out:
        assert "Nothing to be done" in out, out
        return {}
    return job_stats(out)


def override(tmp: Path, name: str, **cfg) -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def test_run(tmp_path_factory, through_slurm):
    """The whole test config, through SLURM when a cluster answers (CI), else on 2 cores;
    the run's output is kept in run.log."""
    tmp = tmp_path_factory.mktemp("wf")
    results = tmp / "results"
    configs = [
        "--configfile",
        "config/test.yaml",
        override(tmp, "results.yaml", results=str(results)),
    ]
    proc = snakemake(*configs, slurm=through_slurm)
    (tmp / "run.log").write_text(proc.stdout + proc.stderr)
    return tmp, results, configs


SHARDS = [f"{i:05d}-of-00002" for i in range(2)]
# the test config's outside model (config models.outside)
OUTSIDE = {
    "label": "SmolLM2-135M-Instruct",
    "model": "resources/models/SmolLM2-135M-Instruct",
    "group": "3M",
}
LLAMA3_TEMPLATE = "resources/chat_templates/llama3.jinja"
# what reruns when the answers change: stage 6 once, then one model (3M) trained on each of
# the test config's two budgets, evaluated, summarised and fitted (the base model stays)
AFTER_ANSWERS = {
    "dedup": 1,
    "decontam": 1,
    "sft_pool": 1,
    "length_stats": 1,
    "mixture": 2,
    "train": 2,
    "evaluate": 2,
    "eval_nll": 2,
    "eval_summary": 1,
    "scaling": 1,
    "all": 1,
}


def test_test_config_produces_shards_counts_and_logs(test_run):
    _, results, _ = test_run
    counts = json.loads((results / "corpus" / "counts.json").read_text())
    assert counts["n_shards"] == 2
    assert counts["out"] == 20  # max_docs: 12 + 4 + 4
    assert counts["in"] == counts["out"] + sum(counts["dropped"].values())
    rows = sum(pq.read_metadata(results / "corpus" / f"shard-{s}.parquet").num_rows for s in SHARDS)
    assert rows == counts["out"] == sum(counts["docs_per_shard"])
    assert "corpus: 20 in, 20 out" in (results / "logs" / "corpus.log").read_text()


def test_answer_shards_and_checkpoints_are_write_protected_and_readable(test_run):
    _, results, _ = test_run
    checkpoints = [p for p in (results / "train").glob("*/*/final") if p.parent.name != "0"]
    outputs = [results / "answer" / f"shard-{s}.parquet" for s in SHARDS] + checkpoints
    assert checkpoints
    for path in outputs:
        for item in [path, *path.rglob("*")]:
            mode = stat.S_IMODE(item.stat().st_mode)
            assert mode & 0o222 == 0 and mode & 0o400, (item, oct(mode))


def test_generation_stages_ran_with_the_real_engine(test_run):
    _, results, _ = test_run
    for shard in SHARDS:
        # generation reads the filtered shard: a subset of the corpus shard, in its order
        corpus = (
            pq.read_table(results / "corpus" / f"shard-{shard}.parquet")
            .column("doc_id")
            .to_pylist()
        )
        docs = (
            pq.read_table(results / "filter" / "docs" / f"shard-{shard}.parquet")
            .column("doc_id")
            .to_pylist()
        )
        assert docs == [d for d in corpus if d in set(docs)]
        extracted = pq.read_table(results / "extract" / f"shard-{shard}.parquet").to_pylist()
        assert [r["doc_id"] for r in extracted] == docs
        questions = []
        for level in ("level1", "level2", "level3"):
            counts = json.loads((results / level / f"shard-{shard}.counts.json").read_text())
            table = pq.read_table(results / level / f"shard-{shard}.parquet")
            assert table.num_rows == counts["questions"]
            assert counts["generated"] + counts["resumed"] == counts["in"]
            questions += table.column("question_id").to_pylist()
        assert len(set(questions)) == len(questions)
        answers = pq.read_table(results / "answer" / f"shard-{shard}.parquet").to_pylist()
        assert [a["question_id"] for a in answers] == questions
        log = (results / "logs" / "extract" / f"shard-{shard}.log").read_text()
        assert "vLLM engine for resources/models/SmolLM2-135M-Instruct ready" in log


def test_every_job_of_the_run_went_through_slurm(test_run, slurm_cluster):
    tmp, _, _ = test_run
    out = (tmp / "run.log").read_text()
    # rule all only collects the targets, and the bookkeeping rules (config
    # resources.local_rules) run in the controller: none of them is a SLURM job
    local = {"all", "filter_report", "eval_summary"}
    expected = {rule: n for rule, n in job_stats(out).items() if rule not in local}
    assert job_stats(out).keys() >= local - {"all"}  # they ran, in the controller
    completed = {}
    for job in sacct_jobs(slurm_run_id(out)):
        if job["state"] == "COMPLETED":
            completed[job["rule"]] = completed.get(job["rule"], 0) + 1
    assert completed == expected
    assert sum(expected.values()) >= 30


def test_second_run_does_nothing(test_run):
    _, _, configs = test_run
    assert planned_jobs(*configs) == {}


def test_changing_the_shard_count_reruns_the_corpus_stage_and_what_follows(test_run):
    tmp, _, configs = test_run
    more = override(tmp, "shards.yaml", corpus={"n_shards": 3})
    # the synthetic positives and the base model do not depend on the corpus
    assert planned_jobs(*configs, more) == {
        "corpus": 1,
        "embed": 3,
        "coldstart": 1,
        "rate": 1,
        "finegrained": 1,
        "filter_docs": 3,
        "filter_report": 1,
        "extract": 3,
        "level1": 3,
        "level2": 3,
        "concept_graph": 1,
        "walks": 1,
        "level3_sets": 1,
        "level3": 3,
        "answer": 3,
        **AFTER_ANSWERS,
    }


# one config key per stage -> the jobs that changing it plans: that stage's jobs and what
# depends on them, nothing upstream (the Level-2, walk-seed, learning-rate and fit-settings
# cases have their own tests below)
AFTER_FILTERING = {
    "filter_docs": 2,
    "filter_report": 1,
    "extract": 2,
    "level1": 2,
    "level2": 2,
    "concept_graph": 1,
    "walks": 1,
    "level3_sets": 1,
    "level3": 2,
    "answer": 2,
    **AFTER_ANSWERS,
}
AFTER_DEDUP = {k: v for k, v in AFTER_ANSWERS.items() if k != "dedup"}
AFTER_POOL = {k: v for k, v in AFTER_DEDUP.items() if k not in ("decontam", "sft_pool")}
STAGE_CHANGES = {
    "filtering": (
        {"filter": {"finegrained": {"threshold": 3.0}}},
        {"finegrained": 1, **AFTER_FILTERING},
    ),
    "extraction": (
        {
            "generation": {
                "extract": {"sampling": {"temperature": 0.0, "max_tokens": 190, "seed": 0}}
            }
        },
        {
            "extract": 2,
            "level2": 2,
            "concept_graph": 1,
            "walks": 1,
            "level3_sets": 1,
            "level3": 2,
            "answer": 2,
            **AFTER_ANSWERS,
        },
    ),
    "level1": (
        {
            "generation": {
                "level1": {
                    "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 190, "seed": 1}
                }
            }
        },
        {"level1": 2, "answer": 2, **AFTER_ANSWERS},
    ),
    "graph": (
        {"graph": {"eps": 1.0e-5}},
        {
            "concept_graph": 1,
            "walks": 1,
            "level3_sets": 1,
            "level3": 2,
            "answer": 2,
            **AFTER_ANSWERS,
        },
    ),
    "level3": (
        {
            "generation": {
                "level3": {
                    "sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 190, "seed": 4}
                }
            }
        },
        {"level3": 2, "answer": 2, **AFTER_ANSWERS},
    ),
    "answers": (
        {
            "generation": {
                "answer": {"sampling": {"temperature": 0.0, "max_tokens": 120, "seed": 3}}
            }
        },
        {"answer": 2, **AFTER_ANSWERS},
    ),
    "dedup": ({"dedup": {"near": {"threshold": 0.9}}}, AFTER_ANSWERS),
    "decontamination": ({"decontam": {"ngram": 10}}, AFTER_DEDUP),
    "mixtures": ({"mixtures": {"seed": 1}}, AFTER_POOL),
    # the base model (budget 0) and the outside model are evaluated again too: same engine,
    # new settings
    "evaluation": (
        {"evaluate": {"max_new_tokens": 200}},
        {"evaluate": 4, "eval_summary": 1, "scaling": 1, "all": 1},
    ),
    # another chat template is another outside model: staged and evaluated again
    "outside": (
        {"models": {"outside": [dict(OUTSIDE, chat_template=LLAMA3_TEMPLATE)]}},
        {"outside_model": 1, "evaluate": 1, "eval_summary": 1, "scaling": 1, "all": 1},
    ),
}


@pytest.mark.parametrize("stage", list(STAGE_CHANGES))
def test_changing_one_key_of_a_stage_plans_that_stage_and_what_depends_on_it(test_run, stage):
    tmp, _, configs = test_run
    change, expected = STAGE_CHANGES[stage]
    assert planned_jobs(*configs, override(tmp, f"{stage}.yaml", **change)) == expected


# knobs that change how jobs run, never what they write (config/schema.yaml execution: true)
ENGINE = {"tensor_parallel_size": 2, "enforce_eager": False, "kv_cache_gib": 3, "batch_size": 7}
EXECUTION_CHANGES = {
    "generation": {
        "models": {"generator": ENGINE, "answerer": ENGINE, "rater": ENGINE},
        "generation": {"chunk_size": 5, "threads": 1},
    },
    "filter": {"models": {"embedding": {"batch_size": 3}}, "filter": {"threads": 1}},
    "corpus": {"corpus": {"batch_size": 17}},
    "evaluation": {"evaluate": {"engine": ENGINE, "chunk_size": 5, "nll": {"batch_size": 3}}},
    "training": {"train": {"threads": 1, "cpu_processes": 1, "checkpoint_every": 3}},
    "outside": {"models": {"outside": [dict(OUTSIDE, tensor_parallel_size=2)]}},
}


@pytest.mark.parametrize("kind", list(EXECUTION_CHANGES))
def test_changing_execution_knobs_plans_nothing(test_run, kind):
    tmp, _, configs = test_run
    change = override(tmp, f"execution-{kind}.yaml", **EXECUTION_CHANGES[kind])
    assert planned_jobs(*configs, change) == {}


def test_adding_a_budget_adds_only_its_mixture_training_evaluation_and_the_fit(test_run):
    tmp, _, configs = test_run
    more = override(tmp, "budgets.yaml", mixtures={"sample_counts": [16, 24, 32]})
    assert planned_jobs(*configs, more) == {
        "mixture": 1,
        "train": 1,
        "evaluate": 1,
        "eval_nll": 1,
        "eval_summary": 1,
        "scaling": 1,
        "all": 1,
    }


def test_changing_a_level2_sampling_parameter_reruns_level2_and_what_follows_answers(test_run):
    tmp, _, configs = test_run
    hotter = override(
        tmp,
        "l2.yaml",
        generation={
            "level2": {
                "sampling": {"temperature": 0.9, "top_p": 0.95, "max_tokens": 200, "seed": 2}
            }
        },
    )
    assert planned_jobs(*configs, hotter) == {"level2": 2, "answer": 2, **AFTER_ANSWERS}


def test_level3_sets_come_from_the_graph_with_their_best_references(test_run):
    _, results, _ = test_run
    graph_dir = results / "graph" / "subset-000-of-001"
    report = json.loads((graph_dir / "report.json").read_text())
    assert report["nodes"]["topic"] > 0 and report["edges"]["topic_kc"] > 0
    sets = pq.read_table(results / "walks" / "subset-000-of-001.parquet").to_pylist()
    walk_counts = json.loads((results / "walks" / "subset-000-of-001.counts.json").read_text())
    assert walk_counts["in"] == report["nodes"]["topic"]  # one epoch in the test config
    assert len(sets) == walk_counts["out"]
    for s in sets:
        assert 1 <= len(s["ref_doc_ids"]) <= 2 and len(s["topics"]) >= 1
        assert s["ref_jaccard"] == sorted(s["ref_jaccard"], reverse=True)
    by_id = {s["set_id"]: s for s in sets}
    for shard in SHARDS:
        for q in pq.read_table(results / "level3" / f"shard-{shard}.parquet").to_pylist():
            unit = q["question_id"].removeprefix("L3-").rsplit("-c", 1)[0]
            assert q["level"] == 3 and q["doc_ids"] == by_id[unit]["ref_doc_ids"]


def test_changing_the_walk_seed_reruns_walks_level3_and_what_follows_answers(test_run):
    tmp, _, configs = test_run
    seeded = override(tmp, "walks.yaml", graph={"walks": {"epochs": 1, "seed": 9}})
    assert planned_jobs(*configs, seeded) == {
        "walks": 1,
        "level3_sets": 1,
        "level3": 2,
        "answer": 2,
        **AFTER_ANSWERS,
    }


def test_status_prints_the_counts_table(test_run):
    _, results, _ = test_run
    out = subprocess.run(
        [sys.executable, "-m", "synthllm", "status", str(results)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"corpus\s+corpus\s+20\s+20", out), out
    assert re.search(r"answer\s+answer/shard-00000-of-00002\s+\d+", out), out


def test_misspelled_key_fails_before_any_job_naming_it(tmp_path):
    results = tmp_path / "results"
    bad = override(tmp_path, "bad.yaml", results=str(results), corpus={"n_shard": 3})
    proc = snakemake("--configfile", "config/test.yaml", bad, check=False)
    assert proc.returncode != 0
    assert "'n_shard' was unexpected" in proc.stdout + proc.stderr
    assert not results.exists()


def test_wrong_type_fails_naming_the_key(tmp_path):
    bad = override(tmp_path, "bad.yaml", results=str(tmp_path / "r"), corpus={"n_shards": "four"})
    proc = snakemake("--configfile", "config/test.yaml", bad, "-n", check=False)
    assert proc.returncode != 0
    assert "instance['corpus']['n_shards']" in proc.stdout + proc.stderr


def test_paper_config_plans_the_whole_dag():
    jobs = planned_jobs("--configfile", "config/paper.yaml")
    # three models, seven budgets plus the base model each; nine models evaluated as they are
    assert jobs == {
        "corpus": 1,
        "synthetic_docs": 1,
        "embed": 512,
        "embed_synthetic": 1,
        "coldstart": 1,
        "rate": 2,
        "finegrained": 2,
        "filter_docs": 512,
        "filter_report": 1,
        "extract": 512,
        "level1": 512,
        "level2": 512,
        "concept_graph": 5,
        "walks": 5,
        "level3_sets": 1,
        "level3": 512,
        "answer": 512,
        "dedup": 1,
        "decontam": 1,
        "sft_pool": 1,
        "length_stats": 1,
        "mixture": 7,
        "base_model": 3,
        "train": 21,
        "outside_model": 9,
        "evaluate": 33,
        "eval_nll": 24,
        "eval_summary": 1,
        "scaling": 1,
        "all": 1,
    }


def test_changing_the_learning_rate_reruns_training_evaluation_and_fits_only(test_run):
    tmp, _, configs = test_run
    faster = override(tmp, "lr.yaml", train={"learning_rate": 2.0e-3})
    assert planned_jobs(*configs, faster) == {
        "train": 2,
        "evaluate": 2,
        "eval_nll": 2,
        "eval_summary": 1,
        "scaling": 1,
        "all": 1,
    }


def test_changing_only_the_fit_settings_reruns_only_the_scaling_stage(test_run):
    tmp, _, configs = test_run
    squares = override(tmp, "fit.yaml", scaling={"loss": "least_squares"})
    assert planned_jobs(*configs, squares) == {"scaling": 1, "all": 1}


def test_a_failing_job_names_the_bad_file_and_leaves_no_output(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b'{"text": "ok"}\n{"text": broken\n')
    results = tmp_path / "results"
    cfg = override(
        tmp_path,
        "c.yaml",
        results=str(results),
        corpus={
            "n_shards": 2,
            "sources": [{"name": "bad", "glob": str(tmp_path / "in" / "*.jsonl")}],
        },
    )
    proc = snakemake("--configfile", "config/test.yaml", cfg, check=False)
    assert proc.returncode != 0
    log = (results / "logs" / "corpus.log").read_text()
    assert "a.jsonl:2: malformed JSON" in log
    assert not any((results / "corpus").glob("*"))


def test_dedup_decontam_and_nested_mixtures_account_for_every_sample(test_run):
    _, results, _ = test_run
    answered = sum(
        pq.read_metadata(results / "answer" / f"shard-{s}.parquet").num_rows for s in SHARDS
    )
    counts = json.loads((results / "dedup" / "counts.json").read_text())
    kept = pq.read_table(results / "dedup" / "questions.parquet").to_pylist()
    dropped = pq.read_table(results / "dedup" / "dropped.parquet").to_pylist()
    assert counts["in"] == answered == len(kept) + len(dropped)
    assert counts["dropped"] == {
        r: sum(d["reason"] == r for d in dropped) for r in {d["reason"] for d in dropped}
    }
    kept_ids = {q["question_id"] for q in kept}
    usable = set(
        yaml.safe_load((ROOT / "config" / "test.yaml").read_text())["dedup"]["answer_statuses"]
    )
    assert {q["status"] for q in kept} <= usable
    assert all(
        d["reason"].removeprefix("answer_") not in usable
        for d in dropped
        if d["reason"].startswith("answer_")
    )
    assert all(d["duplicate_of"] in kept_ids for d in dropped if d["reason"] in ("exact", "near"))
    clean = json.loads((results / "decontam" / "counts.json").read_text())
    assert clean["in"] == len(kept)
    pool = json.loads((results / "mixtures" / "pool.counts.json").read_text())
    assert pool["in"] == pool["out"] == clean["out"]
    budgets = sorted(
        yaml.safe_load((ROOT / "config" / "test.yaml").read_text())["mixtures"]["sample_counts"]
    )
    subsets = []
    for budget in budgets:
        table = pq.read_table(results / "mixtures" / "all" / f"{budget}.parquet").to_pylist()
        mix_counts = json.loads(
            (results / "mixtures" / "all" / f"{budget}.counts.json").read_text()
        )
        assert len(table) == budget == mix_counts["samples"]
        assert mix_counts["tokens"] == sum(r["tokens"] for r in table) > 0
        subsets.append({r["question_id"] for r in table})
    assert all(a < b for a, b in zip(subsets, subsets[1:]))


def test_decontamination_lists_planted_benchmark_questions(test_run, tmp_path):
    import shutil

    import pyarrow as pa
    from synthllm.core.eval_data import load_benchmark

    _, results, configs = test_run
    planted = tmp_path / "planted"
    shutil.copytree(results, planted)  # keeps mtimes: only what the plant touches reruns
    shard = planted / "answer" / f"shard-{SHARDS[0]}.parquet"
    table = pq.read_table(shard)
    rows = table.to_pylist()
    copies = {
        "gsm8k": load_benchmark("gsm8k", "resources/benchmarks/gsm8k/test.jsonl")[5],
        "math": load_benchmark("math", "resources/benchmarks/math/test.jsonl")[40],
    }
    for name, record in copies.items():
        rows.append(
            {
                **rows[0],
                "question_id": f"L1-planted-{name}-c0-q0",
                "question": record["question"],
                "status": "ok",
            }
        )
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    snakemake(
        str(planted / "decontam" / "report.json"),  # targets before --configfile (it takes several)
        *configs[:-1],
        override(tmp_path, "planted.yaml", results=str(planted)),
    )
    hits = {
        h["question_id"]: h
        for h in pq.read_table(planted / "decontam" / "hits.parquet").to_pylist()
    }
    for name, record in copies.items():
        hit = hits[f"L1-planted-{name}-c0-q0"]
        assert (hit["benchmark"], hit["benchmark_id"], hit["field"]) == (
            name,
            str(record["id"]),
            "question",
        )
    report = json.loads((planted / "decontam" / "report.json").read_text())
    assert (
        report["per_benchmark"]["gsm8k"]["hits"] >= 1
        and report["per_benchmark"]["math"]["hits"] >= 1
    )
