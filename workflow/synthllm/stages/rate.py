"""The ratings of a fine-grained filtering round (paper §4.1, Fig. 3): at iteration t the
rater LLM scores a sample of D(t-1) plus a fresh random corpus sample 1-10 (prompts/rate.j2),
none of them rated at an earlier iteration. The fine-grained regressor (synthllm.stages.classifiers)
trains on every ok rating so far.

Three ways to read a rating (config key filter.finegrained.rating):
- `text` (the paper's, GPT-4o): the number in the rater's (greedy) reply;
- `expected`: the rater's probabilities over the ratings 1-10 after "Rating: " (rate.j2),
  and their mean (G-Eval's probability-weighted score, Liu et al. 2023; vLLM backend only,
  `rating_distribution`);
- `yes_no`: the rater's probability of "Yes" against "No" to "Is the text above about
  mathematics?" (prompts/rate_yes_no.j2, the document first), on the same scale: 1 for No,
  10 for Yes, so the rating is 1 + 9 P(Yes). It judges relevance only, not clarity or
  language. The embedded default's: SmolLM2-135M tells math from the rest this way (AUC
  0.90 on 40 demo documents) but not with rate.j2 (AUC 0.33 expected, and "Rating: 10" to
  nearly everything as text).
With `expected` and `yes_no` the completion column holds the distribution as JSON.

Output schema (`filter/iter-{t}/ratings.parquet`): synthllm.stages.classifiers.RATINGS_SCHEMA, one row
per rated document (unusable ratings stay visible): doc_id, shard, row, origin (reference |
random), rating (float, null unless ok), status (ok | unparsable | out_of_range |
truncated), completion, finish_reason, model, template_hash, seed.

The sample is drawn with numpy's default_rng from filter.seed + t (recorded in the counts).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq

from synthllm.core.generation import GenerationStage, completion_status, render
from synthllm.core.llm import BackendError, Completion, Request, open_backend
from synthllm.stages.classifiers import (
    RATINGS_SCHEMA,
    load_scores,
    rating_histogram,
    sample_rows,
    shard_name_of,
    shard_sizes,
)

TEMPLATE = "rate"
YES_NO_TEMPLATE = "rate_yes_no"
# the answer words yes_no reads, as the first token of the reply
YES, NO = ("Yes", " Yes", "yes", "YES"), ("No", " No", "no", "NO")
RATING_REGEX = r"Rating: (10|[1-9])"
ORIGINS = ("reference", "random")
RATINGS = range(1, 11)
# what the expected rating reads the next token after: the reply rate.j2 asks for
PREFIX = "Rating: "
# next-token alternatives read per step (vLLM's default max_logprobs)
TOP_LOGPROBS = 20

_RATING_PATTERNS = (
    re.compile(r"rating\W{0,5}(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE),
    re.compile(r"^\W*(\d+(?:\.\d+)?)\W*$"),
)


def rating_request(text: str, structured: bool, template: str = TEMPLATE) -> Request:
    constraint = {"regex": RATING_REGEX} if structured else None
    return Request([{"role": "user", "content": render(template, text=text)}], constraint)


def word_tokens(tokenizer, words) -> set[int]:
    """The tokens of those of words that are one token (SmolLM2 splits "YES" into "Y" and
    "ES": "Y" would count every reply starting "You" as a yes)."""
    ids = [tokenizer.encode(w, add_special_tokens=False) for w in words]
    found = {i[0] for i in ids if len(i) == 1}
    if not found:
        raise BackendError(f"filter.finegrained.rating: none of {words} is one token")
    return found


def yes_no_distribution(
    first: dict[int, float], yes: set[int], no: set[int]
) -> tuple[dict[int, float] | None, float]:
    """({1: P(No), 10: P(Yes)} renormalised over the two, their raw mass) from the first
    token's probabilities; neither: (None, 0.0)."""
    p_yes = sum(p for t, p in first.items() if t in yes)
    p_no = sum(p for t, p in first.items() if t in no)
    mass = p_yes + p_no
    if mass <= 0:
        return None, 0.0
    return {1: p_no / mass, 10: p_yes / mass}, mass


def parse_rating(text: str) -> tuple[float | None, str]:
    """(rating, status): the number after "Rating", before "/10" or "out of 10", or a
    completion that is only a number. status ok | out_of_range (outside 1-10) | unparsable."""
    for pattern in _RATING_PATTERNS:
        found = pattern.findall(text.strip())
        if found:
            value = float(found[-1])
            return (value, "ok") if 1 <= value <= 10 else (None, "out_of_range")
    return None, "unparsable"


def rating_tokens(tokenizer) -> dict[int, int]:
    """token id -> rating of the tokens that are a whole rating 1-10 by themselves (their
    text, stripped), and of "0" (as 0, the second digit of "10" where the tokenizer splits
    digits, as SmolLM2's and Llama's do)."""
    values = {}
    for value in range(11):
        ids = tokenizer.encode(str(value), add_special_tokens=False)
        if len(ids) == 1:
            values[ids[0]] = value
    if not all(v in values.values() for v in range(10)):
        raise BackendError(
            "filter.finegrained.rating: expected needs a tokenizer with one token per digit"
        )
    return values


