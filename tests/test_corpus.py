"""The corpus stage on real files in every supported format, including bad ones; its
scatter-gather jobs against one process reading everything in order."""

from __future__ import annotations

import filecmp
import gzip
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpusrun import build_shards
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthllm.stages.corpus import (
    SCHEMA,
    doc_id_of,
    normalise,
    run,
    run_limits,
    run_part,
    run_shard,
    shard_name,
    shard_of,
)
from synthllm.stages.corpus_parts import part_groups
from synthllm.stages.corpus_sources import READERS, BadFile, BadRecord, CorpusError, Source

PINNED_ID = "b2f42041bf160d7a"  # blake2b-64 of the text below
ROOT = Path(__file__).resolve().parents[1]
SHARED_CORPUS = ROOT.parent / "shared" / "data" / "corpus"
DEMO_CORPUS = ROOT / "resources" / "demo_corpus"


def write_jsonl(path: Path, rows: list, raw_lines: list[bytes] = ()) -> Path:
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(json.dumps(row).encode() + b"\n")
        for line in raw_lines:
            fh.write(line + b"\n")
    return path


def read_shards(out: Path, n: int) -> pa.Table:
    return pa.concat_tables([pq.read_table(out / shard_name(i, n)) for i in range(n)])


def source(tmp_path: Path, pattern: str, **kw) -> Source:
    return Source.from_config(0, {"name": "t", "glob": str(tmp_path / pattern), **kw})


def test_doc_id_is_a_stable_content_hash():
    assert doc_id_of("hello") == doc_id_of("hello")
    assert doc_id_of("hello") != doc_id_of("hello!")
    assert len(doc_id_of("x")) == 16


def test_doc_id_value_is_pinned():
    # changing the hash would silently reshuffle every existing corpus
    assert doc_id_of("The area of a circle is pi r^2.") == PINNED_ID


def test_all_formats_normalise_to_one_schema(tmp_path):
    write_jsonl(
        tmp_path / "a.jsonl", [{"q": "What is 2+2?", "a": "4", "id": 7, "link": "http://x"}]
    )
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write(json.dumps({"q": "Gzipped doc", "a": None}) + "\n")
    pq.write_table(pa.table({"q": ["Parquet doc"], "a": ["body"]}), tmp_path / "c.parquet")
    (tmp_path / "d.csv").write_text('q,a\n"CSV doc\nwith a newline",tail\n')
    src = source(tmp_path, "*", text=["q", "a"], meta=[])
    counts = build_shards([src], tmp_path / "out", n_shards=2)
    table = read_shards(tmp_path / "out", 2)
    assert table.schema == SCHEMA
    texts = sorted(table.column("text").to_pylist())
    assert texts == sorted(
        [
            "What is 2+2?\n\n4",
            "Gzipped doc",
            "Parquet doc\n\nbody",
            "CSV doc\nwith a newline\n\ntail",
        ]
    )
    assert counts["in"] == counts["out"] == 4


def test_id_url_and_meta_columns_are_kept(tmp_path):
    write_jsonl(
        tmp_path / "a.jsonl", [{"text": "doc", "uid": "u1", "link": "http://x", "score": 3}]
    )
    src = source(tmp_path, "*.jsonl", id="uid", url="link", meta=["score"])
    build_shards([src], tmp_path / "out", n_shards=1)
    row = read_shards(tmp_path / "out", 1).to_pylist()[0]
    assert row["url"] == "http://x" and row["source"] == "t"
    meta = json.loads(row["meta"])
    assert meta == {"file": str(tmp_path / "a.jsonl"), "row": 1, "id": "u1", "score": 3}


def test_empty_and_duplicate_documents_are_dropped_and_counted(tmp_path):
    write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"text": "same"},
            {"text": "  same \n"},
            {"text": "   "},
            {"text": None},
            {"text": "other"},
        ],
    )
    counts = build_shards([source(tmp_path, "*.jsonl")], tmp_path / "out", 3)
    assert counts["out"] == 2
    assert counts["dropped"] == {"duplicate": 1, "empty_text": 2}
    assert sorted(read_shards(tmp_path / "out", 3).column("text").to_pylist()) == ["other", "same"]


