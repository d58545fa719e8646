"""The paper config is self-contained (issue 19, item 4): Snakemake layers config/paper.yaml
over config/default.yaml (the CPU demo), so every key the default sets must be set again by
the paper config, or a CPU value (float32, a 2 GiB KV cache, eager mode, 2 threads, the demo
corpus) leaks into the GPU cluster run. Real configs, no Snakemake run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate
from synthllm.setup.plan.dag import dag_jobs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "default.yaml"
PAPER = ROOT / "config" / "paper.yaml"
SCHEMA = ROOT / "config" / "schema.yaml"

# Keys config/default.yaml sets that config/paper.yaml deliberately leaves to it, because the
# default's value is right on the cluster too. Keep it short; each entry says why.
ALLOWED_DEFAULTS = {
    # gloo processes of a model with gpus 0 (rules/common.smk train_launcher); every paper
    # model trains on GPUs, one process per GPU, so the value is never read
    "train.cpu_processes": "read only for models.train entries with gpus 0",
}

FLOAT32 = {"float32", "fp32", "float", "torch.float32"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def effective_paper_config() -> dict:
    """As `snakemake --configfile config/paper.yaml` sees it: default.yaml (the Snakefile's
    configfile), paper.yaml merged over it, then validated with the schema's defaults filled
    in (rules/common.smk)."""
    config = load(DEFAULT)
    update_config(config, load(PAPER))
    validate(config, str(SCHEMA), set_default=True)
    return config


@pytest.fixture(scope="module")
def paper() -> dict:
    return effective_paper_config()


def leaf_paths(tree: dict, prefix: tuple = ()) -> list[tuple]:
    """Key paths of a config's values: a non-empty dict is descended, anything else (a list,
    a scalar, an empty dict) is one value."""
    paths = []
    for key, value in tree.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            paths.extend(leaf_paths(value, path))
        else:
            paths.append(path)
    return paths


def sets(tree: dict, path: tuple) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def keys_left_to_the_default(default: dict, paper: dict, allowed=ALLOWED_DEFAULTS) -> list[str]:
    """The default's leaf keys (dotted) that the paper config does not set, but for `allowed`."""
    return [
        ".".join(path)
        for path in leaf_paths(default)
        if not sets(paper, path) and ".".join(path) not in allowed
    ]


