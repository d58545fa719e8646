"""Corpus stage: read local files, normalise them to one schema, drop empty and exact
duplicate documents, and shard deterministically by document id.

Output schema (one parquet file per shard, `shard-{i:05d}-of-{n:05d}.parquet`):

    doc_id  string  16 hex chars: blake2b-64 of the stripped text (a stable content hash)
    text    string  the document text, surrounding whitespace stripped
    source  string  the name of the config source it came from
    url     string  the source's URL column, or null
    meta    string  JSON object: {"file", "row", "id" (the source's own id, if any), ...}

A document goes to shard `int(doc_id, 16) % n_shards`. Within a shard, documents keep
input order (sources in config order, files sorted by path, rows in file order), and the
first copy of a duplicated text is the one kept. Reading streams in batches; memory is
bounded by the batch buffers plus a set of 64-bit ids of the documents seen so far
(about 70 bytes per kept document).

The sources, their column mapping and the per-format readers are in synthllm.stages.corpus_sources.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from synthllm.core.files import atomic_dir, publish, write_counts
from synthllm.stages.corpus_sources import (
    FORMATS,
    READERS,
    BadFile,
    BadRecord,
    CorpusError,
    RawRecord,
    Source,
)

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("meta", pa.string()),
    ]
)


def doc_id_of(text: str) -> str:
    """Stable content hash of a (stripped) document text: 16 hex chars of blake2b-64."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def shard_of(doc_id: str, n_shards: int) -> int:
    return int(doc_id, 16) % n_shards


def shard_name(index: int, n_shards: int) -> str:
    return f"shard-{index:05d}-of-{n_shards:05d}.parquet"


# ---------------------------------------------------------------- normalisation


def normalise(rec: RawRecord, src: Source, path: str) -> tuple[str | None, dict | None, str]:
    """Turn a raw record into an output row; returns (drop reason or None, row, where)."""
    where = f"{path}: row {rec.row}"
    parts = []
    for col, value in zip(src.text, rec.text_parts):
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadRecord(
                "text_not_string",
                where,
                f"text field {col!r} holds a "
                f"{type(value).__name__}, not a string (config key {src.key}.text)",
            )
        parts.append(value.strip())
    text = "\n\n".join(p for p in parts if p)
    if not text:
        return "empty_text", None, where
    meta = {"file": path, "row": rec.row}
    if src.id:
        meta["id"] = rec.id
    meta.update({k: v for k, v in rec.meta.items()})
    url = rec.url if isinstance(rec.url, str) and rec.url else None
    return (
        None,
        {
            "doc_id": doc_id_of(text),
            "text": text,
            "source": src.name,
            "url": url,
            "meta": json.dumps(meta, ensure_ascii=False, default=str),
        },
        where,
    )


# ---------------------------------------------------------------- the stage


class ShardWriter:
    """Buffers rows per shard and appends them as row groups to scratch parquet files."""

    def __init__(self, scratch: Path, n_shards: int, flush_rows: int):
        self.n_shards = n_shards
        self.flush_rows = flush_rows
        self.paths = [scratch / shard_name(i, n_shards) for i in range(n_shards)]
        self.buffers: list[list[dict]] = [[] for _ in range(n_shards)]
        self.writers: list[pq.ParquetWriter | None] = [None] * n_shards
        self.rows = [0] * n_shards

    def add(self, row: dict) -> None:
        i = shard_of(row["doc_id"], self.n_shards)
        self.buffers[i].append(row)
        self.rows[i] += 1
        if len(self.buffers[i]) >= self.flush_rows:
            self._flush(i)

    def _flush(self, i: int) -> None:
        if self.writers[i] is None:
            self.writers[i] = pq.ParquetWriter(self.paths[i], SCHEMA, compression="zstd")
        self.writers[i].write_table(pa.Table.from_pylist(self.buffers[i], schema=SCHEMA))
        self.buffers[i] = []

    def close(self) -> None:
        for i in range(self.n_shards):
            if self.buffers[i] or self.writers[i] is None:
                self._flush(i)
            self.writers[i].close()


