"""A trained run as one array program in original units: raw history in, forecasts out.

``jlstm.data.Pipeline`` turns a series into model windows in NumPy, and
``jlstm.forecast`` maps the model's outputs back. A ``Forecaster`` is the same
computation written as array operations, so that it can be exported whole
(``jlstm.export``: a ``jax.export`` program or an ONNX graph) and run where
neither jlstm nor its pipeline is available::

    inputs                                         outputs
    history     (B, steps, K) float, original units  forecast (B, horizon, K) original units
    covariates  (B, steps, C) float, original units    [(B, horizon, K, Q) with a quantile head]
    dates       (B, steps)    int, see DATE_UNITS    spread   (B, horizon, K), ensembles only
    series      (B,)          int, panel runs only

``history`` holds the last ``steps`` rows of the targets, oldest first; the forecast
covers the ``horizon`` rows after the last of them. ``covariates`` and ``dates`` are
inputs only when the run used covariates or calendar features.

The program, in order:

1. each target transform of the run, forward (``TargetTransform``; the table
   ``TARGET_TRANSFORMS``): ``log``, the fitted ``scale`` (per series in a panel),
   ``delta`` (relative to the last input row), ``revin`` (per-window normalisation);
2. the covariates through their fitted scaler; calendar ``sin, cos`` pairs from the
   integer dates (``Calendar``);
3. the model, once per ensemble member: ``(M, B, horizon * K * Q)`` outputs, read as
   ``(M, B, horizon, K, Q)`` (a quantile head's layout, ``jlstm.losses.pinball``), the
   quantiles sorted so that they never cross;
4. each target transform's inverse, in reverse order, then the members' mean (and,
   for an ensemble, their standard deviation with ``ddof=1``: ``spread``), as
   ``jlstm predict`` combines them.

Every step is written once, against a small set of array operations (the ``Ops``
protocol) that two backends implement: ``JaxOps`` here (``jax.numpy``) and
``jlstm.interop.onnx.OnnxOps`` (ONNX nodes). A new transform is one small class:
its ``forward`` and ``inverse`` and, if it needs an operation ONNX lacks, ``formats =
("jax",)`` so that the ONNX export refuses it by name.

Dates. ONNX has no date type, so both formats take dates as integer counts of one
unit since the Unix epoch (``DATE_UNITS``): the coarsest unit that determines every
calendar feature of the run (``month``: months since 1970-01; ``yearday`` and
``weekday``: days since 1970-01-01; ``hour``: hours since 1970-01-01T00). The
calendar is computed inside the program with integer arithmetic (the civil-from-days
algorithm of H. Hinnant), exact for every date from year -7000 to 9999.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from .checkpoint import CheckpointError, load_checkpoint
from .data import CALENDAR_FEATURES, DataError, Pipeline, Scaler
from .model import ModelConfig, apply
from .train import ensemble_size
from .types import ModelParams

__all__ = [
    "DATE_UNITS",
    "FORECASTER_FORMAT",
    "TARGET_TRANSFORMS",
    "Affine",
    "Calendar",
    "Delta",
    "Forecaster",
    "JaxOps",
    "Log",
    "Ops",
    "RevIN",
    "TargetTransform",
    "date_unit",
    "encode_dates",
    "run_program",
]

FORECASTER_FORMAT = "jlstm.forecaster"
FORECASTER_VERSION = 1
# The implementation an exported program runs (see jlstm.export).
EXPORT_IMPLEMENTATION = "hoisted"

# Date input encodings: numpy unit -> what the integer counts.
DATE_UNITS: dict[str, str] = {
    "M": "months since 1970-01",
    "D": "days since 1970-01-01",
    "h": "hours since 1970-01-01T00:00",
}
# The coarsest date unit each calendar feature can be computed from.
_FEATURE_UNIT = {"month": "M", "yearday": "D", "weekday": "D", "hour": "h"}
_FINENESS = ("M", "D", "h")

# Integer calendar arithmetic runs on non-negative day numbers z = days + _Z_OFFSET (day 0 =
# 0000-03-01 shifted back by _ERAS 400-year eras), so integer division truncating toward zero
# (ONNX, C) equals floor division (NumPy, JAX). Every count stays below 2**31 (JAX's default
# int32): 24 * _Z_OFFSET + hours < 2**31 up to year 9999.
_ERAS = 18
_DAYS_PER_ERA = 146097
_Z_OFFSET = 719468 + _ERAS * _DAYS_PER_ERA
_MONTH_OFFSET = 12 * 10_000  # keeps months since 1970 non-negative from year -8030
_FIRST_YEAR, _LAST_YEAR = -7000, 9999


def date_unit(calendar: Sequence[str]) -> str | None:
    """The date input unit for ``calendar`` features (``None`` without any)."""
    units = [_FEATURE_UNIT[name] for name in calendar]
    return max(units, key=_FINENESS.index) if units else None


def encode_dates(dates: np.ndarray, unit: str) -> np.ndarray:
    """``datetime64`` dates -> the ``int64`` counts a forecaster takes (``DATE_UNITS``).

    A date finer than ``unit`` is floored to it (the calendar features only read
    ``unit``), e.g. ``2020-03-17`` is month 602 for ``unit="M"``.

    Raises:
        DataError: ``unit`` unknown, or a date outside the years -7000..9999.
    """
    if unit not in DATE_UNITS:
        raise DataError(f"unknown date unit {unit!r}; use one of {list(DATE_UNITS)}")
    dates = np.asarray(dates)
    if dates.dtype.kind != "M":
        raise DataError(f"dates must be numpy datetime64, got {dates.dtype}")
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    if dates.size and (years.min() < _FIRST_YEAR or years.max() > _LAST_YEAR):
        raise DataError(
            f"dates must lie in the years {_FIRST_YEAR}..{_LAST_YEAR}, got "
            f"{dates.min()}..{dates.max()}"
        )
    return dates.astype(f"datetime64[{unit}]").astype(np.int64)


# -- the array operations a backend provides ----------------------------------------------


class Ops(Protocol):
    """The array operations the forecaster program is written against.

    A backend's values are its own (JAX arrays, ONNX tensor names). Float constants
    are made in the model's dtype; integer operations take non-negative operands
    and Python ``int`` constants (or values), and divide with floor semantics.
    """

    def const(self, value): ...  # a float array constant
    def add(self, a, b): ...
    def sub(self, a, b): ...
    def mul(self, a, b): ...
    def div(self, a, b): ...
    def maximum(self, a, b): ...
    def log(self, a): ...
    def exp(self, a): ...
    def sqrt(self, a): ...
    def sin(self, a): ...
    def cos(self, a): ...
    def last_step(self, z): ...  # (B, S, K) -> (B, 1, K)
    def mean_steps(self, z): ...  # (B, S, K) -> (B, 1, K)
    def rows(self, table, index): ...  # table (N, K) at index (B,) -> (B, 1, K)
    def unsqueeze_last(self, a): ...  # (...) -> (..., 1)
    def concat_last(self, values): ...
    def iadd(self, a, b): ...
    def isub(self, a, b): ...
    def imul(self, a, b): ...
    def idiv(self, a, b): ...
    def imod(self, a, b): ...
    def to_float(self, a): ...
    def model(self, x): ...  # (B, S, D) -> (M, B, O): every member's outputs
    def heads(self, y, shape): ...  # (M, B, O) -> (M, B, *shape)
    def sort_last(self, y): ...  # ascending along the last axis
    def mean_members(self, y): ...  # (M, ...) -> (...)
    def squeeze_last(self, y): ...  # (..., 1) -> (...)


class JaxOps:
    """The ``Ops`` of the forecaster program in ``jax.numpy``.

    Values are JAX arrays; float constants are made in ``dtype`` (the model's), the
    integer ones in the dates' dtype. ``model`` runs ``jlstm.apply`` (``vmap`` over an
    ensemble's members).
    """

    def __init__(self, config: ModelConfig, params: ModelParams, members: int | None):
        import jax.numpy as jnp

        self.jnp = jnp
        self.dtype = jnp.dtype(config.param_dtype)
        self.config = config
        self.params = params
        self.members = members

    def const(self, value):
        return self.jnp.asarray(np.asarray(value, np.float64), self.dtype)

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def mul(self, a, b):
        return a * b

    def div(self, a, b):
        return a / b

    def maximum(self, a, b):
        return self.jnp.maximum(a, b)

    def log(self, a):
        return self.jnp.log(a)

    def exp(self, a):
        return self.jnp.exp(a)

    def sqrt(self, a):
        return self.jnp.sqrt(a)

    def sin(self, a):
        return self.jnp.sin(a)

    def cos(self, a):
        return self.jnp.cos(a)

    def last_step(self, z):
        return z[:, -1:, :]

    def mean_steps(self, z):
        return self.jnp.mean(z, axis=1, keepdims=True)

    def rows(self, table, index):
        return self.jnp.asarray(np.asarray(table, np.float64), self.dtype)[index][:, None, :]

    def unsqueeze_last(self, a):
        return a[..., None]

    def concat_last(self, values):
        return self.jnp.concatenate(values, axis=-1)

    # integers (non-negative operands: see _Z_OFFSET)
    def iadd(self, a, b):
        return a + b

    def isub(self, a, b):
        return a - b

    def imul(self, a, b: int):
        return a * b

    def idiv(self, a, b: int):
        return a // b

    def imod(self, a, b: int):
        return a % b

    def to_float(self, a):
        return a.astype(self.dtype)

    def model(self, x):
        import jax

        config = dataclasses.replace(self.config, implementation=EXPORT_IMPLEMENTATION)
        if self.members is None:
            return apply(self.params, x, config)[None]
        return jax.vmap(lambda p: apply(p, x, config))(self.params)

    def heads(self, y, shape: tuple[int, int, int]):
        return y.reshape(*y.shape[:2], *shape)

    def sort_last(self, y):
        return self.jnp.sort(y, axis=-1)

    def mean_members(self, y):
        return self.jnp.mean(y, axis=0)

    def squeeze_last(self, y):
        return y[..., 0]


# -- the transforms ----------------------------------------------------------------------


class TargetTransform:
    """One invertible step on the target columns of the program.

    ``forward(ops, z, inputs)`` maps ``z`` ``(B, steps, K)`` to the model's space and
    returns ``(z, context)``; ``inverse(ops, y, context)`` maps model outputs ``y``
    ``(M, B, horizon, K, Q)`` back. Per-column constants broadcast as ``(K,)`` forward
    and ``(K, 1)`` inverse; per-window context as ``(B, 1, K)`` forward and
    ``(B, 1, K, 1)`` inverse (``ops.unsqueeze_last``). ``inputs`` holds the program's
    inputs by name (``series`` for per-series tables).

    Attributes:
        name: the transform's name in messages and the signature.
        formats: the export formats that can express it.
    """

    name: ClassVar[str] = ""
    formats: ClassVar[tuple[str, ...]] = ("jax", "onnx")

    def forward(self, ops, z, inputs: Mapping[str, Any]):
        raise NotImplementedError

    def inverse(self, ops, y, context):
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The JSON form of the transform, for the artifact's signature."""
        return {"name": self.name}


@dataclasses.dataclass(frozen=True, eq=False)
class Log(TargetTransform):
    """``z = log(z)``; inverse ``exp``. The history must be positive (else NaN)."""

    name: ClassVar[str] = "log"

    def forward(self, ops, z, inputs):
        return ops.log(z), None

    def inverse(self, ops, y, context):
        return ops.exp(y)


@dataclasses.dataclass(frozen=True, eq=False)
class Affine(TargetTransform):
    """A fitted scaler ``z = (z - shift) / scale``; inverse ``y * scale + shift``.

    Attributes:
        kind: the scaler's name (``standard``, ``minmax``).
        shift, scale: ``(K,)`` float64, or ``(N, K)`` per-series tables (a panel: the
            program's ``series`` input picks each window's row).
    """

    kind: str
    shift: np.ndarray
    scale: np.ndarray
    name: ClassVar[str] = "scale"

    @classmethod
    def from_scaler(cls, scaler: Scaler) -> Affine:
        return cls(scaler.kind, np.asarray(scaler.shift), np.asarray(scaler.scale))

    @property
    def per_series(self) -> bool:
        return np.ndim(self.shift) == 2

    def _params(self, ops, inputs):
        if self.per_series:
            return ops.rows(self.shift, inputs["series"]), ops.rows(self.scale, inputs["series"])
        return ops.const(self.shift), ops.const(self.scale)

    def forward(self, ops, z, inputs):
        shift, scale = self._params(ops, inputs)
        return ops.div(ops.sub(z, shift), scale), (shift, scale)

    def inverse(self, ops, y, context):
        shift, scale = context
        if self.per_series:
            shift, scale = ops.unsqueeze_last(shift), ops.unsqueeze_last(scale)
        else:
            shift, scale = ops.const(self.shift[:, None]), ops.const(self.scale[:, None])
        return ops.add(ops.mul(y, scale), shift)

    def describe(self):
        return {
            "name": self.name,
            "kind": self.kind,
            "per_series": self.per_series,
            "shift": np.asarray(self.shift).tolist(),
            "scale": np.asarray(self.scale).tolist(),
        }


@dataclasses.dataclass(frozen=True, eq=False)
class Delta(TargetTransform):
    """Relative to the window's last input row: ``z - z[:, -1]``; inverse ``+ z[:, -1]``."""

    name: ClassVar[str] = "delta"

    def forward(self, ops, z, inputs):
        last = ops.last_step(z)
        return ops.sub(z, last), last

    def inverse(self, ops, y, context):
        return ops.add(y, ops.unsqueeze_last(context))


@dataclasses.dataclass(frozen=True, eq=False)
class RevIN(TargetTransform):
    """Per-window normalisation: ``(z - mean) / max(std, eps)`` over the window's steps.

    The mean and (population) standard deviation are per window and column, over the
    ``steps`` input rows; outputs are de-normalised with them.
    """

    eps: float = 1e-5
    name: ClassVar[str] = "revin"

    def forward(self, ops, z, inputs):
        mean = ops.mean_steps(z)
        centred = ops.sub(z, mean)
        std = ops.sqrt(ops.mean_steps(ops.mul(centred, centred)))
        std = ops.maximum(std, ops.const(self.eps))
        return ops.div(centred, std), (mean, std)

    def inverse(self, ops, y, context):
        mean, std = context
        return ops.add(ops.mul(y, ops.unsqueeze_last(std)), ops.unsqueeze_last(mean))

    def describe(self):
        return {"name": self.name, "eps": self.eps}


@dataclasses.dataclass(frozen=True, eq=False)
class Calendar:
    """``sin, cos`` pairs of calendar positions from integer dates, as
    ``jlstm.data.calendar_features`` computes them from ``datetime64``.

    Attributes:
        names: features from ``CALENDAR_FEATURES``, in the run's order.
        unit: the dates' unit (``DATE_UNITS``); at least as fine as every feature needs.
    """

    names: tuple[str, ...]
    unit: str

    def __post_init__(self):
        for name in self.names:
            if name not in CALENDAR_FEATURES:
                raise DataError(
                    f"unknown calendar feature {name!r}; use some of {list(CALENDAR_FEATURES)}"
                )
            need = _FEATURE_UNIT[name]
            if self.unit not in DATE_UNITS or _FINENESS.index(self.unit) < _FINENESS.index(need):
                raise DataError(
                    f"the calendar feature {name!r} needs dates in {DATE_UNITS[need]} or finer, "
                    f"not {self.unit!r}"
                )

    def positions(self, ops, dates) -> dict[str, tuple[Any, int | float]]:
        """Each feature's integer position and its period: ``phase = position / period``."""
        out = {}
        if self.unit == "M":
            out["month"] = (ops.imod(ops.iadd(dates, _MONTH_OFFSET), 12), 12)
            return out
        hour = None
        if self.unit == "h":
            shifted = ops.iadd(dates, 24 * _Z_OFFSET)
            hour, z = ops.imod(shifted, 24), ops.idiv(shifted, 24)
        else:
            z = ops.iadd(dates, _Z_OFFSET)
        if "hour" in self.names:
            out["hour"] = (hour, 24)
        if "weekday" in self.names:  # 1970-01-01 (day 0) was a Thursday, weekday 3
            out["weekday"] = (ops.imod(ops.iadd(z, (3 - _Z_OFFSET) % 7), 7), 7)
        if "month" in self.names or "yearday" in self.names:
            month, yearday = _civil(ops, z)
            out["month"] = (month, 12)
            out["yearday"] = (yearday, 365.25)
        return out

    def features(self, ops, dates):
        """``(B, steps, 2 * len(names))`` features of ``(B, steps)`` integer dates."""
        positions = self.positions(ops, dates)
        cols = []
        for name in self.names:
            position, period = positions[name]
            angle = ops.mul(ops.to_float(position), ops.const(2.0 * math.pi / period))
            cols += [ops.unsqueeze_last(ops.sin(angle)), ops.unsqueeze_last(ops.cos(angle))]
        return ops.concat_last(cols)

    def describe(self) -> dict[str, Any]:
        return {"features": list(self.names), "unit": self.unit, "encoding": DATE_UNITS[self.unit]}


def _civil(ops, z):
    """``(month, yearday)``, 0-based, of non-negative day numbers ``z`` (``_Z_OFFSET``).

    H. Hinnant's ``civil_from_days``: years start on 1 March inside the computation
    (``mp`` counts months from March), so that the leap day is the year's last day.
    """
    era = ops.idiv(z, _DAYS_PER_ERA)
    doe = ops.isub(z, ops.imul(era, _DAYS_PER_ERA))  # day of era, 0..146096
    yoe = ops.idiv(  # year of era, 0..399
        ops.isub(
            ops.iadd(ops.isub(doe, ops.idiv(doe, 1460)), ops.idiv(doe, 36524)),
            ops.idiv(doe, 146096),
        ),
        365,
    )
    doy = ops.isub(doe, _year_days(ops, yoe))  # day of the March-based year, 0..365
    mp = ops.idiv(ops.iadd(ops.imul(doy, 5), 2), 153)  # 0 = March .. 11 = February
    month = ops.imod(ops.iadd(mp, 2), 12)  # 0 = January
    # 1 January of the civil year is day 306 of March-based year y - 1 + (January/February).
    year = ops.iadd(yoe, ops.imul(era, 400))
    jan_year = ops.iadd(ops.iadd(year, -1 + 400), ops.idiv(mp, 10))  # +400: stays >= 0
    jan_era = ops.idiv(jan_year, 400)
    jan_yoe = ops.isub(jan_year, ops.imul(jan_era, 400))
    jan1 = ops.iadd(
        ops.iadd(ops.imul(jan_era, _DAYS_PER_ERA), _year_days(ops, jan_yoe)),
        306 - _DAYS_PER_ERA,  # undo the +400 years
    )
    return month, ops.isub(z, jan1)


def _year_days(ops, yoe):
    """Days from the era's start to 1 March of its year ``yoe``: ``365 y + y//4 - y//100``."""
    return ops.isub(ops.iadd(ops.imul(yoe, 365), ops.idiv(yoe, 4)), ops.idiv(yoe, 100))


# -- building a forecaster from a fitted pipeline -------------------------------------------

# The target transforms of a pipeline, in forward order: (name, is it used?, the step).
# A transform added to the pipeline gets one row here (and, if new, one class above). The
# per-window normalisation of a pipeline with a `revin` window mode is the row
#     ("revin", lambda p: <the pipeline uses revin>, lambda p: RevIN(<its std floor>)),
# after "scale"; a panel's per-series scaling is an `Affine` whose shift and scale are the
# stacked (S, K) tables of its series' scalers, with `Forecaster(series=S)`.
TARGET_TRANSFORMS: tuple[
    tuple[str, Callable[[Pipeline], bool], Callable[[Pipeline], TargetTransform]], ...
] = (
    ("log", lambda p: p.config.log, lambda p: Log()),
    ("scale", lambda p: p.config.scaler != "none", lambda p: Affine.from_scaler(p.target_scaler)),
    ("delta", lambda p: p.config.delta, lambda p: Delta()),
)


@dataclasses.dataclass(frozen=True, eq=False)
class Forecaster:
    """A fitted pipeline and its model (or ensemble) as one program in original units.

    Build one with ``Forecaster.from_pipeline`` or ``Forecaster.from_checkpoint``; run
    it in JAX with ``forecaster(history=..., dates=...)``, or export it
    (``jlstm.export.export_forecaster``).

    Attributes:
        config, params: the model (an ensemble's ``params`` stacked on a member axis).
        steps, horizon: input rows per window and forecast rows.
        targets, covariates: column names, ``K`` and ``C`` of them.
        transforms: the target transforms, in forward order.
        covariate_scale: the covariates' fitted ``Affine`` (``None``: no covariates or
            the ``none`` scaler).
        calendar: the calendar features (``None``: none).
        members: an ensemble's member count (``None``: one model).
        quantiles: a quantile head's levels (``()``: a point forecast).
        series: a panel's series count (``None``: one series); adds the ``series`` input.
    """

    config: ModelConfig
    params: ModelParams
    steps: int
    horizon: int
    targets: tuple[str, ...]
    covariates: tuple[str, ...] = ()
    transforms: tuple[TargetTransform, ...] = ()
    covariate_scale: Affine | None = None
    calendar: Calendar | None = None
    members: int | None = None
    quantiles: tuple[float, ...] = ()
    series: int | None = None

    def __post_init__(self):
        features = len(self.targets) + len(self.covariates)
        if self.calendar is not None:
            features += 2 * len(self.calendar.names)
        outputs = self.horizon * len(self.targets) * max(1, len(self.quantiles))
        if (self.config.input_size, self.config.output_size) != (features, outputs):
            raise DataError(
                f"the model takes {self.config.input_size} features and gives "
                f"{self.config.output_size} outputs, but the pipeline makes {features} features "
                f"and reads {outputs} outputs (horizon {self.horizon} x {len(self.targets)} "
                f"targets"
                + (f" x {len(self.quantiles)} quantiles" if self.quantiles else "")
                + "): the model was not trained with this pipeline"
            )
        per_series = any(getattr(t, "per_series", False) for t in self.transforms)
        if per_series and self.series is None:
            raise DataError("per-series scaling needs the panel's series count (series=N)")

    @classmethod
    def from_pipeline(
        cls,
        pipeline: Pipeline,
        config: ModelConfig,
        params: ModelParams,
        *,
        members: int | None = None,
        quantiles: Sequence[float] = (),
    ) -> Forecaster:
        """The forecaster of a fitted ``pipeline`` and the model trained on its windows.

        Args:
            pipeline: the fitted ``Pipeline`` (``Pipeline.from_state`` of a run).
            config, params: the model; an ensemble's params stacked on a member axis.
            members: the ensemble's member count, ``None`` for one model.
            quantiles: the levels of a quantile head, ``()`` for a point forecast.

        Raises:
            DataError: the model's sizes do not fit the pipeline.
        """
        cfg = pipeline.config
        transforms = tuple(make(pipeline) for _, used, make in TARGET_TRANSFORMS if used(pipeline))
        cov = None
        if pipeline.covariate_scaler is not None and cfg.scaler != "none":
            cov = Affine.from_scaler(pipeline.covariate_scaler)
        calendar = Calendar(cfg.calendar, date_unit(cfg.calendar)) if cfg.calendar else None
        return cls(
            config,
            params,
            cfg.steps,
            cfg.horizon,
            pipeline.target_names,
            pipeline.covariate_names,
            transforms,
            cov,
            calendar,
            members,
            tuple(float(q) for q in quantiles),
        )

    @classmethod
    def from_checkpoint(cls, path) -> Forecaster:
        """The forecaster of a ``jlstm train`` checkpoint directory (its pipeline and model).

        Raises:
            CheckpointError: no complete checkpoint, or one without a stored pipeline.
        """
        ckpt = load_checkpoint(path)
        if "pipeline" not in ckpt.meta:
            raise CheckpointError(
                f"{str(path)!r} holds a model without a data pipeline (not a `jlstm train` "
                "run): export the bare model (`jlstm export --raw`, jlstm.export.export_model)"
            )
        try:
            pipeline = Pipeline.from_state(ckpt.meta["pipeline"], ckpt.arrays)
            # A quantile head's levels go to `quantiles=` once runs record them.
            return cls.from_pipeline(
                pipeline, ckpt.model_config, ckpt.state.params, members=ensemble_size(ckpt.state)
            )
        except DataError as err:
            raise CheckpointError(f"{str(path)!r}: {err}") from None

    # -- the program ---------------------------------------------------------------------

    @property
    def input_names(self) -> tuple[str, ...]:
        names = ["history"]
        if self.covariates:
            names.append("covariates")
        if self.calendar is not None:
            names.append("dates")
        if self.series is not None:
            names.append("series")
        return tuple(names)

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("forecast", "spread") if self.members is not None else ("forecast",)

    def unsupported(self, format: str) -> list[str]:
        """The transforms that ``format`` cannot express (names, in order)."""
        return [t.name for t in self.transforms if format not in t.formats]

    def __call__(self, **inputs) -> dict[str, Any]:
        """Run the program in JAX: keyword inputs (``input_names``) -> ``{"forecast", ...}``.

        Not jitted (wrap it in ``jax.jit``); ``jlstm.export`` exports exactly this.
        """
        missing = set(self.input_names) - set(inputs)
        extra = set(inputs) - set(self.input_names)
        if missing or extra:
            raise TypeError(
                f"the forecaster takes the inputs {list(self.input_names)}; missing "
                f"{sorted(missing)}, unknown {sorted(extra)}"
            )
        return run_program(self, JaxOps(self.config, self.params, self.members), inputs)

    # -- the signature -------------------------------------------------------------------

    def signature(self, *, date_dtype: str = "int64") -> dict[str, Any]:
        """The JSON description of the program's inputs, outputs and transforms.

        Stored in every exported artifact (ONNX ``metadata_props["jlstm.signature"]``,
        ``signature.json`` in a jax bundle). ``date_dtype`` is the format's integer type.
        """
        from . import __version__

        dtype = self.config.param_dtype
        k, q = len(self.targets), len(self.quantiles)
        inputs: dict[str, Any] = {
            "history": {
                "shape": ["batch", self.steps, k],
                "dtype": dtype,
                "columns": list(self.targets),
                "meaning": f"the last {self.steps} rows of the targets in original units, "
                "oldest first",
            }
        }
        if self.covariates:
            inputs["covariates"] = {
                "shape": ["batch", self.steps, len(self.covariates)],
                "dtype": dtype,
                "columns": list(self.covariates),
                "meaning": "the covariates of the same rows, in original units",
            }
        if self.calendar is not None:
            inputs["dates"] = {
                "shape": ["batch", self.steps],
                "dtype": date_dtype,
                "unit": self.calendar.unit,
                "encoding": DATE_UNITS[self.calendar.unit],
                "meaning": f"the dates of the same rows as integer {DATE_UNITS[self.calendar.unit]}"
                f" (numpy: dates.astype('datetime64[{self.calendar.unit}]').astype('int64'))",
            }
        if self.series is not None:
            inputs["series"] = {
                "shape": ["batch"],
                "dtype": date_dtype,
                "meaning": f"each window's series index, 0..{self.series - 1}",
            }
        shape = ["batch", self.horizon, k] + ([q] if q else [])
        outputs: dict[str, Any] = {
            "forecast": {
                "shape": shape,
                "dtype": dtype,
                "columns": list(self.targets),
                "meaning": f"the {self.horizon} rows after the last history row, in original "
                "units"
                + (", one value per quantile (last axis)" if q else "")
                + (": the members' mean" if self.members is not None else ""),
            }
        }
        if self.members is not None:
            outputs["spread"] = {
                "shape": shape,
                "dtype": dtype,
                "columns": list(self.targets),
                "meaning": f"the standard deviation (ddof=1) of the {self.members} members' "
                "forecasts",
            }
        return {
            "format": FORECASTER_FORMAT,
            "version": FORECASTER_VERSION,
            "producer": f"jlstm {__version__}",
            "inputs": inputs,
            "outputs": outputs,
            "steps": self.steps,
            "horizon": self.horizon,
            "transforms": [t.describe() for t in self.transforms],
            "covariate_scale": None
            if self.covariate_scale is None
            else self.covariate_scale.describe(),
            "calendar": None if self.calendar is None else self.calendar.describe(),
            "quantiles": list(self.quantiles),
            "members": self.members,
            "model": {
                "layers": list(self.config.layer_sizes),
                "input_size": self.config.input_size,
                "output_size": self.config.output_size,
            },
        }


def run_program(forecaster: Forecaster, ops, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The forecaster's program on ``ops``' values: ``inputs`` by name -> outputs by name.

    The one definition both backends run (``JaxOps`` here, ``OnnxOps`` for ONNX).
    """
    z = inputs["history"]
    contexts = []
    for transform in forecaster.transforms:
        z, context = transform.forward(ops, z, inputs)
        contexts.append(context)
    parts = [z]
    if forecaster.covariates:
        cov = inputs["covariates"]
        if forecaster.covariate_scale is not None:
            cov, _ = forecaster.covariate_scale.forward(ops, cov, inputs)
        parts.append(cov)
    if forecaster.calendar is not None:
        parts.append(forecaster.calendar.features(ops, inputs["dates"]))
    x = ops.concat_last(parts) if len(parts) > 1 else z
    q = len(forecaster.quantiles)
    y = ops.heads(ops.model(x), (forecaster.horizon, len(forecaster.targets), max(q, 1)))
    if q > 1:
        y = ops.sort_last(y)  # non-crossing; the inverse transforms are increasing
    for transform, context in zip(reversed(forecaster.transforms), reversed(contexts), strict=True):
        y = transform.inverse(ops, y, context)
    mean = ops.mean_members(y)  # (B, horizon, K, Q)
    out = {"forecast": mean}
    if forecaster.members is not None:
        m = forecaster.members
        centred = ops.sub(y, mean)
        variance = ops.mean_members(ops.mul(centred, centred))
        out["spread"] = ops.sqrt(ops.mul(variance, ops.const(m / (m - 1) if m > 1 else 0.0)))
    if not q:
        out = {name: ops.squeeze_last(value) for name, value in out.items()}
    return out
