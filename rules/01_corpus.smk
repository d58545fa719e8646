# Stage 1: read the corpus files named by config key corpus.sources, normalise them to one
# parquet schema, drop empty and duplicate documents, shard by doc_id. A scatter-gather
# (synthllm.stages.corpus): each job holds its own share of the corpus, never all of it.
# The parts and gathered shards are temporary: `corpus` gives the shards their final
# names once the checks on the whole corpus pass, so no later job starts before.


# scatter: read, clean and hash corpus.files_per_job files of a source, split by shard
rule corpus_part:
    input:
        files=lambda wildcards: CORPUS_PARTS[wildcards.part]["files"],
    output:
        part=temp(f"{RESULTS}/corpus_parts/{{part}}.arrow"),
        counts=temp(f"{RESULTS}/corpus_parts/{{part}}.json"),
    log:
        f"{RESULTS}/logs/corpus_part/{{part}}.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("corpus_part"),
    params:
        **stage_params(
            "corpus_part",
            n_shards="corpus.n_shards",
            on_bad_record="corpus.on_bad_record",
            batch_size="corpus.batch_size",
            job=corpus_part_job,
        ),
    shell:
        STAGE_SHELL


# only with a source's max_docs: where each such source stops reading
rule corpus_limits:
    input:
        parts=lambda wildcards: corpus_part_files("arrow", corpus_limited_parts()),
        part_counts=lambda wildcards: corpus_part_files("json", corpus_limited_parts()),
    output:
        limits=temp(f"{RESULTS}/corpus_parts/limits.json"),
    log:
        f"{RESULTS}/logs/corpus_limits.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("corpus_limits"),
    params:
        **stage_params(
            "corpus_limits",
            job=lambda wildcards: {
                "sources": corpus_source_names(),
                "max_docs": CORPUS_MAX_DOCS,
                "parts": corpus_limited_parts(),
            },
        ),
    shell:
        STAGE_SHELL


# gather: one shard's records of every part, in corpus order, deduplicated
rule corpus_shard:
    input:
        unpack(lambda wildcards: corpus_limits_input()),
        parts=corpus_part_files("arrow"),
        part_counts=corpus_part_files("json"),
    output:
        shard=temp(f"{RESULTS}/corpus_shards/shard-{{shard}}.parquet"),
        counts=temp(f"{RESULTS}/corpus_shards/shard-{{shard}}.json"),
    log:
        f"{RESULTS}/logs/corpus_shard/shard-{{shard}}.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("corpus_shard"),
    params:
        **stage_params(
            "corpus_shard",
            n_shards="corpus.n_shards",
            batch_size="corpus.batch_size",
            job=lambda wildcards: {"shard": wildcards.shard, "parts": list(CORPUS_PARTS)},
        ),
    shell:
        STAGE_SHELL


# the counts of the whole corpus and its checks; then the shards under their final names
rule corpus:
    input:
        unpack(lambda wildcards: corpus_limits_input()),
        shards=expand(rules.corpus_shard.output.shard, shard=shard_ids()),
        shard_counts=expand(rules.corpus_shard.output.counts, shard=shard_ids()),
        part_counts=corpus_part_files("json"),
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
        **stage_params(
            "corpus",
            n_shards="corpus.n_shards",
            on_bad_record="corpus.on_bad_record",
            max_skipped_share="corpus.max_skipped_share",
            min_docs_per_source="corpus.min_docs_per_source",
            job=lambda wildcards: {
                "sources": corpus_source_names(),
                "parts": list(CORPUS_PARTS),
            },
        ),
    shell:
        STAGE_SHELL
