# Stage 1: read the corpus files named by config key corpus.sources, normalise them to one
# parquet schema, drop empty and duplicate documents, shard by doc_id.


rule corpus:
    input:
        corpus_input_files(),
    output:
        shards=corpus_shards(),
        counts=f"{RESULTS}/corpus/counts.json",
    log:
        f"{RESULTS}/logs/corpus.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("corpus"),
    params:
        sources=json.dumps(config["corpus"]["sources"]),
        n_shards=config["corpus"]["n_shards"],
        batch_size=config["corpus"]["batch_size"],
        on_bad_record=config["corpus"]["on_bad_record"],
        out_dir=lambda wildcards, output: os.path.dirname(output.counts),
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} corpus --sources-json {params.sources:q}"
        " --n-shards {params.n_shards} --batch-size {params.batch_size}"
        " --on-bad-record {params.on_bad_record}"
        " --out-dir {params.out_dir} --counts {output.counts} 2> {log}"
