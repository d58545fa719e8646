"""Scaling-law fits of evaluation results against synthetic training tokens (paper §3, Eqs. 2-3).

Two laws, one curve per model:

- rectified (Eq. 2, after Lin et al. 2024): ``L(D) = B / (D_l + D**beta) + E``
- power     (Eq. 3):                        ``L(D) = B / D**beta + E``

``L`` is the fitted quantity (an error rate in percent, or an NLL) and ``D`` the number of
training tokens (``D = 0``: the untrained base model, defined for the rectified law only).

Every choice is a named argument and is saved with the result:

- **Parametrisation.** The optimiser sees ``theta = (log B, log D_l, beta, E)`` (power:
  ``(log B, beta, E)``) and evaluates ``D**beta`` as ``exp(beta * log D)`` and the denominator
  with ``logaddexp``, so token counts from 1e5 to 1e13 stay well conditioned.
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
- **Bootstrap** (`bootstrap_params`). ``residuals`` (default): residuals of the fit (in the
  loss's space: L, or log L), centred and inflated by ``sqrt(n / (n - p))``, are resampled
  with replacement onto the fitted curve and the law refitted; the design (token counts) is
  fixed, which suits a handful of budgets. ``points``: the (D, L) points are resampled with
  replacement; a resample with fewer distinct token counts than parameters is drawn again.
  Refits start at the full-data fit (``warm_start``) or from the whole grid. Percentile
  intervals (``confidence``) for every parameter and every prediction come from the refits.
- **Asymptote distance** (`tokens_to_margin`): the smallest D with ``L(D) - E <= margin``,
  i.e. the reducible part of the law has fallen to ``margin`` (in L's units, e.g. 1 percentage
  point of error); 0 if the base model is already there. The paper's "peaks at 1T / 4T" reading
  (§5.4) has no stated definition; this is ours.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from synthllm.errors import SynthllmError
from synthllm.io import save_figure

log = logging.getLogger(__name__)

LAWS = ("rectified", "power")
LOSSES = ("least_squares", "huber_log")
BOOTSTRAP_METHODS = ("residuals", "points")
PARAM_NAMES = {"rectified": ("B", "D_l", "beta", "E"), "power": ("B", "beta", "E")}
THETA_NAMES = {"rectified": ("log_B", "log_D_l", "beta", "E"), "power": ("log_B", "beta", "E")}


class ScalingError(SynthllmError):
    """Input a scaling law cannot be fitted to (the message names the offending point)."""


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


def n_params(law: str) -> int:
    return len(PARAM_NAMES[law])


def natural_params(law: str, theta: Sequence[float]) -> dict[str, float]:
    if law == "rectified":
        log_b, log_dl, beta, e = theta
        return {"B": math.exp(log_b), "D_l": math.exp(log_dl), "beta": float(beta), "E": float(e)}
    log_b, beta, e = theta
    return {"B": math.exp(log_b), "beta": float(beta), "E": float(e)}


def theta_from_params(law: str, params: dict[str, float]) -> np.ndarray:
    if law == "rectified":
        return np.array(
            [math.log(params["B"]), math.log(params["D_l"]), params["beta"], params["E"]]
        )
    return np.array([math.log(params["B"]), params["beta"], params["E"]])


def _log_tokens(tokens: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(tokens)


def log_reducible(law: str, theta: Sequence[float], tokens) -> np.ndarray:
    """log(L(D) - E), computed without forming D**beta."""
    log_d = _log_tokens(np.asarray(tokens, dtype=float))
    if law == "rectified":
        log_b, log_dl, beta, _ = theta
        return log_b - np.logaddexp(log_dl, beta * log_d)
    log_b, beta, _ = theta
    return log_b - beta * log_d


def predict(law: str, theta: Sequence[float], tokens) -> np.ndarray:
    """L(D) for a law and its optimiser vector theta."""
    tokens = np.asarray(tokens, dtype=float)
    if law == "power" and np.any(tokens <= 0):
        raise ScalingError("the power law is undefined at D = 0 tokens (the untrained model)")
    return np.exp(log_reducible(law, theta, tokens)) + theta[-1]


def tokens_to_margin(law: str, theta: Sequence[float], margin: float) -> float:
    """Smallest D with L(D) - E <= margin (0 when L(0) is already within it; see docstring)."""
    if not margin > 0:
        raise ScalingError(f"asymptote margin must be positive, got {margin}")
    p = natural_params(law, theta)
    if law == "rectified":
        need = p["B"] / margin - p["D_l"]  # D**beta needed
        if need <= 0:
            return 0.0
    else:
        need = p["B"] / margin
    exponent = math.log(need) / p["beta"]
    return math.inf if exponent > 700 else math.exp(exponent)  # beyond ~1e304 tokens: never


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


# --- One model's analysis: held-out split, fits of both laws, intervals, extrapolation ---

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


# --- The stage: summary.parquet in; fits, tables and figures out ---

SUMMARY_COLUMNS = ("model", "budget", "tokens", "benchmark", "metric", "value")
FIGURES = ("fig1", "fig2", "fig7")
TABLES = ("fits", "heldout", "extrapolation")


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
    """model -> (budgets, tokens, fitted values) from an evaluation summary (long format)."""
    import polars as pl

    frame = pl.read_parquet(path)
    missing = [c for c in SUMMARY_COLUMNS if c not in frame.columns]
    if missing:
        raise ScalingError(f"{path}: missing columns {missing} (has {frame.columns})")
    rows = frame.filter((pl.col("metric") == metric) & (pl.col("benchmark") == benchmark))
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


FIT_COLOUR, HELD_COLOUR, BASE_COLOUR, POWER_COLOUR = "tab:green", "tab:red", "0.4", "black"


def _curve(r: dict, max_tokens: float | None = None):
    c = r["curve"]
    d = np.array(c["tokens"])
    keep = d > 0 if max_tokens is None else (d > 0) & (d <= max_tokens)
    as_array = lambda xs: np.array([np.nan if x is None else x for x in xs])  # noqa: E731
    return (
        d[keep],
        np.array(c["predicted"])[keep],
        as_array(c["low"])[keep],
        as_array(c["high"])[keep],
    )


def _points(ax, a: dict, label_roles: bool = True, colour=None) -> None:
    for role, colour_role, label in (
        ("fit", FIT_COLOUR, "fit points"),
        ("held_out", HELD_COLOUR, "held-out points"),
        ("excluded", BASE_COLOUR, "excluded points"),
    ):
        pts = [p for p in a["points"] if p["role"] == role and p["tokens"] > 0]
        if pts:
            ax.scatter(
                [p["tokens"] for p in pts],
                [p["value"] for p in pts],
                zorder=3,
                s=28,
                color=colour or colour_role,
                label=label if label_roles else None,
                marker="o" if role != "held_out" else "D",
            )
    for p in a["points"]:
        if p["tokens"] == 0:  # the untrained model has no place on a log axis: a level line
            ax.axhline(
                p["value"],
                color=colour or BASE_COLOUR,
                ls="--",
                lw=0.8,
                label="untrained model (D = 0)" if label_roles else None,
            )


def _log_axes(ax) -> None:
    """Log-log axes with plain numbers on the value axis (called after plotting)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(plain)
    low, high = ax.get_ylim()
    # within a decade the major ticks are too few to read values off: label the minor ones
    ax.yaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _no_fit_note(ax, r: dict) -> None:
    ax.text(
        0.5,
        0.5,
        "no fit: " + "; ".join(r["flags"]),
        transform=ax.transAxes,
        ha="center",
        va="center",
        wrap=True,
        fontsize=8,
        color="tab:red",
    )


