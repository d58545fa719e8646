"""The table of the pipeline's stages: one command per Snakemake rule, of the same name.

Every stage command takes the same four JSON arguments, built by `stage_params` in
rules/common.smk, and calls its function by keyword:

    synthllm <stage> --inputs '{"docs": ...}' --outputs '{"questions": ..., "counts": ...}'
                     --settings '{...}' --execution '{...}'

    run(inputs=..., outputs=..., settings=..., execution=...)

`settings` changes the outputs (rule params, generation fingerprints); `execution` only
changes how the job runs (synthllm.settings). The other commands (TOOLS) are set-up and
reading aids with arguments of their own.

The modules of this package, one per pipeline stage (named after the stage) and its helpers,
in pipeline order, as the rule files rules/01_corpus.smk ... rules/12_scaling.smk:

   1 corpus: corpus (corpus_part, corpus_limits, corpus_shard, corpus), corpus_sources,
     corpus_parts
   2 filter: embed, synthetic_docs, classifiers (coldstart, finegrained), rate, filter_docs,
     filter_report
   3 extract: extract
   4 graph: concept_graph, graph_arrays, graph_record, walks
   5 questions: level1, level2, level3_sets, level3
   6 answer: answer
   7 dedup: dedup
   8 decontam: decontam, decontam_judge
   9 mixtures: mixtures (sft_pool, mixture), length_stats
  10 train: base_model, train_tokens, train, train_data, train_settings
  11 evaluate: outside_model, evaluate, eval_nll, eval_summary
  12 scaling: scaling/
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Command:
    name: str
    target: str  # module:function, the module under synthllm, imported when the command runs
    help: str
    arguments: tuple = field(default=())  # (flags, argparse keywords) of a tool command
    # resumes a killed job from what it wrote (generation's progress log, training's
    # checkpoints): its retries ask for the same limits, and SLURM signals it before its limit
    resumable: bool = False
    # one job per shard on an LLM engine: on SLURM, config generation.shards_per_job of its
    # jobs run in one allocation, one after another, and share one engine load
    shard_grouped: bool = False


STAGES = (
    # 1 corpus
    Command("corpus_part", "stages.corpus:run_part", "read, normalise and hash some corpus files"),
    Command("corpus_limits", "stages.corpus:run_limits", "where the max_docs sources stop"),
    Command("corpus_shard", "stages.corpus:run_shard", "one shard of every part, deduplicated"),
    Command("corpus", "stages.corpus:run", "the corpus's counts and checks, then its shards"),
    # 2 filter
    Command("embed", "stages.embed:run", "mean-pooled, L2-normalised document embeddings"),
    Command(
        "synthetic_docs", "stages.synthetic_docs:run", "synthetic math documents", resumable=True
    ),
    Command("embed_synthetic", "stages.embed:run", "embeddings of the synthetic documents"),
    Command("coldstart", "stages.classifiers:run_coldstart", "cold-start classifier: D0"),
    Command("rate", "stages.rate:run", "the rater LLM scores D(t-1) and a sample", resumable=True),
    Command("finegrained", "stages.classifiers:run_finegrained", "fine-grained regressor: D(t)"),
    Command("filter_docs", "stages.filter_docs:run", "the kept documents of a shard"),
    Command("filter_report", "stages.filter_report:run", "sizes and checks of every round"),
    # 3 extract
    Command(
        "extract",
        "stages.extract:run",
        "topics and key concepts per document",
        resumable=True,
        shard_grouped=True,
    ),
    # 4 graph
    Command(
        "concept_graph",
        "stages.concept_graph:run",
        "the Level-3 concept graph of a subset, as flat arrays",
    ),
    Command("graph_record", "stages.graph_record:run", "the graph-tool graph of a subset"),
    Command("walks", "stages.walks:run", "random-walk concept sets and reference documents"),
    # 5 questions
    Command(
        "level1",
        "stages.level1:run",
        "Level-1 questions per document",
        resumable=True,
        shard_grouped=True,
    ),
    Command(
        "level2",
        "stages.level2:run",
        "Level-2 questions per document",
        resumable=True,
        shard_grouped=True,
    ),
    Command("level3_sets", "stages.level3_sets:run", "concept sets of each Level-3 shard"),
    Command(
        "level3",
        "stages.level3:run",
        "Level-3 questions per concept set",
        resumable=True,
        shard_grouped=True,
    ),
    # 6 answer
    Command(
        "answer", "stages.answer:run", "one answer per question", resumable=True, shard_grouped=True
    ),
    # 7 dedup, 8 decontam, 9 mixtures
    Command("dedup", "stages.dedup:run", "exact and near-duplicate questions"),
    Command("decontam", "stages.decontam:run", "drop samples copied from a benchmark"),
    Command(
        "decontam_judge",
        "stages.decontam_judge:run",
        "the generator judges samples nearest to a benchmark question (optional)",
        resumable=True,
    ),
    Command("sft_pool", "stages.mixtures:run_pool", "SFT records with exact token counts"),
    Command("mixture", "stages.mixtures:run_subset", "one nested subset of the SFT pool"),
    Command("length_stats", "stages.length_stats:run", "question and answer lengths per level"),
    # 10 train
    Command("base_model", "stages.base_model:run_base_model", "budget 0: the untrained base"),
    Command(
        "train_tokens",
        "stages.train_tokens:run",
        "token ids and loss masks of one mixture, once (memory-mapped by training)",
    ),
    Command(
        "train",
        "stages.train:run",
        "fine-tune one model on one mixture (DeepSpeed)",
        resumable=True,
    ),
    # 11 evaluate
    Command("outside_model", "stages.outside_model:run", "a model evaluated as it is, staged"),
    Command(
        "evaluate", "stages.evaluate:run", "generate and grade on the benchmarks", resumable=True
    ),
    Command("eval_nll", "stages.eval_nll:run_nll", "per-token NLL of reference solutions"),
    Command("eval_summary", "stages.eval_summary:run_summary", "every checkpoint, one table"),
    # 12 scaling
    Command("scaling", "stages.scaling.stage:run", "scaling-law fits, tables and figures"),
    # the paper's other experiments
    Command("experiment_docs", "experiments.docs:run_docs", "the documents of Figs. 5-6"),
    Command("diversity", "experiments.diversity:run", "within-document similarity (Fig. 5)"),
    Command("ablation", "experiments.ablation:run", "Level ablation table (Table 3)"),
    Command(
        "augmentation_expand",
        "experiments.augmentation:run",
        "rephrase or persona (Fig. 6)",
        resumable=True,
    ),
    Command(
        "augmentation_usable_answers",
        "experiments.augmentation:run_usable",
        "answered questions of a usable status, no dedup",
    ),
    Command(
        "augmentation",
        "experiments.augmentation:run_figure",
        "Fig. 6 against the sample count",
    ),
)

TOOLS = (
    Command(
        "status",
        "setup.status:main",
        "print the counts table of a results folder",
        ((("results",), {"nargs": "?", "default": "results"}),),
    ),
    Command(
        "plan",
        "setup.plan.dag:main",
        "jobs, GPU-hours, model loads and disk of a config, before any job runs",
        (
            (("--configfile",), {"action": "append", "help": "as snakemake's; repeatable"}),
            (("targets",), {"nargs": "*", "help": "rules or files, as snakemake's"}),
            (("--forceall",), {"action": "store_true", "help": "every job, as if none had run"}),
        ),
    ),
    Command(
        "fetch-models",
        "setup.fetch_models:main",
        "download every hub model a config names into models.hub.home (once, with internet)",
        (
            (("--configfile",), {"action": "append", "help": "as snakemake's; repeatable"}),
            (("--dry-run",), {"action": "store_true", "help": "list the models, fetch nothing"}),
        ),
    ),
    Command(
        "prepare-models",
        "core.models:main",
        "convert the SmolLM2 GGUF into an HF folder",
        ((("--dest",), {"default": "resources/models/SmolLM2-135M-Instruct"}),),
    ),
    Command(
        "demo-corpus",
        "setup.demo_corpus:main",
        "fill resources/demo_corpus for the embedded default",
        (
            (("--dest",), {"default": "resources/demo_corpus"}),
            (("--shared",), {"default": "../shared/data/corpus", "help": "used when present"}),
        ),
    ),
    Command(
        "envs",
        "setup.envs:main",
        "write envs/*.yaml, the clusters' conda envs, from pyproject.toml's pins",
        ((("--check",), {"action": "store_true", "help": "write nothing; fail if one is stale"}),),
    ),
)
