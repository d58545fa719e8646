"""The token store of one training mixture (synthllm train_tokens): every sample tokenised
once, on CPUs, with its loss mask, in a form each rank of its training job (and every
resume and retry) maps into memory and reads by offset, instead of tokenising the whole
mixture again at every start.

Input: a mixture parquet (columns `question`, `answer`, `tokens`; synthllm.stages.mixtures)
and the model's base folder (`train/{model}/0/final`: its tokenizer and chat template).
Each sample is the conversation `synthllm.core.chat.sft_messages(question, answer,
chat.system_prompt)` through the chat template, the format evaluation prompts with. With
`loss_on: answer` the labels cover only the assistant's turn: every token of the prompt
(system and user turns and the assistant header, the template rendering
`prompt_messages` with the generation prompt) is masked, and a template that renders the
prompt differently alone and inside the conversation is an error; `loss_on: all` covers
every token. The first token is always masked (nothing predicts it). Samples longer than
`max_seq_len` are cut to it. Settings: `system_prompt`, `loss_on`, `max_seq_len` (config
keys chat.system_prompt, train.loss_on and train.max_seq_len with the model's overrides):
exactly what changes the ids and labels; the tokenizer is the base folder's.

Rendering is the template's (`apply_chat_template(..., tokenize=False)`, in batches) and
tokenising the fast tokenizer's own batch encoder over the job's threads, without special
tokens added, truncation or padding: what `apply_chat_template(..., tokenize=True)` does
one conversation at a time. The first samples of every job are also encoded that way, one
by one, and a difference stops the job naming the model.

Token store schema (the folder `train_tokens/{model}/{budget}/`, written in a scratch
folder beside it and renamed into place, so a failed job leaves none):
- `input_ids.npy`: int32 [T], every sample's token ids back to back, in mixture order;
- `offsets.npy`: int64 [n + 1], sample i is `input_ids[offsets[i]:offsets[i + 1]]`
  (offsets[0] = 0, offsets[n] = T);
- `label_start.npy`: int32 [n], the labels of sample i are its ids from position
  `label_start[i]` on, and IGNORE (-100) before it (the prompt with loss_on answer, else
  the first token; its length when the prompt fills a truncated sample): the loss mask is
  always a prefix, so one number per sample holds it;
- `counts.json`: write_counts fields (in = out = the mixture's samples) plus `samples`,
  `truncated_samples`, `tokens` (the mixture's token total, the sum of its `tokens`
  column: the D of the scaling law, counted by the mixtures stage), `stored_tokens` (T),
  `label_tokens`, `settings` (the three above and `tokenizer`, a digest of the tokenizer and
  its chat template), `digest` (of the settings and every array's bytes: what a training
  checkpoint's fingerprint holds, synthllm.stages.train) and the job's `seconds` and
  `samples_per_s`.
Training opens it with `open_store` (np.load with mmap_mode="r"): its memory is the pages
it touches, whatever the mixture's size.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthllm.stages.train_settings import LOSS_ON, TrainError

log = logging.getLogger(__name__)

# samples rendered and tokenised per batch (the tokenizer spreads one over its threads)
BATCH = 4096
# samples of each job encoded again one by one through apply_chat_template, as a check
CHECKED = 16
STORE_ARRAYS = ("input_ids", "offsets", "label_start")
# what the digest reads of a batch: its ids, lengths and label starts
STORE_DTYPES = (np.int32, np.int64, np.int32)
MIXTURE_COLUMNS = ("question", "answer", "tokens")


# ---------------------------------------------------------------------------- encoding


def tokenizer_digest(tokenizer) -> str:
    """What the ids depend on in a tokenizer: its fast tokenizer (vocabulary, merges, added
    tokens, normalisation) and its chat template."""
    h = hashlib.blake2b(digest_size=8)
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    h.update(b"\0" + (tokenizer.chat_template or "").encode())
    return h.hexdigest()


def batch_encoder(tokenizer, model: str):
    """The fast tokenizer's batch encoder as apply_chat_template(tokenize=True) calls it: a
    copy of the backend without truncation or padding, no special tokens added."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TrainError(f"{model}: the tokenizer is not a fast (Rust) tokenizer")
    backend = copy.deepcopy(backend)  # its settings changed below, not the tokenizer's
    backend.no_truncation()
    backend.no_padding()

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]

    return encode


