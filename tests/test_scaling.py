"""Scaling-law fitter: Table 1 reproduction, parameter recovery with bootstrap coverage, the
rectified law against the power law on pre-learned data (Fig. 7), degenerate input."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from synthllm.settings import schema_defaults, stage_settings
from synthllm.stages.scaling.analysis import (
    analyse_model,
    load_points,
    settings_from_config,
    split_points,
)
from synthllm.stages.scaling.bootstrap import bootstrap_params, param_intervals
from synthllm.stages.scaling.figures import FIGURES
from synthllm.stages.scaling.fit import LOSSES, FitSettings, fit_law
from synthllm.stages.scaling.laws import ScalingError, predict, theta_from_params, tokens_to_margin
from synthllm.stages.scaling.tables import TABLES

ROOT = Path(__file__).resolve().parents[1]


# the scaling stage's settings with the schema's defaults (rules/12_scaling.smk), the base
# point fitted as in the embedded default (config/default.yaml; the schema's default, the
# paper's fit, leaves it out: test_the_base_point_is_shown_but_not_fitted_by_default)
SCHEMA_SCALING, _ = stage_settings(
    schema_defaults(models={"train": [{"label": "m", "model": "m"}]}), "scaling"
)
SCALING = {**SCHEMA_SCALING, "include_base": True}
DEFAULT = settings_from_config(SCALING)


def fit_settings(**changes) -> FitSettings:
    """The default fit settings with some changed."""
    return replace(DEFAULT.fit, **changes)


# Table 1 of the paper (§5.4), predicted MATH error rate in percent at D tokens.
TABLE1_TOKENS = np.array([10e9, 50e9, 250e9, 300e9, 1e12, 4e12])
TABLE1_ERROR = {
    "3B": np.array([35.4, 25.3, 19.5, 19.1, 16.9, 15.6]),
    "8B": np.array([26.8, 21.4, 18.6, 18.4, 17.4, 16.8]),
}

# A 3B-like curve: the paper's budgets (100K..7.4M samples at ~608 tokens per sample) plus the
# untrained model, whose error B / D_l + E is the "pre-learned" offset.
TRUE = {"B": 5.0e6, "D_l": 7.0e4, "beta": 0.52, "E": 14.3}
BUDGETS = np.array([0, 100_000, 200_000, 400_000, 800_000, 1_600_000, 3_200_000, 7_400_000])
TOKENS = BUDGETS * 608.0


def true_curve(tokens):
    return predict("rectified", theta_from_params("rectified", TRUE), tokens)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model", sorted(TABLE1_ERROR))
def test_rectified_law_reproduces_table1(model, loss):
    fit = fit_law(TABLE1_TOKENS, TABLE1_ERROR[model], fit_settings(law="rectified", loss=loss))
    assert fit.status == "ok", fit.flags
    assert np.max(np.abs(fit.predict(TABLE1_TOKENS) - TABLE1_ERROR[model])) < 0.1
    # the refit sits in the meaningful region: an asymptote below every point, beta in (0, 1)
    assert 0 < fit.params["E"] < TABLE1_ERROR[model].min()
    assert 0 < fit.params["beta"] < 1


def test_table1_8b_initial_error_ratio_matches_the_text():
    """§5.2 quotes B / D_l = 56.3 for 8B; a refit of Table 1 alone lands within 5 %."""
    fit = fit_law(TABLE1_TOKENS, TABLE1_ERROR["8B"], fit_settings(loss="least_squares"))
    assert fit.params["B"] / fit.params["D_l"] == pytest.approx(56.3, rel=0.05)


def test_bootstrap_intervals_cover_true_parameters():
    """Residual bootstrap on 15 noisy budgets: 95 % intervals cover the truth in >= 90 % of
    (trial, parameter) pairs. Gaussian noise, so the matching least-squares loss."""
    rng = np.random.default_rng(0)
    tokens = np.concatenate([[0.0], np.geomspace(6e7, 7e9, 15)])
    settings = fit_settings(loss="least_squares")
    covered = []
    for trial in range(10):
        values = true_curve(tokens) + rng.normal(0.0, 0.5, tokens.size)
        fit = fit_law(tokens, values, settings)
        boot = bootstrap_params(fit, n=40, method="residuals", seed=trial)
        assert boot.failures == 0
        intervals = param_intervals(fit, boot, confidence=0.95)
        covered += [lo <= TRUE[k] <= hi for k, (lo, hi) in intervals.items()]
    assert np.mean(covered) >= 0.9, covered


def test_points_bootstrap_gives_intervals_around_the_fit():
    rng = np.random.default_rng(1)
    tokens = np.concatenate([[0.0], np.geomspace(6e7, 7e9, 10)])
    fit = fit_law(
        tokens,
        true_curve(tokens) + rng.normal(0, 0.3, tokens.size),
        fit_settings(loss="least_squares"),
    )
    boot = bootstrap_params(fit, n=30, method="points", seed=0)
    intervals = param_intervals(fit, boot, confidence=0.9)
    assert boot.thetas.shape == (30 - boot.failures, 4) and boot.failures <= 3
    for name, (lo, hi) in intervals.items():
        assert lo < hi, name


@pytest.mark.parametrize("loss", LOSSES)
def test_power_law_is_worse_than_rectified_with_a_pre_learned_offset(loss):
    """Fig. 7: with the untrained model's offset in the data, the power law fits worse and
    mispredicts the held-out largest budget, the rectified law predicts it."""
    values = true_curve(TOKENS) + np.random.default_rng(2).normal(0, 0.3, TOKENS.size)
    settings = replace(DEFAULT, fit=fit_settings(loss=loss), bootstrap=30, held_out=1)
    result = analyse_model("3B", BUDGETS, TOKENS, values, settings)
    rect, power = result["laws"]["rectified"], result["laws"]["power"]
    # the same trained points for both (the power law cannot use D = 0)
    trained_fit = TOKENS[1:-1]
    rect_err = np.abs(
        predict("rectified", theta_from_params("rectified", rect["params"]), trained_fit)
        - values[1:-1]
    )
    power_err = np.abs(
        predict("power", theta_from_params("power", power["params"]), trained_fit) - values[1:-1]
    )
    assert np.sqrt(np.mean(rect_err**2)) < np.sqrt(np.mean(power_err**2))
    held_rect, held_power = rect["held_out"][0], power["held_out"][0]
    assert held_rect["inside"] is True and held_power["inside"] is False
    assert abs(held_power["predicted"] - held_power["measured"]) > 3 * abs(
        held_rect["predicted"] - held_rect["measured"]
    )
    assert power["notes"] == ["base_excluded: the power law is undefined at D = 0"]


def test_the_paper_configs_peak_margin_reproduces_the_papers_peaks_from_table_1():
    """§5.4: the 8B model peaks at about 1T tokens, the 3B model at about 4T: the refit of
    Table 1 reaches the paper config's asymptote margin within a factor of 1.3 of both."""
    margin = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())["scaling"][
        "asymptote_margin"
    ]
    for model, paper_peak in (("8B", 1e12), ("3B", 4e12)):
        fit = fit_law(TABLE1_TOKENS, TABLE1_ERROR[model], fit_settings(law="rectified"))
        peak = tokens_to_margin("rectified", fit.theta, margin)
        assert 1 / 1.3 <= peak / paper_peak <= 1.3, (model, peak)


