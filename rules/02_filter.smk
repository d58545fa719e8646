# Stage 2: document filtering (paper §4.1, Fig. 3). Embeddings per corpus shard; synthetic
# math documents from the syllabus as the cold-start positives; a cold-start random forest
# gives D0; T rounds of LLM ratings and a random-forest regressor give D1..DT; the kept
# documents of every shard are what the generation stages read (REFERENCE_DOCS).
# A forest seed is part of its job's settings: changing it refits that forest (and what
# follows) and is recorded in the iteration's report.


rule embed:
    input:
        docs=f"{RESULTS}/corpus/shard-{{shard}}.parquet",
    output:
        embeddings=f"{RESULTS}/filter/embed/shard-{{shard}}.npy",
        counts=f"{RESULTS}/filter/embed/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/filter/embed/shard-{{shard}}.log",
    conda:
        "../envs/main.yaml"
    threads: config["filter"]["threads"]
    resources:
        **job_resources("embed", config["models"]["embedding"]["gpus"]),
    params:
        **stage_params("embed", model="models.embedding"),
    shell:
        STAGE_SHELL


rule synthetic_docs:
    input:
        syllabus=config["filter"]["synthetic"]["syllabus"],
    output:
        docs=f"{RESULTS}/filter/synthetic/docs.parquet",
        counts=f"{RESULTS}/filter/synthetic/docs.counts.json",
    log:
        f"{RESULTS}/logs/filter/synthetic_docs.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("synthetic_docs", config["models"]["generator"]["gpus"]),
    params:
        **stage_params(
            "synthetic_docs",
            "filter.synthetic",
            model="models.generator",
            chunk_size="generation.chunk_size",
            engine_keepalive_s="generation.engine_keepalive_s",
        ),
    shell:
        STAGE_SHELL


rule embed_synthetic:
    input:
        docs=rules.synthetic_docs.output.docs,
    output:
        embeddings=f"{RESULTS}/filter/synthetic/embeddings.npy",
        counts=f"{RESULTS}/filter/synthetic/embeddings.counts.json",
    log:
        f"{RESULTS}/logs/filter/embed_synthetic.log",
    conda:
        "../envs/main.yaml"
    threads: config["filter"]["threads"]
    resources:
        **job_resources("embed_synthetic", config["models"]["embedding"]["gpus"]),
    params:
        **stage_params("embed_synthetic", model="models.embedding"),
    shell:
        STAGE_SHELL


rule coldstart:
    input:
        synthetic=rules.synthetic_docs.output.docs,
        synthetic_embeddings=rules.embed_synthetic.output.embeddings,
        shards=corpus_shards(),
        embeddings=embedding_files(),
    output:
        scores=filter_scores(0),
        model=f"{RESULTS}/filter/iter-0/model.joblib",
        report=f"{RESULTS}/filter/iter-0/report.json",
    log:
        f"{RESULTS}/logs/filter/coldstart.log",
    conda:
        "../envs/main.yaml"
    threads: config["filter"]["threads"]
    resources:
        **job_resources("coldstart"),
    params:
        **stage_params(
            "coldstart",
            "filter.coldstart",
            positive_sources="filter.positive_sources",
            seed="filter.seed",
        ),
    shell:
        STAGE_SHELL


rule rate:
    input:
        unpack(rate_inputs),
        shards=corpus_shards(),
    output:
        ratings=f"{RESULTS}/filter/iter-{{iteration}}/ratings.parquet",
        counts=f"{RESULTS}/filter/iter-{{iteration}}/ratings.counts.json",
    log:
        f"{RESULTS}/logs/filter/rate-{{iteration}}.log",
    wildcard_constraints:
        iteration=r"[1-9]\d*",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("rate", config["models"]["rater"]["gpus"]),
    params:
        **stage_params(
            "rate",
            model="models.rater",
            sampling="filter.finegrained.sampling",
            rating="filter.finegrained.rating",
            structured="generation.structured",
            reference_sample="filter.finegrained.reference_sample",
            random_sample="filter.finegrained.random_sample",
            max_doc_chars="filter.finegrained.max_doc_chars",
            seed="filter.seed",
            chunk_size="generation.chunk_size",
            engine_keepalive_s="generation.engine_keepalive_s",
            job=lambda wildcards: {"iteration": int(wildcards.iteration)},
        ),
    shell:
        STAGE_SHELL


rule finegrained:
    input:
        ratings=filter_ratings_through,
        shards=corpus_shards(),
        embeddings=embedding_files(),
    output:
        scores=f"{RESULTS}/filter/iter-{{iteration}}/scores.parquet",
        model=f"{RESULTS}/filter/iter-{{iteration}}/model.joblib",
        report=f"{RESULTS}/filter/iter-{{iteration}}/report.json",
    log:
        f"{RESULTS}/logs/filter/finegrained-{{iteration}}.log",
    wildcard_constraints:
        iteration=r"[1-9]\d*",
    conda:
        "../envs/main.yaml"
    threads: config["filter"]["threads"]
    resources:
        **job_resources("finegrained"),
    params:
        **stage_params(
            "finegrained",
            threshold="filter.finegrained.threshold",
            forest="filter.finegrained.forest",
            test_fraction="filter.finegrained.test_fraction",
            positive_sources="filter.positive_sources",
            seed="filter.seed",
            job=lambda wildcards: {"iteration": int(wildcards.iteration)},
        ),
    shell:
        STAGE_SHELL


rule filter_docs:
    input:
        shard=f"{RESULTS}/corpus/shard-{{shard}}.parquet",
        scores=all_filter_scores(),
    output:
        docs=f"{RESULTS}/filter/docs/shard-{{shard}}.parquet",
        counts=f"{RESULTS}/filter/docs/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/filter/docs/shard-{{shard}}.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("filter_docs"),
    params:
        **stage_params("filter_docs"),
    shell:
        STAGE_SHELL


rule filter_report:
    input:
        reports=filter_reports(),
        rate_counts=filter_rate_counts(),
        filter_counts=[f"{RESULTS}/filter/docs/shard-{s}.counts.json" for s in shard_ids()],
    output:
        report=f"{RESULTS}/filter/report.json",
        markdown=f"{RESULTS}/filter/report.md",
        counts=f"{RESULTS}/filter/counts.json",
    log:
        f"{RESULTS}/logs/filter/report.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("filter_report"),
    params:
        **stage_params("filter_report", "filter.report"),
    shell:
        STAGE_SHELL
