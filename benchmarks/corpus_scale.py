"""Corpus stage at scale: docs/s and peak memory for N synthetic documents.

Makes its own input (web-like documents of random words, with 1 % exact duplicates and
0.5 % empty texts, split over several files), then runs `synthllm corpus` on it in a child
process and reports wall time, documents per second and the child's peak RSS.
Target (issue 2): 1 M documents under 2 GiB peak.

    .venv/bin/python benchmarks/corpus_scale.py                 # 1 M docs, jsonl
    .venv/bin/python benchmarks/corpus_scale.py --docs 100000 --format parquet
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from synthllm.stages.corpus import shard_name

VOCAB = np.array(
    (
        "the of and a to in is that for it as was with be by on not he this are or "
        "his from at which but have an they you were her she there been one all we "
        "their has would when if can more no so what up out about into than them "
        "number equation triangle prime integer derivative function area circle "
        "probability matrix vector theorem proof angle sum product ratio"
    ).split()
)


def make_texts(rng: np.random.Generator, n: int, mean_words: int) -> list[str]:
    lengths = rng.poisson(mean_words, n) + 1
    words = VOCAB[rng.integers(0, len(VOCAB), lengths.sum())]
    texts, start = [], 0
    for length in lengths:
        texts.append(" ".join(words[start : start + length]))
        start += length
    return texts


def make_input(
    folder: Path, n_docs: int, n_files: int, fmt: str, mean_words: int, seed: int
) -> int:
    rng = np.random.default_rng(seed)
    per_file = -(-n_docs // n_files)
    written = 0
    for f in range(n_files):
        n = min(per_file, n_docs - written)
        texts = make_texts(rng, n, mean_words)
        for i in rng.choice(n, size=n // 100, replace=False):  # exact duplicates
            texts[i] = texts[(i + 1) % n]
        for i in rng.choice(n, size=n // 200, replace=False):  # empty documents
            texts[i] = "   "
        ids = [f"doc-{written + i}" for i in range(n)]
        if fmt == "parquet":
            pq.write_table(pa.table({"id": ids, "text": texts}), folder / f"part-{f:03d}.parquet")
        else:
            with open(folder / f"part-{f:03d}.jsonl", "w") as fh:
                for doc_id, text in zip(ids, texts):
                    fh.write(json.dumps({"id": doc_id, "text": text}) + "\n")
        written += n
    return sum(p.stat().st_size for p in folder.iterdir())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    ap.add_argument("--mean-words", type=int, default=120, help="mean words per document")
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="corpus-scale-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        t0 = time.time()
        size = make_input(
            tmp / "in", args.docs, args.files, args.format, args.mean_words, args.seed
        )
        print(
            f"input: {args.docs:,} docs in {args.files} {args.format} files, "
            f"{size / 2**20:,.0f} MiB, made in {time.time() - t0:.1f} s"
        )
        sources = [{"name": "synthetic", "glob": str(tmp / "in" / f"*.{args.format}"), "id": "id"}]
        out = tmp / "out"
        # the four arguments rules/01_corpus.smk gives the stage
        parts = {
            "inputs": {"files": [str(p) for p in sorted((tmp / "in").iterdir())]},
            "outputs": {
                "shards": [str(out / shard_name(i, args.shards)) for i in range(args.shards)],
                "counts": str(out / "counts.json"),
            },
            "settings": {"sources": sources, "n_shards": args.shards, "on_bad_record": "fail"},
            "execution": {"batch_size": args.batch_size, "threads": 1},
        }
        cmd = [sys.executable, "-m", "synthllm", "corpus"]
        cmd += [f"--{name}={json.dumps(value)}" for name, value in parts.items()]
        t0 = time.time()
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        wall = time.time() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        counts = json.loads((out / "counts.json").read_text())
        out_mib = sum(p.stat().st_size for p in out.glob("*.parquet")) / 2**20
    print(f"corpus stage: {counts['in']:,} in, {counts['out']:,} out, dropped {counts['dropped']}")
    print(f"wall time   : {wall:.1f} s")
    print(f"throughput  : {counts['in'] / wall:,.0f} docs/s")
    print(f"peak RSS    : {peak_kib / 2**20:.2f} GiB (target < 2 GiB)")
    print(f"output      : {args.shards} shards, {out_mib:,.0f} MiB zstd parquet")


if __name__ == "__main__":
    main()
