"""A clean stop on SIGTERM (synthllm.core.stop), as SLURM's --signal sends it before a job's
time limit: the handler's rules in a bare subprocess, generation's stop in-process with
backends that signal their own process mid-chunk, and a real `synthllm answer` run on
SmolLM2 (transformers) stopped by SIGTERM and resumed. Training's stop is in test_train.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthllm.core import stop
from synthllm.core.generation import ProgressLog, generate_resumable, progress_path
from synthllm.core.llm import (
    Backend,
    BackendError,
    BackendSpec,
    Completion,
    Request,
    Sampling,
)

ROOT = Path(__file__).resolve().parents[1]
HF_MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"

needs_model = pytest.mark.skipif(
    not (HF_MODEL / "config.json").exists(), reason="SmolLM2 HF folder absent: run ./install.sh"
)


def run_script(body: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`body` in a fresh Python with synthllm.core.stop imported as `stop`; REPEAT_S cut to
    0.5 s so that a 'later' SIGTERM need not wait 5 s."""
    script = "import os, signal, sys, time\nfrom synthllm.core import stop\nstop.REPEAT_S = 0.5\n"
    return subprocess.run(
        [sys.executable, "-c", script + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT / "workflow")},
    )


# ------------------------------------------------------------------------ the handler


def test_sigterm_is_a_request_served_at_the_safe_point_with_status_75():
    proc = run_script(
        """
        with stop.handling():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # the same stop, delivered twice
            time.sleep(0.1)
            assert stop.requested()
            print("still running", flush=True)
            stop.exit("stopped at the safe point")
        """
    )
    assert proc.returncode == stop.EXIT_STOPPED == 75, proc.stderr
    assert "still running" in proc.stdout
    assert "stopped at the safe point" in proc.stderr


@pytest.mark.parametrize(
    ("second", "after_s"), [(signal.SIGTERM, 0.8), (signal.SIGINT, 0.1)], ids=["term", "int"]
)
def test_a_later_sigterm_or_a_sigint_ends_a_stop_at_once(second, after_s):
    proc = run_script(
        f"""
        with stop.handling():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep({after_s})
            os.kill(os.getpid(), {int(second)})
            time.sleep(30)  # a long step, cut short
            print("not reached", flush=True)
        """
    )
    assert proc.returncode == -second, proc.stderr
    assert "not reached" not in proc.stdout


def test_handling_gives_back_the_former_handlers_and_forgets_the_request():
    proc = run_script(
        """
        before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        with stop.handling():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert not stop.requested()
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
        os.kill(os.getpid(), signal.SIGTERM)  # Python's default again: the end
        time.sleep(30)
        """
    )
    assert proc.returncode == -signal.SIGTERM, proc.stderr


def _blocked(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^SigBlk:\s*([0-9a-f]+)$", status, re.M).group(1), 16)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_processes_started_in_the_shield_outlive_sigterm_and_the_caller_gets_its_mask_back():
    term = 1 << (signal.SIGTERM - 1)
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    with stop.shield_children():
        shielded = subprocess.Popen(sleeper)
    plain = subprocess.Popen(sleeper)
    try:
        assert not _blocked(os.getpid()) & term  # this thread's mask is back
        time.sleep(0.5)  # both have started
        assert _blocked(shielded.pid) & term and not _blocked(plain.pid) & term
        shielded.send_signal(signal.SIGTERM)
        plain.send_signal(signal.SIGTERM)
        assert plain.wait(timeout=10) == -signal.SIGTERM
        time.sleep(0.5)
        assert shielded.poll() is None  # pending, not acted on
    finally:
        shielded.kill()
        plain.kill()
        shielded.wait()


# ------------------------------------------------------------------ generation, in-process

SPEC = BackendSpec.from_config("models.generator", {"backend": "transformers", "model": "x"})
SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=8, seed=0)


class SignalledBackend(Backend):
    """Answers 'text <pos>' as an engine fed continuously would: `max_in_flight` requests in
    flight, the oldest finishing first, each replaced by the next as it finishes. As the
    `at`-th completion comes back a SIGTERM reaches this process, as SLURM's does, and from
    then on completions come back `finish` ('stop': whole; 'abort': as vLLM's engine returns
    what it held when it got the signal)."""

    def __init__(self, at: int, finish: str = "stop"):
        self.at, self.finish, self.started, self.closed = at, finish, [], False

    def stream(self, requests, sampling, positions, max_in_flight, halt=lambda: False):
        pending, in_flight, finish, n = list(positions), [], "stop", 0
        while True:
            while pending and len(in_flight) < max_in_flight and not halt():
                in_flight.append(pending.pop(0))
                self.started.append(in_flight[-1])
            if not in_flight:
                return
            n += 1
            if n == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs while the requests are in flight
                finish = self.finish
            pos = in_flight.pop(0)
            yield pos, Completion(f"text {pos}", finish)

    def close(self):
        self.closed = True


def _requests(n: int) -> list[Request]:
    return [Request([{"role": "user", "content": f"q{i}"}]) for i in range(n)]


