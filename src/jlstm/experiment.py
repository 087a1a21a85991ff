"""Forecasting experiments: settings -> data, pipeline and configs -> a run directory.

The library function under ``jlstm train|evaluate|predict``; notebooks and the
README call it too::

    from jlstm.experiment import Settings, run_training, evaluate_run, predict_run

    result = run_training(Settings(dataset="nile", epochs=50), "runs/nile")
    print(result.report["test"]["model"]["rmse"])
    print(evaluate_run("runs/nile").scores["test"])
    print(predict_run("runs/nile", 5).csv)

A run directory holds::

    checkpoint/       config.json + arrays.npz (resume, evaluate, predict from it)
    history.json/csv  loss and validation loss per epoch
    metrics.json      test (and validation) metrics of the model and the baselines
    predictions.csv   the test forecasts next to the actual values and baselines
    forecast.png      the series with the test period zoomed in and the future forecast

Errors: bad settings or data raise ``ValueError`` subclasses (``SettingsError``,
``jlstm.data.DataError``, ``jlstm.checkpoint.CheckpointError``), file-system
problems ``OSError`` (``jlstm.fileio.LockedError`` for a run directory in use),
an interrupted run ``TrainingInterrupted``, a model whose forecasts are not
finite ``NonFiniteError``. Nothing is written before every input is checked.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import importlib.resources
import io
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TextIO

import numpy as np

from . import checkpoint, fileio, metrics
from .data import (
    DEFAULT_DATASET,
    FILL_POLICIES,
    DataError,
    FeatureConfig,
    Pipeline,
    Series,
    Windows,
    dataset_info,
    feature_defaults,
    future_dates,
    load_csv,
    load_dataset,
    parse_dates,
    season_from_dates,
    window_targets,
)
from .forecast import one_step, recursive
from .model import ModelConfig
from .train import FitState, TrainConfig, check_int, fit

__all__ = [
    "MAX_FORECAST",
    "Evaluation",
    "Experiment",
    "NonFiniteError",
    "Prediction",
    "Progress",
    "Settings",
    "SettingsError",
    "TrainingInterrupted",
    "TrainingResult",
    "check_setting",
    "evaluate_run",
    "format_dates",
    "history_csv",
    "predict_run",
    "run_training",
    "verdict",
    "write_history",
    "write_metrics",
    "write_plot",
    "write_predictions",
]

MAX_FORECAST = 1_000_000
GROUPS = ("data", "features", "model", "train")
BASELINES = {"naive": "persistence", "seasonal_naive": "seasonal naive"}


class SettingsError(ValueError):
    """A setting with a bad value; ``.name`` is the setting."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


class NonFiniteError(ArithmeticError):
    """The model's forecasts or metrics are not finite numbers."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM during training. ``.resumable``: a checkpoint is there to resume."""

    def __init__(self, message: str, *, resumable: bool, out: str):
        super().__init__(message)
        self.resumable = resumable
        self.out = out


