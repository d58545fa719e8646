"""Final-answer extraction and the two graders of the evaluation (paper §4).

Two grades per prediction, both reported so results compare with the paper's:

- `grade_math_verify`: Hugging Face's `math-verify` (its own extraction from the whole
  completion, LaTeX and plain expressions, `\\boxed{}` first; symbolic and numeric checks).
- `grade_harness`: our re-implementation of the Qwen2.5-Math harness, the evaluation code the
  paper used: `extract_answer` (the final-answer phrases the harness knows, the last
  `\\boxed{}`, else the last number), its `strip_string` normalisation, and `math_equal`
  (string, numeric with 1e-4 relative tolerance and the percentage variants, tuples and
  intervals element-wise, matrices, equations, then sympy). Written after
  QwenLM/Qwen2.5-Math `evaluation/parser.py` and `evaluation/grader.py` (MIT); the unit word
  list below is the harness's.

Differences from the harness, all deliberate: the harness's first parser (sympy's antlr
`parse_latex`) needs antlr 4.11, which conflicts with `math-verify`'s antlr 4.13, so
expressions go through `parse_expr` and `latex2sympy2_extended` (the maintained successor of
the harness's `latex2sympy2`); gold answers are normalised as predictions are (the harness
runs `strip_string` twice on a prediction but once on most golds, and a second pass changes
28 of the 10,469 golds of the six files, e.g. a trailing `\\text{}` or `^{\\prime}`, so that
a prediction equal to the gold could never be right); number words are converted only when
the whole answer is number words (`word2number` also picks them out of mixed text); a grade
is limited to `timeout_s` by an interval timer in the main thread (the harness uses a 3 s
process-pool timeout), and a timeout counts as wrong, as there. Expressions reach sympy's
`parse_expr` (which calls eval) only when they are plain arithmetic on short names.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading

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


# --- math_equal -------------------------------------------------------------------------


class GradeTimeout(BaseException):
    """A harness-style grade over its time limit. BaseException, so the broad `except
    Exception` around each sympy attempt (which may raise anything) does not swallow it."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """SIGALRM after `seconds` (main thread only; elsewhere no limit)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise GradeTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _parse_number(text) -> float | None:
    """A float from "1,234.5" or "12%" / "12\\%" (as a fraction), else None."""
    text = str(text).replace(",", "")
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith("%"):
        try:
            return float(text[:-1].removesuffix("\\")) / 100
        except ValueError:
            pass
    return None


def _numeric_equal(a: float, b: float) -> bool:
    return math.isclose(b, a, rel_tol=1e-4)


def _choice_letter(pred: str) -> str:
    pred = pred.strip("\n").rstrip(".").rstrip("/").strip(" ").lstrip(":")
    letters = re.findall(r"\b(A|B|C|D|E)\b", pred.upper())
    pred = letters[-1] if letters else pred.strip().strip(".")
    return pred.rstrip(".").rstrip("/")


def _to_pmatrix(text: str) -> str:
    """ "{1,2},{3,4}" -> one pmatrix per braced group (the harness's str_to_pmatrix)."""
    groups = re.findall(r"\{.*,.*\}", text.strip())
    return ", ".join(
        r"\begin{pmatrix}" + g.strip("{}").replace(",", "\\") + r"\end{pmatrix}" for g in groups
    )


# sympy's parse_expr evaluates its input with Python's eval: only arithmetic on short names
# and known functions gets there, never builtins, attributes or strings from a completion
_EXPR_CHARS = re.compile(r"^[\w\s.+\-*/^()\[\],]*$")
_EXPR_NAMES = {
    "sqrt",
    "sin",
    "cos",
    "tan",
    "cot",
    "sec",
    "csc",
    "asin",
    "acos",
    "atan",
    "sinh",
    "cosh",
    "tanh",
    "log",
    "exp",
    "Abs",
    "factorial",
    "binomial",
    "floor",
    "ceiling",
    "gcd",
    "lcm",
    "Rational",
    "Matrix",
}


