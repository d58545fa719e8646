# Stage 7: dedup of the answered questions of all levels, within and across levels (paper
# §1.2; method ours). Schema: workflow/synthllm/stages/dedup.py.


rule dedup:
    input:
        unpack(
            chain_inputs(
                "dedup",
                answers=expand("{{chain}}/answer/shard-{shard}.parquet", shard=shard_ids()),
            )
        ),
    output:
        questions="{chain}/dedup/questions.parquet",
        dropped="{chain}/dedup/dropped.parquet",
        report="{chain}/dedup/report.json",
        counts="{chain}/dedup/counts.json",
    log:
        "{chain}/logs/dedup.log",
    conda:
        "../envs/main.yaml"
    threads: 2
    resources:
        **job_resources("dedup"),
    params:
        **stage_params("dedup", "dedup"),
    shell:
        STAGE_SHELL