def build_shards(
    sources: list[Source],
    out_dir: str | Path,
    n_shards: int,
    batch_size: int = 10_000,
    on_bad_record: str = "fail",
    counts_path: str | Path | None = None,
    progress: bool = True,
    max_skipped_share: float = 1.0,
    min_docs_per_source: int = 0,
) -> dict:
    """Read every source, write `n_shards` parquet shards into `out_dir`, return the counts.

    on_bad_record: "fail" stops at the first bad record or unreadable file with an error
    naming it; "skip" drops it and counts it by reason. Empty texts and exact duplicates
    are always dropped and counted. Nothing is written under a final name unless the
    whole stage succeeds: in skip mode it fails when no document is kept or when more than
    `max_skipped_share` of the records or of the files were skipped (a wrong column name or
    an unreadable input must not become empty shards that feed every later job; 1.0 sets no
    limit, the workflow passes corpus.max_skipped_share). A source whose files keep fewer
    than `min_docs_per_source` documents fails it too, in either mode, naming the source
    and why its records were dropped (corpus.min_docs_per_source).
    """
    if on_bad_record not in ("fail", "skip"):
        raise CorpusError(f"corpus.on_bad_record: must be 'fail' or 'skip', got {on_bad_record!r}")
    if n_shards < 1:
        raise CorpusError(f"corpus.n_shards: must be at least 1, got {n_shards}")
    out_dir = Path(out_dir)
    started = time.time()
    files_by_source = []
    for src in sources:
        files = src.files()
        if not files and not src.optional:
            raise CorpusError(f"{src.key}.glob: no file matches {src.glob!r} (source {src.name!r})")
        if not files:
            log.warning("source %s: no file matches %r; skipped (optional)", src.name, src.glob)
        files_by_source.append((src, files))
    if not any(files for _, files in files_by_source):
        raise CorpusError(
            "corpus.sources: no input file matches any source glob; set the globs "
            "to your corpus files (for the embedded default, run ./install.sh to "
            "fill resources/demo_corpus)"
        )

    dropped: Counter = Counter()
    files_skipped: Counter = Counter()
    per_source: dict[str, dict] = {}
    seen: set[int] = set()
    records_in = records_out = skipped_records = 0
    bar = tqdm(desc="corpus", unit="doc", disable=not progress, mininterval=2.0)

    with atomic_dir(out_dir) as scratch:
        writer = ShardWriter(scratch, n_shards, flush_rows=batch_size)
        for src, files in files_by_source:
            s_in = s_out = 0
            s_dropped: Counter = Counter()
            s_unreadable = sum(files_skipped.values())
            limited = False
            for path in files:
                fmt = src.format_of(path)
                if fmt not in READERS:
                    raise CorpusError(
                        f"{src.key}.format: unknown format {fmt!r}; known: {list(FORMATS)}"
                    )
                try:
                    for batch in READERS[fmt](path, src, batch_size):
                        for item in batch:
                            if src.max_docs is not None and s_out >= src.max_docs:
                                limited = True
                                break
                            s_in += 1
                            try:
                                if isinstance(item, BadRecord):
                                    raise item
                                reason, row, _ = normalise(item, src, path)
                            except BadRecord as bad:
                                if on_bad_record == "fail":
                                    raise CorpusError(
                                        f"{bad} [set corpus.on_bad_record: skip to count and "
                                        "skip bad records]"
                                    ) from None
                                s_dropped[bad.reason] += 1
                                skipped_records += 1
                                continue
                            if reason is None:
                                key = int(row["doc_id"], 16)
                                if key in seen:
                                    reason = "duplicate"
                                else:
                                    seen.add(key)
                            if reason is not None:
                                s_dropped[reason] += 1
                                continue
                            writer.add(row)
                            s_out += 1
                        bar.update(len(batch))
                        if limited:
                            break
                except BadFile as bad:
                    if on_bad_record == "fail":
                        raise CorpusError(
                            f"{bad} [set corpus.on_bad_record: skip to count and "
                            "skip unreadable files]"
                        ) from None
                    log.warning("skipped %s (%s)", bad, bad.reason)
                    files_skipped[bad.reason] += 1
                if limited:
                    break
            per_source[src.name] = {
                "files": len(files),
                "in": s_in,
                "out": s_out,
                "dropped": dict(s_dropped),
                "limited_by_max_docs": limited,
            }
            if files and s_out < min_docs_per_source:
                unreadable = sum(files_skipped.values()) - s_unreadable
                raise CorpusError(
                    f"{src.key}: source {src.name!r} kept {s_out} documents of {s_in} records "
                    f"in {len(files)} files (dropped: {dict(s_dropped) or 'none'}; "
                    f"{unreadable} unreadable files), fewer than corpus.min_docs_per_source "
                    f"({min_docs_per_source}); check its glob, format and text columns"
                )
            records_in += s_in
            records_out += s_out
            dropped.update(s_dropped)
        writer.close()
        bar.close()
        if on_bad_record == "skip":
            check_kept(
                records_in,
                records_out,
                skipped_records,
                files_by_source,
                files_skipped,
                max_skipped_share,
            )
        publish({p: out_dir / p.name for p in writer.paths})

    extra = {
        "n_shards": n_shards,
        "docs_per_shard": writer.rows,
        "files_skipped": dict(files_skipped),
        "per_source": per_source,
        "elapsed_s": round(time.time() - started, 3),
    }
    if counts_path is not None:
        return write_counts(counts_path, "corpus", records_in, records_out, dropped, **extra)
    return {
        "stage": "corpus",
        "in": records_in,
        "out": records_out,
        "dropped": dict(dropped),
        **extra,
    }


