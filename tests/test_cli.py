"""`synthllm <stage>`: the registry's commands, and bad arguments as one line with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from synthllm.settings import schema_default
from synthllm.stages import STAGES


def synthllm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthllm", *args], capture_output=True, text=True, timeout=120
    )


def test_every_stage_target_exists():
    import importlib

    for command in STAGES:
        module, function = command.target.split(":")
        assert callable(getattr(importlib.import_module(f"synthllm.{module}"), function)), (
            command.name
        )
    assert len({c.name for c in STAGES}) == len(STAGES)


SETTINGS = json.dumps(
    {
        "model": {"backend": "vllm", "model": "m"},
        "sampling": schema_default("generation.level1.sampling"),
    }
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inputs", "{docs", "--outputs", "{}", "--settings", "{}"], "--inputs: not JSON"),
        (["--inputs", "[]", "--outputs", "{}", "--settings", "{}"], "--inputs: a JSON object"),
        (["--inputs", "{}", "--outputs", "{}", "--settings", SETTINGS], "--inputs: no key 'docs'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    proc = synthllm("level1", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert message in proc.stderr and proc.stderr.startswith("synthllm level1: error:")


def test_a_missing_settings_part_is_named():
    proc = synthllm(
        "level1",
        "--inputs",
        '{"docs": "x.parquet"}',
        "--outputs",
        "{}",
        "--settings",
        '{"sampling": {}}',
    )
    assert proc.returncode == 2, proc.stderr
    assert "synthllm level1: error: the stage's settings have no part 'model'" in proc.stderr
