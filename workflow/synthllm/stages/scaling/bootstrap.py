"""Bootstrap refits of a fitted curve and percentile intervals of parameters and predictions.

Two methods (`bootstrap_params`, config key scaling.bootstrap.method):

- ``residuals`` (default): residuals of the fit (in the loss's space: L, or log L), centred
  and inflated by ``sqrt(n / (n - p))``, are resampled with replacement onto the fitted curve
  and the law refitted; the design (token counts) is fixed, which suits a handful of budgets.
- ``points``: the (D, L) points are resampled with replacement; a resample with fewer
  distinct token counts than parameters is drawn again.

Refits start at the full-data fit (``warm_start``) or from the whole grid. Percentile
intervals (``confidence``) for every parameter and every prediction come from the refits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synthllm.stages.scaling.fit import Fit, fit_law
from synthllm.stages.scaling.laws import (
    PARAM_NAMES,
    ScalingError,
    n_params,
    natural_params,
    predict,
    tokens_to_margin,
)

BOOTSTRAP_METHODS = ("residuals", "points")


@dataclass
class Bootstrap:
    """Refitted optimiser vectors (one row per successful refit) and the method used."""

    thetas: np.ndarray
    method: str
    n_requested: int
    failures: int
    seed: int
    warm_start: bool

    def settings(self) -> dict:
        return {
            "method": self.method,
            "n": self.n_requested,
            "seed": self.seed,
            "warm_start": self.warm_start,
        }


def bootstrap_params(
    fit: Fit, n: int = 200, method: str = "residuals", seed: int = 0, warm_start: bool = True
) -> Bootstrap:
    """Bootstrap refits of `fit` (see the module docstring for both methods)."""
    if method not in BOOTSTRAP_METHODS:
        raise ScalingError(f"bootstrap method must be one of {BOOTSTRAP_METHODS}, got {method!r}")
    p = n_params(fit.law)
    if fit.theta is None or fit.tokens.size <= p:
        raise ScalingError(
            f"no bootstrap: needs a fit with more points than its {p} "
            f"parameters (status {fit.status}, {fit.tokens.size} points)"
        )
    rng = np.random.default_rng(seed)
    settings = fit.settings
    initial = [fit.theta] if warm_start else None
    fitted = fit.predict(fit.tokens)
    log_space = settings.loss == "huber_log"
    if log_space:
        residuals = np.log(fit.values) - np.log(fitted)
    else:
        residuals = fit.values - fitted
    residuals = (residuals - residuals.mean()) * math.sqrt(fit.tokens.size / (fit.tokens.size - p))
    thetas, failures = [], 0
    for _ in range(n):
        if method == "residuals":
            draw = rng.choice(residuals, size=residuals.size, replace=True)
            tokens = fit.tokens
            values = fitted * np.exp(draw) if log_space else fitted + draw
        else:
            for _attempt in range(100):
                idx = rng.integers(0, fit.tokens.size, size=fit.tokens.size)
                if np.unique(fit.tokens[idx]).size >= p:
                    break
            tokens, values = fit.tokens[idx], fit.values[idx]
        try:
            refit = fit_law(tokens, values, settings, initial=initial)
        except ScalingError:
            refit = None
        if refit is None or refit.theta is None:
            failures += 1
            continue
        thetas.append(refit.theta)
    return Bootstrap(np.array(thetas).reshape(-1, p), method, n, failures, seed, warm_start)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval along axis 0."""
    if not 0 < confidence < 1:
        raise ScalingError(f"confidence must lie in (0, 1), got {confidence}")
    alpha = (1 - confidence) / 2
    return (np.quantile(samples, alpha, axis=0), np.quantile(samples, 1 - alpha, axis=0))


def param_intervals(fit: Fit, boot: Bootstrap, confidence: float) -> dict[str, list[float]]:
    """Interval of each natural parameter from the bootstrap refits."""
    names = PARAM_NAMES[fit.law]
    natural = np.array([[natural_params(fit.law, t)[k] for k in names] for t in boot.thetas])
    lo, hi = percentile_interval(natural, confidence)
    return {k: [float(a), float(b)] for k, a, b in zip(names, lo, hi)}


def prediction_band(
    fit: Fit, boot: Bootstrap | None, tokens, confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point prediction and interval at each token count (NaN intervals without a bootstrap)."""
    tokens = np.asarray(tokens, dtype=float)
    centre = fit.predict(tokens)
    if boot is None or boot.thetas.shape[0] == 0:
        nan = np.full_like(centre, np.nan)
        return centre, nan, nan.copy()
    draws = np.array([predict(fit.law, t, tokens) for t in boot.thetas])
    lo, hi = percentile_interval(draws, confidence)
    return centre, lo, hi


def margin_interval(
    fit: Fit, boot: Bootstrap | None, margin: float, confidence: float
) -> tuple[float, float, float]:
    centre = tokens_to_margin(fit.law, fit.theta, margin)
    if boot is None or boot.thetas.shape[0] == 0:
        return centre, math.nan, math.nan
    # "never" (inf) is capped so that interpolating between two of them stays "never"
    draws = np.minimum([tokens_to_margin(fit.law, t, margin) for t in boot.thetas], 1e300)
    lo, hi = (math.inf if x >= 1e300 else float(x) for x in percentile_interval(draws, confidence))
    return centre, lo, hi