def test_shards_partition_by_doc_id_and_are_deterministic(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"document number {i}"} for i in range(200)])
    src = source(tmp_path, "*.jsonl")
    build_shards([src], tmp_path / "o1", 5, batch_size=7)
    build_shards([src], tmp_path / "o2", 5, batch_size=64)
    for i in range(5):
        t1 = pq.read_table(tmp_path / "o1" / shard_name(i, 5))
        t2 = pq.read_table(tmp_path / "o2" / shard_name(i, 5))
        assert t1.equals(t2)
        assert all(shard_of(d, 5) == i for d in t1.column("doc_id").to_pylist())
    assert read_shards(tmp_path / "o1", 5).num_rows == 200


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(st.text(min_size=0, max_size=30), max_size=40), n_shards=st.integers(1, 6))
def test_every_distinct_nonempty_text_lands_in_exactly_one_shard(tmp_path_factory, texts, n_shards):
    tmp = tmp_path_factory.mktemp("prop")
    write_jsonl(tmp / "a.jsonl", [{"text": t} for t in texts] or [{"text": ""}])
    counts = build_shards([source(tmp, "*.jsonl")], tmp / "out", n_shards, batch_size=5)
    got = read_shards(tmp / "out", n_shards).column("text").to_pylist()
    expected = {t.strip() for t in texts if t.strip()}
    assert sorted(got) == sorted(expected)
    assert counts["in"] == counts["out"] + sum(counts["dropped"].values())


def test_max_docs_limits_a_source(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"d{i}"} for i in range(50)])
    counts = build_shards([source(tmp_path, "*.jsonl", max_docs=10)], tmp_path / "out", 2)
    assert counts["out"] == 10 and counts["per_source"]["t"]["limited_by_max_docs"]


def test_fineweb_edu_preset_reads_the_hub_layout(tmp_path):
    pq.write_table(
        pa.table(
            {
                "text": ["a lesson on fractions"],
                "id": ["<urn:uuid:1>"],
                "dump": ["CC-MAIN-2024-10"],
                "url": ["https://example.org/f"],
                "file_path": ["s3://x"],
                "language": ["en"],
                "language_score": [0.9],
                "token_count": [5],
                "score": [3.1],
                "int_score": [3],
            }
        ),
        tmp_path / "000_00000.parquet",
    )
    src = Source.from_config(
        0, {"name": "fw", "glob": str(tmp_path / "*.parquet"), "preset": "fineweb-edu"}
    )
    build_shards([src], tmp_path / "out", 1)
    row = read_shards(tmp_path / "out", 1).to_pylist()[0]
    assert row["url"] == "https://example.org/f"
    assert json.loads(row["meta"])["int_score"] == 3


# ---------------------------------------------------------------- bad input


def assert_nothing_written(out: Path):
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())


BAD_CASES = {
    # name: (file maker, expected words in the error, reason counted under skip)
    "malformed_json": (
        lambda d: write_jsonl(d / "a.jsonl", [{"text": "good"}], [b'{"text": "bro']),
        ["a.jsonl:2", "malformed JSON"],
        "bad_json",
    ),
    "non_utf8_jsonl": (
        lambda d: write_jsonl(d / "a.jsonl", [{"text": "good"}], [b'{"text": "caf\xe9"}']),
        ["a.jsonl:2", "not valid UTF-8"],
        "bad_encoding",
    ),
    "missing_text_field": (
        lambda d: write_jsonl(d / "a.jsonl", [{"text": "good"}, {"body": "x"}]),
        ["a.jsonl:2", "no text field", "corpus.sources[0].text"],
        "missing_text",
    ),
    "non_utf8_csv": (
        lambda d: (d / "a.csv").write_bytes(b'text\ngood\n"caf\xe9"\n'),
        ["a.csv", "row 2", "not valid UTF-8"],
        "bad_encoding",
    ),
}

