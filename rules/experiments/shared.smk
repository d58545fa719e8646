# What the paper's other experiments share (rules/{diversity,ablation,augmentation}.smk): the
# fixed random documents of Figs. 5 and 6, and training and evaluation of a model on a set
# other than the scaling ladder. The train and evaluation rules are the pipeline's own
# (rules/10_train.smk, rules/11_evaluate.smk), reused under ablation/ and augmentation/ with the set
# as a path element; the base model and its evaluation are the main chain's budget 0. Their
# params (stage_params) are the main rules' own: the settings come from the wildcards.


rule experiment_docs:
    input:
        docs=all_reference_docs(),
        extracted=expand(f"{RESULTS}/extract/shard-{{shard}}.parquet", shard=shard_ids()),
    output:
        docs=experiment_docs(),
        extracted=experiment_extract(),
        counts=f"{RESULTS}/experiments/docs.counts.json",
    log:
        f"{RESULTS}/logs/experiments/docs.log",
    conda:
        "../../envs/main.yaml"
    resources:
        **job_resources("experiment_docs"),
    params:
        **stage_params("experiment_docs", "experiments"),
    shell:
        STAGE_SHELL


use rule train as experiment_train with:
    input:
        mixture=experiment_mixture,
        base=checkpoint_dir("{model}", 0),
    output:
        final=directory(f"{RESULTS}/{{experiment}}/train/{{mixture}}/{{model}}/{{budget}}/final"),
        counts=f"{RESULTS}/{{experiment}}/train/{{mixture}}/{{model}}/{{budget}}/counts.json",
        log=f"{RESULTS}/{{experiment}}/train/{{mixture}}/{{model}}/{{budget}}/log.jsonl",
    log:
        f"{RESULTS}/logs/{{experiment}}/train/{{mixture}}/{{model}}/{{budget}}.log",


use rule evaluate as experiment_evaluate with:
    input:
        checkpoint=f"{RESULTS}/{{experiment}}/train/{{mixture}}/{{model}}/{{budget}}/final",
        train_counts=f"{RESULTS}/{{experiment}}/train/{{mixture}}/{{model}}/{{budget}}/counts.json",
        benchmarks=list(config["evaluate"]["benchmarks"].values()),
    output:
        predictions=f"{RESULTS}/{{experiment}}/eval/{{mixture}}/{{model}}/{{budget}}/predictions.parquet",
        settings=f"{RESULTS}/{{experiment}}/eval/{{mixture}}/{{model}}/{{budget}}/settings.json",
        counts=f"{RESULTS}/{{experiment}}/eval/{{mixture}}/{{model}}/{{budget}}/counts.json",
    log:
        f"{RESULTS}/logs/{{experiment}}/eval/{{mixture}}/{{model}}/{{budget}}.log",


use rule eval_nll as experiment_eval_nll with:
    input:
        checkpoint=f"{RESULTS}/{{experiment}}/train/{{mixture}}/{{model}}/{{budget}}/final",
        benchmarks=list(config["evaluate"]["benchmarks"].values()),
    output:
        nll=f"{RESULTS}/{{experiment}}/eval/{{mixture}}/{{model}}/{{budget}}/nll.parquet",
        counts=f"{RESULTS}/{{experiment}}/eval/{{mixture}}/{{model}}/{{budget}}/nll.counts.json",
    log:
        f"{RESULTS}/logs/{{experiment}}/eval/{{mixture}}/{{model}}/{{budget}}.nll.log",
