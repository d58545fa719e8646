"""One model's analysis: held-out split, fits of every law, intervals, extrapolation; the
stage's settings (config key `scaling`) and its input points (the evaluation summary)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from synthllm.stages.scaling.bootstrap import (
    bootstrap_params,
    margin_interval,
    param_intervals,
    prediction_band,
)
from synthllm.stages.scaling.fit import FitSettings, _finite_or_none, check_points, fit_law
from synthllm.stages.scaling.laws import LAWS, ScalingError, n_params

TRANSFORMS = ("identity", "error")


def transform_values(values, transform: str) -> np.ndarray:
    """The fitted quantity from a metric: identity (NLL), or error = 100 - accuracy (percent)."""
    values = np.asarray(values, dtype=float)
    if transform == "identity":
        return values
    if transform == "error":
        return 100.0 - values
    raise ScalingError(f"transform must be one of {TRANSFORMS}, got {transform!r}")


@dataclass(frozen=True, kw_only=True)
class AnalysisSettings:
    """The stage's choices on top of the fit's (config key `scaling`, settings_from_config;
    the fields without a default are config keys)."""

    fit: FitSettings
    laws: tuple[str, ...] = LAWS
    held_out: int
    include_base: bool
    bootstrap: int
    bootstrap_method: str
    warm_start: bool
    confidence: float
    extrapolate_tokens: tuple[float, ...]
    asymptote_margin: float
    seed: int
    curve_points: int = 200

    def to_dict(self) -> dict:
        return asdict(self)


def split_points(
    budgets, tokens, values, held_out: int, include_base: bool
) -> dict[str, np.ndarray]:
    """Masks over the points: fit, held_out (the `held_out` largest trained budgets), base."""
    budgets = np.asarray(budgets)
    tokens = np.asarray(tokens, dtype=float)
    if held_out < 0:
        raise ScalingError(f"held_out must be >= 0, got {held_out}")
    base = tokens == 0
    trained_budgets = np.unique(budgets[~base])
    held = np.isin(budgets, trained_budgets[::-1][:held_out]) & ~base
    fit = ~held & (~base | include_base)
    return {"fit": fit, "held_out": held, "base": base}


def analyse_law(
    law: str,
    budgets,
    tokens,
    values,
    masks: dict[str, np.ndarray],
    settings: AnalysisSettings,
    curve_tokens: np.ndarray,
) -> dict:
    """Fit one law to the fit points; intervals, held-out check, extrapolation, asymptote."""
    fit_settings = FitSettings.from_dict({**settings.fit.to_dict(), "law": law})
    use = masks["fit"] & (tokens > 0 if law == "power" else True)
    notes = []
    if law == "power" and np.any(masks["fit"] & (tokens == 0)):
        notes.append("base_excluded: the power law is undefined at D = 0")
    fit = fit_law(tokens[use], values[use], fit_settings)
    out = {
        "law": law,
        **fit.to_dict(),
        "notes": notes,
        "param_intervals": {},
        "held_out": [],
        "extrapolation": [],
        "asymptote": None,
        "curve": None,
        "bootstrap": None,
    }
    held = masks["held_out"]
    if fit.theta is None:
        out["held_out"] = [
            {
                "budget": int(b),
                "tokens": float(d),
                "measured": float(v),
                "predicted": None,
                "low": None,
                "high": None,
                "inside": None,
            }
            for b, d, v in zip(budgets[held], tokens[held], values[held])
        ]
        return out
    boot = None
    if fit.tokens.size > n_params(law):
        boot = bootstrap_params(
            fit, settings.bootstrap, settings.bootstrap_method, settings.seed, settings.warm_start
        )
        out["bootstrap"] = {
            **boot.settings(),
            "successes": int(boot.thetas.shape[0]),
            "failures": boot.failures,
            "confidence": settings.confidence,
        }
        if boot.failures > 0.1 * settings.bootstrap:
            fit.flags.append(f"bootstrap_failures: {boot.failures} of {settings.bootstrap}")
            out["flags"], out["status"] = list(fit.flags), "flagged"
        if boot.thetas.shape[0]:
            out["param_intervals"] = param_intervals(fit, boot, settings.confidence)
    if held.any():
        centre, lo, hi = prediction_band(fit, boot, tokens[held], settings.confidence)
        out["held_out"] = [
            {
                "budget": int(b),
                "tokens": float(d),
                "measured": float(v),
                "predicted": float(c),
                "low": _finite_or_none(a),
                "high": _finite_or_none(z),
                "inside": bool(a <= v <= z) if np.isfinite(a) else None,
            }
            for b, d, v, c, a, z in zip(budgets[held], tokens[held], values[held], centre, lo, hi)
        ]
    ext = np.asarray(settings.extrapolate_tokens, dtype=float)
    centre, lo, hi = prediction_band(fit, boot, ext, settings.confidence)
    out["extrapolation"] = [
        {
            "tokens": float(d),
            "predicted": float(c),
            "low": _finite_or_none(a),
            "high": _finite_or_none(z),
        }
        for d, c, a, z in zip(ext, centre, lo, hi)
    ]
    reach, lo_reach, hi_reach = margin_interval(
        fit, boot, settings.asymptote_margin, settings.confidence
    )
    out["asymptote"] = {
        "E": fit.params["E"],
        "margin": settings.asymptote_margin,
        "tokens": _finite_or_none(reach),
        "low": _finite_or_none(lo_reach),
        "high": _finite_or_none(hi_reach),
    }
    grid = curve_tokens if law == "rectified" else curve_tokens[curve_tokens > 0]
    centre, lo, hi = prediction_band(fit, boot, grid, settings.confidence)
    out["curve"] = {
        "tokens": grid.tolist(),
        "predicted": centre.tolist(),
        "low": [_finite_or_none(x) for x in lo],
        "high": [_finite_or_none(x) for x in hi],
    }
    return out


def analyse_model(model: str, budgets, tokens, values, settings: AnalysisSettings) -> dict:
    """Every law's analysis for one model's points (values already transformed)."""
    try:
        return _analyse_model(model, budgets, tokens, values, settings)
    except ScalingError as exc:
        raise ScalingError(f"model {model!r}: {exc}") from None


def _analyse_model(model: str, budgets, tokens, values, settings: AnalysisSettings) -> dict:
    order = np.argsort(np.asarray(tokens, dtype=float), kind="stable")
    budgets = np.asarray(budgets)[order]
    tokens, values = check_points(
        np.asarray(tokens)[order], np.asarray(values)[order], settings.fit.loss
    )
    masks = split_points(budgets, tokens, values, settings.held_out, settings.include_base)
    trained = tokens[tokens > 0]
    top = max([*settings.extrapolate_tokens, *trained]) if trained.size else 1.0
    low = trained.min() / 2 if trained.size else top / 1e4
    curve_tokens = np.concatenate([[0.0], np.geomspace(low, top, settings.curve_points)])
    return {
        "model": model,
        "points": [
            {
                "budget": int(b),
                "tokens": float(d),
                "value": float(v),
                "role": "held_out" if h else "fit" if f else "excluded",
            }
            for b, d, v, h, f in zip(budgets, tokens, values, masks["held_out"], masks["fit"])
        ],
        "laws": {
            law: analyse_law(law, budgets, tokens, values, masks, settings, curve_tokens)
            for law in settings.laws
        },
    }


SUMMARY_COLUMNS = ("model", "kind", "budget", "tokens", "benchmark", "metric", "value")


def settings_from_config(cfg: dict) -> AnalysisSettings:
    """AnalysisSettings from config key `scaling` (config/schema.yaml documents each key)."""
    fit = FitSettings.from_dict(
        {
            k: cfg[k]
            for k in ("loss", "huber_delta", "starts", "beta_bounds", "log_bounds", "e_lower")
        }
    )
    boot = cfg["bootstrap"]
    return AnalysisSettings(
        fit=fit,
        held_out=cfg["held_out"],
        include_base=cfg["include_base"],
        bootstrap=boot["n"],
        bootstrap_method=boot["method"],
        warm_start=boot["warm_start"],
        confidence=boot["confidence"],
        extrapolate_tokens=tuple(float(x) for x in cfg["extrapolate_tokens"]),
        asymptote_margin=cfg["asymptote_margin"],
        seed=cfg["seed"],
    )


def load_points(
    path, metric: str, benchmark: str, transform: str
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """model -> (budgets, tokens, fitted values) from an evaluation summary (long format),
    for our models only: an outside model (kind outside, config models.outside) was trained
    on data of its own and is no point of any scaling law."""
    import polars as pl

    frame = pl.read_parquet(path)
    missing = [c for c in SUMMARY_COLUMNS if c not in frame.columns]
    if missing:
        raise ScalingError(f"{path}: missing columns {missing} (has {frame.columns})")
    rows = frame.filter(
        (pl.col("metric") == metric)
        & (pl.col("benchmark") == benchmark)
        & (pl.col("kind") != "outside")
    )
    if rows.is_empty():
        pairs = sorted(set(zip(frame["metric"].to_list(), frame["benchmark"].to_list())))
        raise ScalingError(
            f"{path}: no rows with metric {metric!r} and benchmark {benchmark!r} "
            f"(config keys scaling.metric, scaling.benchmark); present: {pairs}"
        )
    dupes = rows.group_by("model", "budget").len().filter(pl.col("len") > 1)
    if not dupes.is_empty():
        raise ScalingError(
            f"{path}: several {metric}/{benchmark} rows for (model, budget) "
            f"{dupes.select('model', 'budget').rows()}"
        )
    points = {}
    for (model,), part in rows.sort("model", "budget").group_by("model", maintain_order=True):
        for budget, value in zip(part["budget"], part["value"]):
            if value is None or not math.isfinite(value):
                raise ScalingError(
                    f"{path}: model {model!r} budget {budget}: {metric} on {benchmark} is {value}"
                )
        points[model] = (
            part["budget"].to_numpy(),
            part["tokens"].to_numpy().astype(float),
            transform_values(part["value"].to_numpy(), transform),
        )
    return points
