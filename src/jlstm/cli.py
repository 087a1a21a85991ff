"""The ``jlstm`` command: ``train``, ``evaluate``, ``predict``, ``datasets``.

``jlstm train`` with no arguments trains the seed model (LSTM 64 -> 32 -> 16 ->
Dense(1), MSE, Adam, 4 past values predict the next) on the built-in airline
series and writes into ``runs/<dataset>-<time>/``::

    checkpoint/       config.json + arrays.npz (resume, evaluate, predict from it)
    history.json/csv  loss and validation loss per epoch
    metrics.json      test (and validation) metrics of the model and the baselines
    predictions.csv   the test forecasts next to the actual values and baselines
    forecast.png      the series, the test actuals, the model and the baselines

Options come from flags, a TOML file (``--config run.toml``: the same names
with underscores, at top level or in ``[data]``, ``[features]``, ``[model]``,
``[train]`` tables), the built-in dataset's preprocessing, then the defaults,
in that order of precedence. Bad input ends with one line on stderr and exit
status 2; nothing is written before every input has been checked.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import io
import json
import math
import os
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import __version__, metrics
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import (
    CALENDAR_FEATURES,
    DEFAULT_DATASET,
    FILL_POLICIES,
    SCALERS,
    DataError,
    FeatureConfig,
    Pipeline,
    dataset_info,
    feature_defaults,
    future_dates,
    list_datasets,
    load_csv,
    load_dataset,
    season_from_dates,
    window_targets,
)
from .forecast import one_step, recursive
from .model import ModelConfig
from .train import LOSSES, OPTIMIZERS, SCHEDULES, TrainConfig, fit, save_history, write_text_atomic

__all__ = ["main"]

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad flags, config values or paths: reported as one line, exit status 2."""


# -- option table ------------------------------------------------------------------------------


def _int(minimum: int) -> Callable[[Any], int]:
    def convert(value) -> int:
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        if isinstance(value, str):
            value = value.strip()
            if not value.lstrip("+-").isdigit():
                raise ValueError("must be an integer")
            value = int(value)
        if not isinstance(value, int):
            raise ValueError("must be an integer")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    return convert


def _float(minimum: float, *, strict: bool = True, below: float | None = None):
    def convert(value) -> float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if value < minimum or (strict and value == minimum):
            raise ValueError(f"must be {'>' if strict else '>='} {minimum:g}")
        if below is not None and value >= below:
            raise ValueError(f"must be < {below:g}")
        return value

    return convert


def _size(value) -> int | float:
    """A row count (integer >= 1) or a fraction in (0, 1)."""
    if isinstance(value, bool):
        raise ValueError("must be a row count or a fraction")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(
                    "must be a row count (e.g. 24) or a fraction (e.g. 0.15)"
                ) from None
    if isinstance(value, int):
        if value < 1:
            raise ValueError("must be a row count >= 1 or a fraction in (0, 1)")
        return value
    if isinstance(value, float) and 0.0 < value < 1.0:
        return value
    raise ValueError("must be a row count >= 1 or a fraction in (0, 1)")


def _optional(convert):
    """``convert``, where ``none`` or ``0`` means ``None`` (no limit)."""

    def wrapped(value):
        if isinstance(value, str) and value.strip().lower() in ("none", "0"):
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
            return None
        return convert(value)

    return wrapped


def _list(convert, *, allow_empty: bool = False):
    def wrapped(value) -> list:
        if isinstance(value, str):
            text = value.strip()
            items = [] if text.lower() in ("", "none") else [v.strip() for v in text.split(",")]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise ValueError("must be a comma-separated list")
        if not items and not allow_empty:
            raise ValueError("must name at least one value")
        return [convert(v) for v in items]

    return wrapped


