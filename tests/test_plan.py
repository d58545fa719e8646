"""`synthllm plan`: the jobs of Snakemake's own DAG, and the arithmetic of their cost."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from slurmrun import job_stats
from synthllm.setup.plan import preflight
from synthllm.setup.plan.dag import count_benchmarks, dag_jobs
from synthllm.setup.plan.estimate import Job, Sizes, estimate_gpu_hours, gpu_hours, plan_rows, sizes
from synthllm.setup.plan.rates import params_b, tokens_per_s
from synthllm.setup.plan.report import table

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = str(ROOT / "config" / "test.yaml")
PAPER_CONFIG = str(ROOT / "config" / "paper.yaml")


def synthllm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthllm", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def fresh_results(tmp_path) -> str:
    """A config layer sending the results to an empty folder: every job is planned."""
    path = tmp_path / "results.yaml"
    path.write_text(yaml.safe_dump({"results": str(tmp_path / "results")}))
    return str(path)


def test_the_test_config_plans_the_jobs_of_a_dry_run(fresh_results):
    _, jobs = dag_jobs([TEST_CONFIG, fresh_results])
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", TEST_CONFIG, fresh_results],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert dict(Counter(j.rule for j in jobs)) == job_stats(proc.stdout)


def test_gpu_hours_of_a_small_case():
    jobs = [Job("level1", gpus=8, runtime_min=720), Job("level1", gpus=4, runtime_min=90)]
    assert gpu_hours(jobs) == 8 * 12 + 4 * 1.5
    # 3.6M tokens at 100 tok/s per GPU is 10 GPU-h; two 15-minute loads on 4 GPUs add 2
    assert estimate_gpu_hours(3.6e6, 100, loads=2, gpus=4, load_min=15) == pytest.approx(12)
    assert estimate_gpu_hours(1e6, None, 1, 1, 1) is None
    # training: 6 N FLOPs per token at 40% of 312 TFLOPS; a 2B model: 10,400 tok/s
    assert params_b("org/some-2B") == 2 and params_b("SmolLM2-135M") == 0.135
    assert tokens_per_s("train", "org/some-2B") == pytest.approx(312e12 * 0.4 / 12e9)
    # a 2B generator (not in the table: 40,000 / 2 tok/s per GPU, 5-minute loads) writing
    # 10 documents x 2 calls x 100 tokens per job, and a CPU rule; rows in pipeline order
    config = {
        "corpus": {"n_shards": 1},
        "generation": {
            "level1": {"calls_per_doc": 2, "sampling": {"max_tokens": 100}},
            "engine_keepalive_s": 0,
            "shards_per_job": 1,
        },
        "models": {"generator": {"model": "org/some-2B", "backend": "vllm"}, "train": []},
    }
    s = Sizes(100, 10, 5, {"level1": 50, "level2": 50, "level3": 15}, 10)
    rows = plan_rows(
        [Job("scaling", runtime_min=30), *jobs, Job("scaling", runtime_min=30)], config, s
    )
    assert [(r.rule, r.jobs, r.gpus, r.loads) for r in rows] == [
        ("level1", 2, (4, 8), 2),
        ("scaling", 2, (0,), 0),
    ]
    assert rows[0].limit_gpu_h == 102 and rows[1].limit_gpu_h == 0
    assert rows[0].tokens == 2 * 2000
    assert rows[0].est_gpu_h == pytest.approx(2 * 2000 / 20000 / 3600 + (8 + 4) * 5 / 60)
    assert rows[1].est_gpu_h == 0


@pytest.fixture(scope="module")
def paper():
    return dag_jobs([PAPER_CONFIG], forceall=True)


def test_the_paper_config_jobs_ask_for_its_gpus(paper):
    config, jobs = paper
    # with 9 outside models staged and evaluated and 5 graphs of record; the corpus's scatter
    # (one job here, for the absent files: it would fail naming the glob) and gather (one
    # job per shard)
    assert len(jobs) == 3734 + 1 + 512
    gpus = {}
    for job in jobs:
        key = job.rule if job.rule != "train" else f"train/{job.wildcards['model']}"
        gpus.setdefault(key, set()).add(job.gpus)
    for rule in ("extract", "level1", "level2", "level3", "synthetic_docs"):
        assert gpus[rule] == {config["models"]["generator"]["gpus"]} == {8}, rule
    assert gpus["answer"] == {4}
    assert gpus["train/1B"] == gpus["train/3B"] == {8}
    assert gpus["train/8B"] == {16}  # 2 nodes x 8
    assert gpus["embed"] == {1}
    # the outside models' evaluations (models.outside): 4 GPUs for the 70B and 72B models
    assert gpus["evaluate"] == {1, 4}
    assert gpus["outside_model"] == {0}
    assert gpus["corpus"] == gpus["dedup"] == gpus["rate"] == {0}  # rate: an API model
    assert gpus["corpus_part"] == gpus["corpus_shard"] == {0}
    level1 = [j for j in jobs if j.rule == "level1"]
    assert len(level1) == 512 and {j.runtime_min for j in level1} == {720}

    s = sizes(config, None, count_benchmarks(config))
    rows = {r.rule: r for r in plan_rows(jobs, config, s)}
    assert rows["level1"].limit_gpu_h == 512 * 8 * 12
    # four shards to an allocation on one engine (generation.shards_per_job)
    assert config["generation"]["shards_per_job"] == 4
    assert rows["level1"].loads == rows["answer"].loads == 512 / 4
    assert rows["train"].loads == 0 and rows["rate"].loads == 0
    # 520K documents x 2 calls x 2048 tokens, Mistral-Large at 400 tok/s per GPU, 128 loads
    assert rows["level1"].tokens == pytest.approx(520_000 * 2 * 2048)
    expected = 520_000 * 2 * 2048 / 400 / 3600 + 128 * 8 * 20 / 60
    assert rows["level1"].est_gpu_h == pytest.approx(expected)
    text = table(list(rows.values()))
    assert text.splitlines()[-1].split()[:2] == ["total", str(3734 + 1 + 512)]


def test_the_cli_prints_the_table(fresh_results):
    proc = synthllm("plan", "--configfile", TEST_CONFIG, "--configfile", fresh_results)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["stage", "jobs", "GPUs/job"]
    assert any(line.startswith("total ") for line in lines)
    assert any(line.startswith("answer ") for line in lines)


def test_a_missing_config_file_is_one_line_and_exit_2():
    proc = synthllm("plan", "--configfile", "config/no-such.yaml")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "synthllm plan: error: --configfile config/no-such.yaml: no such file"
    ]


def test_the_pre_flight_check_passes_the_paper_config_and_names_the_keys_of_a_short_one(paper):
    """§4: about 2.3M + 2.6M + 2.6M clean questions feed the 7.4M budget. The paper config
    reaches it (Level-3 sized with margin); with 5 walk epochs (2.4M Level-3 questions
    generated) it would fall short of the budget and of the Level ablation's 2.3M."""
    config, _ = paper
    s = sizes(config, None, count_benchmarks(config))
    notes, problems = preflight.check(config, s)
    assert problems == [] and len(notes) == 4
    short = {**config, "graph": {**config["graph"], "walks": {**config["graph"]["walks"]}}}
    short["graph"]["walks"]["epochs"] = 5
    _, problems = preflight.check(short, sizes(short, None, count_benchmarks(short)))
    assert len(problems) == 2
    assert "mixture 'all' needs 7,400,000 samples (mixtures.sample_counts)" in problems[0]
    assert "graph.walks.epochs" in problems[0]
    assert "mixture 'level3' needs 2,300,000 Level-3 samples (ablation.samples)" in problems[1]


