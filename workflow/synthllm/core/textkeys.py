"""Text normalisation and hashed word n-grams, shared by dedup and decontamination.

Both stages compare texts through the same normal form, so a question that differs from
another (or from a benchmark record) only in case, Unicode form or spacing is the same text:
NFKC, case-folded, whitespace runs collapsed. Words are runs of letters and digits of that
form; punctuation and LaTeX markup between them are ignored, which is what makes
`$\\frac{1}{2}$` and `1/2` both the words `1 2` (for n-gram overlap this is the usual choice:
markup differences must not hide a copied question).

Word hashes come from polars' vectorised hash with a fixed seed. They are only ever compared
within one run, so their values need not be stable across polars versions.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numba import njit, prange

WORD = r"[\p{L}\p{N}]+"
HASH_SEED = 0x5EED


def normal_form(texts: pl.Series) -> pl.Series:
    """NFKC, case-folded, single-spaced, stripped: the key of exact duplicates."""
    return (
        texts.fill_null("")
        .str.normalize("NFKC")
        .str.to_lowercase()
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def word_hashes(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, hashes): text i's words hash to hashes[offsets[i]:offsets[i + 1]] (uint64)."""
    return normal_word_hashes(normal_form(texts))


def normal_word_hashes(normal: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """word_hashes of texts already in normal form."""
    words = normal.str.extract_all(WORD)
    lengths = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    offsets = np.zeros(len(normal) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = words.explode(empty_as_null=False)
    hashes = flat.hash(seed=HASH_SEED).to_numpy().astype(np.uint64, copy=False)
    assert len(hashes) == offsets[-1]
    return offsets, hashes


@njit(cache=True, inline="always")
def mix64(x):
    """splitmix64's finaliser: a cheap, well-spread 64-bit mix."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, inline="always")
def gram_hash(hashes, start, stop):
    """Order-sensitive hash of the words hashes[start:stop]."""
    h = np.uint64(0x9E3779B97F4A7C15)
    for k in range(start, stop):
        h = mix64(h ^ hashes[k])
    return h


@njit(cache=True)
def gram_count(n_words, n):
    """n-grams of a text of n_words words; a shorter non-empty text is one gram of itself."""
    if n_words == 0:
        return 0
    return max(n_words - n + 1, 1)


@njit(cache=True, parallel=True)
def _gram_counts(offsets, n):
    m = len(offsets) - 1
    counts = np.empty(m, dtype=np.int64)
    for i in prange(m):
        counts[i] = gram_count(offsets[i + 1] - offsets[i], n)
    return counts


@njit(cache=True, parallel=True)
def _fill_grams(offsets, hashes, n, gram_offsets, out):
    for i in prange(len(offsets) - 1):
        s, e = offsets[i], offsets[i + 1]
        for g in range(gram_offsets[i + 1] - gram_offsets[i]):
            out[gram_offsets[i] + g] = gram_hash(hashes, s + g, min(s + g + n, e))


def ngram_hashes(offsets: np.ndarray, hashes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(gram_offsets, grams): the word n-gram hashes of every text, laid out like word_hashes."""
    counts = _gram_counts(offsets, n)
    gram_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=gram_offsets[1:])
    grams = np.empty(gram_offsets[-1], dtype=np.uint64)
    _fill_grams(offsets, hashes, n, gram_offsets, grams)
    return gram_offsets, grams


@njit(cache=True, parallel=True)
def gram_distinct_words(offsets, hashes, n, gram_offsets):
    """Distinct words in each n-gram of ngram_hashes' layout."""
    out = np.empty(gram_offsets[-1], dtype=np.int64)
    for i in prange(len(offsets) - 1):
        s, e = offsets[i], offsets[i + 1]
        for g in range(gram_offsets[i + 1] - gram_offsets[i]):
            stop = min(s + g + n, e)
            distinct = 0
            for k in range(s + g, stop):
                seen = False
                for j in range(s + g, k):
                    if hashes[j] == hashes[k]:
                        seen = True
                        break
                if not seen:
                    distinct += 1
            out[gram_offsets[i] + g] = distinct
    return out
