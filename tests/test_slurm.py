"""The SLURM profile against a real cluster: retries with more memory, failures that stop
the run (what each job asks SLURM for: tests/test_sbatch_lines.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from slurmrun import PROFILE_ARGS, ROOT, job_stats, sacct_jobs, slurm_run_id, snakemake_command

FAILURES = ROOT / "tests" / "slurm" / "Snakefile"


def snakemake_in(workdir, *args, profile=True):
    cmd = [
        *snakemake_command(slurm=profile),
        *args,
        "-s",
        str(FAILURES),
        "--directory",
        str(workdir),
    ]
    if profile:
        cmd += PROFILE_ARGS
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_a_job_killed_for_memory_succeeds_at_attempt_two_with_twice_the_memory(
    slurm_cluster, tmp_path
):
    # 700 MB held: SLURM kills attempt 1 (600 MB), attempt 2 gets 1,200 MB
    proc = snakemake_in(tmp_path, "retried.txt", "--config", "hold_mb=700", "first_mem_mb=600")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert (tmp_path / "retried.txt").read_text().strip() == "1200"
    jobs = sacct_jobs(slurm_run_id(out))
    assert [(j["rule"], j["req_mem"]) for j in jobs] == [
        ("needs_more_memory", "600M"),
        ("needs_more_memory", "1200M"),
    ]
    assert jobs[0]["state"] != "COMPLETED" and jobs[1]["state"] == "COMPLETED"
    # SLURM itself ended attempt 1: the step was killed for exceeding its memory
    steps = subprocess.run(
        ["sacct", "-n", "-P", "-j", jobs[0]["job_id"], "-o", "JobID,State,MaxRSS"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"\.0\|CANCELLED", steps), steps


def test_a_job_that_always_fails_stops_the_run_naming_its_rule_and_log(slurm_cluster, tmp_path):
    proc = snakemake_in(tmp_path, "never.txt", "--config", "hold_mb=0", "first_mem_mb=500")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error in rule always_fails" in out
    assert "logs/always_fails.log" in out
    assert "failing on purpose" in out  # the profile prints the failed job's log
    jobs = sacct_jobs(slurm_run_id(out))
    assert [(j["rule"], j["state"]) for j in jobs] == [
        ("always_fails", "FAILED")
    ] * 2  # with its retry
    # the partial output was removed, so nothing takes it as done: the job is planned again
    assert not (tmp_path / "never.txt").exists()
    plan = snakemake_in(
        tmp_path, "never.txt", "-n", "--config", "hold_mb=0", "first_mem_mb=500", profile=False
    )
    assert job_stats(plan.stdout) == {"always_fails": 1}


@pytest.mark.parametrize(
    "resources, key",
    [
        ({"rules": {"extrct": {"mem_mb": 1000}}}, "rules"),
        ({"local_rules": ["scalng"]}, "local_rules"),
    ],
)
def test_a_resources_entry_for_an_unknown_rule_fails_naming_the_key(tmp_path, resources, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"results": str(tmp_path / "r"), "resources": resources}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "config/test.yaml", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    name = next(iter(resources[key]))
    assert f"config key resources.{key} names {name}" in proc.stdout + proc.stderr


def test_a_conda_deployment_without_sdm_conda_stops_before_any_job(tmp_path):
    conda = tmp_path / "conda.yaml"
    conda.write_text(
        yaml.safe_dump({"results": str(tmp_path / "r"), "software": {"deployment": "conda"}})
    )
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", str(tmp_path / "r" / "corpus" / "counts.json")]
        + ["--cores", "1", "--configfile", "config/test.yaml", str(conda)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "runs without --software-deployment-method conda" in proc.stdout + proc.stderr
    assert not (tmp_path / "r").exists()  # no job ran
