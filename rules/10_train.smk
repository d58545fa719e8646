# Stage 10: supervised fine-tuning of every model of config models.train on every budget of
# the `all` mixture (paper §3.2), with DeepSpeed under torchrun; budget 0 is the untrained
# base model, materialised once and the starting point of every budget. Each mixture is
# tokenised once per model, on CPUs (train_tokens), and every rank of its training job
# reads the token store memory-mapped.


rule base_model:
    output:
        final=directory(checkpoint_dir("{model}", 0)),
        counts=f"{RESULTS}/train/{{model}}/0/counts.json",
    log:
        f"{RESULTS}/logs/train/{{model}}/0.log",
    conda:
        "../envs/main.yaml"
    threads: 1
    resources:
        **job_resources("base_model"),
    params:
        **stage_params(
            "base_model",
            job=lambda wildcards: {
                "model": {k: v for k, v in train_model_settings(wildcards).items() if k != "train"}
            },
        ),
    shell:
        STAGE_SHELL


rule train_tokens:
    input:
        unpack(
            chain_inputs(
                "train_tokens",
                mixture="{chain}/mixtures/all/{budget}.parquet",
                base=checkpoint_dir("{model}", 0),
            )
        ),
    output:
        tokens=directory("{chain}/train_tokens/{model}/{budget}"),
    log:
        "{chain}/logs/train_tokens/{model}/{budget}.log",
    wildcard_constraints:
        budget=r"[1-9]\d*",
    conda:
        "../envs/main.yaml"
    threads: config["train"]["tokenize_threads"]
    resources:
        **job_resources("train_tokens"),
    params:
        **stage_params(
            "train_tokens",
            system_prompt="chat.system_prompt",
            job=train_tokens_settings,
        ),
    shell:
        STAGE_SHELL


rule train:
    input:
        tokens="{chain}/train_tokens/{model}/{budget}",
        base=checkpoint_dir("{model}", 0),
    output:
        # GPU-days each: Snakemake makes it read-only and will not overwrite it
        final=protected(directory("{chain}/train/{model}/{budget}/final")),
        counts="{chain}/train/{model}/{budget}/counts.json",
        log="{chain}/train/{model}/{budget}/log.jsonl",
    log:
        "{chain}/logs/train/{model}/{budget}.log",
    wildcard_constraints:
        budget=r"[1-9]\d*",
    conda:
        "../envs/main.yaml"
    threads: config["train"]["threads"]
    resources:
        **job_resources(
            "train",
            gpus=lambda wildcards: train_models()[wildcards.model]["gpus"],
            nodes=lambda wildcards: train_models()[wildcards.model]["nodes"],
        ),
    params:
        **stage_params(
            "train",
            # its execution keys (checkpoint cadence, peak_tflops) land in execution.training
            training="train",
            system_prompt="chat.system_prompt",
            job=lambda wildcards: {"training": train_settings(wildcards)},
            command=train_launcher,
        ),
    shell:
        STAGE_SHELL
