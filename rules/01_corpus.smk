# Stage 1: read the corpus files named by config key corpus.sources, normalise them to one
# parquet schema, drop empty and duplicate documents, shard by doc_id.


rule corpus:
    input:
        files=corpus_input_files(),
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
        **stage_params("corpus", "corpus"),
    shell:
        STAGE_SHELL