def test_the_base_point_is_shown_but_not_fitted_by_default():
    """The schema's default (the paper's fit, config/paper.yaml): only trained budgets are
    fitted; the untrained model stays among the points, as a reference."""
    settings = settings_from_config(SCHEMA_SCALING)
    assert SCHEMA_SCALING["include_base"] is False
    values = true_curve(TOKENS)
    result = analyse_model("m", BUDGETS, TOKENS, values, settings)
    roles = {p["budget"]: p["role"] for p in result["points"]}
    assert roles[0] == "excluded" and roles[7_400_000] == "held_out"
    assert {roles[b] for b in BUDGETS[1:-1]} == {"fit"}
    assert (
        "base_excluded: the power law is undefined at D = 0" not in result["laws"]["power"]["notes"]
    )


def test_tokens_to_margin_is_where_the_curve_meets_e_plus_margin():
    theta = theta_from_params("rectified", TRUE)
    d = tokens_to_margin("rectified", theta, 1.0)
    assert predict("rectified", theta, [d])[0] - TRUE["E"] == pytest.approx(1.0, rel=1e-9)
    # a margin larger than the untrained model's reducible error is met at D = 0
    assert tokens_to_margin("rectified", theta, TRUE["B"] / TRUE["D_l"] + 1) == 0.0
    theta_power = theta_from_params("power", {"B": 100.0, "beta": 0.5, "E": 1.0})
    assert tokens_to_margin("power", theta_power, 1.0) == pytest.approx(1e4)
    # an exponent near zero puts the margin out of reach of any token count
    theta_slow = theta_from_params("power", {"B": 1e6, "beta": 0.01, "E": 1.0})
    assert tokens_to_margin("power", theta_slow, 1.0) == math.inf


