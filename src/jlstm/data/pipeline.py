"""From a ``Series`` to model windows and back to original units.

The preprocessing, in order, each step optional and recorded in a
``FeatureConfig`` (and so in every checkpoint):

1. ``log``: take the natural log of the targets (they must be positive), so a
   multiplicative trend and season become additive.
2. Scale the (logged) targets and the covariates with a scaler fitted on the
   training segment only.
3. Add calendar features computed from the dates (``month``: month of year as
   ``sin, cos``; ``yearday``: day of year; ``weekday``; ``hour``), each a pair
   in ``[-1, 1]`` that needs no scaling.
4. Cut each split segment into windows separately (no window spans two splits).
5. The window mode of the ``transform``: ``delta`` expresses the target inputs
   and the targets relative to the last input value, so the model forecasts the
   change from the last observation (a trending series then looks stationary to
   the model); ``revin`` centres them on the window's own mean and divides by its
   own standard deviation (``jlstm.data.transforms.window_stats``).

The ``transform`` (``FeatureConfig.transform``) names steps 1 and 5 together:
``none``, ``log``, ``delta``, ``log_delta``, ``revin``, ``log_revin``, or ``auto``,
which ``Pipeline.fit`` resolves from the training rows
(``jlstm.data.transforms.choose_transform``) and records with its evidence.

``Pipeline.to_original`` inverts steps 5, 2 and 1, so every metric is computed
in the series' own units.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from ..validation import check_fields, check_int
from .errors import DataError
from .scalers import SCALERS, Scaler, fit_scaler
from .series import Series
from .transforms import (
    AUTO,
    TRANSFORMS,
    TransformChoice,
    choose_transform,
    compose_transform,
    split_transform,
    window_stats,
)
from .windows import SplitBounds, make_windows, split_bounds

__all__ = [
    "CALENDAR_FEATURES",
    "Encoded",
    "FeatureConfig",
    "Pipeline",
    "Windows",
    "calendar_features",
    "window_targets",
]

CALENDAR_FEATURES = ("month", "yearday", "weekday", "hour")


def calendar_features(dates: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """``(T, 2 * len(names))`` float64 ``sin, cos`` pairs of cyclic calendar positions.

    Args:
        dates: ``(T,)`` ``datetime64``.
        names: from ``CALENDAR_FEATURES``: ``month`` (of year), ``yearday`` (day of
            year over 365.25), ``weekday`` (Monday = 0), ``hour`` (of day).
    """
    cols = []
    for name in names:
        if name == "month":
            phase = (dates.astype("datetime64[M]").astype(np.int64) % 12) / 12.0
        elif name == "yearday":
            day = dates.astype("datetime64[D]")
            phase = (day - day.astype("datetime64[Y]")).astype(np.int64) / 365.25
        elif name == "weekday":
            # 1970-01-01 was a Thursday (weekday 3).
            phase = ((dates.astype("datetime64[D]").astype(np.int64) + 3) % 7) / 7.0
        elif name == "hour":
            phase = (dates.astype("datetime64[h]").astype(np.int64) % 24) / 24.0
        else:
            raise DataError(
                f"unknown calendar feature {name!r}; use some of {list(CALENDAR_FEATURES)}"
            )
        cols += [np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)]
    return np.stack(cols, axis=-1) if cols else np.zeros((len(dates), 0))


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How a series becomes windows (JSON-able, stored in every checkpoint).

    Attributes:
        steps: input rows per window (the look-back; the seed model uses 4).
        horizon: target rows per window; the model's head has ``horizon * K``
            outputs (a direct multi-output forecast when ``> 1``).
        stride: rows between consecutive windows.
        val_size, test_size: rows (integer ``>= 1``) or fraction in ``(0, 1)`` of the
            series for the validation and test segments (the last rows are test).
        scaler: ``"standard"``, ``"minmax"`` or ``"none"``, fitted on train rows.
        log: model the log of the targets (the ``log`` part of ``transform``).
        delta: model the change relative to the last input value (``transform``'s
            ``delta`` window mode).
        calendar: calendar features from the dates, names from ``CALENDAR_FEATURES``.
        transform: ``none``, ``log``, ``delta``, ``log_delta``, ``revin``,
            ``log_revin`` or ``auto`` (``Pipeline.fit`` chooses from the training
            rows). ``log`` and ``delta`` add to it (``transform="delta", log=True``
            is ``log_delta``) and are kept equal to its parts, so either spelling
            reads the same; ``auto`` with either is an error (it chooses them).
    """

    steps: int = 4
    horizon: int = 1
    stride: int = 1
    val_size: float | int = 0.15
    test_size: float | int = 0.15
    scaler: str = "standard"
    log: bool = False
    delta: bool = False
    calendar: tuple[str, ...] = ()
    transform: str = "none"

    def __post_init__(self):
        calendar = self.calendar
        if isinstance(calendar, str):
            calendar = tuple(c for c in calendar.split(",") if c)
        object.__setattr__(self, "calendar", tuple(calendar))
        for name in ("steps", "horizon", "stride"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), error=DataError))
        if self.scaler not in SCALERS:
            raise DataError(f"unknown scaler {self.scaler!r}; use one of {list(SCALERS)}")
        for name in self.calendar:
            if name not in CALENDAR_FEATURES:
                raise DataError(
                    f"unknown calendar feature {name!r}; use some of {list(CALENDAR_FEATURES)}"
                )
        if len(set(self.calendar)) != len(self.calendar):
            raise DataError(f"calendar features repeat: {self.calendar}")
        for name in ("log", "delta"):
            if not isinstance(getattr(self, name), bool):
                raise DataError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.transform not in TRANSFORMS:
            raise DataError(
                f"unknown transform {self.transform!r}; use one of {', '.join(TRANSFORMS)}"
            )
        if self.transform == AUTO:
            if self.log or self.delta:
                raise DataError(
                    "transform auto chooses log and delta itself: drop log/delta, or name "
                    "the transform (e.g. log_delta)"
                )
            return
        log, window = split_transform(self.transform)
        if self.delta and window == "revin":
            raise DataError(
                f"transform {self.transform} and delta both normalise each window: drop "
                "delta, or use transform delta"
            )
        window = "delta" if self.delta else window
        object.__setattr__(self, "transform", compose_transform(log or self.log, window))
        object.__setattr__(self, "log", log or self.log)
        object.__setattr__(self, "delta", window == "delta")

    @property
    def window_mode(self) -> str:
        """``"none"``, ``"delta"`` or ``"revin"`` (``"none"`` before ``auto`` is resolved)."""
        return "none" if self.transform == AUTO else split_transform(self.transform)[1]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["calendar"] = list(self.calendar)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        check_fields(cls, data, error=DataError)
        data = dict(data)
        if "calendar" in data and isinstance(data["calendar"], list):
            data["calendar"] = tuple(data["calendar"])
        return cls(**data)


