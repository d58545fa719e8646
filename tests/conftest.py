"""Whether a SLURM cluster answers here: the end-to-end run and the failure tests go
through it when one does (`slurm/local-cluster.sh start --nodes 2`, as CI does)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# CI sets this: there, a cluster that does not answer is a failure, not a reason to skip
REQUIRE_SLURM = os.environ.get("SYNTHLLM_REQUIRE_SLURM") == "1"


def slurm_answers() -> bool:
    """A partition that is up, as `sinfo` reports it."""
    if shutil.which("sinfo") is None:
        return False
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and "up" in proc.stdout.split()


@pytest.fixture(scope="session")
def through_slurm() -> bool:
    """True when the workflow runs of the suite go through SLURM with the profile."""
    up = slurm_answers()
    if REQUIRE_SLURM and not up:
        pytest.fail(
            "SYNTHLLM_REQUIRE_SLURM=1 but no SLURM partition is up (sinfo); "
            "run slurm/local-cluster.sh start --nodes 2"
        )
    return up


@pytest.fixture(scope="session")
def slurm_cluster(through_slurm):
    if not through_slurm:
        pytest.skip(
            "no SLURM cluster answers here: run slurm/local-cluster.sh start --nodes 2 (as root)"
        )


def gpu_partitions() -> set[str]:
    """The partitions that are up and whose nodes declare GPUs (sinfo's GRES)."""
    proc = subprocess.run(
        ["sinfo", "-h", "-o", "%P %a %D %G"], capture_output=True, text=True, timeout=30
    )
    return {
        partition.rstrip("*")
        for partition, avail, nodes, gres in (line.split() for line in proc.stdout.splitlines())
        if avail == "up" and int(nodes) >= 2 and "gpu" in gres
    }


@pytest.fixture(scope="session")
def cluster_shape(through_slurm) -> bool:
    """True when the workflow runs go through SLURM in the paper's resource shape
    (config/cluster-test.yaml: GPU and CPU partitions, a two-node training job), which needs
    the multi-node cluster; a cluster without it fails the run's tests instead of hiding it."""
    if not through_slurm:
        return False
    if not {"gpu", "cpu"} <= gpu_partitions():
        pytest.fail(
            "the SLURM cluster here has no `gpu` and `cpu` partitions of 2 or more nodes with "
            "GPUs: the end-to-end run needs `slurm/local-cluster.sh start --nodes 2`"
        )
    return True