# -- settings ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every choice of a forecasting run, by the names of the ``jlstm train`` flags.

    ``group`` in each field's metadata is the TOML table it belongs to. Values are
    checked by the configs they build (``FeatureConfig``, ``ModelConfig``,
    ``TrainConfig``): ``Settings(...)`` raises ``SettingsError`` naming the field.
    ``dataset`` and ``data`` are exclusive; with neither, the default dataset.
    """

    # data
    dataset: str | None = dataclasses.field(default=None, metadata={"group": "data"})
    data: str | None = dataclasses.field(default=None, metadata={"group": "data"})
    target: tuple[str, ...] | None = dataclasses.field(default=None, metadata={"group": "data"})
    covariates: tuple[str, ...] = dataclasses.field(default=(), metadata={"group": "data"})
    date_column: str | None = dataclasses.field(default=None, metadata={"group": "data"})
    date_format: str | None = dataclasses.field(default=None, metadata={"group": "data"})
    fill: str = dataclasses.field(default="error", metadata={"group": "data"})
    season: int | None = dataclasses.field(default=None, metadata={"group": "data"})
    # features
    steps: int = dataclasses.field(default=4, metadata={"group": "features"})
    horizon: int = dataclasses.field(default=1, metadata={"group": "features"})
    stride: int = dataclasses.field(default=1, metadata={"group": "features"})
    val_size: int | float = dataclasses.field(default=0.15, metadata={"group": "features"})
    test_size: int | float = dataclasses.field(default=0.15, metadata={"group": "features"})
    scaler: str = dataclasses.field(default="standard", metadata={"group": "features"})
    log: bool = dataclasses.field(default=False, metadata={"group": "features"})
    delta: bool = dataclasses.field(default=False, metadata={"group": "features"})
    calendar: tuple[str, ...] = dataclasses.field(default=(), metadata={"group": "features"})
    # model
    layers: tuple[int, ...] = dataclasses.field(default=(64, 32, 16), metadata={"group": "model"})
    dropout: float = dataclasses.field(default=0.0, metadata={"group": "model"})
    recurrent_dropout: float = dataclasses.field(default=0.0, metadata={"group": "model"})
    # train
    epochs: int = dataclasses.field(default=300, metadata={"group": "train"})
    batch_size: int = dataclasses.field(default=16, metadata={"group": "train"})
    lr: float = dataclasses.field(default=1e-3, metadata={"group": "train"})
    optimizer: str = dataclasses.field(default="adam", metadata={"group": "train"})
    schedule: str = dataclasses.field(default="constant", metadata={"group": "train"})
    warmup_epochs: int = dataclasses.field(default=0, metadata={"group": "train"})
    clip_norm: float | None = dataclasses.field(default=None, metadata={"group": "train"})
    loss: str = dataclasses.field(default="mse", metadata={"group": "train"})
    patience: int | None = dataclasses.field(default=50, metadata={"group": "train"})
    seed: int = dataclasses.field(default=0, metadata={"group": "train"})
    checkpoint_every: int = dataclasses.field(default=10, metadata={"group": "train"})

    def __post_init__(self):
        for name in ("target", "covariates", "calendar", "layers"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.dataset is None and self.data is None:
            object.__setattr__(self, "dataset", DEFAULT_DATASET)
        if self.dataset is not None and self.data is not None:
            raise SettingsError("data", "data and dataset are exclusive: pick a file or a built-in")
        for f in dataclasses.fields(self):
            check_setting(f.name, getattr(self, f.name))
        if self.dataset is not None:
            for name in ("target", "covariates", "date_column", "date_format"):
                if getattr(self, name):
                    raise SettingsError(
                        name,
                        f"{name} applies to your own data file; a built-in dataset has fixed "
                        "columns",
                    )

    @classmethod
    def resolve(cls, given: Mapping[str, Any]) -> Settings:
        """Settings from ``given`` values > the built-in dataset's preprocessing > defaults."""
        unknown = set(given) - set(cls.names())
        if unknown:
            raise SettingsError(sorted(unknown)[0], f"unknown settings {sorted(unknown)}")
        values = dict(given)
        if values.get("data") is None:
            dataset = values.get("dataset") or DEFAULT_DATASET
            try:
                defaults = feature_defaults(dataset)
            except DataError as err:
                raise SettingsError("dataset", str(err)) from None
            values = defaults | values
        return cls(**values)

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(Settings))

    @staticmethod
    def group(name: str) -> str:
        return {f.name: f.metadata["group"] for f in dataclasses.fields(Settings)}[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (tuples as lists), the form stored in checkpoints."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        if set(data) != set(cls.names()):
            raise SettingsError("settings", "not the settings of a `jlstm train` run")
        return cls(**data)

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig(
            steps=self.steps,
            horizon=self.horizon,
            stride=self.stride,
            val_size=self.val_size,
            test_size=self.test_size,
            scaler=self.scaler,
            log=self.log,
            delta=self.delta,
            calendar=self.calendar,
        )

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.lr,
            optimizer=self.optimizer,
            schedule=self.schedule,
            warmup_epochs=self.warmup_epochs,
            clip_norm=self.clip_norm,
            loss=self.loss,
            patience=self.patience,
            seed=self.seed,
        )

    def model_config(self, pipeline: Pipeline) -> ModelConfig:
        return ModelConfig(
            input_size=pipeline.input_size,
            layer_sizes=self.layers,
            output_size=pipeline.output_size,
            dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
        )

    def source(self) -> dict[str, Any]:
        """Where the data comes from, as ``load_series`` takes it."""
        if self.dataset is not None:
            return {"dataset": self.dataset, "fill": None if self.fill == "error" else self.fill}
        return {
            "data": os.path.abspath(self.data),
            "target": list(self.target) if self.target else None,
            "covariates": list(self.covariates),
            "date_column": self.date_column,
            "date_format": self.date_format,
            "fill": self.fill,
        }


def _feature(**kw):
    return FeatureConfig(**kw)


def _model(**kw):
    return ModelConfig(input_size=1, output_size=1, **{"layer_sizes": (1,), **kw})


def _strings(name, value, *, allow_empty):
    if value is None:
        return
    if not isinstance(value, tuple) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{name} must be a list of column names, got {value!r}")
    if not value and not allow_empty:
        raise ValueError(f"{name} must name at least one column")


def _text(name, value):
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")


def _size(name, value):
    ok_int = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ok_frac = isinstance(value, float) and 0.0 < value < 1.0
    if not (ok_int or ok_frac):
        raise ValueError(f"{name} must be a row count >= 1 or a fraction in (0, 1), got {value!r}")


# Each setting is checked by the config that owns it: one validator per rule.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "dataset": lambda v: v is None or dataset_info(v),
    "data": lambda v: _text("data", v),
    "target": lambda v: _strings("target", v, allow_empty=False),
    "covariates": lambda v: _strings("covariates", v, allow_empty=True),
    "date_column": lambda v: _text("date_column", v),
    "date_format": lambda v: _text("date_format", v),
    "fill": lambda v: (
        v in FILL_POLICIES or _raise(f"fill must be one of {', '.join(FILL_POLICIES)}, got {v!r}")
    ),
    "season": lambda v: v is None or check_int("season", v, 1, 1_000_000),
    "steps": lambda v: _feature(steps=v),
    "horizon": lambda v: _feature(horizon=v),
    "stride": lambda v: _feature(stride=v),
    "val_size": lambda v: _size("val_size", v),
    "test_size": lambda v: _size("test_size", v),
    "scaler": lambda v: _feature(scaler=v),
    "log": lambda v: _feature(log=v),
    "delta": lambda v: _feature(delta=v),
    "calendar": lambda v: _feature(calendar=v),
    "layers": lambda v: _model(layer_sizes=v),
    "dropout": lambda v: _model(dropout=v),
    "recurrent_dropout": lambda v: _model(recurrent_dropout=v),
    "epochs": lambda v: TrainConfig(epochs=v),
    "batch_size": lambda v: TrainConfig(batch_size=v),
    "lr": lambda v: TrainConfig(learning_rate=v),
    "optimizer": lambda v: TrainConfig(optimizer=v),
    "schedule": lambda v: TrainConfig(schedule=v),
    "warmup_epochs": lambda v: TrainConfig(warmup_epochs=v),
    "clip_norm": lambda v: TrainConfig(clip_norm=v),
    "loss": lambda v: TrainConfig(loss=v),
    "patience": lambda v: TrainConfig(patience=v),
    "seed": lambda v: TrainConfig(seed=v),
    "checkpoint_every": lambda v: check_int("checkpoint_every", v, 1, 1_000_000),
}
_FIELD = {"lr": "learning_rate", "layers": "units"}


