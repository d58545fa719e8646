# Stage 6: one answer per question of every level (paper §4.3, no verification), or the
# majority of k sampled answers (generation.answer.verify, beyond the paper), one job per
# shard on the answerer model.


rule answer:
    input:
        unpack(
            chain_inputs(
                "answer",
                questions=[f"{{chain}}/{level}/shard-{{shard}}.parquet" for level in LEVELS],
            )
        ),
    output:
        # GPU-hours each: Snakemake makes it read-only and will not overwrite it
        answers=protected("{chain}/answer/shard-{shard}.parquet"),
        counts="{chain}/answer/shard-{shard}.counts.json",
    log:
        "{chain}/logs/answer/shard-{shard}.log",
    group:
        shard_group("answer")
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
            engine_keepalive_s="generation.engine_keepalive_s",
            shards_per_job="generation.shards_per_job",
        ),
    shell:
        STAGE_SHELL