BAD_FILES = {
    "empty_jsonl": (lambda d: (d / "a.jsonl").write_bytes(b""), ["a.jsonl", "empty"], "empty_file"),
    "empty_csv": (lambda d: (d / "a.csv").write_bytes(b""), ["a.csv", "empty"], "empty_file"),
    "empty_parquet": (
        lambda d: pq.write_table(pa.table({"text": pa.array([], pa.string())}), d / "a.parquet"),
        ["a.parquet", "empty"],
        "empty_file",
    ),
    "missing_text_column_parquet": (
        lambda d: pq.write_table(pa.table({"body": ["x"]}), d / "a.parquet"),
        ["a.parquet", "['text'] not found", "corpus.sources[0].text"],
        "missing_text_column",
    ),
    "missing_text_column_csv": (
        lambda d: (d / "a.csv").write_text("body\nx\n"),
        ["a.csv", "['text'] not found", "corpus.sources[0].text"],
        "missing_text_column",
    ),
    "corrupt_parquet": (
        lambda d: (d / "a.parquet").write_bytes(b"PAR1 not really"),
        ["a.parquet", "not a readable parquet"],
        "unreadable",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_fails_with_a_clear_error_and_writes_nothing(tmp_path, case):
    make, words, _ = BAD_CASES[case]
    (tmp_path / "in").mkdir()
    make(tmp_path / "in")
    out = tmp_path / "out"
    with pytest.raises(CorpusError) as err:
        build_shards([source(tmp_path, "in/*")], out, 2, counts_path=out / "counts.json")
    for word in words:
        assert word in str(err.value)
    assert "on_bad_record: skip" in str(err.value)
    assert_nothing_written(out)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_is_counted_and_skipped(tmp_path, case):
    make, _, reason = BAD_CASES[case]
    (tmp_path / "in").mkdir()
    make(tmp_path / "in")
    counts = build_shards([source(tmp_path, "in/*")], tmp_path / "out", 2, on_bad_record="skip")
    assert counts["dropped"] == {reason: 1}
    assert read_shards(tmp_path / "out", 2).column("text").to_pylist() == ["good"]


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_fails_or_is_skipped(tmp_path, case):
    make, words, reason = BAD_FILES[case]
    (tmp_path / "in").mkdir()
    make(tmp_path / "in")
    write_jsonl(tmp_path / "in" / "z_good.jsonl", [{"text": "good"}])
    out = tmp_path / "out"
    with pytest.raises(CorpusError) as err:
        build_shards([source(tmp_path, "in/*")], out, 2)
    for word in words:
        assert word in str(err.value)
    assert_nothing_written(out)
    counts = build_shards([source(tmp_path, "in/*")], out, 2, on_bad_record="skip")
    assert counts["files_skipped"] == {reason: 1} and counts["out"] == 1


def test_skip_mode_fails_when_too_much_is_bad_and_writes_nothing(tmp_path):
    """A wrong text column under on_bad_record skip: every record is bad, so nothing is kept;
    a few bad records above corpus.max_skipped_share fail too; below it they are skipped."""
    write_jsonl(tmp_path / "a.jsonl", [{"body": f"doc {i}"} for i in range(5)])
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match="no document kept of 5 records in 1 files"):
        build_shards([source(tmp_path, "*.jsonl")], out, 2, on_bad_record="skip")
    assert_nothing_written(out)
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"doc {i}"} for i in range(9)], [b"{bad"])
    with pytest.raises(CorpusError, match="1 of 10 records were bad.*max_skipped_share 0.05"):
        build_shards(
            [source(tmp_path, "*.jsonl")],
            out,
            2,
            on_bad_record="skip",
            max_skipped_share=0.05,
        )
    assert_nothing_written(out)
    counts = build_shards(
        [source(tmp_path, "*.jsonl")],
        out,
        2,
        on_bad_record="skip",
        max_skipped_share=0.1,
    )
    assert (counts["out"], counts["dropped"]) == (9, {"bad_json": 1})


def test_a_source_that_keeps_nothing_fails_naming_it_even_when_others_keep_plenty(tmp_path):
    """A second source with a wrong text column: under skip its records are only 5 of 105,
    below any sensible skipped share, yet none of its documents would reach the shards."""
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    write_jsonl(tmp_path / "good" / "a.jsonl", [{"text": f"doc {i}"} for i in range(100)])
    write_jsonl(tmp_path / "bad" / "b.jsonl", [{"body": f"other {i}"} for i in range(5)])
    sources = [
        Source.from_config(0, {"name": "good", "glob": str(tmp_path / "good" / "*.jsonl")}),
        Source.from_config(1, {"name": "web", "glob": str(tmp_path / "bad" / "*.jsonl")}),
    ]
    out = tmp_path / "out"
    with pytest.raises(CorpusError) as error:
        build_shards(
            sources,
            out,
            2,
            on_bad_record="skip",
            max_skipped_share=0.1,
            min_docs_per_source=1,
        )
    message = str(error.value)
    assert "corpus.sources[1]: source 'web' kept 0 documents of 5 records" in message
    assert "missing_text" in message and "corpus.min_docs_per_source (1)" in message
    assert_nothing_written(out)
    counts = build_shards(
        sources, out, 2, on_bad_record="skip", max_skipped_share=0.1
    )  # no floor: the old behaviour, 100 kept
    assert counts["out"] == 100 and counts["per_source"]["web"]["out"] == 0


