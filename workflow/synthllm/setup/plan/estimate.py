"""The pure arithmetic of `synthllm plan`: the sizes a config implies, the work of each
job (tokens, GPU-hours, loads, disk) and one row per stage."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from synthllm.setup.plan.rates import (
    BENCHMARK_RECORDS,
    CORPUS_DOCS,
    EMBED_DIM,
    EMBED_DIM_DEFAULT,
    ENGINES,
    FILTERED_DOCS,
    JUDGE_PROMPT_TOKENS,
    PREFILL_COST,
    RECORD_BYTES,
    TOPICS_PER_DOC,
    load_minutes,
    params_b,
    tokens_per_s,
)
from synthllm.stages import STAGES

SHARD_GROUPED = {command.name for command in STAGES if command.shard_grouped}


@dataclass(frozen=True)
class Job:
    """One planned job: its rule, wildcards and what it asks the scheduler for."""

    rule: str
    wildcards: dict = field(default_factory=dict)
    gpus: int = 0
    runtime_min: float = 0  # at the first attempt
    mem_mb: float = 0
    threads: int = 1


@dataclass
class Work:
    """What one job does: tokens through a model (`kind` generate, train or forward; none
    for CPU work), engine loads and bytes written."""

    kind: str | None = None
    model: str | None = None
    tokens: float = 0
    loads: float = 0
    disk: float = 0
    scratch: float = 0  # peak bytes while running, removed at the end (DeepSpeed checkpoints)


def gpu_hours(jobs) -> float:
    """Sum over jobs of GPUs x runtime limit (minutes), in hours."""
    return sum(j.gpus * j.runtime_min for j in jobs) / 60


def estimate_gpu_hours(tokens: float, rate: float | None, loads: float, gpus: int, load_min):
    """GPU-hours of `tokens` at `rate` tokens/s per GPU plus `loads` engine starts of
    `load_min` minutes on `gpus` GPUs each; None when the rate is unknown."""
    if rate is None:
        return None
    return tokens / rate / 3600 + loads * gpus * load_min / 60


@dataclass
class Sizes:
    """Record counts of the whole run, from the config and the assumptions above."""

    corpus_docs: int
    filtered_docs: int
    l3_sets: int
    questions: dict  # level -> questions
    benchmark_records: int
    notes: list = field(default_factory=list)


def sizes(config: dict, corpus_docs: int | None, benchmark_records: int | None) -> Sizes:
    """The record counts of a config: `corpus_docs` and `benchmark_records` are counted from
    the files when they are here (None: the tables above)."""
    notes = []
    gen, n_shards = config["generation"], config["corpus"]["n_shards"]
    if corpus_docs is None:
        corpus_docs = CORPUS_DOCS
        notes.append(
            f"corpus: {CORPUS_DOCS:,} documents assumed (FineWeb-Edu, 1.3T tokens at ~1,000 per "
            "document); the sources' files are not here to count"
        )
    filtered = min(corpus_docs, FILTERED_DOCS)
    if gen["max_docs_per_shard"]:
        filtered = min(filtered, gen["max_docs_per_shard"] * n_shards)
    notes.append(
        f"filter keeps {filtered:,} documents (the paper's ~520K, at most the corpus and "
        "generation.max_docs_per_shard)"
    )
    subsets, epochs = config["graph"]["subsets"], config["graph"]["walks"]["epochs"]
    topics = max(1, round(filtered / subsets * TOPICS_PER_DOC))
    sets = subsets * epochs * topics
    if gen["level3"]["max_sets_per_shard"]:
        sets = min(sets, gen["level3"]["max_sets_per_shard"] * n_shards)
    notes.append(
        f"Level-3: {subsets} subsets x {epochs} walk epochs x {topics:,} topics "
        f"(~{TOPICS_PER_DOC:.2f} per document, paper: 32K per graph) = {sets:,} concept sets"
    )
    questions = {
        "level1": filtered * gen["level1"]["questions_per_doc"],
        "level2": filtered * gen["level2"]["questions_per_doc"],
        "level3": sets * gen["level3"]["questions_per_set"],
    }
    if benchmark_records is None:
        cap = config["evaluate"]["max_records"]
        benchmark_records = sum(
            min(n, cap) if cap else n
            for name, n in BENCHMARK_RECORDS.items()
            if name in config["evaluate"]["benchmarks"]
        )
        notes.append(f"benchmarks: {benchmark_records:,} problems (the harness's test sets)")
    return Sizes(corpus_docs, filtered, sets, questions, benchmark_records, notes)


def _lookup(config: dict, key: str) -> dict:
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def experiment_of(job: Job, config: dict) -> str | None:
    """The experiment whose chain (rules/common.smk Chain) a job of a main-chain rule runs
    in: the first folder of the chain's root under the results; None in the main chain."""
    chain = job.wildcards.get("chain")
    if chain is None or chain == config["results"]:
        return None
    return Path(chain).relative_to(config["results"]).parts[0]


