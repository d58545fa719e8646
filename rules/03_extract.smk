# Stage 3: topics and key concepts of every reference document (paper Fig. 11), one job
# per shard on the generator model.


rule extract:
    input:
        docs=REFERENCE_DOCS,
    output:
        extracted=f"{RESULTS}/extract/shard-{{shard}}.parquet",
        counts=f"{RESULTS}/extract/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/extract/shard-{{shard}}.log",
    group:
        shard_group("extract")
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("extract", config["models"]["generator"]["gpus"]),
    params:
        **stage_params(
            "extract",
            "generation.extract",
            model="models.generator",
            structured="generation.structured",
            max_doc_chars="generation.max_doc_chars",
            max_docs="generation.max_docs_per_shard",
            chunk_size="generation.chunk_size",
            engine_keepalive_s="generation.engine_keepalive_s",
            shards_per_job="generation.shards_per_job",
        ),
    shell:
        STAGE_SHELL
