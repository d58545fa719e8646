# Stage 2: document filtering (paper §4.1, Fig. 3). Embeddings per corpus shard; synthetic
# math documents from the syllabus as the cold-start positives; a cold-start random forest
# gives D0; T rounds of LLM ratings and a random-forest regressor give D1..DT; the kept
# documents of every shard are what the generation stages read (reference_docs).
# A forest seed is part of its job's settings: changing it refits that forest (and what
# follows) and is recorded in the iteration's report.


rule embed:
    input:
        docs=f"{RESULTS}/corpus/shard-{{shard}}.parquet",
    output:
        embeddings=f"{RESULTS}/filter/embed/shard-{{shard}}.npy",
        counts=f"{RESULTS}/filter/embed/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/filter/embed/shard-{{shard}}.log",
    conda:
        "../envs/main.yaml"
    threads: config["filter"]["threads"]
    resources:
        **job_resources("embed", config["models"]["embedding"]["gpus"]),
    params:
        model=embedding_json(),
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} embed --docs {input.docs} --model-json {params.model:q}"
        " --threads {threads} --output {output.embeddings} --counts {output.counts} > {log} 2>&1"


rule synthetic_docs:
    input:
        syllabus=config["filter"]["synthetic"]["syllabus"],
    output:
        docs=f"{RESULTS}/filter/synthetic/docs.parquet",
        counts=f"{RESULTS}/filter/synthetic/docs.counts.json",
    log:
        f"{RESULTS}/logs/filter/synthetic_docs.log",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("synthetic_docs", config["models"]["generator"]["gpus"]),
    params:
        model=model_json("generator"),
        sampling=json.dumps(config["filter"]["synthetic"]["sampling"], sort_keys=True),
        kinds=config["filter"]["synthetic"]["kinds"],
        documents=config["filter"]["synthetic"]["documents"],
        min_chars=config["filter"]["synthetic"]["min_chars"],
        chunk_size=config["generation"]["chunk_size"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} synthetic-docs --syllabus {input.syllabus} --kinds {params.kinds:q}"
        " --documents {params.documents} --min-chars {params.min_chars}"
        " --model-json {params.model:q} --sampling-json {params.sampling:q}"
        " --chunk-size {params.chunk_size}"
        " --output {output.docs} --counts {output.counts} > {log} 2>&1"


rule embed_synthetic:
    input:
        docs=rules.synthetic_docs.output.docs,
    output:
        embeddings=f"{RESULTS}/filter/synthetic/embeddings.npy",
        counts=f"{RESULTS}/filter/synthetic/embeddings.counts.json",
    log:
        f"{RESULTS}/logs/filter/embed_synthetic.log",
    conda:
        "../envs/main.yaml"
    threads: config["filter"]["threads"]
    resources:
        **job_resources("embed_synthetic", config["models"]["embedding"]["gpus"]),
    params:
        model=embedding_json(),
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} embed --docs {input.docs} --model-json {params.model:q}"
        " --threads {threads} --output {output.embeddings} --counts {output.counts} > {log} 2>&1"


rule coldstart:
    input:
        synthetic=rules.synthetic_docs.output.docs,
        synthetic_embeddings=rules.embed_synthetic.output.embeddings,
        shards=corpus_shards(),
        embeddings=embedding_files(),
    output:
        scores=filter_scores(0),
        model=f"{RESULTS}/filter/iter-0/model.joblib",
        report=f"{RESULTS}/filter/iter-0/report.json",
    log:
        f"{RESULTS}/logs/filter/coldstart.log",
    conda:
        "../envs/main.yaml"
    threads: config["filter"]["threads"]
    resources:
        **job_resources("coldstart"),
    params:
        settings=json.dumps(config["filter"]["coldstart"], sort_keys=True),
        positive_sources=config["filter"]["positive_sources"],
        seed=config["filter"]["seed"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} coldstart --synthetic-docs {input.synthetic}"
        " --synthetic-embeddings {input.synthetic_embeddings}"
        " --shards {input.shards} --embeddings {input.embeddings}"
        " --settings-json {params.settings:q} --positive-sources {params.positive_sources:q}"
        " --seed {params.seed} --threads {threads}"
        " --scores {output.scores} --model {output.model} --report {output.report} > {log} 2>&1"


