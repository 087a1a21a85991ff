"""Forecasts in original units: one-step, direct multi-output, and recursive.

A model trained by ``jlstm.train`` on windows from a ``jlstm.data.Pipeline``
maps ``(N, steps, D)`` windows to ``(N, horizon * K)`` outputs in model space.
This module runs it and maps the outputs back through the pipeline:

* ``one_step``: the forecast of every window of a split (``horizon`` 1: the
  next value; ``horizon`` > 1: a direct multi-output forecast of the next
  ``horizon`` values from one model call);
* ``direct``: the next ``horizon`` values after a given row;
* ``recursive``: ``n`` values after a given row by feeding forecasts back in as
  inputs, ``horizon`` values per model call; the calendar inputs of future rows
  come from their dates; covariates are unknown in the future, so with
  covariates only ``n <= horizon`` is possible.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .data import DataError, Pipeline, Series, Windows, future_dates
from .model import ModelConfig, apply
from .train import eval_buckets, pad_rows
from .types import ModelParams
from .validation import check_int

__all__ = ["direct", "one_step", "predict_windows", "recursive"]


def predict_windows(params: ModelParams, config: ModelConfig, x: np.ndarray) -> np.ndarray:
    """Model outputs ``(N, O)`` (the model's ``param_dtype``) for windows ``x`` ``(N, steps, D)``.

    Runs in chunks of the fixed ``jlstm.train.EVAL_BUCKETS`` sizes (the last one
    padded), so any ``N`` reuses at most one compiled program per bucket.
    """
    x = np.asarray(x, jnp.zeros((), config.param_dtype).dtype)  # padded on the host
    out = [
        np.asarray(apply(params, pad_rows(x[start:stop], size), config))[: stop - start]
        for start, stop, size in eval_buckets(len(x))
    ]
    return np.concatenate(out) if out else np.zeros((0, config.output_size), x.dtype)


def one_step(
    params: ModelParams, config: ModelConfig, pipeline: Pipeline, windows: Windows
) -> np.ndarray:
    """Forecasts ``(N, horizon, K)`` float64 in original units for every window of a split."""
    out = predict_windows(params, config, windows.x)
    return pipeline.to_original(out, windows.last, windows.scale)


def _dates_after(series: Series, origin: int, n: int) -> np.ndarray | None:
    """Dates of rows ``origin + 1 .. origin + n``: the series' own, then extrapolated."""
    if series.dates is None:
        return None
    known = series.dates[origin + 1 : origin + 1 + n]
    missing = n - len(known)
    if missing == 0:
        return known
    beyond = future_dates(series.dates, missing)
    if beyond is None:
        raise DataError(
            "forecasting past the end of the data needs regularly spaced dates for the "
            "calendar features, and these dates are irregular"
        )
    return np.concatenate([known.astype(beyond.dtype), beyond])


def _check_origin(series: Series, pipeline: Pipeline, origin: int | None) -> int:
    origin = len(series) - 1 if origin is None else int(origin)
    steps = pipeline.config.steps
    if not steps - 1 <= origin < len(series):
        raise DataError(
            f"a forecast origin must be a row in [{steps - 1}, {len(series) - 1}] (a full "
            f"window of {steps} rows must end there), got {origin}"
        )
    return origin


def direct(
    params: ModelParams,
    config: ModelConfig,
    pipeline: Pipeline,
    series: Series,
    *,
    origin: int | None = None,
) -> np.ndarray:
    """The ``(horizon, K)`` forecast after row ``origin`` (default: the last row)."""
    pipeline.check_series(series)
    origin = _check_origin(series, pipeline, origin)
    rows = slice(origin - pipeline.config.steps + 1, origin + 1)
    levels = pipeline.levels(series.values[rows])
    extras = pipeline.extras(series.covariates[rows], _rows(series.dates, rows))
    x, last, scale = pipeline.encode(levels[None], extras[None])
    return pipeline.to_original(predict_windows(params, config, x), last, scale)[0]


def _rows(dates: np.ndarray | None, rows: slice) -> np.ndarray | None:
    return None if dates is None else dates[rows]


def recursive(
    params: ModelParams,
    config: ModelConfig,
    pipeline: Pipeline,
    series: Series,
    n: int,
    *,
    origin: int | None = None,
) -> np.ndarray:
    """The ``(n, K)`` forecast after row ``origin`` (default: the last row), recursively.

    Each model call forecasts the next ``horizon`` rows from the last ``steps``
    rows, known or already forecast; the loop runs until ``n`` rows exist.

    Raises:
        DataError: ``n > horizon`` with covariates (their future is unknown), or
            calendar features with irregular dates past the end of the series.
    """
    pipeline.check_series(series)
    check_int("the number of steps to forecast", n, error=DataError)
    cfg = pipeline.config
    origin = _check_origin(series, pipeline, origin)
    if pipeline.covariate_names and n > cfg.horizon:
        raise DataError(
            f"the model uses covariates {list(pipeline.covariate_names)}, whose future values "
            f"are unknown: it can forecast at most horizon={cfg.horizon} steps; train with "
            f"--horizon {n} for a direct {n}-step forecast"
        )
    start = origin - cfg.steps + 1
    levels = list(pipeline.levels(series.values[start : origin + 1]))
    calls = -(-n // cfg.horizon)
    total = calls * cfg.horizon
    dates = None
    if cfg.calendar:  # only calendar features read the dates (check_series: they exist)
        dates = np.concatenate(
            [series.dates[start : origin + 1], _dates_after(series, origin, total)]
        )
    covs = series.covariates[start : origin + 1]
    for call in range(calls):
        lo = call * cfg.horizon
        window = np.asarray(levels[lo : lo + cfg.steps])
        extras = pipeline.extras(covs, _rows(dates, slice(lo, lo + cfg.steps)))
        x, last, scale = pipeline.encode(window[None], extras[None])
        levels.extend(pipeline.to_levels(predict_windows(params, config, x), last, scale)[0])
    forecast = np.asarray(levels[cfg.steps : cfg.steps + n])
    return pipeline.from_levels(forecast)
