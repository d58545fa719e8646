"""`synthllm fetch-models --configfile C [--configfile ...] [--dry-run]`: stage every hub
model a config names, once, on a node with internet (a login node), so that no job
downloads anything (jobs run with HF_HUB_OFFLINE=1: synthllm.core.models).

The models are those of config keys models.generator, models.answerer and models.rater (not
an openai backend: its model is served elsewhere), models.embedding, models.train[] (each),
models.outside[] (each: the models evaluated as they are), mixtures.tokenizer (tokenizer
files only) and diversity.embedding; a local folder
(resources/models/...) or a `package:` model is not downloaded. Each is fetched at its
config revision (`revision`; mixtures.tokenizer_revision) into config key models.hub.home
(an HF_HOME on a file system the compute nodes share; null: the user's own), leaving out
the files of models.hub.ignore_patterns (consolidated and original/ checkpoint copies,
ONNX, TensorFlow and Flax weights). A model without a revision is fetched at `main`; the
end of the run prints the commit of each, to pin in the config.

First every model's access is checked (gated models need a token, HF_TOKEN or `hf auth
login`, of an account that accepted the model's licence), and all problems are reported
together, naming each model and its config key, before a byte is downloaded. A rerun
downloads only what is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synthllm.core.models import PACKAGE_PREFIX, hub_cache, hub_environment, hub_repo
from synthllm.errors import SynthllmError
from synthllm.settings import SCHEMA

DEFAULT_CONFIG = SCHEMA.parent / "default.yaml"
ROLES = ("generator", "answerer", "rater")
# what a tokenizer needs (mixtures.tokenizer): no weights
TOKENIZER_FILES = ["*.json", "*.model", "*.tiktoken", "*.txt", "*.jinja"]


class FetchError(SynthllmError):
    """A config, model or hub problem of fetch-models; the message names the config key."""


@dataclass
class HubModel:
    """One hub repository at one revision, and the config keys that name it."""

    repo: str
    revision: str | None  # None: main
    keys: list[str] = field(default_factory=list)  # e.g. models.generator.model
    revision_keys: list[str] = field(default_factory=list)  # where to pin it
    files: str = "all"  # all | tokenizer | the GGUF file of a transformers backend

    @property
    def named(self) -> str:
        return ", ".join(self.keys)


@dataclass(frozen=True)
class Skipped:
    key: str
    model: str
    why: str


def load_config(configfiles: list[str]) -> dict:
    """The config as `snakemake --configfile ...` sees it: config/default.yaml, each file
    merged over it in order, validated with the schema's defaults filled in."""
    from snakemake.utils import update_config, validate

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for name in configfiles:
        path = Path(name)
        if not path.is_file():
            raise FetchError(f"--configfile {name}: no such file")
        update_config(config, yaml.safe_load(path.read_text()) or {})
    try:
        validate(config, str(SCHEMA), set_default=True)
    except Exception as exc:  # snakemake's WorkflowError, with jsonschema's message
        raise FetchError(f"{', '.join(configfiles) or DEFAULT_CONFIG}: {exc}") from None
    return config


def _entries(config: dict):
    """(config key of the entry, model key, revision key, entry, files) of every model slot."""
    models = config.get("models", {})
    for role in ROLES:
        entry = models.get(role)
        if entry:
            files = entry.get("gguf_file") or "all"
            yield f"models.{role}", "model", "revision", entry, files
    if models.get("embedding"):
        yield "models.embedding", "model", "revision", models["embedding"], "all"
    for i, entry in enumerate(models.get("train") or []):
        yield f"models.train[{i}]", "model", "revision", entry, "all"
    for i, entry in enumerate(models.get("outside") or []):
        yield f"models.outside[{i}]", "model", "revision", entry, "all"
    if config.get("mixtures", {}).get("tokenizer"):
        yield "mixtures", "tokenizer", "tokenizer_revision", config["mixtures"], "tokenizer"
    embedding = config.get("diversity", {}).get("embedding")
    if embedding:
        yield "diversity.embedding", "model", "revision", embedding, "all"


def models_of(config: dict) -> tuple[list[HubModel], list[Skipped]]:
    """The hub models of a (validated) config, one per repository and revision, in config
    order, and the model slots that need no download."""
    found: dict[tuple, HubModel] = {}
    skipped = []
    for where, model_key, revision_key, entry, files in _entries(config):
        model, key = entry[model_key], f"{where}.{model_key}"
        if entry.get("backend") == "openai":
            skipped.append(Skipped(key, model, f"served at {entry.get('base_url')} (openai)"))
            continue
        if model.startswith(PACKAGE_PREFIX):
            skipped.append(Skipped(key, model, "installed Python package"))
            continue
        repo = hub_repo(model)
        if repo is None:
            there = "local folder" if Path(model).exists() else "local path, missing here"
            skipped.append(Skipped(key, model, there))
            continue
        revision = entry.get(revision_key)
        item = found.setdefault((repo, revision), HubModel(repo, revision, files=files))
        item.keys.append(key)
        item.revision_keys.append(f"{where}.{revision_key}")
        if item.files != files:  # the whole repository serves every use
            item.files = "all"
    return list(found.values()), skipped