def _raise(message):
    raise ValueError(message)


def check_setting(name: str, value: Any) -> Any:
    """``value`` if it is valid for setting ``name``, else ``SettingsError`` (message names it).

    The check is the owning config's own validator (``TrainConfig(epochs=value)``, ...).
    """
    try:
        _CHECKS[name](value)
    except KeyError:
        raise SettingsError(name, f"unknown setting {name!r}") from None
    except ValueError as err:
        message = str(err)
        field = _FIELD.get(name, name)
        if message.startswith(field + " "):
            message = name + message[len(field) :]
        raise SettingsError(name, message) from None
    return value


# -- data and configs ---------------------------------------------------------------------------


def load_series(source: Mapping[str, Any]) -> Series:
    """The ``Series`` of a ``Settings.source()`` dict."""
    if source.get("dataset") is not None:
        return load_dataset(source["dataset"], fill=source.get("fill"))
    return load_csv(
        source["data"],
        target=source.get("target"),
        covariates=source.get("covariates") or (),
        date_column=source.get("date_column"),
        date_format=source.get("date_format"),
        fill=source.get("fill") or "error",
    )


class Experiment(NamedTuple):
    """Everything a run needs, built and checked from its settings.

    Attributes:
        settings: the ``Settings``.
        series: the data.
        pipeline: the fitted ``Pipeline`` (scalers fitted on the training rows).
        windows: ``{"train", "val", "test"}`` ``Windows``.
        season: the seasonal period of the seasonal-naive baseline and MASE.
        model_config, train_config: the configs.
    """

    settings: Settings
    series: Series
    pipeline: Pipeline
    windows: dict[str, Windows]
    season: int
    model_config: ModelConfig
    train_config: TrainConfig

    @classmethod
    def build(
        cls, settings: Settings, *, pipeline: Pipeline | None = None, series: Series | None = None
    ) -> Experiment:
        """Load the data and build the pipeline (unless given) and the configs.

        Raises:
            DataError, SettingsError: bad data or settings (nothing written).
        """
        series = load_series(settings.source()) if series is None else series
        if pipeline is None:
            pipeline = Pipeline.fit(series, settings.feature_config())
        windows = pipeline.windows(series)
        season = settings.season or _default_season(settings, series)
        _check_season(season, windows)
        try:
            model_config = settings.model_config(pipeline)
        except ValueError as err:
            raise SettingsError("layers", f"invalid model: {err}") from None
        return cls(
            settings,
            series,
            pipeline,
            windows,
            season,
            model_config,
            settings.train_config(),
        )

    def fit(self, **kwargs) -> FitState:
        """``jlstm.train.fit`` on the training and validation windows."""
        w = self.windows
        return fit(
            self.model_config,
            (w["train"].x, w["train"].y),
            (w["val"].x, w["val"].y),
            self.train_config,
            **kwargs,
        )

    def evaluate(self, params) -> dict[str, tuple[np.ndarray, dict, dict]]:
        """``{"val", "test"}``: ``(actual, forecasts, scores)`` of the model and baselines."""
        return _evaluate_splits(
            params, self.model_config, self.pipeline, self.series, self.windows, self.season
        )


def _default_season(settings: Settings, series: Series) -> int:
    if settings.dataset:
        return dataset_info(settings.dataset).season
    return season_from_dates(series.dates)


def _check_season(season: int, windows) -> None:
    first = int(windows["val"].origin.min())
    if first + 1 - season < 0:
        raise SettingsError(
            "season",
            f"season {season} is longer than the data before the first validation forecast "
            f"(row {first + 1}): use a shorter season or a smaller val_size/test_size",
        )


def _evaluate_split(params, model_config, pipeline, series, windows, season, train_rows):
    horizon = pipeline.config.horizon
    actual = window_targets(series, windows.origin, horizon)
    forecasts = {
        "model": one_step(params, model_config, pipeline, windows),
        "naive": metrics.naive_forecast(series.values, windows.origin, horizon),
        "seasonal_naive": metrics.seasonal_naive_forecast(
            series.values, windows.origin, horizon, season
        ),
    }
    if not np.all(np.isfinite(forecasts["model"])):
        bad = int(np.sum(~np.isfinite(forecasts["model"])))
        raise NonFiniteError(
            f"{bad} of the model's {forecasts['model'].size} forecasts are not finite numbers "
            "(nan or inf): the weights diverged; retrain with a lower --lr or a --clip-norm"
        )
    y_train = series.values[:train_rows]
    scores = {
        name: metrics.evaluate(actual, pred, y_train, season) for name, pred in forecasts.items()
    }
    for name in ("rmse", "mae"):
        if not math.isfinite(scores["model"][name]):
            raise NonFiniteError(f"the model's {name} is {scores['model'][name]}, not a number")
    return actual, forecasts, scores