def test_a_failed_rerun_leaves_earlier_shards_intact(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "first"}])
    out = tmp_path / "out"
    build_shards([source(tmp_path, "*.jsonl")], out, 1)
    before = (out / shard_name(0, 1)).read_bytes()
    write_jsonl(tmp_path / "a.jsonl", [{"text": "second"}], [b"{broken"])
    with pytest.raises(CorpusError):
        build_shards([source(tmp_path, "*.jsonl")], out, 1)
    assert (out / shard_name(0, 1)).read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [shard_name(0, 1)]


def test_glob_matching_nothing_names_the_config_key(tmp_path):
    with pytest.raises(CorpusError, match=r"corpus.sources\[0\].glob: no file matches"):
        build_shards([source(tmp_path, "nothing/*.jsonl")], tmp_path / "out", 1)
    optional = source(tmp_path, "nothing/*.jsonl", optional=True)
    with pytest.raises(CorpusError, match="no input file matches any source"):
        build_shards([optional], tmp_path / "out", 1)


@pytest.mark.skipif(
    not SHARED_CORPUS.is_dir(), reason=f"shared corpus samples absent ({SHARED_CORPUS})"
)
def test_real_shared_samples_read_cleanly(tmp_path):
    sources = [
        Source.from_config(
            0,
            {
                "name": "mse",
                "glob": str(SHARED_CORPUS / "math_stackexchange/*.jsonl"),
                "text": ["input", "output"],
            },
        ),
        Source.from_config(
            1, {"name": "edu", "glob": str(SHARED_CORPUS / "fineweb_edu_scorer_sample/*.csv")}
        ),
        Source.from_config(
            2,
            {
                "name": "legal",
                "glob": str(SHARED_CORPUS / "fineweb_legal_pilot/*.parquet"),
                "id": "id",
                "url": "url",
            },
        ),
    ]
    counts = build_shards(sources, tmp_path / "out", 3)
    assert counts["per_source"]["mse"]["in"] == 988
    assert counts["per_source"]["edu"]["in"] == 150
    assert counts["per_source"]["legal"]["in"] == 300
    assert counts["out"] == read_shards(tmp_path / "out", 3).num_rows


# ---------------------------------------------------------------- one process, in order


def one_process(sources: list[Source], n_shards: int, on_bad_record: str = "fail") -> tuple:
    """What the stage must write, from the plainest reading of its contract: every source
    in config order, its files sorted, their records in order, one set of the ids seen; a
    source with max_docs stops at the record after its max_docs-th kept document (so what
    follows is never read). Returns (rows per shard, counts) or raises CorpusError."""
    seen, shards = set(), [[] for _ in range(n_shards)]
    per_source, dropped, files_skipped = {}, Counter(), Counter()

    def items(src, files):
        for path in files:
            try:
                for batch in READERS[src.format_of(path)](path, src, 7):
                    for item in batch:
                        yield path, item
            except BadFile as bad:
                if on_bad_record == "fail":
                    raise CorpusError(str(bad)) from None
                yield path, bad

    for src in sources:
        files = src.files()
        if not files and not src.optional:
            raise CorpusError(f"{src.key}.glob: no file matches")
        mine = {"files": len(files), "in": 0, "out": 0, "limited_by_max_docs": False}
        reasons = Counter()
        for path, item in items(src, files):
            if isinstance(item, BadFile):
                files_skipped[item.reason] += 1
                continue
            if src.max_docs is not None and mine["out"] >= src.max_docs:
                mine["limited_by_max_docs"] = True
                break
            mine["in"] += 1
            try:
                if isinstance(item, BadRecord):
                    raise item
                reason, row, _ = normalise(item, src, path)
            except BadRecord as bad:
                if on_bad_record == "fail":
                    raise CorpusError(str(bad)) from None
                reason = bad.reason
            if reason is None and int(row["doc_id"], 16) in seen:
                reason = "duplicate"
            if reason is not None:
                reasons[reason] += 1
                continue
            seen.add(int(row["doc_id"], 16))
            shards[shard_of(row["doc_id"], n_shards)].append(row)
            mine["out"] += 1
        per_source[src.name] = {**mine, "dropped": dict(sorted(reasons.items()))}
        dropped.update(reasons)
    if not any(src.files() for src in sources):
        raise CorpusError("no input file matches any source glob")
    n_out = sum(len(rows) for rows in shards)
    if on_bad_record == "skip" and n_out == 0:
        raise CorpusError("no document kept")
    counts = {
        "in": sum(s["in"] for s in per_source.values()),
        "out": n_out,
        "dropped": dict(sorted(dropped.items())),
        "n_shards": n_shards,
        "docs_per_shard": [len(rows) for rows in shards],
        "files_skipped": dict(sorted(files_skipped.items())),
        "per_source": per_source,
    }
    return shards, counts


