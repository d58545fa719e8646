"""The single command-line entry point: `synthllm <stage> ...`.

Each Snakemake rule is a thin shell around one of these subcommands; every tunable arrives
as an argument, so the rule's params say everything the job depends on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _corpus(args: argparse.Namespace) -> None:
    from synthllm.corpus import Source, build_shards

    sources = [Source.from_config(i, s) for i, s in enumerate(json.loads(args.sources_json))]
    counts = build_shards(sources, args.out_dir, n_shards=args.n_shards,
                          batch_size=args.batch_size, on_bad_record=args.on_bad_record,
                          counts_path=args.counts)
    logging.getLogger("synthllm").info("corpus: %d in, %d out, dropped %s", counts["in"],
                                       counts["out"], counts["dropped"])


def _status(args: argparse.Namespace) -> None:
    from synthllm.status import collect, table

    rows = collect(args.results)
    if not rows:
        raise SystemExit(f"no counts.json under {args.results}: nothing has run there yet")
    print(table(rows))


def _demo_corpus(args: argparse.Namespace) -> None:
    from synthllm.demo_corpus import fill

    print(fill(args.dest, args.shared))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthllm", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("corpus", help="read, normalise, deduplicate and shard the corpus")
    p.add_argument("--sources-json", required=True,
                   help="config key corpus.sources as JSON (a list of source objects)")
    p.add_argument("--n-shards", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=10_000)
    p.add_argument("--on-bad-record", choices=("fail", "skip"), default="fail")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--counts", required=True, help="where to write the stage's counts.json")
    p.set_defaults(func=_corpus)

    p = sub.add_parser("status", help="print the counts table of a results folder")
    p.add_argument("results", nargs="?", default="results")
    p.set_defaults(func=_status)

    p = sub.add_parser("demo-corpus", help="fill resources/demo_corpus for the embedded default")
    p.add_argument("--dest", default="resources/demo_corpus")
    p.add_argument("--shared", default="../shared/data/corpus",
                   help="local copy of the shared corpus samples, used when present")
    p.set_defaults(func=_demo_corpus)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from synthllm.corpus import CorpusError
    from synthllm.demo_corpus import DemoCorpusError

    try:
        args.func(args)
    except (CorpusError, DemoCorpusError) as exc:
        print(f"synthllm {args.command}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