def engine_loads(rule: str, config: dict) -> float:
    """1 when a job of the rule starts an LLM engine (not for an API model), else 0; 1/k for
    a shard job that runs with k - 1 others in one allocation on one engine
    (generation.shards_per_job, synthllm.stages.Command.shard_grouped)."""
    key = ENGINES.get(rule)
    loads = int(bool(key) and _lookup(config, key).get("backend", "vllm") != "openai")
    if rule in SHARD_GROUPED and config["generation"]["engine_keepalive_s"]:
        return loads / config["generation"]["shards_per_job"]
    return loads


def work_of(job: Job, config: dict, s: Sizes) -> Work | None:
    """What one job does; None for a rule without a size model here (the experiments,
    their chains included)."""
    rule = job.rule
    if experiment_of(job, config) is not None:
        return None
    n_shards = config["corpus"]["n_shards"]
    gen, models, b = config["generation"], config["models"], RECORD_BYTES
    per_shard = s.filtered_docs / n_shards
    loads = engine_loads(rule, config)

    def generate(model_key, records, calls, sampling):
        return Work(
            "generate",
            _lookup(config, model_key)["model"],
            records * calls * sampling["max_tokens"],
            loads,
        )

    if rule == "all":
        return Work()
    if rule == "length_stats":  # a tokeniser pass over a sample, a table of four rows
        return Work()
    if rule == "corpus":
        return Work(disk=s.corpus_docs * b["document"])
    if rule in ("corpus_part", "corpus_limits", "corpus_shard"):
        # the corpus's scatter-gather: temporary files, removed once `corpus` has linked
        # the gathered shards under their final names (the disk above)
        return Work()
    if rule in ("embed", "embed_synthetic"):
        spec = models["embedding"]
        docs = (
            s.corpus_docs / n_shards
            if rule == "embed"
            else config["filter"]["synthetic"]["documents"]
        )
        dim = EMBED_DIM.get(spec["model"], EMBED_DIM_DEFAULT)
        return Work("forward", spec["model"], docs * spec["max_tokens"], disk=docs * dim * 4)
    if rule == "synthetic_docs":
        spec = config["filter"]["synthetic"]
        w = generate("models.generator", spec["documents"], 1, spec["sampling"])
        w.disk = spec["documents"] * b["document"]
        return w
    if rule == "rate":
        spec = config["filter"]["finegrained"]
        docs = spec["reference_sample"] + spec["random_sample"]
        w = generate("models.rater", docs, 1, spec["sampling"])
        w.disk = docs * b["score"]
        if models["rater"].get("backend") == "openai":  # tokens, no GPU time
            w.kind = "api"
        return w
    if rule in ("coldstart", "finegrained"):
        return Work(disk=s.corpus_docs * b["score"])
    if rule == "filter_docs":
        return Work(disk=per_shard * b["document"])
    if rule == "extract":
        w = generate("models.generator", per_shard, 1, gen["extract"]["sampling"])
        w.disk = per_shard * b["extract"]
        return w
    if rule in ("level1", "level2"):
        spec = gen[rule]
        w = generate("models.generator", per_shard, spec["calls_per_doc"], spec["sampling"])
        w.disk = s.questions[rule] / n_shards * b["question"]
        return w
    if rule in ("concept_graph", "graph_record"):
        return Work()
    if rule in ("walks", "level3_sets"):
        share = s.l3_sets / (config["graph"]["subsets"] if rule == "walks" else 1)
        return Work(disk=share * b["set"])
    if rule == "level3":
        spec = gen["level3"]
        sets = s.l3_sets / n_shards
        w = generate("models.generator", sets, spec["calls_per_set"], spec["sampling"])
        w.disk = s.questions["level3"] / n_shards * b["question"]
        return w
    total_questions = sum(s.questions.values())
    if rule == "answer":
        questions = total_questions / n_shards
        samples = gen["answer"]["verify"]["samples"]  # k answers per question when verified
        w = generate("models.answerer", questions, samples, gen["answer"]["sampling"])
        w.disk = questions * b["sample"]
        return w
    if rule == "decontam_judge":
        # at most top_k pairs per question (those below min_similarity are not sent): their
        # prompts' prefill in decoded-token equivalents, and the verdicts
        spec = config["decontam_judge"]
        pairs = total_questions * spec["top_k"]
        per_pair = spec["sampling"]["max_tokens"] + JUDGE_PROMPT_TOKENS * PREFILL_COST
        return Work(
            "generate",
            models["generator"]["model"],
            pairs * per_pair,
            loads,
            disk=pairs * b["score"],
        )
    if rule in ("dedup", "decontam", "sft_pool"):
        return Work(disk=total_questions * b["sample"])
    if rule == "mixture":
        return Work(disk=int(job.wildcards.get("budget", 0)) * b["sample"])
    if rule == "train_tokens":  # a CPU job: one mixture tokenised once
        return Work(disk=int(job.wildcards["budget"]) * b["sample_tokens"])
    train = {m["label"]: m for m in models["train"]}
    if rule == "outside_model":  # a tokenizer and links to the weights
        return Work()
    if rule == "evaluate" and job.wildcards["model"] not in train:  # a models.outside entry
        spec = {m["label"]: m for m in models["outside"]}[job.wildcards["model"]]
        tokens = s.benchmark_records * config["evaluate"]["max_new_tokens"]
        return Work("generate", spec["model"], tokens, loads, disk=s.benchmark_records * b["eval"])
    if rule in ("base_model", "train", "evaluate", "eval_nll"):
        spec = train[job.wildcards["model"]]
        billions = params_b(spec["model"]) or params_b(spec["label"]) or 0
        if rule == "base_model":
            return Work(disk=billions * 1e9 * 2)
        if rule == "train":
            training = {**config["train"], **spec.get("train", {})}
            samples = int(job.wildcards["budget"])
            tokens = samples * training["epochs"] * training["max_seq_len"]
            # bf16 weights; DeepSpeed checkpoints: bf16 weights + fp32 master and Adam m, v
            return Work(
                "train",
                spec["model"],
                tokens,
                disk=billions * 1e9 * 2,
                scratch=billions * 1e9 * 14 * training["keep_checkpoints"],
            )
        records = s.benchmark_records
        if rule == "evaluate":
            tokens = records * config["evaluate"]["max_new_tokens"]
            return Work("generate", spec["label"], tokens, loads, disk=records * b["eval"])
        return Work("forward", spec["model"], records * config["evaluate"]["nll"]["max_tokens"])
    if rule in ("eval_summary", "scaling", "filter_report"):
        return Work()
    return None