def stage_output(out: Path, counts: dict, n_shards: int) -> tuple:
    rows = [pq.read_table(out / shard_name(i, n_shards)).to_pylist() for i in range(n_shards)]
    return rows, {k: v for k, v in counts.items() if k not in ("schema", "stage", "elapsed_s")}


def random_corpus(rng: random.Random, folder: Path) -> list[Source]:
    """A few sources of small files: duplicates within and across files and sources, empty
    and bad records, empty and unreadable files, some sources with max_docs."""
    folder.mkdir()
    sources = []
    for s in range(rng.randint(1, 3)):
        for f in range(rng.randint(0, 4)):
            kind = rng.random()
            if kind < 0.08:
                (folder / f"s{s}_{f}.jsonl").write_bytes(b"")
                continue
            if kind < 0.12:
                (folder / f"s{s}_{f}.parquet").write_bytes(b"PAR1 not parquet")
                continue
            texts = [rng.choice(["", " ", f"doc {rng.randint(0, 30)}"]) for _ in range(12)]
            texts = texts[: rng.randint(0, 12)]
            if kind < 0.3:
                pq.write_table(pa.table({"text": texts}), folder / f"s{s}_{f}.parquet")
                continue
            lines = [json.dumps({"text": t}).encode() for t in texts]
            for _ in range(rng.randint(0, 2)):
                lines.insert(rng.randint(0, len(lines)), rng.choice([b"{broken", b'{"x": 1}']))
            (folder / f"s{s}_{f}.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
        entry = {"name": f"s{s}", "glob": str(folder / f"s{s}_*"), "optional": rng.random() < 0.3}
        if rng.random() < 0.6:
            entry["max_docs"] = rng.randint(1, 10)
        sources.append(Source.from_config(s, entry))
    return sources


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_scatter_gather_writes_what_one_process_reading_in_order_would(tmp_path_factory, seed):
    rng = random.Random(seed)
    tmp = tmp_path_factory.mktemp("corpus")
    sources = random_corpus(rng, tmp / "in")
    n_shards, mode = rng.randint(1, 4), rng.choice(["fail", "skip"])
    try:
        expected = one_process(sources, n_shards, mode)
    except CorpusError:
        expected = None
    for files_per_job in (1, 3):
        out = tmp / f"out-{files_per_job}"
        try:
            counts = build_shards(
                sources,
                out,
                n_shards,
                batch_size=rng.randint(1, 5),
                on_bad_record=mode,
                files_per_job=files_per_job,
            )
        except CorpusError:
            assert expected is None, "the stage failed where one process would not"
            assert_nothing_written(out)
            continue
        assert expected is not None, "the stage kept a corpus one process would fail on"
        assert stage_output(out, counts, n_shards) == expected


def test_shards_are_the_same_bytes_whatever_the_files_per_job(tmp_path):
    (tmp_path / "in").mkdir()
    for f in range(5):
        rows = [{"text": f"doc {(7 * f + i) % 23}"} for i in range(9)] + [{"text": " "}]
        write_jsonl(tmp_path / "in" / f"{f}.jsonl", rows)
    src = source(tmp_path, "in/*.jsonl", max_docs=15)
    counts = {}
    for files_per_job in (1, 2, 5):
        out = tmp_path / str(files_per_job)
        counts[files_per_job] = build_shards(
            [src], out, 3, batch_size=4, files_per_job=files_per_job
        )
        counts[files_per_job].pop("elapsed_s")
    assert counts[1] == counts[2] == counts[5]
    assert counts[1]["per_source"]["t"]["limited_by_max_docs"]
    for i in range(3):
        name = shard_name(i, 3)
        assert filecmp.cmp(tmp_path / "1" / name, tmp_path / "2" / name, shallow=False)
        assert filecmp.cmp(tmp_path / "1" / name, tmp_path / "5" / name, shallow=False)


def test_a_duplicate_past_a_sources_limit_is_kept_by_the_next_source(tmp_path):
    """One process stops reading a source at its limit: a later copy of a text it never
    read is new, though the scatter jobs read the whole file."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_jsonl(tmp_path / "a" / "1.jsonl", [{"text": "x"}, {"text": "y"}, {"text": "z"}])
    write_jsonl(tmp_path / "b" / "1.jsonl", [{"text": "z"}, {"text": "x"}])
    sources = [
        Source.from_config(0, {"name": "a", "glob": str(tmp_path / "a/*"), "max_docs": 2}),
        Source.from_config(1, {"name": "b", "glob": str(tmp_path / "b/*")}),
    ]
    counts = build_shards(sources, tmp_path / "out", 2)
    assert counts["per_source"]["a"] == {
        "files": 1,
        "in": 2,
        "out": 2,
        "dropped": {},
        "limited_by_max_docs": True,
    }
    assert counts["per_source"]["b"]["out"] == 1 and counts["dropped"] == {"duplicate": 1}
    texts = read_shards(tmp_path / "out", 2).column("text").to_pylist()
    assert sorted(texts) == ["x", "y", "z"]


def test_a_bad_record_past_a_sources_limit_is_never_read(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "two"}], [b"{broken"])
    write_jsonl(tmp_path / "b.jsonl", [], [b"{broken"])
    counts = build_shards([source(tmp_path, "*.jsonl", max_docs=2)], tmp_path / "out", 2)
    assert (counts["in"], counts["out"]) == (2, 2)
    with pytest.raises(CorpusError, match="a.jsonl:3: malformed JSON"):
        build_shards([source(tmp_path, "*.jsonl", max_docs=3)], tmp_path / "out3", 2)


def test_a_part_file_holds_batches_of_one_shard_each(tmp_path):
    """A gather job reads only its own shard's batches of every part."""
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"doc {i}"} for i in range(100)])
    part = tmp_path / "p.arrow"
    counts = run_part(
        inputs={"files": [str(tmp_path / "a.jsonl")]},
        outputs={"part": str(part), "counts": str(tmp_path / "p.json")},
        settings={
            "part": "t-00000-of-00001",
            "source_index": 0,
            "first_file": 0,
            "source": {"name": "t", "glob": str(tmp_path / "*.jsonl")},
            "limited": False,
            "n_shards": 4,
            "on_bad_record": "fail",
        },
        execution={"batch_size": 30},
    )
    reader = pa.ipc.open_file(str(part))
    assert sorted(i for batches in counts["shard_batches"] for i in batches) == list(
        range(reader.num_record_batches)
    )
    for shard, batches in enumerate(counts["shard_batches"]):
        for i in batches:
            ids = reader.get_batch(i).column("doc_id").to_pylist()
            assert {shard_of(d, 4) for d in ids} == {shard}
    assert counts["in"] == counts["out"] == 100


