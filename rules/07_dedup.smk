# Stage 7: dedup of the answered questions of all levels, within and across levels (paper
# §1.2; method ours). Schema: workflow/synthllm/stages/dedup.py.


rule dedup:
    input:
        answers=expand(f"{RESULTS}/answer/shard-{{shard}}.parquet", shard=shard_ids()),
    output:
        questions=f"{RESULTS}/dedup/questions.parquet",
        dropped=f"{RESULTS}/dedup/dropped.parquet",
        counts=f"{RESULTS}/dedup/counts.json",
    log:
        f"{RESULTS}/logs/dedup.log",
    conda:
        "../envs/main.yaml"
    threads: 2
    resources:
        **job_resources("dedup"),
    params:
        **stage_params("dedup", "dedup"),
    shell:
        STAGE_SHELL
