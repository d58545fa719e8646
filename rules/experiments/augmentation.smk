# Augmentation baselines (paper §6 Fig. 6): on the experiment documents, Level-1 seed
# questions expanded by rephrasing and by personas (workflow/synthllm/experiments/augmentation.py),
# against Level-2 and Level-3 generating more questions per document. One chain
# (augmentation/questions/) runs the main chain's question rules on the experiment
# documents; then one chain per method (augmentation/<method>/) answers its questions and
# runs the main chain's dedup (if augmentation.deduplicate; else only the answer-status
# filter), decontamination, SFT-pool, mixture, train and evaluation rules, at every count
# of augmentation.questions_per_doc x experiments.documents. Target: `snakemake augmentation`.


register_chain(
    Chain(
        AUGMENTATION_QUESTIONS,
        inputs={
            "level1": {"docs": experiment_docs()},
            "level2": {"docs": experiment_docs(), "extracted": experiment_extract()},
            "concept_graph": {"extracted": [experiment_extract()]},
        },
        jobs={
            "level1": lambda wildcards: {"max_docs": None},  # every experiment document
            "level2": augmentation_level2_job,
            "walks": augmentation_walks_job,
            "level3": augmentation_level3_job,
        },
    )
)


for method in augmentation_methods():
    register_method_chain(method)


rule augmentation_expand:
    input:
        seeds=f"{AUGMENTATION_QUESTIONS}/level1/shard-{ONE_SHARD}.parquet",
        # a missing persona file is reported by the job (the paper config plans without it)
        personas=lambda wildcards: (
            [persona_file()]
            if wildcards.method == "persona" and os.path.exists(persona_file())
            else []
        ),
    output:
        questions=f"{AUGMENTATION_QUESTIONS}/{{method}}/shard-{ONE_SHARD}.parquet",
        counts=f"{AUGMENTATION_QUESTIONS}/{{method}}/shard-{ONE_SHARD}.counts.json",
    log:
        f"{AUGMENTATION_QUESTIONS}/logs/{{method}}/shard-{ONE_SHARD}.log",
    conda:
        "../../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("augmentation_expand", config["models"]["generator"]["gpus"]),
    params:
        **stage_params(
            "augmentation_expand",
            model="models.generator",
            structured="generation.structured",
            chunk_size="generation.chunk_size",
            engine_keepalive_s="generation.engine_keepalive_s",
            job=augmentation_expand_job,
        ),
    shell:
        STAGE_SHELL


# the main chain's level3_sets deals to all of its shards; here all sets go to the one shard
rule augmentation_level3_sets:
    input:
        walks=[f"{AUGMENTATION_QUESTIONS}/walks/subset-{ONE_SUBSET}.parquet"],
        docs=[experiment_docs()],
    output:
        sets=[f"{AUGMENTATION_QUESTIONS}/level3/sets/shard-{ONE_SHARD}.parquet"],
        counts=f"{AUGMENTATION_QUESTIONS}/level3/sets/counts.json",
    log:
        f"{AUGMENTATION_QUESTIONS}/logs/level3/sets.log",
    conda:
        "../../envs/main.yaml"
    resources:
        **job_resources("level3_sets"),
    params:
        **stage_params(
            "level3_sets",
            job=lambda wildcards: {
                "n_shards": 1,
                "max_sets_per_shard": augmentation_level3_set_count(),
            },
        ),
    shell:
        STAGE_SHELL


rule augmentation_usable_answers:
    input:
        answers="{chain}/answer/shard-%s.parquet" % ONE_SHARD,
    output:
        questions="{chain}/usable/questions.parquet",
        counts="{chain}/usable/counts.json",
    log:
        "{chain}/logs/usable_answers.log",
    conda:
        "../../envs/main.yaml"
    resources:
        **job_resources("augmentation_usable_answers"),
    params:
        **stage_params("augmentation_usable_answers", answer_statuses="dedup.answer_statuses"),
    shell:
        STAGE_SHELL


rule augmentation:
    input:
        **eval_inputs(augmentation_runs),
    output:
        fig6=report(
            f"{AUGMENTED}/fig6.png",
            caption="../../report/experiments/fig6.rst",
            category="Augmentation baselines",
            labels={"item": "Fig. 6: methods against training samples"},
        ),
        fig6_pdf=f"{AUGMENTED}/fig6.pdf",
        values=report(
            f"{AUGMENTED}/fig6.csv",
            caption="../../report/experiments/fig6_values.rst",
            category="Augmentation baselines",
            labels={"item": "Fig. 6 values"},
        ),
        markdown=f"{AUGMENTED}/fig6.md",
    log:
        f"{AUGMENTED}/logs/fig6.log",
    conda:
        "../../envs/main.yaml"
    resources:
        **job_resources("augmentation"),
    params:
        **stage_params(
            "augmentation",
            methods="augmentation.methods",
            metric="augmentation.metric",
            job=lambda wildcards: {
                "runs": run_labels(augmentation_runs),
                "models": experiment_models("augmentation"),
            },
        ),
    shell:
        STAGE_SHELL