@dataclass
class Encoded:
    """A batch of samples: ids back to back, each one's length and label start."""

    input_ids: np.ndarray  # int32 [tokens]
    lengths: np.ndarray  # int64 [samples]
    label_start: np.ndarray  # int32 [samples]
    truncated: int


def encode_batch(
    tokenizer,
    encode,
    questions: list[str],
    answers: list[str],
    system_prompt: str,
    loss_on: str,
    max_seq_len: int,
    where: str = "",
    first: int = 0,
) -> Encoded:
    """Token ids and label starts of a batch of conversations (see the module docstring);
    `encode` is batch_encoder's. `where` (the model) and `first` (the batch's first record)
    name a sample the template cannot mask."""
    from synthllm.core.chat import prompt_messages, sft_messages

    full = encode(
        tokenizer.apply_chat_template(
            [sft_messages(q, a, system_prompt) for q, a in zip(questions, answers)],
            tokenize=False,
        )
    )
    if loss_on == "answer":
        prompts = encode(
            tokenizer.apply_chat_template(
                [prompt_messages(q, system_prompt) for q in questions],
                tokenize=False,
                add_generation_prompt=True,
            )
        )
        for i, (ids, prompt) in enumerate(zip(full, prompts)):
            if ids[: len(prompt)] != prompt:
                raise TrainError(
                    f"{where}: the chat template renders the prompt of record {first + i} "
                    "differently alone and inside the full conversation; loss_on: answer "
                    "cannot mask it"
                )
        starts = np.fromiter(map(len, prompts), dtype=np.int64, count=len(full))
    else:
        starts = np.zeros(len(full), dtype=np.int64)
    lengths = np.fromiter(map(len, full), dtype=np.int64, count=len(full))
    cut = np.minimum(lengths, max_seq_len)
    flat = itertools.chain.from_iterable(
        ids if len(ids) <= max_seq_len else ids[:max_seq_len] for ids in full
    )
    return Encoded(
        input_ids=np.fromiter(flat, dtype=np.int32, count=int(cut.sum())),
        lengths=cut,
        label_start=np.minimum(np.maximum(starts, 1), cut).astype(np.int32),
        truncated=int((lengths > max_seq_len).sum()),
    )


def check_against_template(
    tokenizer, encoded: Encoded, questions, answers, system_prompt, loss_on, model
) -> None:
    """The batch path against apply_chat_template(tokenize=True), one sample at a time, on
    the first samples of the batch: the same ids and the same prompt length."""
    from synthllm.core.chat import prompt_messages, sft_messages

    offsets = np.concatenate([[0], np.cumsum(encoded.lengths)])
    for i in range(min(CHECKED, len(questions))):
        ids = tokenizer.apply_chat_template(
            sft_messages(questions[i], answers[i], system_prompt), tokenize=True, return_dict=True
        )["input_ids"][: int(encoded.lengths[i])]
        start = 1
        if loss_on == "answer":
            prompt = tokenizer.apply_chat_template(
                prompt_messages(questions[i], system_prompt),
                tokenize=True,
                return_dict=True,
                add_generation_prompt=True,
            )["input_ids"]
            start = max(1, len(prompt))
        start = min(start, len(ids))
        got = encoded.input_ids[offsets[i] : offsets[i + 1]].tolist()
        if got != list(ids) or int(encoded.label_start[i]) != start:
            raise TrainError(
                f"{model}: the batch tokenizer encodes record {i} differently from "
                "apply_chat_template; this tokenizer cannot be tokenised in batches"
            )


# ---------------------------------------------------------------------------- the store


