# Stage 9: the SFT pool with exact token counts, nested mixtures at the training budgets
# (paper §1.4, §3; schema: workflow/synthllm/stages/mixtures.py), and the pool's question
# and answer lengths per level (§5.1; workflow/synthllm/stages/length_stats.py).


rule sft_pool:
    input:
        questions=clean_questions(),
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


rule length_stats:
    input:
        pool=f"{RESULTS}/mixtures/pool.parquet",
    output:
        csv=report(
            f"{RESULTS}/mixtures/length_stats.csv",
            caption="../report/mixtures/length_stats.rst",
            category="Synthetic data",
            labels={"item": "question and answer lengths (§5.1)"},
        ),
        md=f"{RESULTS}/mixtures/length_stats.md",
        counts=f"{RESULTS}/mixtures/length_stats.counts.json",
    log:
        f"{RESULTS}/logs/length_stats.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("length_stats"),
    params:
        **stage_params(
            "length_stats",
            tokenizer="mixtures.tokenizer",
            tokenizer_revision="mixtures.tokenizer_revision",
            length_sample="mixtures.length_sample",
            seed="mixtures.seed",
        ),
    shell:
        STAGE_SHELL
