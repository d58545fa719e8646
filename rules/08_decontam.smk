# Stage 8: decontamination of the deduplicated questions against the six evaluation
# benchmarks (paper §1.2; method ours), and its optional second opinion (config key
# decontam_judge). Schemas: workflow/synthllm/stages/decontam.py, decontam_judge.py.


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


rule decontam_judge:
    input:
        unpack(
            chain_inputs(
                "decontam_judge",
                questions="{chain}/decontam/questions.parquet",
                benchmarks=list(config["evaluate"]["benchmarks"].values()),
            )
        ),
    output:
        questions="{chain}/decontam_judge/questions.parquet",
        judged="{chain}/decontam_judge/judged.parquet",
        counts="{chain}/decontam_judge/counts.json",
    log:
        "{chain}/logs/decontam_judge.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("decontam_judge", config["models"]["generator"]["gpus"]),
    params:
        **stage_params(
            "decontam_judge",
            top_k="decontam_judge.top_k",
            min_similarity="decontam_judge.min_similarity",
            sampling="decontam_judge.sampling",
            model="models.generator",
            embedding="models.embedding",
            structured="generation.structured",
            benchmarks="evaluate.benchmarks",
            chunk_size="generation.chunk_size",
            engine_keepalive_s="generation.engine_keepalive_s",
        ),
    shell:
        STAGE_SHELL
