"""Per-column affine scalers, fitted on the training segment only.

A scaler maps ``x`` to ``(x - shift) / scale`` column by column and back.
``standard`` uses the mean and (population) standard deviation, ``minmax``
maps the training range onto ``[0, 1]``, ``none`` is the identity. Values
outside the training range are not clipped: a test value above the training
maximum scales above 1, as it must for an honest evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .errors import DataError

__all__ = ["SCALERS", "Scaler", "fit_scaler"]

SCALERS = ("standard", "minmax", "none")


@dataclasses.dataclass(frozen=True, eq=False)
class Scaler:
    """A fitted per-column affine map ``z = (x - shift) / scale``.

    Attributes:
        kind: ``"standard"``, ``"minmax"`` or ``"none"``.
        shift: ``(K,)`` float64, subtracted from each column.
        scale: ``(K,)`` float64, positive, divides each column.
    """

    kind: str
    shift: np.ndarray
    scale: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(..., K)`` values -> ``(..., K)`` float64 scaled values."""
        return (np.asarray(x, np.float64) - self.shift) / self.scale

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """``(..., K)`` scaled values -> ``(..., K)`` float64 values in original units."""
        return np.asarray(z, np.float64) * self.scale + self.shift

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as arrays (for a checkpoint); ``from_arrays`` inverts it."""
        return {"shift": self.shift, "scale": self.scale}

    @classmethod
    def from_arrays(cls, kind: str, arrays: dict[str, np.ndarray]) -> Scaler:
        if kind not in SCALERS:
            raise DataError(f"unknown scaler {kind!r}; use one of {list(SCALERS)}")
        shift = np.asarray(arrays["shift"], np.float64)
        scale = np.asarray(arrays["scale"], np.float64)
        if shift.shape != scale.shape or shift.ndim != 1:
            raise DataError(f"scaler arrays must both be (K,), got {shift.shape} and {scale.shape}")
        return cls(kind, shift, scale)


def fit_scaler(kind: str, x: np.ndarray, names: Sequence[str] | None = None) -> Scaler:
    """Fit a scaler on ``x`` ``(N, K)`` (the training rows only).

    Args:
        kind: ``"standard"``, ``"minmax"`` or ``"none"``.
        x: ``(N, K)`` finite values.
        names: optional column names for error messages.

    Raises:
        DataError: for an unknown kind or a column with no spread (constant),
            which a scaler cannot map and a model cannot learn from.
    """
    if kind not in SCALERS:
        raise DataError(f"unknown scaler {kind!r}; use one of {list(SCALERS)}")
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise DataError(f"a scaler is fitted on (N, K) rows with N >= 1, got shape {x.shape}")
    names = list(names) if names is not None else [f"column {k}" for k in range(x.shape[1])]
    lo, hi = x.min(axis=0), x.max(axis=0)
    for k in np.flatnonzero(hi <= lo):
        raise DataError(
            f"{names[k]} is constant ({lo[k]:g}) over the {len(x)} training rows: there is "
            "nothing to scale or learn; use a series (or covariate) that varies"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        if kind == "standard":
            scaler = Scaler(kind, x.mean(axis=0), x.std(axis=0))
        elif kind == "minmax":
            scaler = Scaler(kind, lo, hi - lo)
        else:
            scaler = Scaler(kind, np.zeros(x.shape[1]), np.ones(x.shape[1]))
        z = scaler.transform(x)
    # The model computes in float32: scaled values must be finite there, and the scaler's
    # own statistics finite (the variance of values ~1e300 overflows float64).
    big = np.finfo(np.float32).max
    for k in range(x.shape[1]):
        ok = np.isfinite(scaler.shift[k]) and np.isfinite(scaler.scale[k]) and scaler.scale[k] > 0
        if not ok or not np.all(np.abs(z[:, k]) < big):
            raise DataError(
                f"{names[k]} has values too large to scale (largest magnitude "
                f"{np.abs(x[:, k]).max():g}): the {kind} scaler's statistics or the scaled "
                "values overflow; divide the column by a power of ten (e.g. report it in "
                "millions), or use the standard scaler or the log transform"
            )
    return scaler
