# Stage 11: every checkpoint (each model of config models.train at budget 0, the base model,
# and at every training budget) on the six benchmarks: generated answers graded two ways,
# the NLL of the reference solutions, and one summary table for the scaling stage.


rule evaluate:
    input:
        checkpoint=checkpoint_dir("{model}", "{budget}"),
        train_counts=f"{RESULTS}/train/{{model}}/{{budget}}/counts.json",
        benchmarks=list(config["evaluate"]["benchmarks"].values()),
    output:
        predictions=f"{RESULTS}/eval/{{model}}/{{budget}}/predictions.parquet",
        settings=f"{RESULTS}/eval/{{model}}/{{budget}}/settings.json",
        counts=f"{RESULTS}/eval/{{model}}/{{budget}}/counts.json",
    log:
        f"{RESULTS}/logs/eval/{{model}}/{{budget}}.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("evaluate", config["evaluate"]["engine"]["gpus"]),
    params:
        **stage_params(
            "evaluate",
            **EVAL_DATA,
            engine="evaluate.engine",  # backend, dtype, max_model_len; the rest: execution
            max_new_tokens="evaluate.max_new_tokens",
            grade_timeout_s="evaluate.grade_timeout_s",
            chunk_size="evaluate.chunk_size",
            job=lambda wildcards: {"label": wildcards.model, "budget": int(wildcards.budget)},
        ),
    shell:
        STAGE_SHELL


rule eval_nll:
    input:
        checkpoint=checkpoint_dir("{model}", "{budget}"),
        benchmarks=list(config["evaluate"]["benchmarks"].values()),
    output:
        nll=f"{RESULTS}/eval/{{model}}/{{budget}}/nll.parquet",
        counts=f"{RESULTS}/eval/{{model}}/{{budget}}/nll.counts.json",
    log:
        f"{RESULTS}/logs/eval/{{model}}/{{budget}}.nll.log",
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
        predictions=eval_files("predictions.parquet"),
        settings=eval_files("settings.json"),
        nll=eval_files("nll.parquet"),
    output:
        summary=f"{RESULTS}/eval/summary.parquet",
        csv=report(
            f"{RESULTS}/eval/summary.csv",
            category="Evaluation",
            labels={"item": "accuracy and NLL per checkpoint"},
        ),
        markdown=f"{RESULTS}/eval/summary.md",
    log:
        f"{RESULTS}/logs/eval/summary.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("eval_summary"),
    params:
        **stage_params("eval_summary"),
    shell:
        STAGE_SHELL
