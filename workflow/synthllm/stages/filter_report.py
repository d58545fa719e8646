"""The report of document filtering (synthllm.stages.classifiers): the size, the training data, the
held-out check and the labelled precision/recall of every iteration, and the ratings of
every fine-grained round, as JSON (`filter/report.json`) and a Markdown table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from synthllm.core.files import atomic_path, write_counts, write_json

log = logging.getLogger(__name__)


def _read(path: str) -> dict:
    return json.loads(Path(path).read_text())


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """inputs: the reports of iterations 0..T, the rate counts of 1..T and the filter_docs
    counts of every shard. No settings (rules/02_filter.smk)."""
    iterations = [_read(p) for p in inputs["reports"]]
    rates = [_read(p) for p in inputs["rate_counts"]]
    for it, rate in zip(iterations[1:], rates):
        it["rated"] = {
            "in": rate["in"],
            "ok": rate["out"],
            "dropped": rate["dropped"],
            "histogram": rate["histogram"],
            "origins": rate["origins"],
        }
    filter_counts = [_read(p) for p in inputs["filter_counts"]]
    docs_in = sum(c["in"] for c in filter_counts)
    docs_out = sum(c["out"] for c in filter_counts)
    report = {"documents": docs_in, "kept": docs_out, "iterations": iterations}
    write_json(outputs["report"], report)
    markdown = "\n".join(markdown_lines(report)) + "\n"
    with atomic_path(outputs["markdown"]) as tmp:
        tmp.write_text(markdown)
    write_counts(
        outputs["counts"],
        "filter_report",
        docs_in,
        docs_out,
        {"below_threshold": docs_in - docs_out},
    )
    log.info("filter report:\n%s", markdown)
    return report


def markdown_lines(report: dict) -> list[str]:
    iterations = report["iterations"]
    lines = [
        "# Document filtering",
        "",
        f"{report['kept']} of {report['documents']} corpus documents kept.",
        "",
        "| iteration | model | trained on | kept | held-out | labelled precision | labelled recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for it in iterations:
        lab = it.get("labelled") or {}
        if it["iteration"] == 0:
            trained = f"{it['positives']} synthetic + {it['negatives']} corpus"
            h = it.get("heldout_synthetic_vs_sample") or {}
            held = f"P {_fmt(h.get('precision'))} R {_fmt(h.get('recall'))}"
        else:
            trained = f"{it['ratings']} ratings"
            held = f"MAE {_fmt(it['heldout']['mae'])} R2 {_fmt(it['heldout']['r2'])}"
        lines.append(
            f"| {it['iteration']} | {it.get('classifier') or it.get('regressor')} | "
            f"{trained} | {it['kept']} | {held} | {_fmt(lab.get('precision'))} | "
            f"{_fmt(lab.get('recall'))} |"
        )
    for it in iterations[1:]:
        hist = it["rating_histogram"]
        lines += [
            "",
            f"Ratings of iteration {it['iteration']} (1-10): "
            + ", ".join(f"{k}: {v}" for k, v in hist.items() if v),
        ]
    return lines


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"
