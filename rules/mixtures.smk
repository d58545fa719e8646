# Stage 6: dedup of the answered questions of all levels, decontamination against the six
# evaluation benchmarks, the SFT pool with exact token counts, and nested mixtures at the
# training budgets (paper §1.2, §1.4, §3). Schemas: workflow/synthllm/{dedup,decontam,mixtures}.py.


rule dedup:
    input:
        answers=expand(f"{RESULTS}/answer/shard-{{shard}}.parquet", shard=shard_ids()),
    output:
        questions=f"{RESULTS}/dedup/questions.parquet",
        dropped=f"{RESULTS}/dedup/dropped.parquet",
        counts=f"{RESULTS}/dedup/counts.json",
    log:
        f"{RESULTS}/logs/dedup.log",
    conda:
        "../envs/main.yaml"
    threads: 2
    resources:
        **job_resources("dedup"),
    params:
        **stage_params("dedup", "dedup"),
    shell:
        STAGE_SHELL


rule decontam:
    input:
        questions=f"{RESULTS}/dedup/questions.parquet",
        benchmarks=list(config["evaluation"]["benchmarks"].values()),
    output:
        questions=f"{RESULTS}/decontam/questions.parquet",
        hits=f"{RESULTS}/decontam/hits.parquet",
        report=f"{RESULTS}/decontam/report.json",
        counts=f"{RESULTS}/decontam/counts.json",
    log:
        f"{RESULTS}/logs/decontam.log",
    conda:
        "../envs/main.yaml"
    threads: 2
    resources:
        **job_resources("decontam"),
    params:
        **stage_params("decontam", "decontam", benchmarks="evaluation.benchmarks"),
    shell:
        STAGE_SHELL


rule sft_pool:
    input:
        questions=f"{RESULTS}/decontam/questions.parquet",
    output:
        pool=f"{RESULTS}/mixtures/pool.parquet",
        counts=f"{RESULTS}/mixtures/pool.counts.json",
    log:
        f"{RESULTS}/logs/sft_pool.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("sft_pool"),
    params:
        **stage_params(
            "sft_pool",
            tokenizer="mixtures.tokenizer",
            chat_template="mixtures.chat_template",
            system_prompt="chat.system_prompt",
        ),
    shell:
        STAGE_SHELL


rule mixture:
    input:
        pool=f"{RESULTS}/mixtures/pool.parquet",
    output:
        samples=f"{RESULTS}/mixtures/{{mixture}}/{{budget}}.parquet",
        counts=f"{RESULTS}/mixtures/{{mixture}}/{{budget}}.counts.json",
    log:
        f"{RESULTS}/logs/mixtures/{{mixture}}-{{budget}}.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("mixture"),
    params:
        **stage_params("mixture", job=mixture_job, seed="mixtures.seed"),
    shell:
        STAGE_SHELL
