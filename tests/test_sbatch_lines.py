"""What SLURM is asked for: the sbatch line and the job step's srun line of every job of the
paper plan (its experiments included), rendered by the SLURM plugin's own code
(slurm/sbatch_lines.py, in the controller environment), with a site's partitions per job
kind layered over the paper config."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
import yaml
from slurmrun import ROOT

CONTROLLER_PYTHON = ROOT / ".venv-controller" / "bin" / "python"
# the rules whose shard jobs run several to an allocation (generation.shards_per_job)
GROUPED = {"extract", "level1", "level2", "level3", "answer"}
TARGETS = ["all", "diversity", "ablation", "augmentation"]
SITE = {
    "resources": {
        "scheduler": {
            "gpu": {
                "partition": "gpu",
                "account": "lab-gpu",
                "qos": "high",
                "constraint": "h100",
                "max_mem_mb": 1_000_000,
                # four days: four answer shards of 24 h in one allocation (shards_per_job)
                "max_runtime": 5760,
            },
            "cpu": {"partition": "cpu", "account": "lab", "max_mem_mb": 64000, "max_runtime": 900},
        }
    }
}

pytestmark = pytest.mark.skipif(
    not CONTROLLER_PYTHON.exists(), reason="no controller environment: run ./install.sh"
)


@pytest.fixture(scope="module")
def paper():
    return yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = tmp_path_factory.mktemp("site") / "site.yaml"
    path.write_text(yaml.safe_dump(SITE))
    return path


def render(site, attempt: int) -> list[dict]:
    proc = subprocess.run(
        [str(CONTROLLER_PYTHON), "slurm/sbatch_lines.py", *TARGETS, "--forceall", "--json"]
        + ["--attempt", str(attempt), "--configfile", "config/paper.yaml", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def lines(site):
    return render(site, attempt=1)


def flags(line: str) -> dict[str, str]:
    """The flags of a command line: `--name=value`, `--name value` and `-x value` alike."""
    words, found, i = shlex.split(line)[1:], {}, 0
    while i < len(words):
        word = words[i]
        if "=" in word:
            name, value = word.split("=", 1)
        elif i + 1 < len(words) and not words[i + 1].startswith("-"):
            name, value, i = word, words[i + 1], i + 1
        else:
            name, value = word, ""
        found[name] = value
        i += 1
    return found


def expected_gpus(rule: str, paper: dict, model: str | None) -> int:
    """Every GPU a job of the rule asks for, from the paper config's own keys."""
    models = paper["models"]
    generator = {"extract", "level1", "level2", "level3", "synthetic_docs", "augmentation_expand"}
    if rule in generator:
        return models["generator"]["gpus"]
    by_rule = {
        "answer": models["answerer"]["gpus"],
        "rate": models["rater"].get("gpus", 0),
        "embed": models["embedding"]["gpus"],
        "embed_synthetic": models["embedding"]["gpus"],
        "evaluate": paper["evaluate"]["engine"]["gpus"],
        "eval_nll": min(1, paper["evaluate"]["engine"]["gpus"]),
        "diversity": paper["diversity"]["embedding"]["gpus"],
    }
    if rule == "train":
        spec = {m["label"]: m for m in models["train"]}[model]
        return spec["gpus"] * spec["nodes"]
    outside = {m["label"]: m for m in models["outside"]}
    if rule == "evaluate" and outside.get(model, {}).get("gpus") is not None:
        return outside[model]["gpus"]  # a 70B model evaluated as it is: its own GPUs
    return by_rule.get(rule, 0)


def test_every_job_of_the_paper_plan_is_rendered_except_the_local_ones(lines):
    rules = {line["rule"] for line in lines}
    assert {"extract", "level3", "answer", "train", "evaluate", "corpus", "scaling"} <= rules
    assert "train_tokens" in rules  # a CPU job (the check below: the cpu partition)
    assert {"level1", "augmentation_expand", "diversity"} <= rules  # the experiments' jobs
    assert not rules & {"all", "eval_summary", "filter_report", "ablation", "augmentation"}
    # the generation rules' 512 shards each run 4 to an allocation (shards_per_job)
    assert len(lines) > 2400 and sum(len(line["jobs"]) for line in lines) > 3500