def rating_distribution(
    first: dict[int, float], after_one: dict[int, float], values: dict[int, int]
) -> tuple[dict[int, float] | None, float]:
    """(P(rating = k) for k = 1..10 renormalised over them, the raw probability mass on
    ratings 1-10) from the rater's next-token probabilities after "Rating: " (`first`) and
    after "Rating: 1" (`after_one`); token ids as keys, `values` from rating_tokens. A "1"
    followed by "0" is 10, by another digit out of range (11-19), by anything else 1. No
    mass on any rating: (None, 0.0)."""
    p = dict.fromkeys(RATINGS, 0.0)
    p_one = 0.0
    for token, prob in first.items():
        value = values.get(token)
        if value == 1:
            p_one += prob
        elif value is not None and value >= 2:
            p[value] += prob
    zero = sum(prob for t, prob in after_one.items() if values.get(t) == 0)
    digit = sum(prob for t, prob in after_one.items() if values.get(t) in range(1, 10))
    p[10] += p_one * zero
    p[1] += p_one * max(0.0, 1.0 - zero - digit)
    mass = sum(p.values())
    if mass <= 0:
        return None, 0.0
    return {k: v / mass for k, v in p.items()}, mass


def expected_value(distribution: dict[int, float]) -> float:
    return float(sum(k * v for k, v in distribution.items()))


