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
first copy of a duplicated text is the one kept.

The stage is a scatter-gather of jobs (rules/01_corpus.smk), each holding its own share:

1. `corpus_part` (scatter), one job per `corpus.files_per_job` files of a source
   (synthllm.stages.corpus_parts): reads, cleans and hashes its files, in batches of
   `corpus.batch_size` records, and writes every batch to one Arrow IPC file (zstd),
   split into record batches of one shard each, with the shard's batches listed in the
   part's JSON (`shard_batches`), and counts per file (records read, drops by reason, an
   unreadable file). Part file schema: the output schema plus
       file  int32  the file's index among its source's sorted files
       seq   int64  the record's index in its file (bad and empty records count too)
   Memory: one batch of records and its rows.
2. `corpus_limits`, only when a source has `max_docs`: walks the records of the sources up
   to the last such source in corpus order, as one process would, and finds where each
   limited source stops (its `max_docs`-th kept document: the cutoff) and what it read
   until then. Memory: the ids of the documents of those sources (about 70 bytes each),
   and one part's (file, seq, doc_id) columns.
3. `corpus_shard` (gather), one job per shard: reads that shard's record batches from
   every part, in corpus order, drops what a limited source did not read (past its
   cutoff) and every copy of a text but the first (duplicates share the doc_id, so the
   shard), and writes the shard in row groups of `corpus.batch_size`, with its counts per
   source. Memory: the ids of the shard's documents (about 70 bytes each) and one
   batch of rows.
4. `corpus`: adds the counts up into `counts.json` (per source and in all; the same as one
   process reading everything would write), runs the checks that need the totals
   (`min_docs_per_source`, and under `on_bad_record: skip` `max_skipped_share`), and only
   then gives the shards their final names (hard links), so that a failed check leaves no
   shard for the jobs that follow. Memory: the counts.

The shards and counts do not depend on `files_per_job` or `batch_size` (the row group
size aside). Under `on_bad_record: fail` a bad record fails the job that reads it; when
several are bad, which one the error names can differ from one run to the next.

The sources, their column mapping and the per-format readers are in
synthllm.stages.corpus_sources; how the files are split into jobs in
synthllm.stages.corpus_parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthllm.core.files import atomic_path, write_counts, write_json
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
# the scatter jobs' records: the output's, and where each was read (file, seq)
PART_SCHEMA = SCHEMA.append(pa.field("file", pa.int32())).append(pa.field("seq", pa.int64()))
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")

EMPTY, DUPLICATE = "empty_text", "duplicate"


