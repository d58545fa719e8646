"""The table of the pipeline's stages: one command per Snakemake rule, of the same name.

Every stage command takes the same four JSON arguments, built by `stage_params` in
rules/common.smk, and calls its function by keyword:

    synthllm <stage> --inputs '{"docs": ...}' --outputs '{"questions": ..., "counts": ...}'
                     --settings '{...}' --execution '{...}'

    run(inputs=..., outputs=..., settings=..., execution=...)

`settings` changes the outputs (rule params, generation fingerprints); `execution` only
changes how the job runs (synthllm.settings). The other commands (TOOLS) are set-up and
reading aids with arguments of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Command:
    name: str
    target: str  # module:function, imported only when the command runs
    help: str
    arguments: tuple = field(default=())  # (flags, argparse keywords) of a tool command


STAGES = (
    # 1 corpus
    Command("corpus", "synthllm.corpus:run", "read, normalise, deduplicate and shard the corpus"),
    # 2 filter
    Command("embed", "synthllm.embed:run", "mean-pooled, L2-normalised document embeddings"),
    Command("synthetic_docs", "synthllm.synthetic_docs:run", "synthetic math documents"),
    Command("embed_synthetic", "synthllm.embed:run", "embeddings of the synthetic documents"),
    Command("coldstart", "synthllm.filter:run_coldstart", "cold-start classifier: D0"),
    Command("rate", "synthllm.rate:run", "the rater LLM scores D(t-1) and a sample"),
    Command("finegrained", "synthllm.filter:run_finegrained", "fine-grained regressor: D(t)"),
    Command("filter_docs", "synthllm.filter_docs:run", "the kept documents of a shard"),
    Command("filter_report", "synthllm.filter_report:run", "sizes and checks of every round"),
    # 3 extract
    Command("extract", "synthllm.extract:run", "topics and key concepts per document"),
    # 4 graph
    Command("concept_graph", "synthllm.graph:run", "the Level-3 concept graph of a subset"),
    Command("walks", "synthllm.walks:run", "random-walk concept sets and reference documents"),
    # 5 questions and answers
    Command("level1", "synthllm.level1:run", "Level-1 questions per document"),
    Command("level2", "synthllm.level2:run", "Level-2 questions per document"),
    Command("level3_sets", "synthllm.level3_sets:run", "concept sets of each Level-3 shard"),
    Command("level3", "synthllm.level3:run", "Level-3 questions per concept set"),
    Command("answer", "synthllm.answer:run", "one answer per question"),
    # 6 dedup, decontamination, mixtures
    Command("dedup", "synthllm.dedup:run", "exact and near-duplicate questions"),
    Command("decontam", "synthllm.decontam:run", "drop samples copied from a benchmark"),
    Command("sft_pool", "synthllm.mixtures:run_pool", "SFT records with exact token counts"),
    Command("mixture", "synthllm.mixtures:run_subset", "one nested subset of the SFT pool"),
    # 7 train
    Command("base_model", "synthllm.base_model:run_base_model", "budget 0: the untrained base"),
    Command("train", "synthllm.train:run", "fine-tune one model on one mixture (DeepSpeed)"),
    # 8 evaluate
    Command("evaluate", "synthllm.evaluate:run", "generate and grade on the benchmarks"),
    Command("eval_nll", "synthllm.eval_nll:run_nll", "per-token NLL of reference solutions"),
    Command("eval_summary", "synthllm.eval_summary:run_summary", "every checkpoint, one table"),
    # 9 scaling
    Command("scaling", "synthllm.scaling.stage:run", "scaling-law fits, tables and figures"),
    # the paper's other experiments
    Command("experiment_docs", "synthllm.experiments:run_docs", "the documents of Figs. 5-6"),
    Command("diversity", "synthllm.diversity:run", "within-document similarity (Fig. 5)"),
    Command("ablation", "synthllm.ablation:run", "Level ablation table (Table 3)"),
    Command("augmentation_expand", "synthllm.augmentation:run", "rephrase or persona (Fig. 6)"),
    Command(
        "augmentation_usable_answers",
        "synthllm.augmentation:run_usable",
        "answered questions of a usable status, no dedup",
    ),
    Command("augmentation", "synthllm.augmentation:run_figure", "Fig. 6 against the sample count"),
)

TOOLS = (
    Command(
        "status",
        "synthllm.status:main",
        "print the counts table of a results folder",
        ((("results",), {"nargs": "?", "default": "results"}),),
    ),
    Command(
        "plan",
        "synthllm.plan.dag:main",
        "jobs, GPU-hours, model loads and disk of a config, before any job runs",
        (
            (("--configfile",), {"action": "append", "help": "as snakemake's; repeatable"}),
            (("targets",), {"nargs": "*", "help": "rules or files, as snakemake's"}),
            (("--forceall",), {"action": "store_true", "help": "every job, as if none had run"}),
        ),
    ),
    Command(
        "prepare-models",
        "synthllm.models:main",
        "convert the SmolLM2 GGUF into an HF folder",
        ((("--dest",), {"default": "resources/models/SmolLM2-135M-Instruct"}),),
    ),
    Command(
        "demo-corpus",
        "synthllm.demo_corpus:main",
        "fill resources/demo_corpus for the embedded default",
        (
            (("--dest",), {"default": "resources/demo_corpus"}),
            (("--shared",), {"default": "../shared/data/corpus", "help": "used when present"}),
        ),
    ),
)
