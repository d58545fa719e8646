# Config validation, environment selection and input functions shared by every stage.
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from functools import cache
from glob import glob
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../config/schema.yaml", set_default=True)

RESULTS = config["results"]
WORKFLOW_DIR = Path(workflow.basedir)


sys.path.insert(0, str(WORKFLOW_DIR / "workflow"))
from synthllm.settings import schema_node, split
from synthllm.stages.corpus_parts import PART_PATTERN, part_groups
from synthllm.settings import stage_settings as settings_of
from synthllm.stages import STAGES

# the stages that resume a killed job from what it wrote (job_resources)
RESUMABLE_STAGES = {command.name for command in STAGES if command.resumable}


@dataclass
class Chain:
    """One instance of the main chain's stage rules, under its own root folder: the paths of
    a chain rule start with the `{chain}` wildcard, this root. The main chain's root is the
    results folder; an experiment (rules/experiments/) registers a chain for what it runs
    again on other inputs or with other settings, and says only what differs:
    - `inputs`: {stage: {input name: path}} in place of the main chain's (a path may hold
      the job's wildcards, e.g. {budget});
    - `jobs`: {stage: function of the wildcards} in place of the rule's `job` (stage_params):
      the settings that differ, over the rule's own."""

    root: str
    inputs: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)


CHAINS = {}


def register_chain(chain):
    if chain.root in CHAINS:
        raise WorkflowError(f"two chains have the root {chain.root}")
    CHAINS[chain.root] = chain


register_chain(Chain(RESULTS))


def chain_of(wildcards):
    return CHAINS[wildcards.chain]


def chain_roots():
    """The `{chain}` wildcard's constraint, set in the Snakefile once every chain is
    registered: exactly the registered roots, longest first."""
    roots = sorted(CHAINS, key=len, reverse=True)
    return "|".join(re.escape(root) for root in roots)


def chain_inputs(stage, **inputs):
    """A chain rule's inputs (for `unpack`): the main chain's `inputs` (paths under the
    {chain} root, or any path), with the chain's own in their place."""

    def chain_input(wildcards):
        values = {**inputs, **chain_of(wildcards).inputs.get(stage, {})}
        return {name: _formatted(value, wildcards) for name, value in values.items()}

    return chain_input


def _formatted(value, wildcards):
    if isinstance(value, str):
        return value.format(**dict(wildcards.items()))
    return [_formatted(item, wildcards) for item in value]


def stage_params(stage, *merge, env="main", job=None, job_execution=None, command=None, **named):
    """The params of a job of `synthllm <stage>` (see synthllm.stages): its settings, the
    config keys in `merge` and `named` (synthllm.settings.stage_settings) plus what `job`
    (a function of the wildcards; in a registered chain, the chain's own) adds, and what
    only says how the job runs: the execution knobs (with the parts `job_execution`, a
    function of the wildcards, replaces for one job, e.g. an outside model's GPUs), the
    paths and the command (`command(wildcards, threads)`, default `python -m synthllm
    <stage>` in the environment `env`), in one command line. Only the settings are a
    rerun trigger: Snakemake does not record a params function that takes threads, input or output.
    Snakemake calls these functions for every job when it plans: what does not depend on
    the job (the settings of a main-chain rule without `job`, python_env) is computed once."""
    settings, execution = settings_of(config, *merge, **named)
    rule_settings = json.dumps(settings, sort_keys=True)

    def settings_json(wildcards):
        chain = CHAINS.get(wildcards.get("chain"))
        job_settings = (chain.jobs.get(stage) if chain else None) or job
        if job_settings is None:
            return rule_settings
        return json.dumps({**settings, **job_settings(wildcards)}, sort_keys=True)

    launcher = command or (lambda wildcards, threads: f"{python_env(env)} -m synthllm {stage}")

    def command_line(wildcards, input, output, threads):
        job_knobs = job_execution(wildcards) if job_execution else {}
        return " ".join(
            [
                launcher(wildcards, threads),
                "--inputs",
                shlex.quote(json.dumps(dict(input.items()))),
                "--outputs",
                shlex.quote(json.dumps(dict(output.items()))),
                "--execution",
                # the staged model cache every job reads offline (synthllm fetch-models)
                shlex.quote(
                    json.dumps(
                        {
                            **execution,
                            **job_knobs,
                            "threads": threads,
                            "hub": config["models"]["hub"],
                        },
                        sort_keys=True,
                    )
                ),
            ]
        )

    # two functions, not one per argument: Snakemake inspects each params function's
    # signature for every job it plans
    return {"settings": settings_json, "command": command_line}


