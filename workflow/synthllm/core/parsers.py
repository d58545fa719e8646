"""Parsers for the generation outputs, free text (the paper's tag formats) or JSON (what
structured outputs produce). Pure functions; they never raise on model output: each returns
a status and whatever records it could read.

Statuses: ok, not_suitable (Level-1 refused the document), empty, malformed. The shard
runner turns a failed parse of a completion cut at max_tokens into `truncated`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

EDU_LEVELS = (
    "Primary School",
    "Middle School",
    "High School",
    "College",
    "Graduate School",
    "Competition",
    "Other",
)
SCHOOL_LEVELS = (
    "elementary",
    "middle_school",
    "high_school",
    "college",
    "grad_school",
    "competition",
)
ORIGIN_TAGS = ("original_question", "newly_created")
STATUSES = ("ok", "not_suitable", "empty", "malformed", "truncated")


@dataclass
class Parsed:
    status: str
    records: list[dict] = field(default_factory=list)
    fields: dict = field(default_factory=dict)


def _clean(s: str | None) -> str:
    return re.sub(r"\s+", " ", s or "").strip()


def _json_object(text: str) -> dict | None:
    """The JSON object a structured completion holds, or None."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _list(obj: dict, key: str) -> list:
    """obj[key] when it is a list, else [] (model JSON can hold anything anywhere)."""
    value = obj.get(key)
    return value if isinstance(value, list) else []


def _match_choice(value: str | None, choices: tuple[str, ...]) -> str | None:
    key = re.sub(r"[\s_-]+", " ", (value or "").strip().strip("<>").lower())
    for choice in choices:
        if key == re.sub(r"[\s_-]+", " ", choice.lower()):
            return choice
    return None


# ---------------------------------------------------------------- extraction (Fig. 11)


def _topics_from_json(obj: dict) -> list[dict]:
    topics = []
    for t in _list(obj, "topics"):
        if not isinstance(t, dict):
            continue
        name = _clean(t.get("name")) if isinstance(t.get("name"), str) else ""
        kcs = [_clean(k) for k in _list(t, "key_concepts") if isinstance(k, str) and _clean(k)]
        if name:
            topics.append({"name": name, "key_concepts": kcs})
    return topics


_KC_LINE = re.compile(r"^\s*(\d+)\.(\d+)\.?\s*(.+?)\s*$")
_NUM_LINE = re.compile(r"^\s*(\d+)\.\s*(.+?)\s*:?\s*$")


def _tag(text: str, name: str) -> str | None:
    """Content of <name>...</name>; an unclosed tag runs to the end of the text."""
    m = re.search(rf"<{name}>(.*?)(?:</{name}>|$)", text, re.S | re.I)
    return m.group(1) if m else None


def _topics_from_tags(text: str) -> list[dict]:
    names: dict[int, str] = {}
    for line in (_tag(text, "topic") or "").splitlines():
        m = _NUM_LINE.match(line)
        if m and not _KC_LINE.match(line):
            names[int(m.group(1))] = _clean(m.group(2))
    kcs: dict[int, list[str]] = {}
    for line in (_tag(text, "key_concept") or "").splitlines():
        m = _KC_LINE.match(line)
        if m:
            kc = _clean(m.group(3))
            if kc:
                kcs.setdefault(int(m.group(1)), []).append(kc)
            continue
        m = _NUM_LINE.match(line)
        if m:
            names.setdefault(int(m.group(1)), _clean(m.group(2)))
    return [{"name": names[i], "key_concepts": kcs.get(i, [])} for i in sorted(names) if names[i]]


def parse_extraction(text: str) -> Parsed:
    if not text.strip():
        return Parsed("empty")
    obj = _json_object(text) if text.lstrip().startswith("{") else None
    if obj is not None:
        topics = _topics_from_json(obj)
        level, subject = obj.get("level"), obj.get("subject")
    else:
        topics = _topics_from_tags(text)
        level, subject = _tag(text, "level"), _tag(text, "subject")
    topics = [t for t in topics if t["key_concepts"]]
    fields = {
        "level": _match_choice(level if isinstance(level, str) else None, EDU_LEVELS),
        "subject": _clean(subject) if isinstance(subject, str) else None,
    }
    if not topics:
        return Parsed("malformed", fields=fields)
    return Parsed("ok", records=topics, fields=fields)


# ---------------------------------------------------------------- Level-1 (Fig. 8)

_BLOCK = re.compile(r"<Q(\d+)>(.*?)(?:</Q\1>|(?=<Q\d+>)|$)", re.S | re.I)
_FIELD_END = r"(?=\n\s*(?:Orig_tag|Level|Question|Selected Concepts)\s*:|$)"


