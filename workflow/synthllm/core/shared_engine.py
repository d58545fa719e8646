"""One loaded engine for the generation jobs that follow one another on a machine (config
key `generation.engine_keepalive_s`, an execution knob).

Loading a model costs more than many shards' generation: 25-35 s for the 135M model on
this CPU, about 20 minutes for Mistral-Large on 8 GPUs. With a keepalive, a generation job
does not open its own engine: it hands its requests to an engine process for its model and
engine settings, started by the first job that needs one and left running for
`keepalive_s` seconds after its last job ended, so that the next shard, the next stage on
the same model, or the answerer on the generator's model, reuse the load. Each job still
writes its own outputs and progress log and resumes on its own (synthllm.core.generation);
only the engine is shared. On a SLURM cluster the engine lives inside one allocation (its
folder is keyed by SLURM_JOB_ID), so jobs share it when Snakemake runs several in one
allocation (the generation rules' job groups, `generation.shards_per_job`); locally, a whole
run shares it.

The engine process (`python -m synthllm.core.shared_engine`, started in a session of its
own, its log beside its socket) listens on a Unix socket in a folder only its user can
enter, `$SYNTHLLM_ENGINE_DIR` or `<temp>/synthllm-engines-<uid>`, then `<SLURM_JOB_ID or
local>/<key>.sock`, where the key is a hash of the engine settings (every field of the
backend spec but the config key's name) and, for a local model folder, of its files' sizes
and times: a retrained checkpoint is a new engine. It serves one job at a time; a second
job waits for the first. The protocol, pickled over the socket: the engine sends
("ready", facts) once loaded, or ("error", message); the job sends ("stream", requests,
sampling, positions, max_in_flight, halted) and gets ("done", position, completion) as each
finishes, then ("end",), or ("error", message); during a stream the job may send ("halt",)
(a SIGTERM: no new request) or ("abort",) (the stream was closed: what is in flight is
aborted). A job that dies mid-stream counts as an abort.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, fields
from multiprocessing.connection import Connection
from pathlib import Path

from synthllm.core.llm import Backend, BackendError, BackendSpec, _never, open_backend

log = logging.getLogger(__name__)

# how often the engine process looks at its idle time, and a waiting job at the engine
POLL_S = 0.5


def engine_dir() -> Path:
    """The folder of this allocation's (or this machine's) shared engines, mode 0700."""
    root = os.environ.get("SYNTHLLM_ENGINE_DIR") or os.path.join(
        tempfile.gettempdir(), f"synthllm-engines-{os.getuid()}"
    )
    folder = Path(root) / (os.environ.get("SLURM_JOB_ID") or "local")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(Path(root), 0o700)
    return folder


def _model_state(model: str) -> list:
    """Sizes and modification times of a local model folder's files (a retrained
    checkpoint at the same path is another model); nothing for a hub name."""
    folder = Path(model)
    if not folder.is_dir():
        return []
    return sorted(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()
    )


def engine_key(spec: BackendSpec) -> str:
    """What makes two jobs' engines the same one: every setting of the spec but the name
    of its config key (the generator's and the answerer's engine on the same model and
    settings are one), and the model folder's state."""
    settings = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "key"}
    if Path(spec.model).exists():  # the same relative path in two checkouts is two models
        settings["model"] = str(Path(spec.model).resolve())
    blob = json.dumps([settings, _model_state(spec.model)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class EngineGone(BackendError):
    """The engine process closed the connection: it ended, or ran out of keepalive."""


class SharedEngine(Backend):
    """A job's side of a shared engine (the module docstring): `stream` as every backend's,
    served by the engine process, which this starts when none answers."""

    def __init__(self, spec: BackendSpec, keepalive_s: float):
        self.spec = spec
        folder = engine_dir()
        key = engine_key(spec)
        self.address = folder / f"{key}.sock"
        self.log_path = folder / f"{key}.log"
        started = time.time()
        for attempt in (1, 2):
            self.conn, self.process = self._connect_or_start(folder / f"{key}.lock", keepalive_s)
            try:
                facts = self._receive_ready()
                break
            except EngineGone:
                # an engine that ran out of keepalive as this job connected: start another
                if attempt == 2:
                    raise
        self.startup_s = time.time() - started
        # what the stage's counts say of the engine (synthllm.core.generation)
        self.shared_facts = {
            "started_here": self.process is not None,
            "load_s": facts["load_s"],
            "jobs_before": facts["jobs_served"],
        }
        log.info(
            "shared engine for %s (pid %s, log %s): loaded in %.1f s, %d jobs served before "
            "this one; ready for this job after %.1f s",
            spec.model,
            facts["pid"],
            self.log_path,
            facts["load_s"],
            facts["jobs_served"],
            self.startup_s,
        )

    def _connect(self) -> Connection | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.address))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        return Connection(sock.detach())

    def _connect_or_start(self, lock_path: Path, keepalive_s: float):
        """A connection to the engine, started here (under a lock, so that two jobs that
        come at once start one) when none listens."""
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn = self._connect()
            if conn is not None:
                return conn, None
            self.address.unlink(missing_ok=True)  # a socket left by a killed engine
            with open(self.log_path, "ab") as out:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "synthllm.core.shared_engine",
                        "--spec",
                        json.dumps(asdict(self.spec)),
                        "--address",
                        str(self.address),
                        "--keepalive-s",
                        str(keepalive_s),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # not in the job's process group: it outlives it
                )
            log.info("started a shared engine for %s: pid %d", self.spec.model, process.pid)
            while not self.address.exists():  # the engine listens before it loads the model
                if process.poll() is not None:
                    raise BackendError(self._ended(f"exited with status {process.returncode}"))
                time.sleep(POLL_S / 5)
            conn = self._connect()
            if conn is None:
                raise BackendError(self._ended("did not accept a connection"))
            return conn, process

    def _ended(self, what: str) -> str:
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        return (
            f"{self.spec.key}: the shared engine for {self.spec.model} {what} "
            f"(its log: {self.log_path}){':' + chr(10) + tail if tail else ''}"
        )

    def _recv(self):
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise EngineGone(self._ended("ended mid-job")) from None

    def _receive_ready(self) -> dict:
        message = self._recv()
        if message[0] == "error":
            raise BackendError(message[1])
        return message[1]

    def stream(self, requests, sampling, positions, max_in_flight, halt=_never):
        halted = halt()  # a stop asked before the stream begins: nothing is to start
        self.conn.send(("stream", list(requests), sampling, list(positions), max_in_flight, halted))
        ended = False
        try:
            while True:
                if not halted and halt():
                    self.conn.send(("halt",))
                    halted = True
                if not self.conn.poll(POLL_S):
                    continue
                message = self._recv()
                if message[0] == "done":
                    yield message[1], message[2]
                elif message[0] == "end":
                    ended = True
                    return
                else:
                    ended = True
                    raise BackendError(message[1])
        finally:
            if not ended:  # closed early: the engine aborts what is in flight
                with contextlib.suppress(OSError):
                    self.conn.send(("abort",))
                    while self._recv()[0] != "end":
                        pass

    def close(self) -> None:
        """The job is done with the engine, which stays for the next job."""
        self.conn.close()


