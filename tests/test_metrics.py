"""jlstm.metrics: each metric on hand-computed values, the baselines' exact indices."""

import math

import numpy as np
import pytest

from jlstm import metrics
from jlstm.data import load_dataset

# Integer data: differences, squares and sums are exact; each side then rounds at most 6
# times (divisions, sqrt, the mean, the percent): 2 * 6 * u64 relative.
REL = 12 * np.finfo(np.float64).eps / 2


def test_metrics_on_hand_computed_values():
    y = np.array([100.0, 200.0, 400.0])
    p = np.array([110.0, 180.0, 400.0])
    # errors 10, -20, 0
    assert metrics.rmse(y, p) == pytest.approx(math.sqrt((100 + 400) / 3), rel=REL)
    assert metrics.mae(y, p) == pytest.approx(10.0, rel=REL)
    assert metrics.mape(y, p) == pytest.approx(100 * (0.1 + 0.1 + 0) / 3, rel=REL)
    want_smape = 100 * (20 / 210 + 40 / 380 + 0) / 3
    assert metrics.smape(y, p) == pytest.approx(want_smape, rel=REL)
    train = np.array([1.0, 3.0, 2.0, 6.0])  # lag-1 abs diffs 2, 1, 4 -> scale 7/3
    assert metrics.mase(y, p, train) == pytest.approx(10.0 / (7 / 3), rel=REL)
    # lag 2: |2-1|, |6-3| -> scale 2
    assert metrics.mase(y, p, train, period=2) == pytest.approx(5.0, rel=REL)
    assert set(metrics.evaluate(y, p, train)) == set(metrics.METRICS)


def test_metric_edge_cases():
    assert math.isnan(metrics.mape([0.0, 1.0], [1.0, 1.0]))
    assert metrics.smape([0.0, 2.0], [0.0, 2.0]) == 0.0  # 0/0 terms count as 0
    assert metrics.smape([1.0], [-1.0]) == pytest.approx(200.0)
    assert math.isnan(metrics.mase([1.0], [2.0], [5.0, 5.0, 5.0]))
    with pytest.raises(ValueError, match="one shape"):
        metrics.rmse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="more than period"):
        metrics.mase([1.0], [1.0], [1.0, 2.0], period=2)


def test_mase_scales_each_series_by_its_own_in_sample_error():
    train = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0]])  # scales 1 and 10
    y = np.zeros((4, 1, 2))
    p = np.zeros((4, 1, 2))
    p[..., 0] = 1.0
    p[..., 1] = 10.0
    assert metrics.mase(y, p, train) == pytest.approx(1.0, rel=REL)


def test_naive_and_seasonal_naive_indices():
    series = np.arange(30.0) * 10
    origin = np.array([12, 20])
    naive = metrics.naive_forecast(series, origin, horizon=3)
    np.testing.assert_array_equal(naive[..., 0], [[120, 120, 120], [200, 200, 200]])
    # Period 4 from origin 12: lead h takes row 12 + h - 4 * ceil(h / 4), always <= 12:
    # leads 1..6 -> rows 9, 10, 11, 12, 9, 10.
    seasonal = metrics.seasonal_naive_forecast(series, origin, horizon=6, period=4)
    np.testing.assert_array_equal(seasonal[0, :, 0], [90, 100, 110, 120, 90, 100])
    np.testing.assert_array_equal(seasonal[1, :, 0], [170, 180, 190, 200, 170, 180])
    with pytest.raises(ValueError, match="full season"):
        metrics.seasonal_naive_forecast(series, np.array([2]), horizon=1, period=4)


def test_seasonal_naive_matches_the_published_airline_anchor():
    # REFERENCE.md: one-step seasonal naive over months 96..143 has RMSE 41.85.
    y = load_dataset().values[:, 0]
    origin = np.arange(95, 143)
    pred = metrics.seasonal_naive_forecast(y, origin, 1, 12)[:, 0, 0]
    assert metrics.rmse(y[96:], pred) == pytest.approx(41.85, abs=0.005)


@pytest.mark.parametrize("name", ["rmse", "mae", "mape", "smape"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_forecasts_are_never_a_score(name, bad):
    """Issue 11 (5): smape([100, 200], [nan, nan]) was 0.0, a perfect score."""
    fn = getattr(metrics, name)
    assert math.isnan(fn([100.0, 200.0], [bad, bad]))
    assert math.isnan(fn([100.0, 200.0], [bad, 210.0]))
    assert math.isnan(fn([bad, 200.0], [100.0, 210.0]))


def test_non_finite_inputs_make_mase_and_evaluate_nan():
    train = [1.0, 2.0, 4.0]
    assert math.isnan(metrics.mase([100.0, 200.0], [np.nan, np.nan], train))
    assert math.isnan(metrics.mase([100.0], [101.0], [1.0, np.nan, 3.0]))
    scores = metrics.evaluate([100.0, 200.0], [np.nan, np.nan], train)
    assert all(math.isnan(v) for v in scores.values()), scores
    assert not metrics.all_finite(scores)
    # mape is NaN for an honest reason (a true 0): the forecasts are still usable.
    assert metrics.all_finite(metrics.evaluate([0.0, 2.0], [0.5, 2.0], train))
    # Errors whose square overflows give an infinite RMSE, which all_finite refuses too.
    assert metrics.rmse([1e300], [-1e300]) == math.inf
    assert not metrics.all_finite({"rmse": math.inf, "mae": 2e300})