# ---------------------------------------------------------------- the jobs


def stage_jobs(tmp_path: Path, sources: list[dict], n_shards: int, files_per_job: int) -> dict:
    """Run the stage's jobs with the arguments rules/01_corpus.smk gives them; the counts."""
    work, out = tmp_path / "work", tmp_path / "results" / "corpus"
    groups = part_groups(sources, files_per_job)
    ids = [g["id"] for g in groups]
    policy = {"n_shards": n_shards, "on_bad_record": "skip"}
    for g in groups:
        entry = sources[g["source_index"]]
        run_part(
            inputs={"files": g["files"]},
            outputs={
                "part": str(work / f"{g['id']}.arrow"),
                "counts": str(work / f"{g['id']}.json"),
            },
            settings={
                "part": g["id"],
                "source_index": g["source_index"],
                "first_file": g["first_file"],
                "source": {k: v for k, v in entry.items() if k != "max_docs"},
                "limited": "max_docs" in entry,
                **policy,
            },
            execution={"batch_size": 3},
        )
    parts = {
        "parts": [str(work / f"{i}.arrow") for i in ids],
        "part_counts": [str(work / f"{i}.json") for i in ids],
    }
    names = [entry["name"] for entry in sources]
    limits = {}
    if any("max_docs" in entry for entry in sources):
        limits = {"limits": str(work / "limits.json")}
        run_limits(
            inputs=parts,
            outputs={"limits": limits["limits"]},
            settings={
                "sources": names,
                "max_docs": [entry.get("max_docs") for entry in sources],
                "parts": ids,
            },
            execution={},
        )
    shards = [f"{i:05d}-of-{n_shards:05d}" for i in range(n_shards)]
    for shard in shards:
        run_shard(
            inputs={**parts, **limits},
            outputs={
                "shard": str(work / f"shard-{shard}.parquet"),
                "counts": str(work / f"shard-{shard}.json"),
            },
            settings={"shard": shard, "n_shards": n_shards, "parts": ids},
            execution={"batch_size": 3},
        )
    return run(
        inputs={
            "shards": [str(work / f"shard-{s}.parquet") for s in shards],
            "shard_counts": [str(work / f"shard-{s}.json") for s in shards],
            "part_counts": parts["part_counts"],
            **limits,
        },
        outputs={
            "shards": [str(out / f"shard-{s}.parquet") for s in shards],
            "counts": str(out / "counts.json"),
        },
        settings={"sources": names, "parts": ids, **policy, "max_skipped_share": 0.2},
        execution={"min_docs_per_source": 1},
    )