def _name(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value.strip()


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("must be true or false")


def _choice(choices: Sequence[str]):
    def convert(value) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return convert


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting of ``jlstm train``: a flag, a TOML key and a default."""

    name: str
    group: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    metavar: str | None = None
    boolean: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS = (
    # data
    Option(
        "dataset",
        "data",
        _name,
        None,
        "built-in dataset (see `jlstm datasets`); default airline_passengers",
        "NAME",
    ),
    Option(
        "data",
        "data",
        _name,
        None,
        "your own CSV file (header row; one row per time step)",
        "FILE.csv",
    ),
    Option("target", "data", _list(_name), None, "column(s) to forecast (comma-separated)", "COLS"),
    Option(
        "covariates",
        "data",
        _list(_name, allow_empty=True),
        [],
        "extra input columns (comma-separated)",
        "COLS",
    ),
    Option(
        "date_column",
        "data",
        str,
        None,
        "date column (default: a column named date, time, year, month, ...; '' for none)",
        "COL",
    ),
    Option(
        "date_format",
        "data",
        _name,
        None,
        "strptime format of the dates, e.g. %%d/%%m/%%Y (default: ISO 8601, YYYYMMDD or a year)",
        "FMT",
    ),
    Option(
        "fill",
        "data",
        _choice(FILL_POLICIES),
        "error",
        "missing values: error, ffill, linear or drop",
        "POLICY",
    ),
    Option(
        "season",
        "data",
        _int(1),
        None,
        "seasonal period of the seasonal-naive baseline and "
        "MASE (default: the dataset's, or from the dates: monthly 12, weekly 52, ...)",
        "N",
    ),
    # features
    Option("steps", "features", _int(1), 4, "past rows per input window", "N"),
    Option(
        "horizon",
        "features",
        _int(1),
        1,
        "rows forecast per window (> 1: direct multi-output head)",
        "N",
    ),
    Option("stride", "features", _int(1), 1, "rows between windows", "N"),
    Option(
        "val_size",
        "features",
        _size,
        0.15,
        "validation rows before the test rows: a count or a fraction",
        "SIZE",
    ),
    Option(
        "test_size", "features", _size, 0.15, "test rows at the end: a count or a fraction", "SIZE"
    ),
    Option(
        "scaler",
        "features",
        _choice(SCALERS),
        "standard",
        "standard, minmax or none (fitted on the training rows)",
        "KIND",
    ),
    Option("log", "features", _bool, False, "model the log of the target", boolean=True),
    Option(
        "delta",
        "features",
        _bool,
        False,
        "model the change from the last input value",
        boolean=True,
    ),
    Option(
        "calendar",
        "features",
        _list(_choice(CALENDAR_FEATURES), allow_empty=True),
        [],
        "calendar inputs from the dates: month, yearday, weekday, hour (or none)",
        "LIST",
    ),
    # model
    Option("layers", "model", _list(_int(1)), [64, 32, 16], "LSTM sizes, bottom-up", "H,H,..."),
    Option(
        "dropout",
        "model",
        _float(0.0, strict=False, below=1.0),
        0.0,
        "input dropout of every LSTM layer",
        "RATE",
    ),
    Option(
        "recurrent_dropout",
        "model",
        _float(0.0, strict=False, below=1.0),
        0.0,
        "recurrent dropout of every LSTM layer",
        "RATE",
    ),
    # train
    Option("epochs", "train", _int(1), 300, "maximum epochs", "N"),
    Option("batch_size", "train", _int(1), 16, "windows per step", "N"),
    Option("lr", "train", _float(0.0), 1e-3, "learning rate", "RATE"),
    Option(
        "optimizer",
        "train",
        _choice(OPTIMIZERS),
        "adam",
        "adam, adamw, sgd or rmsprop",
        "NAME",
    ),
    Option(
        "schedule",
        "train",
        _choice(SCHEDULES),
        "constant",
        "learning-rate schedule: constant, cosine or warmup_cosine",
        "NAME",
    ),
    Option("warmup_epochs", "train", _int(0), 0, "warm-up epochs of warmup_cosine", "N"),
    Option(
        "clip_norm",
        "train",
        _optional(_float(0.0)),
        None,
        "clip gradients to this global norm (default: no clipping)",
        "NORM",
    ),
    Option("loss", "train", _choice(LOSSES), "mse", "mse, mae or huber", "NAME"),
    Option(
        "patience",
        "train",
        _optional(_int(1)),
        50,
        "early-stopping patience in epochs (0: none)",
        "N",
    ),
    Option("seed", "train", _int(0), 0, "seed of the weights, batch order and dropout", "N"),
    Option("checkpoint_every", "train", _int(1), 10, "save the checkpoint every N epochs", "N"),
)
_BY_NAME = {o.name: o for o in OPTIONS}
_GROUPS = ("data", "features", "model", "train")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_option(parser: argparse.ArgumentParser, opt: Option) -> None:
    if opt.boolean:
        parser.add_argument(
            opt.flag,
            dest=opt.name,
            action=argparse.BooleanOptionalAction,
            default=argparse.SUPPRESS,
            help=f"{opt.help} (default: {'on' if opt.default else 'off'}, or the dataset's)",
        )
        return

    def convert(text):
        try:
            return opt.convert(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {opt.flag} {err}") from None

    default = opt.default
    if isinstance(default, list):
        default = ",".join(map(str, default)) or "none"
    shown = "" if default is None else f" (default: {default})"
    if opt.group == "features" and default is not None:
        shown = f" (default: {default}, or the dataset's)"
    parser.add_argument(
        opt.flag,
        dest=opt.name,
        type=convert,
        # Absent unless given, so that an explicit value that converts to None
        # (--patience 0, --clip-norm none) still overrides the config file and defaults.
        default=argparse.SUPPRESS,
        metavar=opt.metavar,
        help=opt.help + shown,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jlstm",
        description="Train, evaluate and run LSTM forecasters (jlstm, a JAX LSTM library).",
        epilog="Run `jlstm train` with no arguments to train the default model on the built-in "
        "airline series. `jlstm COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"jlstm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser(
        "train",
        help="train a forecaster (no arguments: the seed model on the airline series)",
        description="Train an LSTM forecaster and evaluate it against persistence and seasonal "
        "naive on the test split. Options: flags > --config TOML > the dataset's preprocessing "
        "> defaults.",
    )
    train.add_argument(
        "--config",
        metavar="FILE.toml",
        help="read options from a TOML file (the names of the flags below with underscores; "
        "a relative `data` path is relative to the file)",
    )
    train.add_argument(
        "--out",
        metavar="DIR",
        help="output directory (default: "
        "runs/<dataset>-<date>-<time>); must be new or empty unless --resume",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out DIR from its checkpoint, exactly as if it had not stopped",
    )
    train.add_argument(
        "--no-plot", dest="plot", action="store_false", help="do not write forecast.png"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    for group in _GROUPS:
        grp = train.add_argument_group(f"{group} options")
        for opt in OPTIONS:
            if opt.group == group:
                _add_option(grp, opt)
    train.set_defaults(func=_cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="metrics of a trained model and the baselines on its test split",
        description="Recompute the validation and test metrics of a trained model (and of the "
        "persistence and seasonal-naive baselines) on its data, or on another file with the "
        "same columns.",
    )
    evaluate.add_argument(
        "run",
        metavar="RUN",
        help="a run directory from `jlstm train` (or its checkpoint/ directory)",
    )
    _add_data_override(evaluate)
    evaluate.add_argument("--out", metavar="DIR", help="also write DIR/metrics.json")
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = sub.add_parser(
        "predict",
        help="forecast N steps past the end of the series, as CSV",
        description="Forecast the N rows after the end of the series (recursively when N is "
        "larger than the model's horizon) and write them as CSV.",
    )
    predict.add_argument(
        "run",
        metavar="RUN",
        help="a run directory from `jlstm train` (or its checkpoint/ directory)",
    )
    predict.add_argument(
        "-n",
        "--steps-ahead",
        dest="n",
        type=_positive_flag("--steps-ahead"),
        default=12,
        metavar="N",
        help="rows to forecast (default: 12)",
    )
    predict.add_argument(
        "--output", "-o", metavar="FILE.csv", help="write the CSV here (default: standard output)"
    )
    _add_data_override(predict)
    predict.set_defaults(func=_cmd_predict)

    datasets = sub.add_parser(
        "datasets",
        help="list the built-in datasets",
        description="List the datasets shipped with jlstm (attribution in "
        "jlstm/datasets/README.md).",
    )
    datasets.set_defaults(func=_cmd_datasets)
    return parser


def _positive_flag(flag: str):
    def convert(text):
        try:
            return _int(1)(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {flag} {err}") from None

    return convert


def _add_data_override(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--data",
        metavar="FILE.csv",
        help="use this CSV (same columns as the "
        "training data) instead of the data the model was trained on",
    )
    group.add_argument("--dataset", metavar="NAME", help="use this built-in dataset instead")


# -- settings ---------------------------------------------------------------------------------


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file {path!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read config file {path!r}: {err}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        items = value.items() if key in _GROUPS and isinstance(value, dict) else [(key, value)]
        for name, item in items:
            opt = _BY_NAME.get(name)
            if opt is None:
                raise UsageError(
                    f"{path}: unknown option {name!r}; known options are {sorted(_BY_NAME)}"
                )
            try:
                flat[name] = opt.convert(item)
            except ValueError as err:
                raise UsageError(f"{path}: {name} = {item!r} {err}") from None
    if "data" in flat:  # a relative data path is relative to the config file
        flat["data"] = os.path.join(os.path.dirname(os.path.abspath(path)), flat["data"])
    return flat


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    """Options given on the command line or in --config (flags win)."""
    given = _read_toml(args.config) if args.config else {}
    given.update({name: value for name, value in vars(args).items() if name in _BY_NAME})
    return given


def _resolve(given: dict[str, Any]) -> dict[str, Any]:
    """Every option's value: given > the built-in dataset's preprocessing > defaults."""
    if given.get("data") is not None and given.get("dataset") is not None:
        raise UsageError("--data and --dataset are exclusive: pick your file or a built-in")
    settings = {o.name: o.default for o in OPTIONS}
    if given.get("data") is None:
        settings["dataset"] = given.get("dataset", DEFAULT_DATASET)
        for key, value in feature_defaults(settings["dataset"]).items():
            settings[key] = list(value) if isinstance(value, tuple) else value
    settings.update(given)
    if settings["dataset"] is not None:
        for name in ("target", "covariates", "date_column", "date_format"):
            if given.get(name):
                raise UsageError(
                    f"--{name.replace('_', '-')} applies to --data FILE.csv; a built-in dataset "
                    "has fixed columns"
                )
    return settings


# -- data and model from settings -----------------------------------------------------------


def _load_series(source: dict[str, Any]):
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


def _data_source(settings: dict[str, Any]) -> dict[str, Any]:
    if settings["dataset"] is not None:
        fill = settings["fill"] if settings["fill"] != "error" else None
        return {"dataset": settings["dataset"], "fill": fill}
    return {
        "data": os.path.abspath(settings["data"]),
        "target": settings["target"],
        "covariates": settings["covariates"],
        "date_column": settings["date_column"],
        "date_format": settings["date_format"],
        "fill": settings["fill"],
    }


def _season(settings: dict[str, Any], series) -> int:
    if settings.get("season"):
        return settings["season"]
    if settings.get("dataset"):
        return dataset_info(settings["dataset"]).season
    return season_from_dates(series.dates)


def _feature_config(settings: dict[str, Any]):
    return FeatureConfig(
        steps=settings["steps"],
        horizon=settings["horizon"],
        stride=settings["stride"],
        val_size=settings["val_size"],
        test_size=settings["test_size"],
        scaler=settings["scaler"],
        log=settings["log"],
        delta=settings["delta"],
        calendar=tuple(settings["calendar"]),
    )


def _train_config(settings: dict[str, Any]):
    try:
        return TrainConfig(
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            learning_rate=settings["lr"],
            optimizer=settings["optimizer"],
            schedule=settings["schedule"],
            warmup_epochs=settings["warmup_epochs"],
            clip_norm=settings["clip_norm"],
            loss=settings["loss"],
            patience=settings["patience"],
            seed=settings["seed"],
        )
    except ValueError as err:
        raise UsageError(str(err)) from None


def _model_config(settings: dict[str, Any], pipeline):
    try:
        return ModelConfig(
            input_size=pipeline.input_size,
            layer_sizes=tuple(settings["layers"]),
            output_size=pipeline.output_size,
            dropout=settings["dropout"],
            recurrent_dropout=settings["recurrent_dropout"],
        )
    except ValueError as err:
        raise UsageError(f"invalid model: {err}") from None


# -- evaluation ----------------------------------------------------------------------------------


def _evaluate_split(params, model_config, pipeline, series, windows, season: int, train_rows: int):
    """Model, persistence and seasonal-naive forecasts of a split, and their metrics."""
    horizon = pipeline.config.horizon
    actual = window_targets(series, windows.origin, horizon)
    forecasts = {
        "model": one_step(params, model_config, pipeline, windows),
        "naive": metrics.naive_forecast(series.values, windows.origin, horizon),
        "seasonal_naive": metrics.seasonal_naive_forecast(
            series.values, windows.origin, horizon, season
        ),
    }
    y_train = series.values[:train_rows]
    scores = {
        name: metrics.evaluate(actual, pred, y_train, season) for name, pred in forecasts.items()
    }
    return actual, forecasts, scores


def _evaluate_splits(params, model_config, pipeline, series, windows, season: int):
    """``_evaluate_split`` of the validation and test windows."""
    train_rows = pipeline.bounds_for(series, pipeline.config).train
    return {
        name: _evaluate_split(
            params, model_config, pipeline, series, windows[name], season, train_rows
        )
        for name in ("val", "test")
    }


def _check_season(season: int, windows) -> None:
    first = int(windows["val"].origin.min())
    if first + 1 - season < 0:
        raise UsageError(
            f"--season {season} is longer than the data before the first validation forecast "
            f"(row {first + 1}): use a shorter --season or a smaller --val-size/--test-size"
        )


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


def _metrics_report(series, pipeline, windows, scores, season, extra) -> dict[str, Any]:
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
    report["season"] = season
    report["units"] = "original units of " + ", ".join(series.target_names)
    report.update(extra)
    return _json_safe(report)


def _print_table(title: str, scores: dict[str, dict[str, float]], stream=None) -> None:
    stream = stream or sys.stdout
    names = metrics.METRICS
    heads = {"mape": "mape %", "smape": "smape %"}
    print(title, file=stream)
    print(f"  {'':<15}" + "".join(f"{heads.get(n, n):>10}" for n in names), file=stream)
    for who, row in scores.items():
        cells = "".join(
            f"{row[n]:>10.3f}" if math.isfinite(row[n]) else f"{'n/a':>10}" for n in names
        )
        print(f"  {who:<15}{cells}", file=stream)


# -- output files --------------------------------------------------------------------------------


def _predictions_csv(series, windows, actual, forecasts) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    horizon = actual.shape[1]
    header = ["date" if series.dates is not None else "row", "lead", "target", "actual"]
    writer.writerow(header + list(forecasts))
    for i, origin in enumerate(windows.origin):
        for h in range(horizon):
            row = int(origin) + 1 + h
            for k, name in enumerate(series.target_names):
                cells = [_date_text(series.dates, row), h + 1, name, repr(float(actual[i, h, k]))]
                cells += [repr(float(f[i, h, k])) for f in forecasts.values()]
                writer.writerow(cells)
    return out.getvalue()


def _plot(path: str, series, pipeline, windows, forecasts, title: str) -> str | None:
    """Write the forecast plot; returns a note instead if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'jlstm[plot]'): skipped forecast.png"

    x = series.dates if series.dates is not None else np.arange(len(series))
    test = windows["test"]
    rows = test.origin + 1  # lead-1 forecasts (the first lead of a direct forecast)
    bounds = pipeline.bounds_for(series, pipeline.config)
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    k = 0
    ax.plot(x, series.values[:, k], color="0.6", lw=1.2, label="history")
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
    ax.plot(
        x[rows],
        forecasts["seasonal_naive"][:, 0, k],
        color="tab:orange",
        lw=1.2,
        ls="--",
        label="seasonal naive",
    )
    ax.plot(
        x[rows], forecasts["naive"][:, 0, k], color="tab:green", lw=1.0, ls=":", label="persistence"
    )
    for edge, name in ((bounds.train, "validation"), (bounds.val, "test")):
        ax.axvline(x[edge], color="0.8", lw=1)
        ax.text(x[edge], ax.get_ylim()[1], f" {name}", va="top", fontsize=8, color="0.4")
    ax.set_title(title)
    ax.set_ylabel(series.target_names[k])
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return None