rule rate:
    input:
        unpack(rate_inputs),
        shards=corpus_shards(),
    output:
        ratings=f"{RESULTS}/filter/iter-{{iteration}}/ratings.parquet",
        counts=f"{RESULTS}/filter/iter-{{iteration}}/ratings.counts.json",
    log:
        f"{RESULTS}/logs/filter/rate-{{iteration}}.log",
    wildcard_constraints:
        iteration=r"[1-9]\d*",
    conda:
        "../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("rate", config["models"]["rater"]["gpus"]),
    params:
        model=model_json("rater"),
        sampling=json.dumps(config["filter"]["finegrained"]["sampling"], sort_keys=True),
        structured=structured_flag(),
        reference_sample=config["filter"]["finegrained"]["reference_sample"],
        random_sample=config["filter"]["finegrained"]["random_sample"],
        max_doc_chars=config["filter"]["finegrained"]["max_doc_chars"],
        seed=lambda wildcards: config["filter"]["seed"] + int(wildcards.iteration),
        chunk_size=config["generation"]["chunk_size"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} rate --previous-scores {input.previous_scores}"
        " --previous-ratings {input.previous_ratings} --shards {input.shards}"
        " --model-json {params.model:q} --sampling-json {params.sampling:q} {params.structured}"
        " --reference-sample {params.reference_sample} --random-sample {params.random_sample}"
        " --max-doc-chars {params.max_doc_chars} --seed {params.seed}"
        " --chunk-size {params.chunk_size}"
        " --output {output.ratings} --counts {output.counts} > {log} 2>&1"


rule finegrained:
    input:
        ratings=filter_ratings_through,
        shards=corpus_shards(),
        embeddings=embedding_files(),
    output:
        scores=f"{RESULTS}/filter/iter-{{iteration}}/scores.parquet",
        model=f"{RESULTS}/filter/iter-{{iteration}}/model.joblib",
        report=f"{RESULTS}/filter/iter-{{iteration}}/report.json",
    log:
        f"{RESULTS}/logs/filter/finegrained-{{iteration}}.log",
    wildcard_constraints:
        iteration=r"[1-9]\d*",
    conda:
        "../envs/main.yaml"
    threads: config["filter"]["threads"]
    resources:
        **job_resources("finegrained"),
    params:
        settings=json.dumps(
            {
                k: v
                for k, v in config["filter"]["finegrained"].items()
                if k in ("threshold", "forest", "test_fraction")
            },
            sort_keys=True,
        ),
        positive_sources=config["filter"]["positive_sources"],
        seed=config["filter"]["seed"],
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} finegrained --iteration {wildcards.iteration}"
        " --ratings {input.ratings} --shards {input.shards} --embeddings {input.embeddings}"
        " --settings-json {params.settings:q} --positive-sources {params.positive_sources:q}"
        " --seed {params.seed} --threads {threads}"
        " --scores {output.scores} --model {output.model} --report {output.report} > {log} 2>&1"


rule filter_docs:
    input:
        shard=f"{RESULTS}/corpus/shard-{{shard}}.parquet",
        scores=all_filter_scores(),
    output:
        docs=f"{RESULTS}/filter/docs/shard-{{shard}}.parquet",
        counts=f"{RESULTS}/filter/docs/shard-{{shard}}.counts.json",
    log:
        f"{RESULTS}/logs/filter/docs/shard-{{shard}}.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("filter_docs"),
    params:
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} filter-docs --shard {input.shard} --scores {input.scores}"
        " --output {output.docs} --counts {output.counts} > {log} 2>&1"


rule filter_report:
    input:
        reports=filter_reports(),
        rate_counts=filter_rate_counts(),
        filter_counts=[f"{RESULTS}/filter/docs/shard-{s}.counts.json" for s in shard_ids()],
    output:
        report=f"{RESULTS}/filter/report.json",
        markdown=f"{RESULTS}/filter/report.md",
        counts=f"{RESULTS}/filter/counts.json",
    log:
        f"{RESULTS}/logs/filter/report.log",
    conda:
        "../envs/main.yaml"
    resources:
        **job_resources("filter_report"),
    params:
        synthllm=synthllm("main"),
    shell:
        "{params.synthllm} filter-report --reports {input.reports}"
        " --rate-counts {input.rate_counts} --filter-counts {input.filter_counts}"
        " --output {output.report} --markdown {output.markdown} --counts {output.counts} > {log} 2>&1"