def test_gpu_jobs_ask_for_their_gpus_as_one_task_in_the_gpu_partition(lines, paper):
    seen = set()
    for line in lines:
        sbatch, srun = flags(line["sbatch"]), flags(line["srun"])
        model = line["wildcards"].get("model")
        gpus = expected_gpus(line["rule"], paper, model)
        where = f"{line['rule']} {line['wildcards']}: {line['sbatch']}"
        if not gpus:
            assert "--gpus" not in sbatch and "--gres" not in sbatch, where
            assert (sbatch["-p"], sbatch["-A"]) == ("cpu", "lab"), where
            assert sbatch["--ntasks"] == "1" and "--qos" not in sbatch, where
            continue
        seen.add(line["rule"])
        assert (sbatch["-p"], sbatch["-A"], sbatch["--qos"], sbatch["-C"]) == (
            "gpu",
            "lab-gpu",
            "high",
            "h100",
        ), where
        # never one task per GPU: a tensor-parallel engine must see all of its GPUs
        assert "--ntasks-per-gpu" not in sbatch, where
        assert sbatch["--cpus-per-task"] == str(line["threads"]), where
        if sbatch["--nodes"] == "1":
            assert sbatch["--gpus"] == str(gpus) and "--ntasks" not in sbatch, where
            assert line["srun"].startswith("srun -n1 "), where
            assert srun["--gpus"] == str(gpus), where
            assert srun["--cpus-per-task"] == str(line["threads"]), where
    assert {"extract", "level3", "answer", "train", "evaluate", "augmentation_expand"} <= seen


def test_the_two_node_training_job_runs_one_launcher_per_node(lines, paper):
    two_node = [m for m in paper["models"]["train"] if m["nodes"] > 1]
    assert two_node, "the paper config trains its largest model on several nodes"
    spec = two_node[0]
    jobs = [
        line
        for line in lines
        if line["rule"] == "train" and line["wildcards"]["model"] == spec["label"]
    ]
    assert jobs
    for line in jobs:
        sbatch, srun = flags(line["sbatch"]), flags(line["srun"])
        assert sbatch["--nodes"] == sbatch["--ntasks"] == str(spec["nodes"])
        assert sbatch["--gres"] == f"gpu:{spec['gpus']}" and "--gpus" not in sbatch
        assert srun["--nodes"] == str(spec["nodes"]) and srun["--ntasks-per-node"] == "1"
        assert srun["--cpus-per-task"] == str(line["threads"])
        assert srun["--kill-on-bad-exit"] == "1"
        # a rendezvous port of the job's own: two jobs on one node do not collide
        assert ":$((20000 + SLURM_JOB_ID % 20000))" in line["launcher"]


def test_first_attempts_ask_for_the_configured_memory_and_time(lines, paper):
    """A job's memory and runtime; a group of shard jobs (generation.shards_per_job) asks
    for one job's memory and the runtimes of its jobs summed."""
    resources = paper["resources"]
    for line in lines:
        spec = {**resources["default"], **resources["rules"].get(line["rule"], {})}
        if line["rule"] == "augmentation_level3_sets":
            spec = {**resources["default"], **resources["rules"]["level3_sets"]}
        sbatch = flags(line["sbatch"])
        runtime = spec["runtime"] * len(line["jobs"])
        assert (sbatch["--mem"], sbatch["-t"]) == (str(spec["mem_mb"]), str(runtime))


