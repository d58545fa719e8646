# Stage 8: every checkpoint (each model of config models.train at budget 0, the base model,
# and at every training budget) on the six benchmarks: generated answers graded two ways,
# the NLL of the reference solutions, and one summary table for the scaling stage.


rule evaluate:
    input:
        checkpoint=checkpoint_dir("{model}", "{budget}"),
        train_counts=f"{RESULTS}/train/{{model}}/{{budget}}/counts.json",
        benchmarks=list(config["evaluation"]["benchmarks"].values()),
    output:
        predictions=f"{RESULTS}/eval/{{model}}/{{budget}}/predictions.parquet",
        settings=f"{RESULTS}/eval/{{model}}/{{budget}}/settings.json",
        counts=f"{RESULTS}/eval/{{model}}/{{budget}}/counts.json",
    log:
        f"{RESULTS}/logs/eval/{{model}}/{{budget}}.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("evaluate", config["evaluation"]["engine"]["gpus"]),
    params:
        data=eval_data_args(),
        engine=json.dumps(config["evaluation"]["engine"], sort_keys=True),
        max_new_tokens=config["evaluation"]["max_new_tokens"],
        chunk_size=config["evaluation"]["chunk_size"],
        grade_timeout_s=config["evaluation"]["grade_timeout_s"],
        out_dir=lambda wildcards, output: os.path.dirname(output.counts),
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} evaluate --checkpoint {input.checkpoint} --label {wildcards.model}"
        " --budget {wildcards.budget} --train-counts {input.train_counts} {params.data}"
        " --engine-json {params.engine:q} --max-new-tokens {params.max_new_tokens}"
        " --chunk-size {params.chunk_size} --grade-timeout-s {params.grade_timeout_s}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule eval_nll:
    input:
        checkpoint=checkpoint_dir("{model}", "{budget}"),
        benchmarks=list(config["evaluation"]["benchmarks"].values()),
    output:
        nll=f"{RESULTS}/eval/{{model}}/{{budget}}/nll.parquet",
        counts=f"{RESULTS}/eval/{{model}}/{{budget}}/nll.counts.json",
    log:
        f"{RESULTS}/logs/eval/{{model}}/{{budget}}.nll.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("eval_nll", min(1, config["evaluation"]["engine"]["gpus"])),
    params:
        data=eval_data_args(),
        batch_size=config["evaluation"]["nll"]["batch_size"],
        max_tokens=config["evaluation"]["nll"]["max_tokens"],
        dtype=config["evaluation"]["nll"]["dtype"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} eval-nll --checkpoint {input.checkpoint} {params.data}"
        " --batch-size {params.batch_size} --max-tokens {params.max_tokens}"
        " --dtype {params.dtype} --output {output.nll} --counts {output.counts} > {log} 2>&1"


rule eval_summary:
    input:
        eval_summary_inputs,
    output:
        summary=f"{RESULTS}/eval/summary.parquet",
        csv=report(
            f"{RESULTS}/eval/summary.csv",
            category="Evaluation",
            labels={"item": "accuracy and NLL per checkpoint"},
        ),
        markdown=f"{RESULTS}/eval/summary.md",
    log:
        f"{RESULTS}/logs/eval/summary.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("eval_summary"),
    params:
        eval_dirs=lambda wildcards: " ".join(eval_dirs()),
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} eval-summary --eval-dirs {params.eval_dirs} --output {output.summary}"
        " --csv {output.csv} --markdown {output.markdown} > {log} 2>&1"
