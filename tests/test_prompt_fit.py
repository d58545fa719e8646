"""The prompt length guard (synthllm.core.prompt_fit): prompts fit the context through the
model's own tokenizer, documents cut longest first, and a stage counts what it cut."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest
from synthllm.core.llm import BackendSpec
from synthllm.core.prompt_fit import TOO_LONG, PromptGuard, PromptGuardError, token_caps
from synthllm.stages import level3
from synthllm.stages.level3 import level3_request

ROOT = Path(__file__).resolve().parents[1]
HF_MODEL = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
STACKEXCHANGE = ROOT.parent / "shared" / "data" / "corpus" / "math_stackexchange"
needs_model = pytest.mark.skipif(
    not (HF_MODEL / "config.json").exists(), reason="SmolLM2 HF folder absent: run ./install.sh"
)
needs_corpus = pytest.mark.skipif(
    not STACKEXCHANGE.is_dir(), reason=f"{STACKEXCHANGE} absent (../shared/data)"
)


def test_token_caps_lower_the_longest_first_to_a_common_level():
    assert token_caps([10, 4], 3) == [7, 4]
    assert token_caps([10, 10], 4) == [8, 8]
    assert token_caps([10, 4], 8) == [3, 3]
    assert token_caps([4, 10], 0) == [4, 10]
    assert token_caps([4, 10], 14) == [0, 0]


def test_token_caps_remove_enough_and_no_more_than_one_level_needs():
    rng = random.Random(0)
    for _ in range(500):
        lengths = [rng.randrange(0, 300) for _ in range(rng.randrange(1, 4))]
        over = rng.randrange(1, sum(lengths) + 2)
        caps = token_caps(lengths, over)
        removed = sum(lengths) - sum(caps)
        assert all(0 <= c <= n for c, n in zip(caps, lengths))
        assert removed >= min(over, sum(lengths))
        if 0 < over < sum(lengths):
            level = max(caps)
            # one level higher would not remove enough: the cut is as small as it can be
            assert sum(lengths) - sum(min(n, level + 1) for n in lengths) < over
            assert all(c == level for c, n in zip(caps, lengths) if n > level)


def spec(max_model_len: int, backend: str = "transformers") -> BackendSpec:
    return BackendSpec.from_config(
        "models.generator",
        {"backend": backend, "model": str(HF_MODEL), "max_model_len": max_model_len},
    )


@pytest.fixture(scope="module")
def answers() -> list[str]:
    """Real math.stackexchange answers, longest first (LaTeX-heavy text)."""
    path = next(STACKEXCHANGE.glob("*.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((r["output"] for r in rows), key=len, reverse=True)


def kept_prefix(text: str, prompt: str) -> str:
    """The longest head of `text` that the prompt holds."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if text[:mid] in prompt else (lo, mid - 1)
    return text[:lo]


def build(refs: list[str]):
    return level3_request(["Algebra", "Geometry"], ["completing the square", "area"], refs, True)


@needs_model
@needs_corpus
def test_two_long_references_are_cut_to_equal_shares_within_the_budget(answers):
    guard = PromptGuard(spec(1024), max_tokens=256, stage="level3")
    long_a, long_b = answers[0][:6000], answers[1][:6000]
    fitted = guard.fit(build, [long_a, long_b])
    length = guard.length(fitted.request)
    assert guard.budget == 768 and 768 - 16 <= length <= 768
    prompt = fitted.request.messages[0]["content"]
    kept = [kept_prefix(text, prompt) for text in (long_a, long_b)]
    tokens = [len(guard.tokenizer(k, add_special_tokens=False)["input_ids"]) for k in kept]
    assert min(tokens) > 100 and abs(tokens[0] - tokens[1]) <= 4, tokens
    shares = [
        len(guard.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (long_a, long_b)
    ]
    assert fitted.tokens_cut >= sum(shares) - 768 and not fitted.too_long
    assert guard.length(build([long_a, long_b])) > 768  # it did need cutting


@needs_model
@needs_corpus
def test_a_short_reference_is_kept_whole_beside_a_long_one(answers):
    guard = PromptGuard(spec(1024), max_tokens=256, stage="level3")
    short = answers[-1]
    fitted = guard.fit(build, [answers[0][:8000], short])
    assert short in fitted.request.messages[0]["content"]
    assert guard.length(fitted.request) <= guard.budget and fitted.tokens_cut > 0


@needs_model
def test_a_prompt_that_fits_is_left_alone_and_one_that_cannot_is_refused():
    guard = PromptGuard(spec(2048), max_tokens=256, stage="level3")
    fitted = guard.fit(build, ["A short reference.", "Another one."])
    assert fitted.tokens_cut == 0 and fitted.request == build(
        ["A short reference.", "Another one."]
    )
    tight = PromptGuard(spec(300), max_tokens=200, stage="level3")  # less than the template
    fitted = tight.fit(build, ["A short reference.", "Another one."])
    assert fitted.too_long and not tight.fits(fitted.request)


def test_a_completion_budget_that_fills_the_context_names_the_stage():
    with pytest.raises(PromptGuardError, match=r"level3: sampling.max_tokens \(2048\)"):
        PromptGuard(spec(2048, backend="openai"), max_tokens=2048, stage="level3")


def test_an_openai_backend_is_not_guarded():
    guard = PromptGuard(spec(512, backend="openai"), max_tokens=128, stage="level3")
    assert not guard.active and guard.fits(build(["x " * 5000]))


@needs_model
@needs_corpus
def test_the_level3_stage_counts_cut_and_refused_prompts(tmp_path, answers):
    """A real Level-3 job (the 135M model, transformers backend): one set fits, one is cut,
    one cannot fit (its concepts alone overflow) and is dropped as prompt_too_long."""
    sets = pl.DataFrame(
        {
            "set_id": ["s0", "s1", "s2"],
            "ref_doc_ids": [["a", "b"], ["c", "d"], ["e", "f"]],
            "topics": [["Algebra", "Geometry"]] * 3,
            "key_concepts": [["slope", "area"], ["slope", "area"], ["a long concept"] * 120],
            "ref_texts": [
                ["Lines have slopes.", "Squares have areas."],
                [answers[0], answers[1]],
                ["x", "y"],
            ],
        }
    )
    sets.write_parquet(tmp_path / "sets.parquet")
    outputs = {"questions": str(tmp_path / "q.parquet"), "counts": str(tmp_path / "c.json")}
    counts = level3.run(
        inputs={"sets": str(tmp_path / "sets.parquet")},
        outputs=outputs,
        settings={
            "model": {"backend": "transformers", "model": str(HF_MODEL), "max_model_len": 768},
            "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 16, "seed": 0},
            "calls_per_set": 1,
            "questions_per_set": 3,
            "structured": False,
            "max_doc_chars": 100_000,
        },
        execution={"chunk_size": 4, "model": {"batch_size": 2}},
    )
    assert counts["in"] == 3 and counts["dropped"][TOO_LONG] == 1
    guard = counts["prompt_guard"]
    assert guard == {
        "budget_tokens": 752,
        "prompts_cut": 1,
        "tokens_cut": guard["tokens_cut"],
        "prompts_too_long": 1,
    }
    assert guard["tokens_cut"] > 500
