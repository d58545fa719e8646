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
        out_dir=graph_dir,
        eps=config["graph"]["eps"],
        synthllm=synthllm("graph"),
    shell:
        "{params.synthllm} graph --extracted {input.extracted} --subset {wildcards.subset}"
        " --eps {params.eps} --out-dir {params.out_dir} --counts {output.counts} > {log} 2>&1"


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
        graph_dir=graph_dir,
        walks=json.dumps(
            {k: v for k, v in config["graph"]["walks"].items() if k != "seed"}, sort_keys=True
        ),
        eps=config["graph"]["eps"],
        seed=config["graph"]["walks"]["seed"],
        references=config["graph"]["references"],
        synthllm=synthllm("graph"),
    shell:
        "NUMBA_NUM_THREADS={threads} {params.synthllm} walks --graph-dir {params.graph_dir}"
        " --walks-json {params.walks:q} --eps {params.eps} --seed {params.seed}"
        " --references {params.references} --output {output.walks} --counts {output.counts}"
        " > {log} 2>&1"