@dataclass
class Row:
    rule: str
    jobs: int = 0
    gpus: tuple = ()  # the distinct GPU counts per job
    limit_gpu_h: float = 0
    tokens: float = 0
    kind: str | None = None
    est_gpu_h: float | None = 0
    loads: float = 0
    disk: float = 0
    scratch: float = 0
    over_limit: int = 0  # jobs whose estimate exceeds their runtime limit
    modelled: bool = True


def plan_rows(jobs: list[Job], config: dict, s: Sizes) -> list[Row]:
    """One row per rule, in pipeline order (synthllm.stages), then any other rule; a rule's
    jobs in an experiment's chains are a row of their own, `rule [experiment]`."""
    rows: dict[str, Row] = {}
    gpus = defaultdict(set)
    train_labels = {m["model"]: m["label"] for m in config["models"]["train"]}
    for job in jobs:
        experiment = experiment_of(job, config)
        name = job.rule if experiment is None else f"{job.rule} [{experiment}]"
        row = rows.setdefault(name, Row(name))
        row.jobs += 1
        row.limit_gpu_h += gpu_hours([job])
        gpus[name].add(job.gpus)
        work = work_of(job, config, s)
        if work is None:
            row.modelled, row.est_gpu_h = False, None
            row.loads += engine_loads(job.rule, config)
            continue
        row.loads += work.loads
        row.disk += work.disk
        row.scratch = max(row.scratch, work.scratch)
        row.tokens += work.tokens
        row.kind = row.kind or work.kind
        if row.est_gpu_h is None:
            continue
        if not job.gpus or work.kind in (None, "api"):
            continue
        label = train_labels.get(work.model, job.wildcards.get("model"))
        rate = tokens_per_s(work.kind, work.model, label)
        est = estimate_gpu_hours(
            work.tokens, rate, work.loads, job.gpus, load_minutes(work.model, label)
        )
        if est is None:
            row.est_gpu_h = None
            continue
        row.est_gpu_h += est
        if est / job.gpus * 60 > job.runtime_min:
            row.over_limit += 1
    for rule, row in rows.items():
        row.gpus = tuple(sorted(gpus[rule]))
    order = {c.name: i for i, c in enumerate(STAGES)}
    return sorted(rows.values(), key=lambda r: (order.get(r.rule.split()[0], len(order)), r.rule))
