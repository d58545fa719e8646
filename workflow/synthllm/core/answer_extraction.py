"""Final-answer extraction and normalisation of the Qwen2.5-Math harness, the evaluation code
the paper used (§4): `extract_answer` (the final-answer phrases the harness knows, the last
`\\boxed{}`, else the last number) and its `strip_string` normalisation, applied to gold
answers too (`normalize_gold`). Written after QwenLM/Qwen2.5-Math `evaluation/parser.py`
(MIT); the unit word list below is the harness's. The graders are in synthllm.core.grading.

Differences from the harness, all deliberate: gold answers are normalised as predictions are
(the harness runs `strip_string` twice on a prediction but once on most golds, and a second
pass changes 28 of the 10,469 golds of the six files, e.g. a trailing `\\text{}` or
`^{\\prime}`, so that a prediction equal to the gold could never be right); number words are
converted only when the whole answer is number words (`word2number` also picks them out of
mixed text).
"""

from __future__ import annotations

import re

# --- extraction -------------------------------------------------------------------------


def _after_boxed(text: str) -> str:
    """The harness's reading of the last `boxed`: balanced braces, or up to the next `$`."""
    rest = text.split("boxed")[-1]
    if not rest:
        return ""
    if rest[0] != "{":
        return rest.split("$")[0].strip()
    depth, out = 1, []
    for ch in rest[1:]:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                break
        out.append(ch)
    return "".join(out)


_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")


def extract_answer(completion: str, benchmark: str) -> str:
    """The final answer of a chain-of-thought completion, normalised as the harness does:
    Minerva's "final answer is $x$. I hope" phrase, else the last `\\boxed{}`, else text after
    "the answer is" / "final answer is", else the last number; then `strip_string`."""
    text = completion.replace("\u043a\u0438", "")
    if "final answer is $" in text and "$. I hope" in text:
        pred = text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    elif "boxed" in text:
        pred = _after_boxed(text)
    elif "he answer is" in text:
        pred = text.split("he answer is")[-1].strip()
    elif "final answer is" in text:
        pred = text.split("final answer is")[-1].strip()
    else:
        numbers = _LAST_NUMBER.findall(text.replace(",", ""))
        pred = numbers[-1] if numbers else ""
    pred = re.sub(r"\n\s*", "", pred)
    if pred.startswith(":"):
        pred = pred[1:]
    pred = pred.removesuffix(".").removesuffix("/")
    skip_unit = benchmark == "minerva_math"
    # the harness normalises in extract_answer and once more when it records the prediction
    return strip_string(strip_string(pred, skip_unit), skip_unit)


def normalize_gold(gold: str, benchmark: str) -> str:
    """A gold answer normalised exactly as a prediction is (see the module docstring)."""
    skip_unit = benchmark == "minerva_math"
    return strip_string(strip_string(gold, skip_unit), skip_unit)


# --- strip_string -----------------------------------------------------------------------