def test_the_cli_fails_after_the_table_when_a_budget_cannot_be_filled(fresh_results, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump({"mixtures": {"sample_counts": [8, 16, 100_000]}}))
    proc = synthllm(
        "plan", "--configfile", TEST_CONFIG, "--configfile", fresh_results, "--configfile", str(big)
    )
    assert proc.returncode == 2
    assert any(line.startswith("total ") for line in proc.stdout.splitlines())
    error = proc.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("synthllm plan: error: pre-flight: mixture")
    assert "needs 100,000 samples (mixtures.sample_counts)" in error[0]


def test_the_decontamination_judge_when_on_is_one_generator_job_priced_by_its_pairs(tmp_path):
    on = tmp_path / "judge.yaml"
    on.write_text("decontam_judge: {enabled: true, top_k: 2}\n")
    config, jobs = dag_jobs([PAPER_CONFIG, str(on)], forceall=True)
    (judge,) = [j for j in jobs if j.rule == "decontam_judge"]
    assert judge.gpus == config["models"]["generator"]["gpus"] == 8
    assert judge.runtime_min == 2880 and judge.mem_mb == 512000
    s = sizes(config, None, count_benchmarks(config))
    row = {r.rule: r for r in plan_rows(jobs, config, s)}["decontam_judge"]
    pairs = 2 * sum(s.questions.values())
    assert row.tokens == pytest.approx(pairs * (4 + 350 * 0.1))
    assert row.loads == 1 and row.est_gpu_h > 0


def test_the_pre_flight_check_says_which_drops_its_keep_rates_leave_out(tmp_path):
    verified = str(ROOT / "config" / "paper-verified.yaml")
    on = tmp_path / "judge.yaml"
    on.write_text("decontam_judge: {enabled: true}\n")
    for configs, said in (
        ([PAPER_CONFIG], []),
        ([PAPER_CONFIG, verified], ["generation.answer.verify.min_agreement"]),
        ([PAPER_CONFIG, verified, str(on)], ["verify.min_agreement", "decontam_judge.enabled"]),
    ):
        config, _ = dag_jobs(configs, forceall=False)
        notes, _ = preflight.check(config, sizes(config, None, count_benchmarks(config)))
        bounds = [n for n in notes if "upper bound" in n]
        assert len(bounds) == len(said) and all(k in n for k, n in zip(said, bounds)), bounds