def test_held_out_split_takes_the_largest_trained_budgets():
    masks = split_points(BUDGETS, TOKENS, true_curve(TOKENS), held_out=2, include_base=False)
    assert list(BUDGETS[masks["held_out"]]) == [3_200_000, 7_400_000]
    assert list(BUDGETS[masks["fit"]]) == [100_000, 200_000, 400_000, 800_000, 1_600_000]
    masks = split_points(BUDGETS, TOKENS, true_curve(TOKENS), held_out=0, include_base=True)
    assert masks["fit"].all()


# --- degenerate input ---


def test_fewer_points_than_parameters_is_flagged_not_fitted():
    fit = fit_law(TOKENS[:3], true_curve(TOKENS[:3]), DEFAULT.fit)
    assert fit.status == "no_fit" and fit.theta is None
    assert fit.flags == ["too_few_points: 3 points for 4 parameters"]
    with pytest.raises(ScalingError, match="no fitted curve"):
        fit.predict([1e9])
    with pytest.raises(ScalingError, match="no bootstrap"):
        bootstrap_params(fit)


def test_repeated_token_counts_do_not_count_as_points():
    tokens = np.array([1e8, 1e8, 1e9, 1e9, 1e10])
    fit = fit_law(tokens, np.array([50.0, 51, 40, 41, 30]), DEFAULT.fit)
    assert fit.status == "no_fit"
    assert fit.flags[0].startswith("too_few_points: 3 distinct token counts")


def test_exactly_as_many_points_as_parameters_fits_without_intervals():
    fit = fit_law(TOKENS[:4], true_curve(TOKENS[:4]), fit_settings(loss="least_squares"))
    assert fit.theta is not None
    assert "no_intervals: 4 points for 4 parameters leave no residual" in fit.flags
    with pytest.raises(ScalingError, match="more points than"):
        bootstrap_params(fit)


def test_flat_curve_is_flagged():
    fit = fit_law(TOKENS, np.full(TOKENS.size, 42.0), DEFAULT.fit)
    assert fit.status == "no_fit" and fit.flags[0].startswith("flat:")


def test_noise_without_trend_is_flagged():
    values = 50 + np.random.default_rng(0).normal(0, 0.5, TOKENS.size)
    fit = fit_law(TOKENS, values, fit_settings(loss="least_squares"))
    assert fit.status == "flagged"
    assert any(f.startswith("no_trend: the curve falls by") for f in fit.flags), fit.flags


def test_rising_curve_ends_on_a_bound_and_is_flagged():
    """A law that can only fall, fitted to a rising curve: never a silent 'ok'."""
    fit = fit_law(TOKENS, np.linspace(30, 60, TOKENS.size), fit_settings(loss="least_squares"))
    assert fit.status == "flagged"
    assert any(f.startswith("at_bound:") for f in fit.flags)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_value_names_the_point(bad):
    values = true_curve(TOKENS)
    values[3] = bad
    with pytest.raises(ScalingError, match=r"point 3 \(tokens=243200000.0"):
        fit_law(TOKENS, values, DEFAULT.fit)


def test_negative_tokens_and_non_positive_log_loss_values_are_errors():
    with pytest.raises(ScalingError, match="point 1 has negative tokens"):
        fit_law([0, -5, 10, 20, 30], [5, 4, 3, 2, 1], DEFAULT.fit)
    with pytest.raises(ScalingError, match="point 4 .* huber_log loss needs positive values"):
        fit_law([0, 5, 10, 20, 30], [5, 4, 3, 2, 0], DEFAULT.fit)


def test_power_law_refuses_the_untrained_point():
    with pytest.raises(ScalingError, match="power law cannot use D = 0"):
        fit_law(TOKENS, true_curve(TOKENS), fit_settings(law="power"))


def test_bad_settings_are_errors():
    with pytest.raises(ScalingError, match="law must be one of"):
        fit_settings(law="chinchilla")
    with pytest.raises(ScalingError, match="loss must be one of"):
        fit_settings(loss="l1")
    with pytest.raises(ScalingError, match="beta_bounds"):
        fit_settings(beta_bounds=(0.0, 1.0))


def test_settings_travel_with_the_result():
    settings = fit_settings(loss="least_squares", huber_delta=0.01, beta_bounds=(0.05, 1.5))
    fit = fit_law(TOKENS, true_curve(TOKENS), settings)
    saved = fit.to_dict()
    assert FitSettings.from_dict(saved["settings"]) == settings
    assert saved["n_points"] == TOKENS.size and saved["status"] == fit.status


# --- the stage: summary.parquet in, fits, tables, figures and the report out ---

