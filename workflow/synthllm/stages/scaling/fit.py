"""Fitting one scaling-law curve: settings, bounds, loss, multi-start search, degenerate input.

Every choice is a named argument and is saved with the result:

- **Bounds** (the meaningful region): ``log B`` and ``log D_l`` in ``log_bounds``, ``beta`` in
  ``beta_bounds``, ``E`` between ``e_lower`` (0 for error rates and NLLs) and the smallest
  fitted value (an asymptote above a measured point is not an asymptote). A parameter that
  ends on a bound is flagged ``at_bound:<name>``.
- **Loss.** ``least_squares``: squared residuals of L; ``huber_log``: Huber loss (threshold
  ``huber_delta``) on ``log L_pred - log L`` as in Hoffmann et al.'s and Epoch AI's Chinchilla
  fits. Minimised with scipy's bounded trust-region least squares (``least_squares``, TRF);
  for ``huber_log`` each start is first taken to the squared-loss optimum of the same
  residuals, then refined under the Huber loss (same minimum, a fraction of the evaluations).
- **Starts.** A grid: every ``beta`` in ``StartGrid.beta`` x every asymptote ``E = f * min(L)``
  for ``f`` in ``StartGrid.e_fraction`` x (rectified) every bend position ``D_b`` at the
  ``StartGrid.bend_quantile`` quantiles of ``log D`` with ``D_l = D_b**beta``; ``B`` of each
  start is the linear least-squares value given the others. The best final loss wins.
- **Degenerate input.** Non-finite or negative values raise `ScalingError`; fewer points than
  parameters or a flat curve (range below ``flat_tolerance`` times the largest value) give a
  result with ``status = "no_fit"`` and the reason in ``flags``, never a fitted curve. A fit
  whose curve falls by less than twice its residual RMS over the points (noise without a
  trend) is flagged ``no_trend``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from synthllm.stages.scaling.laws import (
    LAWS,
    THETA_NAMES,
    ScalingError,
    _log_tokens,
    log_reducible,
    n_params,
    natural_params,
    predict,
)

LOSSES = ("least_squares", "huber_log")


@dataclass(frozen=True, kw_only=True)
class StartGrid:
    """Initial values of the multi-start search (see the module docstring; config key
    scaling.starts)."""

    beta: tuple[float, ...]
    e_fraction: tuple[float, ...]
    bend_quantile: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class FitSettings:
    """Every choice a fit depends on; saved beside each result. The fields without a default
    are config keys under `scaling` (settings_from_config; config/schema.yaml holds their
    defaults)."""

    law: str = "rectified"
    loss: str
    huber_delta: float
    starts: StartGrid
    beta_bounds: tuple[float, float]
    log_bounds: tuple[float, float]
    e_lower: float
    flat_tolerance: float = 1e-6
    bound_tolerance: float = 1e-4

    def __post_init__(self):
        if self.law not in LAWS:
            raise ScalingError(f"law must be one of {LAWS}, got {self.law!r}")
        if self.loss not in LOSSES:
            raise ScalingError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not self.huber_delta > 0:
            raise ScalingError(f"huber_delta must be positive, got {self.huber_delta}")
        lo, hi = self.beta_bounds
        if not 0 < lo < hi:
            raise ScalingError(f"beta_bounds must satisfy 0 < low < high, got {self.beta_bounds}")
        if not self.log_bounds[0] < self.log_bounds[1]:
            raise ScalingError(f"log_bounds must be increasing, got {self.log_bounds}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FitSettings:
        d = dict(d)
        if "starts" in d:
            d["starts"] = StartGrid(**{k: tuple(v) for k, v in d["starts"].items()})
        for key in ("beta_bounds", "log_bounds"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class Fit:
    """One fitted curve: natural parameters, optimiser vector, data, loss, flags, settings."""

    status: str  # ok | flagged | no_fit
    flags: list[str]
    settings: FitSettings
    tokens: np.ndarray
    values: np.ndarray
    theta: np.ndarray | None = None
    loss_value: float = math.nan

    @property
    def law(self) -> str:
        return self.settings.law

    @property
    def params(self) -> dict[str, float]:
        if self.theta is None:
            return {}
        return natural_params(self.law, self.theta)

    def predict(self, tokens) -> np.ndarray:
        if self.theta is None:
            raise ScalingError(f"no fitted curve ({', '.join(self.flags)})")
        return predict(self.law, self.theta, tokens)

    def to_dict(self) -> dict:
        return {
            "law": self.law,
            "status": self.status,
            "flags": list(self.flags),
            "params": self.params,
            "loss_value": _finite_or_none(self.loss_value),
            "n_points": int(self.tokens.size),
            "tokens": self.tokens.tolist(),
            "values": self.values.tolist(),
            "settings": self.settings.to_dict(),
        }


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def check_points(tokens, values, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return float arrays; errors name the offending point."""
    tokens = np.asarray(tokens, dtype=float)
    values = np.asarray(values, dtype=float)
    if tokens.shape != values.shape or tokens.ndim != 1:
        raise ScalingError(
            f"tokens and values must be 1-d of equal length, got shapes "
            f"{tokens.shape} and {values.shape}"
        )
    for i, (d, v) in enumerate(zip(tokens, values)):
        if not (np.isfinite(d) and np.isfinite(v)):
            raise ScalingError(f"point {i} (tokens={d}, value={v}) is not finite")
        if d < 0:
            raise ScalingError(f"point {i} has negative tokens ({d})")
        if loss == "huber_log" and v <= 0:
            raise ScalingError(
                f"point {i} (tokens={d}) has value {v} <= 0; the huber_log loss "
                "needs positive values (use loss least_squares or another transform)"
            )
    return tokens, values


