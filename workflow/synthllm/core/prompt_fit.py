"""The prompt length guard of every generation stage.

A prompt and its completion share the engine's context: a prompt longer than
`max_model_len - sampling.max_tokens` tokens is refused by vLLM (or leaves no room to
answer). The guard counts a request's tokens as the engine will, through the model's own
tokenizer and chat template, and when it is over, cuts the tails of the request's
documents (a Level-3 prompt's two references, a Level-1 document): the longest first, down
to a common length, so that two references keep equal shares. A request that is still over
with its documents emptied (or that has none, an answer's question) is not generated: its
status is `prompt_too_long`. Stages count the cut prompts, the tokens cut and the prompts
too long.

An openai backend's model is served elsewhere, often with no tokenizer here: the guard is
off there, the server answers a too-long prompt with an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from synthllm.core.llm import BackendSpec, Request
from synthllm.core.models import hub_source
from synthllm.errors import SynthllmError

log = logging.getLogger(__name__)

TOO_LONG = "prompt_too_long"  # the finish reason and status of a request the guard refused
# tokens of the chat template beyond its messages' text, for the cheap upper bound below
TEMPLATE_SLACK = 64
FIT_ROUNDS = 4  # cuts at token boundaries can re-tokenise a little longer: a few rounds


class PromptGuardError(SynthllmError):
    pass


@dataclass
class Fitted:
    request: Request
    tokens_cut: int = 0
    too_long: bool = False


def token_caps(lengths: Sequence[int], over: int) -> list[int]:
    """New lengths that remove at least `over` tokens, longest first: every length above a
    common level is lowered to it (water-filling), the lowest such level that removes
    enough. Lengths at or below the level are untouched."""
    if over <= 0:
        return list(lengths)
    if over >= sum(lengths):
        return [0] * len(lengths)
    ordered = sorted(lengths, reverse=True)
    removed_above = 0  # tokens removed by lowering the first k lengths to ordered[k]
    for k in range(1, len(ordered) + 1):
        next_level = ordered[k] if k < len(ordered) else 0
        removed_above += k * (ordered[k - 1] - next_level)
        if removed_above >= over:
            # lower the k longest to a level between next_level and ordered[k - 1]
            level = next_level + (removed_above - over) // k
            return [min(n, level) for n in lengths]
    return [0] * len(lengths)


class PromptGuard:
    """Counts and fits the requests of one stage's backend (`spec`) for completions of
    `max_tokens`."""

    def __init__(self, spec: BackendSpec, max_tokens: int, stage: str):
        self.budget = spec.max_model_len - max_tokens
        if self.budget <= 0:
            raise PromptGuardError(
                f"{stage}: sampling.max_tokens ({max_tokens}) leaves no room for a prompt "
                f"in {spec.key}.max_model_len ({spec.max_model_len})"
            )
        self.spec = spec
        self.active = spec.backend != "openai"
        if not self.active:
            log.info("%s: openai backend, the prompt length guard is off", spec.key)
        self._tokenizer = None

    @property
    def tokenizer(self):
        """The model's tokenizer, loaded when a prompt is first too long to pass unread."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            model, kwargs = hub_source(self.spec.model, self.spec.revision)
            if self.spec.gguf_file:
                kwargs["gguf_file"] = self.spec.gguf_file
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
            except (OSError, ValueError) as exc:
                raise PromptGuardError(
                    f"{self.spec.key}: the tokenizer of {self.spec.model!r} could not be "
                    f"loaded to guard prompt lengths: {exc}"
                ) from exc
        return self._tokenizer

    def length(self, request: Request) -> int:
        """Prompt tokens of the request, its chat template applied as the engine does."""
        ids = self.tokenizer.apply_chat_template(
            request.messages, add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding
            ids = ids["input_ids"]
        return len(ids)

    def surely_fits(self, request: Request) -> bool:
        """A byte-level tokenizer spends at least one byte per text token: a prompt of
        fewer bytes than the budget (less the template's own tokens) needs no counting."""
        size = sum(len(str(m["content"]).encode()) for m in request.messages)
        return size + TEMPLATE_SLACK * len(request.messages) <= self.budget

    def fits(self, request: Request) -> bool:
        return not self.active or self.surely_fits(request) or self.length(request) <= self.budget

    def fit(self, build: Callable[[list[str]], Request], texts: Sequence[str]) -> Fitted:
        """build(texts) with the texts' tails cut so that the request fits the budget."""
        texts = list(texts)
        request = build(texts)
        if self.fits(request):
            return Fitted(request)
        encoded = [
            self.tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts
        ]
        full = [len(e["input_ids"]) for e in encoded]
        caps = list(full)
        for _ in range(FIT_ROUNDS):
            over = self.length(request) - self.budget
            if over <= 0:
                return Fitted(request, tokens_cut=sum(full) - sum(caps))
            if not any(caps):
                break
            caps = token_caps(caps, over)
            cut = [
                t[: e["offset_mapping"][c][0]] if c < n else t
                for t, e, c, n in zip(texts, encoded, caps, full)
            ]
            request = build(cut)
        over = self.length(request) - self.budget
        return Fitted(request, tokens_cut=sum(full) - sum(caps), too_long=over > 0)
