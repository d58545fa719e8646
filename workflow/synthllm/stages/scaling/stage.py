"""The scaling stage's entry point: the evaluation summary in; fits.json, tables, figures and
counts out."""

from __future__ import annotations

import json
import logging

from synthllm.stages.scaling.analysis import analyse_model, load_points, settings_from_config
from synthllm.stages.scaling.figures import (
    FIGURES,
    pick_compare_model,
    plot_fig1,
    plot_fig2,
    plot_fig7,
)
from synthllm.stages.scaling.tables import (
    EMPTY_TABLE_COLUMNS,
    TABLES,
    _write_csv,
    markdown_tables,
    quantity_label,
    table_rows,
)

log = logging.getLogger(__name__)


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The stage: read `inputs["summary"]`, fit every model, write the tables, figures and
    fits.json beside `outputs["counts"]`, then the counts. Settings: config key scaling, at
    the top level (rules/12_scaling.smk)."""
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    from tqdm import tqdm

    from synthllm.core.files import atomic_dir, publish, write_counts

    summary, config = inputs["summary"], settings
    analysis = settings_from_config(config)
    metric, benchmark, transform = config["metric"], config["benchmark"], config["transform"]
    points = load_points(summary, metric, benchmark, transform)
    # each model's fits and bootstrap refits are independent: one process per job thread
    workers = min(execution.get("threads") or 1, len(points))
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [
            pool.submit(analyse_model, model, *pts, analysis) for model, pts in points.items()
        ]
        analyses = [f.result() for f in tqdm(futures, desc="scaling fits", unit="model")]
    quantity = quantity_label(metric, benchmark, transform)
    tables = table_rows(analyses, transform)
    out_dir = Path(outputs["counts"]).parent
    with atomic_dir(out_dir) as scratch:
        record = {
            "summary": str(summary),
            "quantity": quantity,
            "selection": {"metric": metric, "benchmark": benchmark, "transform": transform},
            "config": config,
            "settings": analysis.to_dict(),
            "models": analyses,
        }
        (scratch / "fits.json").write_text(json.dumps(record, indent=1) + "\n")
        markdown = markdown_tables(tables, analyses, quantity, metric, transform, analysis)
        for name in TABLES:
            _write_csv(tables[name], scratch / f"{name}.csv", EMPTY_TABLE_COLUMNS[name])
            (scratch / f"{name}.md").write_text(markdown[name])
        plot_fig1(analyses, scratch / "fig1", quantity)
        plot_fig2(analyses, scratch / "fig2", quantity)
        compare = pick_compare_model(analyses, config["compare_model"])
        plot_fig7(compare, scratch / "fig7", quantity)
        names = (
            ["fits.json"]
            + [f"{t}.{e}" for t in TABLES for e in ("csv", "md")]
            + [f"{f}.{e}" for f in FIGURES for e in ("png", "pdf")]
        )
        publish({scratch / n: out_dir / n for n in names})
    roles = [p["role"] for a in analyses for p in a["points"]]
    statuses = {
        f"{a['model']}/{law}": r["status"] for a in analyses for law, r in a["laws"].items()
    }
    counts = write_counts(
        outputs["counts"],
        "scaling",
        len(roles),
        roles.count("fit"),
        {"held_out": roles.count("held_out"), "excluded_base_model": roles.count("excluded")},
        models=len(analyses),
        fits=statuses,
    )
    log.info("scaling: %s", counts["fits"])
    return counts
