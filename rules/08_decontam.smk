# Stage 8: decontamination of the deduplicated questions against the six evaluation
# benchmarks (paper §1.2; method ours). Schema: workflow/synthllm/stages/decontam.py.


rule decontam:
    input:
        unpack(
            chain_inputs(
                "decontam",
                questions="{chain}/dedup/questions.parquet",
                benchmarks=list(config["evaluate"]["benchmarks"].values()),
            )
        ),
    output:
        questions="{chain}/decontam/questions.parquet",
        hits="{chain}/decontam/hits.parquet",
        report="{chain}/decontam/report.json",
        counts="{chain}/decontam/counts.json",
    log:
        "{chain}/logs/decontam.log",
    conda:
        "../envs/main.yaml"
    threads: 2
    resources:
        **job_resources("decontam"),
    params:
        **stage_params("decontam", "decontam", benchmarks="evaluate.benchmarks"),
    shell:
        STAGE_SHELL