# the shell of every stage rule: its command line and its settings (stage_params)
STAGE_SHELL = "{params.command} --settings {params.settings:q} > {log} 2>&1"


def check_deployment():
    """Before the first job (onstart, not in a dry run): a conda deployment (config
    software.deployment: conda, as on clusters) needs `--sdm conda`, which the SLURM profile
    sets; without it every job would run whatever `python` is first on PATH."""
    methods = {str(m).lower() for m in workflow.deployment_settings.deployment_method}
    if config["software"]["deployment"] == "conda" and "conda" not in methods:
        raise WorkflowError(
            "config key software.deployment is conda, but snakemake runs without "
            "--software-deployment-method conda (--sdm conda): the jobs would run whatever "
            "python is on PATH. Run with --profile slurm (it sets it) or add --sdm conda; "
            "for this machine's venvs set software.deployment: venv"
        )


@cache  # the same for every job of a kind
def python_env(kind):
    """Shell prefix that runs the Python of a rule kind with this workflow's package.

    The package is imported from this workflow's source tree (PYTHONPATH), so the same
    code runs in a local venv or in a conda env built from envs/<kind>.yaml. Paths are
    relative to the working folder so that a rule's params do not change when the
    checkout moves (params changes trigger reruns).
    """
    software = config["software"]
    if software["deployment"] == "conda":
        python = "python"
    else:
        venv = software["venvs"][kind]
        python = WORKFLOW_DIR / venv / "bin" / "python"
        if not python.exists():
            raise WorkflowError(
                f"config key software.venvs.{kind}: {python} does not exist; run ./install.sh "
                "(or set software.deployment: conda and run snakemake with --sdm conda)"
            )
        python = os.path.relpath(python)
    return f"PYTHONPATH={os.path.relpath(WORKFLOW_DIR / 'workflow')} {python}"


wildcard_constraints:
    shard=r"\d{5}-of-\d{5}",
    part=PART_PATTERN,
    subset=r"\d{3}-of-\d{3}",
    budget=r"\d+",
    mixture=r"[A-Za-z0-9_]+",


def shard_ids():
    n = config["corpus"]["n_shards"]
    return [f"{i:05d}-of-{n:05d}" for i in range(n)]


def corpus_shards():
    return [f"{RESULTS}/corpus/shard-{s}.parquet" for s in shard_ids()]


# the documents questions are generated from: the filtered shard (rules/02_filter.smk), the
# main chain's; CHAIN_REFERENCE_DOCS is the same path under a chain rule's {chain} root
REFERENCE_DOCS = f"{RESULTS}/filter/docs/shard-{{shard}}.parquet"
CHAIN_REFERENCE_DOCS = "{chain}/filter/docs/shard-{shard}.parquet"
# the question levels every answer job reads
LEVELS = ["level1", "level2", "level3"]


def embedding_files():
    return [f"{RESULTS}/filter/embed/shard-{s}.npy" for s in shard_ids()]


def filter_scores(iteration):
    """Scores of every corpus document at an iteration (0: the cold-start classifier)."""
    return f"{RESULTS}/filter/iter-{iteration}/scores.parquet"


def filter_iterations():
    return range(1, config["filter"]["finegrained"]["iterations"] + 1)


def all_filter_scores():
    return [filter_scores(t) for t in [0, *filter_iterations()]]


def filter_reports():
    return [f"{RESULTS}/filter/iter-{t}/report.json" for t in [0, *filter_iterations()]]


def filter_rate_counts():
    return [f"{RESULTS}/filter/iter-{t}/ratings.counts.json" for t in filter_iterations()]


def filter_ratings_through(wildcards):
    """The ratings of iterations 1..t: the regressor of iteration t trains on all of them."""
    return [
        f"{RESULTS}/filter/iter-{t}/ratings.parquet" for t in range(1, int(wildcards.iteration) + 1)
    ]


def rate_inputs(wildcards):
    """What iteration t rates from: D(t-1)'s scores, and the earlier ratings (not re-rated)."""
    t = int(wildcards.iteration)
    return {
        "previous_scores": filter_scores(t - 1),
        "previous_ratings": [f"{RESULTS}/filter/iter-{i}/ratings.parquet" for i in range(1, t)],
    }


