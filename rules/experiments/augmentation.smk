# Augmentation baselines (paper §6 Fig. 6): on the experiment documents, Level-1 seed
# questions expanded by rephrasing and by personas (workflow/synthllm/experiments/augmentation.py),
# against Level-2 and Level-3 generating more questions per document. Each method's
# questions go through the pipeline's own answer rule, the dedup rule (if
# augmentation.deduplicate; else only the answer-status filter), the decontamination,
# SFT-pool and mixture rules, then training and evaluation (rules/experiments/shared.smk) at every
# count of augmentation.questions_per_doc x experiments.documents.
# Target: `snakemake augmentation`. The use-rules' params replace the original rules' by
# name, so each override is all of the rule's stage_params, with the experiment's settings.


use rule level1 as augmentation_seeds with:
    input:
        docs=experiment_docs(),
    output:
        questions=f"{AUGMENTED}/questions/seeds.parquet",
        counts=f"{AUGMENTED}/questions/seeds.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/seeds.log",
    params:
        **stage_params(
            "level1",
            "generation.level1",
            model="models.generator",
            structured="generation.structured",
            max_doc_chars="generation.max_doc_chars",
            chunk_size="generation.chunk_size",
            job=lambda wildcards: {"max_docs": None},  # every experiment document
        ),


rule augmentation_expand:
    input:
        seeds=f"{AUGMENTED}/questions/seeds.parquet",
        # a missing persona file is reported by the job (the paper config plans without it)
        personas=lambda wildcards: (
            [persona_file()]
            if wildcards.method == "persona" and os.path.exists(persona_file())
            else []
        ),
    output:
        questions=f"{AUGMENTED}/questions/{{method}}.parquet",
        counts=f"{AUGMENTED}/questions/{{method}}.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/{{method}}.log",
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
            job=augmentation_expand_job,
        ),
    shell:
        STAGE_SHELL


use rule level2 as augmentation_level2 with:
    input:
        docs=experiment_docs(),
        extracted=experiment_extract(),
    output:
        questions=f"{AUGMENTED}/questions/level2.parquet",
        counts=f"{AUGMENTED}/questions/level2.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/level2.log",
    params:
        **stage_params(
            "level2",
            "generation.level2",
            model="models.generator",
            structured="generation.structured",
            max_doc_chars="generation.max_doc_chars",
            chunk_size="generation.chunk_size",
            calls_per_doc="augmentation.level2.calls_per_doc",
            job=lambda wildcards: {"questions_per_doc": augmentation_target_per_doc()},
        ),


use rule concept_graph as augmentation_graph with:
    input:
        extracted=[experiment_extract()],
    output:
        graph=f"{AUGMENTED}/graph/subset-{{subset}}/graph.gt",
        sampler=f"{AUGMENTED}/graph/subset-{{subset}}/sampler.npz",
        nodes=f"{AUGMENTED}/graph/subset-{{subset}}/nodes.parquet",
        docs=f"{AUGMENTED}/graph/subset-{{subset}}/docs.parquet",
        report=f"{AUGMENTED}/graph/subset-{{subset}}/report.json",
        counts=f"{AUGMENTED}/graph/subset-{{subset}}/counts.json",
    log:
        f"{RESULTS}/logs/augmentation/graph-{{subset}}.log",


use rule walks as augmentation_walks with:
    input:
        sampler=f"{AUGMENTED}/graph/subset-{{subset}}/sampler.npz",
        nodes=f"{AUGMENTED}/graph/subset-{{subset}}/nodes.parquet",
        docs=f"{AUGMENTED}/graph/subset-{{subset}}/docs.parquet",
    output:
        walks=f"{AUGMENTED}/walks/subset-{{subset}}.parquet",
        counts=f"{AUGMENTED}/walks/subset-{{subset}}.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/walks-{{subset}}.log",
    params:
        **stage_params(
            "walks",
            env="graph",
            job=lambda wildcards: {
                "subset": wildcards.subset,
                "walks": {
                    **config_settings("graph.walks"),
                    "epochs": config["augmentation"]["level3"]["walk_epochs"],
                },
            },
            eps="graph.eps",
            references="graph.references",
        ),


