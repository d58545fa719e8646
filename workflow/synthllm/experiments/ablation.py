"""Level ablation (paper §6 Table 3): each model trained on Level-1-only, Level-2-only and
Level-3-only sets of equal size, next to the untrained base model and the outside models of
its group (config models.outside: the paper's Llama-3.2-Instruct rows).

The sets are mixtures of config key mixtures.sets (one level each) drawn from the clean pool
at config key ablation.samples; training and evaluation are the pipeline's own stages
(rules/experiments/ablation.smk). This module only lays out the table.

Outputs (`ablation/`):
    table3.csv  model, set (base | outside | a mixture name), samples, tokens, metric, the
                six benchmarks, average: every metric of the evaluation summary (an
                outside model has no NLL)
    table3.md   one table per metric in the paper's layout, the configured one first:
                rows "<model> base", the outside models of its group by label, then
                "<set>-<model> (<samples>)", per model in config order
"""

from __future__ import annotations

import logging
from pathlib import Path

from synthllm.core.files import atomic_path
from synthllm.experiments.docs import ExperimentError, eval_runs, labelled_rows
from synthllm.stages.eval_summary import COLUMNS, METRICS, cell, metric_tables, summary_rows

log = logging.getLogger(__name__)


def wide(
    rows: list[dict], models: list[str], sets: list[str], outside: list | None = None
) -> list[dict]:
    """Long evaluation rows (with `set`) as one row per (model, set, metric), in the
    table's order: models as given, the base model first, then the outside models of the
    model's group (`outside`: [label, group] pairs in config order; their rows have set
    `outside`), then the sets as given."""
    groups = {label: group for label, group in outside or []}
    rank = {label: i for i, (label, _) in enumerate(outside or [])}
    order = {"base": -2, "outside": -1, **{s: i for i, s in enumerate(sets)}}
    table: dict[tuple, dict] = {}
    for r in rows:
        owner = groups.get(r["model"]) if r["set"] == "outside" else r["model"]
        if owner not in models or r["set"] not in order:
            raise ExperimentError(
                f"evaluation of model {r['model']!r} on set {r['set']!r}: "
                f"not in the ablation's models {models} and sets {sets}"
            )
        key = (r["model"], r["set"], r["metric"])
        entry = table.setdefault(
            key,
            {
                "model": r["model"],
                "set": r["set"],
                "samples": r["budget"],
                "tokens": r["tokens"],
                "metric": r["metric"],
                "group": owner,
            },
        )
        entry[r["benchmark"]] = r["value"]
    return [
        {k: v for k, v in e.items() if k != "group"}
        for e in sorted(
            table.values(),
            key=lambda e: (
                models.index(e["group"]),
                order[e["set"]],
                rank.get(e["model"], 0),
                METRICS.index(e["metric"]),
            ),
        )
    ]


def row_label(entry: dict) -> str:
    if entry["set"] == "base":
        return f"{entry['model']} base"
    if entry["set"] == "outside":
        return entry["model"]
    return f"{entry['set']}-{entry['model']} ({entry['samples']})"


def markdown(entries: list[dict], metric_first: str) -> str:
    return "\n".join(metric_tables(entries, metric_first, [("Model", row_label)]))


def write_csv(entries: list[dict], path: str) -> None:
    header = ["model", "set", "samples", "tokens", "metric", *COLUMNS]
    lines = [",".join(header)]
    lines += [
        ",".join(
            [e["model"], e["set"], str(e["samples"]), str(e["tokens"]), e["metric"]]
            + [cell(e.get(c)) for c in COLUMNS]
        )
        for e in entries
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> list[dict]:
    """Table 3: inputs predictions, eval_settings, nll (one file of each eval folder per run,
    synthllm.experiments.docs.eval_runs) and outside_settings (one of each outside model's
    eval folder, which holds no NLL), outputs table, markdown. Settings: the runs' labels
    (each model's base, then its sets), the models and sets in table order (ablation.models
    resolved, ablation.sets), ablation.metric as metric, `outside` ([label, group] of the
    outside models of those models' groups, config order; none without it)
    (rules/experiments/ablation.smk)."""
    runs = eval_runs(settings["runs"], inputs)
    rows = labelled_rows(runs)
    for path in inputs.get("outside_settings", []):
        rows += [{**r, "set": "outside"} for r in summary_rows(str(Path(path).parent))]
    entries = wide(rows, settings["models"], settings["sets"], settings.get("outside"))
    write_csv(entries, outputs["table"])
    text = markdown(entries, settings["metric"])
    with atomic_path(outputs["markdown"]) as tmp:
        tmp.write_text(text)
    log.info("\n%s", text)
    return entries
