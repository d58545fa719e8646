"""The corpus stage on real files in every supported format, including bad ones."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthllm.stages.corpus import (
    SCHEMA,
    build_shards,
    doc_id_of,
    run,
    shard_name,
    shard_of,
)
from synthllm.stages.corpus_sources import CorpusError, Source

PINNED_ID = "b2f42041bf160d7a"  # blake2b-64 of the text below
SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


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
    counts = build_shards([src], tmp_path / "out", n_shards=2, progress=False)
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
    build_shards([src], tmp_path / "out", n_shards=1, progress=False)
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
    counts = build_shards([source(tmp_path, "*.jsonl")], tmp_path / "out", 3, progress=False)
    assert counts["out"] == 2
    assert counts["dropped"] == {"duplicate": 1, "empty_text": 2}
    assert sorted(read_shards(tmp_path / "out", 3).column("text").to_pylist()) == ["other", "same"]


def test_shards_partition_by_doc_id_and_are_deterministic(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"document number {i}"} for i in range(200)])
    src = source(tmp_path, "*.jsonl")
    build_shards([src], tmp_path / "o1", 5, batch_size=7, progress=False)
    build_shards([src], tmp_path / "o2", 5, batch_size=64, progress=False)
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
    counts = build_shards(
        [source(tmp, "*.jsonl")], tmp / "out", n_shards, batch_size=5, progress=False
    )
    got = read_shards(tmp / "out", n_shards).column("text").to_pylist()
    expected = {t.strip() for t in texts if t.strip()}
    assert sorted(got) == sorted(expected)
    assert counts["in"] == counts["out"] + sum(counts["dropped"].values())


def test_max_docs_limits_a_source(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"d{i}"} for i in range(50)])
    counts = build_shards(
        [source(tmp_path, "*.jsonl", max_docs=10)], tmp_path / "out", 2, progress=False
    )
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
    build_shards([src], tmp_path / "out", 1, progress=False)
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
        build_shards(
            [source(tmp_path, "in/*")], out, 2, counts_path=out / "counts.json", progress=False
        )
    for word in words:
        assert word in str(err.value)
    assert "on_bad_record: skip" in str(err.value)
    assert_nothing_written(out)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_is_counted_and_skipped(tmp_path, case):
    make, _, reason = BAD_CASES[case]
    (tmp_path / "in").mkdir()
    make(tmp_path / "in")
    counts = build_shards(
        [source(tmp_path, "in/*")], tmp_path / "out", 2, on_bad_record="skip", progress=False
    )
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
        build_shards([source(tmp_path, "in/*")], out, 2, progress=False)
    for word in words:
        assert word in str(err.value)
    assert_nothing_written(out)
    counts = build_shards([source(tmp_path, "in/*")], out, 2, on_bad_record="skip", progress=False)
    assert counts["files_skipped"] == {reason: 1} and counts["out"] == 1


def test_skip_mode_fails_when_too_much_is_bad_and_writes_nothing(tmp_path):
    """A wrong text column under on_bad_record skip: every record is bad, so nothing is kept;
    a few bad records above corpus.max_skipped_share fail too; below it they are skipped."""
    write_jsonl(tmp_path / "a.jsonl", [{"body": f"doc {i}"} for i in range(5)])
    out = tmp_path / "out"
    with pytest.raises(CorpusError, match="no document kept of 5 records in 1 files"):
        build_shards([source(tmp_path, "*.jsonl")], out, 2, on_bad_record="skip", progress=False)
    assert_nothing_written(out)
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"doc {i}"} for i in range(9)], [b"{bad"])
    with pytest.raises(CorpusError, match="1 of 10 records were bad.*max_skipped_share 0.05"):
        build_shards(
            [source(tmp_path, "*.jsonl")],
            out,
            2,
            on_bad_record="skip",
            progress=False,
            max_skipped_share=0.05,
        )
    assert_nothing_written(out)
    counts = build_shards(
        [source(tmp_path, "*.jsonl")],
        out,
        2,
        on_bad_record="skip",
        progress=False,
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
            progress=False,
            max_skipped_share=0.1,
            min_docs_per_source=1,
        )
    message = str(error.value)
    assert "corpus.sources[1]: source 'web' kept 0 documents of 5 records" in message
    assert "missing_text" in message and "corpus.min_docs_per_source (1)" in message
    assert_nothing_written(out)
    counts = build_shards(
        sources, out, 2, on_bad_record="skip", progress=False, max_skipped_share=0.1
    )  # no floor: the old behaviour, 100 kept
    assert counts["out"] == 100 and counts["per_source"]["web"]["out"] == 0


def test_a_failed_rerun_leaves_earlier_shards_intact(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "first"}])
    out = tmp_path / "out"
    build_shards([source(tmp_path, "*.jsonl")], out, 1, progress=False)
    before = (out / shard_name(0, 1)).read_bytes()
    write_jsonl(tmp_path / "a.jsonl", [{"text": "second"}], [b"{broken"])
    with pytest.raises(CorpusError):
        build_shards([source(tmp_path, "*.jsonl")], out, 1, progress=False)
    assert (out / shard_name(0, 1)).read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [shard_name(0, 1)]


def test_glob_matching_nothing_names_the_config_key(tmp_path):
    with pytest.raises(CorpusError, match=r"corpus.sources\[0\].glob: no file matches"):
        build_shards([source(tmp_path, "nothing/*.jsonl")], tmp_path / "out", 1, progress=False)
    optional = source(tmp_path, "nothing/*.jsonl", optional=True)
    with pytest.raises(CorpusError, match="no input file matches any source"):
        build_shards([optional], tmp_path / "out", 1, progress=False)


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
    counts = build_shards(sources, tmp_path / "out", 3, progress=False)
    assert counts["per_source"]["mse"]["in"] == 988
    assert counts["per_source"]["edu"]["in"] == 150
    assert counts["per_source"]["legal"]["in"] == 300
    assert counts["out"] == read_shards(tmp_path / "out", 3).num_rows


def stage_parts(tmp_path: Path, n_shards: int = 2) -> dict:
    """The four arguments of the corpus job, as rules/01_corpus.smk builds them."""
    out = tmp_path / "results" / "corpus"
    files = [str(p) for p in sorted(tmp_path.glob("*.jsonl"))]
    return {
        "inputs": {"files": files},
        "outputs": {
            "shards": [str(out / shard_name(i, n_shards)) for i in range(n_shards)],
            "counts": str(out / "counts.json"),
        },
        "settings": {
            "sources": [{"name": "t", "glob": str(tmp_path / "*.jsonl")}],
            "n_shards": n_shards,
            "on_bad_record": "skip",
            "max_skipped_share": 0.2,
        },
        "execution": {"batch_size": 3, "min_docs_per_source": 1, "threads": 1},
    }


def test_stage_writes_its_shards_beside_the_counts(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": f"doc {i}"} for i in range(7)], [b"{bad"])
    parts = stage_parts(tmp_path)
    counts = run(**parts)
    assert all(Path(p).exists() for p in parts["outputs"]["shards"])
    assert counts == json.loads(Path(parts["outputs"]["counts"]).read_text())
    assert (counts["in"], counts["out"], counts["dropped"]) == (8, 7, {"bad_json": 1})
    direct = build_shards(
        [source(tmp_path, "*.jsonl")], tmp_path / "direct", 2, on_bad_record="skip", progress=False
    )
    assert direct["docs_per_shard"] == counts["docs_per_shard"]
    assert read_shards(tmp_path / "direct", 2).equals(read_shards(tmp_path / "results/corpus", 2))


def test_stage_command_line_and_its_errors(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "two"}])
    parts = stage_parts(tmp_path)

    def synthllm(parts):
        args = [f"--{name}={json.dumps(value)}" for name, value in parts.items()]
        cmd = [sys.executable, "-m", "synthllm", "corpus", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    proc = synthllm(parts)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(Path(parts["outputs"]["counts"]).read_text())["out"] == 2
    parts["settings"]["sources"][0]["glob"] = str(tmp_path / "none/*.jsonl")
    proc = synthllm(parts)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "synthllm corpus: error: corpus.sources[0].glob: no file matches" in proc.stderr
    del parts["execution"]["batch_size"]
    proc = synthllm(parts)
    assert proc.returncode == 2 and "--execution: no key 'batch_size'" in proc.stderr
