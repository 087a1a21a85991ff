"""jlstm.forecast: one-step, direct and recursive forecasts, checked with a model of known output.

A model whose head kernel is zero outputs its head bias ``c`` for any input. With
``delta`` features every forecast is then "last value + c" in scaled units, so
each forecast has an exact value to compare against.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm
from jlstm.data import DataError, FeatureConfig, Pipeline, Series
from jlstm.forecast import direct, one_step, predict_windows, recursive

from .conftest import count_traces

# The model's output is its float32 head bias, exactly (zero kernel); the pipeline turns it
# into forecasts with float64 affine maps, a few roundings per step over at most 5 recursive
# steps: 64 ulps of float64 holds every case with room (the expected values use the same
# float32 bias, so no float32 rounding enters the comparison).
RTOL = 64 * np.finfo(np.float64).eps


def _constant_model(pipeline, bias):
    config = jlstm.ModelConfig(
        input_size=pipeline.input_size, layer_sizes=(4,), output_size=pipeline.output_size
    )
    params = jlstm.init_params(jax.random.key(0), config)
    head = jlstm.DenseParams(jnp.zeros_like(params.head.kernel), jnp.asarray(bias, jnp.float32))
    return config, params._replace(head=head)


def _series(n=40, covariates=False):
    rng = np.random.default_rng(0)
    values = 100 + np.cumsum(rng.normal(0, 3, n))
    dates = np.arange(np.datetime64("2000-01"), np.datetime64("2000-01") + n)
    cov = rng.normal(size=(n, 1)) if covariates else np.zeros((n, 0))
    names = ("promo",) if covariates else ()
    return Series(values, cov, dates, ("y",), names, "test")


def test_recursive_and_one_step_with_a_known_model():
    series = _series()
    cfg = FeatureConfig(steps=3, delta=True, calendar=("month",), val_size=8, test_size=8)
    pipeline = Pipeline.fit(series, cfg)
    config, params = _constant_model(pipeline, [0.25])
    step = 0.25 * pipeline.target_scaler.scale[0]  # c in original units
    got = recursive(params, config, pipeline, series, 5)
    np.testing.assert_allclose(got[:, 0], series.values[-1, 0] + step * np.arange(1, 6), rtol=RTOL)
    # From an earlier origin, and one-step over a whole split.
    got = recursive(params, config, pipeline, series, 2, origin=10)
    np.testing.assert_allclose(got[:, 0], series.values[10, 0] + step * np.array([1, 2]), rtol=RTOL)
    test = pipeline.windows(series)["test"]
    np.testing.assert_allclose(
        one_step(params, config, pipeline, test)[:, 0, 0],
        series.values[test.origin, 0] + step,
        rtol=RTOL,
    )


def test_direct_head_and_recursion_in_blocks():
    series = _series()
    cfg = FeatureConfig(steps=3, horizon=2, delta=True, val_size=8, test_size=8)
    pipeline = Pipeline.fit(series, cfg)
    config, params = _constant_model(pipeline, [0.1, 0.3])
    scale = pipeline.target_scaler.scale[0]
    last = series.values[-1, 0]
    c1, c3 = (float(np.float32(c)) for c in (0.1, 0.3))  # the bias the model holds
    np.testing.assert_allclose(
        direct(params, config, pipeline, series)[:, 0],
        last + scale * np.array([c1, c3]),
        rtol=RTOL,
    )
    # Blocks of 2, each relative to the last value of the block before: +0.1, +0.3, then
    # +0.3+0.1, +0.3+0.3, then +0.6+0.1.
    want = last + scale * np.array([c1, c3, c3 + c1, c3 + c3, c3 + c3 + c1])
    np.testing.assert_allclose(
        recursive(params, config, pipeline, series, 5)[:, 0], want, rtol=RTOL
    )


def test_recursive_past_irregular_dates_without_calendar_features():
    regular = _series()
    gaps = np.random.default_rng(1).integers(1, 5, len(regular)).astype("timedelta64[D]")
    dates = np.datetime64("2000-01-01") + np.cumsum(gaps)
    series = Series(regular.values, regular.covariates, dates, ("y",), (), "test")
    pipeline = Pipeline.fit(series, FeatureConfig(steps=3, delta=True, val_size=8, test_size=8))
    config, params = _constant_model(pipeline, [0.25])
    step = 0.25 * pipeline.target_scaler.scale[0]
    got = recursive(params, config, pipeline, series, 3)
    np.testing.assert_allclose(got[:, 0], series.values[-1, 0] + step * np.arange(1, 4), rtol=RTOL)
    # Calendar features still need the future dates, which irregular dates do not give.
    cfg = FeatureConfig(steps=3, calendar=("weekday",), val_size=8, test_size=8)
    pipeline = Pipeline.fit(series, cfg)
    config, params = _constant_model(pipeline, [0.0])
    with pytest.raises(DataError, match="irregular"):
        recursive(params, config, pipeline, series, 3)


def test_forecast_limits():
    series = _series(covariates=True)
    pipeline = Pipeline.fit(series, FeatureConfig(steps=3, val_size=8, test_size=8))
    config, params = _constant_model(pipeline, [0.0])
    assert recursive(params, config, pipeline, series, 1).shape == (1, 1)
    with pytest.raises(DataError, match="future values are unknown"):
        recursive(params, config, pipeline, series, 2)
    with pytest.raises(DataError, match="origin"):
        recursive(params, config, pipeline, series, 1, origin=1)
    with pytest.raises(DataError, match="positive integer"):
        recursive(params, config, pipeline, series, 0)
    # Any number of windows goes through one padded program.
    x = np.zeros((5, 3, pipeline.input_size), np.float32)
    assert predict_windows(params, config, x).shape == (5, 1)


def test_any_number_of_windows_compiles_once_per_bucket():
    series = _series()
    pipeline = Pipeline.fit(series, FeatureConfig(steps=3, val_size=8, test_size=8))
    config, params = _constant_model(pipeline, [0.5])
    with count_traces() as traces:
        for n in (5, 6, 7, 8):  # one bucket of 8 rows
            x = np.zeros((n, 3, pipeline.input_size), np.float32)
            out = predict_windows(params, config, x)
            np.testing.assert_array_equal(out, np.full((n, 1), 0.5, np.float32))
    assert traces("apply") <= 1
