# Stage 4: the Level-3 concept graph of every subset as flat arrays (Eq. 5), then random
# walks over it (Eq. 6) and each sampled set's reference documents by exact Jaccard
# similarity; beside the walks, the graph-tool graph of record built from the same arrays.
# One job per subset for each; nothing on the way to the questions waits for graph-tool.


rule concept_graph:
    input:
        unpack(
            chain_inputs(
                "concept_graph",
                extracted=expand("{{chain}}/extract/shard-{shard}.parquet", shard=shard_ids()),
            )
        ),
    output:
        sampler="{chain}/graph/subset-{subset}/sampler.npz",
        nodes="{chain}/graph/subset-{subset}/nodes.parquet",
        docs="{chain}/graph/subset-{subset}/docs.parquet",
        report="{chain}/graph/subset-{subset}/report.json",
        counts="{chain}/graph/subset-{subset}/counts.json",
    log:
        "{chain}/logs/graph/subset-{subset}.log",
    conda:
        "../envs/graph.yaml"
    resources:
        **job_resources("concept_graph"),
    params:
        **stage_params(
            "concept_graph",
            env="graph",
            job=lambda wildcards: {"subset": wildcards.subset},
        ),
    shell:
        STAGE_SHELL


rule graph_record:
    input:
        sampler="{chain}/graph/subset-{subset}/sampler.npz",
        nodes="{chain}/graph/subset-{subset}/nodes.parquet",
        report="{chain}/graph/subset-{subset}/report.json",
    output:
        graph="{chain}/graph/subset-{subset}/graph.gt",
        counts="{chain}/graph/subset-{subset}/graph.counts.json",
    log:
        "{chain}/logs/graph_record/subset-{subset}.log",
    conda:
        "../envs/graph.yaml"
    resources:
        **job_resources("graph_record"),
    params:
        **stage_params(
            "graph_record",
            env="graph",
            job=lambda wildcards: {"subset": wildcards.subset},
            eps="graph.eps",
        ),
    shell:
        STAGE_SHELL


rule walks:
    input:
        sampler="{chain}/graph/subset-{subset}/sampler.npz",
        nodes="{chain}/graph/subset-{subset}/nodes.parquet",
        docs="{chain}/graph/subset-{subset}/docs.parquet",
    output:
        walks="{chain}/walks/subset-{subset}.parquet",
        counts="{chain}/walks/subset-{subset}.counts.json",
    log:
        "{chain}/logs/walks/subset-{subset}.log",
    conda:
        "../envs/graph.yaml"
    threads: 2
    resources:
        **job_resources("walks"),
    params:
        **stage_params(
            "walks",
            env="graph",
            job=lambda wildcards: {"subset": wildcards.subset},
            walks="graph.walks",
            eps="graph.eps",
            references="graph.references",
        ),
    shell:
        STAGE_SHELL
