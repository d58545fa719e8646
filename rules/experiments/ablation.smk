# Level ablation (paper §6 Table 3): every model of config ablation.models trained on each
# level-only mixture of config ablation.sets (entries of mixtures.sets) of the main pool,
# all of ablation.samples samples: one chain per set (ablation/<set>/) of the main chain's
# mixture, train and evaluation rules; the table beside the base model's row and the
# outside models of the model's group (config models.outside). Target: `snakemake ablation`.


# the sets are checked when the table is asked for (ablation_sets)
for level_set in config["ablation"]["sets"]:
    register_ablation_chain(level_set)


rule ablation:
    input:
        **eval_inputs(ablation_runs),
        outside_predictions=lambda wildcards: ablation_outside_files("predictions.parquet"),
        outside_settings=lambda wildcards: ablation_outside_files("settings.json"),
    output:
        table=report(
            f"{RESULTS}/ablation/table3.csv",
            caption="../../report/experiments/table3.rst",
            category="Level ablation",
            labels={"item": "Table 3: one level per training set"},
        ),
        markdown=f"{RESULTS}/ablation/table3.md",
    log:
        f"{RESULTS}/ablation/logs/table3.log",
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
                "outside": ablation_outside(),
            },
        ),
    shell:
        STAGE_SHELL