def parse_distribution(text: str) -> tuple[float | None, str]:
    """(expected rating, status) of an `expected` or `yes_no` completion (JSON: p, mass;
    ProbabilityRatingBackend)."""
    try:
        record = json.loads(text)
        distribution = {int(k): float(v) for k, v in record["p"].items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None, "unparsable"
    if not distribution:
        return None, "unparsable"
    return expected_value(distribution), "ok"


class ProbabilityRatingBackend:
    """A vLLM backend (synthllm.core.llm.VLLMBackend) that answers a rating request with the
    rater's distribution over the ratings instead of a reply, from the top-TOP_LOGPROBS
    next-token log-probabilities, greedy and one token at a time (no seed; nothing depends
    on what else is in flight). mode `expected`: two steps, after "Rating: " and after
    "Rating: 1" (rating_distribution); `yes_no`: the reply's first token, Yes or No
    (yes_no_distribution). Its completions are JSON: {"p": {rating: prob}, "mass":
    probability on those ratings before renormalising}; none at all: {}."""

    def __init__(self, backend, mode: str = "expected"):
        if not hasattr(backend, "llm"):
            backend.close()
            raise BackendError(
                f"filter.finegrained.rating: {mode} reads the rater's token probabilities, "
                f"which only the vllm backend gives (models.rater.backend is "
                f"{backend.spec.backend!r}); use rating: text"
            )
        self.backend, self.mode = backend, mode
        tokenizer = backend.llm.get_tokenizer()
        if mode == "yes_no":
            self.yes, self.no = word_tokens(tokenizer, YES), word_tokens(tokenizer, NO)
        else:
            self.values = rating_tokens(tokenizer)

    def _next_token(self, requests, prefix: str | None) -> list[dict[int, float]]:
        """The first reply token's probabilities, the reply started with prefix (None: the
        chat template's generation prompt only)."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=TOP_LOGPROBS)
        if prefix is None:
            conversations, turn = [r.messages for r in requests], {}
        else:
            conversations = [
                r.messages + [{"role": "assistant", "content": prefix}] for r in requests
            ]
            turn = {"add_generation_prompt": False, "continue_final_message": True}
        outputs = self.backend.llm.chat(conversations, params, use_tqdm=False, **turn)
        return [
            {t: float(np.exp(lp.logprob)) for t, lp in o.outputs[0].logprobs[0].items()}
            for o in outputs
        ]

    def distributions(self, requests) -> list[tuple[dict[int, float] | None, float]]:
        if self.mode == "yes_no":
            return [
                yes_no_distribution(f, self.yes, self.no) for f in self._next_token(requests, None)
            ]
        first = self._next_token(requests, PREFIX)
        after_one = self._next_token(requests, PREFIX + "1")
        return [rating_distribution(f, a, self.values) for f, a in zip(first, after_one)]

    def generate(self, requests, sampling, positions) -> list[Completion]:
        completions = []
        for distribution, mass in self.distributions(requests):
            record = (
                {"p": {str(k): round(v, 6) for k, v in distribution.items()}, "mass": mass}
                if distribution
                else {}
            )
            completions.append(Completion(json.dumps(record), "stop"))
        return completions

    def stream(self, requests, sampling, positions, max_in_flight, halt=lambda: False):
        """(position, completion) pairs, `max_in_flight` requests per engine call, none
        started once halt() is true (synthllm.core.llm.Backend.stream)."""
        for start in range(0, len(requests), max_in_flight):
            if halt():
                return
            window = slice(start, start + max_in_flight)
            yield from zip(positions[window], self.generate(requests[window], sampling, []))

    def close(self) -> None:
        self.backend.close()


def open_expected_backend(spec):
    return ProbabilityRatingBackend(open_backend(spec), "expected")


def open_yes_no_backend(spec):
    return ProbabilityRatingBackend(open_backend(spec), "yes_no")


PROBABILITY_BACKENDS = {"expected": open_expected_backend, "yes_no": open_yes_no_backend}


def rate_sample(
    previous_scores: str,
    shards: list[str],
    n_reference: int,
    n_random: int,
    seed: int,
    already_rated: set[str],
) -> list[dict]:
    """D(t-1) (up to n_reference documents) plus n_random other random corpus documents,
    none rated before: (doc_id, shard index, row, origin)."""
    rng = np.random.default_rng(seed)
    scores = load_scores(previous_scores).to_pylist()
    index = {shard_name_of(s): i for i, s in enumerate(shards)}
    reference = [r for r in scores if r["kept"] and r["doc_id"] not in already_rated]
    picked = rng.choice(len(reference), size=min(n_reference, len(reference)), replace=False)
    chosen = [
        {
            "doc_id": reference[i]["doc_id"],
            "s": index[reference[i]["shard"]],
            "row": reference[i]["row"],
            "origin": "reference",
        }
        for i in sorted(picked)
    ]
    rated_pairs = {(index[r["shard"]], r["row"]) for r in scores if r["doc_id"] in already_rated}
    exclude = {(c["s"], c["row"]) for c in chosen} | rated_pairs
    for s, row in sample_rows(shard_sizes(shards), n_random, rng, exclude):
        chosen.append({"doc_id": None, "s": s, "row": row, "origin": "random"})
    return chosen


class Rate(GenerationStage):
    """Settings: filter.finegrained.{reference_sample, random_sample, max_doc_chars,
    sampling, rating}, filter.seed as seed, generation.structured as structured, models.rater as
    model, and the iteration (rules/02_filter.smk); the sample's seed is seed + iteration."""

    stage = TEMPLATE
    schema = RATINGS_SCHEMA
    output = "ratings"
    model_key = "models.rater"

    @property
    def seed(self) -> int:
        return self.settings["seed"] + self.settings["iteration"]

    def units(self) -> list[dict]:
        """The documents to rate, each with its doc_id and text read from its shard."""
        shards = self.inputs["shards"]
        already = set()
        for path in self.inputs["previous_ratings"]:
            already |= set(pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist())
        s = self.settings
        chosen = rate_sample(
            self.inputs["previous_scores"],
            shards,
            s["reference_sample"],
            s["random_sample"],
            self.seed,
            already,
        )
        for i in sorted({c["s"] for c in chosen}):
            table = pq.read_table(shards[i], columns=["doc_id", "text"]).to_pylist()
            for c in chosen:
                if c["s"] == i:
                    c["doc_id"], c["text"] = table[c["row"]]["doc_id"], table[c["row"]]["text"]
        return chosen

    @property
    def from_probabilities(self) -> bool:
        """A rating read from probabilities (expected, yes_no), not from a reply."""
        return self.settings["rating"] != "text"

    @property
    def template(self) -> str:
        return YES_NO_TEMPLATE if self.settings["rating"] == "yes_no" else TEMPLATE

    def request(self, doc: dict) -> Request:
        text = doc["text"][: self.settings["max_doc_chars"]]
        # a rating read from probabilities: no constraint, no reply
        structured = self.settings["structured"] and not self.from_probabilities
        template = self.template
        return self.fitted(lambda texts: rating_request(texts[0], structured, template), [text])

    def open_backend(self, spec):
        if not self.from_probabilities:
            return super().open_backend(spec)
        return PROBABILITY_BACKENDS[self.settings["rating"]](spec)

    def records(self, doc: dict, completion: Completion) -> tuple[str, list[dict]]:
        parse = parse_distribution if self.from_probabilities else parse_rating
        rating, parsed = parse(completion.text)
        status = completion_status(parsed, completion)
        row = {
            "doc_id": doc["doc_id"],
            "shard": shard_name_of(self.inputs["shards"][doc["s"]]),
            "row": doc["row"],
            "origin": doc["origin"],
            "rating": rating,
            "status": status,
            "completion": completion.text,
            "finish_reason": completion.finish_reason,
            **self.provenance,
        }
        return status, [row]

    def counts(self, units, rows, statuses):
        return statuses, {
            "origins": {o: sum(1 for d in units if d["origin"] == o) for o in ORIGINS},
            "histogram": rating_histogram([r["rating"] for r in rows if r["rating"] is not None]),
            "seed": self.seed,
            "structured": self.settings["structured"] and not self.from_probabilities,
            "rating": self.settings["rating"],
        }


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The ratings of iteration settings["iteration"] and their counts."""
    return Rate(inputs=inputs, outputs=outputs, settings=settings, execution=execution).run()
