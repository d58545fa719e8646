# What the paper's other experiments share (rules/experiments/{diversity,ablation,augmentation}.smk):
# the fixed random documents of Figs. 5 and 6, with their extractions. The experiments'
# chains (rules/common.smk Chain) generate from them; the chains that train start from the
# main chain's base models (budget 0), whose evaluations are the experiments' base rows.


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