def doc_id_of(text: str) -> str:
    """Stable content hash of a (stripped) document text: 16 hex chars of blake2b-64."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def shard_of(doc_id: str, n_shards: int) -> int:
    return int(doc_id, 16) % n_shards


def shard_name(index: int, n_shards: int) -> str:
    return f"shard-{index:05d}-of-{n_shards:05d}.parquet"


def check_policy(on_bad_record: str, n_shards: int) -> None:
    if on_bad_record not in ("fail", "skip"):
        raise CorpusError(f"corpus.on_bad_record: must be 'fail' or 'skip', got {on_bad_record!r}")
    if n_shards < 1:
        raise CorpusError(f"corpus.n_shards: must be at least 1, got {n_shards}")


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
        return EMPTY, None, where
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


# ---------------------------------------------------------------- 1. scatter


class PartWriter:
    """Writes rows to one Arrow IPC file, each batch split into record batches of one
    shard; remembers which batches hold which shard."""

    def __init__(self, path: Path, n_shards: int):
        self.n_shards = n_shards
        self.writer = pa.ipc.new_file(str(path), PART_SCHEMA, options=IPC_OPTIONS)
        self.shard_batches: list[list[int]] = [[] for _ in range(n_shards)]
        self.n_batches = 0
        self.rows = 0

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        shards = np.fromiter(
            (int(r["doc_id"], 16) % self.n_shards for r in rows), np.int64, len(rows)
        )
        order = np.argsort(shards, kind="stable")
        batch = pa.RecordBatch.from_pylist(rows, schema=PART_SCHEMA).take(pa.array(order))
        shards = shards[order]
        starts = np.flatnonzero(np.r_[True, shards[1:] != shards[:-1]])
        ends = np.r_[starts[1:], len(shards)]
        for start, end in zip(starts, ends):
            self.writer.write_batch(batch.slice(start, end - start))
            self.shard_batches[int(shards[start])].append(self.n_batches)
            self.n_batches += 1
        self.rows += len(rows)

    def close(self) -> None:
        self.writer.close()


def no_input_error() -> CorpusError:
    return CorpusError(
        "corpus.sources: no input file matches any source glob; set the globs "
        "to your corpus files (for the embedded default, run ./install.sh to "
        "fill resources/demo_corpus)"
    )


def scatter(
    src: Source,
    files: list[str],
    part_path: str | Path,
    counts_path: str | Path,
    *,
    part: str,
    first_file: int = 0,
    n_shards: int,
    on_bad_record: str = "fail",
    limited: bool = False,
    batch_size: int = 10_000,
) -> dict:
    """Read `files` (the source's sorted files from index `first_file` on), write their
    records to the part file `part_path` and the part's counts to `counts_path`.

    on_bad_record "fail" stops at the first bad record or unreadable file with an error
    naming it; "skip" drops it and counts it. For a source with max_docs (`limited`) a
    "fail" is recorded (with where it is) and reading stops: the limits job fails only if
    the source reads that far. A limited source's parts also list where each dropped
    record was (`events`), for the counts up to its cutoff."""
    check_policy(on_bad_record, n_shards)
    started = time.time()
    if not files:
        if src.optional:
            raise no_input_error()
        raise CorpusError(f"{src.key}.glob: no file matches {src.glob!r} (source {src.name!r})")
    dropped: Counter = Counter()
    file_items, file_bad, events = [], [], []
    error = None
    with atomic_path(part_path) as tmp:
        writer = PartWriter(tmp, n_shards)
        rows: list[dict] = []
        for j, path in enumerate(files):
            f = first_file + j
            fmt = src.format_of(path)
            if fmt not in READERS:
                raise CorpusError(
                    f"{src.key}.format: unknown format {fmt!r}; known: {list(FORMATS)}"
                )
            items, bad_file = 0, None
            try:
                for batch in READERS[fmt](path, src, batch_size):
                    for item in batch:
                        try:
                            if isinstance(item, BadRecord):
                                raise item
                            reason, row, _ = normalise(item, src, path)
                        except BadRecord as bad:
                            if on_bad_record == "fail":
                                message = (
                                    f"{bad} [set corpus.on_bad_record: skip to count and "
                                    "skip bad records]"
                                )
                                if not limited:
                                    raise CorpusError(message) from None
                                error = {"kind": "record", "file": f, "message": message}
                                break
                            reason, row = bad.reason, None
                        if reason is not None:
                            dropped[reason] += 1
                            if limited:
                                events.append([f, items, reason])
                        else:
                            row["file"], row["seq"] = f, items
                            rows.append(row)
                        items += 1
                    if error:
                        break
                    if len(rows) >= batch_size:
                        writer.write(rows)
                        rows = []
            except BadFile as bad:
                message = (
                    f"{bad} [set corpus.on_bad_record: skip to count and skip unreadable files]"
                )
                if on_bad_record == "fail" and not limited:
                    raise CorpusError(message) from None
                if on_bad_record == "fail":
                    error = {"kind": "file", "file": f, "message": message}
                else:
                    log.warning("skipped %s (%s)", bad, bad.reason)
                    bad_file = bad.reason
            file_items.append(items)
            file_bad.append(bad_file)
            if error:
                break
        writer.write(rows)
        writer.close()
        counts = {
            "stage": "corpus_part",
            "part": part,
            "source": src.name,
            "source_index": src.index,
            "first_file": first_file,
            "files": list(files),
            "in": sum(file_items),
            "out": writer.rows,
            "dropped": dict(sorted(dropped.items())),
            "file_items": file_items,
            "file_bad": file_bad,
            "events": events if limited else None,
            "error": error,
            "shard_batches": writer.shard_batches,
            "elapsed_s": round(time.time() - started, 3),
        }
        write_json(counts_path, counts)
    log.info(
        "corpus_part %s: %d records in %d files, %d rows, dropped %s",
        part,
        counts["in"],
        len(file_items),
        counts["out"],
        counts["dropped"],
    )
    return counts


def read_columns(path: str | Path, names: list[str], indices=None):
    """Columns of some record batches (all by default) of a part file, batch by batch."""
    with pa.OSFile(str(path)) as fh:
        reader = pa.ipc.open_file(fh)
        for i in range(reader.num_record_batches) if indices is None else indices:
            batch = reader.get_batch(i)
            yield [batch.column(name) for name in names]


# ---------------------------------------------------------------- 2. limits


def limits(
    max_docs: list[int | None],
    names: list[str],
    parts: list[dict],
    part_paths: list[str | Path],
) -> dict:
    """Where each source with max_docs stops, {name: {"cutoff": [file, seq] or None,
    "limited", "in", "out", "dropped", "files_skipped"}}, as one process reading the sources
    in order would: it reads a source's records until the one after its `max_docs`-th kept
    document (a duplicate of an earlier record it read is not kept)."""
    limited_sources = [i for i, m in enumerate(max_docs) if m is not None]
    if not limited_sources:
        return {}
    seen: set[int] = set()
    result = {}
    for index in range(max(limited_sources) + 1):
        mine = [(p, path) for p, path in zip(parts, part_paths) if p["source_index"] == index]
        if max_docs[index] is None:
            for _, path in mine:
                for (ids,) in read_columns(path, ["doc_id"]):
                    seen.update(int(d, 16) for d in ids.to_pylist())
            continue
        result[names[index]] = _walk(max_docs[index], mine, seen)
    return result


def _walk(max_docs: int, parts: list, seen: set) -> dict:
    kept = n_in = 0
    dropped: Counter = Counter()
    files_skipped: Counter = Counter()
    cutoff = None
    for p, path in parts:
        by_file: dict[int, list] = {}
        for ids, files, seqs in read_columns(path, ["doc_id", "file", "seq"]):
            for d, f, q in zip(ids.to_pylist(), files.to_pylist(), seqs.to_pylist()):
                by_file.setdefault(f, []).append((q, None, int(d, 16)))
        for f, q, reason in p["events"] or []:
            by_file.setdefault(f, []).append((q, reason, None))
        error = p["error"]
        for j, bad_file in enumerate(p["file_bad"]):
            f = p["first_file"] + j
            for q, reason, key in sorted(by_file.get(f, [])):
                if kept >= max_docs:  # the record after the last one kept: not read
                    return _limit(cutoff, True, n_in, kept, dropped, files_skipped)
                n_in += 1
                if reason is not None:
                    dropped[reason] += 1
                elif key in seen:
                    dropped[DUPLICATE] += 1
                else:
                    seen.add(key)
                    kept += 1
                    cutoff = [f, q]
            if error and error["file"] == f:
                if error["kind"] == "record" and kept >= max_docs:
                    return _limit(cutoff, True, n_in, kept, dropped, files_skipped)
                raise CorpusError(error["message"])
            if bad_file:
                files_skipped[bad_file] += 1
    return _limit(cutoff, False, n_in, kept, dropped, files_skipped)


def _limit(cutoff, limited, n_in, kept, dropped, files_skipped) -> dict:
    return {
        "cutoff": cutoff if limited else None,
        "limited": limited,
        "in": n_in,
        "out": kept,
        "dropped": dict(sorted(dropped.items())),
        "files_skipped": dict(sorted(files_skipped.items())),
    }


# ---------------------------------------------------------------- 3. gather


def gather(
    shard: int,
    n_shards: int,
    parts: list[dict],
    part_paths: list[str | Path],
    shard_path: str | Path,
    counts_path: str | Path,
    source_limits: dict | None = None,
    batch_size: int = 10_000,
) -> dict:
    """Write shard `shard`: its records of every part, in corpus order (the parts' order),
    less what a limited source did not read and every copy of a text but the first."""
    started = time.time()
    source_limits = source_limits or {}
    seen: set[int] = set()
    per_source: dict[str, dict] = {}
    pending: list[pa.Table] = []
    pending_rows = written = 0
    with atomic_path(shard_path) as tmp:
        writer = pq.ParquetWriter(tmp, SCHEMA, compression="zstd")

        def flush(final: bool) -> None:
            """Write the pending rows in row groups of batch_size rows (at the end also the
            rest, and an empty one for an empty shard), as one process would."""
            nonlocal pending, pending_rows, written
            table = pa.concat_tables(pending).combine_chunks() if pending else SCHEMA.empty_table()
            while table.num_rows >= batch_size:
                writer.write_table(table.slice(0, batch_size))
                written += 1
                table = table.slice(batch_size)
            if final and (table.num_rows or not written):
                writer.write_table(table)
                written += 1
                table = table.slice(table.num_rows)
            pending, pending_rows = ([table] if table.num_rows else []), table.num_rows

        for p, path in zip(parts, part_paths):
            stats = per_source.setdefault(p["source"], {"out": 0, DUPLICATE: 0})
            cutoff = (source_limits.get(p["source"]) or {}).get("cutoff")
            indices = p["shard_batches"][shard]
            if not indices:
                continue
            with pa.OSFile(str(path)) as fh:
                reader = pa.ipc.open_file(fh)
                for i in indices:
                    batch = reader.get_batch(i)
                    ids = batch.column("doc_id").to_pylist()
                    read = np.ones(len(ids), bool)
                    if cutoff is not None:
                        files = batch.column("file").to_numpy()
                        seqs = batch.column("seq").to_numpy()
                        read = (files < cutoff[0]) | ((files == cutoff[0]) & (seqs <= cutoff[1]))
                    keep = np.zeros(len(ids), bool)
                    for k, d in enumerate(ids):
                        if not read[k]:
                            continue
                        key = int(d, 16)
                        if key in seen:
                            stats[DUPLICATE] += 1
                        else:
                            seen.add(key)
                            keep[k] = True
                    if keep.any():
                        kept = pa.Table.from_batches([batch.filter(pa.array(keep))])
                        pending.append(kept.select(SCHEMA.names))
                        pending_rows += kept.num_rows
                        stats["out"] += kept.num_rows
                    if pending_rows >= batch_size:
                        flush(final=False)
        flush(final=True)
        writer.close()
        counts = {
            "stage": "corpus_shard",
            "shard": shard,
            "n_shards": n_shards,
            "rows": sum(s["out"] for s in per_source.values()),
            "per_source": per_source,
            "elapsed_s": round(time.time() - started, 3),
        }
        write_json(counts_path, counts)
    log.info("corpus_shard %d: %d documents", shard, counts["rows"])
    return counts


# ---------------------------------------------------------------- 4. counts, checks, shards


def finish(
    names: list[str],
    parts: list[dict],
    shard_counts: list[dict],
    merged_paths: list[str | Path],
    shard_paths: list[str | Path],
    counts_path: str | Path | None,
    *,
    n_shards: int,
    source_limits: dict | None = None,
    on_bad_record: str = "fail",
    max_skipped_share: float = 1.0,
    min_docs_per_source: int = 0,
    elapsed_s: float = 0.0,
) -> dict:
    """The corpus's counts from its parts', shards' and limits' counts; fail a source that
    keeps fewer than `min_docs_per_source` documents, and under skip a corpus that keeps
    nothing or skipped more than `max_skipped_share` of its records or files; then give the
    gathered shards their final names and write the counts."""
    started = time.time()
    source_limits = source_limits or {}
    if len(merged_paths) != n_shards or len(shard_counts) != n_shards:
        raise CorpusError(f"corpus: {len(merged_paths)} shards gathered, {n_shards} expected")
    dropped: Counter = Counter()
    files_skipped: Counter = Counter()
    per_source: dict[str, dict] = {}
    records_in = records_out = skipped_records = n_files = 0
    for index, name in enumerate(names):
        mine = [p for p in parts if p["source_index"] == index]
        files = sum(len(p["files"]) for p in mine)
        out = sum(c["per_source"].get(name, {}).get("out", 0) for c in shard_counts)
        if name in source_limits:
            lim = source_limits[name]
            if lim["out"] != out:
                raise AssertionError(
                    f"corpus: source {name}: {lim['out']} kept by the limits, {out} in the shards"
                )
            s_in, s_dropped, s_skipped = (
                lim["in"],
                Counter(lim["dropped"]),
                Counter(lim["files_skipped"]),
            )
            limited = lim["limited"]
        else:
            s_in = sum(p["in"] for p in mine)
            s_dropped = Counter()
            for p in mine:
                s_dropped.update(p["dropped"])
            s_dropped[DUPLICATE] += sum(
                c["per_source"].get(name, {}).get(DUPLICATE, 0) for c in shard_counts
            )
            s_skipped = Counter(r for p in mine for r in p["file_bad"] if r)
            limited = False
        s_dropped = Counter({k: v for k, v in s_dropped.items() if v})
        per_source[name] = {
            "files": files,
            "in": s_in,
            "out": out,
            "dropped": dict(sorted(s_dropped.items())),
            "limited_by_max_docs": limited,
        }
        if files and out < min_docs_per_source:
            raise CorpusError(
                f"corpus.sources[{index}]: source {name!r} kept {out} documents of {s_in} records "
                f"in {files} files (dropped: {dict(sorted(s_dropped.items())) or 'none'}; "
                f"{sum(s_skipped.values())} unreadable files), fewer than "
                f"corpus.min_docs_per_source ({min_docs_per_source}); check its glob, format "
                "and text columns"
            )
        records_in += s_in
        records_out += out
        skipped_records += sum(v for k, v in s_dropped.items() if k not in (EMPTY, DUPLICATE))
        n_files += files
        dropped.update(s_dropped)
        files_skipped.update(s_skipped)
    if not n_files:
        raise no_input_error()
    if on_bad_record == "skip":
        check_kept(
            records_in, records_out, skipped_records, n_files, files_skipped, max_skipped_share
        )
    # one mtime for every shard: each output is the same file as its input, so a later
    # stamp on one shard would make the earlier outputs look older than an input
    stamp_ns = time.time_ns()
    for src, dst in zip(merged_paths, shard_paths):
        link_into_place(Path(src), Path(dst), stamp_ns)
    extra = {
        "n_shards": n_shards,
        "docs_per_shard": [c["rows"] for c in shard_counts],
        "files_skipped": dict(sorted(files_skipped.items())),
        "per_source": per_source,
        # the jobs' seconds, added up
        "elapsed_s": round(elapsed_s + time.time() - started, 3),
    }
    if counts_path is not None:
        return write_counts(counts_path, "corpus", records_in, records_out, dropped, **extra)
    return {
        "stage": "corpus",
        "in": records_in,
        "out": records_out,
        "dropped": dict(sorted(dropped.items())),
        **extra,
    }


def link_into_place(src: Path, dst: Path, stamp_ns: int) -> None:
    """`dst` names the file `src` (a hard link; a copy where the filesystem has none),
    replacing any file there, with the mtime `stamp_ns` (Snakemake compares it with the
    inputs')."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    try:
        os.utime(tmp, ns=(stamp_ns, stamp_ns))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def check_kept(
    records_in: int,
    records_out: int,
    skipped_records: int,
    n_files: int,
    files_skipped: Counter,
    max_share: float,
) -> None:
    """Under on_bad_record skip, fail a corpus that kept nothing, or that skipped more than
    `max_share` of its records or files (corpus.max_skipped_share), naming what was dropped."""
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


# ---------------------------------------------------------------- the jobs (rules/01_corpus.smk)


def _read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def _check_parts(inputs: dict, settings: dict) -> list[dict]:
    parts = [_read_json(p) for p in inputs["part_counts"]]
    ids = [p["part"] for p in parts]
    if ids != settings["parts"] or len(inputs["parts"]) != len(ids):
        raise CorpusError(
            f"corpus: the parts read ({ids}) are not the planned ones ({settings['parts']})"
        )
    return parts


def _limits_of(inputs: dict) -> dict:
    return _read_json(inputs["limits"]) if inputs.get("limits") else {}


def run_part(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Scatter job: the files `inputs["files"]` of source settings["source"] (config key
    corpus.sources[settings["source_index"]], without max_docs) from file index
    settings["first_file"] on; settings n_shards, on_bad_record, limited (the source has
    max_docs); execution batch_size. Writes outputs["part"] and outputs["counts"]."""
    src = Source.from_config(settings["source_index"], settings["source"])
    return scatter(
        src,
        list(inputs.get("files", [])),
        outputs["part"],
        outputs["counts"],
        part=settings["part"],
        first_file=settings["first_file"],
        n_shards=settings["n_shards"],
        on_bad_record=settings["on_bad_record"],
        limited=settings["limited"],
        batch_size=execution["batch_size"],
    )


def run_limits(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Where the sources with max_docs stop: inputs parts, part_counts (the parts of the
    sources up to the last limited one, in corpus order); settings sources (names),
    max_docs (per source), parts (their ids)."""
    parts = _check_parts(inputs, settings)
    result = limits(settings["max_docs"], settings["sources"], parts, inputs["parts"])
    write_json(outputs["limits"], result)
    log.info("corpus_limits: %s", {k: v["cutoff"] for k, v in result.items()})
    return result


def run_shard(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Gather job of shard settings["shard"] ("00001-of-00004"): inputs parts, part_counts
    (every part, in corpus order), limits (when a source has max_docs); settings n_shards,
    parts (their ids); execution batch_size."""
    parts = _check_parts(inputs, settings)
    index, n = (int(x) for x in settings["shard"].split("-of-"))
    if n != settings["n_shards"]:
        raise CorpusError(f"corpus: shard {settings['shard']} of {settings['n_shards']} shards")
    return gather(
        index,
        n,
        parts,
        inputs["parts"],
        outputs["shard"],
        outputs["counts"],
        _limits_of(inputs),
        execution["batch_size"],
    )


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The corpus's counts, checks and final shards: inputs shards and shard_counts (the
    gathered shards, in order), part_counts, limits (when a source has max_docs); settings
    sources (names), parts (ids), n_shards, on_bad_record, max_skipped_share; execution
    min_docs_per_source. Writes outputs["shards"] and outputs["counts"]."""
    parts = [_read_json(p) for p in inputs["part_counts"]]
    if [p["part"] for p in parts] != settings["parts"]:
        raise CorpusError("corpus: the part counts read are not the planned parts")
    shard_counts = [_read_json(p) for p in inputs["shard_counts"]]
    source_limits = _limits_of(inputs)
    elapsed = sum(c["elapsed_s"] for c in parts + shard_counts)
    counts = finish(
        settings["sources"],
        parts,
        shard_counts,
        inputs["shards"],
        outputs["shards"],
        outputs["counts"],
        n_shards=settings["n_shards"],
        source_limits=source_limits,
        on_bad_record=settings["on_bad_record"],
        max_skipped_share=settings["max_skipped_share"],
        min_docs_per_source=execution["min_docs_per_source"],
        elapsed_s=elapsed,
    )
    log.info("corpus: %d in, %d out, dropped %s", counts["in"], counts["out"], counts["dropped"])
    return counts
