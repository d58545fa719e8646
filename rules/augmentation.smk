# Augmentation baselines (paper §6 Fig. 6): on the experiment documents, Level-1 seed
# questions expanded by rephrasing and by personas (workflow/synthllm/augmentation.py),
# against Level-2 and Level-3 generating more questions per document. Each method's
# questions go through the pipeline's own answer rule, the dedup rule (if
# augmentation.deduplicate; else only the answer-status filter), the decontamination,
# SFT-pool and mixture rules, then training and evaluation (rules/experiments.smk) at every
# count of augmentation.questions_per_doc x experiments.documents.
# Target: `snakemake augmentation`.


use rule level1 as augmentation_seeds with:
    input:
        docs=experiment_docs(),
    output:
        questions=f"{AUGMENTED}/questions/seeds.parquet",
        counts=f"{AUGMENTED}/questions/seeds.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/seeds.log",
    params:
        max_docs="",


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
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        gpu=config["models"]["generator"]["gpus"],
    params:
        model=model_json("generator"),
        sampling=lambda wildcards: json.dumps(
            config["augmentation"][wildcards.method]["sampling"], sort_keys=True
        ),
        structured=structured_flag(),
        target=augmentation_target_per_doc() * config["experiments"]["documents"],
        personas=lambda wildcards: (
            f"--personas {persona_file()} --persona-seed {config['augmentation']['persona']['seed']}"
            if wildcards.method == "persona"
            else ""
        ),
        chunk_size=config["generation"]["chunk_size"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} augment --method {wildcards.method} --seeds {input.seeds}"
        " --model-json {params.model:q} --sampling-json {params.sampling:q} {params.structured}"
        " --target {params.target} {params.personas} --chunk-size {params.chunk_size}"
        " --output {output.questions} --counts {output.counts} > {log} 2>&1"


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
        calls_per_doc=config["augmentation"]["level2"]["calls_per_doc"],
        questions_per_doc=augmentation_target_per_doc(),


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
    params:
        out_dir=lambda wildcards: f"{AUGMENTED}/graph/subset-{wildcards.subset}",


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
        graph_dir=lambda wildcards: f"{AUGMENTED}/graph/subset-{wildcards.subset}",
        walks=json.dumps(
            {
                **{k: v for k, v in config["graph"]["walks"].items() if k != "seed"},
                "epochs": config["augmentation"]["level3"]["walk_epochs"],
            },
            sort_keys=True,
        ),


use rule level3 as augmentation_level3 with:
    input:
        walks=[f"{AUGMENTED}/walks/subset-{ONE_SUBSET}.parquet"],
        docs=[experiment_docs()],
    output:
        questions=f"{AUGMENTED}/questions/level3-{{shard}}.parquet",
        counts=f"{AUGMENTED}/questions/level3-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/augmentation/level3-{{shard}}.log",
    params:
        calls_per_set=config["augmentation"]["level3"]["calls_per_set"],
        questions_per_set=config["augmentation"]["level3"]["questions_per_set"],
        max_sets="--max-sets "
        + str(
            math.ceil(
                augmentation_target_per_doc()
                * config["experiments"]["documents"]
                / config["augmentation"]["level3"]["questions_per_set"]
            )
        ),


use rule answer as augmentation_answer with:
    input:
        questions=augmentation_questions,
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
        "../envs/main.yaml"
    resources:
        **job_resources("augmentation_usable_answers"),
    params:
        statuses=" ".join(config["dedup"]["answer_statuses"]),
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} usable-answers --answers {input.answers} --answer-statuses {params.statuses}"
        " --output {output.questions} --counts {output.counts} > {log} 2>&1"


use rule decontam as augmentation_decontam with:
    input:
        questions=augmentation_decontam_input,
        benchmarks=list(config["evaluation"]["benchmarks"].values()),
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
        spec=json.dumps({"size_key": "experiments.documents x augmentation.questions_per_doc"}),


rule augmentation:
    input:
        lambda wildcards: [f for _, folder in augmentation_runs() for f in eval_dir_files(folder)],
    output:
        fig6=report(
            f"{AUGMENTED}/fig6.png",
            caption="../report/experiments/fig6.rst",
            category="Augmentation baselines",
            labels={"item": "Fig. 6: methods against training samples"},
        ),
        fig6_pdf=f"{AUGMENTED}/fig6.pdf",
        values=report(
            f"{AUGMENTED}/fig6.csv",
            caption="../report/experiments/fig6_values.rst",
            category="Augmentation baselines",
            labels={"item": "Fig. 6 values"},
        ),
        markdown=f"{AUGMENTED}/fig6.md",
    log:
        f"{RESULTS}/logs/augmentation/fig6.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("augmentation"),
    params:
        runs=lambda wildcards: " ".join(f"{m}={folder}" for m, folder in augmentation_runs()),
        models=lambda wildcards: " ".join(experiment_models("augmentation")),
        methods=" ".join(augmentation_methods()),
        metric=config["augmentation"]["metric"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} augmentation-figure --runs {params.runs} --models {params.models}"
        " --methods {params.methods} --metric {params.metric} --png {output.fig6}"
        " --pdf {output.fig6_pdf} --csv {output.values} --markdown {output.markdown} > {log} 2>&1"
