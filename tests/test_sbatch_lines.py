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
                "max_runtime": 4320,
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
    assert len(lines) > 3500


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
    resources = paper["resources"]
    for line in lines:
        spec = {**resources["default"], **resources["rules"].get(line["rule"], {})}
        if line["rule"] == "augmentation_level3_sets":
            spec = {**resources["default"], **resources["rules"]["level3_sets"]}
        sbatch = flags(line["sbatch"])
        assert (sbatch["--mem"], sbatch["-t"]) == (str(spec["mem_mb"]), str(spec["runtime"]))


def test_resumable_jobs_are_signalled_and_retry_with_the_same_limits(lines, site):
    resumable = {
        "synthetic_docs", "rate", "extract", "level1", "level2", "level3", "answer",
        "evaluate", "augmentation_expand", "train",
    }  # fmt: skip
    retried = {(line["rule"], json.dumps(line["wildcards"])): line for line in render(site, 2)}
    caps = SITE["resources"]["scheduler"]
    capped = 0
    for line in lines:
        first = flags(line["sbatch"])
        second = flags(retried[(line["rule"], json.dumps(line["wildcards"]))]["sbatch"])
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
