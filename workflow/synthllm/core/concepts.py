"""Concept normalisation: from the topic and key-concept strings the extraction stage wrote
to the node keys of the Level-3 concept graph.

The paper does not say how concept strings are merged across documents. We merge strings
that differ only in ways that do not change the concept:

- Unicode compatibility forms and accents (NFKD, combining marks dropped): "L'Hôpital" = "L'Hopital";
- case;
- leading list numbering: "1.", "1.1", "2)", "(a)", "a)", "-", "*", "•";
- possessive "'s" and punctuation, which become spaces ("Cauchy-Schwarz" = "Cauchy Schwarz");
- runs of whitespace;
- a trivial plural on the last word ("Derivatives" = "Derivative", "Probabilities" =
  "Probability", "matrices" = "matrix"), with words that only look plural left alone
  ("series", "analysis", "calculus", "physics").

Synonyms ("GCD" / "greatest common divisor") are not merged. A node keeps as its label the
surface form seen most often (ties: the alphabetically first), so reports stay readable.
"""

from __future__ import annotations

import re
import unicodedata

from synthllm.errors import SynthllmError


class ConceptGraphError(SynthllmError):
    """Bad settings or inconsistent inputs of the Level-3 stages (graph, walks, level3)."""


_NUMBERING = re.compile(r"^\s*(?:(?:\d+\.)+\d*|\d+\)|\(?[a-z]\)|[-*\u2022])\s+", re.I)
_POSSESSIVE = re.compile(r"['\u2019]s\b")
_NON_WORD = re.compile(r"[^\w]+|_")
# words ending in s that are not plurals, and irregular plurals of mathematical words
_NOT_PLURAL = {
    "series",
    "species",
    "analysis",
    "basis",
    "axis",
    "calculus",
    "radius",
    "locus",
    "modulus",
    "torus",
    "focus",
    "genus",
    "bayes",
    "gauss",
    "lens",
    "stokes",
    "jones",
    "always",
    "whereas",
    "plus",
    "minus",
    "bias",
    "chaos",
    "atlas",
    "cos",
    "sin",
    "tangens",
    "has",
    "was",
    "this",
    "its",
    "is",
    "us",
}
_IRREGULAR = {
    "matrices": "matrix",
    "vertices": "vertex",
    "indices": "index",
    "simplices": "simplex",
    "radii": "radius",
    "loci": "locus",
    "foci": "focus",
    "axes": "axis",
    "bases": "basis",
    "analyses": "analysis",
    "hypotheses": "hypothesis",
    "theses": "thesis",
    "parentheses": "parenthesis",
    "moduli": "modulus",
    "tori": "torus",
    "criteria": "criterion",
    "phenomena": "phenomenon",
    "polyhedra": "polyhedron",
}


def singular(word: str) -> str:
    """The trivial singular of one lower-case word (see the module docstring)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word in _NOT_PLURAL or word.endswith(("ics", "ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def concept_key(surface: str) -> str:
    """The node key of a concept string; "" when nothing is left (the concept is skipped)."""
    text = unicodedata.normalize("NFKD", surface)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = _NUMBERING.sub("", text)
    text = _POSSESSIVE.sub("", text)
    words = _NON_WORD.sub(" ", text).split()
    if not words:
        return ""
    words[-1] = singular(words[-1])
    return " ".join(words)


def clean_label(surface: str) -> str:
    """A surface form as a node label: list numbering and outer whitespace removed."""
    return " ".join(_NUMBERING.sub("", surface).split())