def _field(block: str, name: str) -> str | None:
    m = re.search(rf"{name}\s*:\s*(.*?){_FIELD_END}", block, re.S | re.I)
    return m.group(1).strip() if m else None


def parse_level1(text: str) -> Parsed:
    if not text.strip():
        return Parsed("empty")
    obj = _json_object(text) if text.lstrip().startswith("{") else None
    questions = []
    if obj is not None:
        if obj.get("suitable") is False:
            return Parsed("not_suitable")
        for q in _list(obj, "questions"):
            if isinstance(q, dict) and isinstance(q.get("question"), str) and q["question"].strip():
                questions.append(
                    {
                        "question": q["question"].strip(),
                        "origin": _match_choice(
                            q.get("origin") if isinstance(q.get("origin"), str) else None,
                            ORIGIN_TAGS,
                        ),
                        "school_level": _match_choice(
                            q.get("level") if isinstance(q.get("level"), str) else None,
                            SCHOOL_LEVELS,
                        ),
                    }
                )
    else:
        for _, block in _BLOCK.findall(text):
            question = _field(block, "Question")
            if not question:
                continue
            questions.append(
                {
                    "question": question,
                    "origin": _match_choice(_field(block, "Orig_tag"), ORIGIN_TAGS),
                    "school_level": _match_choice(_field(block, "Level"), SCHOOL_LEVELS),
                }
            )
        if not questions and re.search(r"NOT\s+SUITABLE", text, re.I):
            return Parsed("not_suitable")
    return Parsed("ok", questions) if questions else Parsed("malformed")


# ---------------------------------------------------------------- Level-2 (Fig. 9)


def _concept_list(raw: str | None) -> list[str]:
    raw = (raw or "").strip().strip("[]")
    return [c for c in (_clean(x).strip("'\"") for x in raw.split(",")) if c]


def parse_level2(text: str) -> Parsed:
    if not text.strip():
        return Parsed("empty")
    obj = _json_object(text) if text.lstrip().startswith("{") else None
    questions = []
    if obj is not None:
        for q in _list(obj, "questions"):
            if isinstance(q, dict) and isinstance(q.get("question"), str) and q["question"].strip():
                concepts = [
                    _clean(c) for c in _list(q, "concepts") if isinstance(c, str) and _clean(c)
                ]
                questions.append({"question": q["question"].strip(), "concepts": concepts})
    else:
        for _, block in _BLOCK.findall(text):
            question = _field(block, "Question")
            if question:
                questions.append(
                    {
                        "question": question,
                        "concepts": _concept_list(_field(block, "Selected Concepts")),
                    }
                )
    return Parsed("ok", questions) if questions else Parsed("malformed")


# ---------------------------------------------------------------- answers


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def parse_answer(text: str) -> Parsed:
    if not text.strip():
        return Parsed("empty")
    return Parsed("ok", fields={"final_answer": last_boxed(text)})


# ---------------------------------------------------------------- structured output schemas


def extraction_schema(min_kcs: int, max_kcs: int) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["level", "subject", "topics"],
        "properties": {
            "level": {"enum": list(EDU_LEVELS)},
            "subject": {"type": "string", "maxLength": 60},
            "topics": {
                "type": "array",
                "minItems": 1,
                "maxItems": 5,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "key_concepts"],
                    "properties": {
                        "name": {"type": "string", "maxLength": 80},
                        "key_concepts": {
                            "type": "array",
                            "minItems": min_kcs,
                            "maxItems": max_kcs,
                            "items": {"type": "string", "maxLength": 80},
                        },
                    },
                },
            },
        },
    }


def level1_schema() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["suitable", "questions"],
        "properties": {
            "suitable": {"type": "boolean"},
            "questions": {
                "type": "array",
                "maxItems": 5,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["question", "origin", "level"],
                    "properties": {
                        "question": {"type": "string", "maxLength": 600},
                        "origin": {"enum": list(ORIGIN_TAGS)},
                        "level": {"enum": list(SCHOOL_LEVELS)},
                    },
                },
            },
        },
    }


def level2_schema(max_questions: int = 5) -> dict:
    """Level-2 output (1-5 questions per call, Fig. 9); Level-3 has the same layout with 1-3
    (Fig. 10)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["questions"],
        "properties": {
            "questions": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_questions,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["concepts", "question"],
                    "properties": {
                        "concepts": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 3,
                            "items": {"type": "string", "maxLength": 80},
                        },
                        "question": {"type": "string", "maxLength": 600},
                    },
                },
            }
        },
    }
