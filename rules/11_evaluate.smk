# Stage 11: every checkpoint (each model of config models.train at budget 0, the base model,
# and at every training budget) on the six benchmarks: generated answers graded two ways,
# the NLL of the reference solutions, and one summary table for the scaling stage; beside
# them the models of config models.outside, evaluated as they are (no NLL), and Table 2.


wildcard_constraints:
    outside=r"[A-Za-z0-9][A-Za-z0-9._-]*",


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
    threads: config["evaluate"]["threads"]
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
    threads: config["evaluate"]["threads"]
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