use rule level3_sets as augmentation_level3_sets with:
    input:
        walks=[f"{AUGMENTED}/walks/subset-{ONE_SUBSET}.parquet"],
        docs=[experiment_docs()],
    output:
        sets=[f"{AUGMENTED}/questions/level3-sets-{ONE_SHARD}.parquet"],
        counts=f"{AUGMENTED}/questions/level3-sets.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/level3-sets.log",
    params:
        **stage_params(
            "level3_sets",
            job=lambda wildcards: {
                "n_shards": 1,
                "max_sets_per_shard": augmentation_level3_set_count(),
            },
        ),


use rule level3 as augmentation_level3 with:
    input:
        sets=f"{AUGMENTED}/questions/level3-sets-{{shard}}.parquet",
    output:
        questions=f"{AUGMENTED}/questions/level3-{{shard}}.parquet",
        counts=f"{AUGMENTED}/questions/level3-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/level3-{{shard}}.log",
    params:
        **stage_params(
            "level3",
            "generation.level3",
            model="models.generator",
            structured="generation.structured",
            max_doc_chars="generation.max_doc_chars",
            chunk_size="generation.chunk_size",
            calls_per_set="augmentation.level3.calls_per_set",
            questions_per_set="augmentation.level3.questions_per_set",
        ),


use rule answer as augmentation_answer with:
    input:
        # a list, as the answer rule's (one question file per level)
        questions=lambda wildcards: [augmentation_questions(wildcards)],
    output:
        answers=f"{AUGMENTED}/{{mixture}}/answers.parquet",
        counts=f"{AUGMENTED}/{{mixture}}/answers.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/{{mixture}}/answer.log",


use rule dedup as augmentation_dedup with:
    input:
        answers=[f"{AUGMENTED}/{{mixture}}/answers.parquet"],
    output:
        questions=f"{AUGMENTED}/{{mixture}}/dedup/questions.parquet",
        dropped=f"{AUGMENTED}/{{mixture}}/dedup/dropped.parquet",
        counts=f"{AUGMENTED}/{{mixture}}/dedup/counts.json",
    log:
        f"{RESULTS}/logs/augmentation/{{mixture}}/dedup.log",


rule augmentation_usable_answers:
    input:
        answers=f"{AUGMENTED}/{{mixture}}/answers.parquet",
    output:
        questions=f"{AUGMENTED}/{{mixture}}/usable/questions.parquet",
        counts=f"{AUGMENTED}/{{mixture}}/usable/counts.json",
    log:
        f"{RESULTS}/logs/augmentation/{{mixture}}/usable_answers.log",
    conda:
        "../../envs/main.yaml"
    resources:
        **job_resources("augmentation_usable_answers"),
    params:
        **stage_params("augmentation_usable_answers", answer_statuses="dedup.answer_statuses"),
    shell:
        STAGE_SHELL


use rule decontam as augmentation_decontam with:
    input:
        questions=augmentation_decontam_input,
        benchmarks=list(config["evaluate"]["benchmarks"].values()),
    output:
        questions=f"{AUGMENTED}/{{mixture}}/decontam/questions.parquet",
        hits=f"{AUGMENTED}/{{mixture}}/decontam/hits.parquet",
        report=f"{AUGMENTED}/{{mixture}}/decontam/report.json",
        counts=f"{AUGMENTED}/{{mixture}}/decontam/counts.json",
    log:
        f"{RESULTS}/logs/augmentation/{{mixture}}/decontam.log",


use rule sft_pool as augmentation_sft_pool with:
    input:
        questions=f"{AUGMENTED}/{{mixture}}/decontam/questions.parquet",
    output:
        pool=f"{AUGMENTED}/{{mixture}}/pool.parquet",
        counts=f"{AUGMENTED}/{{mixture}}/pool.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/{{mixture}}/sft_pool.log",


use rule mixture as augmentation_mixture with:
    input:
        pool=f"{AUGMENTED}/{{mixture}}/pool.parquet",
    output:
        samples=f"{AUGMENTED}/{{mixture}}/mixtures/{{budget}}.parquet",
        counts=f"{AUGMENTED}/{{mixture}}/mixtures/{{budget}}.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/{{mixture}}/mixture-{{budget}}.log",
    params:
        **stage_params("mixture", job=augmentation_mixture_job, seed="mixtures.seed"),


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
        f"{RESULTS}/logs/augmentation/fig6.log",
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
