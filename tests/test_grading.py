"""Answer extraction and both graders: known pairs, and every real gold answer against itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthllm.core.answer_extraction import extract_answer, normalize_gold, strip_string
from synthllm.core.eval_data import BENCHMARKS, load_benchmark
from synthllm.core.grading import (
    grade,
    grade_harness,
    grade_math_verify,
    math_equal,
    parse_gold_math_verify,
)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "benchmarks"

# (answer a model boxed, gold, harness grade, math-verify grade)
PAIRS = [
    # fractions and decimals
    ("\\frac{1}{2}", "0.5", True, True),
    ("\\dfrac{3}{4}", "\\frac34", True, True),
    ("3/4", "\\frac{3}{4}", True, True),
    ("0.75", "\\frac{3}{4}", True, True),
    ("\\frac{1}{3}", "0.5", False, False),
    ("0.33", "\\frac{1}{3}", False, False),
    ("1,000", "1000", True, True),
    ("50\\%", "50", True, True),
    # symbolic
    ("2\\sqrt{2}", "\\sqrt{8}", True, True),
    ("x^2+1", "x^2-1", False, False),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}", False, False),
    ("x = 3", "3", True, True),
    # tuples, sets, intervals
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True, True),
    ("(1,2)", "(1,3)", False, False),
    ("\\{1,2\\}", "\\{2,1\\}", True, True),
    ("(1,2]", "(1, 2]", True, True),
    ("[0, \\infty)", "[0,\\infty)", True, True),
    ("(-\\infty, 2)", "(-\\infty, 3)", False, False),
    # the harness compares interval ends element-wise and ignores the brackets
    ("[1,2)", "(1,2]", True, False),
    # units and \text{}
    ("5 \\text{ cm}", "5", True, True),
    ("5 \\text{ cm}", "6", False, False),
    ("18 \\text{ dollars}", "18", True, True),
    ("\\$18", "18", True, True),
    ("90^\\circ", "90", True, True),
    ("\\text{even}", "\\text{even}", True, True),
    ("\\text{even}", "\\text{odd}", False, False),
]


@pytest.mark.parametrize("answer,gold,harness,mv", PAIRS)
def test_known_pairs(answer, gold, harness, mv):
    result = grade(f"So the answer is $\\boxed{{{answer}}}$.", gold, "math")
    assert result["correct_harness"] is harness
    assert result["correct_math_verify"] is mv


@pytest.mark.parametrize(
    "completion,benchmark,expected",
    [
        ("First \\boxed{1}, then \\boxed{\\frac{2}{3}}.", "math", "\\frac{2}{3}"),
        ("She pays 3 * 4 = 12 dollars, and 1,250 in total", "gsm8k", "1250"),
        ("So the answer is 42.", "gsm8k", "42"),
        ("The final answer is $4.5e33$. I hope it is correct.", "minerva_math", "4.5e33"),
        ("nothing numeric here", "gsm8k", ""),
        ("The answer is: twenty-one.", "gsm8k", "21"),
        ("\\boxed{5 m}", "minerva_math", "5m"),  # Minerva keeps unit words
        ("\\boxed{5 m}", "college_math", "5"),
        ("\\boxed{5 \\text{ m}}", "minerva_math", "5"),  # a trailing \text{} goes for all
    ],
)
def test_extraction(completion, benchmark, expected):
    assert extract_answer(completion, benchmark) == expected


def test_strip_string_steps():
    assert strip_string("\\left( \\dfrac12, 3.000 \\right)") == "(\\frac{1}{2},3)"
    assert strip_string("k = \\sqrt2") == "\\sqrt{2}"
    assert strip_string("\\emptyset") == "{}"
    assert strip_string(".5") == "0.5"


def test_untrusted_expression_is_never_evaluated(tmp_path):
    marker = tmp_path / "evaluated"
    payload = f"__import__('pathlib').Path('{marker}').touch()"
    assert not math_equal(payload, "2")
    assert not math_equal(f"eval(chr(49))+{payload}", "2")
    assert not marker.exists()


def test_slow_grade_is_cut_off_and_wrong():
    # a huge power keeps sympy busy for far longer than the limit
    assert grade_harness("2^{2^{2^{2^{5}}}}+x-x", "7", timeout_s=0.5) is False


@pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} is absent")
@pytest.mark.parametrize("name", BENCHMARKS)
def test_gold_against_itself(name):
    """A completion that boxes the gold answer is right under both graders, for every record.
    The harness reads the gold verbatim from the box; math-verify gets it as a model would
    write it, on one line without `$` (some golds are text with inline math). Time limits
    are generous: this tests equivalence, not speed, on a possibly busy machine."""
    wrong = []
    for r in load_benchmark(name, str(DATA / name / "test.jsonl")):
        one_line = " ".join(r["gold"].replace("$", " ").split())
        harness = grade_harness(
            extract_answer(f"Thus the final answer is $\\boxed{{{r['gold']}}}$.", name),
            normalize_gold(r["gold"], name),
            timeout_s=60,
        )
        mv, _ = grade_math_verify(
            f"Thus the final answer is $\\boxed{{{one_line}}}$.",
            parse_gold_math_verify(r["gold"], timeout_s=60),
            timeout_s=60,
        )
        if not (harness and mv):
            wrong.append((r["id"], r["gold"], harness, mv))
    assert not wrong, f"{len(wrong)} records: {wrong[:5]}"
