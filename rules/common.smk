# Config validation, environment selection and input functions shared by every stage.
import json
import os
from glob import glob
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../config/schema.yaml", set_default=True)

RESULTS = config["results"]
WORKFLOW_DIR = Path(workflow.basedir)


def synthllm(kind):
    """Shell prefix that runs `python -m synthllm` in the environment of a rule kind.

    The package is imported from this workflow's source tree (PYTHONPATH), so the same
    code runs in a local venv or in a conda env built from envs/<kind>.yaml. Paths are
    relative to the working folder so that a rule's params do not change when the
    checkout moves (params changes trigger reruns).
    """
    software = config["software"]
    if software["deployment"] == "conda":
        python = "python"
    else:
        venv = software["venvs"][kind]
        python = WORKFLOW_DIR / venv / "bin" / "python"
        if not python.exists():
            raise WorkflowError(
                f"config key software.venvs.{kind}: {python} does not exist; run ./install.sh "
                "(or set software.deployment: conda and run snakemake with --sdm conda)"
            )
        python = os.path.relpath(python)
    return f"PYTHONPATH={os.path.relpath(WORKFLOW_DIR / 'workflow')} {python} -m synthllm"


def corpus_shards():
    n = config["corpus"]["n_shards"]
    return [
        f"{RESULTS}/corpus/shard-{i:05d}-of-{n:05d}.parquet" for i in range(n)
    ]


def corpus_input_files():
    """Every file the corpus sources match now; globs that match nothing are reported by the job."""
    files = []
    for source in config["corpus"]["sources"]:
        files.extend(sorted(p for p in glob(source["glob"], recursive=True) if Path(p).is_file()))
    return files


def final_outputs():
    return corpus_shards() + [f"{RESULTS}/corpus/counts.json"]