# the harness's unit words (mostly from MathQA), each also with a trailing "s"
_UNIT_TEXTS = [
    "east",
    "degree",
    "mph",
    "kmph",
    "ft",
    "m sqaure",
    " m east",
    "sq m",
    "deg",
    "mile",
    "q .",
    "monkey",
    "prime",
    "ratio",
    "profit of rs",
    "rd",
    "o",
    "gm",
    "p . m",
    "lb",
    "tile",
    "per",
    "dm",
    "lt",
    "gain",
    "ab",
    "way",
    "west",
    "a .",
    "b .",
    "c .",
    "d .",
    "e .",
    "f .",
    "g .",
    "h .",
    "t",
    "a",
    "h",
    "no change",
    "men",
    "soldier",
    "pie",
    "bc",
    "excess",
    "st",
    "inches",
    "noon",
    "percent",
    "by",
    "gal",
    "kmh",
    "c",
    "acre",
    "rise",
    "a . m",
    "th",
    "π r 2",
    "sq",
    "mark",
    "l",
    "toy",
    "coin",
    "sq . m",
    "gallon",
    "° f",
    "profit",
    "minw",
    "yr",
    "women",
    "feet",
    "am",
    "pm",
    "hr",
    "cu cm",
    "square",
    "v â € ™",
    "are",
    "rupee",
    "rounds",
    "cubic",
    "cc",
    "mtr",
    "s",
    "ohm",
    "number",
    "kmph",
    "day",
    "hour",
    "minute",
    "min",
    "second",
    "man",
    "woman",
    "sec",
    "cube",
    "mt",
    "sq inch",
    "mp",
    "∏ cm ³",
    "hectare",
    "more",
    "sec",
    "unit",
    "cu . m",
    "cm 2",
    "rs .",
    "rs",
    "kg",
    "g",
    "month",
    "km",
    "m",
    "cm",
    "mm",
    "apple",
    "liter",
    "loss",
    "yard",
    "pure",
    "year",
    "increase",
    "decrease",
    "d",
    "less",
    "Surface",
    "litre",
    "pi sq m",
    "s .",
    "metre",
    "meter",
    "inch",
]
# the unit words are regex fragments in the harness ("q ." matches "q x" too): kept as such
_UNIT_PATTERNS = [
    re.compile(r"(^|\W)" + u + r"($|\W)") for u in _UNIT_TEXTS + [u + "s" for u in _UNIT_TEXTS]
]

_SMALL_NUMBERS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {
    w: 10 * (i + 2)
    for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}


def _word_number(text: str) -> str:
    """ "twenty-one" -> "21" when the whole text is English number words, else the text."""
    words = text.lower().replace("-", " ").split()
    if not words or any(
        w not in _SMALL_NUMBERS and w not in _TENS and w not in _SCALES and w != "and"
        for w in words
    ):
        return text
    total = current = 0
    for w in words:
        if w in _SMALL_NUMBERS:
            current += _SMALL_NUMBERS[w]
        elif w in _TENS:
            current += _TENS[w]
        elif w == "hundred":
            current *= 100
        elif w in _SCALES:
            total += current * _SCALES[w]
            current = 0
    return str(total + current)


def _fix_fracs(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72}."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{"):
            out += part
            continue
        if len(part) < 2:
            return s
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}" + (b + rest if b == "{" else "{" + b + "}" + rest)
    return out


def _fix_a_slash_b(s: str) -> str:
    """ "3/4" -> "\\frac{3}{4}" for plain integers (and square roots)."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    a, b = parts
    try:
        a_val = a if "sqrt" in a else int(a)
        b_val = b if "sqrt" in b else int(b)
    except ValueError:
        return s
    if s != f"{a_val}/{b_val}":
        return s
    return f"\\frac{{{a_val}}}{{{b_val}}}"


def strip_string(string: str, skip_unit: bool = False) -> str:
    """The harness's answer normalisation, step for step."""
    s = str(string).strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "")
    s = re.sub(r"\\begin\{array\}\{.*?\}", r"\\begin{pmatrix}", s)
    s = re.sub(r"\\end\{array\}", r"\\end{pmatrix}", s)
    s = s.replace("bmatrix", "pmatrix")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\{", "{").replace("\\}", "}")
    # a trailing \text{...} is a unit ("5 \text{ cm}") unless it is the whole answer
    without_unit = re.sub(r"\\text{.*?}$", "", s).strip()
    if without_unit:
        s = without_unit
    if not skip_unit:
        for _ in range(2):
            for pattern in _UNIT_PATTERNS:
                stripped = pattern.sub(r"\1\2", s)
                if stripped:
                    s = stripped
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\(", "").replace("\\)", "")
    s = _word_number(s)
    s = re.sub(r"\\text\{(.*?)\}", r"\1", s)
    for key in ("x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"):
        s = s.replace(key, "")
    s = s.replace("\\emptyset", "{}")
    s = s.replace("(-\\infty,\\infty)", "\\mathbb{R}")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty")
    s = s.replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0*([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0*$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]  # "k = 5" -> "5"
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    return _fix_a_slash_b(s)