def plan_text(models: list[HubModel], skipped: list[Skipped], hub: dict) -> str:
    """What fetch-models will download, and where."""
    lines = [f"hub cache: {hub_cache(hub)} (config key models.hub.home)"]
    rows = [("config key", "model", "revision", "files")]
    rows += [
        (m.named, m.repo, m.revision or "main (unpinned)", m.files if m.files != "all" else "")
        for m in models
    ]
    rows += [(s.key, s.model, "-", f"not downloaded: {s.why}") for s in skipped]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
    return "\n".join(line.rstrip() for line in lines)


class Hub:
    """The few huggingface_hub calls fetch-models makes (tests pass a stand-in)."""

    def __init__(self):
        try:
            import huggingface_hub
            from huggingface_hub import errors
        except ImportError:
            raise FetchError(
                "fetch-models needs huggingface_hub, which this environment lacks: "
                "`pip install huggingface_hub` into it, or run the main job environment's "
                "synthllm (.venv/bin/synthllm here; on a cluster the conda env of "
                "envs/main.yaml under .snakemake/conda)"
            ) from None
        self.hf = huggingface_hub
        self.errors = errors

    def token(self) -> str | None:
        return self.hf.get_token()

    def commit(self, repo: str, revision: str | None, token: str | None) -> str:
        """The commit `revision` is at; raises the hub's errors (gated, not found)."""
        self.hf.auth_check(repo, token=token)
        return self.hf.model_info(repo, revision=revision, token=token).sha

    def download(self, model: HubModel, cache: Path, ignore: list, token: str | None) -> Path:
        kwargs = {"ignore_patterns": ignore}
        if model.files == "tokenizer":
            kwargs = {"allow_patterns": TOKENIZER_FILES}
        elif model.files != "all":  # one GGUF file and the configs beside it
            kwargs = {"allow_patterns": [model.files, *TOKENIZER_FILES]}
        path = self.hf.snapshot_download(
            model.repo, revision=model.revision, cache_dir=cache, token=token, **kwargs
        )
        return Path(path)


def access_problem(model: HubModel, exc: Exception, errors, token: str | None) -> str:
    """One line on why `model` cannot be fetched, naming its config keys."""
    page = f"https://huggingface.co/{model.repo}"
    if isinstance(exc, errors.GatedRepoError):
        if not token:
            return (
                f"{model.named}: {model.repo} is a gated model and no Hugging Face token is "
                f"set: accept its licence at {page}, then `export HF_TOKEN=...` in this "
                "shell only (or `hf auth login`) and rerun"
            )
        return (
            f"{model.named}: {model.repo} is a gated model and the account of your token "
            f"(HF_TOKEN or `hf auth login`) has no access: accept its licence at {page}, "
            "wait for the approval, and rerun"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return (
            f"{', '.join(model.revision_keys)}: {model.repo} has no revision "
            f"{model.revision!r} (a commit, tag or branch of {page})"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        private = "" if token else "; if it is private, set HF_TOKEN"
        return f"{model.named}: no model {model.repo} on the hub{private}"
    if isinstance(exc, errors.HfHubHTTPError):
        return f"{model.named}: {model.repo}: {exc}"
    return (
        f"{model.named}: the hub cannot be reached from this node ({type(exc).__name__}: "
        f"{exc}): run fetch-models where there is internet, e.g. on a login node"
    )


@dataclass(frozen=True)
class Fetched:
    model: HubModel
    commit: str
    path: Path
    gigabytes: float


def _size_gb(folder: Path) -> float:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return total / 1e9


def fetch(models: list[HubModel], hub: dict, client: Hub) -> list[Fetched]:
    """Check every model's access (all problems at once, before any download), then
    download each into the cache of config key models.hub."""
    token = client.token()
    problems = []
    for model in models:
        try:
            client.commit(model.repo, model.revision, token)
        except Exception as exc:
            problems.append(access_problem(model, exc, client.errors, token))
            if not isinstance(exc, client.errors.HfHubHTTPError):
                break  # no hub here: the other models would say the same
    if problems:
        raise FetchError("; ".join(problems))
    cache = hub_cache(hub)
    fetched = []
    for model in models:
        print(
            f"fetching {model.repo} at {model.revision or 'main'} ({model.named}) ...", flush=True
        )
        try:
            path = client.download(model, cache, list(hub.get("ignore_patterns", [])), token)
        except Exception as exc:
            raise FetchError(access_problem(model, exc, client.errors, token)) from None
        fetched.append(Fetched(model, path.name, path, _size_gb(path)))
        print(f"  staged: {path} ({fetched[-1].gigabytes:.1f} GB)", flush=True)
    return fetched


def summary_text(fetched: list[Fetched]) -> str:
    lines = [f"{len(fetched)} model(s) staged, {sum(f.gigabytes for f in fetched):.1f} GB"]
    unpinned = [f for f in fetched if not f.model.revision]
    if unpinned:
        lines.append(
            "unpinned (fetched at main): pin these commits in the config, so that every "
            "job and every later fetch uses the same weights (a rerun downloads nothing new):"
        )
        for f in unpinned:
            lines += [f"  {key}: {f.commit}" for key in f.model.revision_keys]
    return "\n".join(lines)


def main(configfile: list | None = None, dry_run: bool = False) -> None:
    """`synthllm fetch-models`: see the module docstring."""
    config = load_config(configfile or [])
    hub = config["models"]["hub"]
    models, skipped = models_of(config)
    print(plan_text(models, skipped, hub), flush=True)
    if dry_run or not models:
        return
    # online, into models.hub.home, with the user's own token file; before the import
    os.environ.update(hub_environment(hub, offline=False))
    print(summary_text(fetch(models, hub, Hub())))