def _bounds(settings: FitSettings, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e_hi = float(values.min())
    if not e_hi > settings.e_lower:
        raise ScalingError(
            f"smallest value {e_hi} is not above e_lower={settings.e_lower}: "
            "no room for an asymptote below the data"
        )
    lb_log, ub_log = settings.log_bounds
    b_lo, b_hi = settings.beta_bounds
    if settings.law == "rectified":
        return (
            np.array([lb_log, lb_log, b_lo, settings.e_lower]),
            np.array([ub_log, ub_log, b_hi, e_hi]),
        )
    return np.array([lb_log, b_lo, settings.e_lower]), np.array([ub_log, b_hi, e_hi])


def start_grid(settings: FitSettings, tokens: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
    """Initial vectors of the multi-start search (B solved linearly for each)."""
    lb, ub = _bounds(settings, values)
    log_d = _log_tokens(tokens)
    positive = log_d[np.isfinite(log_d)]
    bends = (
        (np.quantile(positive, settings.starts.bend_quantile) if positive.size else np.zeros(1))
        if settings.law == "rectified"
        else [None]
    )
    starts = []
    for beta in settings.starts.beta:
        beta = float(np.clip(beta, lb[-2], ub[-2]))
        for frac in settings.starts.e_fraction:
            e0 = float(np.clip(frac * values.min(), lb[-1], ub[-1] - 1e-9 * abs(ub[-1])))
            for bend in bends:
                head = [] if bend is None else [float(np.clip(beta * bend, lb[1], ub[1]))]
                probe = np.array([0.0, *head, beta, e0])
                x = np.exp(log_reducible(settings.law, probe, tokens))
                y = values - e0
                b0 = float(np.dot(x, y) / np.dot(x, x))
                log_b0 = math.log(b0) if b0 > 0 else lb[0]
                starts.append(np.clip(np.array([log_b0, *head, beta, e0]), lb, ub))
    return starts


def _residual_fn(law: str, loss: str, tokens: np.ndarray, values: np.ndarray):
    if loss == "least_squares":
        return lambda th: predict(law, th, tokens) - values
    log_values = np.log(values)
    return lambda th: np.log(predict(law, th, tokens)) - log_values


def _jacobian_fn(law: str, loss: str, tokens: np.ndarray):
    """Analytic d residual / d theta (a third of the evaluations of finite differences)."""
    log_d = _log_tokens(tokens)
    trained = tokens > 0

    def jac(th):
        reducible = np.exp(log_reducible(law, th, tokens))
        columns = [reducible]  # d/d log B
        if law == "rectified":
            share_dl = np.exp(th[1] - np.logaddexp(th[1], th[2] * log_d))  # D_l / (D_l + D^b)
            columns.append(-reducible * share_dl)
            columns.append(
                np.where(trained, -reducible * (1 - share_dl) * np.where(trained, log_d, 0.0), 0.0)
            )
        else:
            columns.append(-reducible * log_d)
        columns.append(np.ones_like(reducible))  # d/d E
        j = np.stack(columns, axis=1)
        if loss == "huber_log":
            j /= (reducible + th[-1])[:, None]
        return j

    return jac


def _loss_value(residuals: np.ndarray, settings: FitSettings) -> float:
    if settings.loss == "least_squares":
        return float(0.5 * np.sum(residuals**2))
    a = np.abs(residuals)
    d = settings.huber_delta
    return float(np.sum(np.where(a <= d, 0.5 * a**2, d * (a - 0.5 * d))))


def _minimise(
    settings: FitSettings, tokens, values, starts, warm: bool
) -> tuple[np.ndarray | None, float]:
    from scipy.optimize import least_squares

    lb, ub = _bounds(settings, values)
    fun = _residual_fn(settings.law, settings.loss, tokens, values)
    jac = _jacobian_fn(settings.law, settings.loss, tokens)
    best, best_loss = None, math.inf
    for x0 in starts:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                x = np.clip(x0, lb, ub)
                if settings.loss == "least_squares" or not warm:
                    # Huber from a raw start needs ~7x the evaluations of the squared loss, so
                    # a raw start first goes to the squared-loss optimum, then is refined
                    res = least_squares(
                        fun, x, jac=jac, bounds=(lb, ub), method="trf", x_scale="jac", max_nfev=2000
                    )
                    x = res.x
                if settings.loss == "huber_log":
                    res = least_squares(
                        fun,
                        x,
                        jac=jac,
                        bounds=(lb, ub),
                        method="trf",
                        x_scale="jac",
                        max_nfev=2000,
                        loss="huber",
                        f_scale=settings.huber_delta,
                    )
            except ValueError:  # a start whose residuals are not finite
                continue
        if not np.all(np.isfinite(res.fun)):
            continue
        value = _loss_value(res.fun, settings)
        if value < best_loss:
            best, best_loss = res.x, value
    return best, best_loss


def fit_law(
    tokens,
    values,
    settings: FitSettings,
    initial: Iterable[Sequence[float]] | None = None,
) -> Fit:
    """Fit one curve. `initial` replaces the start grid (e.g. a warm start for bootstrap refits)."""
    tokens, values = check_points(tokens, values, settings.loss)
    p = n_params(settings.law)
    if settings.law == "power" and np.any(tokens <= 0):
        raise ScalingError(
            "the power law cannot use D = 0 points (the untrained model); drop them before fitting"
        )
    no_fit = []
    if tokens.size < p:
        no_fit.append(f"too_few_points: {tokens.size} points for {p} parameters")
    elif np.unique(tokens).size < p:
        no_fit.append(
            f"too_few_points: {np.unique(tokens).size} distinct token counts for {p} parameters"
        )
    elif np.ptp(values) <= settings.flat_tolerance * np.max(np.abs(values)):
        no_fit.append(f"flat: values span {np.ptp(values):.3g}, below flat_tolerance")
    if no_fit:
        return Fit("no_fit", no_fit, settings, tokens, values)
    starts = (
        [np.asarray(s, dtype=float) for s in initial]
        if initial is not None
        else start_grid(settings, tokens, values)
    )
    theta, loss_value = _minimise(settings, tokens, values, starts, warm=initial is not None)
    if theta is None:
        return Fit(
            "no_fit",
            ["optimiser_failed: no start converged to finite residuals"],
            settings,
            tokens,
            values,
        )
    flags = bound_flags(settings, theta, values)
    fitted = predict(settings.law, theta, tokens)
    drop, rms = np.ptp(fitted), float(np.sqrt(np.mean((fitted - values) ** 2)))
    if drop < 2 * rms:
        flags.append(
            f"no_trend: the curve falls by {drop:.3g} over the points, less than twice "
            f"the residual RMS {rms:.3g}"
        )
    if tokens.size == p:
        flags.append(f"no_intervals: {p} points for {p} parameters leave no residual")
    return Fit("flagged" if flags else "ok", flags, settings, tokens, values, theta, loss_value)


def bound_flags(settings: FitSettings, theta: np.ndarray, values: np.ndarray) -> list[str]:
    lb, ub = _bounds(settings, values)
    tol = settings.bound_tolerance * np.maximum(1.0, np.abs(ub - lb))
    return [
        f"at_bound:{name}"
        for name, x, lo, hi, t in zip(THETA_NAMES[settings.law], theta, lb, ub, tol)
        if x - lo <= t or hi - x <= t
    ]
