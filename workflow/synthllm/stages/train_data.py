"""The training data of SFT: a mixture's token store (synthllm.stages.train_tokens, made
once by its own job) read by offset into rows, collated into micro-batches, and the batches
of every step.

Rows: without packing one row per sample; with `packing: true` samples are packed whole and
greedily, in mixture order, into rows of at most `max_seq_len` tokens (from the store's
offsets alone). A row is read from the memory-mapped store only when a micro-batch needs
it, so a rank holds a few arrays per row (bounds and token counts), whatever the mixture's
size.

Batching: a step sees `global_batch_size` samples (packed rows with `packing: true`), split
over the world as `micro_batch_size` x gradient accumulation x processes; the accumulation
is derived from the other three. The order is a fixed permutation per epoch (`train.seed`
+ epoch), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from synthllm.stages.train_tokens import TokenStore

IGNORE = -100


# ---------------------------------------------------------------------------- rows


def pack_bounds(offsets: np.ndarray, max_len: int) -> np.ndarray:
    """Greedy packing in the given order from the samples' offsets (int64 [n + 1]): each
    sample goes whole into the current row if it fits, else it starts a new row; samples
    are never split. Row r holds samples bounds[r]:bounds[r + 1] (int64 [rows + 1])."""
    n = len(offsets) - 1
    bounds = np.empty(n + 1, dtype=np.int64)
    bounds[0] = rows = start = 0
    while start < n:
        # the most samples from `start` on whose tokens fit in max_len; at least one
        end = int(np.searchsorted(offsets, offsets[start] + max_len, side="right")) - 1
        start = max(end, start + 1)
        rows += 1
        bounds[rows] = start
    return bounds[: rows + 1].copy()


@dataclass(frozen=True)
class Rows:
    """The rows of a run over a token store: row r holds samples bounds[r]:bounds[r + 1],
    with its tokens and label tokens (those the loss covers)."""

    bounds: np.ndarray  # int64 [rows + 1]
    tokens: np.ndarray  # int64 [rows]
    label_tokens: np.ndarray  # int64 [rows]

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def of(cls, store: TokenStore, max_len: int, packing: bool) -> Rows:
        offsets = np.asarray(store.offsets)
        n = len(store)
        bounds = pack_bounds(offsets, max_len) if packing else np.arange(n + 1, dtype=np.int64)
        labels = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.diff(offsets) - store.label_start, out=labels[1:])
        return cls(bounds, np.diff(offsets[bounds]), np.diff(labels[bounds]))


@dataclass
class Row:
    """One training sequence: a sample, or several packed back to back (`segments` holds
    each one's length so attention stays inside it)."""

    input_ids: np.ndarray  # int64
    labels: np.ndarray  # int64, IGNORE where the loss does not reach
    segments: list[int]


def read_row(store: TokenStore, rows: Rows, r: int) -> Row:
    """Row r of a run, read from the store: its ids, and its labels (each sample's ids from
    its label start on)."""
    first, last = int(rows.bounds[r]), int(rows.bounds[r + 1])
    offsets = np.asarray(store.offsets[first : last + 1]) - store.offsets[first]
    ids = np.asarray(store.input_ids[store.offsets[first] : store.offsets[last]], dtype=np.int64)
    labels = ids.copy()
    for start, label_start in zip(offsets[:-1].tolist(), store.label_start[first:last].tolist()):
        labels[start : start + label_start] = IGNORE
    return Row(ids, labels, np.diff(offsets).tolist())


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
        input_ids[i, :n] = torch.from_numpy(row.input_ids)
        labels[i, :n] = torch.from_numpy(row.labels)
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


def label_loss_sum(model, batch: dict):
    """The summed cross-entropy of a collated micro-batch's labels under `model` (a causal LM
    or the DeepSpeed engine around one). Logits are computed only from the first position
    that predicts a label to the last (position p predicts label p + 1): for a small model
    the vocabulary's logits are most of a step's work, and the prompt's positions need none.
    `labels` is taken out of `batch`."""
    import torch

    labels = batch.pop("labels")
    predicting = (labels[:, 1:] != IGNORE).any(dim=0).nonzero().flatten()
    # a batch without labels (every answer cut away by max_seq_len) still runs one position:
    # its loss is 0, and its rank still takes part in the step's backward and collectives
    first, last = (int(predicting[0]), int(predicting[-1])) if predicting.numel() else (0, 0)
    keep = torch.arange(first, last + 1, device=labels.device)
    logits = model(**batch, logits_to_keep=keep).logits.float()
    # rows of (position, vocabulary): the (batch, vocabulary, position) layout is many
    # times slower on CPU
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        labels[:, first + 1 : last + 2].reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


# ---------------------------------------------------------------------------- batches


@functools.lru_cache(maxsize=1)  # every step of an epoch reads it: drawn once per epoch
def epoch_order(n_items: int, epoch: int, seed: int) -> np.ndarray:
    """The fixed order of one epoch (read-only)."""
    order = np.random.default_rng([seed, epoch]).permutation(n_items)
    order.flags.writeable = False
    return order


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