def subset_ids():
    """The Level-3 graph subsets (config key graph.subsets)."""
    n = config["graph"]["subsets"]
    return [f"{i:03d}-of-{n:03d}" for i in range(n)]


def all_reference_docs():
    """The reference documents of every shard (Level-3 sets draw theirs from any shard): a
    list, not an input function; Snakemake would make and check every one of its files as
    an input function's result, for each of the (n_shards) jobs that read them all."""
    return expand(REFERENCE_DOCS, shard=shard_ids())


# the corpus's scatter jobs (rules/01_corpus.smk), from the files the sources match now: one
# per corpus.files_per_job files of a source (synthllm.stages.corpus_parts); a source
# matching no file gets a job that fails naming it, unless it is optional
CORPUS_PARTS = {
    part["id"]: part
    for part in part_groups(config["corpus"]["sources"], config["corpus"]["files_per_job"])
}
# the sources with max_docs: their cutoffs come from the corpus_limits job
CORPUS_MAX_DOCS = [source.get("max_docs") for source in config["corpus"]["sources"]]


def corpus_part_files(kind, parts=None):
    """The scatter jobs' part files (kind "arrow") or counts ("json"), in corpus order."""
    return [f"{RESULTS}/corpus_parts/{part}.{kind}" for part in parts or CORPUS_PARTS]


def corpus_part_job(wildcards):
    """A scatter job's own settings: its source's config entry (but max_docs, which only the
    limits job reads) and where its files start among the source's."""
    part = CORPUS_PARTS[wildcards.part]
    index = part["source_index"]
    entry = config["corpus"]["sources"][index]
    return {
        "part": wildcards.part,
        "source_index": index,
        "first_file": part["first_file"],
        "source": {key: value for key, value in entry.items() if key != "max_docs"},
        "limited": entry.get("max_docs") is not None,
    }


def corpus_limited_parts():
    """The parts the limits job reads: those of the sources up to the last with max_docs."""
    last = max(i for i, m in enumerate(CORPUS_MAX_DOCS) if m is not None)
    return [p for p, part in CORPUS_PARTS.items() if part["source_index"] <= last]


def corpus_limits_input():
    """The limits job's cutoffs, for the jobs after it; none when no source has max_docs."""
    if all(m is None for m in CORPUS_MAX_DOCS):
        return {}
    return {"limits": f"{RESULTS}/corpus_parts/limits.json"}


def corpus_source_names():
    return [source["name"] for source in config["corpus"]["sources"]]


if "all" not in config["mixtures"]["sets"]:
    raise WorkflowError("config key mixtures.sets: needs the mixture `all` (the training ladder)")


def budgets():
    """The training budgets in samples (config key mixtures.sample_counts), ascending."""
    return sorted(set(config["mixtures"]["sample_counts"]))


def scaling_outputs():
    """The scaling stage's fits, tables and figures (the HTML report collects them)."""
    names = ["fits.json", "counts.json"] + [
        f"{name}.{ext}"
        for name, exts in (
            ("fits", "csv md"),
            ("heldout", "csv md"),
            ("extrapolation", "csv md"),
            ("fig1", "png pdf"),
            ("fig2", "png pdf"),
            ("fig7", "png pdf"),
        )
        for ext in exts.split()
    ]
    return [f"{RESULTS}/scaling/{n}" for n in names]


def eval_dirs():
    """Every checkpoint's eval folder: each model of config models.train at budget 0 (the
    base model) and at every training budget."""
    return [f"{RESULTS}/eval/{m}/{b}" for m in train_labels() for b in [0] + budgets()]


def train_models():
    """Config key models.train by label."""
    return {m["label"]: m for m in config["models"]["train"]}


def train_labels():
    return list(train_models())


def checkpoint_dir(model, budget):
    """The HF folder of a model at a budget (budget 0: the untrained base model)."""
    return f"{RESULTS}/train/{model}/{budget}/final"