# -- commands -----------------------------------------------------------------------------------


def _default_out(settings: dict[str, Any]) -> str:
    name = settings["dataset"] or os.path.splitext(os.path.basename(settings["data"]))[0]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = os.path.join("runs", f"{name}-{stamp}")
    suffix = 1
    while os.path.exists(out):
        suffix += 1
        out = os.path.join("runs", f"{name}-{stamp}-{suffix}")
    return out


def _check_out(out: str, resume: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} exists and is not a directory")
    if resume:
        if not os.path.isdir(os.path.join(out, "checkpoint")):
            raise UsageError(
                f"nothing to resume: {out!r} has no checkpoint/ (start the run without --resume)"
            )
    elif os.path.isdir(out) and os.listdir(out):
        raise UsageError(
            f"output directory {out!r} is not empty: choose another --out, or add --resume to "
            "continue the run in it"
        )


def _checkpoint_dir(run: str) -> str:
    nested = os.path.join(run, "checkpoint")
    return nested if os.path.isdir(nested) else run


def _cmd_train(args: argparse.Namespace) -> int:
    given = _explicit(args)
    resumed = None
    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out DIR: the run directory to continue")
        _check_out(args.out, resume=True)
        resumed = load_checkpoint(os.path.join(args.out, "checkpoint"))
        settings = resumed.meta.get("settings")
        if not isinstance(settings, dict) or set(settings) != set(_BY_NAME):
            raise UsageError(f"{args.out!r}: its checkpoint was not written by `jlstm train`")
        for name, value in given.items():
            if settings[name] != value:
                raise UsageError(
                    f"{_BY_NAME[name].flag} {value!r} differs from the run's {settings[name]!r}: "
                    "a resumed run keeps its settings (drop the option, or start a new run)"
                )
    else:
        settings = _resolve(given)

    series = _load_series(_data_source(settings))
    if resumed is not None:
        pipeline = Pipeline.from_state(resumed.meta["pipeline"], resumed.arrays)
    else:
        pipeline = Pipeline.fit(series, _feature_config(settings))
    windows = pipeline.windows(series)
    season = _season(settings, series)
    _check_season(season, windows)
    model_config = _model_config(settings, pipeline)
    train_config = _train_config(settings)
    if resumed is not None and (resumed.model_config, resumed.train_config) != (
        model_config,
        train_config,
    ):
        raise UsageError(
            f"{args.out!r}: the checkpoint's model or training config does not "
            "match its stored settings"
        )
    out = args.out or _default_out(settings)
    if resumed is None:  # a resumed run's --out was checked before its checkpoint was read
        _check_out(out, resume=False)

    # Every input is checked: from here on the run writes into `out`.
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    ckpt = os.path.join(out, "checkpoint")
    pipeline_meta, pipeline_arrays = pipeline.to_state()
    meta = {
        "settings": settings,
        "pipeline": pipeline_meta,
        "season": season,
        "source": series.source,
    }
    every = settings["checkpoint_every"]

    def on_epoch_end(state) -> None:
        finished = state.stopped or state.epoch == train_config.epochs
        if finished or state.epoch % every == 0:
            save_checkpoint(
                ckpt,
                model_config,
                train_config,
                state,
                extra_meta=meta | {"finished": finished},
                extra_arrays=pipeline_arrays,
            )

    source = settings["dataset"] or settings["data"]
    counts = "/".join(str(len(windows[s].x)) for s in ("train", "val", "test"))
    prep = [n for n in ("log", "delta") if settings[n]] + list(settings["calendar"])
    features = pipeline.config
    print(
        f"jlstm train: {source}, windows train/val/test {counts}, {features.steps} steps -> "
        f"{features.horizon}, preprocessing: {', '.join(prep) or 'none'} + {features.scaler} "
        f"scaler; model {model_config.input_size} -> "
        f"{' -> '.join(map(str, model_config.layer_sizes))} -> {model_config.output_size}; "
        f"seed {train_config.seed}; output {out}",
        flush=True,
    )
    started = time.perf_counter()
    try:
        state = fit(
            model_config,
            (windows["train"].x, windows["train"].y),
            (windows["val"].x, windows["val"].y),
            train_config,
            state=None if resumed is None else resumed.state,
            on_epoch_end=on_epoch_end,
            progress=not args.quiet,
        )
    except BaseException:
        # A run that fails or is interrupted keeps its checkpoint (for --resume); one that
        # fails before its first checkpoint leaves no empty directory behind.
        if created and not os.listdir(out):
            os.rmdir(out)
        raise
    results = _evaluate_splits(state.params, model_config, pipeline, series, windows, season)
    scores = {name: result[2] for name, result in results.items()}
    report = _metrics_report(
        series,
        pipeline,
        windows,
        scores,
        season,
        {
            "epochs": state.epoch,
            "best_epoch": state.best_epoch,
            "seed": train_config.seed,
            "train_seconds": round(time.perf_counter() - started, 3),
            "beats_baselines_rmse": all(
                scores["test"]["model"]["rmse"] < scores["test"][b]["rmse"]
                for b in ("naive", "seasonal_naive")
            ),
        },
    )
    save_history(state.history, out)
    write_text_atomic(os.path.join(out, "metrics.json"), json.dumps(report, indent=2) + "\n")
    actual, forecasts, _ = results["test"]
    write_text_atomic(
        os.path.join(out, "predictions.csv"),
        _predictions_csv(series, windows["test"], actual, forecasts),
    )
    note = None
    files = ["checkpoint/", "history.json", "history.csv", "metrics.json", "predictions.csv"]
    if args.plot:
        note = _plot(
            os.path.join(out, "forecast.png"),
            series,
            pipeline,
            windows,
            forecasts,
            f"{source}: test forecasts (seed {train_config.seed})",
        )
        if note is None:
            files.append("forecast.png")
    test = report["split"]["test"]
    _print_table(
        f"test: {test['windows']} forecasts of {test['targets_from']}..{test['targets_to']} "
        f"({', '.join(series.target_names)}, original units; seasonal period {season})",
        scores["test"],
    )
    rmse = {k: v["rmse"] for k, v in scores["test"].items()}
    verdict = "beats" if report["beats_baselines_rmse"] else "does NOT beat"
    print(
        f"model test RMSE {rmse['model']:.3f} {verdict} persistence ({rmse['naive']:.3f}) "
        f"and seasonal naive ({rmse['seasonal_naive']:.3f})"
    )
    if note:
        print(note)
    print(f"wrote {out}{os.sep}: {' '.join(files)}")
    return 0


