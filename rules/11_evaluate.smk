# Stage 11: every checkpoint (each model of config models.train at budget 0, the base model,
# and at every training budget) on the six benchmarks: generated answers graded two ways,
# the NLL of the reference solutions, and one summary table for the scaling stage; beside
# them the models of config models.outside, evaluated as they are (no NLL), and Table 2.


wildcard_constraints:
    outside=r"[A-Za-z0-9][A-Za-z0-9._-]*",


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


rule outside_model:
    output:
        final=directory(outside_dir("{outside}")),
        counts=f"{RESULTS}/outside/{{outside}}/counts.json",
    log:
        f"{RESULTS}/logs/outside/{{outside}}.log",
    conda:
        "../envs/main.yaml"
    threads: 1
    resources:
        **job_resources("outside_model"),
    params:
        **stage_params(
            "outside_model",
            job=lambda wildcards: {"model": outside_settings(wildcards.outside)},
        ),
    shell:
        STAGE_SHELL


rule evaluate:
    input:
        unpack(eval_checkpoint),
        benchmarks=list(config["evaluate"]["benchmarks"].values()),
    output:
        predictions="{chain}/eval/{model}/{budget}/predictions.parquet",
        settings="{chain}/eval/{model}/{budget}/settings.json",
        counts="{chain}/eval/{model}/{budget}/counts.json",
    log:
        "{chain}/logs/eval/{model}/{budget}.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("evaluate", evaluate_gpus),
    params:
        **stage_params(
            "evaluate",
            **EVAL_DATA,
            engine="evaluate.engine",  # backend, dtype, max_model_len; the rest: execution
            max_new_tokens="evaluate.max_new_tokens",
            grade_timeout_s="evaluate.grade_timeout_s",
            chunk_size="evaluate.chunk_size",
            job=evaluate_job,
            job_execution=evaluate_execution,
        ),
    shell:
        STAGE_SHELL


rule eval_nll:
    input:
        checkpoint="{chain}/train/{model}/{budget}/final",
        benchmarks=list(config["evaluate"]["benchmarks"].values()),
    output:
        nll="{chain}/eval/{model}/{budget}/nll.parquet",
        counts="{chain}/eval/{model}/{budget}/nll.counts.json",
    log:
        "{chain}/logs/eval/{model}/{budget}.nll.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("eval_nll", min(1, config["evaluate"]["engine"]["gpus"])),
    params:
        **stage_params(
            "eval_nll",
            **EVAL_DATA,
            nll="evaluate.nll",  # max_tokens, dtype; batch_size: execution
        ),
    shell:
        STAGE_SHELL


rule eval_summary:
    input:
        predictions=eval_files("predictions.parquet") + outside_eval_files("predictions.parquet"),
        settings=eval_files("settings.json") + outside_eval_files("settings.json"),
        nll=eval_files("nll.parquet"),
    output:
        summary=f"{RESULTS}/eval/summary.parquet",
        csv=report(
            f"{RESULTS}/eval/summary.csv",
            category="Evaluation",
            labels={"item": "accuracy and NLL per checkpoint"},
        ),
        markdown=f"{RESULTS}/eval/summary.md",
        table2=report(
            f"{RESULTS}/eval/table2.csv",
            caption="../report/eval/table2.rst",
            category="Evaluation",
            labels={"item": "Table 2: benchmark x model"},
        ),
        table2_md=f"{RESULTS}/eval/table2.md",
    log:
        f"{RESULTS}/logs/eval/summary.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("eval_summary"),
    params:
        **stage_params("eval_summary", job=lambda wildcards: {"table2": table2_settings()}),
    shell:
        STAGE_SHELL
