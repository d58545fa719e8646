# Stage 9: the SFT pool with exact token counts, and nested mixtures at the training
# budgets (paper §1.4, §3). Schema: workflow/synthllm/stages/mixtures.py.


rule sft_pool:
    input:
        questions="{chain}/decontam/questions.parquet",
    output:
        pool="{chain}/mixtures/pool.parquet",
        counts="{chain}/mixtures/pool.counts.json",
    log:
        "{chain}/logs/sft_pool.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("sft_pool"),
    params:
        **stage_params(
            "sft_pool",
            tokenizer="mixtures.tokenizer",
            tokenizer_revision="mixtures.tokenizer_revision",
            chat_template="mixtures.chat_template",
            system_prompt="chat.system_prompt",
        ),
    shell:
        STAGE_SHELL


rule mixture:
    input:
        unpack(chain_inputs("mixture", pool="{chain}/mixtures/pool.parquet")),
    output:
        samples="{chain}/mixtures/{mixture}/{budget}.parquet",
        counts="{chain}/mixtures/{mixture}/{budget}.counts.json",
    log:
        "{chain}/logs/mixtures/{mixture}-{budget}.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("mixture"),
    params:
        **stage_params("mixture", job=mixture_job, seed="mixtures.seed"),
    shell:
        STAGE_SHELL
