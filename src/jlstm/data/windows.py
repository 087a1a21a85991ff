"""Sliding windows over a series and chronological splits.

A window is ``steps`` consecutive rows of inputs followed by the next
``horizon`` rows of targets. Splits cut the series into contiguous
train / validation / test segments *before* windowing, so no window ever
spans two segments: a test target never appears as a training input, and
the scaler can be fitted on the training segment alone.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..validation import check_int
from .errors import DataError

__all__ = ["SplitBounds", "make_windows", "split_bounds", "window_count"]


def window_count(length: int, steps: int, horizon: int = 1, stride: int = 1) -> int:
    """Number of windows ``make_windows`` cuts from ``length`` rows (0 if too short)."""
    span = steps + horizon
    return 0 if length < span else (length - span) // stride + 1


def make_windows(
    series: np.ndarray,
    steps: int,
    horizon: int = 1,
    stride: int = 1,
    *,
    targets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``series`` into input windows and the values that follow them.

    Window ``i`` starts at row ``s = i * stride``: its inputs are rows
    ``s .. s + steps - 1`` and its targets rows ``s + steps .. s + steps + horizon - 1``.

    Args:
        series: ``(T, D)`` (or ``(T,)``, read as ``D = 1``) input rows.
        steps: rows per input window (the look-back), ``>= 1``.
        horizon: rows per target window, ``>= 1``.
        stride: rows between the starts of consecutive windows, ``>= 1``.
        targets: optional ``(T, K)`` (or ``(T,)``) rows to take the targets from,
            aligned with ``series``; defaults to ``series`` itself.

    Returns:
        ``(inputs, outputs)``: ``(N, steps, D)`` and ``(N, horizon, K)`` in the
        input dtypes, with ``N = (T - steps - horizon) // stride + 1`` (0 when the
        series is shorter than ``steps + horizon``). Copies, not views.

    Example:
        >>> x, y = make_windows(np.arange(6.0), steps=3, horizon=2)
        >>> x[:, :, 0].tolist(), y[:, :, 0].tolist()
        ([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]], [[3.0, 4.0], [4.0, 5.0]])
    """
    for name, value in (("steps", steps), ("horizon", horizon), ("stride", stride)):
        check_int(name, value, error=DataError)
    series = np.asarray(series)
    if series.ndim == 1:
        series = series[:, None]
    if series.ndim != 2:
        raise DataError(f"series must have shape (T, D) or (T,), got {series.shape}")
    targets = series if targets is None else np.asarray(targets)
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or len(targets) != len(series):
        raise DataError(
            f"targets must have shape (T, K) with T = {len(series)} rows, got {targets.shape}"
        )
    n = window_count(len(series), steps, horizon, stride)
    starts = np.arange(n) * stride
    x = series[starts[:, None] + np.arange(steps)]
    y = targets[starts[:, None] + steps + np.arange(horizon)]
    return x.reshape(n, steps, series.shape[1]), y.reshape(n, horizon, targets.shape[1])


class SplitBounds(NamedTuple):
    """Row ranges of a chronological split: train ``[0, train)``, validation
    ``[train, val)``, test ``[val, total)``."""

    train: int
    val: int
    total: int

    def segments(self) -> dict[str, tuple[int, int]]:
        """``{"train": (start, stop), "val": ..., "test": ...}`` row ranges."""
        return {
            "train": (0, self.train),
            "val": (self.train, self.val),
            "test": (self.val, self.total),
        }


def _size(value: float | int, total: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DataError(f"{name} must be a row count (>= 1) or a fraction in (0, 1), got {value!r}")
    if isinstance(value, int | np.integer) or (float(value).is_integer() and value >= 1):
        rows = int(value)
        if rows < 1:
            raise DataError(f"{name} must be at least 1 row, got {value!r}")
        return rows
    if not 0.0 < value < 1.0:
        raise DataError(f"{name} must be a row count (>= 1) or a fraction in (0, 1), got {value!r}")
    return max(1, round(value * total))


def split_bounds(
    total: int,
    val_size: float | int,
    test_size: float | int,
    *,
    steps: int,
    horizon: int = 1,
) -> SplitBounds:
    """Chronological train / validation / test row ranges.

    The test segment is the last ``test_size`` rows, the validation segment the
    ``val_size`` rows before it, and training gets the rest. Sizes are row counts
    (integers ``>= 1``) or fractions of ``total`` in ``(0, 1)``.

    Raises:
        DataError: if a segment is too short to hold one window of
            ``steps + horizon`` rows; the message says how many rows are needed.
    """
    n_val = _size(val_size, total, "val_size")
    n_test = _size(test_size, total, "test_size")
    span = steps + horizon
    n_train = total - n_val - n_test
    if min(n_train, n_val, n_test) < span:
        raise DataError(
            f"the series has {total} rows, too short for windows of {steps} steps + "
            f"{horizon} horizon in each split (train {n_train}, validation {n_val}, "
            f"test {n_test} rows; each needs at least {span}): use a longer series, "
            "fewer --steps, or smaller --val-size/--test-size"
        )
    return SplitBounds(n_train, n_train + n_val, total)
