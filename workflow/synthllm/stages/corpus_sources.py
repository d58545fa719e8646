"""The corpus sources: config entries of `corpus.sources` (presets, formats, column
mapping) and one streaming reader per file format (jsonl, jsonl.gz, parquet, csv).

A reader yields batches of raw records, before normalisation (synthllm.stages.corpus turns them into
the output schema); a record it cannot read is a BadRecord in the batch and a file it cannot
read at all raises BadFile, with a reason the stage counts under `on_bad_record: skip`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from synthllm.errors import SynthllmError
from synthllm.stages.corpus_parts import source_files

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
        return source_files(self.glob)


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
