"""One engine for the generation jobs that follow one another (synthllm.core.shared_engine,
config key generation.engine_keepalive_s), with the real SmolLM2-135M-Instruct: through
transformers for the protocol (a fast load), through vLLM and the real `synthllm extract`
command for jobs that share a load, a job killed mid-stream and its resume."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from slurmrun import PROFILE_ARGS, ROOT, sacct_jobs, slurm_run_id, snakemake_command
from synthllm.core.generation import progress_path
from synthllm.core.llm import BackendError, BackendSpec, Request, Sampling, open_backend
from synthllm.core.shared_engine import SharedEngine, engine_dir, engine_key
from test_generation import HF_MODEL, _docs_shard, _extract_cmd, needs_corpus, needs_model


@pytest.fixture
def engines(tmp_path, monkeypatch):
    """This test's own engine folder; no engine outlives the test, nor its vLLM processes
    (an engine leads a session of its own: its process group)."""
    folder = tmp_path / "engines"
    monkeypatch.setenv("SYNTHLLM_ENGINE_DIR", str(folder))
    yield folder
    for pid_line in subprocess.run(
        ["pgrep", "-f", f"synthllm.core.shared_engine.*{folder}"], capture_output=True, text=True
    ).stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid_line), signal.SIGKILL)


def spec(key="models.generator", model=HF_MODEL, backend="transformers", **more) -> BackendSpec:
    entry = {"backend": backend, "model": str(model), "dtype": "float32", "batch_size": 4}
    return BackendSpec.from_config(key, {**entry, **more})


def questions(n: int) -> list[Request]:
    return [
        Request([{"role": "user", "content": f"What is {i} + {i + 3}? Answer briefly."}])
        for i in range(n)
    ]


GREEDY = Sampling(temperature=0.0, top_p=1.0, max_tokens=8, seed=0)


def engine_ended(process: subprocess.Popen, timeout_s: float) -> bool:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_one_engine_serves_every_role_on_the_same_model_and_settings(tmp_path):
    """The generator's and the answerer's engine on one model and settings are one; another
    setting, another folder, or a changed file in the folder is another engine."""
    generator = engine_key(spec("models.generator", backend="vllm"))
    assert engine_key(spec("models.answerer", backend="vllm")) == generator
    assert engine_key(spec("models.generator", backend="vllm", max_model_len=1024)) != generator
    copy = tmp_path / "model"
    shutil.copytree(HF_MODEL, copy) if HF_MODEL.is_dir() else copy.mkdir()
    (copy / "config.json").write_text("{}")
    before = engine_key(spec(model=copy))
    os.utime(copy / "config.json", ns=(1, 1))  # a retrained checkpoint at the same path
    assert engine_key(spec(model=copy)) != before


def test_an_engine_that_cannot_load_fails_the_job_naming_the_key(engines, tmp_path):
    with pytest.raises(BackendError, match=r"models.answerer.model: .*nope does not exist"):
        SharedEngine(spec("models.answerer", model=tmp_path / "nope"), keepalive_s=30)
    assert not list(engine_dir().glob("*.sock"))  # it went, and left no socket behind


@needs_model
def test_jobs_share_one_load_and_get_what_their_own_engine_gives(engines):
    """Two jobs in turn on one engine: the second finds it loaded; both get the completions
    the backend gives on its own. A halted stream starts nothing new and ends; a stream
    closed early leaves the engine serving; with no job for keepalive_s it ends."""
    own = open_backend(spec())
    expected = own.generate(questions(6), GREEDY, list(range(6)))
    own.close()

    first = SharedEngine(spec(), keepalive_s=4)
    assert first.shared_facts["started_here"] and first.shared_facts["jobs_before"] == 0
    assert first.generate(questions(6), GREEDY, list(range(6))) == expected
    first.close()
    second = SharedEngine(spec("models.answerer"), keepalive_s=4)
    assert not second.shared_facts["started_here"] and second.shared_facts["jobs_before"] == 1
    assert second.generate(questions(6), GREEDY, list(range(6))) == expected

    # halted (a SIGTERM in the job) before it began: nothing starts, the stream ends
    assert list(second.stream(questions(6), GREEDY, list(range(6)), 2, halt=lambda: True)) == []

    stream = second.stream(questions(6), GREEDY, list(range(6)), 4)
    next(stream)
    stream.close()  # the job stops reading: the engine drops the rest and serves again
    assert second.generate(questions(2), GREEDY, [0, 1]) == expected[:2]
    second.close()

    assert engine_ended(first.process, timeout_s=60), "the idle engine did not end"
    assert first.process.returncode == 0
    assert not list(engines.glob("*/*.sock"))


def _run(command: list[str], env: dict) -> dict:
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@needs_model
@needs_corpus
def test_extract_jobs_share_a_vllm_engine_and_a_killed_job_resumes_on_it(engines, tmp_path):
    """`synthllm extract` as its rule runs it, with generation.engine_keepalive_s: a job
    killed mid-run takes only itself down; its rerun resumes on the same engine, loaded
    once; a fresh job on it writes what a job with its own engine writes."""
    docs = _docs_shard(tmp_path, 10)
    env = {**os.environ, "SYNTHLLM_ENGINE_DIR": str(engines)}

    def command(out: Path, keepalive_s: float) -> list[str]:
        cmd = _extract_cmd(docs, out, chunk_size=2)
        execution = json.loads(cmd[cmd.index("--execution") + 1])
        execution["engine_keepalive_s"] = keepalive_s
        cmd[cmd.index("--execution") + 1] = json.dumps(execution)
        return cmd

    killed = tmp_path / "killed" / "shard.parquet"
    killed.parent.mkdir()
    proc = subprocess.Popen(
        command(killed, 120),
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 900
    progress = progress_path(killed)
    while time.time() < deadline and proc.poll() is None:
        if progress.exists() and progress.read_text().count("\n") >= 5:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the job ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the job's group; the engine has a session of its own
    proc.wait()
    kept = progress.read_text().count("\n") - 1

    _run(command(killed, 120), env)
    counts = json.loads(killed.with_suffix(".counts.json").read_text())
    assert counts["resumed"] >= kept >= 4 and counts["generated"] == 10 - counts["resumed"]
    assert counts["shared_engine"]["started_here"] is False
    assert counts["shared_engine"]["jobs_before"] >= 1
    assert (
        pq.read_table(killed).column("doc_id").to_pylist()
        == pq.read_table(docs).column("doc_id").to_pylist()
    )

    shared, alone = tmp_path / "shared" / "shard.parquet", tmp_path / "alone" / "shard.parquet"
    shared.parent.mkdir(), alone.parent.mkdir()
    _run(command(shared, 120), env)
    _run(command(alone, 0), env)
    shared_counts = json.loads(shared.with_suffix(".counts.json").read_text())
    assert shared_counts["shared_engine"]["started_here"] is False
    assert "shared_engine" not in json.loads(alone.with_suffix(".counts.json").read_text())
    # greedy, the same requests in the same windows: the same completions
    assert (
        pq.read_table(shared).column("completion").to_pylist()
        == pq.read_table(alone).column("completion").to_pylist()
    )


@needs_model
@needs_corpus
def test_shard_jobs_of_one_slurm_allocation_share_one_engine(
    slurm_cluster, cluster_shape, tmp_path
):
    """generation.shards_per_job 2 on the local cluster, in the paper's resource shape: the
    test config's two extraction jobs run in one allocation of the generator's 8 GPUs, one
    after another, and the second finds the engine the first loaded."""
    if not cluster_shape:
        pytest.skip("needs the multi-node cluster with GPU partitions")
    results = tmp_path / "results"
    shards = [f"{i:05d}-of-00002" for i in range(2)]
    docs = _docs_shard(tmp_path, 4)
    (results / "filter" / "docs").mkdir(parents=True)
    for shard in shards:  # the extraction's input, as the filter writes it
        shutil.copy(docs, results / "filter" / "docs" / f"shard-{shard}.parquet")
    grouping = tmp_path / "grouping.yaml"
    grouping.write_text(
        yaml.safe_dump(
            {
                "results": str(results),
                "generation": {"shards_per_job": 2, "engine_keepalive_s": 60},
            }
        )
    )
    targets = [str(results / "extract" / f"shard-{shard}.parquet") for shard in shards]
    proc = subprocess.run(
        [*snakemake_command(slurm=True), *targets, *PROFILE_ARGS, "--allowed-rules", "extract"]
        + ["--configfile", "config/test.yaml", "config/cluster-test.yaml", str(grouping)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    (allocation,) = sacct_jobs(slurm_run_id(out))
    assert allocation["state"] == "COMPLETED", allocation
    assert allocation["partition"] == "gpu" and allocation["alloc_tres"]["gres/gpu"] == "8"
    engines = [
        json.loads((results / "extract" / f"shard-{shard}.counts.json").read_text())[
            "shared_engine"
        ]
        for shard in shards
    ]
    assert sorted((e["started_here"], e["jobs_before"]) for e in engines) == [
        (False, 1),
        (True, 0),
    ]
