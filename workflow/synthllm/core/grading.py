"""The two graders of the evaluation (paper §4).

Two grades per prediction, both reported so results compare with the paper's:

- `grade_math_verify`: Hugging Face's `math-verify` (its own extraction from the whole
  completion, LaTeX and plain expressions, `\\boxed{}` first; symbolic and numeric checks).
- `grade_harness`: our re-implementation of the Qwen2.5-Math harness, the evaluation code the
  paper used: its `math_equal` (string, numeric with 1e-4 relative tolerance and the
  percentage variants, tuples and intervals element-wise, matrices, equations, then sympy) on
  the answer `extract_answer` (synthllm.core.answer_extraction) took from the completion. Written
  after QwenLM/Qwen2.5-Math `evaluation/grader.py` (MIT).

Differences from the harness, all deliberate (those of the extraction are in
synthllm.core.answer_extraction): the harness's first parser (sympy's antlr `parse_latex`) needs
antlr 4.11, which conflicts with `math-verify`'s antlr 4.13, so expressions go through
`parse_expr` and `latex2sympy2_extended` (the maintained successor of the harness's
`latex2sympy2`); a grade is limited to `timeout_s` by an interval timer in the main thread
(the harness uses a 3 s process-pool timeout), and a timeout counts as wrong, as there.
Expressions reach sympy's `parse_expr` (which calls eval) only when they are plain arithmetic
on short names.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading

from synthllm.core.answer_extraction import extract_answer, normalize_gold

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
