"""Stage 11, summary (synthllm eval_summary): every checkpoint's accuracy and NLL in one
table, `eval/summary.parquet` in long format (model, budget, tokens, benchmark incl.
`average` = mean of the six, metric accuracy | accuracy_harness | nll, value; accuracy in
percent), plus `summary.csv` and `summary.md` (one row per model, budget and metric, one
column per benchmark).
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
from synthllm.stages.evaluate import EvaluationError, accuracy_table

log = logging.getLogger(__name__)

SUMMARY_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("budget", pa.int64()),
        ("tokens", pa.int64()),
        ("benchmark", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)
METRICS = ("accuracy", "accuracy_harness", "nll")


def summary_rows(eval_dir: str) -> list[dict]:
    """The long-format summary rows of one checkpoint's eval folder."""
    folder = Path(eval_dir)
    try:
        settings = json.loads((folder / "settings.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{folder / 'settings.json'}: {exc} (run synthllm evaluate)") from exc
    key = {
        "model": settings["model"],
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


def run_summary(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> None:
    """Accuracy and NLL of every checkpoint's eval folder (the folders of
    `inputs["predictions"]`, in order) as `outputs` summary (long format), csv and markdown.
    No settings (rules/11_evaluate.smk)."""
    eval_dirs = list(dict.fromkeys(str(Path(p).parent) for p in inputs["predictions"]))
    rows = [r for d in eval_dirs for r in summary_rows(d)]
    rows.sort(key=lambda r: (r["model"], r["budget"], METRICS.index(r["metric"])))
    write_parquet(rows, SUMMARY_SCHEMA, outputs["summary"])
    out_csv, out_md = outputs["csv"], outputs["markdown"]
    columns = list(BENCHMARKS) + ["average"]
    wide: dict[tuple, dict] = {}
    for r in rows:
        wide.setdefault((r["model"], r["budget"], r["tokens"], r["metric"]), {})[r["benchmark"]] = (
            r["value"]
        )
    header = ["model", "budget", "tokens", "metric"] + columns
    lines = []
    for (model, budget, tokens, metric), values in wide.items():
        lines.append(
            [model, str(budget), str(tokens), metric]
            + [f"{values[c]:.4g}" if c in values else "" for c in columns]
        )
    with atomic_path(out_csv) as tmp:
        tmp.write_text("\n".join(",".join(x) for x in [header] + lines) + "\n")
    with atomic_path(out_md) as tmp:
        md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(x) + " |" for x in lines]
        note = (
            "\naccuracy: math-verify, percent; accuracy_harness: the Qwen2.5-Math "
            "harness's grader, percent; nll: nats per reference-solution token. "
            "average: mean of the six benchmarks.\n"
        )
        tmp.write_text("\n".join(md) + "\n" + note)
    print(Path(out_md).read_text())
    log.info("summary: %d rows", len(rows))