class _Aborted(Exception):
    """The job closed its stream, or went away, mid-stream."""


def serve(spec: BackendSpec, address: Path, keepalive_s: float) -> None:
    """Listen at `address`, load the engine, serve one job at a time, and end once no job
    has come for `keepalive_s` seconds."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(address))
    listener.listen(64)
    listener.settimeout(POLL_S)
    started = time.time()
    try:
        backend = open_backend(spec, long_lived=True)
    except BackendError as exc:
        address.unlink(missing_ok=True)  # no new job; those already waiting are told
        _refuse_all(listener, str(exc))
        listener.close()
        raise
    facts = {"pid": os.getpid(), "load_s": round(time.time() - started, 2), "jobs_served": 0}
    log.info("engine for %s ready in %.1f s at %s", spec.model, facts["load_s"], address)
    idle_since = time.monotonic()
    try:
        while time.monotonic() - idle_since < keepalive_s:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(None)
            job = Connection(sock.detach())
            served = time.monotonic()
            with contextlib.suppress(EOFError, OSError):
                job.send(("ready", facts))
                _serve_job(backend, job)
            job.close()
            facts["jobs_served"] += 1
            log.info("job %d served in %.1f s", facts["jobs_served"], time.monotonic() - served)
            idle_since = time.monotonic()
    finally:
        address.unlink(missing_ok=True)  # no job connects to an engine that is going
        listener.close()
        backend.close()
    log.info("no job for %.0f s after %d jobs: engine stopped", keepalive_s, facts["jobs_served"])


def _refuse_all(listener: socket.socket, message: str) -> None:
    """Tell the jobs already waiting that the engine did not start."""
    while True:
        try:
            sock, _ = listener.accept()
        except TimeoutError:
            return
        job = Connection(sock.detach())
        with contextlib.suppress(OSError):
            job.send(("error", message))
        job.close()


def _serve_job(backend: Backend, job: Connection) -> None:
    """Every stream one job asks for, until it closes its connection."""
    while True:
        message = job.recv()  # EOFError: the job is done
        if message[0] in ("abort", "halt"):  # sent as its stream ended: that "end" is sent
            continue
        _, requests, sampling, positions, max_in_flight, halted = message

        def halt() -> bool:
            nonlocal halted
            while job.poll():
                try:
                    command = job.recv()[0]
                except EOFError:
                    raise _Aborted from None
                if command == "abort":
                    raise _Aborted
                halted = halted or command == "halt"
            return halted

        try:
            for position, completion in backend.stream(
                requests, sampling, positions, max_in_flight, halt
            ):
                job.send(("done", position, completion))
        except _Aborted:
            pass  # leaving the stream aborted what was in flight
        except BackendError as exc:
            job.send(("error", str(exc)))
            continue
        job.send(("end",))


def main() -> None:
    parser = argparse.ArgumentParser(description="A shared generation engine (module docstring)")
    parser.add_argument("--spec", required=True, help="the backend spec, as JSON")
    parser.add_argument("--address", required=True, help="the Unix socket to listen at")
    parser.add_argument("--keepalive-s", type=float, required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # a job's SIGTERM (SLURM's, before its time limit) is the job's to handle: it halts its
    # stream. The engine serves what is in flight and ends when idle, or at SLURM's SIGKILL.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(BackendSpec(**json.loads(args.spec)), Path(args.address), args.keepalive_s)


if __name__ == "__main__":
    main()