def _measured_max(a: dict) -> float:
    return max([p["tokens"] for p in a["points"]] + [1.0])


def plot_fig1(analyses: list[dict], stem, quantity: str) -> None:
    """Fig. 1: a panel per model, rectified fit with its band, fit vs held-out points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(analyses), 1)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, a in zip(axes.flat, analyses):
        r = a["laws"]["rectified"]
        _points(ax, a)
        if r["curve"]:
            d, centre, lo, hi = _curve(r, _measured_max(a) * 1.5)
            ax.plot(d, centre, color=FIT_COLOUR, label="rectified fit")
            ax.fill_between(
                d,
                lo,
                hi,
                color=FIT_COLOUR,
                alpha=0.2,
                lw=0,
                label=f"{r['bootstrap']['confidence']:.0%} band" if r["bootstrap"] else None,
            )
            p = r["params"]
            ax.set_title(
                f"{a['model']}: beta={p['beta']:.2f}, B/D_l={p['B'] / p['D_l']:.3g}, "
                f"E={p['E']:.3g}",
                fontsize=9,
            )
        else:
            ax.set_title(a["model"], fontsize=9)
            _no_fit_note(ax, r)
        _log_axes(ax)
        ax.set_xlabel("training tokens")
        ax.set_ylabel(quantity, fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(analyses) :]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, f"{stem}.png", f"{stem}.pdf")
    plt.close(fig)


def plot_fig2(analyses: list[dict], stem, quantity: str) -> None:
    """Fig. 2: every model's rectified fit, solid over measured tokens, dotted beyond."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, a in enumerate(analyses):
        colour = f"C{i}"
        r = a["laws"]["rectified"]
        pts = [p for p in a["points"] if p["tokens"] > 0]
        ax.scatter(
            [p["tokens"] for p in pts],
            [p["value"] for p in pts],
            color=colour,
            s=18,
            zorder=3,
            label=f"{a['model']}" + ("" if r["curve"] else " (no fit)"),
        )
        if r["curve"]:
            d, centre, _, _ = _curve(r)
            inside = d <= _measured_max(a)
            ax.plot(d[inside], centre[inside], color=colour)
            ax.plot(d[~inside], centre[~inside], color=colour, ls=":")
    _log_axes(ax)
    ax.set_xlabel("training tokens (solid: fitted range, dotted: extrapolation)")
    ax.set_ylabel(quantity, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, f"{stem}.png", f"{stem}.pdf")
    plt.close(fig)


