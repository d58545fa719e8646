# Stage 6: dedup of the answered questions of all levels, decontamination against the six
# evaluation benchmarks, the SFT pool with exact token counts, and nested mixtures at the
# training budgets (paper §1.2, §1.4, §3). Schemas: workflow/synthllm/{dedup,decontam,mixtures}.py.


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
        near=json.dumps(config["dedup"]["near"], sort_keys=True),
        statuses=" ".join(config["dedup"]["answer_statuses"]),
        synthllm=synthllm("main"),
    shell:
        "NUMBA_NUM_THREADS={threads} {params.synthllm} dedup --answers {input.answers}"
        " --near-json {params.near:q} --answer-statuses {params.statuses} --output {output.questions} --dropped {output.dropped}"
        " --counts {output.counts} > {log} 2>&1"


rule decontam:
    input:
        questions=f"{RESULTS}/dedup/questions.parquet",
        benchmarks=list(config["evaluation"]["benchmarks"].values()),
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
        benchmarks=json.dumps(config["evaluation"]["benchmarks"], sort_keys=True),
        ngram=config["decontam"]["ngram"],
        synthllm=synthllm("main"),
    shell:
        "NUMBA_NUM_THREADS={threads} {params.synthllm} decontam --questions {input.questions}"
        " --benchmarks-json {params.benchmarks:q} --ngram {params.ngram}"
        " --output {output.questions} --hits {output.hits} --report {output.report}"
        " --counts {output.counts} > {log} 2>&1"


rule sft_pool:
    input:
        questions=f"{RESULTS}/decontam/questions.parquet",
    output:
        pool=f"{RESULTS}/mixtures/pool.parquet",
        counts=f"{RESULTS}/mixtures/pool.counts.json",
    log:
        f"{RESULTS}/logs/sft_pool.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("sft_pool"),
    params:
        tokenizer=config["mixtures"]["tokenizer"],
        chat_template=chat_template_flag(),
        system_prompt=config["chat"]["system_prompt"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} sft-pool --questions {input.questions} --tokenizer {params.tokenizer}"
        " --system-prompt {params.system_prompt:q} {params.chat_template} --output {output.pool}"
        " --counts {output.counts} > {log} 2>&1"


rule mixture:
    input:
        pool=f"{RESULTS}/mixtures/pool.parquet",
    output:
        samples=f"{RESULTS}/mixtures/{{mixture}}/{{budget}}.parquet",
        counts=f"{RESULTS}/mixtures/{{mixture}}/{{budget}}.counts.json",
    log:
        f"{RESULTS}/logs/mixtures/{{mixture}}-{{budget}}.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("mixture"),
    params:
        spec=mixture_set_json,
        seed=config["mixtures"]["seed"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} mixture --pool {input.pool} --name {wildcards.mixture}"
        " --set-json {params.spec:q} --samples {wildcards.budget} --seed {params.seed}"
        " --output {output.samples} --counts {output.counts} > {log} 2>&1"