def train_launcher(wildcards, threads):
    """torchrun around `synthllm train`: on CPU (gpus: 0) `train.cpu_processes` gloo
    processes sharing the job's threads (each takes threads / processes, synthllm.stages.train);
    on GPUs one process per GPU; on several nodes `srun` starts one torchrun per node with
    the job's CPUs (a step of its own, so SLURM's signal before the time limit reaches it,
    and one failed node ends the others), meeting at the first node (c10d rendezvous) on a
    port of the job's own, so that two jobs sharing a node do not collide. A function of
    threads: not a rerun trigger."""
    spec = train_models()[wildcards.model]
    nodes, gpus = spec["nodes"], spec["gpus"]
    python = python_env("main")
    if gpus == 0:
        procs = config["train"]["cpu_processes"]
        return (
            f"DS_ACCELERATOR=cpu {python} -m torch.distributed.run --standalone"
            f" --nproc_per_node {procs} -m synthllm train"
        )
    if nodes == 1:
        return (
            f"{python} -m torch.distributed.run --standalone --nproc_per_node {gpus}"
            " -m synthllm train"
        )
    # the job's nodes from the controller: the SLURM plugin's job step passes the job's ID
    # to the rule's shell but none of its other SLURM_ variables (no SLURM_JOB_NODELIST)
    head = '$(scontrol show hostnames "$(squeue -h -j "$SLURM_JOB_ID" -o %N)" | head -n1)'
    port = "$((20000 + SLURM_JOB_ID % 20000))"
    return (
        f"srun --nodes {nodes} --ntasks-per-node 1 --cpus-per-task {threads}"
        f" --kill-on-bad-exit=1 env {python} -m torch.distributed.run"
        f" --nnodes {nodes} --nproc_per_node {gpus} --rdzv-id $SLURM_JOB_ID"
        f" --rdzv-backend c10d --rdzv-endpoint {head}:{port} -m synthllm train"
    )


def clean_questions():
    """The decontaminated questions the mixtures read: the n-gram rule's, or with config
    decontam_judge.enabled the judge's second opinion on them."""
    stage = "decontam_judge" if config["decontam_judge"]["enabled"] else "decontam"
    return f"{{chain}}/{stage}/questions.parquet"


def final_outputs():
    """What `snakemake` with no target builds: the whole chain, ending in the scaling fits,
    tables and figures (which need every checkpoint's evaluation), and the graph of record
    of each Level-3 subset (nothing else reads it)."""
    return [
        f"{RESULTS}/corpus/counts.json",
        f"{RESULTS}/filter/report.json",
        *expand(f"{RESULTS}/graph/subset-{{subset}}/graph.counts.json", subset=subset_ids()),
        f"{RESULTS}/decontam/report.json",
        f"{RESULTS}/mixtures/length_stats.csv",
        f"{RESULTS}/eval/summary.parquet",
    ] + scaling_outputs()


# the generation rules with one job per shard: on SLURM, config generation.shards_per_job of
# their jobs run in one allocation, one after another (a Snakemake job group named after the
# rule, that many components), sharing one engine (generation.engine_keepalive_s)
SHARD_GENERATION_RULES = tuple(command.name for command in STAGES if command.shard_grouped)
# the local-scoped resource that makes a group's jobs run one after another: each asks for
# one and a group job holds one (registered in the Snakefile), so its GPUs and memory are
# one job's and its runtime the sum of its jobs'
ENGINE_JOBS = "engine_jobs"


def shards_per_job():
    """Config generation.shards_per_job, checked against what makes it useful."""
    k = config["generation"]["shards_per_job"]
    if k > 1 and not config["generation"]["engine_keepalive_s"]:
        raise WorkflowError(
            f"config key generation.shards_per_job is {k} but generation.engine_keepalive_s "
            "is 0: every job of a group would load its own engine; set a keepalive (e.g. 300)"
        )
    return k


def shard_group(rule):
    """The job group of a shard-wise generation rule's jobs, or None (each job its own).

    Its size, generation.shards_per_job, is the group's number of components (the shard
    jobs are independent: one component each). Snakemake takes group components from its
    command line, which it reads after this file, so the size is set when the first job's
    group is asked for, before the groups are formed; --group-components for other groups
    stay. The jobs of a group run one after another: each asks for one ENGINE_JOBS, a
    local-scoped resource of which a group job has one (registered in the Snakefile)."""
    if shards_per_job() == 1:
        return None

    def group(wildcards):
        settings = workflow.group_settings  # None while Snakemake checks the workflow
        components = (settings.group_components or {}) if settings else {}
        if settings is not None and components.get(rule) != shards_per_job():
            settings.group_components = {
                **components,
                **{name: shards_per_job() for name in SHARD_GENERATION_RULES},
            }
        return rule

    return group