def _safe_expr(text: str) -> bool:
    if not _EXPR_CHARS.match(text) or "__" in text or re.search(r"\.\s*[A-Za-z_]", text):
        return False
    return all(len(name) <= 2 or name in _EXPR_NAMES for name in re.findall(r"[A-Za-z_]\w*", text))


def _sympy(text: str):
    from latex2sympy2_extended import latex2sympy
    from sympy.parsing.sympy_parser import parse_expr

    for parse in (parse_expr, latex2sympy):
        for candidate in (text.replace("\\\\", "\\"), text):
            if parse is parse_expr and not _safe_expr(candidate):
                continue
            try:
                return parse(candidate)
            except Exception:  # noqa: BLE001 - parsers raise anything on odd input
                continue
    return text


def symbolic_equal(a: str, b: str) -> bool:
    """Equal as sympy expressions: identical, simplify(a - b) == 0, equal equations, equal
    numeric values (1e-4 relative), or equal matrices to 3 decimals."""
    from sympy import N, simplify

    x, y = _sympy(a), _sympy(b)
    if isinstance(x, str) or isinstance(y, str):
        # unparsed text: sympy would sympify it, i.e. eval it, in every check below
        return str(x) == str(y)
    checks = (
        lambda: str(x) == str(y) or x == y,
        lambda: x.equals(y) or simplify(x - y) == 0,
        lambda: abs(x.lhs - x.rhs).equals(abs(y.lhs - y.rhs)),
        lambda: _numeric_equal(float(N(x)), float(N(y))),
        lambda: (
            x.shape == y.shape
            and x.applyfunc(lambda v: round(v, 3)).equals(y.applyfunc(lambda v: round(v, 3)))
        ),
    )
    for check in checks:
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 - sympy raises anything on mismatched types
            continue
    return False


def _bracketed(text: str) -> bool:
    return re.match(r"(\(|\[).+(\)|\])", text) is not None


def _matrix_rows(text: str) -> list[list[str]]:
    body = text[len("\\begin{pmatrix}") : -len("\\end{pmatrix}")]
    return [row.strip().split("&") for row in body.split("\\\\") if row.strip()]


def _is_matrix(text: str) -> bool:
    return text.startswith(("\\begin{pmatrix}", "\\begin{bmatrix}")) and text.endswith(
        ("\\end{pmatrix}", "\\end{bmatrix}")
    )


def math_equal(
    prediction: str | None, reference: str | None, include_percentage: bool = True
) -> bool:
    """The harness's `math_equal` on normalised answers."""
    if prediction is None or reference is None:
        return False
    if prediction.strip().lower() == reference.strip().lower():
        return True
    if reference in ("A", "B", "C", "D", "E") and _choice_letter(prediction) == reference:
        return True
    pred_num, ref_num = _parse_number(prediction), _parse_number(reference)
    if pred_num is not None and ref_num is not None:
        targets = [ref_num / 100, ref_num, ref_num * 100] if include_percentage else [ref_num]
        return any(_numeric_equal(pred_num, t) for t in targets)
    if not prediction:
        return False

    reference, prediction = str(reference).strip(), str(prediction).strip()
    if "pmatrix" in prediction and "pmatrix" not in reference:
        reference = _to_pmatrix(reference)
    # brackets: "(1,2)" and "[1,2]" compare on their contents
    pred_str, ref_str = prediction, reference
    if (
        prediction.startswith("[") and prediction.endswith("]") and not reference.startswith("(")
    ) or (
        prediction.startswith("(") and prediction.endswith(")") and not reference.startswith("[")
    ):
        pred_str, ref_str = pred_str.strip("[]()"), ref_str.strip("[]()")
    for ch in "{}()":
        pred_str, ref_str = pred_str.replace(ch, ""), ref_str.replace(ch, "")
    if pred_str.lower() == ref_str.lower():
        return True
    # tuples and intervals element by element (the harness ignores which bracket closes)
    if _bracketed(prediction) and _bracketed(reference):
        pred_parts, ref_parts = prediction[1:-1].split(","), reference[1:-1].split(",")
        if len(pred_parts) == len(ref_parts) and all(
            math_equal(p, r, include_percentage) for p, r in zip(pred_parts, ref_parts)
        ):
            return True
    if _is_matrix(prediction) and _is_matrix(reference):
        pred_rows, ref_rows = _matrix_rows(prediction), _matrix_rows(reference)
        if len(pred_rows) == len(ref_rows) and all(
            len(p) == len(r) and all(math_equal(a, b, include_percentage) for a, b in zip(p, r))
            for p, r in zip(pred_rows, ref_rows)
        ):
            return True
    if prediction.count("=") == 1 and reference.count("=") == 1:
        pred_lhs, pred_rhs = prediction.split("=")
        ref_lhs, ref_rhs = reference.split("=")
        pred_zero = f"{pred_lhs.strip()} - ({pred_rhs.strip()})"
        ref_zero = f"{ref_lhs.strip()} - ({ref_rhs.strip()})"
        if symbolic_equal(pred_zero, ref_zero) or symbolic_equal(f"-({pred_zero})", ref_zero):
            return True
    elif (
        prediction.count("=") == 1
        and len(prediction.split("=")[0].strip()) <= 2
        and "=" not in reference
    ):
        if math_equal(prediction.split("=")[1], reference, include_percentage):
            return True
    elif (
        reference.count("=") == 1
        and len(reference.split("=")[0].strip()) <= 2
        and "=" not in prediction
    ):
        if math_equal(prediction, reference.split("=")[1], include_percentage):
            return True
    return symbolic_equal(prediction, reference)


