"""The sbatch command line, and the srun line of its job step, of every job a config plans,
rendered by snakemake-executor-plugin-slurm's own code; nothing is submitted. Run it with
the controller's Python (the environment of the plugin), from the checkout:

    .venv-controller/bin/python slurm/sbatch_lines.py --configfile config/paper.yaml [targets]
        [--forceall] [--attempt N] [--json]

It plans like `snakemake --profile slurm -n` (the profile's default-resources included; job
groups as the SLURM executor forms them: generation.shards_per_job) and prints, per job
or group job, what the plugin would submit: `sbatch ...` without its --wrap, and the
`srun ...` the plugin's job step puts around the rule's command (a multi-node job's command
starts its own srun: that one is shown instead). Account and partition are written as the
plugin writes them, without asking the cluster whether they exist. `--attempt 2` shows what
a retry asks for.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    ExecutionSettings,
    OutputSettings,
    Quietness,
    ResourceSettings,
)
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
from snakemake_executor_plugin_slurm_jobstep import (
    get_cpu_setting,
    get_gpu_setting,
    get_node_setting,
)
from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "slurm" / "config.yaml"


def profile_default_resources() -> dict:
    """The profile's default-resources."""
    return yaml.safe_load(PROFILE.read_text()).get("default-resources") or {}


def planned_jobs(configfiles: list[str], targets: list[str], forceall: bool):
    """Snakemake's own jobs of the plan, as the SLURM executor receives them: a job, or a
    group job where the config groups jobs (generation.shards_per_job)."""
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(
                nodes=sys.maxsize,
                default_resources=profile_default_resources(),
            ),
            config_settings=ConfigSettings(configfiles=[Path(c).absolute() for c in configfiles]),
            snakefile=ROOT / "Snakefile",
            workdir=ROOT,
        )
        workflow_api.dag(DAGSettings(targets=frozenset(targets), forceall=forceall))
        workflow = workflow_api._workflow
        # planned for the SLURM executor, so that job groups are formed as for a real run
        # (a local run has none)
        workflow._executor_plugin = ExecutorPluginRegistry().get_plugin("slurm")
        workflow.execution_settings = ExecutionSettings()
        workflow._prepare_dag(
            forceall=forceall, ignore_incomplete=True, lock_warn_only=True, nolock=True
        )
        workflow._build_dag()
        workflow.async_run(workflow.dag.postprocess(update_needrun=False))
        # a local job (localrules, rule all) runs in the controller: nothing is submitted
        local = workflow._localrules
        planned = {}
        for job in workflow.dag.needrun_jobs():
            if job.rule.norun or job.rule.name in local:
                continue
            group = workflow.dag.get_job_group(job)
            planned.setdefault(id(group or job), group or job)
        return list(planned.values())


def members(job) -> list:
    """A group job's jobs in order, or the job itself."""
    if job.is_group():
        return sorted(job.jobs, key=lambda j: sorted(j.wildcards_dict.items()))
    return [job]


def account_arg(job) -> str:
    """The plugin's `-A` (Executor.get_account_arg, without the sacctmgr check)."""
    account = job.resources.get("slurm_account")
    return f" -A {shlex.quote(str(account))}" if account else ""


def partition_arg(job) -> str:
    """The plugin's `-p` (Executor.get_partition_arg for a named partition)."""
    partition = job.resources.get("slurm_partition")
    return f" -p {partition}" if partition else ""


def step_line(job) -> str:
    """The job step: the plugin's `srun -n1 ...` (jobstep Executor.run_job), or, for a job
    with the `mpi` resource, the srun its own command starts."""
    if "mpi" in job.resources.keys():
        found = re.search(r"\bsrun\b.*?(?= env | -m synthllm)", job.shellcmd or "")
        return found.group(0) if found else ""
    gpu_job = bool(job.resources.get("gpu") or "gpu" in job.resources.get("gres", ""))
    parts = ["srun -n1 --cpu-bind=q", get_cpu_setting(job, gpu_job)]
    parts += [get_gpu_setting(job), get_node_setting(job)]
    return " ".join(p for p in parts if p)


def sbatch_line(job) -> str:
    validate_slurm_extra(job)
    kind = "group" if job.is_group() else "rule"
    wildcards = (
        "" if job.is_group() else "_".join(f"{k}_{v}" for k, v in job.wildcards_dict.items())
    )
    params = {
        "run_uuid": "<run id>",
        "slurm_logfile": f".snakemake/slurm_logs/{kind}_{job.name}/%j.log",
        "comment_str": f"{kind}_{job.name}" + (f"_wildcards_{wildcards}" if wildcards else ""),
        "account": account_arg(job),
        "partition": partition_arg(job),
        "workdir": str(ROOT),
    }
    return get_submit_command(job, params) + set_gres_string(job)


def render(configfiles: list[str], targets: list[str], forceall: bool, attempt: int = 1):
    jobs = planned_jobs(configfiles, targets, forceall)
    for job in jobs:
        job.attempt = attempt  # its resources are evaluated again, as for a retry
    return [
        {
            "rule": members(job)[0].rule.name,
            "wildcards": dict(members(job)[0].wildcards_dict),
            # a group job's jobs, run one after another in its allocation
            "jobs": [dict(member.wildcards_dict) for member in members(job)],
            "threads": job.threads,
            "sbatch": " ".join(sbatch_line(job).split()),
            "srun": " ".join(step_line(job).split()),
            # the rule's command up to its arguments: what the job step runs
            "launcher": (members(job)[0].shellcmd or "").split(" --inputs ")[0],
        }
        for job in jobs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", nargs="+", action="extend", default=[])
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--forceall", action="store_true", help="every job, as if none had run")
    parser.add_argument("--attempt", type=int, default=1, help="the attempt (2: a retry)")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of text")
    args = parser.parse_args()
    lines = render(args.configfile, args.targets, args.forceall, args.attempt)
    if args.json:
        json.dump(lines, sys.stdout)
        return
    for line in lines:
        wildcards = "; ".join(", ".join(f"{k}={v}" for k, v in job.items()) for job in line["jobs"])
        print(f"{line['rule']} {wildcards}\n  {line['sbatch']}\n  {line['srun']}")


if __name__ == "__main__":
    main()
