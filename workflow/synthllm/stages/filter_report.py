"""The report of document filtering (synthllm.stages.classifiers): the size, the training data, the
held-out check and the labelled precision/recall of every iteration, and the ratings of
every fine-grained round, as JSON (`filter/report.json`) and Markdown tables.

`flags` lists every iteration below a floor of config key filter.report: a labelled
precision or recall under min_precision / min_recall (where filter.positive_sources labels
a source); a spread of the ratings (their interquartile range) under min_rating_spread; a
mean rating of the labelled documents less than min_labelled_gap above the others'. A
rater that answers 10 to everything, or a classifier that keeps nothing, shows there in
words, not only in the figures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from synthllm.core.files import atomic_path, write_counts, write_json

log = logging.getLogger(__name__)


def _read(path: str) -> dict:
    return json.loads(Path(path).read_text())


FLOORS = ("min_precision", "min_recall", "min_rating_spread", "min_labelled_gap")


def stage_name(iteration: int) -> str:
    return "coldstart" if iteration == 0 else f"finegrained {iteration}"


def flags(iterations: list[dict], floors: dict) -> list[str]:
    """One line per iteration and figure below its floor (FLOORS, config key
    filter.report)."""
    found = []
    for it in iterations:
        name = f"iteration {it['iteration']} ({stage_name(it['iteration'])})"
        lab = it.get("labelled") or {}
        for figure in ("precision", "recall"):
            value, floor = lab.get(figure), floors[f"min_{figure}"]
            if lab and (value is None or value < floor):
                shown = "none (nothing kept)" if value is None else f"{value:.3f}"
                found.append(
                    f"{name}: labelled {figure} {shown} is below the floor {floor} "
                    f"({lab['kept']} kept, {lab['positives']} documents of "
                    f"{', '.join(lab['positive_sources'])})"
                )
        stats = it.get("rating_stats") or {}
        floor = floors["min_rating_spread"]
        if it["iteration"] > 0 and (stats.get("iqr") is None or stats["iqr"] < floor):
            hist = ", ".join(f"{k}: {v}" for k, v in it["rating_histogram"].items() if v)
            shown = "none" if stats.get("iqr") is None else f"{stats['iqr']:.2f}"
            found.append(
                f"{name}: the ratings' spread (interquartile range) {shown} is below the "
                f"floor {floor}: the rater gives most documents the same rating ({hist})"
            )
        lab = it.get("labelled_ratings") or {}
        positive, other = (lab.get(k) or {} for k in ("positive", "other"))
        floor = floors["min_labelled_gap"]
        if it["iteration"] > 0 and positive.get("n") and other.get("n"):
            gap = positive["mean"] - other["mean"]
            if gap < floor:
                found.append(
                    f"{name}: the rater rates documents of {', '.join(lab['positive_sources'])} "
                    f"{gap:+.2f} against the others (mean {positive['mean']:.2f} of "
                    f"{positive['n']} against {other['mean']:.2f} of {other['n']}), below the "
                    f"floor {floor}"
                )
    return found


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """inputs: the reports of iterations 0..T, the rate counts of 1..T and the filter_docs
    counts of every shard. Settings: filter.report (min_precision, min_recall,
    min_rating_spread; rules/02_filter.smk)."""
    iterations = [_read(p) for p in inputs["reports"]]
    rates = [_read(p) for p in inputs["rate_counts"]]
    for it, rate in zip(iterations[1:], rates):
        it["rated"] = {
            "in": rate["in"],
            "ok": rate["out"],
            "dropped": rate["dropped"],
            "histogram": rate["histogram"],
            "origins": rate["origins"],
            "rating": rate.get("rating", "text"),
        }
    filter_counts = [_read(p) for p in inputs["filter_counts"]]
    docs_in = sum(c["in"] for c in filter_counts)
    docs_out = sum(c["out"] for c in filter_counts)
    floors = {k: settings[k] for k in FLOORS}
    report = {
        "documents": docs_in,
        "kept": docs_out,
        "floors": floors,
        "flags": flags(iterations, floors),
        "iterations": iterations,
    }
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
    for line in report["flags"]:
        log.warning("filter report: %s", line)
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
    lines += ["", "## Flags", ""]
    floors = report["floors"]
    if report["flags"]:
        lines += [f"- **{line}**" for line in report["flags"]]
    else:
        lines.append(
            f"None: every iteration is at or above the floors (labelled precision "
            f"{floors['min_precision']}, recall {floors['min_recall']}, rating spread "
            f"{floors['min_rating_spread']}, labelled rating gap {floors['min_labelled_gap']})."
        )
    if len(iterations) > 1:
        lines += [
            "",
            "## Ratings",
            "",
            "What the fine-grained regressor of each iteration trained on (every usable rating "
            "so far); spread = interquartile range (the middle half of the ratings), std = "
            "standard deviation; labelled / other mean: the mean rating of the documents of "
            "filter.positive_sources and of the others.",
            "",
            "| iteration | rating | rated (usable) this round | trained on | mean | spread | std "
            "| min - max | labelled mean | other mean | histogram (rounded) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for it in iterations[1:]:
        stats = it.get("rating_stats") or {}
        lab = it.get("labelled_ratings") or {}
        rated = it.get("rated") or {}
        hist = ", ".join(f"{k}: {v}" for k, v in it["rating_histogram"].items() if v)
        lines.append(
            f"| {it['iteration']} | {rated.get('rating', '-')} | "
            f"{rated.get('in', '-')} ({rated.get('ok', '-')}) | {it['ratings']} | "
            f"{_fmt(stats.get('mean'), 2)} | {_fmt(stats.get('iqr'), 2)} | "
            f"{_fmt(stats.get('std'), 2)} | "
            f"{_fmt(stats.get('min'), 2)} - {_fmt(stats.get('max'), 2)} | "
            f"{_fmt((lab.get('positive') or {}).get('mean'), 2)} | "
            f"{_fmt((lab.get('other') or {}).get('mean'), 2)} | {hist} |"
        )
    return lines


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