class Windows(NamedTuple):
    """The model-ready windows of one split segment.

    Attributes:
        x: ``(N, steps, D)`` float32 model inputs, ``D = K + C + 2 * len(calendar)``:
            target levels (scaled, then ``(level - last) / scale``), then scaled
            covariates, then calendar pairs.
        y: ``(N, horizon, K)`` float32 model targets (same space as ``x``'s levels).
        origin: ``(N,)`` int64 row index of each window's last input row; the
            targets are rows ``origin + 1 .. origin + horizon``.
        last: ``(N, K)`` float64 scaled level each window is centred on: the level at
            ``origin`` with ``delta``, the window mean with ``revin``, else zeros.
        scale: ``(N, K)`` float64 what each window is divided by: the window's
            standard deviation with ``revin``, else ones (``None``: ones).
    """

    x: np.ndarray
    y: np.ndarray
    origin: np.ndarray
    last: np.ndarray
    scale: np.ndarray | None = None


class Encoded(NamedTuple):
    """``Pipeline.encode``'s result: model inputs and the window statistics to invert them.

    Attributes:
        x: ``(N, steps, D)`` float32 model inputs.
        last: ``(N, K)`` float64 centre of each window (see ``Windows.last``).
        scale: ``(N, K)`` float64 scale of each window (see ``Windows.scale``).
    """

    x: np.ndarray
    last: np.ndarray
    scale: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Pipeline:
    """A ``FeatureConfig`` with its scalers fitted on a series' training segment.

    Build one with ``Pipeline.fit``; rebuild one from a checkpoint with
    ``Pipeline.from_state``.

    Attributes:
        config: the ``FeatureConfig`` (its ``transform`` resolved, never ``auto``).
        target_scaler: fitted on the train rows of the (logged) targets, ``K`` columns.
        covariate_scaler: fitted on the train rows of the covariates, or ``None``.
        target_names, covariate_names: the column names it was fitted on.
        transform_choice: how ``transform="auto"`` was resolved, with its evidence
            (``None`` when the transform was given).
    """

    config: FeatureConfig
    target_scaler: Scaler
    covariate_scaler: Scaler | None
    target_names: tuple[str, ...]
    covariate_names: tuple[str, ...] = ()
    transform_choice: TransformChoice | None = None

    @property
    def n_targets(self) -> int:
        return len(self.target_names)

    @property
    def input_size(self) -> int:
        """``D``, features per step of the model input."""
        return self.n_targets + len(self.covariate_names) + 2 * len(self.config.calendar)

    @property
    def output_size(self) -> int:
        """``horizon * K``, outputs of the model head."""
        return self.config.horizon * self.n_targets

    @classmethod
    def fit(cls, series: Series, config: FeatureConfig, *, season: int = 1) -> Pipeline:
        """Check ``series`` against ``config`` and fit the scalers on its training rows.

        A ``transform="auto"`` is resolved first, from the training rows alone
        (``choose_transform``; ``season`` sets the block length of its log test).

        Raises:
            DataError: series too short for the windows and splits, ``log`` on
                non-positive values, calendar features without dates, a constant
                target or covariate on the training rows.
        """
        bounds = cls.bounds_for(series, config)
        if config.calendar and series.dates is None:
            raise DataError(
                f"calendar features {list(config.calendar)} need a date column; "
                "pass --date-column or drop --calendar"
            )
        choice = None
        if config.transform == AUTO:
            choice = choose_transform(
                series.values[: bounds.train],
                series.target_names,
                season=season,
                positive=np.all(series.values > 0, axis=0),
            )
            config = dataclasses.replace(config, transform=choice.transform)
        if config.log:
            low = series.values.min(axis=0)
            for k in np.flatnonzero(low <= 0):
                raise DataError(
                    f"the log transform needs positive values but target "
                    f"{series.target_names[k]!r} has minimum {low[k]:g}; use --no-log or "
                    "a --transform without log"
                )
        train = slice(0, bounds.train)
        values = np.log(series.values) if config.log else series.values
        target_scaler = fit_scaler(
            config.scaler, values[train], [f"target {n!r}" for n in series.target_names]
        )
        cov_scaler = None
        if series.covariate_names:
            cov_scaler = fit_scaler(
                config.scaler,
                series.covariates[train],
                [f"covariate {n!r}" for n in series.covariate_names],
            )
        return cls(
            config,
            target_scaler,
            cov_scaler,
            series.target_names,
            series.covariate_names,
            choice,
        )

    @staticmethod
    def bounds_for(series: Series, config: FeatureConfig) -> SplitBounds:
        """The chronological split of ``series`` under ``config`` (see ``split_bounds``)."""
        return split_bounds(
            len(series),
            config.val_size,
            config.test_size,
            steps=config.steps,
            horizon=config.horizon,
        )

    # -- state for checkpoints ------------------------------------------------------

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(json_dict, arrays)``: everything ``from_state`` needs, no pickle."""
        meta = {
            "features": self.config.to_dict(),
            "target_names": list(self.target_names),
            "covariate_names": list(self.covariate_names),
        }
        if self.transform_choice is not None:
            meta["transform_choice"] = self.transform_choice.to_dict()
        arrays = {f"target_{k}": v for k, v in self.target_scaler.to_arrays().items()}
        if self.covariate_scaler is not None:
            arrays |= {f"covariate_{k}": v for k, v in self.covariate_scaler.to_arrays().items()}
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Pipeline:
        """Rebuild a pipeline from ``to_state``'s output (e.g. read back from a checkpoint).

        Raises:
            DataError: a field or array is missing or malformed; the message names it
                (``features.scaler``, ``target_shift``, ...).
        """

        def field(name: str, kind: type):
            if not isinstance(meta, dict) or name not in meta:
                raise DataError(f"the stored pipeline has no {name!r} field")
            value = meta[name]
            if not isinstance(value, kind):
                raise DataError(
                    f"the stored pipeline's {name!r} is {value!r}, expected a {kind.__name__}"
                )
            return value

        try:
            config = FeatureConfig.from_dict(field("features", dict))
        except (TypeError, ValueError) as err:  # DataError is a ValueError
            raise DataError(f"the stored pipeline's 'features' are invalid: {err}") from None
        names = {}
        for key in ("target_names", "covariate_names"):
            value = field(key, list)
            if not all(isinstance(n, str) for n in value):
                raise DataError(f"the stored pipeline's {key!r} must be a list of strings")
            names[key] = tuple(value)
        target_names, covariate_names = names["target_names"], names["covariate_names"]
        if not target_names:
            raise DataError("the stored pipeline's 'target_names' is empty")
        if config.transform == AUTO:
            raise DataError("the stored pipeline's transform is 'auto', never resolved")
        choice = None
        if meta.get("transform_choice") is not None:
            choice = TransformChoice.from_dict(field("transform_choice", dict))

        def scaler(prefix: str, columns: int) -> Scaler:
            parts = {}
            for k in ("shift", "scale"):
                name = f"{prefix}_{k}"
                if name not in arrays:
                    raise DataError(f"the stored pipeline has no scaler array {name!r}")
                value = np.asarray(arrays[name])
                if value.dtype.kind not in "iuf" or value.shape != (columns,):
                    raise DataError(
                        f"the stored scaler array {name!r} is {value.dtype}{list(value.shape)}, "
                        f"expected {columns} float values (one per column)"
                    )
                if not np.all(np.isfinite(value)) or (k == "scale" and np.any(value <= 0)):
                    raise DataError(
                        f"the stored scaler array {name!r} has non-finite or (for scale) "
                        "non-positive values"
                    )
                parts[k] = value
            return Scaler.from_arrays(config.scaler, parts)

        target = scaler("target", len(target_names))
        cov = scaler("covariate", len(covariate_names)) if covariate_names else None
        return cls(config, target, cov, target_names, covariate_names, choice)

    def check_series(self, series: Series) -> None:
        """Raise a ``DataError`` unless ``series`` has the columns this pipeline was fitted on."""
        if (series.target_names, series.covariate_names) != (
            self.target_names,
            self.covariate_names,
        ):
            raise DataError(
                f"the series has targets {list(series.target_names)} and covariates "
                f"{list(series.covariate_names)}, but the model was trained on targets "
                f"{list(self.target_names)} and covariates {list(self.covariate_names)}"
            )
        if self.config.calendar and series.dates is None:
            raise DataError("the model uses calendar features: the series needs its dates")

    # -- forward: series -> model space -----------------------------------------------

    def levels(self, values: np.ndarray) -> np.ndarray:
        """``(T, K)`` target values -> ``(T, K)`` float64 scaled (logged) levels."""
        values = np.asarray(values, np.float64)
        return self.target_scaler.transform(np.log(values) if self.config.log else values)

    def extras(self, covariates: np.ndarray, dates: np.ndarray | None) -> np.ndarray:
        """``(T, C)`` covariates and ``(T,)`` dates -> ``(T, E)`` float64 extra inputs."""
        parts = []
        if self.covariate_scaler is not None:
            parts.append(self.covariate_scaler.transform(covariates))
        if self.config.calendar:
            parts.append(calendar_features(dates, self.config.calendar))
        rows = len(covariates)
        return np.concatenate(parts, axis=-1) if parts else np.zeros((rows, 0))

    def encode(self, levels: np.ndarray, extras: np.ndarray) -> Encoded:
        """Window levels ``(N, steps, K)`` and extras ``(N, steps, E)`` -> model inputs.

        Returns:
            ``Encoded(x, last, scale)``: ``x`` ``(N, steps, D)`` float32, and the
            ``(N, K)`` float64 centre and scale of each window (``window_stats``): the
            target inputs are ``(levels - last) / scale``.
        """
        levels = np.asarray(levels, np.float64)
        last, scale = window_stats(levels, self.config.window_mode)
        with np.errstate(over="ignore", invalid="ignore"):  # windows() refuses non-finite x
            z = (levels - last[:, None]) / scale[:, None]
            x = np.concatenate([z, extras], axis=-1).astype(np.float32)
        return Encoded(x, last, scale)

    def windows(self, series: Series) -> dict[str, Windows]:
        """The ``train``, ``val`` and ``test`` windows of ``series`` (no window spans two)."""
        self.check_series(series)
        levels = self.levels(series.values)
        extras = self.extras(series.covariates, series.dates)
        cfg = self.config
        out = {}
        for name, (start, stop) in self.bounds_for(series, cfg).segments().items():
            lw, ly = make_windows(levels[start:stop], cfg.steps, cfg.horizon, cfg.stride)
            ew, _ = make_windows(extras[start:stop], cfg.steps, cfg.horizon, cfg.stride)
            x, last, scale = self.encode(lw, ew)
            if not np.all(np.isfinite(x)):
                raise DataError(
                    f"the {name} segment's scaled values overflow float32 (they are far outside "
                    "the training range): rescale the series or use the log transform"
                )
            origin = start + np.arange(len(x), dtype=np.int64) * cfg.stride + cfg.steps - 1
            y = ((ly - last[:, None]) / scale[:, None]).astype(np.float32)
            out[name] = Windows(x, y, origin, last, scale)
        return out

    # -- backward: model space -> original units -----------------------------------------

    def to_levels(
        self, outputs: np.ndarray, last: np.ndarray, scale: np.ndarray | None = None
    ) -> np.ndarray:
        """Model outputs ``(N, horizon * K)`` or ``(N, horizon, K)`` -> ``(N, horizon, K)``
        float64 scaled levels (``outputs * scale + last``; ``scale`` ``None``: ones)."""
        out, last = np.asarray(outputs, np.float64), np.asarray(last, np.float64)
        want = (len(last), self.config.horizon * self.n_targets)
        if last.shape != (want[0], self.n_targets) or out.size != want[0] * want[1]:
            raise DataError(
                f"model outputs {list(out.shape)} and levels {list(last.shape)} do not fit this "
                f"pipeline: expected ({want[0]}, {want[1]}) or ({want[0]}, "
                f"{self.config.horizon}, {self.n_targets}) outputs and ({want[0]}, "
                f"{self.n_targets}) levels (horizon {self.config.horizon}, "
                f"{self.n_targets} targets); was the model trained with this pipeline?"
            )
        out = out.reshape(want[0], self.config.horizon, self.n_targets)
        if scale is not None:
            scale = np.asarray(scale, np.float64)
            if scale.shape != last.shape:
                raise DataError(
                    f"window scales {list(scale.shape)} do not match the levels "
                    f"{list(last.shape)}: pass the scale that encode() returned"
                )
            out = out * scale[:, None]
        elif self.config.window_mode == "revin":
            raise DataError(
                "a revin pipeline maps outputs back with each window's scale: pass the "
                "scale that encode() or windows() returned"
            )
        return out + last[:, None]

    def from_levels(self, levels: np.ndarray) -> np.ndarray:
        """Scaled levels ``(..., K)`` -> ``(..., K)`` float64 values in original units."""
        values = self.target_scaler.inverse(levels)
        return np.exp(values) if self.config.log else values

    def to_original(
        self, outputs: np.ndarray, last: np.ndarray, scale: np.ndarray | None = None
    ) -> np.ndarray:
        """Model outputs for windows with ``last`` (and ``scale``) -> ``(N, horizon, K)``
        original units."""
        return self.from_levels(self.to_levels(outputs, last, scale))


def window_targets(series: Series, origin: np.ndarray, horizon: int) -> np.ndarray:
    """The true values ``(N, horizon, K)`` (original units) after each ``origin`` row."""
    return series.values[np.asarray(origin)[:, None] + 1 + np.arange(horizon)]
