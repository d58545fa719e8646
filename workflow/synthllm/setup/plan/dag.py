"""The I/O of `synthllm plan`: the jobs of Snakemake's own DAG, row counts of the local
files a config names, and the command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from synthllm.errors import SynthllmError
from synthllm.setup.plan import preflight
from synthllm.setup.plan.estimate import Job, Row, plan_rows, sizes
from synthllm.setup.plan.report import footnotes, table
from synthllm.stages.corpus_sources import Source

# the workflow's folder: the nearest one above this file that holds the Snakefile
ROOT = next(
    (p for p in Path(__file__).resolve().parents if (p / "Snakefile").is_file()), Path.cwd()
)


class PlanError(SynthllmError):
    """A config that cannot be planned: a missing file, a bad key, a failed DAG."""


def _count_rows(path: Path) -> int:
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix in (".jsonl", ".csv"):
        with path.open("rb") as fh:
            return sum(1 for _ in fh) - (path.suffix == ".csv")
    return 0


def count_corpus(config: dict) -> int | None:
    """Documents of the config's corpus sources (at most each source's max_docs), counted
    from the files (parquet metadata, lines); None when a source matches no file here."""
    total = 0
    for index, entry in enumerate(config["corpus"]["sources"]):
        source = Source.from_config(index, entry)
        files = source.files()
        if not files:
            if source.optional:
                continue
            return None
        if source.max_docs:
            n = 0
            for f in files:
                n += _count_rows(Path(f))
                if n >= source.max_docs:
                    break
            total += min(n, source.max_docs)
        else:
            total += sum(_count_rows(Path(f)) for f in files)
    return total


def count_benchmarks(config: dict) -> int | None:
    """Problems the evaluation reads (at most evaluate.max_records per benchmark)."""
    cap = config["evaluate"]["max_records"]
    total = 0
    for path in config["evaluate"]["benchmarks"].values():
        if not Path(path).is_file():
            return None
        n = _count_rows(Path(path))
        total += min(n, cap) if cap else n
    return total


def job_gpus(resources) -> int:
    """A job's GPUs in all: `gpu` (one node), or the GPUs per node of its `gres` times its
    nodes (rules/common.smk job_resources)."""
    if resources.get("gpu"):
        return int(resources.get("gpu"))
    gres = resources.get("gres") or ""
    if not gres.startswith("gpu:"):
        return 0
    return int(gres.rsplit(":", 1)[1]) * int(resources.get("nodes") or 1)


def dag_jobs(configfiles: list, targets=(), forceall: bool = False) -> tuple[dict, list[Job]]:
    """The merged config and the jobs `snakemake -n` plans (every job with `forceall`), from
    Snakemake's own DAG, built through its Python API in the workflow's folder."""
    import logging

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
    )

    paths = []
    for name in configfiles:
        path = Path(name).absolute()
        if not path.is_file():
            raise PlanError(f"--configfile {name}: no such file")
        paths.append(path)
    # Snakemake's log records reach the root logger of `synthllm -v`: its notes, not ours
    snakemake_log = logging.getLogger("snakemake.logging")
    propagate, snakemake_log.propagate = snakemake_log.propagate, False
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            workflow_api = api.workflow(
                # no local core count: threads as written, as on a cluster
                resource_settings=ResourceSettings(nodes=sys.maxsize),
                config_settings=ConfigSettings(configfiles=paths),
                snakefile=ROOT / "Snakefile",
                workdir=ROOT,
            )
            workflow_api.dag(DAGSettings(targets=frozenset(targets), forceall=forceall))
            workflow = workflow_api._workflow
            workflow._prepare_dag(
                forceall=forceall, ignore_incomplete=True, lock_warn_only=True, nolock=True
            )
            workflow._build_dag()
            jobs = []
            for job in workflow.dag.needrun_jobs():
                res = job.resources
                jobs.append(
                    Job(
                        rule=job.rule.name,
                        wildcards=dict(job.wildcards_dict),
                        gpus=job_gpus(res),
                        runtime_min=float(res.get("runtime") or 0),
                        mem_mb=float(res.get("mem_mb") or 0),
                        threads=int(job.threads or 1),
                    )
                )
            config = dict(workflow.config)
    except SynthllmError:
        raise
    except Exception as exc:  # Snakemake's WorkflowError and what the Snakefile raises
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise PlanError(f"{', '.join(map(str, configfiles))}: {text[:400]}") from None
    finally:
        snakemake_log.propagate = propagate
    return config, jobs


def plan(configfiles: list, targets=(), forceall: bool = False) -> tuple[list[Row], str, list]:
    """The rows of a config's plan, its printed form (table and footnotes) and the problems
    of its pre-flight size check (synthllm.setup.plan.preflight)."""
    config, jobs = dag_jobs(configfiles, targets, forceall)
    # the config's relative paths (corpus globs, benchmarks) are relative to the workflow
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)
        s = sizes(config, count_corpus(config), count_benchmarks(config))
    finally:
        os.chdir(cwd)
    rows = plan_rows(jobs, config, s)
    notes, problems = preflight.check(config, s)
    text = table(rows) + "\n" + "\n".join(f"  * {n}" for n in footnotes(rows, s, config) + notes)
    return rows, text, problems


def main(configfile: list | None, targets: list, forceall: bool = False) -> None:
    """`synthllm plan [--configfile C ...] [targets]`: the cost table of a config (with no
    --configfile, as snakemake, of config/default.yaml alone); it fails, after the table,
    when the pre-flight size check finds a budget that the generated data cannot fill."""
    _, text, problems = plan(configfile or [], targets, forceall)
    print(text)
    if problems:
        raise PlanError("; ".join(problems))
