# Level ablation (paper §6 Table 3): every model of config ablation.models trained on each
# level-only mixture of config ablation.sets (entries of mixtures.sets), all of
# ablation.samples samples, by the pipeline's own mixture, train and evaluation rules
# (rules/experiments.smk); the table beside the base model's row. Target: `snakemake ablation`.


rule ablation:
    input:
        # functions, so that a config without the ablation's sets fails only when asked for it
        lambda wildcards: [f for _, folder in ablation_runs() for f in eval_dir_files(folder)],
    output:
        table=report(
            f"{RESULTS}/ablation/table3.csv",
            caption="../report/experiments/table3.rst",
            category="Level ablation",
            labels={"item": "Table 3: one level per training set"},
        ),
        markdown=f"{RESULTS}/ablation/table3.md",
    log:
        f"{RESULTS}/logs/ablation/table3.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("ablation"),
    params:
        runs=lambda wildcards: " ".join(f"{label}={folder}" for label, folder in ablation_runs()),
        models=lambda wildcards: " ".join(experiment_models("ablation")),
        sets=lambda wildcards: " ".join(ablation_sets()),
        metric=config["ablation"]["metric"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} ablation-table --runs {params.runs} --models {params.models}"
        " --sets {params.sets} --metric {params.metric} --csv {output.table}"
        " --markdown {output.markdown} > {log} 2>&1"