def job_resources(rule, gpus=0, nodes=1):
    """Scheduler resources of a rule's jobs (config key resources): memory and runtime from
    resources.default or resources.rules.<rule>; the GPUs of each node (`gpus`, a number or a
    function of the wildcards, of the config's GPU type) on `nodes` nodes (the same); the
    kind's partition, account, qos, constraint and flags (resources.scheduler); one task, or
    one per node for a multi-node job (whose command starts its own srun, see
    train_launcher). A retry of a job that cannot resume asks for attempt x the memory and
    runtime, up to the kind's caps; a resumable one (synthllm.stages) asks for the same
    again, and SLURM signals it resources.signal_s before its limit, so it stops cleanly.
    Values where gpus and nodes are numbers: Snakemake calls a function for every job."""
    spec = {**config["resources"]["default"], **config["resources"]["rules"].get(rule, {})}
    resumable = rule in RESUMABLE_STAGES

    def limits(kind):
        caps = config["resources"]["scheduler"][kind]
        for key, cap_key in (("mem_mb", "max_mem_mb"), ("runtime", "max_runtime")):
            if caps[cap_key] is not None and spec[key] > caps[cap_key]:
                raise WorkflowError(
                    f"config key resources.rules.{rule}.{key} (or resources.default.{key}): "
                    f"{spec[key]} is over resources.scheduler.{kind}.{cap_key} "
                    f"({caps[cap_key]}); no such job could be scheduled"
                )
        return caps

    def attempt_limit(key, cap_key, kind_of):
        def value(wildcards, attempt):
            cap = limits(kind_of(wildcards))[cap_key]
            grown = spec[key] if resumable else spec[key] * attempt
            return grown if cap is None else min(grown, cap)

        return value

    def layout(per_node, node_count):
        """What a job with `per_node` GPUs on each of `node_count` nodes asks for (None: the
        flag is left out)."""
        kind = "gpu" if per_node else "cpu"
        scheduler = config["resources"]["scheduler"][kind]
        gpu_model = config["resources"]["gpu_model"]
        flags = [scheduler["extra"]]
        if resumable and config["resources"]["signal_s"]:
            # to every job step (not the batch shell): the stage's own process
            flags.append(f"--signal=TERM@{config['resources']['signal_s']}")
        single = node_count == 1
        return {
            # sbatch --gpus is the job's total (--gpus=<model>:<n> with a model): one node
            "gpu": per_node if per_node and single else None,
            "gpu_model": gpu_model if per_node and single else None,
            # on several nodes, GPUs per node (--gres), so each node gets its share
            "gres": (
                None
                if single or not per_node
                else ":".join(["gpu", *([gpu_model] if gpu_model else []), str(per_node)])
            ),
            # the plugin adds --ntasks-per-gpu unless this is 0: an engine sees all its GPUs
            "tasks_per_gpu": 0,
            "nodes": node_count,
            "tasks": node_count,
            # a multi-node job's command runs its own srun, one launcher per node: the
            # plugin then does not wrap it in `srun -n1`, and allows several tasks
            "mpi": None if single else "srun",
            "slurm_partition": scheduler["partition"],
            "slurm_account": scheduler["account"],
            "qos": scheduler["qos"],
            "constraint": scheduler["constraint"],
            "slurm_extra": " ".join(f for f in flags if f) or None,
        }

    if not callable(gpus) and not callable(nodes):
        values = layout(gpus, nodes)
        kind = "gpu" if gpus else "cpu"
        limits(kind)  # a job over its caps fails the plan, not in the queue
        grouped = rule in SHARD_GENERATION_RULES and shards_per_job() > 1
        if grouped:
            group_runtime_fits(rule, spec["runtime"], limits(kind)["max_runtime"], kind)
        return {
            "mem_mb": attempt_limit("mem_mb", "max_mem_mb", lambda wildcards: kind),
            "runtime": attempt_limit("runtime", "max_runtime", lambda wildcards: kind),
            **{key: value for key, value in values.items() if value is not None},
            **({ENGINE_JOBS: 1} if grouped else {}),
        }
    per_node = gpus if callable(gpus) else (lambda wildcards: gpus)
    node_count = nodes if callable(nodes) else (lambda wildcards: nodes)
    job_layout = lambda wildcards: layout(per_node(wildcards), node_count(wildcards))
    kind_of = lambda wildcards: "gpu" if per_node(wildcards) else "cpu"
    # a function's None leaves the flag out, where a missing key lets the profile's
    # default-resources fill it in: a scheduler setting null for both kinds stays missing
    unset = {key for key, value in layout(0, 1).items() if value is None}
    unset &= {key for key, value in layout(1, 1).items() if value is None}
    unset -= {"gpu", "gpu_model", "gres", "mpi"}
    return {
        "mem_mb": attempt_limit("mem_mb", "max_mem_mb", kind_of),
        "runtime": attempt_limit("runtime", "max_runtime", kind_of),
        **{
            key: (lambda wildcards, key=key: job_layout(wildcards)[key])
            for key in layout(0, 1)
            if key not in unset
        },
    }