def plot_fig7(a: dict, stem, quantity: str) -> None:
    """Fig. 7: rectified (solid) vs power law (dotted) on one model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    _points(ax, a)
    notes = []
    for law, style in (
        ("rectified", {"color": FIT_COLOUR, "ls": "-"}),
        ("power", {"color": POWER_COLOUR, "ls": ":"}),
    ):
        r = a["laws"].get(law)
        if r is None:
            continue
        if r["curve"]:
            d, centre, _, _ = _curve(r, _measured_max(a) * 1.5)
            ax.plot(d, centre, label=f"{law} law", **style)
        else:
            notes.append(f"{law}: no fit ({'; '.join(r['flags'])})")
    if notes:
        ax.text(
            0.5,
            0.5,
            "\n".join(notes),
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            color="tab:red",
            wrap=True,
        )
    _log_axes(ax)
    ax.set_title(f"{a['model']}: rectified vs power law", fontsize=9)
    ax.set_xlabel("training tokens")
    ax.set_ylabel(quantity, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, f"{stem}.png", f"{stem}.pdf")
    plt.close(fig)


def pick_compare_model(analyses: list[dict], wanted: str | None) -> dict | None:
    """Fig. 7's model: the configured one, else the first with both laws fitted, else the first."""
    if not analyses:
        return None
    if wanted is not None:
        for a in analyses:
            if a["model"] == wanted:
                return a
        raise ScalingError(
            f"config key scaling.compare_model: {wanted!r} is not among the "
            f"models {[a['model'] for a in analyses]}"
        )
    fitted = [a for a in analyses if all(r["curve"] for r in a["laws"].values())]
    return (fitted or analyses)[0]


def run(*, inputs: dict, outputs: dict, settings: dict, execution: dict) -> dict:
    """The stage: read `inputs["summary"]`, fit every model, write the tables, figures and
    fits.json beside `outputs["counts"]`, then the counts. Settings: config key scaling, at
    the top level (rules/scaling.smk)."""
    from pathlib import Path

    from tqdm import tqdm

    from synthllm.io import atomic_dir, publish, write_counts

    summary, config = inputs["summary"], settings
    analysis = settings_from_config(config)
    metric, benchmark, transform = config["metric"], config["benchmark"], config["transform"]
    points = load_points(summary, metric, benchmark, transform)
    analyses = [
        analyse_model(model, *pts, analysis)
        for model, pts in tqdm(points.items(), desc="scaling fits", unit="model")
    ]
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