class _NpyAppender:
    """A 1-D .npy file written by appending: its header is written first for length 0 and
    rewritten at the end with the length, numpy reserving room in the header for the
    growing axis (format.GROWTH_AXIS_MAX_DIGITS), so the data never moves."""

    def __init__(self, path: Path, dtype):
        self.dtype = np.dtype(dtype)
        self.file = open(path, "wb")
        self.n = 0
        self._header()
        self.data_start = self.file.tell()

    def _header(self) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self.file, {**header, "shape": (self.n,)})

    def append(self, values: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.n += len(values)

    def close(self) -> None:
        self.file.seek(0)
        self._header()
        if self.file.tell() != self.data_start:  # numpy's header padding would have moved it
            raise AssertionError(f"{self.file.name}: the .npy header changed size")
        self.file.close()


def write_store(
    dest: str | os.PathLike,
    n_samples: int,
    batches: Iterable[Encoded],
    settings: dict,
    **extra,
) -> dict:
    """Write the token store of `n_samples` samples from `batches` (in sample order) into
    the folder `dest`, atomically: a scratch folder beside it, renamed onto it once every
    file is complete. Returns its counts (counts.json; `extra` adds fields)."""
    from synthllm.core.files import readable, write_counts

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    started = time.monotonic()
    try:
        fmt = np.lib.format
        offsets = fmt.open_memmap(scratch / "offsets.npy", "w+", np.int64, (n_samples + 1,))
        label_start = fmt.open_memmap(scratch / "label_start.npy", "w+", np.int32, (n_samples,))
        ids = _NpyAppender(scratch / "input_ids.npy", np.int32)
        # one hash per array, so the digest is the content's, whatever the batches
        hashes = [hashlib.blake2b(digest_size=8) for _ in range(3)]
        done = tokens = label_tokens = truncated = 0
        offsets[0] = 0
        for batch in batches:
            k = len(batch.lengths)
            if done + k > n_samples:
                raise TrainError(f"{dest}: more than the {n_samples} samples announced")
            offsets[done + 1 : done + k + 1] = tokens + np.cumsum(batch.lengths)
            label_start[done : done + k] = batch.label_start
            ids.append(batch.input_ids)
            for h, array, dtype in zip(
                hashes, (batch.input_ids, batch.lengths, batch.label_start), STORE_DTYPES
            ):
                h.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
            done += k
            tokens += len(batch.input_ids)
            label_tokens += int(batch.lengths.sum() - batch.label_start.sum())
            truncated += batch.truncated
        ids.close()
        if done != n_samples or int(offsets[-1]) != tokens:
            raise TrainError(f"{dest}: {done} samples written of the {n_samples} announced")
        offsets.flush()
        label_start.flush()
        del offsets, label_start
        digest = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8)
        for h in hashes:
            digest.update(h.digest())
        seconds = time.monotonic() - started
        counts = write_counts(
            scratch / "counts.json",
            "train_tokens",
            n_samples,
            n_samples,
            {},
            samples=n_samples,
            truncated_samples=truncated,
            stored_tokens=tokens,
            label_tokens=label_tokens,
            **extra,
            settings=settings,
            digest=digest.hexdigest(),
            seconds=round(seconds, 2),
            samples_per_s=round(n_samples / seconds, 1) if seconds > 0 else None,
        )
        readable(scratch)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(scratch, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return counts


@dataclass
class TokenStore:
    """A token store opened for training: its arrays memory-mapped, read-only."""

    path: Path
    input_ids: np.ndarray
    offsets: np.ndarray
    label_start: np.ndarray
    counts: dict

    def __len__(self) -> int:
        return len(self.label_start)


def open_store(path: str | os.PathLike, settings: dict) -> TokenStore:
    """The token store in folder `path`, checked against the `settings` training expects
    (system_prompt, loss_on, max_seq_len, tokenizer digest): a store made with others is
    an error naming the keys."""
    path = Path(path)
    counts_path = path / "counts.json"
    if not counts_path.is_file():
        raise TrainError(f"{path}: no token store here (no counts.json; synthllm train_tokens)")
    counts = json.loads(counts_path.read_text())
    made = counts.get("settings", {})
    differ = sorted(k for k in set(made) | set(settings) if made.get(k) != settings.get(k))
    if differ:
        pairs = ", ".join(f"{k}: {made.get(k)!r} there, {settings.get(k)!r} here" for k in differ)
        raise TrainError(f"{path}: the token store was made with other settings ({pairs})")
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in STORE_ARRAYS}
    n = counts["samples"]
    if (
        arrays["offsets"].shape != (n + 1,)
        or arrays["label_start"].shape != (n,)
        or arrays["input_ids"].shape != (int(arrays["offsets"][-1]),)
    ):
        raise TrainError(f"{path}: the arrays do not match counts.json's {n} samples")
    return TokenStore(path, counts=counts, **arrays)