def lookup(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


# ---- structure: paper.yaml sets every key default.yaml sets ----------------------------


def test_paper_config_layered_over_the_default_validates_against_the_schema():
    config = effective_paper_config()  # raises a ValidationError naming the key
    assert config["software"]["deployment"] == "conda", "config key software.deployment"


def test_paper_config_sets_every_key_the_default_sets():
    leaked = keys_left_to_the_default(load(DEFAULT), load(PAPER))
    assert not leaked, (
        "config/paper.yaml leaves these config keys to config/default.yaml (CPU values): "
        f"{', '.join(leaked)}; set them in paper.yaml or add them to ALLOWED_DEFAULTS with why"
    )


def test_the_leak_check_catches_a_new_default_key_and_a_dropped_paper_key():
    """The check on modified copies of the real files: a CPU key added to default.yaml, and a
    key dropped from paper.yaml, are reported (beside whatever the real files leak)."""
    before = keys_left_to_the_default(load(DEFAULT), load(PAPER))
    default, paper = load(DEFAULT), load(PAPER)
    default["generation"]["cpu_only_knob"] = 2
    default["models"]["generator"]["new_engine_key"] = True
    default["new_section"] = {"threads": 2, "sources": ["demo"]}
    paper["models"]["answerer"].pop("max_model_len")
    added = [k for k in keys_left_to_the_default(default, paper) if k not in before]
    assert added == [
        "models.generator.new_engine_key",
        "models.answerer.max_model_len",
        "generation.cpu_only_knob",
        "new_section.threads",
        "new_section.sources",
    ]
    # a list at a leaf is one value: paper.yaml replacing it is enough
    assert "corpus.sources" not in keys_left_to_the_default(
        load(DEFAULT), {"corpus": {"sources": []}}
    )
    # an allow-listed key is not reported, though the paper config leaves it out
    allowed = {**ALLOWED_DEFAULTS, "generation.cpu_only_knob": "why"}
    assert "generation.cpu_only_knob" not in keys_left_to_the_default(default, paper, allowed)


def test_allow_listed_keys_are_default_keys_the_paper_config_leaves_unset():
    default_keys = {".".join(p) for p in leaf_paths(load(DEFAULT))}
    for key in ALLOWED_DEFAULTS:
        assert key in default_keys, f"ALLOWED_DEFAULTS: config key {key} is not in default.yaml"
        assert not sets(load(PAPER), tuple(key.split("."))), (
            f"ALLOWED_DEFAULTS: config key {key} is set by paper.yaml; drop it from the list"
        )


def test_training_cpu_processes_is_unread_because_every_paper_model_trains_on_gpus(paper):
    for model in paper["models"]["train"]:
        assert model["gpus"] > 0, (
            f"config key models.train[{model['label']}].gpus: 0 trains on CPU with "
            "train.cpu_processes, which paper.yaml leaves to the default (ALLOWED_DEFAULTS)"
        )


# ---- semantics of the effective paper config -------------------------------------------


def gpu_roles(config: dict) -> dict[str, dict]:
    """Every config entry a GPU job runs (dotted key -> entry): each dict with gpus > 0, and
    evaluate.nll, which runs on evaluate.engine's GPU (rules/11_evaluate.smk eval_nll)."""
    found = {}

    def walk(node, path):
        if isinstance(node, dict):
            if isinstance(node.get("gpus"), int) and node["gpus"] > 0:
                found[path] = node
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    walk(config, "")
    if config["evaluate"]["engine"]["gpus"] > 0:
        found["evaluate.nll"] = config["evaluate"]["nll"]
    return found


def test_the_paper_models_run_on_gpus(paper):
    roles = gpu_roles(paper)
    for key in ("models.generator", "models.answerer", "models.embedding", "evaluate.engine"):
        assert key in roles, f"config key {key}.gpus: 0 runs the paper's model on CPU"
    assert all(f"models.train[{i}]" in roles for i in range(len(paper["models"]["train"])))


def test_no_gpu_model_runs_in_float32(paper):
    for key, entry in gpu_roles(paper).items():
        if "dtype" in entry:
            assert entry["dtype"] not in FLOAT32, f"config key {key}.dtype: {entry['dtype']}"
    precision = paper["train"]["precision"]
    assert precision != "fp32", f"config key train.precision: {precision} on GPUs"
    for i, model in enumerate(paper["models"]["train"]):
        own = model.get("train", {}).get("precision", precision)
        assert own != "fp32", f"config key models.train[{i}].train.precision: {own}"


def vllm_gpu_engines(config: dict) -> dict[str, dict]:
    return {k: e for k, e in gpu_roles(config).items() if e.get("backend") == "vllm"}


def test_vllm_gpu_engines_capture_graphs_and_carry_no_cpu_kv_cache(paper):
    engines = vllm_gpu_engines(paper)
    assert {"models.generator", "models.answerer", "evaluate.engine"} <= set(engines)
    default = load(DEFAULT)
    cpu_kv = {lookup(default, f"{k}.kv_cache_gib") for k in ("models.generator", "evaluate.engine")}
    for key, engine in engines.items():
        assert engine["enforce_eager"] is False, f"config key {key}.enforce_eager: true on GPUs"
        assert engine["kv_cache_gib"] not in cpu_kv, (
            f"config key {key}.kv_cache_gib: {engine['kv_cache_gib']} is the CPU default's"
        )


def test_vllm_gpu_engines_fit_in_their_jobs_gpus(paper):
    for key, engine in vllm_gpu_engines(paper).items():
        assert engine["tensor_parallel_size"] <= engine["gpus"], (
            f"config key {key}.tensor_parallel_size: {engine['tensor_parallel_size']} GPUs per "
            f"engine, but the job asks for {engine['gpus']} ({key}.gpus)"
        )


def test_every_gpu_job_has_more_than_two_threads():
    """The jobs of the paper's DAG as Snakemake plans them (synthllm.setup.plan.dag), the
    experiments' targets included: what each GPU job asks SLURM for."""
    targets = ["all", "diversity", "ablation", "augmentation"]
    _, jobs = dag_jobs([str(PAPER)], targets, forceall=True)
    gpu_jobs = {}
    for job in jobs:
        if job.gpus > 0:
            gpu_jobs[job.rule] = min(job.threads, gpu_jobs.get(job.rule, job.threads))
    # extract, level1-3, answer, synthetic_docs, embed, evaluate, eval_nll, train and more
    assert len(gpu_jobs) >= 10, sorted(gpu_jobs)
    starved = {rule: threads for rule, threads in gpu_jobs.items() if threads <= 2}
    assert not starved, f"GPU jobs with at most 2 threads (rule: threads): {starved}"


def test_corpus_is_not_the_demo_corpus_and_positive_sources_are_its_own(paper):
    names = [s["name"] for s in paper["corpus"]["sources"]]
    for source in paper["corpus"]["sources"]:
        assert "demo_corpus" not in source["glob"], (
            f"config key corpus.sources[{source['name']}].glob: {source['glob']} (demo corpus)"
        )
    unknown = set(paper["filter"]["positive_sources"]) - set(names)
    assert not unknown, (
        f"config key filter.positive_sources: {sorted(unknown)} are not corpus.sources ({names})"
    )


def test_gpu_roles_use_no_demo_package_or_local_demo_model(paper):
    models = {f"{k}.model": e["model"] for k, e in gpu_roles(paper).items() if "model" in e}
    # the tokenizer of the GPU-trained models, with which the mixtures count tokens
    models["mixtures.tokenizer"] = paper["mixtures"]["tokenizer"]
    assert "models.generator.model" in models and "models.embedding.model" in models
    for key, model in models.items():
        assert not model.startswith("package:"), f"config key {key}: {model} (offline demo package)"
        assert not model.startswith("resources/models"), f"config key {key}: {model} (demo model)"


def test_results_go_to_results_paper(paper):
    assert paper["results"] == "results/paper", f"config key results: {paper['results']}"


# ---- the models evaluated as they are (models.outside: paper Tables 2 and 3) ------------

# the paper's comparison rows, by the trained model whose size group they sit in
PAPER_OUTSIDE = {
    "Llama-3.2-1B-Instruct": "1B",
    "Llama-3.2-3B-Instruct": "3B",
    "Llama-3.1-8B-Instruct": "8B",
    "Llama-3.1-70B-Instruct": "8B",
    "NuminaMath-7B-CoT": "8B",
    "NuminaMath-72B-CoT": "8B",
    "MAmmoTH2-8B-Plus": "8B",
    "JiuZhang3.0-8B": "8B",
    "OpenMath2-Llama3.1-8B": "8B",
}


def test_the_paper_config_evaluates_table_2_and_3s_comparison_models(paper):
    outside = {m["label"]: m for m in paper["models"]["outside"]}
    assert {label: m["group"] for label, m in outside.items()} == PAPER_OUTSIDE
    # Table 3's Instruct rows: one per model of the Level ablation
    assert {m["group"] for m in outside.values() if "Instruct" in m["label"]} >= set(
        paper["ablation"]["models"]
    )
    engine = paper["evaluate"]["engine"]
    for label, m in outside.items():
        gpus = m["gpus"] if m["gpus"] is not None else engine["gpus"]
        tp = m["tensor_parallel_size"] or engine["tensor_parallel_size"]
        assert 1 <= tp <= gpus, f"config key models.outside[{label}]: {tp} GPUs of {gpus}"
        if "70B" in label or "72B" in label:  # 140 GB of bf16 weights
            assert tp >= 4, f"config key models.outside[{label}].tensor_parallel_size: {tp}"
    table2 = paper["evaluate"]["table2"]
    assert table2["budgets"] == [3_200_000, 7_400_000] and table2["metric"] == "accuracy_harness"
    assert set(table2["budgets"]) <= set(paper["mixtures"]["sample_counts"])


def test_the_paper_dag_evaluates_each_outside_model_once_on_its_gpus_without_nll(paper):
    _, jobs = dag_jobs([str(PAPER)], ["all"], forceall=True)
    outside = {m["label"]: m for m in paper["models"]["outside"]}
    staged = sorted(j.wildcards["outside"] for j in jobs if j.rule == "outside_model")
    assert staged == sorted(outside)
    evaluated = {j.wildcards["model"]: j for j in jobs if j.rule == "evaluate"}
    for label, m in outside.items():
        assert evaluated[label].wildcards["budget"] == "0"
        assert evaluated[label].gpus == (m["gpus"] or paper["evaluate"]["engine"]["gpus"])
    trained = [j for j in jobs if j.rule == "evaluate" and j.wildcards["model"] not in outside]
    assert len(trained) == len(paper["models"]["train"]) * (
        1 + len(paper["mixtures"]["sample_counts"])
    )
    # accuracy only: no NLL of another tokenizer
    assert not [j for j in jobs if j.rule == "eval_nll" and j.wildcards["model"] in outside]


def effective_cluster_test_config() -> dict:
    """config/test.yaml and config/cluster-test.yaml over the default, validated, as the
    end-to-end run on the local multi-node cluster sees them."""
    config = load(DEFAULT)
    for name in ("test.yaml", "cluster-test.yaml"):
        update_config(config, load(ROOT / "config" / name))
    validate(config, str(SCHEMA), set_default=True)
    return config


def test_the_cluster_test_config_has_the_paper_configs_resource_shape(paper):
    """What the end-to-end SLURM run checks the jobs against is the paper's layout."""
    shape = effective_cluster_test_config()
    for role in ("generator", "answerer", "embedding", "rater"):
        for key in ("gpus", "tensor_parallel_size"):
            if key in paper["models"][role]:
                assert shape["models"][role][key] == paper["models"][role][key], (role, key)
    assert shape["evaluate"]["engine"]["gpus"] == paper["evaluate"]["engine"]["gpus"]
    # the largest paper model: its nodes and ZeRO stage (2 processes per node, not 8)
    largest = max(paper["models"]["train"], key=lambda m: m["nodes"])
    (trained,) = shape["models"]["train"]
    assert trained["nodes"] == largest["nodes"] == 2 and trained["gpus"] >= 2
    assert trained["train"]["zero_stage"] == largest["train"]["zero_stage"]
    # an outside model on as many GPUs as the paper's largest ones
    widest = max(paper["models"]["outside"], key=lambda m: m.get("gpus") or 0)
    (outside,) = shape["models"]["outside"]
    assert (outside["gpus"], outside["tensor_parallel_size"]) == (
        widest["gpus"],
        widest["tensor_parallel_size"],
    )
    for kind in ("gpu", "cpu"):
        assert shape["resources"]["scheduler"][kind]["partition"] == kind
