"""Output parsers: the paper's tag formats, structured JSON, and fuzzed garbage."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from synthllm.core.parsers import (
    STATUSES,
    last_boxed,
    parse_answer,
    parse_extraction,
    parse_level1,
    parse_level2,
)

EXTRACTION_TAGS = """<level>High School</level>
<subject>Trigonometry</subject>
<topic>Topics:
1. Geometry on a Sphere
2. Trigonometric Identities
</topic>
<key_concept>Key Concepts:
1. Geometry on a Sphere:
1.1 Haversine Formula
1.2 Great-circle distance
2. Trigonometric Identities:
2.1 Pythagorean identity
</key_concept>"""

LEVEL1_TAGS = """<Q1>
Question: Compute $\\int_0^1 x^2\\,dx$.
Orig_tag: <original_question>
Level: <high_school>
</Q1>
<Q2>
Question: A circle has radius 3. What is its area?
Orig_tag: <newly_created>
Level: <middle_school>
</Q2>"""

LEVEL2_TAGS = """<Q1>
Selected Concepts: [Haversine Formula, Pythagorean identity]
Question: Two cities lie on the same meridian...
</Q1>"""

PARSERS = (parse_extraction, parse_level1, parse_level2, parse_answer)


def test_extraction_tag_format():
    p = parse_extraction(EXTRACTION_TAGS)
    assert p.status == "ok"
    assert p.fields == {"level": "High School", "subject": "Trigonometry"}
    assert p.records == [
        {
            "name": "Geometry on a Sphere",
            "key_concepts": ["Haversine Formula", "Great-circle distance"],
        },
        {"name": "Trigonometric Identities", "key_concepts": ["Pythagorean identity"]},
    ]


def test_extraction_json_format():
    obj = {
        "level": "College",
        "subject": "Calculus",
        "topics": [
            {"name": "Limits", "key_concepts": ["epsilon-delta", "  squeeze  theorem "]},
            {"name": "No concepts", "key_concepts": []},
        ],
    }
    p = parse_extraction(json.dumps(obj))
    assert p.status == "ok" and p.fields["level"] == "College"
    assert p.records == [{"name": "Limits", "key_concepts": ["epsilon-delta", "squeeze theorem"]}]


def test_extraction_without_concepts_is_malformed():
    assert (
        parse_extraction("<level>College</level><topic>Topics:\n1. Limits</topic>").status
        == "malformed"
    )
    assert parse_extraction('{"level": "College", "topics": []}').status == "malformed"
    assert parse_extraction("  ").status == "empty"


def test_level1_tag_format():
    p = parse_level1(LEVEL1_TAGS)
    assert p.status == "ok"
    assert [q["origin"] for q in p.records] == ["original_question", "newly_created"]
    assert [q["school_level"] for q in p.records] == ["high_school", "middle_school"]
    assert p.records[0]["question"] == "Compute $\\int_0^1 x^2\\,dx$."


def test_level1_not_suitable():
    assert parse_level1("NOT SUITABLE for creating questions").status == "not_suitable"
    assert parse_level1('{"suitable": false, "questions": []}').status == "not_suitable"


def test_level1_json_and_unknown_tags():
    text = json.dumps(
        {
            "suitable": True,
            "questions": [
                {"question": "What is 2+2?", "origin": "newly_created", "level": "kindergarten"}
            ],
        }
    )
    p = parse_level1(text)
    assert p.status == "ok" and p.records[0]["school_level"] is None
    assert p.records[0]["origin"] == "newly_created"


def test_level2_formats():
    p = parse_level2(LEVEL2_TAGS)
    assert p.status == "ok"
    assert p.records[0]["concepts"] == ["Haversine Formula", "Pythagorean identity"]
    p = parse_level2(json.dumps({"questions": [{"concepts": ["a", "b"], "question": "Q?"}]}))
    assert p.records == [{"question": "Q?", "concepts": ["a", "b"]}]


def test_unclosed_last_block_still_counts():
    p = parse_level1(LEVEL1_TAGS.rsplit("</Q2>", 1)[0])
    assert p.status == "ok" and len(p.records) == 2


def test_last_boxed_balances_braces():
    assert last_boxed("so \\boxed{1} then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed") is None
    assert parse_answer("x = \\boxed{4}").fields["final_answer"] == "4"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsers_never_raise_on_random_text(text):
    for parse in PARSERS:
        assert parse(text).status in STATUSES


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            EXTRACTION_TAGS,
            LEVEL1_TAGS,
            LEVEL2_TAGS,
            json.dumps(
                {"suitable": True, "questions": [{"question": "q", "origin": "x", "level": "y"}]}
            ),
            json.dumps(
                {
                    "level": "College",
                    "subject": "s",
                    "topics": [{"name": "t", "key_concepts": ["k"]}],
                }
            ),
        ]
    ),
    st.data(),
)
def test_parsers_survive_truncation_and_never_invent_records(full, data):
    cut = data.draw(st.integers(0, len(full)))
    for parse in PARSERS:
        whole, part = parse(full), parse(full[:cut])
        assert part.status in STATUSES
        assert len(part.records) <= len(whole.records)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "questions",
                        "topics",
                        "question",
                        "name",
                        "key_concepts",
                        "concepts",
                        "suitable",
                        "level",
                        "origin",
                        "subject",
                    ]
                ),
                inner,
                max_size=5,
            )
        ),
        max_leaves=20,
    )
)
def test_parsers_never_raise_on_random_json(obj):
    text = json.dumps(obj)
    for parse in PARSERS:
        assert parse(text).status in STATUSES