# ---------------------------------------------------------------------------- the stage


def mixture_file(path: str | os.PathLike):
    """A mixture parquet, its columns checked (the error names the file)."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    missing = sorted(set(MIXTURE_COLUMNS) - set(file.schema_arrow.names))
    if missing:
        raise TrainError(f"{path}: missing column(s) {missing}")
    return file


def mixture_tokens(path: str | os.PathLike) -> int:
    """The token total of a mixture: the sum of its `tokens` column (nulls count 0)."""
    import pyarrow.compute as pc

    total = pc.sum(mixture_file(path).read(columns=["tokens"]).column("tokens")).as_py()
    return int(total or 0)


def mixture_batches(path: str | os.PathLike, size: int = BATCH) -> Iterator[tuple[int, dict]]:
    """(first record, questions and answers) of each batch of a mixture parquet; an empty
    question or answer is an error naming the file and record."""
    first = 0
    for batch in mixture_file(path).iter_batches(batch_size=size, columns=["question", "answer"]):
        columns = {name: batch.column(name).to_pylist() for name in ("question", "answer")}
        for i, (q, a) in enumerate(zip(columns["question"], columns["answer"])):
            if not q or not a:
                raise TrainError(f"{path}: record {first + i} has an empty question or answer")
        yield first, columns
        first += batch.num_rows


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The token store (`outputs["tokens"]`, a folder) of `inputs["mixture"]` under the
    tokenizer of `inputs["base"]` (the model's base folder). Settings: system_prompt,
    loss_on, max_seq_len (rules/10_train.smk); execution: the job's threads, the fast
    tokenizer's."""
    # the tokenizer's thread pool starts at its first batch and reads this once
    os.environ["RAYON_NUM_THREADS"] = str(execution["threads"])
    from transformers import AutoTokenizer

    mixture, base = inputs["mixture"], inputs["base"]
    system_prompt, loss_on = settings["system_prompt"], settings["loss_on"]
    max_seq_len = settings["max_seq_len"]
    if loss_on not in LOSS_ON:
        raise TrainError(f"config key train.loss_on: must be one of {LOSS_ON} (got {loss_on!r})")
    total = mixture_tokens(mixture)
    n = mixture_file(mixture).metadata.num_rows
    tokenizer = AutoTokenizer.from_pretrained(base)
    if not tokenizer.chat_template:
        raise TrainError(f"{base}: the tokenizer has no chat template")
    encode = batch_encoder(tokenizer, base)

    def batches() -> Iterator[Encoded]:
        for first, columns in mixture_batches(mixture):
            q, a = columns["question"], columns["answer"]
            batch = encode_batch(
                tokenizer, encode, q, a, system_prompt, loss_on, max_seq_len, base, first
            )
            if first == 0:
                check_against_template(tokenizer, batch, q, a, system_prompt, loss_on, base)
            log.info("tokenised %d of %d samples", first + len(q), n)
            yield batch

    store_settings = {
        "system_prompt": system_prompt,
        "loss_on": loss_on,
        "max_seq_len": max_seq_len,
        "tokenizer": tokenizer_digest(tokenizer),
    }
    counts = write_store(outputs["tokens"], n, batches(), store_settings, tokens=total)
    log.info(
        "train_tokens: %d samples, %d tokens stored (%d truncated), %.0f samples/s",
        n,
        counts["stored_tokens"],
        counts["truncated_samples"],
        counts["samples_per_s"] or 0,
    )
    return counts
