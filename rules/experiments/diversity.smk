# Question diversity (paper §6 Fig. 5): Level-1 and Level-2 questions on the experiment
# documents, up to config diversity.questions_per_doc each (paper 50), by the pipeline's own
# Level-1 and Level-2 rules; then within-document similarity of their all-MiniLM-L6-v2
# embeddings (workflow/synthllm/experiments/diversity.py). Target: `snakemake diversity`.


use rule level1 as diversity_level1 with:
    input:
        docs=experiment_docs(),
    output:
        questions=f"{RESULTS}/diversity/level1.parquet",
        counts=f"{RESULTS}/diversity/level1.counts.json",
    log:
        f"{RESULTS}/logs/diversity/level1.log",
    params:
        # a use-rule's params replace the original's by name: all of stage_params, again
        **stage_params(
            "level1",
            "generation.level1",
            model="models.generator",
            structured="generation.structured",
            max_doc_chars="generation.max_doc_chars",
            chunk_size="generation.chunk_size",
            calls_per_doc="diversity.calls_per_doc",
            questions_per_doc="diversity.questions_per_doc",
            job=lambda wildcards: {"max_docs": None},  # every experiment document
        ),


use rule level2 as diversity_level2 with:
    input:
        docs=experiment_docs(),
        extracted=experiment_extract(),
    output:
        questions=f"{RESULTS}/diversity/level2.parquet",
        counts=f"{RESULTS}/diversity/level2.counts.json",
    log:
        f"{RESULTS}/logs/diversity/level2.log",
    params:
        **stage_params(
            "level2",
            "generation.level2",
            model="models.generator",
            structured="generation.structured",
            max_doc_chars="generation.max_doc_chars",
            chunk_size="generation.chunk_size",
            calls_per_doc="diversity.calls_per_doc",
            questions_per_doc="diversity.questions_per_doc",
        ),


rule diversity:
    input:
        level1=f"{RESULTS}/diversity/level1.parquet",
        level2=f"{RESULTS}/diversity/level2.parquet",
    output:
        pairs=f"{RESULTS}/diversity/pairs.parquet",
        summary=report(
            f"{RESULTS}/diversity/summary.csv",
            caption="../../report/experiments/diversity_summary.rst",
            category="Question diversity",
            labels={"item": "similarity statistics per level"},
        ),
        summary_md=f"{RESULTS}/diversity/summary.md",
        fig5=report(
            f"{RESULTS}/diversity/fig5.png",
            caption="../../report/experiments/fig5.rst",
            category="Question diversity",
            labels={"item": "Fig. 5: within-document similarity"},
        ),
        fig5_pdf=f"{RESULTS}/diversity/fig5.pdf",
        counts=f"{RESULTS}/diversity/counts.json",
    log:
        f"{RESULTS}/logs/diversity/diversity.log",
    conda:
        "../../envs/main.yaml"
    threads: config["generation"]["threads"]
    resources:
        **job_resources("diversity", config["diversity"]["embedding"]["gpus"]),
    params:
        **stage_params("diversity", embedding="diversity.embedding", bins="diversity.bins"),
    shell:
        STAGE_SHELL
