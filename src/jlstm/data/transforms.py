"""Target transforms, and the ``auto`` rule that picks one from the training rows.

A transform says how the model sees the target (``FeatureConfig.transform``):

* ``none``: scaled levels (after the global scaler fitted on the training rows);
* ``delta``: levels relative to the last input value, so the model forecasts the
  change from the last observation and a trend it never saw in training is no
  extrapolation (a model trained on levels forecasts a flat line below a rising
  series: its scaler was fitted on lower values);
* ``log`` / ``log_delta``: the same after taking the natural log (a multiplicative
  trend or season becomes additive, changes become growth rates);
* ``revin`` / ``log_revin``: per-window normalisation (RevIN, Kim et al. 2022): the
  target inputs of each window are centred on the window's own mean and divided by
  its own standard deviation over its ``steps`` rows (floored at ``REVIN_EPS``), the
  targets are expressed in the same units, and the model's outputs are mapped back
  with the same window statistics (``window_stats``).

``choose_transform`` is the ``auto`` rule. It looks only at the training rows and
costs a few small least-squares fits:

1. *Difference or not.* Two classical stationarity tests on each target's level:
   KPSS (Kwiatkowski, Phillips, Schmidt & Shin 1992; null: stationary around a
   constant; Hobijn et al. 1998 automatic bandwidth) and augmented Dickey-Fuller
   (null: a unit root; lag order by AIC up to Schwert's ``12 (n/100)^(1/4)``;
   MacKinnon 2010 critical values). The level is left as it is (``none``) only when
   the two agree that it is stationary at the 5% level: KPSS does not reject
   stationarity *and* ADF rejects a unit root. Otherwise (a trend, a level shift, a
   random walk, or tests too weak to tell) the model forecasts changes (``delta``):
   a forecaster that errs towards differencing can always fall back on persistence,
   one that errs towards levels cannot follow a series out of its training range.
2. *Log or not* (only when differencing). A strictly positive target whose
   variability grows with its level is modelled in logs (``log_delta``). The
   training rows are cut into blocks of ``max(season, 4)`` rows; the slope ``b`` of
   ``log(mean |change|)`` on ``log(mean level)`` across blocks estimates the power
   law ``spread ~ level^b`` (Guerrero 1993's idea: the Box-Cox ``lambda = 1 - b``
   that makes the spread constant). ``b > 0.5`` (``lambda`` nearer 0, the log, than
   1, no transform) and a level that at least doubles over the training rows (below
   that, log and level changes are nearly the same thing) give the log.

Several targets share one transform: differencing if any target needs it, the log
only if every target qualifies. Series with fewer than ``MIN_TEST_ROWS`` (50)
training rows are too short for the tests to have power and get ``delta`` (the log
test still applies).

Everything here is NumPy; the tests check the statistics against statsmodels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import DataError

__all__ = [
    "AUTO",
    "KPSS_CRITICAL",
    "LOG_LEVEL_RATIO",
    "LOG_SLOPE",
    "MIN_TEST_ROWS",
    "REVIN_EPS",
    "TRANSFORMS",
    "WINDOW_MODES",
    "TestResult",
    "TransformChoice",
    "adf",
    "adf_critical",
    "choose_transform",
    "compose_transform",
    "kpss",
    "split_transform",
    "variability_slope",
    "window_stats",
]

AUTO = "auto"
# Log part x window part; "auto" is resolved to one of the others by choose_transform.
WINDOW_MODES = ("none", "delta", "revin")
TRANSFORMS = (AUTO, "none", "log", "delta", "log_delta", "revin", "log_revin")
# The floor of a window's standard deviation under revin, in scaled units: 1% of the
# training segment's standard deviation with the standard scaler (of its range with
# minmax; original units with scaler "none"). A flat window then keeps its changes
# at most 100 times larger than the scaled series' own, instead of dividing by ~0.
REVIN_EPS = 1e-2
# KPSS level-stationarity critical values (Kwiatkowski et al. 1992, Table 1).
KPSS_CRITICAL = {"10%": 0.347, "5%": 0.463, "2.5%": 0.574, "1%": 0.739}
# MacKinnon (2010) response surface of the ADF critical values, constant, one
# variable: crit(T) = b0 + b1/T + b2/T^2 + b3/T^3.
_ADF_SURFACE = {
    "1%": (-3.43035, -6.5393, -16.786, -79.433),
    "5%": (-2.86154, -2.8903, -4.234, -40.04),
    "10%": (-2.56677, -1.5384, -2.809, 0.0),
}
# Below this many training rows KPSS and ADF cannot tell a stationary series from a
# trending one reliably (on 39 quarters of Danish real income both called a trending
# series stationary and the level model then lost 4.8x to persistence): delta, the
# choice that can fall back on persistence.
MIN_TEST_ROWS = 50
LOG_SLOPE = 0.5
LOG_LEVEL_RATIO = 2.0


def split_transform(transform: str) -> tuple[bool, str]:
    """``"log_delta"`` -> ``(True, "delta")``; ``"revin"`` -> ``(False, "revin")``."""
    if transform not in TRANSFORMS or transform == AUTO:
        raise DataError(f"unknown transform {transform!r}; use one of {list(TRANSFORMS)}")
    if transform == "log":
        return True, "none"
    if transform.startswith("log_"):
        return True, transform[4:]
    return False, transform


def compose_transform(log: bool, window: str) -> str:
    """The transform name of a log flag and a window mode (``split_transform``'s inverse)."""
    if window not in WINDOW_MODES:
        raise DataError(f"unknown window mode {window!r}; use one of {list(WINDOW_MODES)}")
    if not log:
        return window
    return "log" if window == "none" else f"log_{window}"


# -- revin -------------------------------------------------------------------------------


def window_stats(levels: np.ndarray, window: str) -> tuple[np.ndarray, np.ndarray]:
    """The centre and scale a window mode maps each window's target levels with.

    The model sees ``(levels - centre) / scale`` and its outputs ``o`` map back to
    levels as ``o * scale + centre``.

    Args:
        levels: ``(N, steps, K)`` scaled target levels of ``N`` windows.
        window: ``"none"`` (centre 0, scale 1), ``"delta"`` (centre: the last row,
            scale 1) or ``"revin"`` (centre: the window mean; scale: its population
            standard deviation, floored at ``REVIN_EPS``).

    Returns:
        ``(centre, scale)``, each ``(N, K)`` float64.
    """
    levels = np.asarray(levels, np.float64)
    n, k = levels.shape[0], levels.shape[-1]
    if window == "none":
        return np.zeros((n, k)), np.ones((n, k))
    if window == "delta":
        return levels[:, -1].copy(), np.ones((n, k))
    if window == "revin":
        with np.errstate(over="ignore", invalid="ignore"):
            centre = levels.mean(axis=1)
            scale = np.maximum(levels.std(axis=1), REVIN_EPS)
        return centre, scale
    raise DataError(f"unknown window mode {window!r}; use one of {list(WINDOW_MODES)}")


# -- the statistics ----------------------------------------------------------------------


class TestResult(NamedTuple):
    """A test statistic with the lag order it used and its 5% critical value."""

    statistic: float
    lags: int
    critical: float


def _as_series(x: np.ndarray, minimum: int, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 1:
        raise DataError(f"{name} takes a 1-D series, got shape {x.shape}")
    if len(x) < minimum or not np.all(np.isfinite(x)):
        raise DataError(f"{name} needs at least {minimum} finite values, got {len(x)}")
    return x


def _kpss_lags(resid: np.ndarray) -> int:
    """Hobijn, Franses & Ooms (1998) automatic Bartlett bandwidth (as statsmodels' "auto")."""
    n = len(resid)
    cov_lags = int(n ** (2.0 / 9.0))
    s0 = resid @ resid / n
    s1 = 0.0
    for i in range(1, cov_lags + 1):
        prod = (resid[i:] @ resid[: n - i]) / (n / 2.0)
        s0 += prod
        s1 += i * prod
    gamma = 1.1447 * ((s1 / s0) ** 2) ** (1.0 / 3.0)
    return min(int(gamma * n ** (1.0 / 3.0)), n - 1)


def kpss(x: np.ndarray, *, lags: int | None = None) -> TestResult:
    """The KPSS statistic for stationarity around a constant (level stationarity).

    ``eta = sum(S_t^2) / (n^2 s^2)``: ``S_t`` the partial sums of the deviations
    from the mean, ``s^2`` their long-run variance (Newey-West, Bartlett weights
    ``1 - i / (lags + 1)``). Large values reject stationarity: above ``KPSS_CRITICAL``
    (0.463 at 5%).

    Args:
        x: ``(n,)`` series, ``n >= 3``.
        lags: the bandwidth; default the Hobijn et al. (1998) automatic choice.
    """
    x = _as_series(x, 3, "kpss")
    n = len(x)
    resid = x - x.mean()
    lags = _kpss_lags(resid) if lags is None else int(lags)
    if not 0 <= lags < n:
        raise DataError(f"kpss lags must be in [0, {n - 1}], got {lags}")
    s2 = resid @ resid
    for i in range(1, lags + 1):
        s2 += 2.0 * (resid[i:] @ resid[: n - i]) * (1.0 - i / (lags + 1.0))
    s2 /= n
    eta = float(np.sum(np.cumsum(resid) ** 2) / n**2)
    stat = eta / s2 if s2 > 0 else math.inf
    return TestResult(float(stat), lags, KPSS_CRITICAL["5%"])


def adf_critical(nobs: int, level: str = "5%") -> float:
    """The ADF critical value (constant, no trend) for a regression on ``nobs`` rows."""
    b = _ADF_SURFACE[level]
    return float(b[0] + b[1] / nobs + b[2] / nobs**2 + b[3] / nobs**3)


def _ols(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """``(coef, ssr, standard errors)`` of the least-squares fit of ``y`` on ``x``."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    ssr = float(resid @ resid)
    dof = len(y) - x.shape[1]
    cov = np.linalg.pinv(x.T @ x) * (ssr / dof if dof > 0 else math.inf)
    return coef, ssr, np.sqrt(np.maximum(np.diag(cov), 0.0))


def _adf_design(x: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """``dx_t`` and ``[x_{t-1}, dx_{t-1} .. dx_{t-lags}, 1]`` over the rows that have them."""
    dx = np.diff(x)
    rows = len(dx) - lags
    cols = [x[lags : lags + rows]]  # x_{t-1} for the target dx_t, t = lags+1 ..
    cols += [dx[lags - j : lags - j + rows] for j in range(1, lags + 1)]
    design = np.column_stack([*cols, np.ones(rows)])
    return dx[lags:], design


def adf(x: np.ndarray, *, max_lag: int | None = None, lags: int | None = None) -> TestResult:
    """The augmented Dickey-Fuller t statistic (constant, no trend), lag order by AIC.

    Regresses ``dx_t`` on ``x_{t-1}``, ``p`` lagged differences and a constant; the
    statistic is the t value of ``x_{t-1}``. ``p`` minimises the AIC over ``0 ..
    max_lag`` on a common sample (as statsmodels' ``adfuller(autolag="AIC")``); the
    chosen regression is then refitted on all the rows it can use. Values below
    ``adf_critical`` reject a unit root.

    Args:
        x: ``(n,)`` series, ``n >= 8``.
        max_lag: default ``ceil(12 (n / 100)^(1/4))`` (Schwert 1989), at most
            ``n // 2 - 2``.
        lags: a fixed lag order instead of the AIC choice.
    """
    x = _as_series(x, 8, "adf")
    n = len(x)
    limit = n // 2 - 2
    if lags is not None:
        if not 0 <= lags <= limit:
            raise DataError(f"adf lags must be in [0, {limit}] for {n} values, got {lags}")
        y, design = _adf_design(x, lags)
        coef, _, se = _ols(y, design)
        return TestResult(float(coef[0] / se[0]), lags, adf_critical(len(y)))
    if max_lag is None:
        max_lag = min(limit, math.ceil(12.0 * (n / 100.0) ** 0.25))
    elif not 0 <= max_lag <= limit:
        raise DataError(f"adf max_lag must be in [0, {limit}] for {n} values, got {max_lag}")
    y, full = _adf_design(x, max_lag)
    # full's columns: x_{t-1}, dx lags 1..max_lag, constant. Candidate p uses the
    # first 1 + p columns and the constant, all on the rows of the largest p.
    rows = len(y)
    best = None
    for p in range(max_lag + 1):
        design = np.column_stack([full[:, : 1 + p], full[:, -1]])
        _, ssr, _ = _ols(y, design)
        k = design.shape[1]
        aic = rows * math.log(2.0 * math.pi * ssr / rows) + rows + 2.0 * k
        if best is None or aic < best[0]:
            best = (aic, p)
    lags = best[1]
    y, design = _adf_design(x, lags)
    coef, _, se = _ols(y, design)
    stat = float(coef[0] / se[0]) if se[0] > 0 else -math.inf
    return TestResult(stat, lags, adf_critical(len(y)))


def variability_slope(x: np.ndarray, block: int) -> tuple[float, float, int]:
    """How the size of a positive series' changes grows with its level.

    Cuts ``x`` into ``len(x) // block`` blocks of ``block`` rows and fits
    ``log(mean |x_t - x_{t-1}|) = a + b log(mean x)`` across the blocks (blocks
    whose changes are all zero are left out).

    Returns:
        ``(b, ratio, blocks)``: the slope (NaN with fewer than 4 usable blocks), the
        largest block mean over the smallest, and the number of blocks used.
    """
    x = np.asarray(x, np.float64)
    n = len(x) // block
    if n == 0:
        return math.nan, math.nan, 0
    blocks = x[len(x) - n * block :].reshape(n, block)  # the most recent whole blocks
    level = blocks.mean(axis=1)
    spread = np.abs(np.diff(blocks, axis=1)).mean(axis=1) if block > 1 else np.zeros(n)
    ok = (spread > 0) & (level > 0)
    ratio = float(level.max() / level.min()) if np.all(level > 0) else math.nan
    if ok.sum() < 4:
        return math.nan, ratio, int(ok.sum())
    lx, ly = np.log(level[ok]), np.log(spread[ok])
    lx = lx - lx.mean()
    denom = float(lx @ lx)
    slope = float(lx @ (ly - ly.mean()) / denom) if denom > 0 else math.nan
    return slope, ratio, int(ok.sum())


# -- the auto rule ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransformChoice:
    """What ``transform = "auto"`` resolved to, and why (stored in the checkpoint).

    Attributes:
        transform: the chosen transform (one of ``TRANSFORMS`` but ``auto``).
        reason: one line, e.g. ``"delta (auto: KPSS 1.92 > 0.463 on realgdp ...)"``.
        evidence: per target name, the statistics and thresholds the rule used.
    """

    transform: str
    reason: str
    evidence: Mapping[str, Mapping[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "transform": self.transform,
            "requested": AUTO,
            "reason": self.reason,
            "evidence": {k: dict(v) for k, v in self.evidence.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransformChoice:
        try:
            return cls(str(data["transform"]), str(data["reason"]), dict(data["evidence"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"the stored transform choice is malformed: {err}") from None


def _round(value: float) -> float | None:
    return None if not math.isfinite(value) else float(f"{value:.4g}")


def _column_evidence(x: np.ndarray, season: int, positive: bool) -> dict[str, Any]:
    n = len(x)
    ev: dict[str, Any] = {"rows": n}
    if n < MIN_TEST_ROWS or np.ptp(x) == 0:
        ev["stationary"] = False
        ev["why"] = f"{n} training rows: too few to test (< {MIN_TEST_ROWS})"
    else:
        k, a = kpss(x), adf(x)
        ev |= {
            "kpss": _round(k.statistic),
            "kpss_lags": k.lags,
            "kpss_critical_5pct": k.critical,
            "adf": _round(a.statistic),
            "adf_lags": a.lags,
            "adf_critical_5pct": _round(a.critical),
        }
        level_ok = k.statistic <= k.critical
        no_root = a.statistic < a.critical
        ev["stationary"] = bool(level_ok and no_root)
        if ev["stationary"]:
            ev["why"] = (
                f"KPSS {k.statistic:.3g} <= {k.critical} and ADF {a.statistic:.3g} < "
                f"{a.critical:.3g}: stationary level"
            )
        elif not level_ok:
            ev["why"] = f"KPSS {k.statistic:.3g} > {k.critical}: level not stationary"
        else:
            ev["why"] = f"ADF {a.statistic:.3g} >= {a.critical:.3g}: a unit root is not rejected"
    ev["positive"] = bool(positive)
    block = max(season, 4)
    if positive:
        slope, ratio, used = variability_slope(x, block)
        ev |= {"log_slope": _round(slope), "level_ratio": _round(ratio), "log_blocks": used}
        ev["log"] = bool(math.isfinite(slope) and slope > LOG_SLOPE and ratio >= LOG_LEVEL_RATIO)
    else:
        ev["log"] = False
    return ev


def choose_transform(
    train: np.ndarray,
    names: Sequence[str],
    *,
    season: int = 1,
    positive: Sequence[bool] | np.ndarray | None = None,
) -> TransformChoice:
    """The ``auto`` rule (module docstring): a transform from the training rows.

    Args:
        train: ``(T, K)`` training rows of the targets, original units.
        names: the ``K`` target names (for the evidence and the message).
        season: seasonal period in rows (the block length of the log test is
            ``max(season, 4)``).
        positive: per target, whether the whole series is strictly positive (the
            log is possible); default: whether ``train`` is.
    """
    train = np.asarray(train, np.float64)
    if train.ndim == 1:
        train = train[:, None]
    if train.ndim != 2 or train.shape[1] != len(names):
        raise DataError(f"train must be (T, {len(names)}) rows, got shape {train.shape}")
    if positive is None:
        positive = np.all(train > 0, axis=0)
    evidence = {
        name: _column_evidence(train[:, k], season, bool(positive[k]))
        for k, name in enumerate(names)
    }
    moving = [n for n in names if not evidence[n]["stationary"]]
    if not moving:
        first = names[0]
        detail = evidence[first]["why"]
        more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
        return TransformChoice("none", f"none (auto: {detail} on {first}{more})", evidence)
    use_log = all(evidence[n]["log"] for n in names)
    name = moving[0]
    detail = evidence[name]["why"]
    if use_log:
        ev = evidence[name]
        detail += (
            f"; changes grow with the level (slope {ev['log_slope']:.3g} > {LOG_SLOPE}, "
            f"level x{ev['level_ratio']:.3g})"
        )
    transform = "log_delta" if use_log else "delta"
    return TransformChoice(transform, f"{transform} (auto: {detail} on {name})", evidence)
