"""A clean stop when SLURM says a job's time is nearly up (its `--signal=TERM@<seconds>`).

SLURM sends that SIGTERM to every process of every step of the job. Without a handler,
Python dies at once and loses the work since its last progress record or checkpoint; the
retry then redoes it, and a job whose work per retry never outgrows what it loses never
ends. So inside `handling()` the first SIGTERM only records a request, and the stage stops
at its next safe point, where what it has done is on disk:

- generation (synthllm.core.generation.generate_resumable): no new request starts; once
  the requests in flight have finished and are appended to the progress log;
- training (synthllm.stages.train): at the next step boundary, all ranks at the same one,
  after a checkpoint in the periodic checkpoints' format.

Each calls `exit()`, which logs one line and raises `Stopped`: exit status 75 (EX_TEMPFAIL
of sysexits.h, "try again later"), distinct from a failure's 1 and a bad argument's 2.
Snakemake's retry of a resumable job then asks for the same limits and resumes.

Once a stop is under way, a SIGINT, or a SIGTERM more than `REPEAT_S` after the first, ends
the process at once, by the signal's default action; what is on disk stays valid (progress
appends are whole lines and a cut last line is dropped on load; a checkpoint is named only
once every rank has written it). A SIGTERM within `REPEAT_S` of the first is the same
request: SLURM signals the torchrun launcher too, and it forwards its SIGTERM to the
workers, which SLURM has signalled already.

The handler works in the main thread only (Python runs signal handlers there); elsewhere
`handling()` installs nothing, and SIGTERM keeps its former meaning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

EXIT_STOPPED = 75  # EX_TEMPFAIL
REPEAT_S = 5.0  # a SIGTERM this soon after the first is the same stop, delivered twice

_requested_at: float | None = None
_shielded: set[int] = set()  # the children started in shield_children


class Stopped(SystemExit):
    """Raised at a safe point after a SIGTERM: the process exits with EXIT_STOPPED.

    A SystemExit, so that nothing between the stage and the interpreter reports it as an
    error (the command line prints a SynthllmError as one and exits 2)."""

    def __init__(self, message: str):
        super().__init__(EXIT_STOPPED)
        self.message = message


def requested() -> bool:
    """Whether a SIGTERM came since `handling()` began."""
    return _requested_at is not None


def exit(message: str, *, announce: bool = True) -> None:
    """Log `message` (the stop line in the job's log; not where `announce` is false, as on
    the other ranks of a training job) and raise Stopped."""
    if announce:
        log.warning("%s", message)
    raise Stopped(message)


def _at_once(signum: int, frame=None) -> None:
    """End the process by the signal's default action (the exit status says which), and
    the shielded children with it: SIGTERM would not end them, and vLLM's engine core
    outlives its parent (it does not watch for the parent's death)."""
    for pid in _shielded & _children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _on_sigterm(signum: int, frame) -> None:
    global _requested_at
    now = time.monotonic()
    if _requested_at is None:
        _requested_at = now
        # from now on Ctrl-C means "now", not "stop when safe"
        signal.signal(signal.SIGINT, _at_once)
        log.warning(
            "SIGTERM: stopping at the next safe point "
            "(SIGINT, or another SIGTERM over %.0f s later: at once)",
            REPEAT_S,
        )
    elif now - _requested_at > REPEAT_S:
        _at_once(signum)


@contextlib.contextmanager
def handling():
    """SIGTERM requests a stop (`requested()`) while inside; the former handlers of SIGTERM
    and SIGINT are back on leaving, and a request left unserved is forgotten."""
    global _requested_at
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    _requested_at = None
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        _requested_at = None


@contextlib.contextmanager
def shield_children():
    """Processes started inside get SIGTERM blocked, for their whole lives.

    For an inference engine's helper processes (vLLM runs its engine core, and on several
    GPUs its workers, as processes of their own): SLURM's SIGTERM reaches them as well, and
    they exit on it, vLLM's engine core after aborting the requests in flight, so those
    would be lost or come back cut. Blocked, the signal stays pending in
    them; they serve the requests in flight and end when the engine is shut down (vLLM: after its 5 s
    grace, by SIGKILL), when their parent dies, or at SLURM's SIGKILL at the time limit.
    A blocked signal mask is inherited through fork and exec, and a handler installed later
    does not unblock it. SIGINT is left alone: Ctrl-C still ends them."""
    if not hasattr(signal, "pthread_sigmask") or not os.path.isdir("/proc"):
        yield
        return
    # multiprocessing starts its resource tracker at the first spawn and unblocks SIGTERM
    # in the calling thread as it does (CPython bpo-33613): started first, it leaves the
    # mask alone when the engine's processes are spawned
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    before = _children()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        # a SIGTERM that came meanwhile, pending in this thread, is delivered here
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        _shielded.update(_children() - before)


def _children() -> set[int]:
    """The pids of this process's children (Linux /proc)."""
    me, found = str(os.getpid()), set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if stat.rsplit(")", 1)[-1].split()[1] == me:  # field 4, after "(comm)"
                found.add(int(entry.name))
    return found
