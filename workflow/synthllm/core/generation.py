"""Resumable generation for one shard, after NeMo-Skills' chunked generation, without its
chunk barrier.

The backend is fed continuously: up to `chunk_size` requests are in the engine at once, and
each that finishes is replaced by the next (synthllm.core.llm.Backend.stream), so no request
waits for the slowest of a chunk. Every finished completion is appended to
`<output>.progress.jsonl`, keyed by its input position, in small batches: at least every
FLUSH_S seconds or FLUSH_EVERY completions, and at the end, at a stop or an error. A killed
job loses only what was in flight and the completions of its last few seconds. A restarted
job reads that file, skips the positions already there and generates only the rest; the
final parquet is then written atomically in input order, and only after that is the
progress file removed.

The progress file starts with a fingerprint of everything that determines the
completions (model, prompt template, sampling, constraints, inputs). A file left by a run
with different settings is moved aside, never mixed in.

A SIGTERM (SLURM's, before the time limit) starts no new request: those in flight finish
and are appended, then the job stops with exit status 75 and no parquet, and the rerun
resumes (synthllm.core.stop).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
from jinja2 import Environment, PackageLoader, StrictUndefined
from tqdm import tqdm

from synthllm.core import stop
from synthllm.core.files import write_counts, write_parquet
from synthllm.core.llm import (
    BackendError,
    BackendSpec,
    Completion,
    Request,
    Sampling,
    open_backend,
)
from synthllm.core.prompt_fit import TOO_LONG, PromptGuard
from synthllm.core.shared_engine import SharedEngine
from synthllm.settings import merged

log = logging.getLogger(__name__)

# the progress log is flushed (and fsynced) when this many completions wait, or when a
# completion comes this many seconds after the last flush
FLUSH_EVERY = 64
FLUSH_S = 2.0

_PROMPTS = Environment(
    loader=PackageLoader("synthllm.core", "prompts"),
    undefined=StrictUndefined,
    keep_trailing_newline=False,
    autoescape=False,
)


def render(template: str, **values) -> str:
    return _PROMPTS.get_template(f"{template}.j2").render(**values).strip()


def template_hash(template: str) -> str:
    """Short hash of a prompt template's source, stored with every record it produced."""
    source, _, _ = _PROMPTS.loader.get_source(_PROMPTS, f"{template}.j2")
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def fingerprint(**parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ProgressLog:
    """Append-only jsonl of finished completions: a header line, then {"pos", "text", "finish"}."""

    def __init__(self, path: Path, fp: str):
        self.path = Path(path)
        self.fp = fp

    def load(self) -> dict[int, Completion]:
        """The finished completions on disk. A line cut by a kill mid-write (or anything
        after it) is truncated away here, so that later appends follow the last whole
        record: any number of kills at any byte leaves only whole records."""
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        try:
            header = json.loads(lines[0])
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = {}
        if len(lines) < 2 or not isinstance(header, dict) or header.get("fingerprint") != self.fp:
            stale = self.path.with_suffix(f".stale-{int(time.time())}.jsonl")
            os.replace(self.path, stale)
            log.warning("%s was written with other settings; moved to %s", self.path, stale)
            return {}
        done: dict[int, Completion] = {}
        whole = len(lines[0]) + 1  # bytes up to the end of the last whole record
        # the last element follows the last newline: a cut line, or empty
        for line in lines[1:-1]:
            try:
                row = json.loads(line)
                completion = Completion(row["text"], row["finish"])
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                break
            done[row["pos"]] = completion
            whole += len(line) + 1
        if whole < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(whole)
                fh.flush()
                os.fsync(fh.fileno())
            log.warning(
                "%s: %d bytes after the last whole record (a write cut by a kill) removed",
                self.path,
                len(data) - whole,
            )
        return done

    def append(self, rows: Sequence[tuple[int, Completion]]) -> None:
        new = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as fh:
            if new:
                fh.write(json.dumps({"fingerprint": self.fp}) + "\n")
            for pos, c in rows:
                fh.write(
                    json.dumps(
                        {"pos": pos, "text": c.text, "finish": c.finish_reason}, ensure_ascii=False
                    )
                    + "\n"
                )
            fh.flush()
            os.fsync(fh.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def progress_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".progress.jsonl")


def generate_resumable(
    requests: Sequence[Request],
    spec: BackendSpec,
    sampling: Sampling,
    output: str | Path,
    fp: str,
    chunk_size: int,
    desc: str,
    open_backend_fn: Callable = open_backend,
) -> tuple[list[Completion], dict]:
    """Completions for every request, in order, resuming from the output's progress file.

    Returns the completions and run facts (positions resumed, generated, engine start-up).
    The engine starts only when something is left to generate; `chunk_size` requests at
    most are in it at once. After a SIGTERM no new request starts; those in flight are kept
    as they finish, and stop.Stopped (exit status 75) is raised: the caller writes nothing,
    the rerun resumes. Requests the engine aborted are never kept: after a SIGTERM that is
    a stop, without one a BackendError naming their positions (the finished ones are kept).
    """
    with stop.handling():
        return _generate(requests, spec, sampling, output, fp, chunk_size, desc, open_backend_fn)


def spans(positions: Sequence[int]) -> str:
    """Positions as runs: [3, 4, 5, 9] -> "3..5, 9"."""
    runs: list[list[int]] = []
    for p in sorted(positions):
        if runs and p == runs[-1][1] + 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


def _generate(requests, spec, sampling, output, fp, chunk_size, desc, open_backend_fn):
    progress = ProgressLog(progress_path(output), fp)
    done = progress.load()
    todo = [i for i in range(len(requests)) if i not in done]
    facts = {"resumed": len(done), "generated": len(todo), "startup_s": 0.0, "generate_s": 0.0}
    if done:
        log.info(
            "%s: %d of %d completions found in %s; generating the other %d",
            desc,
            len(done),
            len(requests),
            progress.path,
            len(todo),
        )
    if not todo:
        return [done[i] for i in range(len(requests))], facts

    def stopped(lost: str = "") -> None:
        stop.exit(
            f"{desc}: stopped by SIGTERM after {len(done)} of {len(requests)} prompts"
            f"{lost}; {progress.path} holds them; rerun resumes"
        )

    started = time.time()
    # the engine's own processes ignore SIGTERM, so that the requests in flight are served
    with stop.shield_children():
        backend = open_backend_fn(spec)
    facts["startup_s"] = round(time.time() - started, 2)
    if hasattr(backend, "shared_facts"):  # synthllm.core.shared_engine
        facts["shared_engine"] = backend.shared_facts
    started = time.time()
    finished: list[tuple[int, Completion]] = []  # not yet on disk
    aborted: list[int] = []
    flushed = time.monotonic()
    try:
        with tqdm(
            total=len(requests), initial=len(done), desc=desc, unit="prompt", mininterval=5.0
        ) as bar:

            def flush() -> None:
                nonlocal flushed
                if finished:
                    progress.append(finished)
                    done.update(finished)
                    bar.update(len(finished))
                    finished.clear()
                flushed = time.monotonic()

            # no new request after a SIGTERM, nor once the engine has aborted one
            stream = backend.stream(
                [requests[i] for i in todo],
                sampling,
                todo,
                chunk_size,
                halt=lambda: stop.requested() or bool(aborted),
            )
            try:
                for pos, completion in stream:
                    # vLLM aborts what it holds when its engine gets SIGTERM: cut texts,
                    # never to be taken for finished ones
                    if completion.finish_reason == "abort":
                        aborted.append(pos)
                        continue
                    finished.append((pos, completion))
                    if len(finished) >= FLUSH_EVERY or time.monotonic() - flushed >= FLUSH_S:
                        flush()
            except Exception:
                flush()  # what finished before the failure is kept
                if stop.requested():  # the signal reached the engine too
                    stopped(" (those in flight were lost: the backend failed)")
                raise
            finally:
                getattr(stream, "close", lambda: None)()
            flush()
    finally:
        backend.close()
    if aborted:
        if stop.requested():
            stopped(f" (the {len(aborted)} in flight came back aborted)")
        raise BackendError(
            f"{spec.key}: the engine aborted {len(aborted)} requests (positions "
            f"{spans(aborted)}); they were not kept, the {len(done)} finished ones were"
        )
    if len(done) < len(requests):
        if stop.requested():  # the stream ended early, as asked
            stopped()
        missing = [i for i in todo if i not in done]
        raise BackendError(
            f"{spec.key}: the backend ended without {len(missing)} completions "
            f"(positions {spans(missing)})"
        )
    facts["generate_s"] = round(time.time() - started, 2)
    return [done[i] for i in range(len(requests))], facts


# a structured reply that did not parse: cut at max_tokens, it is truncated, not wrong
INCOMPLETE = ("empty", "malformed", "unparsable", "out_of_range")


def completion_status(parsed_status: str, completion: Completion, free_text: bool = False) -> str:
    """The one definition of `truncated`. A completion cut at max_tokens is truncated when
    what it should hold is not all there: free text (an answer, a document) whenever it has
    any text, a structured reply when it did not parse (INCOMPLETE). A reply that parsed in
    full, or the model's own verdict (Level-1's not_suitable), stands. A prompt the length
    guard refused (synthllm.core.prompt_fit) was never generated."""
    if completion.finish_reason == TOO_LONG:
        return TOO_LONG
    if completion.finish_reason != "length":
        return parsed_status
    if free_text:
        return parsed_status if parsed_status == "empty" else "truncated"
    return "truncated" if parsed_status in INCOMPLETE else parsed_status


def provenance(spec: BackendSpec, template: str, sampling: Sampling) -> dict:
    """Columns every generated record carries: which model, prompt and seed made it."""
    return {"model": spec.model, "template_hash": template_hash(template), "seed": sampling.seed}


def finish_stage(
    stage: str,
    rows: list[dict],
    schema,
    output: str | Path,
    counts_path: str | Path,
    n_in: int,
    statuses: dict[str, int],
    **extra,
) -> dict:
    """Write a generation stage's parquet and counts (ok = out, other statuses = dropped),
    then remove the progress file: from here on the shard is done."""
    statuses = dict(statuses)
    ok = statuses.pop("ok", 0)
    write_parquet(rows, schema, output)
    counts = write_counts(counts_path, stage, n_in, ok, statuses, **extra)
    progress_path(output).unlink(missing_ok=True)
    return counts


class GenerationStage(ABC):
    """The loop every generation stage shares, after NeMo-Skills' GenerationTask: a stage
    names its units (documents, concept sets, questions) and fills three hooks; the base
    renders the requests, fits them to the engine's context (synthllm.core.prompt_fit: a
    stage passes its documents through `fitted`; a request that cannot fit is not sent),
    generates resumably with a fingerprint of the settings that change outputs (never the
    execution knobs), gives every completion its status, and writes the records and counts.

    Class attributes: `stage` (counts and progress), `template` (prompt, provenance),
    `schema` (the output parquet), `output` (the outputs key of that parquet), `model_key`
    (the config key of its backend, for messages). A stage that reads more of the engine
    than its text (the rate stage's probabilities) overrides `open_backend`.
    """

    stage: str
    template: str
    schema: pa.Schema
    output: str
    model_key = "models.generator"

    def __init__(self, *, inputs: dict, outputs: dict, settings: dict, execution: dict):
        self.inputs, self.outputs = inputs, outputs
        self.settings, self.execution = settings, execution
        self.spec = BackendSpec.from_config(self.model_key, merged(settings, execution, "model"))
        self.sampling = Sampling(**settings["sampling"])
        self.guard = PromptGuard(self.spec, self.sampling.max_tokens, self.stage)
        self.prompts_cut = self.prompt_tokens_cut = 0

    def fitted(self, build: Callable[[list[str]], Request], documents: Sequence[str]) -> Request:
        """build(documents), their tails cut to fit the context, the cut counted."""
        fit = self.guard.fit(build, documents)
        if fit.tokens_cut and not fit.too_long:  # a refused prompt counts as too long only
            self.prompts_cut += 1
            self.prompt_tokens_cut += fit.tokens_cut
        return fit.request

    def open_backend(self, spec: BackendSpec):
        """The backend the stage generates with (started only when something is left): a
        vLLM engine shared with the jobs before and after this one when
        `generation.engine_keepalive_s` is set (synthllm.core.shared_engine), else its own.
        Inside a SLURM job an engine is shared only by the jobs of a group
        (`generation.shards_per_job` > 1): a job alone in its allocation has no one to
        share with, and its engine ends with it."""
        keepalive_s = self.execution.get("engine_keepalive_s", 0)
        alone = (
            bool(os.environ.get("SLURM_JOB_ID")) and self.execution.get("shards_per_job", 1) == 1
        )
        if keepalive_s and spec.backend == "vllm" and not alone:
            return SharedEngine(spec, keepalive_s)
        return open_backend(spec)

    @abstractmethod
    def units(self) -> list:
        """What each request is about, in output order."""

    @abstractmethod
    def request(self, unit) -> Request:
        """The chat request of one unit."""

    @abstractmethod
    def records(self, unit, completion: Completion) -> tuple[str, list[dict]]:
        """A completion's status (through completion_status) and its output rows."""

    def rows(self, units: list, completions: list[Completion]) -> tuple[list[dict], Counter]:
        """The output rows and one status per input record (the counts' `in`): by default
        each unit is a record and gives its rows through `records`."""
        rows, statuses = [], Counter()
        for unit, completion in zip(units, completions):
            status, unit_rows = self.records(unit, completion)
            statuses[status] += 1
            rows.extend(unit_rows)
        return rows, statuses

    def counts(self, units: list, rows: list[dict], statuses: Counter) -> tuple[Counter, dict]:
        """The statuses the counts report (ok = out, the rest dropped) and extra counts."""
        return statuses, {}

    def run(self) -> dict:
        units = self.units()
        requests = [self.request(u) for u in units]
        sent = [i for i, r in enumerate(requests) if self.guard.fits(r)]
        fp = fingerprint(stage=self.stage, settings=self.settings, requests=requests)
        generated, facts = generate_resumable(
            [requests[i] for i in sent],
            self.spec,
            self.sampling,
            self.outputs[self.output],
            fp,
            self.execution["chunk_size"],
            desc=self.stage,
            open_backend_fn=self.open_backend,
        )
        completions = [Completion("", TOO_LONG)] * len(requests)
        for i, completion in zip(sent, generated):
            completions[i] = completion
        facts["prompt_guard"] = {
            "budget_tokens": self.guard.budget if self.guard.active else None,
            "prompts_cut": self.prompts_cut,
            "tokens_cut": self.prompt_tokens_cut,
            "prompts_too_long": len(requests) - len(sent),
        }
        self.provenance = provenance(self.spec, self.template, self.sampling)
        rows, statuses = self.rows(units, completions)
        reported, extra = self.counts(units, rows, statuses)
        return finish_stage(
            self.stage,
            rows,
            self.schema,
            self.outputs[self.output],
            self.outputs["counts"],
            sum(statuses.values()),
            reported,
            **extra,
            **facts,
        )
