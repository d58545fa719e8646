"""The training data of SFT: a mixture's samples tokenised with their loss masks, packed
into rows, collated into micro-batches, and the batches of every step.

Input: a mixture parquet with columns `question`, `answer` and `tokens` (the token count of
the chat-formatted sample; its sum is the D of the scaling law). Each sample becomes the
conversation `synthllm.core.chat.sft_messages(question, answer, chat.system_prompt)` rendered by
the tokenizer's chat template, the same format evaluation prompts with. By default the loss
covers only the assistant's turn (`train.loss_on: answer`); `all` covers every token.

Batching: a step sees `global_batch_size` samples (packed rows with `packing: true`), split
over the world as `micro_batch_size` x gradient accumulation x processes; the accumulation
is derived from the other three. The order is a fixed permutation per epoch (`train.seed`
+ epoch), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from synthllm.stages.train_settings import TrainError

IGNORE = -100


def read_mixture(path: str | os.PathLike) -> tuple[list[str], list[str], int]:
    """Questions, answers and the token total of a mixture parquet."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    missing = {"question", "answer", "tokens"} - set(table.column_names)
    if missing:
        raise TrainError(f"{path}: missing column(s) {sorted(missing)}")
    questions = table.column("question").to_pylist()
    answers = table.column("answer").to_pylist()
    for i, (q, a) in enumerate(zip(questions, answers)):
        if not q or not a:
            raise TrainError(f"{path}: record {i} has an empty question or answer")
    tokens = int(sum(t or 0 for t in table.column("tokens").to_pylist()))
    return questions, answers, tokens


# ---------------------------------------------------------------------------- samples


def encode_sample(
    tokenizer,
    question: str,
    answer: str,
    system_prompt: str,
    loss_on: str = "answer",
    max_seq_len: int | None = None,
) -> tuple[list[int], list[int], bool]:
    """Token ids and labels of one training conversation; True when it was truncated.

    With `loss_on="answer"` every token of the prompt (system and user turns and the
    assistant header) is masked, so the loss covers exactly what the model is asked to
    generate at evaluation time. The first token is always masked: nothing predicts it.
    """
    from synthllm.core.chat import prompt_messages, sft_messages

    ids = chat_ids(tokenizer, sft_messages(question, answer, system_prompt))
    labels = list(ids)
    if loss_on == "answer":
        prompt = chat_ids(
            tokenizer, prompt_messages(question, system_prompt), add_generation_prompt=True
        )
        if ids[: len(prompt)] != prompt:
            raise TrainError(
                "the chat template renders the prompt differently alone and "
                "inside the full conversation; loss_on: answer cannot mask it"
            )
        labels[: len(prompt)] = [IGNORE] * len(prompt)
    labels[0] = IGNORE
    truncated = max_seq_len is not None and len(ids) > max_seq_len
    if truncated:
        ids, labels = ids[:max_seq_len], labels[:max_seq_len]
    return ids, labels, truncated


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation through the tokenizer's chat template (as the mixtures
    stage counts them)."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(out["input_ids"])


@dataclass
class Row:
    """One training sequence: a sample, or several packed back to back (`segments` holds
    each one's length so attention stays inside it)."""

    input_ids: list[int]
    labels: list[int]
    segments: list[int]


def pack(samples: list[tuple[list[int], list[int]]], max_len: int) -> list[Row]:
    """Greedy packing in the given order: each sample goes whole into the current row if it
    fits, else it starts a new row. Samples are never split."""
    rows: list[Row] = []
    for ids, labels in samples:
        if rows and len(rows[-1].input_ids) + len(ids) <= max_len:
            row = rows[-1]
            row.input_ids.extend(ids)
            row.labels.extend(labels)
            row.segments.append(len(ids))
        else:
            rows.append(Row(list(ids), list(labels), [len(ids)]))
    return rows


def collate(rows: list[Row], pad_id: int):
    """Right-padded tensors for one micro-batch.

    Packed rows get position ids restarting at each sample and a block-diagonal causal
    4-D attention mask, so a packed row computes exactly the losses of its samples alone.
    """
    import torch

    length = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(rows), length), dtype=torch.long)
    packed = any(len(r.segments) > 1 for r in rows)
    mask = (
        torch.zeros((len(rows), 1, length, length), dtype=torch.bool)
        if packed
        else torch.zeros((len(rows), length), dtype=torch.long)
    )
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        start = 0
        for seg in row.segments:
            position_ids[i, start : start + seg] = torch.arange(seg)
            if packed:
                mask[i, 0, start : start + seg, start : start + seg] = torch.tril(
                    torch.ones(seg, seg, dtype=torch.bool)
                )
            start += seg
        if not packed:
            mask[i, :n] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "attention_mask": mask,
    }


# ---------------------------------------------------------------------------- batches


def epoch_order(n_items: int, epoch: int, seed: int) -> np.ndarray:
    """The fixed order of one epoch."""
    return np.random.default_rng([seed, epoch]).permutation(n_items)


def steps_per_epoch(n_items: int, global_batch: int) -> int:
    return math.ceil(n_items / global_batch)


def step_items(n_items: int, global_batch: int, step: int, seed: int) -> tuple[int, np.ndarray]:
    """(epoch, item indices) of global step `step` (0-based); the last batch of an epoch
    may be short."""
    per_epoch = steps_per_epoch(n_items, global_batch)
    epoch, within = divmod(step, per_epoch)
    order = epoch_order(n_items, epoch, seed)
    return epoch, order[within * global_batch : (within + 1) * global_batch]


def rank_micro_batches(
    items: np.ndarray, rank: int, world: int, micro: int, accumulation: int
) -> list[list[int]]:
    """This rank's `accumulation` micro-batches of a step; slots past a short batch's end
    are empty lists (the caller runs them with zero weight)."""
    mine = [int(i) for i in items[rank::world]]
    return [mine[k * micro : (k + 1) * micro] for k in range(accumulation)]
