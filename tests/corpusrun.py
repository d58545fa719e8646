"""The corpus stage's four steps (synthllm.stages.corpus) in one process, as its jobs run
them one after another: the tests check shards and counts without a Snakemake run."""

from __future__ import annotations

import time
from pathlib import Path

from synthllm.core.files import atomic_dir
from synthllm.stages.corpus import check_policy, finish, gather, limits, scatter, shard_name
from synthllm.stages.corpus_parts import part_groups
from synthllm.stages.corpus_sources import Source


def build_shards(
    sources: list[Source],
    out_dir: str | Path,
    n_shards: int,
    batch_size: int = 10_000,
    on_bad_record: str = "fail",
    counts_path: str | Path | None = None,
    max_skipped_share: float = 1.0,
    min_docs_per_source: int = 0,
    files_per_job: int = 8,
) -> dict:
    """The four steps of the stage in this process: read every source, write `n_shards`
    parquet shards into `out_dir`, return the counts (and write them to `counts_path`).

    on_bad_record: "fail" stops at the first bad record or unreadable file with an error
    naming it; "skip" drops it and counts it by reason. Empty texts and exact duplicates
    are always dropped and counted. Nothing is written under a final name unless the
    whole stage succeeds: in skip mode it fails when no document is kept or when more than
    `max_skipped_share` of the records or of the files were skipped (1.0 sets no limit).
    A source whose files keep fewer than `min_docs_per_source` documents fails it too, in
    either mode, naming the source and why its records were dropped."""
    check_policy(on_bad_record, n_shards)
    out_dir = Path(out_dir)
    started = time.time()
    groups = part_groups(
        [{"name": s.name, "glob": s.glob, "optional": s.optional} for s in sources], files_per_job
    )
    with atomic_dir(out_dir) as scratch:
        parts, part_paths = [], []
        for g in groups:
            src = sources[g["source_index"]]
            path = scratch / f"{g['id']}.arrow"
            parts.append(
                scatter(
                    src,
                    g["files"],
                    path,
                    scratch / f"{g['id']}.json",
                    part=g["id"],
                    first_file=g["first_file"],
                    n_shards=n_shards,
                    on_bad_record=on_bad_record,
                    limited=src.max_docs is not None,
                    batch_size=batch_size,
                )
            )
            part_paths.append(path)
        names = [src.name for src in sources]
        source_limits = limits([src.max_docs for src in sources], names, parts, part_paths)
        merged, shard_counts = [], []
        for i in range(n_shards):
            path = scratch / "merged" / shard_name(i, n_shards)
            shard_counts.append(
                gather(
                    i,
                    n_shards,
                    parts,
                    part_paths,
                    path,
                    scratch / "merged" / f"{i}.json",
                    source_limits,
                    batch_size,
                )
            )
            merged.append(path)
        return finish(
            names,
            parts,
            shard_counts,
            merged,
            [out_dir / shard_name(i, n_shards) for i in range(n_shards)],
            counts_path,
            n_shards=n_shards,
            source_limits=source_limits,
            on_bad_record=on_bad_record,
            max_skipped_share=max_skipped_share,
            min_docs_per_source=min_docs_per_source,
            elapsed_s=time.time() - started,
        )