def _evaluate_splits(params, model_config, pipeline, series, windows, season):
    train_rows = pipeline.bounds_for(series, pipeline.config).train
    return {
        name: _evaluate_split(
            params, model_config, pipeline, series, windows[name], season, train_rows
        )
        for name in ("val", "test")
    }


# -- reports ------------------------------------------------------------------------------------


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _date_text(dates, index: int) -> str:
    return str(dates[index]) if dates is not None else str(index)


def metrics_report(exp: Experiment, scores, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The ``metrics.json`` dict: test and val scores, the split, season, units, ``extra``."""
    series, pipeline, windows = exp.series, exp.pipeline, exp.windows
    bounds = pipeline.bounds_for(series, pipeline.config)
    report: dict[str, Any] = {name: scores[name] for name in ("test", "val")}
    segments = {}
    for name, (start, stop) in bounds.segments().items():
        w = windows[name]
        first = int(w.origin[0]) + 1
        last = int(w.origin[-1]) + pipeline.config.horizon
        segments[name] = {
            "rows": [start, stop],
            "from": _date_text(series.dates, start),
            "to": _date_text(series.dates, stop - 1),
            "windows": len(w.x),
            "targets_from": _date_text(series.dates, first),
            "targets_to": _date_text(series.dates, last),
        }
    report["split"] = segments
    report["season"] = exp.season
    report["units"] = "original units of " + ", ".join(series.target_names)
    test = scores["test"]
    beats = {b: test["model"]["rmse"] < test[b]["rmse"] for b in BASELINES}
    report["beats_rmse"] = beats
    report["beats_baselines_rmse"] = all(beats.values())
    report.update(extra)
    return _json_safe(report)


def baselines(season: int) -> dict[str, str]:
    """The distinct baselines: with no season (1), seasonal naive is persistence."""
    return {"naive": BASELINES["naive"]} if season == 1 else dict(BASELINES)


def verdict(test_scores: Mapping[str, Mapping[str, float]], season: int) -> str:
    """One line: does the model's test RMSE beat each baseline's (worded per baseline)."""
    model = test_scores["model"]["rmse"]
    parts = []
    for key, name in baselines(season).items():
        rmse = test_scores[key]["rmse"]
        parts.append(f"{'beats' if model < rmse else 'does NOT beat'} {name} ({rmse:.3f})")
    if len(parts) == 2 and parts[0].split()[0] != parts[1].split()[0]:
        text = f"{parts[0]} but {parts[1]}"
    else:
        text = " and ".join(parts)
        if len(parts) == 2:  # "beats a and beats b" -> "beats a and b"
            word = "beats " if parts[0].startswith("beats") else "does NOT beat "
            text = parts[0] + " and " + parts[1][len(word) :]
    return f"model test RMSE {model:.3f} {text}"


def score_table(title: str, scores: Mapping[str, Mapping[str, float]], season: int) -> str:
    """The metrics as a text table (one row per distinct forecast)."""
    heads = {"mape": "mape %", "smape": "smape %"}
    names = metrics.METRICS
    rows = ["model", *baselines(season)]
    label = {"naive": "naive (= seasonal, no season)"} if season == 1 else {}
    width = max(15, *(len(label.get(r, r)) + 1 for r in rows))
    lines = [title, f"  {'':<{width}}" + "".join(f"{heads.get(n, n):>10}" for n in names)]
    for who in rows:
        row = scores[who]
        cells = "".join(
            f"{row[n]:>10.3f}" if math.isfinite(row[n]) else f"{'n/a':>10}" for n in names
        )
        lines.append(f"  {label.get(who, who):<{width}}{cells}")
    return "\n".join(lines)


def history_csv(history) -> str:
    """The history as CSV text (header ``epoch,loss,val_loss,lr,seconds``)."""
    out = io.StringIO()
    fields = ["epoch", "loss", "val_loss", "lr", "seconds"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return out.getvalue()


def write_history(out: str, history) -> None:
    """``history.json`` and ``history.csv`` in ``out``, each atomically."""
    fileio.write_text_atomic(os.path.join(out, "history.json"), json.dumps(list(history), indent=1))
    fileio.write_text_atomic(os.path.join(out, "history.csv"), history_csv(history))


def write_metrics(path: str, report: Mapping[str, Any]) -> None:
    """``report`` as JSON at ``path``, atomically."""
    fileio.write_text_atomic(path, json.dumps(report, indent=2, allow_nan=False) + "\n")


def write_predictions(path: str, exp: Experiment, actual, forecasts) -> None:
    """``predictions.csv``: every test forecast next to the actual value and both baselines."""
    series, windows = exp.series, exp.windows["test"]
    style = input_style(exp.settings.source(), series)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    horizon = actual.shape[1]
    header = ["date" if series.dates is not None else "row", "lead", "target", "actual"]
    writer.writerow(header + list(forecasts))
    for i, origin in enumerate(windows.origin):
        for h in range(horizon):
            row = int(origin) + 1 + h
            label = style.dates([series.dates[row]])[0] if series.dates is not None else str(row)
            for k, name in enumerate(series.target_names):
                cells = [label, h + 1, name, style.number(actual[i, h, k])]
                cells += [style.number(f[i, h, k]) for f in forecasts.values()]
                writer.writerow(cells)
    fileio.write_text_atomic(path, out.getvalue())


def write_plot(path: str, exp: Experiment, forecasts, future: np.ndarray | None, title: str):
    """``forecast.png``: the whole series above, the test period and the future zoomed below.

    Returns a note instead of writing if matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'jlstm[plot]'): skipped forecast.png"
    series, pipeline = exp.series, exp.pipeline
    n = len(series)
    x = series.dates if series.dates is not None else np.arange(n)
    fx = None
    if future is not None:
        fx = future_dates(series.dates, len(future)) if series.dates is not None else None
        if fx is None:
            fx = np.arange(n, n + len(future)) if series.dates is None else None
    rows = exp.windows["test"].origin + 1
    bounds = pipeline.bounds_for(series, pipeline.config)
    k = 0
    fig, (top, zoom) = plt.subplots(2, 1, figsize=(10, 7.5), dpi=110)
    for ax, lo in ((top, 0), (zoom, max(int(rows[0]) - 2 * pipeline.config.steps, 0))):
        ax.plot(x[lo:], series.values[lo:, k], color="0.6", lw=1.2, label="history")
        ax.plot(x[rows], series.values[rows, k], color="black", lw=1.6, label="test actuals")
        ax.plot(
            x[rows],
            forecasts["model"][:, 0, k],
            color="tab:blue",
            lw=1.6,
            marker="o",
            ms=3,
            label="model (one step ahead)",
        )
        if exp.season > 1:
            ax.plot(
                x[rows],
                forecasts["seasonal_naive"][:, 0, k],
                color="tab:orange",
                lw=1.2,
                ls="--",
                label=f"seasonal naive ({exp.season})",
            )
        ax.plot(
            x[rows],
            forecasts["naive"][:, 0, k],
            color="tab:green",
            lw=1.0,
            ls=":",
            label="persistence",
        )
        if fx is not None:
            ax.plot(
                fx, future[:, k], color="tab:red", lw=1.6, marker=".", label="future (recursive)"
            )
        ax.set_ylabel(series.target_names[k])
    for edge, name in ((bounds.train, "validation"), (bounds.val, "test")):
        top.axvline(x[edge], color="0.8", lw=1)
        top.text(x[edge], top.get_ylim()[1], f" {name}", va="top", fontsize=8, color="0.4")
    top.set_title(title)
    zoom.set_title("test period and future, zoomed", fontsize=9)
    top.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        with fileio.writing(path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return None


# -- input style: dates and decimals as the user wrote them -----------------------------------


class InputStyle(NamedTuple):
    """How the input file writes dates and numbers, to write forecasts the same way.

    Attributes:
        date_like: one date string of the input (its last), or ``None``.
        date_format: the user's strptime format, or ``None``.
        decimals: decimal places seen in the target column (``None``: keep full precision).
    """

    date_like: str | None
    date_format: str | None
    decimals: int | None

    def dates(self, dates) -> list[str]:
        return format_dates(dates, like=self.date_like, fmt=self.date_format)

    def number(self, value) -> str:
        value = float(value)
        if self.decimals is None or not math.isfinite(value):
            return repr(value)
        return f"{value:.{self.decimals}f}"


def format_dates(dates, *, like: str | None = None, fmt: str | None = None) -> list[str]:
    """``datetime64`` dates as text in the style of ``like`` (an input date) or ``fmt``.

    ``like="2018-01-01"`` writes days even if the dates are monthly; ``"201801"``-style
    ``YYYYMMDD``, years, ``YYYY-MM`` and ISO date-times keep their form. Without either,
    NumPy's ISO text of the date.
    """
    if fmt is None and like is not None:
        like = like.strip()
        for pattern, style in (
            (r"\d{4}", "%Y"),
            (r"\d{8}", "%Y%m%d"),
            (r"\d{4}-\d{2}", "%Y-%m"),
            (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"),
            (r"\d{4}-\d{2}-\d{2}([T ])\d{2}:\d{2}", "%Y-%m-%d{sep}%H:%M"),
            (r"\d{4}-\d{2}-\d{2}([T ])\d{2}:\d{2}:\d{2}", "%Y-%m-%d{sep}%H:%M:%S"),
        ):
            match = re.fullmatch(pattern, like)
            if match:
                fmt = style.format(sep=match.group(1) if match.groups() else "")
                break
    if fmt is None:
        return [str(d) for d in dates]
    out = []
    for d in dates:
        moment = np.datetime64(d, "s").astype(datetime.datetime)
        out.append(moment.strftime(fmt))
    return out


def _source_path(source: Mapping[str, Any]):
    """A context manager giving the path of the source's CSV file."""
    if source.get("dataset") is not None:
        info = dataset_info(source["dataset"])
        return importlib.resources.as_file(importlib.resources.files("jlstm.datasets") / info.file)
    return contextlib.nullcontext(source["data"])


def input_style(source: Mapping[str, Any], series: Series) -> InputStyle:
    """The ``InputStyle`` of the file ``series`` was read from (best effort)."""
    try:
        with _source_path(source) as path:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return InputStyle(None, source.get("date_format"), None)
    if len(rows) < 2:
        return InputStyle(None, source.get("date_format"), None)
    header, body = rows[0], [r for r in rows[1:] if any(c.strip() for c in r)]
    date_like = None
    if series.dates is not None and body:
        last = body[-1]
        for cell in last:
            try:
                parsed = parse_dates([cell], fmt=source.get("date_format"))
            except (DataError, ValueError):
                continue
            if parsed[0] == series.dates[-1]:
                date_like = cell
                break
    decimals = 0
    for name in series.target_names:
        if name not in header:
            return InputStyle(date_like, source.get("date_format"), None)
        col = header.index(name)
        for r in body:
            cell = r[col].strip() if col < len(r) else ""
            if "e" in cell.lower() and not cell.lower().strip("+-").startswith(("inf", "nan")):
                return InputStyle(date_like, source.get("date_format"), None)
            if "." in cell:
                decimals = max(decimals, len(cell.split(".", 1)[1]))
    return InputStyle(date_like, source.get("date_format"), decimals)


# -- progress -----------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar for ``fit(progress=...)`` on a stream (stderr by default).

    On a terminal it redraws one line; otherwise (a log file, CI) it prints a line
    about every tenth of the run.
    """

    def __init__(self, total: int, windows: int, *, stream: TextIO | None = None):
        self.total = total
        self.windows = windows
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(1, total // 10)
        self.width = 24

    def __call__(self, state: FitState) -> None:
        last = state.history[-1]
        fields = {"loss": last["loss"], "val_loss": last["val_loss"], "best": state.best_loss}
        self.update(state.epoch, fields, self.windows / max(last["seconds"], 1e-9))

    def update(self, epoch: int, fields: Mapping[str, float | None], rate: float) -> None:
        """Show ``epoch`` (1-based) of ``total`` with loss ``fields`` and ``rate`` windows/s."""
        done = epoch / self.total
        filled = int(self.width * done)
        bar = "#" * filled + "." * (self.width - filled)
        stats = "  ".join(f"{k} {v:.4g}" for k, v in fields.items() if v is not None)
        line = (
            f"epoch {epoch:>{len(str(self.total))}}/{self.total} [{bar}] {stats}  {rate:,.0f} win/s"
        )
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        elif epoch % self.every == 0 or epoch == self.total or epoch == 1:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, message: str | None = None) -> None:
        if self.tty:
            self.stream.write("\n")
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()


# -- the three jobs ----------------------------------------------------------------------------


class TrainingResult(NamedTuple):
    """What ``run_training`` did.

    Attributes:
        out: the run directory.
        experiment: the ``Experiment``.
        state: the final ``FitState``.
        scores: ``{"val", "test"}`` -> ``{"model", "naive", "seasonal_naive"}`` -> metrics.
        report: the ``metrics.json`` dict.
        files: the names written into ``out``.
        notes: messages for the user (e.g. a skipped plot).
    """

    out: str
    experiment: Experiment
    state: FitState
    scores: dict[str, dict[str, dict[str, float]]]
    report: dict[str, Any]
    files: list[str]
    notes: list[str]


def _nonempty(out: str) -> bool:
    return any(name != fileio.LOCK_FILE for name in os.listdir(out))


def _check_out(out: str, resume: bool) -> None:
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SettingsError("out", f"--out {out!r} exists and is not a directory")
    if resume:
        ckpt = os.path.join(out, "checkpoint")
        fileio.refuse_symlink(ckpt, "checkpoint directory")
        if not os.path.isdir(out) or not checkpoint.recover(ckpt):
            raise SettingsError(
                "out",
                f"nothing to resume: {out!r} has no complete checkpoint/ (start the run "
                "without --resume)",
            )
    elif os.path.isdir(out) and _nonempty(out):
        raise SettingsError(
            "out",
            f"output directory {out!r} is not empty: choose another --out, or add --resume to "
            "continue the run in it",
        )


def default_out(settings: Settings, root: str = "runs") -> str:
    """``runs/<dataset or file name>-<date>-<time>`` (a fresh name)."""
    name = settings.dataset or os.path.splitext(os.path.basename(settings.data))[0]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.join(root, f"{name}-{stamp}")
    suffix = 1
    while os.path.exists(out):
        suffix += 1
        out = os.path.join(root, f"{name}-{stamp}-{suffix}")
    return out


def _resume_settings(out: str, given: Mapping[str, Any] | None):
    ckpt = checkpoint.load_checkpoint(os.path.join(out, "checkpoint"))
    try:
        settings = Settings.from_dict(ckpt.meta.get("settings") or {})
    except (SettingsError, TypeError):
        raise checkpoint.CheckpointError(
            f"{out!r}: its checkpoint was not written by `jlstm train`"
        ) from None
    stored = settings.to_dict()
    for name, value in (given or {}).items():
        value = list(value) if isinstance(value, tuple) else value
        if stored[name] != value:
            raise SettingsError(
                name,
                f"--{name.replace('_', '-')} {value!r} differs from the run's {stored[name]!r}: "
                "a resumed run keeps its settings (drop the option, or start a new run)",
            )
    return ckpt, settings


def run_training(
    settings: Settings | None,
    out: str | None = None,
    *,
    resume: bool = False,
    given: Mapping[str, Any] | None = None,
    progress: bool | Callable[[FitState], None] = False,
    plot: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainingResult:
    """Train, checkpoint, evaluate and write a run directory.

    Args:
        settings: the run's ``Settings``; ``None`` with ``resume`` (the run's own).
        out: the run directory (new or empty; default ``runs/<name>-<time>``); with
            ``resume``, the run to continue exactly where its checkpoint left it.
        given: with ``resume``, settings the user gave again: each must equal the run's.
        progress: show a progress bar on stderr (``True``) or call this per epoch.
        plot: write ``forecast.png``.
        log: called with one-line messages (the run's summary before training).

    The directory is locked (``fileio.DirLock``) while the run lives; its writability
    is checked before training. On SIGINT (or SIGTERM mapped to ``KeyboardInterrupt``)
    the last completed epoch is checkpointed and ``TrainingInterrupted`` raised.
    """
    say = log or (lambda message: None)
    resumed = None
    if resume:
        if not out:
            raise SettingsError("out", "--resume needs --out DIR: the run directory to continue")
        _check_out(out, resume=True)
        resumed, settings = _resume_settings(out, given)
        pipeline = Pipeline.from_state(resumed.meta["pipeline"], resumed.arrays)
        exp = Experiment.build(settings, pipeline=pipeline)
        if (resumed.model_config, resumed.train_config) != (exp.model_config, exp.train_config):
            raise checkpoint.CheckpointError(
                f"{out!r}: the checkpoint's model or training config does not match its "
                "stored settings"
            )
    else:
        settings = settings if settings is not None else Settings()
        exp = Experiment.build(settings)
        out = out or default_out(settings)
        _check_out(out, resume=False)

    # Every input is checked: from here on the run writes into `out`.
    created = not os.path.isdir(out)
    try:
        fileio.check_writable(out)
        lock = fileio.DirLock(out).acquire()
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    try:
        if resumed is None:
            _check_out(out, resume=False)  # another run may have started here meanwhile
        return _train_locked(exp, out, resumed, created, progress, plot, say)
    finally:
        lock.release()
        if created and os.path.isdir(out) and not _nonempty(out):
            shutil.rmtree(out, ignore_errors=True)


def _train_locked(exp, out, resumed, created, progress, plot, say) -> TrainingResult:
    settings, pipeline, windows = exp.settings, exp.pipeline, exp.windows
    model_config, train_config = exp.model_config, exp.train_config
    ckpt = os.path.join(out, "checkpoint")
    pipeline_meta, pipeline_arrays = pipeline.to_state()
    meta = {
        "settings": settings.to_dict(),
        "pipeline": pipeline_meta,
        "season": exp.season,
        "source": exp.series.source,
    }
    saved = {"epoch": resumed.state.epoch if resumed else 0, "last": None}

    def save(state: FitState, finished: bool) -> None:
        checkpoint.save_checkpoint(
            ckpt,
            model_config,
            train_config,
            state,
            extra_meta=meta | {"finished": finished},
            extra_arrays=pipeline_arrays,
        )
        saved["epoch"] = state.epoch

    def on_epoch_end(state: FitState) -> None:
        saved["last"] = state
        finished = state.stopped or state.epoch == train_config.epochs
        if finished or state.epoch % settings.checkpoint_every == 0:
            save(state, finished)

    source = settings.dataset or settings.data
    counts = "/".join(str(len(windows[s].x)) for s in ("train", "val", "test"))
    prep = [n for n in ("log", "delta") if getattr(settings, n)] + list(settings.calendar)
    features = pipeline.config
    say(
        f"jlstm train: {source}, windows train/val/test {counts}, {features.steps} steps -> "
        f"{features.horizon}, preprocessing: {', '.join(prep) or 'none'} + {features.scaler} "
        f"scaler; model {model_config.input_size} -> "
        f"{' -> '.join(map(str, model_config.layer_sizes))} -> {model_config.output_size}; "
        f"seed {train_config.seed}; output {out}"
    )
    bar = None
    if progress is True:
        bar = Progress(train_config.epochs, len(windows["train"].x))
        progress = bar
    started = time.perf_counter()
    try:
        state = exp.fit(
            state=None if resumed is None else resumed.state,
            on_epoch_end=on_epoch_end,
            progress=progress or False,
        )
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        last = saved["last"]
        if last is not None and last.epoch > saved["epoch"]:
            save(last, False)  # the last completed epoch: --resume continues exactly from it
        if saved["epoch"] > 0:
            raise TrainingInterrupted(
                f"interrupted; epoch {saved['epoch']} is checkpointed in {out!r}: continue "
                f"with `jlstm train --out {out} --resume`",
                resumable=True,
                out=out,
            ) from None
        raise TrainingInterrupted(
            "interrupted before the first epoch ended; nothing was saved"
            + (f" ({out!r} removed)" if created else ""),
            resumable=False,
            out=out,
        ) from None
    if bar is not None:
        why = "early stop" if state.stopped else "done"
        bar.close(
            f"{why} after {state.epoch} epochs; best val_loss {state.best_loss:.4g} at epoch "
            f"{state.best_epoch}"
            if state.best_epoch
            else None
        )
    if state.epoch > saved["epoch"]:  # resumed a finished run: nothing new to save
        save(state, True)
    return _report_training(exp, out, state, time.perf_counter() - started, plot)


def _report_training(exp, out, state, seconds, plot) -> TrainingResult:
    results = exp.evaluate(state.params)
    scores = {name: result[2] for name, result in results.items()}
    report = metrics_report(
        exp,
        scores,
        {
            "epochs": state.epoch,
            "best_epoch": state.best_epoch,
            "seed": exp.train_config.seed,
            "train_seconds": round(seconds, 3),
        },
    )
    write_history(out, state.history)
    write_metrics(os.path.join(out, "metrics.json"), report)
    actual, forecasts, _ = results["test"]
    write_predictions(os.path.join(out, "predictions.csv"), exp, actual, forecasts)
    files = ["checkpoint/", "history.json", "history.csv", "metrics.json", "predictions.csv"]
    notes = []
    if plot:
        future = _future(state.params, exp)
        source = exp.settings.dataset or exp.settings.data
        note = write_plot(
            os.path.join(out, "forecast.png"),
            exp,
            forecasts,
            future,
            f"{source}: test forecasts (seed {exp.train_config.seed})",
        )
        if note:
            notes.append(note)
        else:
            files.append("forecast.png")
    return TrainingResult(out, exp, state, scores, report, files, notes)


def _future(params, exp: Experiment) -> np.ndarray | None:
    n = max(exp.season, exp.pipeline.config.horizon, 12 if exp.season == 1 else 0)
    if exp.pipeline.covariate_names:
        n = exp.pipeline.config.horizon
    try:
        values = recursive(params, exp.model_config, exp.pipeline, exp.series, n)
    except DataError:
        return None
    return values if np.all(np.isfinite(values)) else None


class Evaluation(NamedTuple):
    """What ``evaluate_run`` computed: ``scores`` as in ``TrainingResult``, the report."""

    experiment: Experiment
    scores: dict[str, dict[str, dict[str, float]]]
    report: dict[str, Any]


def checkpoint_path(run: str) -> str:
    """The checkpoint directory of ``run`` (a run directory or a checkpoint directory)."""
    if os.path.basename(os.path.normpath(run)) == "checkpoint" or os.path.isfile(
        os.path.join(run, checkpoint.CONFIG_FILE)
    ):
        return run
    return os.path.join(run, "checkpoint")


def load_run(
    run: str, *, data: str | None = None, dataset: str | None = None
) -> tuple[checkpoint.Checkpoint, Experiment]:
    """A run's checkpoint and its ``Experiment`` (on its own data, or on ``data``/``dataset``).

    Raises:
        CheckpointError: no complete checkpoint, or one that does not match its settings.
        DataError: the other data lacks the model's columns.
    """
    if not os.path.exists(run):
        raise checkpoint.CheckpointError(f"run directory {run!r} does not exist")
    path = checkpoint_path(run)
    if not checkpoint.recover(path):
        raise checkpoint.CheckpointError(f"no complete checkpoint in {run!r}")
    ckpt = checkpoint.load_checkpoint(path)
    try:
        settings = Settings.from_dict(ckpt.meta.get("settings") or {})
        pipeline = Pipeline.from_state(ckpt.meta["pipeline"], ckpt.arrays)
        season = int(ckpt.meta["season"])
    except (KeyError, TypeError, ValueError) as err:
        raise checkpoint.CheckpointError(
            f"{run!r}: the checkpoint lacks its data settings ({err})"
        ) from None
    if data is not None or dataset is not None:
        changes: dict[str, Any] = {"dataset": dataset, "data": data}
        if dataset is None:
            changes |= {
                "target": pipeline.target_names,
                "covariates": pipeline.covariate_names,
            }
        else:
            changes |= {"target": None, "covariates": (), "date_column": None, "date_format": None}
        settings = dataclasses.replace(settings, **changes)
    series = load_series(settings.source())
    pipeline.check_series(series)
    settings = dataclasses.replace(settings, season=season)
    exp = Experiment.build(settings, pipeline=pipeline, series=series)
    if (ckpt.model_config.input_size, ckpt.model_config.output_size) != (
        exp.model_config.input_size,
        exp.model_config.output_size,
    ):
        raise checkpoint.CheckpointError(
            f"{run!r}: the model's input/output sizes do not match its data settings"
        )
    return ckpt, exp._replace(model_config=ckpt.model_config, train_config=ckpt.train_config)


def evaluate_run(run: str, *, data: str | None = None, dataset: str | None = None) -> Evaluation:
    """Validation and test metrics of a trained run, the model and the baselines."""
    ckpt, exp = load_run(run, data=data, dataset=dataset)
    scores = {name: r[2] for name, r in exp.evaluate(ckpt.state.params).items()}
    report = metrics_report(
        exp,
        scores,
        {
            "epochs": ckpt.state.epoch,
            "best_epoch": ckpt.state.best_epoch,
            "seed": ckpt.train_config.seed,
            "source": exp.series.source,
        },
    )
    return Evaluation(exp, scores, report)


class Prediction(NamedTuple):
    """``n`` forecasts past the end of the series.

    Attributes:
        labels: the ``n`` dates (in the input's date style) or step numbers, as text.
        values: ``(n, K)`` float64 forecasts in original units.
        names: the ``K`` target names.
        csv: the forecasts as CSV text, numbers rounded to the input's decimals.
    """

    labels: list[str]
    values: np.ndarray
    names: tuple[str, ...]
    csv: str


def predict_run(
    run: str, n: int, *, data: str | None = None, dataset: str | None = None
) -> Prediction:
    """The next ``n`` rows after the end of the series (recursive past the horizon).

    Raises:
        DataError: ``n`` out of ``1 .. MAX_FORECAST``, covariates with ``n > horizon``.
        NonFiniteError: the forecasts are not finite numbers.
    """
    try:
        check_int("the number of steps to forecast", n, 1, MAX_FORECAST)
    except ValueError as err:
        raise DataError(str(err)) from None
    ckpt, exp = load_run(run, data=data, dataset=dataset)
    values = recursive(ckpt.state.params, exp.model_config, exp.pipeline, exp.series, n)
    if not np.all(np.isfinite(values)):
        raise NonFiniteError(
            f"{int(np.sum(~np.isfinite(values)))} of the {values.size} forecasts are not finite "
            "numbers (nan or inf): the model diverged; retrain it"
        )
    style = input_style(exp.settings.source(), exp.series)
    dates = future_dates(exp.series.dates, n)
    labels = style.dates(dates) if dates is not None else [str(i + 1) for i in range(n)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date" if dates is not None else "step", *exp.series.target_names])
    for label, row in zip(labels, values, strict=True):
        writer.writerow([label, *(style.number(v) for v in row)])
    return Prediction(labels, values, exp.series.target_names, out.getvalue())