OUTPUTS = (
    ["fits.json", "counts.json"]
    + [f"{t}.{e}" for t in TABLES for e in ("csv", "md")]
    + [f"{f}.{e}" for f in FIGURES for e in ("png", "pdf")]
)


def write_summary(
    path: Path,
    curves: dict[str, dict],
    budgets,
    tokens_per_sample=608.0,
    noise=0.3,
    seed=0,
    outside: dict[str, float] | None = None,
) -> None:
    """An evaluation summary in the contract's long format, MATH accuracy from known laws
    (plus an NLL row per point, so the selection by metric and benchmark is exercised), and
    the MATH accuracy of each `outside` model (config models.outside: budget 0, D = 0)."""
    rng = np.random.default_rng(seed)
    rows = [
        {"model": m, "kind": "outside", "budget": 0, "tokens": 0, "benchmark": "math"}
        | {"metric": "accuracy", "value": value}
        for m, value in (outside or {}).items()
    ]
    for model, params in curves.items():
        tokens = np.asarray(budgets) * tokens_per_sample
        error = predict("rectified", theta_from_params("rectified", params), tokens)
        error = error + rng.normal(0, noise, tokens.size)
        for b, d, e in zip(budgets, tokens, error):
            kind = "base" if b == 0 else "trained"
            common = {"model": model, "kind": kind, "budget": int(b), "tokens": int(d)}
            rows.append({**common, "benchmark": "math", "metric": "accuracy", "value": 100 - e})
            rows.append({**common, "benchmark": "average", "metric": "nll", "value": e / 50})
    pl.DataFrame(
        rows,
        schema={
            "model": pl.String,
            "kind": pl.String,
            "budget": pl.Int64,
            "tokens": pl.Int64,
            "benchmark": pl.String,
            "metric": pl.String,
            "value": pl.Float64,
        },
    ).write_parquet(path)


def synthllm_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synthllm", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


OUTPUT_NAMES = {
    "fits": "fits.json",
    "fits_table": "fits.csv",
    "fits_md": "fits.md",
    "heldout_table": "heldout.csv",
    "heldout_md": "heldout.md",
    "extrapolation_table": "extrapolation.csv",
    "extrapolation_md": "extrapolation.md",
    "fig1": "fig1.png",
    "fig1_pdf": "fig1.pdf",
    "fig2": "fig2.png",
    "fig2_pdf": "fig2.pdf",
    "fig7": "fig7.png",
    "fig7_pdf": "fig7.pdf",
    "counts": "counts.json",
}


def scaling_cli(summary: Path, out: Path, settings: dict | str) -> subprocess.CompletedProcess:
    """`synthllm scaling` as rules/12_scaling.smk runs it."""
    return synthllm_cli(
        "scaling",
        "--inputs",
        json.dumps({"summary": str(summary)}),
        "--outputs",
        json.dumps({name: str(out / file) for name, file in OUTPUT_NAMES.items()}),
        "--settings",
        settings if isinstance(settings, str) else json.dumps(settings),
        "--execution",
        json.dumps({"threads": 1}),
    )


def test_cli_fits_two_models_and_writes_every_output(tmp_path):
    summary = tmp_path / "summary.parquet"
    eight_b = {"B": 1.9e6, "D_l": 3.4e4, "beta": 0.515, "E": 16.2}
    # an outside model (evaluated as it is) is in the summary and in no fit
    write_summary(summary, {"3B": TRUE, "8B": eight_b}, BUDGETS, outside={"8B-Instruct": 48.9})
    settings = {
        **copy.deepcopy(SCALING),
        "metric": "accuracy",
        "benchmark": "math",
        "transform": "error",
        "loss": "least_squares",
        "bootstrap": {**SCALING["bootstrap"], "n": 20},
        "asymptote_margin": 1.0,
        "extrapolate_tokens": [1e10, 1e12],
    }
    out = tmp_path / "scaling"
    proc = scaling_cli(summary, out, settings)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    counts = json.loads((out / "counts.json").read_text())
    assert (counts["in"], counts["out"], counts["dropped"]) == (16, 14, {"held_out": 2})
    assert counts["fits"]["3B/rectified"] == "ok"
    record = json.loads((out / "fits.json").read_text())
    assert record["config"] == settings and record["settings"]["bootstrap"] == 20
    fits = pl.read_csv(out / "fits.csv")
    rect = fits.filter(pl.col("law") == "rectified").sort("model")
    assert rect["model"].to_list() == ["3B", "8B"]
    # the parameters come back near the truth, inside their intervals
    for row, true in zip(rect.iter_rows(named=True), (TRUE, eight_b)):
        assert row["beta_low"] <= true["beta"] <= row["beta_high"]
    held = pl.read_csv(out / "heldout.csv").filter(pl.col("law") == "rectified")
    assert held["budget"].to_list() == [7_400_000, 7_400_000]
    # noise sd 0.3 pp; the 4.5B-token point is an extrapolation of 2.3x in tokens
    assert (held["predicted"] - held["measured"]).abs().max() < 1.5
    assert ((held["low"] < held["predicted"]) & (held["predicted"] < held["high"])).all()
    ext = pl.read_csv(out / "extrapolation.csv")
    # accuracy is 100 - error, interval bounds swap
    assert np.allclose(ext["metric_predicted"], 100 - ext["predicted"])
    assert np.allclose(ext["metric_low"], 100 - ext["high"])
    assert "| 3B | rectified |" in (out / "extrapolation.md").read_text()
    for fig in FIGURES:
        assert (out / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"{fig}.pdf").read_bytes()[:4] == b"%PDF"


