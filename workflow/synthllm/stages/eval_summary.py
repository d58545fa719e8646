"""Stage 11, summary (synthllm eval_summary): every checkpoint's accuracy and NLL in one
table, `eval/summary.parquet` in long format (model, kind, budget, tokens, benchmark incl.
`average` = mean of the six, metric accuracy | accuracy_harness | nll, value; accuracy in
percent; kind trained | base | outside, synthllm.stages.evaluate.checkpoint_kind), plus
`summary.csv` and `summary.md` (one row per model, budget and metric, one column per
benchmark), and Table 2 (`table2.csv`, `table2.md`): benchmark x model, the outside models
(config models.outside) beside the trained ones, grouped as config evaluate.table2 says.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthllm.core.eval_data import BENCHMARKS
from synthllm.core.files import atomic_path, write_parquet
from synthllm.stages.eval_nll import nll_table
from synthllm.stages.evaluate import EvaluationError, accuracy_table, checkpoint_kind

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("kind", pa.string()),
        ("budget", pa.int64()),
        ("tokens", pa.int64()),
        ("benchmark", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)
METRICS = ("accuracy", "accuracy_harness", "nll")
METRIC_NOTES = {
    "accuracy": "accuracy, percent (math-verify grader)",
    "accuracy_harness": "accuracy, percent (Qwen2.5-Math harness grader)",
    "nll": "NLL of the reference solutions, nats per token (lower is better)",
}
COLUMNS = [*BENCHMARKS, "average"]


def summary_rows(eval_dir: str) -> list[dict]:
    """The long-format summary rows of one checkpoint's eval folder."""
    folder = Path(eval_dir)
    try:
        settings = json.loads((folder / "settings.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{folder / 'settings.json'}: {exc} (run synthllm evaluate)") from exc
    key = {
        "model": settings["model"],
        "kind": checkpoint_kind(settings),
        "budget": int(settings["budget"]),
        "tokens": int(settings["tokens"]),
    }
    values: dict[str, dict[str, float]] = {m: {} for m in METRICS}
    accuracy = accuracy_table(pq.read_table(folder / "predictions.parquet").to_pylist())
    for name, row in accuracy.items():
        values["accuracy"][name] = row["accuracy"]
        values["accuracy_harness"][name] = row["accuracy_harness"]
    if (folder / "nll.parquet").exists():
        values["nll"] = nll_table(pq.read_table(folder / "nll.parquet").to_pylist())
    rows = []
    for metric, per_benchmark in values.items():
        for name, value in per_benchmark.items():
            rows.append({**key, "benchmark": name, "metric": metric, "value": float(value)})
        if per_benchmark:
            # the paper's "Average": the plain mean of the six benchmarks (all six required)
            average = (
                sum(per_benchmark.values()) / len(per_benchmark)
                if len(per_benchmark) == len(BENCHMARKS)
                else math.nan
            )
            rows.append({**key, "benchmark": "average", "metric": metric, "value": average})
    return rows


def sample_label(samples: int) -> str:
    """A sample count as the paper writes it: 3.2M, 100K."""
    for unit, scale in (("M", 10**6), ("K", 10**3)):
        if samples >= scale:
            return f"{samples / scale:.3g}{unit}"
    return str(samples)


def row_label(entry: dict) -> str:
    """Table 2's name of a row: an outside model's label, `<model> base`, `<model> (3.2M)`."""
    if entry["kind"] == "outside":
        return entry["model"]
    if entry["kind"] == "base":
        return f"{entry['model']} base"
    return f"{entry['model']} ({sample_label(entry['budget'])})"


def table2_entries(rows: list[dict], layout: dict) -> list[dict]:
    """Table 2 from the summary's long rows, one entry per row and metric, in the table's
    order: per group of `layout["groups"]` (the models.train labels) the outside models of
    that group (`layout["outside"]`: [label, group] pairs, config order), the base model and
    the model at each of `layout["budgets"]`; then the outside models of no group. Every
    row has both accuracies; NLL only where measured (never for an outside model)."""
    found: dict[tuple, dict] = {}
    for r in rows:
        entry = found.setdefault(
            (r["model"], r["budget"], r["metric"]),
            {k: r[k] for k in ("model", "kind", "budget", "tokens", "metric")},
        )
        entry[r["benchmark"]] = r["value"]
    order = []
    for group in [*layout["groups"], None]:
        order += [(label, 0, group) for label, of in layout["outside"] if of == group]
        if group is not None:
            order += [(group, budget, group) for budget in [0, *layout["budgets"]]]
    entries = []
    for model, budget, group in order:
        for metric in METRICS:
            entry = found.get((model, budget, metric))
            if entry is None and metric != "nll":
                raise EvaluationError(
                    f"Table 2: the summary has no {metric} of {model} at budget {budget} "
                    "(config keys evaluate.table2, models.outside)"
                )
            if entry is not None:
                entries.append({**entry, "group": group or ""})
    return entries


def cell(value) -> str:
    """A score as the tables print it (4 significant digits; empty when not measured)."""
    return "" if value is None else f"{value:.4g}"


def metric_tables(entries: list[dict], metric_first: str, leading: list[tuple]) -> list[str]:
    """The markdown lines of one table per metric, `metric_first` first, a row per entry of
    that metric: the `leading` columns ((header, function of the entry) pairs), then the
    six benchmarks and their average (Table 2 here, Table 3 in synthllm.experiments)."""
    out = []
    for metric in [metric_first, *(m for m in METRICS if m != metric_first)]:
        mine = [e for e in entries if e["metric"] == metric]
        if not mine:
            continue
        headers = [header for header, _ in leading] + COLUMNS
        out += [
            f"**{METRIC_NOTES[metric]}**",
            "",
            "| " + " | ".join(headers) + " |",
            "|---" * len(headers) + "|",
        ]
        out += [
            "| "
            + " | ".join([value(e) for _, value in leading] + [cell(e.get(c)) for c in COLUMNS])
            + " |"
            for e in mine
        ]
        out.append("")
    return out


def table2_markdown(entries: list[dict], metric_first: str) -> str:
    """One table per metric, `metric_first` first: a row per model, a column per benchmark."""
    out = metric_tables(
        entries, metric_first, [("Model", row_label), ("kind", lambda e: e["kind"])]
    )
    out.append(
        "kind: trained (ours, fine-tuned on the synthetic data), base (the same model "
        "untrained), outside (config models.outside, evaluated as it is). average: mean of "
        "the six benchmarks."
    )
    return "\n".join(out) + "\n"


def write_table2(entries: list[dict], csv_path: str, md_path: str, metric_first: str) -> None:
    header = ["model", "kind", "group", "budget", "tokens", "metric", *COLUMNS]
    lines = [",".join(header)]
    lines += [
        ",".join(
            [e["model"], e["kind"], e["group"], str(e["budget"]), str(e["tokens"]), e["metric"]]
            + [cell(e.get(c)) for c in COLUMNS]
        )
        for e in entries
    ]
    with atomic_path(csv_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(md_path) as tmp:
        tmp.write_text(table2_markdown(entries, metric_first))


def run_summary(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> None:
    """Accuracy and NLL of every checkpoint's eval folder (the folders of
    `inputs["predictions"]`, in order) as `outputs` summary (long format), csv and
    markdown, and Table 2 (`outputs` table2, table2_md). Settings: `table2`, Table 2's
    layout (table2_entries: config key evaluate.table2 with its budgets resolved, groups
    and outside; rules/11_evaluate.smk)."""
    eval_dirs = list(dict.fromkeys(str(Path(p).parent) for p in inputs["predictions"]))
    rows = [r for d in eval_dirs for r in summary_rows(d)]
    rows.sort(key=lambda r: (r["model"], r["budget"], METRICS.index(r["metric"])))
    write_parquet(rows, SUMMARY_SCHEMA, outputs["summary"])
    out_csv, out_md = outputs["csv"], outputs["markdown"]
    wide: dict[tuple, dict] = {}
    for r in rows:
        key = (r["model"], r["kind"], r["budget"], r["tokens"], r["metric"])
        wide.setdefault(key, {})[r["benchmark"]] = r["value"]
    header = ["model", "kind", "budget", "tokens", "metric"] + COLUMNS
    lines = []
    for (model, kind, budget, tokens, metric), values in wide.items():
        lines.append(
            [model, kind, str(budget), str(tokens), metric]
            + [f"{values[c]:.4g}" if c in values else "" for c in COLUMNS]
        )
    with atomic_path(out_csv) as tmp:
        tmp.write_text("\n".join(",".join(x) for x in [header] + lines) + "\n")
    with atomic_path(out_md) as tmp:
        md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(x) + " |" for x in lines]
        note = (
            "\naccuracy: math-verify, percent; accuracy_harness: the Qwen2.5-Math "
            "harness's grader, percent; nll: nats per reference-solution token. "
            "average: mean of the six benchmarks. kind: trained, base (budget 0) or outside "
            "(config models.outside, evaluated as it is: no NLL).\n"
        )
        tmp.write_text("\n".join(md) + "\n" + note)
    table2 = settings["table2"]
    write_table2(
        table2_entries(rows, table2), outputs["table2"], outputs["table2_md"], table2["metric"]
    )
    print(Path(out_md).read_text())
    log.info("summary: %d rows", len(rows))
