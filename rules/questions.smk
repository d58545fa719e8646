# Stage 5: Level-1 and Level-2 questions per reference document (paper Figs. 8, 9), Level-3
# questions per sampled concept set (Fig. 10), then one answer per question. One job per
# shard and level.


rule level1:
    input:
        docs=REFERENCE_DOCS,
    output:
        questions=f"{RESULTS}/level1/shard-{{shard}}.parquet",
        counts=f"{RESULTS}/level1/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/level1/shard-{{shard}}.log",
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
        ),
    shell:
        STAGE_SHELL


rule level2:
    input:
        docs=REFERENCE_DOCS,
        extracted=f"{RESULTS}/extract/shard-{{shard}}.parquet",
    output:
        questions=f"{RESULTS}/level2/shard-{{shard}}.parquet",
        counts=f"{RESULTS}/level2/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/level2/shard-{{shard}}.log",
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
        ),
    shell:
        STAGE_SHELL


rule level3:
    input:
        walks=expand(f"{RESULTS}/walks/subset-{{subset}}.parquet", subset=subset_ids()),
        docs=all_reference_docs(),
    output:
        questions=f"{RESULTS}/level3/shard-{{shard}}.parquet",
        counts=f"{RESULTS}/level3/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/level3/shard-{{shard}}.log",
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
            job=lambda wildcards: {"shard": wildcards.shard},
        ),
    shell:
        STAGE_SHELL


rule answer:
    input:
        questions=expand(
            f"{RESULTS}/{{level}}/shard-{{{{shard}}}}.parquet",
            level=["level1", "level2", "level3"],
        ),
    output:
        answers=f"{RESULTS}/answer/shard-{{shard}}.parquet",
        counts=f"{RESULTS}/answer/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/answer/shard-{{shard}}.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("answer", config["models"]["answerer"]["gpus"]),
    params:
        **stage_params(
            "answer",
            "generation.answer",
            model="models.answerer",
            chunk_size="generation.chunk_size",
        ),
    shell:
        STAGE_SHELL
