"""`synthllm <command>`: the dispatcher over synthllm.stages.

A stage command reads its four JSON arguments, sets the thread count of the numerical
libraries from `execution.threads`, and calls its function by keyword. Before the stage's
module (and with it any hub library) is imported, it sets the job's model environment: the
staged hub cache offline (`execution.hub`, config key models.hub; synthllm.core.models),
hub tokens and the API keys that no backend of the stage names removed from the process
(synthllm.core.llm.scrub_environment), and every hub model of the settings checked as
staged. A SynthllmError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys

from synthllm.errors import SynthllmError
from synthllm.stages import STAGES, TOOLS


class Part(dict):
    """One JSON argument of a stage; a missing key is an error that names the argument."""

    def __init__(self, command: str, argument: str, text: str):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SynthllmError(f"--{argument}: not JSON ({exc}): {text[:200]!r}") from None
        if not isinstance(value, dict):
            raise SynthllmError(f"--{argument}: a JSON object is needed, not {text[:200]!r}")
        super().__init__(value)
        self.where = f"synthllm {command} --{argument}"

    def __missing__(self, key):
        raise SynthllmError(f"{self.where}: no key {key!r} (it has {', '.join(self) or 'none'})")


def _target(command):
    module, function = command.target.split(":")
    return getattr(importlib.import_module(f"synthllm.{module}"), function)


def _run_stage(command, args: argparse.Namespace) -> None:
    parts = {name: Part(command.name, name, getattr(args, name)) for name in PARTS}
    threads = parts["execution"].get("threads")
    if threads:  # read by numba at import, so before the stage's module is imported
        os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    # read by the hub libraries at import, so before the stage's module is imported too
    from synthllm.core.llm import scrub_environment
    from synthllm.core.models import stage_environment

    scrub_environment(parts["execution"])
    stage_environment(parts["settings"], parts["execution"])
    _target(command)(**parts)


def _run_tool(command, args: argparse.Namespace) -> None:
    kwargs = {k: v for k, v in vars(args).items() if k not in ("verbose", "command", "run")}
    _target(command)(**kwargs)


PARTS = {
    "inputs": "input paths by name (JSON)",
    "outputs": "output paths by name (JSON)",
    "settings": "what changes the outputs (JSON; synthllm.settings)",
    "execution": "how the job runs: threads, chunk size, engine knobs (JSON)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthllm", description="synthllm: the stages of the pipeline and their tools"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in STAGES:
        p = sub.add_parser(command.name, help=command.help)
        for name, help_text in PARTS.items():
            p.add_argument(f"--{name}", required=name != "execution", default="{}", help=help_text)
        p.set_defaults(run=lambda args, c=command: _run_stage(c, args))
    for command in TOOLS:
        p = sub.add_parser(command.name, help=command.help)
        for flags, kwargs in command.arguments:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(run=lambda args, c=command: _run_tool(c, args))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.run(args)
    except SynthllmError as exc:
        print(f"synthllm {args.command}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
