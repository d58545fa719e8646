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
"""

from __future__ import annotations

import glob as globlib
import gzip
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from synthllm.errors import SynthllmError
from synthllm.io import atomic_dir, publish, write_counts

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

FORMATS = ("jsonl", "jsonl.gz", "parquet", "csv")

# FineWeb-Edu's parquet layout (HuggingFaceFW/fineweb-edu, data/*/ and sample/*/).
PRESETS = {
    "fineweb-edu": {
        "format": "parquet",
        "text": ["text"],
        "id": "id",
        "url": "url",
        "meta": ["dump", "score", "int_score", "token_count", "language_score"],
    },
}


class CorpusError(SynthllmError):
    """Bad input or bad configuration; the message names the file, record or config key."""


@dataclass(frozen=True)
class Source:
    """One entry of config key `corpus.sources`."""

    index: int
    name: str
    glob: str
    format: str = "auto"
    text: tuple[str, ...] = ("text",)
    id: str | None = None
    url: str | None = None
    meta: tuple[str, ...] = ()
    optional: bool = False
    max_docs: int | None = None

    @property
    def key(self) -> str:
        return f"corpus.sources[{self.index}]"

    @classmethod
    def from_config(cls, index: int, entry: dict) -> Source:
        entry = dict(entry)
        preset = entry.pop("preset", None)
        if preset is not None:
            if preset not in PRESETS:
                raise CorpusError(
                    f"corpus.sources[{index}].preset: unknown preset {preset!r}; "
                    f"known: {sorted(PRESETS)}"
                )
            entry = {**PRESETS[preset], **entry}
        entry.setdefault("text", ["text"])
        for list_key in ("text", "meta"):
            if list_key in entry and isinstance(entry[list_key], str):
                entry[list_key] = [entry[list_key]]
            if list_key in entry:
                entry[list_key] = tuple(entry[list_key])
        if not entry["text"]:
            raise CorpusError(f"corpus.sources[{index}].text: name at least one text column")
        return cls(index=index, **entry)

    def format_of(self, path: str) -> str:
        if self.format != "auto":
            return self.format
        for fmt in ("jsonl.gz", "jsonl", "parquet", "csv"):
            if path.endswith("." + fmt) or (fmt == "jsonl" and path.endswith(".json")):
                return fmt
        raise CorpusError(
            f"{path}: cannot tell the format from the file name; set "
            f"{self.key}.format to one of {list(FORMATS)}"
        )

    def files(self) -> list[str]:
        return sorted(p for p in globlib.glob(self.glob, recursive=True) if Path(p).is_file())


def doc_id_of(text: str) -> str:
    """Stable content hash of a (stripped) document text: 16 hex chars of blake2b-64."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def shard_of(doc_id: str, n_shards: int) -> int:
    return int(doc_id, 16) % n_shards


def shard_name(index: int, n_shards: int) -> str:
    return f"shard-{index:05d}-of-{n_shards:05d}.parquet"


@dataclass
class RawRecord:
    """A record as read, before normalisation. `text` is None when a text field is missing."""

    row: int
    text_parts: list[object] | None
    id: object = None
    url: object = None
    meta: dict = field(default_factory=dict)


