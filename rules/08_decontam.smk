# Stage 8: decontamination of the deduplicated questions against the six evaluation
# benchmarks (paper §1.2; method ours). Schema: workflow/synthllm/stages/decontam.py.


rule decontam:
    input:
        questions=f"{RESULTS}/dedup/questions.parquet",
        benchmarks=list(config["evaluate"]["benchmarks"].values()),
    output:
        questions=f"{RESULTS}/decontam/questions.parquet",
        hits=f"{RESULTS}/decontam/hits.parquet",
        report=f"{RESULTS}/decontam/report.json",
        counts=f"{RESULTS}/decontam/counts.json",
    log:
        f"{RESULTS}/logs/decontam.log",
    conda:
        "../envs/main.yaml"
    threads: 2
    resources:
        **job_resources("decontam"),
    params:
        **stage_params("decontam", "decontam", benchmarks="evaluate.benchmarks"),
    shell:
        STAGE_SHELL
