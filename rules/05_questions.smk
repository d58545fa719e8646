# Stage 5: Level-1 and Level-2 questions per reference document (paper Figs. 8, 9) and
# Level-3 questions per sampled concept set (Fig. 10). One job per shard and level; one job
# deals the concept sets of every subset to the Level-3 shards with their reference texts,
# so that each Level-3 job reads one file, not every shard.


rule level1:
    input:
        unpack(chain_inputs("level1", docs=CHAIN_REFERENCE_DOCS)),
    output:
        questions="{chain}/level1/shard-{shard}.parquet",
        counts="{chain}/level1/shard-{shard}.counts.json",
    log:
        "{chain}/logs/level1/shard-{shard}.log",
    group:
        shard_group("level1")
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("level1", config["models"]["generator"]["gpus"]),
    params:
        **stage_params(
            "level1",
            "generation.level1",
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


rule level2:
    input:
        unpack(
            chain_inputs(
                "level2",
                docs=CHAIN_REFERENCE_DOCS,
                extracted="{chain}/extract/shard-{shard}.parquet",
            )
        ),
    output:
        questions="{chain}/level2/shard-{shard}.parquet",
        counts="{chain}/level2/shard-{shard}.counts.json",
    log:
        "{chain}/logs/level2/shard-{shard}.log",
    group:
        shard_group("level2")
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("level2", config["models"]["generator"]["gpus"]),
    params:
        **stage_params(
            "level2",
            "generation.level2",
            model="models.generator",
            structured="generation.structured",
            max_doc_chars="generation.max_doc_chars",
            chunk_size="generation.chunk_size",
            engine_keepalive_s="generation.engine_keepalive_s",
            shards_per_job="generation.shards_per_job",
        ),
    shell:
        STAGE_SHELL


rule level3_sets:
    input:
        walks=expand(f"{RESULTS}/walks/subset-{{subset}}.parquet", subset=subset_ids()),
        docs=all_reference_docs(),
    output:
        sets=expand(f"{RESULTS}/level3/sets/shard-{{shard}}.parquet", shard=shard_ids()),
        counts=f"{RESULTS}/level3/sets/counts.json",
    log:
        f"{RESULTS}/logs/level3/sets.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("level3_sets"),
    params:
        **stage_params(
            "level3_sets",
            max_sets_per_shard="generation.level3.max_sets_per_shard",
            job=lambda wildcards: {"n_shards": len(shard_ids())},
        ),
    shell:
        STAGE_SHELL


rule level3:
    input:
        sets="{chain}/level3/sets/shard-{shard}.parquet",
    output:
        questions="{chain}/level3/shard-{shard}.parquet",
        counts="{chain}/level3/shard-{shard}.counts.json",
    log:
        "{chain}/logs/level3/shard-{shard}.log",
    group:
        shard_group("level3")
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("level3", config["models"]["generator"]["gpus"]),
    params:
        **stage_params(
            "level3",
            "generation.level3",
            model="models.generator",
            structured="generation.structured",
            max_doc_chars="generation.max_doc_chars",
            chunk_size="generation.chunk_size",
            engine_keepalive_s="generation.engine_keepalive_s",
            shards_per_job="generation.shards_per_job",
        ),
    shell:
        STAGE_SHELL
