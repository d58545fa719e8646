# Question diversity (paper §6 Fig. 5): Level-1 and Level-2 questions on the experiment
# documents, up to config diversity.questions_per_doc each (paper 50), by the main chain's
# level1 and level2 rules in a chain of its own; then within-document similarity of their
# all-MiniLM-L6-v2 embeddings (workflow/synthllm/experiments/diversity.py).
# Target: `snakemake diversity`.

DIVERSITY = f"{RESULTS}/diversity"


register_chain(
    Chain(
        DIVERSITY,
        inputs={
            "level1": {"docs": experiment_docs()},
            "level2": {"docs": experiment_docs(), "extracted": experiment_extract()},
        },
        jobs={
            "level1": lambda wildcards: {**diversity_level_job(wildcards), "max_docs": None},
            "level2": diversity_level_job,
        },
    )
)


rule diversity:
    input:
        level1=f"{DIVERSITY}/level1/shard-{ONE_SHARD}.parquet",
        level2=f"{DIVERSITY}/level2/shard-{ONE_SHARD}.parquet",
    output:
        pairs=f"{DIVERSITY}/pairs.parquet",
        summary=report(
            f"{DIVERSITY}/summary.csv",
            caption="../../report/experiments/diversity_summary.rst",
            category="Question diversity",
            labels={"item": "similarity statistics per level"},
        ),
        summary_md=f"{DIVERSITY}/summary.md",
        fig5=report(
            f"{DIVERSITY}/fig5.png",
            caption="../../report/experiments/fig5.rst",
            category="Question diversity",
            labels={"item": "Fig. 5: within-document similarity"},
        ),
        fig5_pdf=f"{DIVERSITY}/fig5.pdf",
        counts=f"{DIVERSITY}/counts.json",
    log:
        f"{DIVERSITY}/logs/diversity.log",
    conda:
        "../../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("diversity", config["diversity"]["embedding"]["gpus"]),
    params:
        **stage_params("diversity", embedding="diversity.embedding", bins="diversity.bins"),
    shell:
        STAGE_SHELL