def test_the_jobs_write_what_build_shards_writes(tmp_path):
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": f"doc {i}"} for i in range(7)], [b"{bad"])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"text": f"doc {i}"} for i in range(4, 12)])
    write_jsonl(tmp_path / "in" / "c.jsonl", [{"text": f"more {i}"} for i in range(5)])
    sources = [
        {"name": "t", "glob": str(tmp_path / "in" / "[ab].jsonl")},
        {"name": "u", "glob": str(tmp_path / "in" / "c.jsonl"), "max_docs": 3},
    ]
    counts = stage_jobs(tmp_path, sources, n_shards=2, files_per_job=1)
    out = tmp_path / "results" / "corpus"
    assert counts == json.loads((out / "counts.json").read_text())
    # Snakemake fails the corpus job when an output is older than an input; the final
    # shards are the gathered ones under new names, so one shard's stamp is every shard's
    inputs = [*(tmp_path / "work").glob("*.json"), *(tmp_path / "work").glob("*.parquet")]
    outputs = [*out.glob("shard-*.parquet"), out / "counts.json"]
    assert min(p.stat().st_mtime_ns for p in outputs) >= max(p.stat().st_mtime_ns for p in inputs)
    assert (counts["in"], counts["out"]) == (19, 15)
    assert counts["dropped"] == {"bad_json": 1, "duplicate": 3}
    direct = build_shards(
        [Source.from_config(i, entry) for i, entry in enumerate(sources)],
        tmp_path / "direct",
        2,
        batch_size=3,
        on_bad_record="skip",
    )
    assert direct["docs_per_shard"] == counts["docs_per_shard"]
    assert direct["per_source"] == counts["per_source"]
    for i in range(2):
        name = shard_name(i, 2)
        assert filecmp.cmp(out / name, tmp_path / "direct" / name, shallow=False)


def test_a_failed_check_gives_no_shard_its_final_name(tmp_path):
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "one"}])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"body": "x"}])
    sources = [
        {"name": "t", "glob": str(tmp_path / "in" / "a.jsonl")},
        {"name": "web", "glob": str(tmp_path / "in" / "b.jsonl")},
    ]
    with pytest.raises(CorpusError, match="source 'web' kept 0 documents"):
        stage_jobs(tmp_path, sources, n_shards=2, files_per_job=1)
    assert_nothing_written(tmp_path / "results" / "corpus")


