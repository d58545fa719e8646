# Stage 4: the Level-3 concept graph of every subset (graph-tool, Eq. 5), then random walks
# over it (Eq. 6) and each sampled set's reference documents by exact Jaccard similarity.
# One job per subset for each; the walks read the graph's flat arrays, not graph-tool.


rule concept_graph:
    input:
        extracted=expand(f"{RESULTS}/extract/shard-{{shard}}.parquet", shard=shard_ids()),
    output:
        graph=f"{RESULTS}/graph/subset-{{subset}}/graph.gt",
        sampler=f"{RESULTS}/graph/subset-{{subset}}/sampler.npz",
        nodes=f"{RESULTS}/graph/subset-{{subset}}/nodes.parquet",
        docs=f"{RESULTS}/graph/subset-{{subset}}/docs.parquet",
        report=f"{RESULTS}/graph/subset-{{subset}}/report.json",
        counts=f"{RESULTS}/graph/subset-{{subset}}/counts.json",
    log:
        f"{RESULTS}/logs/graph/subset-{{subset}}.log",
    conda:
        "../envs/graph.yaml"
    resources:
        **job_resources("concept_graph"),
    params:
        **stage_params(
            "concept_graph",
            env="graph",
            job=lambda wildcards: {"subset": wildcards.subset},
            eps="graph.eps",
        ),
    shell:
        STAGE_SHELL


rule walks:
    input:
        sampler=f"{RESULTS}/graph/subset-{{subset}}/sampler.npz",
        nodes=f"{RESULTS}/graph/subset-{{subset}}/nodes.parquet",
        docs=f"{RESULTS}/graph/subset-{{subset}}/docs.parquet",
    output:
        walks=f"{RESULTS}/walks/subset-{{subset}}.parquet",
        counts=f"{RESULTS}/walks/subset-{{subset}}.counts.json",
    log:
        f"{RESULTS}/logs/walks/subset-{{subset}}.log",
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