def group_runtime_fits(rule, runtime, max_runtime, kind):
    """A group of generation.shards_per_job jobs asks SLURM for their runtimes summed: fail
    the plan when that is over the kind's cap."""
    total = runtime * shards_per_job()
    if max_runtime is not None and total > max_runtime:
        raise WorkflowError(
            f"config key generation.shards_per_job: {shards_per_job()} jobs of rule {rule} "
            f"({runtime} min each, resources.rules.{rule}.runtime) ask for {total} min in one "
            f"allocation, over resources.scheduler.{kind}.max_runtime ({max_runtime})"
        )


def check_resource_rules():
    """Fail on a resources.rules or resources.local_rules entry that names no rule (it
    would be silently ignored)."""
    names = {r.name for r in workflow.rules}
    for key in ("rules", "local_rules"):
        unknown = sorted(set(config["resources"][key]) - names)
        if unknown:
            raise WorkflowError(
                f"config key resources.{key} names {', '.join(unknown)}, not among "
                f"this workflow's rules ({', '.join(sorted(names))})"
            )


# used by rules/09_mixtures.smk
def mixture_job(wildcards, size_key="mixtures.sample_counts"):
    """A mixture job's own settings: the set's name, size, levels and proportions (config
    mixtures.sets; null when the set leaves them out) and the config key that set the size,
    named when the pool is too small."""
    sets = config["mixtures"]["sets"]
    if wildcards.mixture not in sets:
        raise WorkflowError(f"mixture {wildcards.mixture!r} is not in config key mixtures.sets")
    spec = sets[wildcards.mixture]
    return {
        "name": wildcards.mixture,
        "samples": int(wildcards.budget),
        "levels": spec.get("levels"),
        "proportions": spec.get("proportions"),
        "size_key": size_key,
    }


# used by rules/10_train.smk
def train_model_settings(wildcards):
    """The entry of config models.train whose label is the model wildcard, without what only
    says how its jobs run (nodes, gpus: marked execution in the schema)."""
    spec, _ = split(train_models()[wildcards.model], schema_node("models.train")["items"])
    return spec


def train_settings(wildcards):
    """Config key train (its output-affecting keys) with the model's overrides."""
    spec = train_model_settings(wildcards)
    return {**settings_of(config, "train")[0], **spec.get("train", {})}


def train_tokens_settings(wildcards):
    """What changes a mixture's token ids and labels (synthllm.stages.train_tokens): the
    model's train.loss_on and train.max_seq_len; its tokenizer is the base model's."""
    training = train_settings(wildcards)
    return {key: training[key] for key in ("loss_on", "max_seq_len")}


# used by rules/11_evaluate.smk
# the benchmark files, sample and chat format every evaluation job of a checkpoint uses
EVAL_DATA = dict(
    benchmarks="evaluate.benchmarks",
    max_records="evaluate.max_records",
    seed="evaluate.seed",
    system_prompt="chat.system_prompt",
)


def eval_files(name):
    """One file of every checkpoint's eval folder (eval_dirs), in order."""
    return [f"{d}/{name}" for d in eval_dirs()]


# models evaluated as they are (config models.outside; rules/11_evaluate.smk)


def outside_models():
    """Config key models.outside by label: models evaluated as they are, never trained."""
    return {m["label"]: m for m in config["models"]["outside"]}