def test_generation_finishes_the_requests_in_flight_then_stops_without_output(tmp_path, caplog):
    """Three in flight; the SIGTERM comes with the fifth completion (position 4, while 5 and
    6 are in flight): no new request starts, 4, 5 and 6 are kept as they finish."""
    out = tmp_path / "shard.parquet"
    backend = SignalledBackend(at=5)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(stop.Stopped) as stopped:
        generate_resumable(_requests(10), SPEC, SAMPLING, out, "fp", 3, "test", lambda s: backend)
    assert stopped.value.code == 75
    assert backend.started == list(range(7)) and backend.closed  # 7..9 never began
    assert "test: stopped by SIGTERM after 7 of 10 prompts" in caplog.text
    assert "rerun resumes" in caplog.text
    done = ProgressLog(progress_path(out), "fp").load()
    assert done == {p: Completion(f"text {p}", "stop") for p in range(7)}
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) == before  # pytest's own, given back

    # the rerun generates only the rest
    completions, facts = generate_resumable(
        _requests(10), SPEC, SAMPLING, out, "fp", 3, "test", lambda s: SignalledBackend(at=0)
    )
    assert [c.text for c in completions] == [f"text {p}" for p in range(10)]
    assert facts["resumed"] == 7 and facts["generated"] == 3


def test_an_aborted_request_is_never_kept(tmp_path, caplog):
    """vLLM's engine answers SIGTERM by aborting its requests: cut texts, finish 'abort'.
    After a SIGTERM that is a stop that lost them; without one, an error naming them. The
    completions that finished are kept either way."""
    out = tmp_path / "shard.parquet"
    with pytest.raises(stop.Stopped):
        generate_resumable(
            _requests(10), SPEC, SAMPLING, out, "fp", 3, "t", lambda s: SignalledBackend(5, "abort")
        )
    assert "after 4 of 10 prompts (the 3 in flight came back aborted)" in caplog.text
    assert sorted(ProgressLog(progress_path(out), "fp").load()) == [0, 1, 2, 3]

    class Aborting(SignalledBackend):
        """Positions 5 and 6 come back aborted, with no SIGTERM."""

        def stream(self, requests, sampling, positions, max_in_flight, halt=lambda: False):
            for pos, c in super().stream(requests, sampling, positions, max_in_flight, halt):
                yield pos, Completion("cut", "abort") if pos in (5, 6) else c

    backend = Aborting(0)
    with pytest.raises(
        BackendError,
        match=r"engine aborted 2 requests \(positions 5..6\); they were not kept, "
        r"the 6 finished ones were",
    ):
        generate_resumable(_requests(10), SPEC, SAMPLING, out, "fp", 3, "t", lambda s: backend)
    assert backend.started == [4, 5, 6, 7]  # none after the abort
    assert sorted(ProgressLog(progress_path(out), "fp").load()) == [0, 1, 2, 3, 4, 7]


# -------------------------------------------------------- generation, a real stage and model


def _answer_cmd(tmp: Path, out: Path) -> list[str]:
    """`synthllm answer` as its rule runs it, on SmolLM2 through transformers (the cheap real
    backend: vLLM's start-up alone is ~30 s here), greedy, two prompts per batch."""
    questions = tmp / "questions.parquet"
    if not questions.exists():
        n = 10
        pq.write_table(
            pa.table(
                {
                    "question_id": [f"q{i}" for i in range(n)],
                    "question": [f"What is {i} + {2 * i + 3}?" for i in range(n)],
                    "level": pa.array([1] * n, pa.int8()),
                    "doc_ids": [[f"d{i}"] for i in range(n)],
                }
            ),
            questions,
        )
    model = {"backend": "transformers", "model": str(HF_MODEL), "dtype": "float32"}
    settings = {
        "model": model,
        "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 24, "seed": 0},
    }
    execution = {"model": {"batch_size": 2}, "chunk_size": 2, "threads": 1}
    parts = {
        "inputs": {"questions": [str(questions)]},
        "outputs": {"answers": str(out), "counts": str(out.with_suffix(".counts.json"))},
        "settings": settings,
        "execution": execution,
    }
    args = [arg for name, part in parts.items() for arg in (f"--{name}", json.dumps(part))]
    return [sys.executable, "-m", "synthllm", "answer", *args]


# one thread: two OpenMP threads on a shared 2-core machine run ~10x slower
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@needs_model
def test_answer_stopped_by_sigterm_resumes_to_the_uninterrupted_output(tmp_path):
    straight = tmp_path / "straight" / "shard.parquet"
    straight.parent.mkdir()
    subprocess.run(_answer_cmd(tmp_path, straight), check=True, capture_output=True, env=ENV)
    expected = pq.read_table(straight).to_pylist()

    out = tmp_path / "stopped" / "shard.parquet"
    out.parent.mkdir()
    progress = progress_path(out)
    log = tmp_path / "stopped.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(_answer_cmd(tmp_path, out), stdout=fh, stderr=fh, env=ENV)
    deadline = time.monotonic() + 120
    while not (progress.exists() and progress.read_text().count("\n") >= 3):  # one batch
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the run to stop never finished a batch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 75, log.read_text()[-3000:]
    found = re.findall(r"answer: stopped by SIGTERM after (\d+) of 10 prompts; ", log.read_text())
    assert len(found) == 1, log.read_text()[-3000:]
    kept = int(found[0])
    lines = progress.read_text().splitlines()
    assert len(lines) == 1 + kept and kept % 2 == 0 and 2 <= kept < 10  # whole batches
    assert all(json.loads(line) for line in lines)
    assert not out.exists() and not out.with_suffix(".counts.json").exists()

    subprocess.run(_answer_cmd(tmp_path, out), check=True, capture_output=True, env=ENV)
    rows = pq.read_table(out).to_pylist()
    assert [r["question_id"] for r in rows] == [r["question_id"] for r in expected]
    assert [r["answer"] for r in rows] == [r["answer"] for r in expected]
    counts = json.loads(out.with_suffix(".counts.json").read_text())
    assert counts["resumed"] == kept and counts["generated"] == 10 - kept
    assert not progress.exists()
