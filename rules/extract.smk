# Stage 3: topics and key concepts of every reference document (paper Fig. 11), one job
# per shard on the generator model.


rule extract:
    input:
        docs=reference_docs,
    output:
        extracted=f"{RESULTS}/extract/shard-{{shard}}.parquet",
        counts=f"{RESULTS}/extract/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/extract/shard-{{shard}}.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("extract", config["models"]["generator"]["gpus"]),
    params:
        model=model_json("generator"),
        sampling=sampling_json("extract"),
        structured=structured_flag(),
        max_doc_chars=config["generation"]["max_doc_chars"],
        max_docs=max_docs_flag(),
        min_kcs=config["generation"]["extract"]["min_kcs"],
        max_kcs=config["generation"]["extract"]["max_kcs"],
        chunk_size=config["generation"]["chunk_size"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} extract --docs {input.docs} --model-json {params.model:q}"
        " --sampling-json {params.sampling:q} {params.structured}"
        " --max-doc-chars {params.max_doc_chars} {params.max_docs}"
        " --min-kcs {params.min_kcs} --max-kcs {params.max_kcs}"
        " --chunk-size {params.chunk_size}"
        " --output {output.extracted} --counts {output.counts} > {log} 2>&1"