def check_outside_models():
    """The outside models' labels, groups and templates, and Table 2's budgets, checked
    when the workflow is parsed (a bad key fails the plan, not a job)."""
    entries = config["models"]["outside"]
    labels = [m["label"] for m in entries]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise WorkflowError(f"config key models.outside: labels {twice} appear more than once")
    clash = sorted(set(labels) & set(train_labels()))
    if clash:
        raise WorkflowError(
            f"config key models.outside: labels {clash} are labels of models.train too "
            "(both would be evaluated into eval/<label>/0)"
        )
    for i, entry in enumerate(entries):
        key = f"models.outside[{i}]"
        if entry["group"] is not None and entry["group"] not in train_models():
            raise WorkflowError(
                f"config key {key}.group: {entry['group']!r} is not a label of models.train "
                f"({', '.join(train_labels())})"
            )
        template = entry["chat_template"]
        if template is not None and not Path(template).is_file():
            raise WorkflowError(f"config key {key}.chat_template: {template} is not a file")
    unknown = sorted(set(config["evaluate"]["table2"]["budgets"] or []) - set(budgets()))
    if unknown:
        raise WorkflowError(
            f"config key evaluate.table2.budgets: {unknown} are not training budgets "
            f"(mixtures.sample_counts: {budgets()})"
        )


check_outside_models()


def outside_dir(label):
    """The staged folder an outside model is evaluated from (synthllm outside_model)."""
    return f"{RESULTS}/outside/{label}/final"


def outside_eval_files(name):
    """One file of every outside model's eval folder, in config order."""
    return [f"{RESULTS}/eval/{label}/0/{name}" for label in outside_models()]


def outside_settings(label):
    """What an outside model is: its entry without its layout (gpus, tensor_parallel_size:
    execution) and its table group (layout only): another revision or template is another
    model, and reruns its staging and evaluation."""
    spec, _ = split(outside_models()[label], schema_node("models.outside")["items"])
    return {k: v for k, v in spec.items() if k != "group"}


def is_outside_eval(wildcards):
    """Whether an evaluate job is an outside model's: eval/<label>/0 of the main chain."""
    return (
        wildcards.chain == RESULTS
        and wildcards.budget == "0"
        and wildcards.model in outside_models()
    )


def eval_checkpoint(wildcards):
    """An evaluate job's model: a trained checkpoint (and its training counts, for D), or an
    outside model's staged folder (D = 0: its training is not ours)."""
    if is_outside_eval(wildcards):
        return {"checkpoint": outside_dir(wildcards.model)}
    root = f"{wildcards.chain}/train/{wildcards.model}/{wildcards.budget}"
    return {"checkpoint": f"{root}/final", "train_counts": f"{root}/counts.json"}


def evaluate_job(wildcards):
    """An evaluate job's own settings: label and budget, and an outside model's entry."""
    job = {"label": wildcards.model, "budget": int(wildcards.budget)}
    if is_outside_eval(wildcards):
        job["outside"] = outside_settings(wildcards.model)
    return job


# the execution knobs of evaluate.engine, which an outside model's layout overrides
EVAL_ENGINE_EXECUTION = settings_of(config, engine="evaluate.engine")[1]["engine"]


def outside_layout(wildcards):
    """An outside model's own gpus and tensor_parallel_size (null: evaluate.engine's)."""
    if not is_outside_eval(wildcards):
        return {}
    entry = outside_models()[wildcards.model]
    return {key: entry[key] for key in ("gpus", "tensor_parallel_size") if entry[key] is not None}


def evaluate_execution(wildcards):
    """The engine's execution knobs with an outside model's layout over them."""
    layout = outside_layout(wildcards)
    return {"engine": {**EVAL_ENGINE_EXECUTION, **layout}} if layout else {}


def evaluate_gpus(wildcards):
    return outside_layout(wildcards).get("gpus", config["evaluate"]["engine"]["gpus"])


def table2_settings():
    """Table 2's layout (synthllm.stages.eval_summary): config key evaluate.table2 with its
    budgets resolved, the groups (models.train labels, in order) and each outside model's
    group."""
    table2 = config["evaluate"]["table2"]
    return {
        "metric": table2["metric"],
        "budgets": sorted(table2["budgets"] or budgets()),
        "groups": train_labels(),
        "outside": [[m["label"], m["group"]] for m in config["models"]["outside"]],
    }


def check_answer_verification():
    """Verification samples its answers: a greedy sampling with verify.samples > 1 fails the
    plan, not every answer job (synthllm.stages.answer checks it too, for direct runs)."""
    answer = config["generation"]["answer"]
    if answer["verify"]["samples"] > 1 and answer["sampling"]["temperature"] <= 0:
        raise WorkflowError(
            "config key generation.answer.sampling.temperature: verification "
            f"(generation.answer.verify.samples = {answer['verify']['samples']}) samples "
            "its answers and needs a temperature above 0"
        )


check_answer_verification()