def _load_run(args: argparse.Namespace):
    """Checkpoint, pipeline, series and seasonal period of `evaluate`/`predict`."""
    if not os.path.exists(args.run):
        raise UsageError(f"run directory {args.run!r} does not exist")
    ckpt = load_checkpoint(_checkpoint_dir(args.run))
    settings = ckpt.meta.get("settings")
    try:
        pipeline = Pipeline.from_state(ckpt.meta["pipeline"], ckpt.arrays)
        season = int(ckpt.meta["season"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{args.run!r}: the checkpoint lacks its data settings ({err})"
        ) from None
    if not isinstance(settings, dict):
        raise CheckpointError(f"{args.run!r}: the checkpoint lacks its data settings")
    source = _data_source(settings)  # a new dict
    if args.data is not None or args.dataset is not None:
        source.update({"dataset": args.dataset, "data": args.data})
        if args.dataset is None:
            source["target"] = list(pipeline.target_names)
            source["covariates"] = list(pipeline.covariate_names)
    series = _load_series(source)
    pipeline.check_series(series)
    if (ckpt.model_config.input_size, ckpt.model_config.output_size) != (
        pipeline.input_size,
        pipeline.output_size,
    ):
        raise CheckpointError(
            f"{args.run!r}: the model's input/output sizes do not match its data settings"
        )
    return ckpt, pipeline, series, season


def _cmd_evaluate(args: argparse.Namespace) -> int:
    ckpt, pipeline, series, season = _load_run(args)
    windows = pipeline.windows(series)
    _check_season(season, windows)
    results = _evaluate_splits(
        ckpt.state.params, ckpt.model_config, pipeline, series, windows, season
    )
    scores = {name: result[2] for name, result in results.items()}
    report = _metrics_report(
        series,
        pipeline,
        windows,
        scores,
        season,
        {
            "epochs": ckpt.state.epoch,
            "best_epoch": ckpt.state.best_epoch,
            "seed": ckpt.train_config.seed,
            "source": series.source,
        },
    )
    for name in ("val", "test"):
        split = report["split"][name]
        _print_table(
            f"{name}: {split['windows']} forecasts of {split['targets_from']}.."
            f"{split['targets_to']} (original units; seasonal period {season})",
            scores[name],
        )
    if args.out:
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise UsageError(f"--out {args.out!r} exists and is not a directory")
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "metrics.json")
        write_text_atomic(path, json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    ckpt, pipeline, series, _ = _load_run(args)
    if args.output and os.path.isdir(args.output):
        raise UsageError(f"--output {args.output!r} is a directory; give a file name")
    if args.output and not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        raise UsageError(f"--output {args.output!r}: its directory does not exist")
    values = recursive(ckpt.state.params, ckpt.model_config, pipeline, series, args.n)
    dates = future_dates(series.dates, args.n)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date" if dates is not None else "step", *series.target_names])
    for i in range(args.n):
        label = str(dates[i]) if dates is not None else i + 1
        writer.writerow([label, *(repr(float(v)) for v in values[i])])
    if args.output:
        write_text_atomic(args.output, out.getvalue())
        print(f"wrote {args.n} forecasts to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(out.getvalue())
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    for info in list_datasets():
        mark = " (default)" if info.name == DEFAULT_DATASET else ""
        prep = ", ".join(
            f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in info.features.items()
        )
        print(
            f"{info.name}{mark}\n    {info.description}\n    season {info.season}"
            + (f"; defaults: {prep}" if prep else "")
        )
    print("Attribution and licences: jlstm/datasets/README.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jlstm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except (UsageError, DataError, CheckpointError, FloatingPointError) as err:
        print(f"jlstm {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train":
            hint = "; continue with `jlstm train --out DIR --resume`"
        print(f"jlstm {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