def test_stage_command_line_and_its_errors(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "two"}])
    parts = {
        "inputs": {"files": [str(tmp_path / "a.jsonl")]},
        "outputs": {"part": str(tmp_path / "p.arrow"), "counts": str(tmp_path / "p.json")},
        "settings": {
            "part": "t-00000-of-00001",
            "source_index": 0,
            "first_file": 0,
            "source": {"name": "t", "glob": str(tmp_path / "*.jsonl")},
            "limited": False,
            "n_shards": 2,
            "on_bad_record": "fail",
        },
        "execution": {"batch_size": 3, "threads": 1},
    }

    def synthllm(parts):
        args = [f"--{name}={json.dumps(value)}" for name, value in parts.items()]
        cmd = [sys.executable, "-m", "synthllm", "corpus_part", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    proc = synthllm(parts)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(Path(parts["outputs"]["counts"]).read_text())["out"] == 2
    # a source matching no file: the workflow plans one job without files for it
    parts["inputs"]["files"] = []
    parts["settings"]["source"]["glob"] = str(tmp_path / "none/*.jsonl")
    proc = synthllm(parts)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "synthllm corpus_part: error: corpus.sources[0].glob: no file matches" in proc.stderr
    del parts["execution"]["batch_size"]
    proc = synthllm(parts)
    assert proc.returncode == 2 and "--execution: no key 'batch_size'" in proc.stderr


def test_part_groups_follow_the_sorted_files_of_each_source(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.jsonl"):
        (tmp_path / name).write_text("{}\n")
    sources = [
        {"name": "x", "glob": str(tmp_path / "*.jsonl")},
        {"name": "gone", "glob": str(tmp_path / "none/*"), "optional": True},
        {"name": "missing", "glob": str(tmp_path / "none/*")},
    ]
    groups = part_groups(sources, 2)
    assert [(g["id"], g["first_file"], [Path(f).name for f in g["files"]]) for g in groups] == [
        ("x-00000-of-00002", 0, ["a.jsonl", "b.jsonl"]),
        ("x-00001-of-00002", 2, ["c.jsonl"]),
        ("missing-00000-of-00000", 0, []),
    ]
    assert [g["id"] for g in part_groups(sources[1:2], 2)] == ["gone-00000-of-00000"]


# ---------------------------------------------------------------- the demo corpus


def config_sources(name: str) -> list[dict]:
    import yaml

    sources = yaml.safe_load((ROOT / "config" / name).read_text())["corpus"]["sources"]
    return [dict(entry, glob=str(ROOT / entry["glob"])) for entry in sources]


needs_demo = pytest.mark.skipif(
    not any(DEMO_CORPUS.glob("*/*")),
    reason=f"demo corpus absent ({DEMO_CORPUS}; ./install.sh fills it from ../shared/data/corpus)",
)


@needs_demo
@pytest.mark.parametrize("config", ["test.yaml", "default.yaml"])
def test_the_demo_corpus_gives_what_one_process_would(tmp_path, config):
    sources = [Source.from_config(i, e) for i, e in enumerate(config_sources(config))]
    expected = one_process(sources, 3)
    counts = build_shards(sources, tmp_path / "out", 3, batch_size=50, files_per_job=2)
    assert stage_output(tmp_path / "out", counts, 3) == expected


@needs_demo
def test_snakemake_writes_the_same_corpus_whatever_the_files_per_job(tmp_path):
    """The test config's corpus through Snakemake (its scatter, limits and gather jobs):
    one file per scatter job, then three."""
    import yaml

    outputs = {}
    for files_per_job in (1, 3):
        results = tmp_path / f"r{files_per_job}"
        layer = tmp_path / f"c{files_per_job}.yaml"
        layer.write_text(
            yaml.safe_dump({"results": str(results), "corpus": {"files_per_job": files_per_job}})
        )
        target = results / "corpus" / "counts.json"
        cmd = [sys.executable, "-m", "snakemake", str(target), "--cores", "2", "--nolock"]
        cmd += ["--configfile", "config/test.yaml", str(layer)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        parts = sorted(p.stem for p in (results / "logs" / "corpus_part").iterdir())
        assert len(parts) == (5 if files_per_job == 1 else 3), parts
        assert not (results / "corpus_parts").exists() or not any(
            (results / "corpus_parts").iterdir()
        )  # temporary
        outputs[files_per_job] = results / "corpus"
    counts = [json.loads((outputs[n] / "counts.json").read_text()) for n in (1, 3)]
    for c in counts:
        c.pop("elapsed_s")
    assert counts[0] == counts[1] and counts[0]["out"] == 20
    names = sorted(p.name for p in outputs[1].glob("shard-*.parquet"))
    assert names == [shard_name(0, 2), shard_name(1, 2)]
    for name in names:
        assert filecmp.cmp(outputs[1] / name, outputs[3] / name, shallow=False)
