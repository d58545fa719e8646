"""Scaling-law fitter: Table 1 reproduction, parameter recovery with bootstrap coverage, the
rectified law against the power law on pre-learned data (Fig. 7), degenerate input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthllm.scaling import (LOSSES, AnalysisSettings, FitSettings, ScalingError,
                              analyse_model, bootstrap_params, fit_law, param_intervals,
                              predict, split_points, theta_from_params, tokens_to_margin)

# Table 1 of the paper (§5.4), predicted MATH error rate in percent at D tokens.
TABLE1_TOKENS = np.array([10e9, 50e9, 250e9, 300e9, 1e12, 4e12])
TABLE1_ERROR = {"3B": np.array([35.4, 25.3, 19.5, 19.1, 16.9, 15.6]),
                "8B": np.array([26.8, 21.4, 18.6, 18.4, 17.4, 16.8])}

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
    fit = fit_law(TABLE1_TOKENS, TABLE1_ERROR[model], FitSettings(law="rectified", loss=loss))
    assert fit.status == "ok", fit.flags
    assert np.max(np.abs(fit.predict(TABLE1_TOKENS) - TABLE1_ERROR[model])) < 0.1
    # the refit sits in the meaningful region: an asymptote below every point, beta in (0, 1)
    assert 0 < fit.params["E"] < TABLE1_ERROR[model].min()
    assert 0 < fit.params["beta"] < 1


def test_table1_8b_initial_error_ratio_matches_the_text():
    """§5.2 quotes B / D_l = 56.3 for 8B; a refit of Table 1 alone lands within 5 %."""
    fit = fit_law(TABLE1_TOKENS, TABLE1_ERROR["8B"], FitSettings(loss="least_squares"))
    assert fit.params["B"] / fit.params["D_l"] == pytest.approx(56.3, rel=0.05)


def test_bootstrap_intervals_cover_true_parameters():
    """Residual bootstrap on 15 noisy budgets: 95 % intervals cover the truth in >= 90 % of
    (trial, parameter) pairs. Gaussian noise, so the matching least-squares loss."""
    rng = np.random.default_rng(0)
    tokens = np.concatenate([[0.0], np.geomspace(6e7, 7e9, 15)])
    settings = FitSettings(loss="least_squares")
    covered = []
    for trial in range(12):
        values = true_curve(tokens) + rng.normal(0.0, 0.5, tokens.size)
        fit = fit_law(tokens, values, settings)
        boot = bootstrap_params(fit, n=50, method="residuals", seed=trial)
        assert boot.failures == 0
        intervals = param_intervals(fit, boot, confidence=0.95)
        covered += [lo <= TRUE[k] <= hi for k, (lo, hi) in intervals.items()]
    assert np.mean(covered) >= 0.9, covered


def test_points_bootstrap_gives_intervals_around_the_fit():
    rng = np.random.default_rng(1)
    tokens = np.concatenate([[0.0], np.geomspace(6e7, 7e9, 10)])
    fit = fit_law(tokens, true_curve(tokens) + rng.normal(0, 0.3, tokens.size),
                  FitSettings(loss="least_squares"))
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
    settings = AnalysisSettings(fit=FitSettings(loss=loss), bootstrap=40, held_out=1)
    result = analyse_model("3B", BUDGETS, TOKENS, values, settings)
    rect, power = result["laws"]["rectified"], result["laws"]["power"]
    # the same trained points for both (the power law cannot use D = 0)
    trained_fit = TOKENS[1:-1]
    rect_err = np.abs(predict("rectified", theta_from_params("rectified", rect["params"]),
                              trained_fit) - values[1:-1])
    power_err = np.abs(predict("power", theta_from_params("power", power["params"]),
                               trained_fit) - values[1:-1])
    assert np.sqrt(np.mean(rect_err ** 2)) < np.sqrt(np.mean(power_err ** 2))
    held_rect, held_power = rect["held_out"][0], power["held_out"][0]
    assert held_rect["inside"] is True and held_power["inside"] is False
    assert abs(held_power["predicted"] - held_power["measured"]) > 3 * abs(
        held_rect["predicted"] - held_rect["measured"])
    assert power["notes"] == ["base_excluded: the power law is undefined at D = 0"]


def test_tokens_to_margin_is_where_the_curve_meets_e_plus_margin():
    theta = theta_from_params("rectified", TRUE)
    d = tokens_to_margin("rectified", theta, 1.0)
    assert predict("rectified", theta, [d])[0] - TRUE["E"] == pytest.approx(1.0, rel=1e-9)
    # a margin larger than the untrained model's reducible error is met at D = 0
    assert tokens_to_margin("rectified", theta, TRUE["B"] / TRUE["D_l"] + 1) == 0.0
    theta_power = theta_from_params("power", {"B": 100.0, "beta": 0.5, "E": 1.0})
    assert tokens_to_margin("power", theta_power, 1.0) == pytest.approx(1e4)


def test_held_out_split_takes_the_largest_trained_budgets():
    masks = split_points(BUDGETS, TOKENS, true_curve(TOKENS), held_out=2, include_base=False)
    assert list(BUDGETS[masks["held_out"]]) == [3_200_000, 7_400_000]
    assert list(BUDGETS[masks["fit"]]) == [100_000, 200_000, 400_000, 800_000, 1_600_000]
    masks = split_points(BUDGETS, TOKENS, true_curve(TOKENS), held_out=0, include_base=True)
    assert masks["fit"].all()


# --- degenerate input ---

def test_fewer_points_than_parameters_is_flagged_not_fitted():
    fit = fit_law(TOKENS[:3], true_curve(TOKENS[:3]))
    assert fit.status == "no_fit" and fit.theta is None
    assert fit.flags == ["too_few_points: 3 points for 4 parameters"]
    with pytest.raises(ScalingError, match="no fitted curve"):
        fit.predict([1e9])
    with pytest.raises(ScalingError, match="no bootstrap"):
        bootstrap_params(fit)


def test_repeated_token_counts_do_not_count_as_points():
    tokens = np.array([1e8, 1e8, 1e9, 1e9, 1e10])
    fit = fit_law(tokens, np.array([50.0, 51, 40, 41, 30]))
    assert fit.status == "no_fit"
    assert fit.flags[0].startswith("too_few_points: 3 distinct token counts")


def test_exactly_as_many_points_as_parameters_fits_without_intervals():
    fit = fit_law(TOKENS[:4], true_curve(TOKENS[:4]), FitSettings(loss="least_squares"))
    assert fit.theta is not None
    assert "no_intervals: 4 points for 4 parameters leave no residual" in fit.flags
    with pytest.raises(ScalingError, match="more points than"):
        bootstrap_params(fit)


def test_flat_curve_is_flagged():
    fit = fit_law(TOKENS, np.full(TOKENS.size, 42.0))
    assert fit.status == "no_fit" and fit.flags[0].startswith("flat:")


def test_rising_curve_ends_on_a_bound_and_is_flagged():
    """A law that can only fall, fitted to a rising curve: never a silent 'ok'."""
    fit = fit_law(TOKENS, np.linspace(30, 60, TOKENS.size), FitSettings(loss="least_squares"))
    assert fit.status == "flagged"
    assert any(f.startswith("at_bound:") for f in fit.flags)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_value_names_the_point(bad):
    values = true_curve(TOKENS)
    values[3] = bad
    with pytest.raises(ScalingError, match=r"point 3 \(tokens=243200000.0"):
        fit_law(TOKENS, values)


def test_negative_tokens_and_non_positive_log_loss_values_are_errors():
    with pytest.raises(ScalingError, match="point 1 has negative tokens"):
        fit_law([0, -5, 10, 20, 30], [5, 4, 3, 2, 1])
    with pytest.raises(ScalingError, match="point 4 .* huber_log loss needs positive values"):
        fit_law([0, 5, 10, 20, 30], [5, 4, 3, 2, 0])


def test_power_law_refuses_the_untrained_point():
    with pytest.raises(ScalingError, match="power law cannot use D = 0"):
        fit_law(TOKENS, true_curve(TOKENS), FitSettings(law="power"))


def test_bad_settings_are_errors():
    with pytest.raises(ScalingError, match="law must be one of"):
        FitSettings(law="chinchilla")
    with pytest.raises(ScalingError, match="loss must be one of"):
        FitSettings(loss="l1")
    with pytest.raises(ScalingError, match="beta_bounds"):
        FitSettings(beta_bounds=(0.0, 1.0))


def test_settings_travel_with_the_result():
    settings = FitSettings(loss="least_squares", huber_delta=0.01, beta_bounds=(0.05, 1.5))
    fit = fit_law(TOKENS, true_curve(TOKENS), settings)
    saved = fit.to_dict()
    assert FitSettings.from_dict(saved["settings"]) == settings
    assert saved["n_points"] == TOKENS.size and saved["status"] == fit.status