def test_resumable_jobs_are_signalled_and_retry_with_the_same_limits(lines, site):
    resumable = {
        "synthetic_docs", "rate", "extract", "level1", "level2", "level3", "answer",
        "evaluate", "augmentation_expand", "train",
    }  # fmt: skip
    # a group's shards may be others in another plan (Snakemake groups them in no set
    # order); the groups of a rule and size ask for the same resources

    def key(line):
        if line["rule"] in GROUPED:  # a group: its size says its resources
            return line["rule"], len(line["jobs"])
        return line["rule"], json.dumps(line["wildcards"])

    retried = {key(line): line for line in render(site, 2)}
    caps = SITE["resources"]["scheduler"]
    capped = 0
    for line in lines:
        first = flags(line["sbatch"])
        second = flags(retried[key(line)]["sbatch"])
        if line["rule"] in resumable:
            assert first["--signal"] == "TERM@600", line["sbatch"]
            assert (second["--mem"], second["-t"]) == (first["--mem"], first["-t"])
            continue
        assert "--signal" not in first, line["sbatch"]
        cap = caps["gpu" if ("--gpus" in first or "--gres" in first) else "cpu"]
        mem = min(2 * int(first["--mem"]), cap["max_mem_mb"])
        runtime = min(2 * int(first["-t"]), cap["max_runtime"])
        assert (second["--mem"], second["-t"]) == (str(mem), str(runtime)), line["rule"]
        capped += runtime < 2 * int(first["-t"]) or mem < 2 * int(first["--mem"])
    assert capped  # the site's caps are reached by some retry


def test_a_first_attempt_over_its_partitions_cap_fails_before_any_job(tmp_path):
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({"resources": {"scheduler": {"gpu": {"max_mem_mb": 256000}}}}))
    proc = subprocess.run(
        [str(CONTROLLER_PYTHON), "slurm/sbatch_lines.py", "--configfile", "config/paper.yaml"]
        + ["--configfile", str(small), "--forceall"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "resources.scheduler.gpu.max_mem_mb (256000)" in proc.stderr


def render_with(tmp_path, overrides: dict, *configs: str) -> subprocess.CompletedProcess:
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump(overrides))
    return subprocess.run(
        [str(CONTROLLER_PYTHON), "slurm/sbatch_lines.py", "--forceall", "--json"]
        + ["--configfile", "config/paper.yaml", *configs, str(extra)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_shard_jobs_run_several_to_an_allocation_one_after_another(tmp_path, paper):
    """generation.shards_per_job 4: each generation rule's 512 shard jobs are 128 group
    jobs of 4 shards, each asking for one job's GPUs and memory and the 4 runtimes summed;
    every shard is in exactly one group."""
    grouping = {"generation": {"shards_per_job": 4, "engine_keepalive_s": 300}}
    proc = render_with(tmp_path, grouping)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = json.loads(proc.stdout)
    shards = paper["corpus"]["n_shards"]
    for rule in ("extract", "level1", "level2", "level3", "answer"):
        groups = [line for line in lines if line["rule"] == rule]
        assert len(groups) == shards // 4
        assert sorted(job["shard"] for g in groups for job in g["jobs"]) == sorted(
            {job["shard"] for g in groups for job in g["jobs"]}
        )
        assert sum(len(g["jobs"]) for g in groups) == shards
        sbatch = flags(groups[0]["sbatch"])
        rule_resources = paper["resources"]["rules"][rule]
        assert sbatch["-t"] == str(4 * rule_resources["runtime"])
        assert sbatch["--mem"] == str(rule_resources["mem_mb"])
        assert sbatch["--gpus"].endswith(str(expected_gpus(rule, paper, None)))
    # the other rules keep one job each
    assert len([line for line in lines if line["rule"] == "embed"]) == shards


def test_grouped_shards_without_a_shared_engine_or_over_the_runtime_cap_fail_the_plan(
    tmp_path, site
):
    no_engine = render_with(
        tmp_path, {"generation": {"shards_per_job": 4, "engine_keepalive_s": 0}}
    )
    assert no_engine.returncode != 0
    assert "generation.shards_per_job is 4 but generation.engine_keepalive_s is 0" in (
        no_engine.stderr
    )
    # the site's GPU partition allows 5760 min: 8 answer jobs of 1440 do not fit
    too_long = render_with(
        tmp_path, {"generation": {"shards_per_job": 8, "engine_keepalive_s": 300}}, str(site)
    )
    assert too_long.returncode != 0
    assert "generation.shards_per_job: 8 jobs of rule" in too_long.stderr
    assert "resources.scheduler.gpu.max_runtime (5760)" in too_long.stderr
