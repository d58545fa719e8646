"""Scaling-law fits of evaluation results against synthetic training tokens (paper §3, Eqs. 2-3).

Two laws, one curve per model:

- rectified (Eq. 2, after Lin et al. 2024): ``L(D) = B / (D_l + D**beta) + E``
- power     (Eq. 3):                        ``L(D) = B / D**beta + E``

``L`` is the fitted quantity (an error rate in percent, or an NLL) and ``D`` the number of
training tokens (``D = 0``: the untrained base model, defined for the rectified law only).

The modules, each using only those above it:

- `laws`: the two law forms, their optimiser parametrisation, prediction and asymptote distance
- `fit`: the fit's settings, the bounded multi-start fit of one curve and its degenerate cases
- `bootstrap`: bootstrap refits and percentile intervals of parameters and predictions
- `analysis`: one model's analysis (held-out split, every law, intervals, extrapolation), the
  stage's settings and its input points
- `tables`: the fits, held-out and extrapolation tables (CSV rows and Markdown)
- `figures`: Figs. 1, 2 and 7
- `stage`: the stage's entry point `run` (`synthllm scaling`, rules/12_scaling.smk)
"""