def test_cli_bad_selection_names_the_keys(tmp_path):
    summary = tmp_path / "summary.parquet"
    write_summary(summary, {"3B": TRUE}, BUDGETS)
    settings = {**SCALING, "metric": "accuracy", "benchmark": "aime"}
    proc = scaling_cli(summary, tmp_path / "out", settings)
    assert proc.returncode == 2
    assert "no rows with metric 'accuracy' and benchmark 'aime'" in proc.stderr
    assert "scaling.metric, scaling.benchmark" in proc.stderr


@pytest.mark.parametrize(
    "settings, message",
    [
        ("{not json", "--settings: not JSON"),
        ({k: v for k, v in SCALING.items() if k != "metric"}, "--settings: no key 'metric'"),
    ],
)
def test_cli_malformed_or_incomplete_settings_is_one_line_and_exit_2(tmp_path, settings, message):
    summary = tmp_path / "summary.parquet"
    write_summary(summary, {"3B": TRUE}, BUDGETS)
    proc = scaling_cli(summary, tmp_path / "out", settings)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthllm scaling: error:"), proc.stderr
    assert message in lines[0]


def test_duplicate_points_are_an_error(tmp_path):
    summary = tmp_path / "summary.parquet"
    write_summary(summary, {"3B": TRUE}, np.concatenate([BUDGETS, BUDGETS[-1:]]))
    with pytest.raises(
        ScalingError,
        match=r"several accuracy/math rows for \(model, budget\) \[\('3B', 7400000\)\]",
    ):
        load_points(summary, "accuracy", "math", "error")


def test_outside_models_are_no_points_of_any_law(tmp_path):
    summary = tmp_path / "summary.parquet"
    write_summary(summary, {"3B": TRUE}, BUDGETS, outside={"Llama-3.2-3B-Instruct": 47.5})
    points = load_points(summary, "accuracy", "math", "error")
    assert list(points) == ["3B"] and points["3B"][0].tolist() == BUDGETS.tolist()
    only_outside = tmp_path / "outside.parquet"
    write_summary(only_outside, {}, BUDGETS, outside={"Llama-3.2-3B-Instruct": 47.5})
    with pytest.raises(ScalingError, match="no rows with metric 'accuracy'"):
        load_points(only_outside, "accuracy", "math", "error")


def test_snakemake_stage_with_few_budgets_completes_flagged_and_reports(tmp_path):
    """The test config's shape (one model, base + 2 budgets) through real Snakemake: the fits
    are refused with a flag, the figures show points only, and --report collects it all."""
    results = tmp_path / "results"
    (results / "eval").mkdir(parents=True)
    write_summary(
        results / "eval" / "summary.parquet",
        {"SmolLM2-135M": TRUE},
        [0, 20, 40],
        tokens_per_sample=300.0,
    )
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"results": str(results)}))
    targets = [str(results / "scaling" / n) for n in OUTPUTS]
    base = [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "--cores",
        "1",
        "--configfile",
        "config/test.yaml",
        str(override),
        "--allowed-rules",
        "scaling",
    ]
    proc = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = json.loads((results / "scaling" / "counts.json").read_text())
    assert counts["fits"] == {"SmolLM2-135M/rectified": "no_fit", "SmolLM2-135M/power": "no_fit"}
    fits_md = (results / "scaling" / "fits.md").read_text()
    assert "no_fit (too_few_points: 2 points for 4 parameters)" in fits_md
    report = tmp_path / "report.html"
    proc = subprocess.run(
        base + ["--report", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report.stat().st_size > 10_000
