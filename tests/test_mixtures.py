"""Nested SFT mixtures and token counts, and the stage CLI of dedup, decontam and mixture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from mathtext import samples
from synthllm.core.chat import sft_messages
from synthllm.stages.mixtures import MixtureError, count_tokens, level_quota, nested_subset

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "resources" / "models" / "SmolLM2-135M-Instruct"
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
needs_tokenizer = pytest.mark.skipif(
    not TOKENIZER.is_dir(), reason="resources/models not filled: run ./install.sh"
)


def pool(levels: list[int]) -> pl.DataFrame:
    n = len(levels)
    return pl.DataFrame(
        {
            "question_id": [f"q{i:04d}" for i in range(n)],
            "level": pl.Series(levels, dtype=pl.Int8),
            "tokens": pl.Series(np.arange(n) % 7 + 10, dtype=pl.Int32),
        }
    )


def test_subsets_are_nested_and_reproducible():
    p = pool([1, 2, 3] * 100)
    sizes = [10, 40, 160, 300]
    for levels, props in ((None, None), ([1, 2], [3.0, 1.0]), ([3], None)):
        limit = 300 if levels is None else (133 if levels == [1, 2] else 100)
        subs = [
            set(nested_subset(p, k, 7, levels, props)["question_id"]) for k in sizes if k <= limit
        ]
        assert all(a < b for a, b in zip(subs, subs[1:]))
        again = nested_subset(p, sizes[1], 7, levels, props)["question_id"].to_list()
        assert again == sorted(subs[1])
    assert set(nested_subset(p, 40, 8)["question_id"]) != set(
        nested_subset(p, 40, 7)["question_id"]
    )
    by_level = nested_subset(p, 40, 7, [1, 2], [3.0, 1.0])["level"].value_counts().sort("level")
    assert by_level["count"].to_list() == [30, 10]


def test_level_quota_uses_largest_remainders():
    assert level_quota(10, [1, 2, 3], [1, 1, 1]) == {1: 4, 2: 3, 3: 3}
    assert sum(level_quota(7, [1, 2], [0.3, 0.7]).values()) == 7


def test_asking_more_than_the_pool_names_the_key():
    with pytest.raises(
        MixtureError, match="mixtures.sample_counts: 31 samples asked, the clean pool holds 30"
    ):
        nested_subset(pool([1] * 30), 31, 0)
    with pytest.raises(MixtureError, match="level-2"):
        nested_subset(pool([1] * 30 + [2]), 10, 0, [1, 2])


def synthllm(stage: str, **parts: dict) -> subprocess.CompletedProcess:
    args = [f"--{name}={json.dumps(value)}" for name, value in parts.items()]
    return subprocess.run(
        [sys.executable, "-m", "synthllm", stage, *args], capture_output=True, text=True
    )


def mixture_settings(**changes) -> dict:
    settings = {
        "name": "all",
        "samples": 8,
        "seed": 0,
        "levels": None,
        "proportions": None,
        "size_key": "mixtures.sample_counts",
    }
    return {**settings, **changes}


def test_a_mixture_is_drawn_by_its_job_settings(tmp_path):
    pool([1, 2, 3] * 10).write_parquet(tmp_path / "pool.parquet")
    outputs = {"samples": str(tmp_path / "8.parquet"), "counts": str(tmp_path / "8.counts.json")}
    proc = synthllm(
        "mixture",
        inputs={"pool": str(tmp_path / "pool.parquet")},
        outputs=outputs,
        settings=mixture_settings(name="l12", levels=[1, 2], proportions=[3, 1]),
        execution={"threads": 1},
    )
    assert proc.returncode == 0, proc.stderr
    counts = json.loads((tmp_path / "8.counts.json").read_text())
    assert counts["mixture"] == "l12" and counts["per_level"] == {
        "level1": 6,
        "level2": 2,
        "level3": 0,
    }
    expected = nested_subset(pool([1, 2, 3] * 10), 8, 0, [1, 2], [3, 1])
    assert pl.read_parquet(tmp_path / "8.parquet").equals(expected)


def test_an_experiment_mixture_names_the_experiments_key_and_writes_nothing(tmp_path):
    """The rule passes the sizing key in the job's settings (mixture_job); the error names it."""
    pool([1] * 30 + [3] * 5).write_parquet(tmp_path / "pool.parquet")
    out = tmp_path / "level3" / "8.parquet"
    proc = synthllm(
        "mixture",
        inputs={"pool": str(tmp_path / "pool.parquet")},
        outputs={"samples": str(out), "counts": str(tmp_path / "8.counts.json")},
        settings=mixture_settings(name="level3", levels=[3], size_key="ablation.samples"),
    )
    assert proc.returncode == 2
    assert (
        "config key ablation.samples: 8 level-3 samples asked for 8, the clean pool holds 5"
        in proc.stderr
    )
    assert not out.exists() and not (tmp_path / "8.counts.json").exists()


@pytest.mark.parametrize(
    "stage, parts, named",
    [
        ("dedup", {"settings": "{near: 1}"}, "--settings: not JSON"),
        ("decontam", {"inputs": "[1, 2]"}, "--inputs: a JSON object is needed"),
        ("mixture", {"settings": json.dumps({"seed": 0})}, "--settings: no key 'samples'"),
        ("sft_pool", {}, "--settings: no key 'tokenizer'"),
        ("mixture", {"inputs": "{}", "settings": json.dumps(mixture_settings())}, "no key 'pool'"),
    ],
)
def test_bad_stage_arguments_exit_2_with_one_line_naming_them(tmp_path, stage, parts, named):
    pool([1] * 10).write_parquet(tmp_path / "pool.parquet")
    given = {
        "inputs": json.dumps({"pool": str(tmp_path / "pool.parquet")}),
        "outputs": json.dumps({"samples": str(tmp_path / "s.parquet")}),
        "settings": "{}",
        **parts,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "synthllm", stage]
        + [f"--{name}={value}" for name, value in given.items()],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert named in proc.stderr and proc.stderr.startswith(f"synthllm {stage}: error:")


@needs_tokenizer
def test_token_counts_are_exact_chat_formatted_lengths():
    from transformers import AutoTokenizer

    records = samples(
        ["What is 2 + 2?", "Integrate x e^x dx. " * 30],
        answers=["\\boxed{4}", "By parts: x e^x - e^x + C, so \\boxed{(x-1)e^x + C}."],
    )
    counts = count_tokens(records, str(TOKENIZER), SYSTEM, batch_size=1)
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    for i, row in enumerate(records.to_dicts()):
        text = tok.apply_chat_template(
            sft_messages(row["question"], row["answer"], SYSTEM), tokenize=False
        )
        assert counts[i] == len(tok(text, add_special_tokens=False)["input_ids"])
    assert counts[1] > counts[0] + 100
