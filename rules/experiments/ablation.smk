# Level ablation (paper §6 Table 3): every model of config ablation.models trained on each
# level-only mixture of config ablation.sets (entries of mixtures.sets) of the main pool,
# all of ablation.samples samples, by the pipeline's own mixture, train and evaluation
# rules (rules/experiments/shared.smk); the table beside the base model's row.
# Target: `snakemake ablation`.


use rule mixture as ablation_mixture with:
    output:
        samples=f"{RESULTS}/ablation/mixtures/{{mixture}}/{{budget}}.parquet",
        counts=f"{RESULTS}/ablation/mixtures/{{mixture}}/{{budget}}.counts.json",
    log:
        f"{RESULTS}/logs/ablation/mixtures/{{mixture}}-{{budget}}.log",
    params:
        **stage_params(
            "mixture",
            job=lambda wildcards: mixture_job(wildcards, size_key="ablation.samples"),
            seed="mixtures.seed",
        ),


rule ablation:
    input:
        **eval_inputs(ablation_runs),
    output:
        table=report(
            f"{RESULTS}/ablation/table3.csv",
            caption="../../report/experiments/table3.rst",
            category="Level ablation",
            labels={"item": "Table 3: one level per training set"},
        ),
        markdown=f"{RESULTS}/ablation/table3.md",
    log:
        f"{RESULTS}/logs/ablation/table3.log",
    conda:
        "../../envs/main.yaml"
    resources:
        **job_resources("ablation"),
    params:
        **stage_params(
            "ablation",
            metric="ablation.metric",
            job=lambda wildcards: {
                "runs": run_labels(ablation_runs),
                "models": experiment_models("ablation"),
                "sets": ablation_sets(),
            },
        ),
    shell:
        STAGE_SHELL
