"""The token store (synthllm train_tokens) on real gsm8k samples and the SmolLM2 tokenizer:
the same ids and labels as training tokenising one sample at a time, packing from the
offsets alone as the old packing did, the atomic write and the errors that name their
file, record or key."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from synthllm.core.chat import prompt_messages, sft_messages
from synthllm.stages.train_data import IGNORE, Rows, pack_bounds, read_row
from synthllm.stages.train_settings import TrainError
from synthllm.stages.train_tokens import (
    Encoded,
    open_store,
    run,
    tokenizer_digest,
    write_store,
)
from trainfiles import NEEDS_DATA, SYSTEM, TOKENIZER, gsm8k, write_mixture

pytestmark = NEEDS_DATA


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER)


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(out["input_ids"])


def encode_sample(tokenizer, question, answer, system_prompt, loss_on, max_seq_len):
    """The reference: how training tokenised each sample before the token store, one at a
    time (ids, labels, truncated)."""
    ids = chat_ids(tokenizer, sft_messages(question, answer, system_prompt))
    labels = list(ids)
    if loss_on == "answer":
        prompt = chat_ids(
            tokenizer, prompt_messages(question, system_prompt), add_generation_prompt=True
        )
        assert ids[: len(prompt)] == prompt
        labels[: len(prompt)] = [IGNORE] * len(prompt)
    labels[0] = IGNORE
    truncated = len(ids) > max_seq_len
    return ids[:max_seq_len], labels[:max_seq_len], truncated


def old_pack(samples: list[tuple[list[int], list[int]]], max_len: int) -> list[tuple]:
    """The reference: training's greedy packing over the samples' lists, as it was."""
    rows = []
    for ids, labels in samples:
        if rows and len(rows[-1][0]) + len(ids) <= max_len:
            rows[-1][0].extend(ids)
            rows[-1][1].extend(labels)
            rows[-1][2].append(len(ids))
        else:
            rows.append((list(ids), list(labels), [len(ids)]))
    return rows


def tokenise(mixture: Path, out: Path, loss_on="answer", max_seq_len=1024, base=TOKENIZER):
    return run(
        inputs={"mixture": str(mixture), "base": str(base)},
        outputs={"tokens": str(out)},
        settings={"system_prompt": SYSTEM, "loss_on": loss_on, "max_seq_len": max_seq_len},
        execution={"threads": 2},
    )


def store_settings(tokenizer, loss_on="answer", max_seq_len=1024) -> dict:
    return {
        "system_prompt": SYSTEM,
        "loss_on": loss_on,
        "max_seq_len": max_seq_len,
        "tokenizer": tokenizer_digest(tokenizer),
    }


@pytest.fixture(scope="module")
def mixture300(tmp_path_factory):
    path = tmp_path_factory.mktemp("mix") / "mix.parquet"
    records = gsm8k(300)
    return path, records, write_mixture(path, records, TOKENIZER)


# ---------------------------------------------------------------------------- ids and labels


@pytest.mark.parametrize("loss_on, max_seq_len", [("answer", 1024), ("all", 1024), ("answer", 96)])
def test_ids_and_labels_equal_tokenising_one_sample_at_a_time(
    tmp_path, tokenizer, mixture300, loss_on, max_seq_len
):
    mixture, records, _ = mixture300
    counts = tokenise(mixture, tmp_path / "tokens", loss_on, max_seq_len)
    store = open_store(tmp_path / "tokens", store_settings(tokenizer, loss_on, max_seq_len))
    rows = Rows.of(store, max_seq_len, packing=False)
    assert len(store) == len(rows) == counts["samples"] == len(records)
    truncated = 0
    for i, r in enumerate(records):
        ids, labels, cut = encode_sample(
            tokenizer, r["question"], r["answer"], SYSTEM, loss_on, max_seq_len
        )
        row = read_row(store, rows, i)
        assert row.input_ids.tolist() == ids and row.labels.tolist() == labels, i
        assert row.segments == [len(ids)]
        assert rows.tokens[i] == len(ids)
        assert rows.label_tokens[i] == sum(1 for x in labels if x != IGNORE)
        truncated += cut
    assert counts["truncated_samples"] == truncated
    assert (truncated > 0) == (max_seq_len == 96)
    assert counts["stored_tokens"] == int(rows.tokens.sum())
    assert counts["label_tokens"] == int(rows.label_tokens.sum())


def test_answer_only_labels_cover_exactly_the_assistant_turn(tmp_path, tokenizer, mixture300):
    mixture, records, _ = mixture300
    tokenise(mixture, tmp_path / "tokens")
    store = open_store(tmp_path / "tokens", store_settings(tokenizer))
    row = read_row(store, Rows.of(store, 1024, packing=False), 0)
    ids, labels = row.input_ids.tolist(), row.labels.tolist()
    first = next(i for i, x in enumerate(labels) if x != IGNORE)
    assert all(x == IGNORE for x in labels[:first])
    assert labels[first:] == ids[first:]
    # the supervised text is the answer and the end of the assistant's turn, nothing before
    supervised = tokenizer.decode(ids[first:])
    assert supervised.startswith(records[0]["answer"][:20])
    assert records[0]["question"][:30] in tokenizer.decode(ids[:first])
    assert supervised.rstrip().endswith(tokenizer.decode(ids[-2:]).rstrip())


def test_loss_on_all_masks_only_the_first_token(tmp_path, tokenizer, mixture300):
    mixture, _, _ = mixture300
    tokenise(mixture, tmp_path / "tokens", loss_on="all")
    store = open_store(tmp_path / "tokens", store_settings(tokenizer, loss_on="all"))
    assert set(np.asarray(store.label_start).tolist()) == {1}


def test_stored_samples_match_the_mixture_token_counts(tmp_path, tokenizer, mixture300):
    mixture, records, tokens = mixture300
    counts = tokenise(mixture, tmp_path / "tokens")
    store = open_store(tmp_path / "tokens", store_settings(tokenizer))
    assert counts["tokens"] == tokens == counts["stored_tokens"] == len(store.input_ids)
    assert counts["in"] == counts["out"] == counts["samples"] == len(records)
    assert store.input_ids.dtype == np.int32 and store.offsets.dtype == np.int64
    assert isinstance(store.input_ids, np.memmap)


def test_the_store_is_the_same_when_made_again(tmp_path, mixture300):
    """A rerun of the job writes the same digest: a training checkpoint stays resumable."""
    mixture, _, _ = mixture300
    a = tokenise(mixture, tmp_path / "a")
    b = tokenise(mixture, tmp_path / "b")
    assert a["digest"] == b["digest"]
    assert tokenise(mixture, tmp_path / "c", max_seq_len=96)["digest"] != a["digest"]


# ---------------------------------------------------------------------------- packing


@pytest.mark.parametrize("max_len", [256, 600, 4096])
def test_packing_from_offsets_equals_the_old_packing(tmp_path, tokenizer, mixture300, max_len):
    mixture, records, _ = mixture300
    tokenise(mixture, tmp_path / "tokens", max_seq_len=max_len)
    store = open_store(tmp_path / "tokens", store_settings(tokenizer, max_seq_len=max_len))
    encoded = [
        encode_sample(tokenizer, r["question"], r["answer"], SYSTEM, "answer", max_len)[:2]
        for r in records
    ]
    expected = old_pack(encoded, max_len)
    rows = Rows.of(store, max_len, packing=True)
    assert len(rows) == len(expected) < len(records)
    for r, (ids, labels, segments) in enumerate(expected):
        row = read_row(store, rows, r)
        assert row.input_ids.tolist() == ids and row.labels.tolist() == labels, r
        assert row.segments == segments
        assert rows.tokens[r] == len(ids)
        assert rows.label_tokens[r] == sum(1 for x in labels if x != IGNORE)


def test_pack_bounds_is_greedy_on_random_lengths():
    rng = np.random.default_rng(0)
    for max_len in (1, 7, 50):
        lengths = rng.integers(1, max_len + 1, size=500)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        expected, fill = [0], 0
        for i, n in enumerate(lengths):
            if i and fill + n <= max_len:
                fill += n
            else:
                if i:
                    expected.append(i)
                fill = n
        expected.append(len(lengths))
        assert pack_bounds(offsets, max_len).tolist() == expected
    assert pack_bounds(np.zeros(1, dtype=np.int64), 8).tolist() == [0]


# ---------------------------------------------------------------------------- the write


def batches(n: int, fail_at: int | None = None):
    for k in range(n):
        if k == fail_at:
            raise RuntimeError("tokenizer died")
        lengths = np.array([3, 2], dtype=np.int64)
        yield Encoded(np.arange(5, dtype=np.int32) + k, lengths, np.ones(2, np.int32), 0)


def test_a_failed_write_leaves_no_partial_store_and_keeps_the_old_one(tmp_path):
    dest = tmp_path / "tokens" / "3M" / "16"
    with pytest.raises(RuntimeError, match="tokenizer died"):
        write_store(dest, 6, batches(3, fail_at=2), {"k": 1})
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    counts = write_store(dest, 6, batches(3), {"k": 1})
    assert counts["samples"] == 6 and counts["stored_tokens"] == 15
    assert counts["label_tokens"] == 15 - 6
    before = (dest / "counts.json").read_text()
    with pytest.raises(RuntimeError):
        write_store(dest, 6, batches(3, fail_at=1), {"k": 2})
    assert (dest / "counts.json").read_text() == before
    assert [p.name for p in dest.parent.iterdir()] == ["16"]
    # too few samples for the count announced: an error, nothing written
    with pytest.raises(TrainError, match="4 samples written of the 6 announced"):
        write_store(tmp_path / "short", 6, batches(2), {"k": 1})
    assert not (tmp_path / "short").exists()
    store = open_store(dest, {"k": 1})
    assert store.offsets.tolist() == [0, 3, 5, 8, 10, 13, 15]
    assert store.input_ids[5:10].tolist() == [1, 2, 3, 4, 5]


def test_the_digest_is_the_contents_whatever_the_batches(tmp_path):
    whole = Encoded(np.arange(10, dtype=np.int32), np.array([3, 3, 4]), np.ones(3, np.int32), 0)
    halves = [
        Encoded(whole.input_ids[:3], whole.lengths[:1], whole.label_start[:1], 0),
        Encoded(whole.input_ids[3:], whole.lengths[1:], whole.label_start[1:], 0),
    ]
    a = write_store(tmp_path / "a", 3, [whole], {"k": 1})
    b = write_store(tmp_path / "b", 3, halves, {"k": 1})
    assert a["digest"] == b["digest"] != write_store(tmp_path / "c", 3, [whole], {"k": 2})["digest"]


def test_a_store_of_other_settings_is_refused_naming_them(tmp_path):
    write_store(tmp_path / "s", 2, batches(1), {"loss_on": "all", "max_seq_len": 96})
    with pytest.raises(TrainError, match=r"max_seq_len: 96 there, 512 here"):
        open_store(tmp_path / "s", {"loss_on": "all", "max_seq_len": 512})
    with pytest.raises(TrainError, match="no token store here"):
        open_store(tmp_path / "none", {})


# ---------------------------------------------------------------------------- bad input


def test_bad_mixtures_name_the_file_and_record(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "mix.parquet"
    pq.write_table(pa.table({"question": ["q"], "answer": ["a"]}), path)
    with pytest.raises(TrainError, match=r"mix.parquet: missing column\(s\) \['tokens'\]"):
        tokenise(path, tmp_path / "out")
    pq.write_table(
        pa.table({"question": ["q1", "q2", "q3"], "answer": ["a", "a", ""], "tokens": [1, 1, 1]}),
        path,
    )
    with pytest.raises(TrainError, match="mix.parquet: record 2 has an empty question or answer"):
        tokenise(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_template_rendering_the_prompt_otherwise_alone_is_refused_naming_the_model(
    tmp_path, mixture300
):
    """A generation prompt that the conversation does not start with: the prompt cannot be
    masked (loss_on: answer); loss_on: all needs no prompt and goes through."""
    base = tmp_path / "base"
    base.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TOKENIZER / name, base / name)
    template = (base / "chat_template.jinja").read_text()
    marker = "'<|im_start|>assistant\n'"  # a newline inside the quotes
    assert template.count(marker) == 1, "the generation prompt of SmolLM2's template moved"
    (base / "chat_template.jinja").write_text(
        template.replace(marker, "'<|im_start|>assistant\nSure.\n'")
    )
    mixture, _, _ = mixture300
    with pytest.raises(
        TrainError, match=rf"{base}: the chat template renders the prompt of record 0"
    ):
        tokenise(mixture, tmp_path / "out", base=base)
    assert not (tmp_path / "out").exists()
    assert tokenise(mixture, tmp_path / "out", loss_on="all", base=base)["samples"] == 300
