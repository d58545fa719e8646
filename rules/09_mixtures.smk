# Stage 9: the SFT pool with exact token counts, and nested mixtures at the training
# budgets (paper §1.4, §3). Schema: workflow/synthllm/stages/mixtures.py.


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
