"""Running snakemake through the SLURM profile in tests, and reading back what SLURM ran."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The profile as users run it, plus the one CI-only override: status checks start after
# 2 s instead of the plugin's 40 s per DAG level (a real cluster needs the slower pace).
PROFILE_ARGS = ("--profile", str(ROOT / "slurm"), "--slurm-init-seconds-before-status-checks", "2")


def slurm_run_id(output: str) -> str:
    """The plugin's run ID: the SLURM job name of every job of one snakemake run."""
    found = re.findall(r"SLURM run ID: (\S+)", output)
    assert len(found) == 1, f"expected one SLURM run ID in the snakemake output:\n{output}"
    return found[0]


def sacct_jobs(run_id: str) -> list[dict[str, str]]:
    """The allocations (not steps) SLURM accounted for a run: job id, rule, state, memory."""
    proc = subprocess.run(
        [
            "sacct",
            "-X",
            "-n",
            "-P",
            "-S",
            "now-1days",
            "--name",
            run_id,
            "-o",
            "JobID,Comment,State,ReqMem,ExitCode",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    jobs = []
    for line in proc.stdout.splitlines():
        job_id, comment, state, req_mem, exit_code = line.split("|")
        # the plugin's comment: rule_<rule>[_wildcards_<values>]
        rule = comment.removeprefix("rule_").split("_wildcards_")[0]
        jobs.append(
            {
                "job_id": job_id,
                "rule": rule,
                "state": state,
                "req_mem": req_mem,
                "exit_code": exit_code,
            }
        )
    return jobs


def job_stats(output: str) -> dict[str, int]:
    """Rule -> job count from the first `Job stats` table of a snakemake run's output."""
    stats = re.search(r"Job stats:\n(.*?)\ntotal", output, re.S)
    assert stats, output
    rows = [line.split() for line in stats.group(1).splitlines()[2:]]
    return {rule: int(count) for rule, count in rows}
