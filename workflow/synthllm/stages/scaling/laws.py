"""The two scaling laws (paper §3, Eqs. 2-3): forms, parametrisation, prediction, asymptote.

Two laws, one curve per model:

- rectified (Eq. 2, after Lin et al. 2024): ``L(D) = B / (D_l + D**beta) + E``
- power     (Eq. 3):                        ``L(D) = B / D**beta + E``

``L`` is the fitted quantity (an error rate in percent, or an NLL) and ``D`` the number of
training tokens (``D = 0``: the untrained base model, defined for the rectified law only).

- **Parametrisation.** The optimiser sees ``theta = (log B, log D_l, beta, E)`` (power:
  ``(log B, beta, E)``) and evaluates ``D**beta`` as ``exp(beta * log D)`` and the denominator
  with ``logaddexp``, so token counts from 1e5 to 1e13 stay well conditioned.
- **Asymptote distance** (`tokens_to_margin`): the smallest D with ``L(D) - E <= margin``,
  i.e. the reducible part of the law has fallen to ``margin`` (in L's units, e.g. 1 percentage
  point of error); 0 if the base model is already there. The paper's "peaks at 1T / 4T" reading
  (§5.4) has no stated definition; this is ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from synthllm.errors import SynthllmError

LAWS = ("rectified", "power")
PARAM_NAMES = {"rectified": ("B", "D_l", "beta", "E"), "power": ("B", "beta", "E")}
THETA_NAMES = {"rectified": ("log_B", "log_D_l", "beta", "E"), "power": ("log_B", "beta", "E")}


class ScalingError(SynthllmError):
    """Input a scaling law cannot be fitted to (the message names the offending point)."""


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
