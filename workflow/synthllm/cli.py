"""The single command-line entry point: `synthllm <stage> ...`.

Each Snakemake rule is a thin shell around one of these subcommands; every tunable arrives
as an argument, so the rule's params say everything the job depends on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _corpus(args: argparse.Namespace) -> None:
    from synthllm.corpus import Source, build_shards

    sources = [Source.from_config(i, s) for i, s in enumerate(json.loads(args.sources_json))]
    counts = build_shards(
        sources,
        args.out_dir,
        n_shards=args.n_shards,
        batch_size=args.batch_size,
        on_bad_record=args.on_bad_record,
        counts_path=args.counts,
    )
    logging.getLogger("synthllm").info(
        "corpus: %d in, %d out, dropped %s", counts["in"], counts["out"], counts["dropped"]
    )


def _scaling(args: argparse.Namespace) -> None:
    from synthllm.scaling import run

    counts = run(args.summary, args.out_dir, args.counts, json.loads(args.settings_json))
    logging.getLogger("synthllm").info("scaling: %s", counts["fits"])


def _status(args: argparse.Namespace) -> None:
    from synthllm.status import collect, table

    rows = collect(args.results)
    if not rows:
        raise SystemExit(f"no counts.json under {args.results}: nothing has run there yet")
    print(table(rows))


def _demo_corpus(args: argparse.Namespace) -> None:
    from synthllm.demo_corpus import fill

    print(fill(args.dest, args.shared))


def _backend_and_sampling(args: argparse.Namespace):
    from synthllm.llm import BackendSpec, Sampling

    spec = BackendSpec.from_config(args.model_key, json.loads(args.model_json))
    return spec, Sampling(**json.loads(args.sampling_json))


def _extract(args: argparse.Namespace) -> None:
    from synthllm import extract

    spec, sampling = _backend_and_sampling(args)
    extract.run(
        args.docs,
        args.output,
        args.counts,
        spec,
        sampling,
        args.structured,
        args.max_doc_chars,
        args.min_kcs,
        args.max_kcs,
        args.chunk_size,
        args.max_docs,
    )


def _level1(args: argparse.Namespace) -> None:
    from synthllm import level1

    spec, sampling = _backend_and_sampling(args)
    level1.run(
        args.docs,
        args.output,
        args.counts,
        spec,
        sampling,
        args.structured,
        args.max_doc_chars,
        args.calls_per_doc,
        args.questions_per_doc,
        args.chunk_size,
        args.max_docs,
    )


def _level2(args: argparse.Namespace) -> None:
    from synthllm import level2

    spec, sampling = _backend_and_sampling(args)
    level2.run(
        args.docs,
        args.extracted,
        args.output,
        args.counts,
        spec,
        sampling,
        args.structured,
        args.max_doc_chars,
        args.calls_per_doc,
        args.questions_per_doc,
        args.chunk_size,
    )


def _graph(args: argparse.Namespace) -> None:
    from synthllm import graph

    subset, n_subsets = (int(x) for x in args.subset.split("-of-"))
    counts = graph.run(args.extracted, args.out_dir, args.counts, subset, n_subsets, args.eps)
    logging.getLogger("synthllm").info("graph: %s", counts)


def _walks(args: argparse.Namespace) -> None:
    from synthllm import walks

    settings = walks.WalkSettings(**json.loads(args.walks_json), eps=args.eps, seed=args.seed)
    walks.run(args.graph_dir, args.output, args.counts, settings, args.references)


def _level3(args: argparse.Namespace) -> None:
    from synthllm import level3

    spec, sampling = _backend_and_sampling(args)
    shard, n_shards = (int(x) for x in args.shard.split("-of-"))
    level3.run(
        args.walks,
        args.docs,
        shard,
        n_shards,
        args.output,
        args.counts,
        spec,
        sampling,
        args.structured,
        args.max_doc_chars,
        args.calls_per_set,
        args.questions_per_set,
        args.chunk_size,
        args.max_sets,
    )


def _answer(args: argparse.Namespace) -> None:
    from synthllm import answer

    spec, sampling = _backend_and_sampling(args)
    answer.run(args.questions, args.output, args.counts, spec, sampling, args.chunk_size)


def _dedup(args: argparse.Namespace) -> None:
    from synthllm.dedup import NearDuplicates, run

    run(
        args.answers,
        args.output,
        args.dropped,
        args.counts,
        NearDuplicates(**json.loads(args.near_json)),
        tuple(args.answer_statuses),
    )


def _decontam(args: argparse.Namespace) -> None:
    from synthllm.decontam import run

    run(
        args.questions,
        json.loads(args.benchmarks_json),
        args.output,
        args.hits,
        args.report,
        args.counts,
        args.ngram,
    )


def _sft_pool(args: argparse.Namespace) -> None:
    from synthllm.mixtures import run_pool

    run_pool(
        args.questions,
        args.output,
        args.counts,
        args.tokenizer,
        args.system_prompt,
        args.chat_template,
    )


def _mixture(args: argparse.Namespace) -> None:
    from synthllm.mixtures import BUDGETS_KEY, run_subset

    spec = json.loads(args.set_json)
    run_subset(
        args.pool,
        args.output,
        args.counts,
        args.name,
        args.samples,
        args.seed,
        spec.get("levels"),
        spec.get("proportions"),
        spec.get("size_key", BUDGETS_KEY),
    )


def _train(args: argparse.Namespace) -> None:
    from synthllm import train

    settings = train.TrainSettings.from_config(json.loads(args.training_json))
    train.run(
        args.mixture,
        args.base_model,
        args.out_dir,
        settings,
        args.system_prompt,
        threads=args.threads,
    )


def _base_model(args: argparse.Namespace) -> None:
    from synthllm import train

    spec = train.TrainModel.from_config(json.loads(args.model_json))
    counts = train.materialise_base(spec, args.out, args.counts)
    logging.getLogger("synthllm").info(
        "base model %s: %d parameters", spec.label, counts["parameters"]
    )


def _prepare_models(args: argparse.Namespace) -> None:
    from pathlib import Path

    from synthllm.models import convert_gguf, find_smollm2_gguf

    print(f"model ready: {convert_gguf(find_smollm2_gguf(), Path(args.dest))}")


def _evaluation_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="HF model folder (a train/.../final)")
    p.add_argument(
        "--benchmarks-json",
        required=True,
        help="config key evaluation.benchmarks as JSON (name -> jsonl)",
    )
    p.add_argument("--max-records", type=int, default=None, help="problems per benchmark")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-benchmark sample")
    p.add_argument("--system-prompt", required=True, help="config key chat.system_prompt")


def _evaluate(args: argparse.Namespace) -> None:
    from synthllm import evaluate

    counts = evaluate.run(
        args.checkpoint,
        args.label,
        args.budget,
        args.train_counts,
        args.out_dir,
        json.loads(args.benchmarks_json),
        args.max_records,
        args.seed,
        args.system_prompt,
        json.loads(args.engine_json),
        args.max_new_tokens,
        args.chunk_size,
        args.grade_timeout_s,
    )
    for name, row in counts["accuracy"].items():
        logging.getLogger("synthllm").info(
            "%s: accuracy %.1f %% (harness %.1f %%) of %d",
            name,
            row["accuracy"],
            row["accuracy_harness"],
            row["n"],
        )


def _eval_nll(args: argparse.Namespace) -> None:
    from synthllm import evaluate

    counts = evaluate.nll(
        args.checkpoint,
        args.output,
        json.loads(args.benchmarks_json),
        args.max_records,
        args.seed,
        args.system_prompt,
        args.batch_size,
        args.max_tokens,
        args.dtype,
        args.counts,
    )
    for name, value in counts["nll"].items():
        logging.getLogger("synthllm").info("%s: %.4f nats per token", name, value)


def _eval_summary(args: argparse.Namespace) -> None:
    from synthllm import evaluate

    rows = evaluate.summarize(args.eval_dirs, args.output, args.csv, args.markdown)
    print(Path(args.markdown).read_text())
    logging.getLogger("synthllm").info("summary: %d rows", len(rows))


def _experiment_docs(args: argparse.Namespace) -> None:
    from synthllm.experiments import run_docs

    counts = run_docs(
        args.docs,
        args.extracted,
        args.documents,
        args.seed,
        args.output,
        args.extract_output,
        args.counts,
    )
    logging.getLogger("synthllm").info(
        "experiment documents: %d of %d", counts["out"], counts["in"]
    )


def _diversity(args: argparse.Namespace) -> None:
    from synthllm import diversity
    from synthllm.embed import EmbeddingSpec

    spec = EmbeddingSpec.from_config(json.loads(args.embedding_json))
    diversity.run(
        {"level1": args.level1, "level2": args.level2},
        spec,
        args.bins,
        args.out_dir,
        args.counts,
        args.threads,
    )


def _ablation_table(args: argparse.Namespace) -> None:
    from synthllm import ablation

    ablation.run(args.runs, args.models, args.sets, args.metric, args.csv, args.markdown)
    print(Path(args.markdown).read_text())


def _augment(args: argparse.Namespace) -> None:
    from synthllm import augmentation

    spec, sampling = _backend_and_sampling(args)
    augmentation.run(
        args.method,
        args.seeds,
        args.output,
        args.counts,
        spec,
        sampling,
        args.structured,
        args.target,
        args.chunk_size,
        args.personas,
        args.persona_seed,
    )


def _usable_answers(args: argparse.Namespace) -> None:
    from synthllm import augmentation

    augmentation.run_usable(args.answers, args.output, args.counts, tuple(args.answer_statuses))


def _augmentation_figure(args: argparse.Namespace) -> None:
    from synthllm import augmentation

    augmentation.run_figure(
        args.runs,
        args.models,
        args.methods,
        args.metric,
        args.png,
        args.pdf,
        args.csv,
        args.markdown,
    )
    print(Path(args.markdown).read_text())


def _embed(args: argparse.Namespace) -> None:
    from synthllm import embed

    spec = embed.EmbeddingSpec.from_config(json.loads(args.model_json))
    counts = embed.run(args.docs, args.output, args.counts, spec, args.threads)
    logging.getLogger("synthllm").info(
        "embed: %d documents, %d truncated, %s docs/s",
        counts["out"],
        counts["truncated"],
        counts["docs_per_s"],
    )


def _synthetic_docs(args: argparse.Namespace) -> None:
    from synthllm import filter as filtering

    spec, sampling = _backend_and_sampling(args)
    filtering.run_synthetic(
        args.syllabus,
        args.kinds,
        args.documents,
        args.min_chars,
        args.output,
        args.counts,
        spec,
        sampling,
        args.chunk_size,
    )


def _coldstart(args: argparse.Namespace) -> None:
    from synthllm import filter as filtering

    settings = json.loads(args.settings_json)
    report = filtering.run_coldstart(
        args.synthetic_docs,
        args.synthetic_embeddings,
        args.shards,
        args.embeddings,
        args.scores,
        args.model,
        args.report,
        settings["negatives"],
        settings["threshold"],
        filtering.Forest(**settings["forest"]),
        args.seed,
        settings["test_fraction"],
        args.positive_sources,
        args.threads,
    )
    logging.getLogger("synthllm").info(
        "coldstart: D0 has %d of %d documents", report["kept"], report["documents"]
    )


def _rate(args: argparse.Namespace) -> None:
    from synthllm import filter as filtering

    spec, sampling = _backend_and_sampling(args)
    filtering.run_rate(
        args.previous_scores,
        args.previous_ratings,
        args.shards,
        args.output,
        args.counts,
        spec,
        sampling,
        args.structured,
        args.reference_sample,
        args.random_sample,
        args.seed,
        args.max_doc_chars,
        args.chunk_size,
    )


def _finegrained(args: argparse.Namespace) -> None:
    from synthllm import filter as filtering

    settings = json.loads(args.settings_json)
    report = filtering.run_finegrained(
        args.iteration,
        args.ratings,
        args.shards,
        args.embeddings,
        args.scores,
        args.model,
        args.report,
        settings["threshold"],
        filtering.Forest(**settings["forest"]),
        settings["test_fraction"],
        args.seed,
        args.positive_sources,
        args.threads,
    )
    logging.getLogger("synthllm").info(
        "finegrained %d: D%d has %d of %d documents",
        args.iteration,
        args.iteration,
        report["kept"],
        report["documents"],
    )


def _filter_docs(args: argparse.Namespace) -> None:
    from synthllm import filter as filtering

    filtering.run_filter_docs(args.shard, args.scores, args.output, args.counts)


def _filter_report(args: argparse.Namespace) -> None:
    from synthllm import filter as filtering

    filtering.run_report(
        args.reports, args.rate_counts, args.filter_counts, args.output, args.markdown, args.counts
    )
    print(Path(args.markdown).read_text())


def _generation_args(p: argparse.ArgumentParser, model_key: str) -> None:
    p.add_argument("--model-json", required=True, help=f"config key {model_key} as JSON")
    p.add_argument("--model-key", default=model_key, help=argparse.SUPPRESS)
    p.add_argument(
        "--sampling-json", required=True, help="temperature, top_p, max_tokens, seed as JSON"
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=32,
        help="prompts per engine call; finished chunks survive a kill",
    )
    p.add_argument("--output", required=True)
    p.add_argument("--counts", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthllm", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("corpus", help="read, normalise, deduplicate and shard the corpus")
    p.add_argument(
        "--sources-json",
        required=True,
        help="config key corpus.sources as JSON (a list of source objects)",
    )
    p.add_argument("--n-shards", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=10_000)
    p.add_argument("--on-bad-record", choices=("fail", "skip"), default="fail")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--counts", required=True, help="where to write the stage's counts.json")
    p.set_defaults(func=_corpus)

    p = sub.add_parser("embed", help="mean-pooled, L2-normalised document embeddings (.npy)")
    p.add_argument("--docs", required=True, help="a parquet with doc_id and text (a corpus shard)")
    p.add_argument("--model-json", required=True, help="config key models.embedding as JSON")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--output", required=True, help=".npy, one row per document in file order")
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_embed)

    p = sub.add_parser("synthetic-docs", help="synthetic math documents from the syllabus")
    _generation_args(p, "models.generator")
    p.add_argument("--syllabus", required=True, help="config key filter.synthetic.syllabus")
    p.add_argument("--kinds", nargs="+", required=True, help="document kinds (blog post, ...)")
    p.add_argument("--documents", type=int, required=True, help="how many to write")
    p.add_argument("--min-chars", type=int, required=True, help="shorter ones count as empty")
    p.set_defaults(func=_synthetic_docs)

    def corpus_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--shards", nargs="+", required=True, help="every corpus shard")
        p.add_argument(
            "--embeddings", nargs="+", required=True, help="their embeddings, same order"
        )
        p.add_argument(
            "--positive-sources",
            nargs="*",
            default=[],
            help="corpus sources counted as math in the labelled check",
        )
        p.add_argument("--seed", type=int, required=True)
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--scores", required=True, help="scores of every corpus document")
        p.add_argument("--model", required=True, help="the fitted forest (joblib)")
        p.add_argument("--report", required=True)

    p = sub.add_parser("coldstart", help="cold-start random-forest classifier: D0")
    p.add_argument("--synthetic-docs", required=True)
    p.add_argument("--synthetic-embeddings", required=True)
    p.add_argument("--settings-json", required=True, help="config key filter.coldstart as JSON")
    corpus_args(p)
    p.set_defaults(func=_coldstart)

    p = sub.add_parser("rate", help="the rater LLM scores D(t-1) and a random sample 1-10")
    _generation_args(p, "models.rater")
    p.add_argument("--previous-scores", required=True, help="scores of iteration t-1")
    p.add_argument("--previous-ratings", nargs="*", default=[], help="ratings of iterations < t")
    p.add_argument("--shards", nargs="+", required=True, help="every corpus shard")
    p.add_argument("--structured", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--reference-sample", type=int, required=True)
    p.add_argument("--random-sample", type=int, required=True)
    p.add_argument("--seed", type=int, required=True, help="seed of the samples")
    p.add_argument("--max-doc-chars", type=int, required=True)
    p.set_defaults(func=_rate)

    p = sub.add_parser("finegrained", help="fine-grained random-forest regressor: D(t)")
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument("--ratings", nargs="+", required=True, help="ratings of iterations 1..t")
    p.add_argument("--settings-json", required=True, help="config key filter.finegrained as JSON")
    corpus_args(p)
    p.set_defaults(func=_finegrained)

    p = sub.add_parser("filter-docs", help="the kept documents of one shard with their scores")
    p.add_argument("--shard", required=True)
    p.add_argument("--scores", nargs="+", required=True, help="scores of iterations 0..T")
    p.add_argument("--output", required=True)
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_filter_docs)

    p = sub.add_parser("filter-report", help="sizes, ratings and checks of every iteration")
    p.add_argument("--reports", nargs="+", required=True, help="report json of iterations 0..T")
    p.add_argument("--rate-counts", nargs="*", default=[], help="rate counts of iterations 1..T")
    p.add_argument("--filter-counts", nargs="+", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--markdown", required=True)
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_filter_report)

    p = sub.add_parser("extract", help="topics and key concepts per document (Fig. 11)")
    _generation_args(p, "models.generator")
    p.add_argument("--docs", required=True, help="a corpus (or filtered) shard")
    p.add_argument("--structured", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--max-doc-chars", type=int, required=True)
    p.add_argument("--max-docs", type=int, default=None, help="use the first N documents")
    p.add_argument("--min-kcs", type=int, required=True)
    p.add_argument("--max-kcs", type=int, required=True)
    p.set_defaults(func=_extract)

    for level, func in ((1, _level1), (2, _level2)):
        p = sub.add_parser(f"level{level}", help=f"Level-{level} questions per document")
        _generation_args(p, "models.generator")
        p.add_argument("--docs", required=True, help="a corpus (or filtered) shard")
        if level == 1:
            p.add_argument("--max-docs", type=int, default=None, help="use the first N documents")
        if level == 2:
            p.add_argument("--extracted", required=True, help="the extract stage's shard")
        p.add_argument("--structured", action=argparse.BooleanOptionalAction, default=True)
        p.add_argument("--max-doc-chars", type=int, required=True)
        p.add_argument("--calls-per-doc", type=int, required=True)
        p.add_argument("--questions-per-doc", type=int, required=True)
        p.set_defaults(func=func)

    p = sub.add_parser("graph", help="Level-3 concept graph of one subset (graph-tool)")
    p.add_argument("--extracted", nargs="+", required=True, help="every extract shard")
    p.add_argument("--subset", required=True, help="this job's subset, e.g. 000-of-001")
    p.add_argument("--eps", type=float, required=True, help="Eq. 5: weight = log(count + eps)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_graph)

    p = sub.add_parser("walks", help="random-walk concept sets and their reference documents")
    p.add_argument("--graph-dir", required=True, help="a graph subset folder")
    p.add_argument(
        "--walks-json",
        required=True,
        help="epochs, topic_steps, kc_steps, kc_start, revisit, dead_end as JSON",
    )
    p.add_argument("--eps", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument(
        "--references", type=int, required=True, help="documents per set (top-k Jaccard)"
    )
    p.add_argument("--output", required=True)
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_walks)

    p = sub.add_parser("level3", help="Level-3 questions from sampled concept sets")
    _generation_args(p, "models.generator")
    p.add_argument("--walks", nargs="+", required=True, help="the walks of every subset")
    p.add_argument("--docs", nargs="+", required=True, help="every reference document shard")
    p.add_argument("--shard", required=True, help="this job's shard, e.g. 00001-of-00004")
    p.add_argument("--structured", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--max-doc-chars", type=int, required=True, help="per reference document")
    p.add_argument("--calls-per-set", type=int, required=True)
    p.add_argument("--questions-per-set", type=int, required=True)
    p.add_argument("--max-sets", type=int, default=None, help="use the first N sets of the shard")
    p.set_defaults(func=_level3)

    p = sub.add_parser("answer", help="one answer per question")
    _generation_args(p, "models.answerer")
    p.add_argument("--questions", nargs="+", required=True, help="question shards")
    p.set_defaults(func=_answer)

    p = sub.add_parser("dedup", help="exact and near-duplicate questions across all levels")
    p.add_argument("--answers", nargs="+", required=True, help="every answer shard")
    p.add_argument(
        "--near-json",
        required=True,
        help="config key dedup.near (ngram, num_perm, bands, threshold, seed) as JSON",
    )
    p.add_argument(
        "--answer-statuses",
        nargs="+",
        default=["ok"],
        help="answer statuses kept for training (config dedup.answer_statuses)",
    )
    p.add_argument("--output", required=True, help="the kept samples")
    p.add_argument("--dropped", required=True, help="dropped samples with reason and duplicate_of")
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_dedup)

    p = sub.add_parser("decontam", help="drop samples sharing an n-gram with a benchmark")
    p.add_argument("--questions", required=True, help="the dedup stage's kept samples")
    p.add_argument(
        "--benchmarks-json",
        required=True,
        help="config key evaluation.benchmarks (name -> jsonl) as JSON",
    )
    p.add_argument(
        "--ngram", type=int, required=True, help="words per n-gram (config decontam.ngram)"
    )
    p.add_argument("--output", required=True)
    p.add_argument("--hits", required=True, help="one row per contaminated sample")
    p.add_argument("--report", required=True, help="counts per benchmark and field (json)")
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_decontam)

    p = sub.add_parser("sft-pool", help="SFT records of the clean samples with exact token counts")
    p.add_argument("--questions", required=True, help="the decontam stage's clean samples")
    p.add_argument("--tokenizer", required=True, help="the training models' tokenizer (HF folder)")
    p.add_argument("--system-prompt", required=True, help="config key chat.system_prompt")
    p.add_argument(
        "--chat-template", default=None, help="Jinja file replacing the tokenizer's template"
    )
    p.add_argument("--output", required=True)
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_sft_pool)

    p = sub.add_parser("mixture", help="one nested subset of the SFT pool")
    p.add_argument("--pool", required=True)
    p.add_argument("--name", required=True, help="the mixture's name in config mixtures.sets")
    p.add_argument(
        "--set-json",
        required=True,
        help="its levels and proportions as JSON, and "
        "size_key: the config key that set --samples when not mixtures.sample_counts",
    )
    p.add_argument("--samples", type=int, required=True, help="subset size")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_mixture)

    p = sub.add_parser(
        "train",
        help="fine-tune one model on one mixture (DeepSpeed; run "
        "under torchrun for several processes)",
    )
    p.add_argument("--mixture", required=True, help="mixture parquet (question, answer, tokens)")
    p.add_argument("--base-model", required=True, help="HF folder to start from (budget 0)")
    p.add_argument(
        "--out-dir",
        required=True,
        help="writes final/, counts.json, log.jsonl (checkpoints/ while running)",
    )
    p.add_argument("--training-json", required=True, help="config key training as JSON")
    p.add_argument("--system-prompt", required=True, help="config key chat.system_prompt")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.set_defaults(func=_train)

    p = sub.add_parser("base-model", help="budget 0: the untrained base model as an HF folder")
    p.add_argument("--model-json", required=True, help="one entry of models.train as JSON")
    p.add_argument("--out", required=True, help="the HF folder to write")
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_base_model)

    p = sub.add_parser("scaling", help="scaling-law fits, tables and figures (Eqs. 2-3)")
    p.add_argument("--summary", required=True, help="the evaluation stage's summary.parquet")
    p.add_argument("--settings-json", required=True, help="config key scaling as JSON")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_scaling)

    p = sub.add_parser("evaluate", help="generate and grade answers on the six benchmarks")
    _evaluation_data(p)
    p.add_argument("--label", required=True, help="model label (config models.train)")
    p.add_argument("--budget", type=int, required=True, help="training samples (0 = base)")
    p.add_argument(
        "--train-counts",
        default=None,
        help="the checkpoint's training counts.json (its `tokens`); none = 0",
    )
    p.add_argument("--engine-json", required=True, help="config key evaluation.engine as JSON")
    p.add_argument("--max-new-tokens", type=int, required=True)
    p.add_argument("--chunk-size", type=int, default=256, help="prompts per engine call")
    p.add_argument("--grade-timeout-s", type=float, default=3.0)
    p.add_argument(
        "--out-dir",
        required=True,
        help="writes predictions.parquet, settings.json, counts.json here",
    )
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("eval-nll", help="per-token NLL of the reference solutions")
    _evaluation_data(p)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=2048, help="prompt + target tokens kept")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--output", required=True, help="nll.parquet")
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_eval_nll)

    p = sub.add_parser("eval-summary", help="accuracy and NLL of every checkpoint, one table")
    p.add_argument("--eval-dirs", nargs="+", required=True, help="eval/{model}/{budget} folders")
    p.add_argument("--output", required=True, help="summary.parquet")
    p.add_argument("--csv", required=True)
    p.add_argument("--markdown", required=True)
    p.set_defaults(func=_eval_summary)

    p = sub.add_parser("experiment-docs", help="the fixed random documents of Figs. 5 and 6")
    p.add_argument("--docs", nargs="+", required=True, help="every filtered document shard")
    p.add_argument("--extracted", nargs="+", required=True, help="every extract shard")
    p.add_argument("--documents", type=int, required=True, help="how many to draw")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--output", required=True, help="the drawn documents")
    p.add_argument("--extract-output", required=True, help="their extraction rows")
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_experiment_docs)

    p = sub.add_parser("diversity", help="within-document question similarity (Fig. 5)")
    p.add_argument("--level1", required=True, help="Level-1 questions of the experiment documents")
    p.add_argument("--level2", required=True, help="Level-2 questions of the same documents")
    p.add_argument("--embedding-json", required=True, help="config key diversity.embedding as JSON")
    p.add_argument("--bins", type=int, required=True, help="histogram bins")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out-dir", required=True, help="writes pairs.parquet, summary.*, fig5.*")
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_diversity)

    p = sub.add_parser("ablation-table", help="Level ablation table (Table 3)")
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        help="set=eval folder items (set `base` for the untrained model)",
    )
    p.add_argument("--models", nargs="+", required=True, help="model labels, table order")
    p.add_argument("--sets", nargs="+", required=True, help="mixture names, table order")
    p.add_argument(
        "--metric",
        required=True,
        choices=("accuracy", "accuracy_harness", "nll"),
        help="the metric shown first",
    )
    p.add_argument("--csv", required=True)
    p.add_argument("--markdown", required=True)
    p.set_defaults(func=_ablation_table)

    p = sub.add_parser("augment", help="rephrase or persona expansion of seed questions (Fig. 6)")
    _generation_args(p, "models.generator")
    p.add_argument("--method", required=True, choices=("rephrase", "persona"))
    p.add_argument("--seeds", required=True, help="Level-1 seed questions")
    p.add_argument("--target", type=int, required=True, help="questions to generate")
    p.add_argument("--structured", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--personas", default=None, help="Persona Hub-format jsonl (persona only)")
    p.add_argument("--persona-seed", type=int, default=0, help="seed of the persona draws")
    p.set_defaults(func=_augment)

    p = sub.add_parser(
        "usable-answers", help="answered questions of a usable answer status, no dedup"
    )
    p.add_argument("--answers", required=True, help="one answer file")
    p.add_argument(
        "--answer-statuses", nargs="+", required=True, help="config dedup.answer_statuses"
    )
    p.add_argument("--output", required=True)
    p.add_argument("--counts", required=True)
    p.set_defaults(func=_usable_answers)

    p = sub.add_parser("augmentation-figure", help="Fig. 6: each method against the sample count")
    p.add_argument("--runs", nargs="+", required=True, help="method=eval folder items")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--methods", nargs="+", required=True, help="line order")
    p.add_argument("--metric", required=True, choices=("accuracy", "accuracy_harness", "nll"))
    p.add_argument("--png", required=True)
    p.add_argument("--pdf", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--markdown", required=True)
    p.set_defaults(func=_augmentation_figure)

    p = sub.add_parser("prepare-models", help="convert the SmolLM2 GGUF into an HF folder")
    p.add_argument("--dest", default="resources/models/SmolLM2-135M-Instruct")
    p.set_defaults(func=_prepare_models)

    p = sub.add_parser("status", help="print the counts table of a results folder")
    p.add_argument("results", nargs="?", default="results")
    p.set_defaults(func=_status)

    p = sub.add_parser("demo-corpus", help="fill resources/demo_corpus for the embedded default")
    p.add_argument("--dest", default="resources/demo_corpus")
    p.add_argument(
        "--shared",
        default="../shared/data/corpus",
        help="local copy of the shared corpus samples, used when present",
    )
    p.set_defaults(func=_demo_corpus)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from synthllm.concepts import ConceptGraphError
    from synthllm.corpus import CorpusError
    from synthllm.decontam import DecontamError
    from synthllm.dedup import DedupError
    from synthllm.demo_corpus import DemoCorpusError
    from synthllm.embed import EmbeddingError
    from synthllm.eval_data import BenchmarkError
    from synthllm.evaluate import EvaluationError
    from synthllm.experiments import ExperimentError
    from synthllm.filter import FilterError
    from synthllm.llm import BackendError
    from synthllm.mixtures import MixtureError
    from synthllm.models import ModelError
    from synthllm.scaling import ScalingError
    from synthllm.train import TrainError

    try:
        args.func(args)
    except (
        ConceptGraphError,
        CorpusError,
        DecontamError,
        DedupError,
        DemoCorpusError,
        BackendError,
        MixtureError,
        ModelError,
        ScalingError,
        TrainError,
        BenchmarkError,
        EvaluationError,
        EmbeddingError,
        FilterError,
        ExperimentError,
    ) as exc:
        print(f"synthllm {args.command}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