def check_kept(
    records_in: int,
    records_out: int,
    skipped_records: int,
    files_by_source: list,
    files_skipped: Counter,
    max_share: float,
) -> None:
    """Under on_bad_record skip, fail a corpus that kept nothing, or that skipped more than
    `max_share` of its records or files (corpus.max_skipped_share), naming what was dropped."""
    n_files = sum(len(files) for _, files in files_by_source)
    bad_files = sum(files_skipped.values())
    if records_out == 0:
        raise CorpusError(
            f"corpus: no document kept of {records_in} records in {n_files} files "
            f"({skipped_records} bad records, {bad_files} unreadable files skipped); check "
            "corpus.sources (globs, text columns)"
        )
    for what, bad, total in (
        ("records", skipped_records, records_in),
        ("files", bad_files, n_files),
    ):
        if total and bad / total > max_share:
            raise CorpusError(
                f"corpus: {bad} of {total} {what} were bad and skipped, more than "
                f"corpus.max_skipped_share {max_share}; check corpus.sources (columns, "
                "formats) or raise the share"
            )


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Build the corpus shards beside outputs["counts"]. Settings: config key corpus
    (sources, n_shards, on_bad_record, max_skipped_share); execution: corpus.batch_size and
    corpus.min_docs_per_source
    (rules/01_corpus.smk).
    The files the sources match are the rule's input (`files`); they are globbed here again."""
    sources = [Source.from_config(i, entry) for i, entry in enumerate(settings["sources"])]
    counts = build_shards(
        sources,
        Path(outputs["counts"]).parent,
        n_shards=settings["n_shards"],
        batch_size=execution["batch_size"],
        on_bad_record=settings["on_bad_record"],
        counts_path=outputs["counts"],
        max_skipped_share=settings["max_skipped_share"],
        min_docs_per_source=execution["min_docs_per_source"],
    )
    log.info("corpus: %d in, %d out, dropped %s", counts["in"], counts["out"], counts["dropped"])
    return counts
