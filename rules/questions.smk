# Stage 5: Level-1 and Level-2 questions per reference document (paper Figs. 8, 9), Level-3
# questions per sampled concept set (Fig. 10), then one answer per question. One job per
# shard and level.


rule level1:
    input:
        docs=reference_docs,
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
        model=model_json("generator"),
        sampling=sampling_json("level1"),
        structured=structured_flag(),
        max_doc_chars=config["generation"]["max_doc_chars"],
        max_docs=max_docs_flag(),
        calls_per_doc=config["generation"]["level1"]["calls_per_doc"],
        questions_per_doc=config["generation"]["level1"]["questions_per_doc"],
        chunk_size=config["generation"]["chunk_size"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} level1 --docs {input.docs} --model-json {params.model:q}"
        " --sampling-json {params.sampling:q} {params.structured}"
        " --max-doc-chars {params.max_doc_chars} {params.max_docs}"
        " --calls-per-doc {params.calls_per_doc} --questions-per-doc {params.questions_per_doc}"
        " --chunk-size {params.chunk_size}"
        " --output {output.questions} --counts {output.counts} > {log} 2>&1"


rule level2:
    input:
        docs=reference_docs,
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
        model=model_json("generator"),
        sampling=sampling_json("level2"),
        structured=structured_flag(),
        max_doc_chars=config["generation"]["max_doc_chars"],
        calls_per_doc=config["generation"]["level2"]["calls_per_doc"],
        questions_per_doc=config["generation"]["level2"]["questions_per_doc"],
        chunk_size=config["generation"]["chunk_size"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} level2 --docs {input.docs} --extracted {input.extracted}"
        " --model-json {params.model:q} --sampling-json {params.sampling:q} {params.structured}"
        " --max-doc-chars {params.max_doc_chars}"
        " --calls-per-doc {params.calls_per_doc} --questions-per-doc {params.questions_per_doc}"
        " --chunk-size {params.chunk_size}"
        " --output {output.questions} --counts {output.counts} > {log} 2>&1"


rule level3:
    input:
        walks=expand(f"{RESULTS}/walks/subset-{{subset}}.parquet", subset=subset_ids()),
        docs=all_reference_docs,
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
        model=model_json("generator"),
        sampling=sampling_json("level3"),
        structured=structured_flag(),
        max_doc_chars=config["generation"]["max_doc_chars"],
        calls_per_set=config["generation"]["level3"]["calls_per_set"],
        questions_per_set=config["generation"]["level3"]["questions_per_set"],
        max_sets=(
            ""
            if config["generation"]["level3"]["max_sets_per_shard"] is None
            else f"--max-sets {config['generation']['level3']['max_sets_per_shard']}"
        ),
        chunk_size=config["generation"]["chunk_size"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} level3 --walks {input.walks} --docs {input.docs} --shard {wildcards.shard}"
        " --model-json {params.model:q} --sampling-json {params.sampling:q} {params.structured}"
        " --max-doc-chars {params.max_doc_chars} {params.max_sets}"
        " --calls-per-set {params.calls_per_set} --questions-per-set {params.questions_per_set}"
        " --chunk-size {params.chunk_size}"
        " --output {output.questions} --counts {output.counts} > {log} 2>&1"


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
        model=model_json("answerer"),
        sampling=sampling_json("answer"),
        chunk_size=config["generation"]["chunk_size"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} answer --questions {input.questions}"
        " --model-json {params.model:q} --sampling-json {params.sampling:q}"
        " --chunk-size {params.chunk_size}"
        " --output {output.answers} --counts {output.counts} > {log} 2>&1"