def grade_harness(extracted: str, gold_normalized: str, timeout_s: float | None = 3.0) -> bool:
    """The harness's grade of an extracted answer; over `timeout_s` counts as wrong."""
    try:
        with _time_limit(timeout_s):
            return math_equal(extracted, gold_normalized)
    except GradeTimeout:
        return False


# --- math-verify ------------------------------------------------------------------------


def parse_gold_math_verify(gold: str, timeout_s: float | None = 5.0) -> list:
    """math-verify's reading of a gold answer, as if a model had written it in a box
    (gold strings may hold `$` signs and line breaks, which would end or split the math)."""
    from math_verify import parse

    return parse(
        f"\\boxed{{{' '.join(gold.replace('$', ' ').split())}}}",
        parsing_timeout=max(1, math.ceil(timeout_s)) if timeout_s else None,
    )


def grade_math_verify(
    completion: str, gold_parsed: list, timeout_s: float | None = 5.0
) -> tuple[bool, str]:
    """math-verify's grade of a whole completion against a parsed gold answer, and the
    answer it extracted from the completion ("" when none). Parsing and verifying are each
    limited to `timeout_s` (whole seconds, at least 1; math-verify's alarm); over it is wrong."""
    from math_verify import parse, verify

    seconds = max(1, math.ceil(timeout_s)) if timeout_s else None
    pred = parse(completion, parsing_timeout=seconds)
    extracted = str(pred[-1]) if pred else ""
    return (
        bool(gold_parsed and pred and verify(gold_parsed, pred, timeout_seconds=seconds)),
        extracted,
    )


def grade(
    completion: str,
    gold: str,
    benchmark: str,
    timeout_s: float | None = 3.0,
    gold_parsed: list | None = None,
) -> dict:
    """Both grades of one completion: the harness's extracted answer and grade, and
    math-verify's, each limited to `timeout_s`. `gold_parsed` saves re-parsing a gold graded
    many times."""
    extracted = extract_answer(completion, benchmark)
    correct_mv, extracted_mv = grade_math_verify(
        completion, parse_gold_math_verify(gold) if gold_parsed is None else gold_parsed, timeout_s
    )
    return {
        "extracted": extracted,
        "correct_harness": grade_harness(extracted, normalize_gold(gold, benchmark), timeout_s),
        "extracted_math_verify": extracted_mv,
        "correct_math_verify": correct_mv,
    }
