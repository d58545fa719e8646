"""Cost of the scaling-law fits: one full multi-start fit and one bootstrap refit, per law
and loss, on a paper-like curve (the untrained model plus the 100K..7.4M-sample budgets at
608 tokens per sample, MATH error with 0.3 pp noise), and the resulting time of the stage
per model at a given bootstrap size.

    .venv/bin/python benchmarks/scaling_fit.py --bootstrap 200
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
from synthllm.settings import schema_defaults, stage_settings
from synthllm.stages.scaling.analysis import settings_from_config
from synthllm.stages.scaling.bootstrap import bootstrap_params
from synthllm.stages.scaling.fit import LOSSES, fit_law
from synthllm.stages.scaling.laws import LAWS, predict, theta_from_params


def default_fit():
    """The fit settings of config/schema.yaml's defaults, as the workflow validates the config
    and rules/12_scaling.smk hands key `scaling` to the stage."""
    config = schema_defaults(models={"train": [{"label": "m", "model": "m"}]})
    settings, _ = stage_settings(config, "scaling")
    return settings_from_config(settings).fit


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--bootstrap", type=int, default=200, help="refits per law and model")
    ap.add_argument("--repeats", type=int, default=3, help="full fits timed per setting")
    args = ap.parse_args()

    budgets = np.array([0, 100_000, 200_000, 400_000, 800_000, 1_600_000, 3_200_000])
    tokens = budgets * 608.0
    truth = theta_from_params("rectified", {"B": 5e6, "D_l": 7e4, "beta": 0.52, "E": 14.3})
    values = predict("rectified", truth, tokens) + np.random.default_rng(0).normal(
        0, 0.3, tokens.size
    )
    print(
        f"{'law':<10} {'loss':<14} {'starts':>6} {'fit s':>8} {'refit ms':>9} {'stage s/model':>14}"
    )
    per_model = 0.0
    default = default_fit()
    for law in LAWS:
        use = tokens > 0 if law == "power" else np.ones(tokens.size, bool)
        for loss in LOSSES:
            settings = replace(default, law=law, loss=loss)
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                fit = fit_law(tokens[use], values[use], settings)
            fit_s = (time.perf_counter() - t0) / args.repeats
            t0 = time.perf_counter()
            boot = bootstrap_params(fit, n=args.bootstrap, seed=0)
            refit_ms = (time.perf_counter() - t0) / args.bootstrap * 1e3
            stage = fit_s + refit_ms * args.bootstrap / 1e3
            starts = (
                len(settings.starts.beta)
                * len(settings.starts.e_fraction)
                * (len(settings.starts.bend_quantile) if law == "rectified" else 1)
            )
            print(
                f"{law:<10} {loss:<14} {starts:>6} {fit_s:>8.3f} {refit_ms:>9.2f} "
                f"{stage:>14.2f}   (failures {boot.failures})"
            )
            if loss == "huber_log":
                per_model += stage
    print(
        f"default settings (huber_log, both laws, {args.bootstrap} refits): "
        f"{per_model:.1f} s per model"
    )


if __name__ == "__main__":
    main()
