"""The stage's tables: fitted laws, held-out predictions and extrapolations (Table 1 layout),
as CSV rows and Markdown."""

from __future__ import annotations

import math

from synthllm.stages.scaling.analysis import AnalysisSettings, transform_values
from synthllm.stages.scaling.laws import PARAM_NAMES

TABLES = ("fits", "heldout", "extrapolation")


def quantity_label(metric: str, benchmark: str, transform: str) -> str:
    if transform == "error":
        return f"{benchmark} error rate (%) = 100 - {metric}"
    return f"{benchmark} {metric}"


def inverse_transform(value: float | None, transform: str) -> float | None:
    if value is None:
        return None
    return float(transform_values([value], transform)[0])  # both transforms are involutions


def token_label(tokens: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if tokens >= scale:
            return f"{tokens / scale:.3g}{unit}"
    return f"{tokens:.3g}"


def table_rows(analyses: list[dict], transform: str) -> dict[str, list[dict]]:
    """The three tables as lists of flat rows (CSV columns)."""
    fits, held, ext = [], [], []
    for a in analyses:
        for law, r in a["laws"].items():
            row = {
                "model": a["model"],
                "law": law,
                "status": r["status"],
                "flags": "; ".join(r["flags"]),
                "n_fit_points": r["n_points"],
                "loss": r["settings"]["loss"],
                "loss_value": r["loss_value"],
            }
            for name in PARAM_NAMES[law]:
                lo, hi = r["param_intervals"].get(name, (None, None))
                row.update({name: r["params"].get(name), f"{name}_low": lo, f"{name}_high": hi})
            asym = r["asymptote"] or {}
            row.update(
                {
                    "asymptote_margin": asym.get("margin"),
                    "tokens_to_margin": asym.get("tokens"),
                    "tokens_to_margin_low": asym.get("low"),
                    "tokens_to_margin_high": asym.get("high"),
                }
            )
            fits.append(row)
            for h in r["held_out"]:
                held.append({"model": a["model"], "law": law, **h})
            for e in r["extrapolation"]:
                lo, hi = (
                    inverse_transform(e["low"], transform),
                    inverse_transform(e["high"], transform),
                )
                ext.append(
                    {
                        "model": a["model"],
                        "law": law,
                        **e,
                        "metric_predicted": inverse_transform(e["predicted"], transform),
                        "metric_low": min(lo, hi) if lo is not None else None,
                        "metric_high": max(lo, hi) if lo is not None else None,
                    }
                )
    return {"fits": fits, "heldout": held, "extrapolation": ext}


def _cell(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _interval_cell(value, lo, hi) -> str:
    if value is None:
        return "-"
    return _cell(value) if lo is None else f"{_cell(value)} [{_cell(lo)}, {_cell(hi)}]"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def markdown_tables(
    tables: dict[str, list[dict]],
    analyses: list[dict],
    quantity: str,
    metric: str,
    transform: str,
    settings: AnalysisSettings,
) -> dict[str, str]:
    pct = f"{settings.confidence:.0%} bootstrap interval in brackets"
    fits = [
        [
            r["model"],
            r["law"],
            r["status"] + (f" ({r['flags']})" if r["flags"] else ""),
            str(r["n_fit_points"]),
            *[
                _interval_cell(r.get(n), r.get(f"{n}_low"), r.get(f"{n}_high"))
                for n in PARAM_NAMES["rectified"]
            ],
            _interval_cell(
                r["tokens_to_margin"], r["tokens_to_margin_low"], r["tokens_to_margin_high"]
            ),
        ]
        for r in tables["fits"]
    ]
    out = {
        "fits": f"# Fitted scaling laws: {quantity}\n\n{pct}. Last column: tokens where "
        f"L(D) - E <= {_cell(settings.asymptote_margin)}.\n\n"
        + markdown_table(
            ["model", "law", "status", "points", "B", "D_l", "beta", "E", "tokens to E + margin"],
            fits,
        )
    }
    held = [
        [
            r["model"],
            r["law"],
            str(r["budget"]),
            token_label(r["tokens"]),
            _cell(r["measured"]),
            _interval_cell(r["predicted"], r["low"], r["high"]),
            _cell(r["inside"]),
        ]
        for r in tables["heldout"]
    ]
    out["heldout"] = f"# Held-out prediction: {quantity}\n\n{pct}.\n\n" + markdown_table(
        ["model", "law", "budget", "tokens", "measured", "predicted", "inside"], held
    )
    columns = sorted({r["tokens"] for r in tables["extrapolation"]})
    wide = []
    for a in analyses:
        for law in a["laws"]:
            cells = {
                r["tokens"]: _interval_cell(
                    r["metric_predicted"], r["metric_low"], r["metric_high"]
                )
                for r in tables["extrapolation"]
                if r["model"] == a["model"] and r["law"] == law
            }
            if cells:
                wide.append([a["model"], law, *[cells.get(t, "-") for t in columns]])
    shown = metric if transform == "error" else quantity
    out["extrapolation"] = f"# Extrapolated {shown} (Table 1 layout)\n\n{pct}.\n\n" + (
        markdown_table(["model", "law", *map(token_label, columns)], wide)
        if wide
        else "No model has a fitted curve: see fits.md for the flags.\n"
    )
    return out


EMPTY_TABLE_COLUMNS = {
    "fits": ["model", "law", "status", "flags"],
    "heldout": [
        "model",
        "law",
        "budget",
        "tokens",
        "measured",
        "predicted",
        "low",
        "high",
        "inside",
    ],
    "extrapolation": [
        "model",
        "law",
        "tokens",
        "predicted",
        "low",
        "high",
        "metric_predicted",
        "metric_low",
        "metric_high",
    ],
}


def _write_csv(rows: list[dict], path, empty_columns: list[str]) -> None:
    import csv

    fields = list(dict.fromkeys(k for r in rows for k in r)) or empty_columns
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
