"""Symbol-aware tokens of a math question, for deciding whether two questions are one problem.

synthllm.core.textkeys reads a text as runs of letters and digits, which is right for
decontamination (markup must not hide a copied benchmark question) but blind to what makes two
templated questions different problems: `\\sin 60^\\circ` and `\\sin(-60^\\circ)` are the same
words. Dedup reads the normal form of textkeys (NFKC, case-folded, single-spaced) through
`REWRITES` first, so that formatting does not count, then splits it into tokens that keep the
mathematics:

- formatting that does not change the problem is removed or unified: math delimiters (`$`,
  `\\(`, `\\[`), grouping braces, `\\left`/`\\right` and sizing commands, spacing commands,
  `\\text{}`-style wrappers, `\\dfrac`/`\\tfrac` (as `\\frac`), thousands separators, and one
  spelling per relation, operator and degree sign (`\\le`, `\\leq` and `≤` are all `<=`);
- tokens: LaTeX commands (`\\frac`, `\\pi`), numbers (`3.5`), words (`natalia's`), and every
  sign, operator, relation and bracket on its own (`-`, `^`, `<=`, `(`). Prose punctuation
  (`.,;:?"`) is not a token.

`content_free_difference` says whether the tokens in which two questions differ carry no
mathematical content: the differing tokens are all function words (`FUNCTION_WORDS`). A number,
variable (one letter; `a` reads as the article, `i` as a variable), LaTeX command or symbol is
content, and so is any other word: `boys` and `girls`, or `area` and `perimeter`, change the
problem as much as a number does.
"""

from __future__ import annotations

import difflib

import numpy as np
import polars as pl

from synthllm.core.textkeys import HASH_SEED, normal_form

# (pattern, replacement) in order, on the case-folded normal form (Rust regex: no lookaround)
REWRITES = (
    (r"\\[()\[\]]|\$", " "),  # math delimiters \( \) \[ \] $ $$ (and a \$ currency sign)
    (r"\\(?:left|right|bigg?[lr]?|displaystyle|textstyle)\b", " "),
    (r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|operatorname|mbox)\b", " "),
    (r"\\[,;:! ]|\\q?quad\b|~", " "),  # spacing
    (r"\\[dt]frac", r"\frac"),
    (r"\\frac(\d)(\d)", r"\frac ${1} ${2}"),  # \frac12 is \frac{1}{2}
    (r"\{,\}", ","),  # 16{,}000
    (r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree\b", r" \circ "),
    (r"\\\{", r" \lbrace "),
    (r"\\\}", r" \rbrace "),
    (r"[{}]", " "),  # grouping braces are invisible in the rendered question
    (r"\\(?:leq?|leqslant)\b|≤", " <= "),
    (r"\\(?:geq?|geqslant)\b|≥", " >= "),
    (r"\\neq?\b|≠", " != "),
    (r"\\(?:cdot|times)\b|×|·|⋅", " * "),
    (r"\\div\b|÷", " / "),
    (r"−", "-"),  # U+2212, which NFKC leaves alone
    (r"\\%", "%"),
    (r"(\d),(\d{3})\b", "${1}${2}"),  # 16,000 -> 16000; twice for 1,000,000
    (r"(\d),(\d{3})\b", "${1}${2}"),
)
TOKEN = r"\\[a-z]+|\d+(?:\.\d+)?|\p{L}+(?:'\p{L}+)?|<=|>=|!=|[-+*/^=<>|!()\[\]%_'&]"

# words whose change alone leaves the problem as it was: articles, auxiliaries, pronouns,
# prepositions and the usual imperatives of a question
FUNCTION_WORDS = frozenset(
    """a an the this that these those it its is are was were be been being am do does did
    has have had will would shall should can could may might must of to in on at for by with
    from into about as and or but so then thus there here what which who whom whose how
    please find compute calculate determine evaluate give state work out you your we us our
    let me my he she they them their his her also""".split()
)


def rewrite(normal: pl.Series) -> pl.Series:
    """Texts already in normal form with formatting rewritten away (REWRITES), single-spaced."""
    for pattern, replacement in REWRITES:
        normal = normal.str.replace_all(pattern, replacement)
    return normal.str.replace_all(r"\s+", " ").str.strip_chars()


def dedup_tokens(texts: pl.Series) -> pl.Series:
    """Each text's tokens (a list column)."""
    return rewrite(normal_form(texts)).str.extract_all(TOKEN).fill_null([])


def normal_token_hashes(normal: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, hashes) of texts already in normal form: text i's tokens hash to
    hashes[offsets[i]:offsets[i + 1]] (uint64), laid out like
    synthllm.core.textkeys.word_hashes, so its n-gram helpers apply."""
    tokens = rewrite(normal).str.extract_all(TOKEN).fill_null([])
    lengths = tokens.list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(len(normal) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = tokens.explode(empty_as_null=False).drop_nulls()
    hashes = flat.hash(seed=HASH_SEED).to_numpy().astype(np.uint64, copy=False)
    assert len(hashes) == offsets[-1]
    return offsets, hashes


def differing_tokens(a: list[str], b: list[str]) -> list[str]:
    """The tokens of a and b outside their longest matching runs (difflib), both sides: the
    order counts, so `x - y` and `y - x` differ in `x` and `y`."""
    out = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            out += a[i1:i2] + b[j1:j2]
    return out


def content_free_difference(a: list[str], b: list[str]) -> bool:
    """True when every token in which a and b differ is a function word (none: same tokens)."""
    return all(t in FUNCTION_WORDS for t in differing_tokens(a, b))