class BadRecord(Exception):
    def __init__(self, reason: str, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.reason = reason


class BadFile(Exception):
    def __init__(self, reason: str, path: str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.reason = reason


# ---------------------------------------------------------------- readers
# Each reader yields lists of RawRecord or BadRecord (a bad record does not stop the file;
# the policy decides), and raises BadFile for a file that cannot be read at all.


def _read_jsonl(path: str, src: Source, batch_size: int) -> Iterator[list]:
    opener = gzip.open if path.endswith(".gz") else open
    batch: list = []
    n_lines = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                n_lines += 1
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    batch.append(
                        BadRecord(
                            "bad_encoding",
                            where,
                            f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                        )
                    )
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    batch.append(
                        BadRecord(
                            "bad_json", where, f"malformed JSON: {exc.msg} (column {exc.colno})"
                        )
                    )
                    continue
                if not isinstance(obj, dict):
                    batch.append(
                        BadRecord(
                            "bad_json",
                            where,
                            f"a JSON object was expected, got {type(obj).__name__}",
                        )
                    )
                    continue
                if not any(col in obj for col in src.text):
                    batch.append(
                        BadRecord(
                            "missing_text",
                            where,
                            f"no text field {list(src.text)} (config key "
                            f"{src.key}.text); fields present: {sorted(obj)[:10]}",
                        )
                    )
                    continue
                batch.append(
                    RawRecord(
                        row=lineno,
                        text_parts=[obj.get(c) for c in src.text],
                        id=obj.get(src.id) if src.id else None,
                        url=obj.get(src.url) if src.url else None,
                        meta={c: obj.get(c) for c in src.meta},
                    )
                )
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BadFile("unreadable", path, f"cannot read: {exc}") from exc
    if n_lines == 0:
        raise BadFile("empty_file", path, "file is empty (no records)")
    if batch:
        yield batch


def _check_columns(path: str, names: list[str], src: Source) -> None:
    wanted = {
        "text": list(src.text),
        "id": [src.id] if src.id else [],
        "url": [src.url] if src.url else [],
        "meta": list(src.meta),
    }
    for key, cols in wanted.items():
        missing = [c for c in cols if c not in names]
        if missing:
            reason = "missing_text_column" if key == "text" else "missing_column"
            raise BadFile(
                reason,
                path,
                f"column(s) {missing} not found (config key "
                f"{src.key}.{key}); columns present: {names[:20]}",
            )


def _table_records(table: pa.Table, src: Source, first_row: int, path: str) -> list:
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    out: list = []
    for i in range(table.num_rows):
        parts: list[object] = []
        bad = None
        for c in src.text:
            value = cols[c][i]
            if isinstance(value, bytes):  # csv text columns are read as bytes: decode here
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad = BadRecord(
                        "bad_encoding",
                        f"{path}: row {first_row + i}",
                        f"column {c!r} is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                    )
                    break
            parts.append(value)
        if bad:
            out.append(bad)
            continue
        out.append(
            RawRecord(
                row=first_row + i,
                text_parts=parts,
                id=cols[src.id][i] if src.id else None,
                url=cols[src.url][i] if src.url else None,
                meta={c: cols[c][i] for c in src.meta},
            )
        )
    return out


def _wanted_columns(src: Source) -> list[str]:
    cols = list(src.text) + [c for c in (src.id, src.url) if c] + list(src.meta)
    return list(dict.fromkeys(cols))


def _read_parquet(path: str, src: Source, batch_size: int) -> Iterator[list]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadFile("unreadable", path, f"not a readable parquet file: {exc}") from exc
    _check_columns(path, pf.schema_arrow.names, src)
    if pf.metadata.num_rows == 0:
        raise BadFile("empty_file", path, "file is empty (no rows)")
    row = 1
    for rb in pf.iter_batches(batch_size=batch_size, columns=_wanted_columns(src)):
        table = pa.Table.from_batches([rb])
        yield _table_records(table, src, row, path)
        row += table.num_rows


def _read_csv(path: str, src: Source, batch_size: int) -> Iterator[list]:
    if Path(path).stat().st_size == 0:
        raise BadFile("empty_file", path, "file is empty")
    # Text columns are read as raw bytes so that one non-UTF-8 value is one bad record,
    # not a failed file; quoted values may span lines (web text does).
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.binary() for c in src.text}, strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if "Empty CSV file" in str(exc):
            raise BadFile("empty_file", path, "file is empty (no header)") from exc
        raise BadFile("unreadable", path, f"not a readable CSV file: {exc}") from exc
    _check_columns(path, reader.schema.names, src)
    row = 1
    total = 0
    try:
        for rb in reader:
            table = pa.Table.from_batches([rb]).select(_wanted_columns(src))
            for start in range(0, table.num_rows, batch_size):
                part = table.slice(start, batch_size)
                yield _table_records(part, src, row, path)
                row += part.num_rows
            total += table.num_rows
    except pa.ArrowInvalid as exc:
        raise BadFile("unreadable", path, f"CSV parse error after row {row - 1}: {exc}") from exc
    if total == 0:
        raise BadFile("empty_file", path, "file has a header but no rows")


READERS = {
    "jsonl": _read_jsonl,
    "jsonl.gz": _read_jsonl,
    "parquet": _read_parquet,
    "csv": _read_csv,
}


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
) -> dict:
    """Read every source, write `n_shards` parquet shards into `out_dir`, return the counts.

    on_bad_record: "fail" stops at the first bad record or unreadable file with an error
    naming it; "skip" drops it and counts it by reason. Empty texts and exact duplicates
    are always dropped and counted. Nothing is written under a final name unless the
    whole stage succeeds.
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
    records_in = records_out = 0
    bar = tqdm(desc="corpus", unit="doc", disable=not progress, mininterval=2.0)

    with atomic_dir(out_dir) as scratch:
        writer = ShardWriter(scratch, n_shards, flush_rows=batch_size)
        for src, files in files_by_source:
            s_in = s_out = 0
            s_dropped: Counter = Counter()
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
            records_in += s_in
            records_out += s_out
            dropped.update(s_dropped)
        writer.close()
        bar.close()
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


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Build the corpus shards beside outputs["counts"]. Settings: config key corpus
    (sources, n_shards, on_bad_record); execution: corpus.batch_size (rules/corpus.smk).
    The files the sources match are the rule's input (`files`); they are globbed here again."""
    sources = [Source.from_config(i, entry) for i, entry in enumerate(settings["sources"])]
    counts = build_shards(
        sources,
        Path(outputs["counts"]).parent,
        n_shards=settings["n_shards"],
        batch_size=execution["batch_size"],
        on_bad_record=settings["on_bad_record"],
        counts_path=outputs["counts"],
    )
    log.info("corpus: %d in, %d out, dropped %s", counts["in"], counts["out"], counts["dropped"])
    return counts
