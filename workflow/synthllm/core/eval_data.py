"""The six evaluation benchmarks of the paper (§4), read from local jsonl files in the
Qwen2.5-Math harness format (`evaluation/data/<name>/test.jsonl`); nothing is downloaded.

`load_benchmark(name, path)` returns one dict per problem:

| key | what |
|---|---|
| benchmark | the benchmark name |
| id | string: the file's own id (`idx`, OlympiadBench `id`, MATH-500 `unique_id`), else the line number (as the harness numbers them) |
| question | the problem text, as the harness's `parse_question` builds it (" (True or False)" / " (Yes or No)" appended when the gold answer is one) |
| solution | the reference solution text, or None where the benchmark has none (Gaokao 2023 En, CollegeMath) |
| gold | the gold final answer, by each benchmark's rule (below), not yet normalised |

Gold-answer rules (the harness's `parse_ground_truth`, before its `strip_string`, which
`synthllm.core.grading` applies when grading):

| benchmark | gold |
|---|---|
| gsm8k | `answer` after `####`, thousands separators removed |
| math | last `\\boxed{}` of `solution`; a MATH-500 file (it has `answer`) uses `answer` |
| minerva_math | last `\\boxed{}` of `solution` |
| olympiadbench | `final_answer[0]` with `$` stripped from both ends |
| gaokao2023en, college_math | `answer` with every `$` removed; where `answer` is empty and the question ends in `answers: x` / `Answer: x` (two Gaokao records), that `x`, cut from the question |

GSM8K's solution is its rationale with the calculator annotations `<<...>>` removed and the
`#### x` line written as `\\boxed{x}`, so that every reference solution ends the way the
evaluation prompt asks a model to end.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from synthllm.errors import SynthllmError

BENCHMARKS = ("gsm8k", "math", "minerva_math", "olympiadbench", "college_math", "gaokao2023en")
# MATH-500 is the same format as MATH with an `answer` field; it can stand in for `math`
ALIASES = {"math500": "math"}


class BenchmarkError(SynthllmError):
    """A benchmark file that is missing or has a record without the fields its rule needs."""


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) in text, braces balanced; None
    when there is none. `\\boxed 5` without braces yields what follows up to a `$`, as the
    harness reads it."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)", text)]
    if not starts:
        return None
    rest = text[starts[-1] :]
    if rest.startswith("{"):
        depth = 0
        for i, ch in enumerate(rest):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return rest[1:i]
        return None  # unbalanced: the text was cut off inside the box
    if rest.startswith(" "):
        return rest.split("$")[0].strip()
    return None


def _gsm8k(rec: dict) -> tuple[str, str]:
    rationale, sep, answer = rec["answer"].rpartition("####")
    if not sep:
        raise KeyError("answer has no '####' line")
    gold = answer.strip().replace(",", "")
    rationale = re.sub(r"<<[^>]*>>", "", rationale).strip()
    return f"{rationale}\nThe final answer is $\\boxed{{{gold}}}$.", gold


def _boxed_solution(rec: dict) -> tuple[str, str]:
    solution = rec["solution"]
    gold = rec["answer"] if "answer" in rec else last_boxed(solution)
    if gold is None:
        raise KeyError("solution has no \\boxed{} answer")
    return solution, gold


def _olympiad(rec: dict) -> tuple[str | None, str]:
    solutions = rec.get("solution") or [None]
    return solutions[0], rec["final_answer"][0].strip("$").strip()


# two Gaokao 2023 En records (HMMT2023General_9, 052023SATS4_11) have an empty `answer`
# and the answer appended to the question ("...answers: $\\frac{3}{10}$", "...Answer: A")
_ANSWER_IN_QUESTION = re.compile(r"\s*answers?\s*:\s*([^:]+?)\s*$", re.IGNORECASE)


def _answer_only(rec: dict) -> tuple[None, str]:
    gold = rec["answer"].replace("$", "").strip()
    if not gold:
        # the harness would grade these against "" (an empty prediction then counts as
        # right); we take the answer out of the question instead, so it is neither leaked
        # to the model nor lost
        match = _ANSWER_IN_QUESTION.search(rec["question"])
        if match:
            rec["question"] = rec["question"][: match.start()]
            gold = match.group(1).replace("$", "").strip()
    return None, gold


_RULES = {
    "gsm8k": (_gsm8k, "question"),
    "math": (_boxed_solution, "problem"),
    "minerva_math": (_boxed_solution, "problem"),
    "olympiadbench": (_olympiad, "question"),
    "college_math": (_answer_only, "question"),
    "gaokao2023en": (_answer_only, "question"),
}


def _record_id(rec: dict, line_no: int) -> str:
    for key in ("unique_id", "idx", "id"):
        if key in rec and rec[key] is not None:
            return str(rec[key])
    return str(line_no)


def _question(text: str, gold: str) -> str:
    # the harness's parse_question: tell the model the expected answer form
    if gold.lower() in ("true", "false"):
        text += " (True or False)"
    elif gold.lower() in ("yes", "no"):
        text += " (Yes or No)"
    return text.strip()


def load_benchmark(
    name: str, path: str, max_records: int | None = None, seed: int = 0
) -> list[dict]:
    """Every problem of one benchmark file, or a fixed random sample of `max_records` of them
    (drawn with `seed`, kept in file order)."""
    rule_name = ALIASES.get(name, name)
    if rule_name not in _RULES:
        raise BenchmarkError(
            f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS + tuple(ALIASES))}"
        )
    rule, question_key = _RULES[rule_name]
    if not Path(path).is_file():
        raise BenchmarkError(
            f"benchmark {name}: {path} does not exist (config key "
            f"evaluate.benchmarks.{name}; ./install.sh copies "
            "../shared/data/benchmarks into resources/benchmarks)"
        )
    records = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                solution, gold = rule(rec)
                question = rec[question_key]
            except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
                raise BenchmarkError(
                    f"{path} line {line_no + 1}: not a {name} record ({type(exc).__name__}: {exc})"
                ) from exc
            if not gold:
                raise BenchmarkError(f"{path} line {line_no + 1}: empty gold answer")
            records.append(
                {
                    "benchmark": name,
                    "id": _record_id(rec, line_no),
                    "question": _question(question, gold),
                    "solution": solution.strip() if solution else None,
                    "gold": gold,
                }
            )
    if max_records is not None and max_records < len(records):
        keep = sorted(random.Random(seed).sample(range(len(records)), max_records))
        records = [records[i] for i in keep]
    return records
