# Stage 6: one answer per question of every level (paper §4.3, no verification), one job
# per shard on the answerer model.


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
