"""Forecast accuracy metrics and the naive baselines they are compared against.

All metrics take arrays in the series' original units; any shape works as long
as ``y_true`` and ``y_pred`` match (they are compared elementwise and averaged
over every element).

* ``rmse``: root mean squared error.
* ``mae``: mean absolute error.
* ``mape``: mean absolute percentage error, ``100 * mean(|e| / |y|)``; ``nan`` if
  any true value is 0 (undefined).
* ``smape``: symmetric MAPE, ``100 * mean(2 |e| / (|y| + |yhat|))`` (a term with
  ``y = yhat = 0`` counts as 0); between 0 and 200.
* ``mase``: mean absolute scaled error (Hyndman & Koehler 2006), the MAE divided by
  the in-sample MAE of the seasonal naive forecast with period ``m`` on the
  training series, ``mean(|y_t - y_{t-m}|)``; below 1 beats that in-sample
  baseline. ``nan`` if the training series is constant at lag ``m``.

Non-finite input is never a score: a NaN or infinite forecast (or truth) makes
every metric NaN (``smape`` and ``mape`` included), so a diverged model can not
pass for a perfect one; ``all_finite`` says whether a metrics dict is usable.

Baselines forecast the targets of windows that end at row ``origin`` (the
last observed row) from the series itself:

* persistence (naive): every lead gets ``y[origin]``;
* seasonal naive with period ``m``: lead ``h`` gets the value one season (or whole
  seasons) before its target, ``y[t - m * ceil(h / m)]`` with ``t = origin + h``,
  which is always an observed row ``<= origin``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "METRICS",
    "all_finite",
    "evaluate",
    "mae",
    "mape",
    "mase",
    "naive_forecast",
    "rmse",
    "seasonal_naive_forecast",
    "smape",
]


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have one shape")
    if y_true.size == 0:
        raise ValueError("metrics need at least one value")
    return y_true, y_pred


def _nan_if_not_finite(value: float, *arrays: np.ndarray) -> float:
    """``value``, or NaN if any input is NaN or infinite (never a finite score from them)."""
    return value if all(np.isfinite(a).all() for a in arrays) else float("nan")


def rmse(y_true, y_pred) -> float:
    """Root mean squared error."""
    y_true, y_pred = _pair(y_true, y_pred)
    with np.errstate(invalid="ignore", over="ignore"):
        value = float(np.sqrt(np.mean((y_true - y_pred) ** 2)))
    return _nan_if_not_finite(value, y_true, y_pred)


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    y_true, y_pred = _pair(y_true, y_pred)
    with np.errstate(invalid="ignore", over="ignore"):
        value = float(np.mean(np.abs(y_true - y_pred)))
    return _nan_if_not_finite(value, y_true, y_pred)


def mape(y_true, y_pred) -> float:
    """Mean absolute percentage error in percent; ``nan`` if any true value is 0."""
    y_true, y_pred = _pair(y_true, y_pred)
    if np.any(y_true == 0):
        return float("nan")
    with np.errstate(invalid="ignore", over="ignore"):
        value = float(100.0 * np.mean(np.abs((y_true - y_pred) / y_true)))
    return _nan_if_not_finite(value, y_true, y_pred)


def smape(y_true, y_pred) -> float:
    """Symmetric mean absolute percentage error in percent (0..200); NaN if any input is
    NaN or infinite (a ``y = yhat = 0`` term counts as 0)."""
    y_true, y_pred = _pair(y_true, y_pred)
    with np.errstate(invalid="ignore", over="ignore"):
        denom = np.abs(y_true) + np.abs(y_pred)
        # Only exact 0/0 terms are 0; a NaN denominator stays NaN (``denom > 0`` would zero it).
        terms = np.divide(
            2.0 * np.abs(y_true - y_pred), denom, out=np.zeros_like(denom), where=denom != 0
        )
        value = float(100.0 * np.mean(terms))
    return _nan_if_not_finite(value, y_true, y_pred)


def mase(y_true, y_pred, y_train, period: int = 1) -> float:
    """Mean absolute scaled error.

    Args:
        y_true, y_pred: forecasts and truths, same shape.
        y_train: ``(T,)`` training series (original units) for the scale, or ``(T, K)``
            for ``K`` series: then the last axis of ``y_true`` indexes the series and
            each error is scaled by its own series' in-sample MAE.
        period: seasonal period ``m`` of the in-sample naive forecast (1: persistence).
    """
    y_true, y_pred = _pair(y_true, y_pred)
    y_train = np.asarray(y_train, np.float64)
    if period < 1 or len(y_train) <= period:
        raise ValueError(
            f"MASE needs more than period={period} training values, got {len(y_train)}"
        )
    scale = np.mean(np.abs(y_train[period:] - y_train[:-period]), axis=0)
    if y_train.ndim == 2 and y_true.shape[-1] != len(scale):
        raise ValueError(f"y_true's last axis must index the {len(scale)} training series")
    if np.any(scale == 0):
        return float("nan")
    with np.errstate(invalid="ignore", over="ignore"):
        value = float(np.mean(np.abs(y_true - y_pred) / scale))
    return _nan_if_not_finite(value, y_true, y_pred, y_train)


METRICS = ("rmse", "mae", "mape", "smape", "mase")


def evaluate(y_true, y_pred, y_train, period: int = 1) -> dict[str, float]:
    """Every metric in ``METRICS``: ``{"rmse": ..., "mae": ..., ..., "mase": ...}``."""
    return {
        "rmse": rmse(y_true, y_pred),
        "mae": mae(y_true, y_pred),
        "mape": mape(y_true, y_pred),
        "smape": smape(y_true, y_pred),
        "mase": mase(y_true, y_pred, y_train, period),
    }


def all_finite(scores: dict[str, float], names=("rmse", "mae")) -> bool:
    """Whether the scale-free-of-zeros metrics in ``scores`` are finite numbers.

    ``mape`` and ``mase`` are NaN by definition for some honest series (a true value of 0,
    a constant training series), so only ``names`` are checked: a NaN there means the
    forecasts themselves are not finite, and the run must fail, not report a score.
    """
    return all(np.isfinite(scores[n]) for n in names if n in scores)


def _origins(series: np.ndarray, origin) -> tuple[np.ndarray, np.ndarray]:
    series = np.asarray(series, np.float64)
    if series.ndim == 1:
        series = series[:, None]
    origin = np.asarray(origin, np.int64)
    if origin.ndim != 1 or np.any(origin < 0) or np.any(origin >= len(series)):
        raise ValueError(f"origins must be row indices in [0, {len(series)}), got {origin}")
    return series, origin


def naive_forecast(series, origin, horizon: int = 1) -> np.ndarray:
    """Persistence: ``(N, horizon, K)`` copies of ``series[origin]``.

    Args:
        series: ``(T,)`` or ``(T, K)`` observed values.
        origin: ``(N,)`` int row of the last observation of each forecast.
        horizon: leads per forecast.
    """
    series, origin = _origins(series, origin)
    return np.repeat(series[origin][:, None], horizon, axis=1)


def seasonal_naive_forecast(series, origin, horizon: int = 1, period: int = 12) -> np.ndarray:
    """Seasonal naive: lead ``h`` gets ``series[origin + h - period * ceil(h / period)]``.

    Returns ``(N, horizon, K)``. Raises ``ValueError`` if an origin is less than a
    season into the series (its seasonal value was never observed).
    """
    if period < 1:
        raise ValueError(f"period must be >= 1, got {period}")
    series, origin = _origins(series, origin)
    leads = np.arange(1, horizon + 1)
    rows = origin[:, None] + leads - period * -(-leads // period)
    if np.any(rows < 0):
        raise ValueError(
            f"seasonal naive with period {period} needs a full season before the first "
            f"forecast origin (row {int(origin.min())})"
        )
    return series[rows]
