"""``Settings``: every choice of a forecasting run, checked by the configs it builds."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from ..data import (
    DEFAULT_DATASET,
    FILL_POLICIES,
    DataError,
    FeatureConfig,
    Pipeline,
    Series,
    compose_transform,
    dataset_info,
    date_step,
    feature_defaults,
    split_bounds,
    split_transform,
)
from ..model import ModelConfig
from ..train import TrainConfig
from ..validation import check_int

__all__ = ["GROUPS", "Settings", "SettingsError", "check_setting"]

GROUPS = ("data", "features", "model", "train")
# Members of an ensemble run (``--ensemble``): all of them train in one program.
MAX_MEMBERS = 1024
# Settings added after runs were first saved: a stored run without them takes the default.
_ADDED = frozenset({"shuffle", "ensemble", "transform"})


def _in(group: str, default: Any):
    """A ``Settings`` field in TOML table ``[group]``."""
    return dataclasses.field(default=default, metadata={"group": group})


class SettingsError(ValueError):
    """A setting with a bad value; ``.name`` is the setting."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every choice of a forecasting run, by the names of the ``jlstm train`` flags.

    ``group`` in each field's metadata is the TOML table it belongs to. Values are
    checked by the configs they build (``FeatureConfig``, ``ModelConfig``,
    ``TrainConfig``): ``Settings(...)`` raises ``SettingsError`` naming the field.
    ``dataset`` and ``data`` are exclusive; with neither, the default dataset.

    ``transform`` left ``None`` becomes ``"auto"`` for your own data file (unless
    ``log`` or ``delta`` is set: an explicit choice wins) and ``"none"`` for a built-in
    dataset, whose curated preprocessing is its ``log``/``delta`` (``Settings.resolve``).
    """

    # data
    dataset: str | None = _in("data", None)
    data: str | None = _in("data", None)
    target: tuple[str, ...] | None = _in("data", None)
    covariates: tuple[str, ...] = _in("data", ())
    date_column: str | None = _in("data", None)
    date_format: str | None = _in("data", None)
    fill: str = _in("data", "error")
    season: int | None = _in("data", None)
    # features
    steps: int | None = _in("features", None)
    horizon: int = _in("features", 1)
    stride: int = _in("features", 1)
    val_size: int | float = _in("features", 0.15)
    test_size: int | float = _in("features", 0.15)
    scaler: str = _in("features", "standard")
    log: bool = _in("features", False)
    delta: bool = _in("features", False)
    calendar: tuple[str, ...] | None = _in("features", None)
    transform: str | None = _in("features", None)
    # model
    layers: tuple[int, ...] = _in("model", (64, 32, 16))
    dropout: float = _in("model", 0.0)
    recurrent_dropout: float = _in("model", 0.0)
    # train
    epochs: int = _in("train", 300)
    batch_size: int = _in("train", 16)
    lr: float = _in("train", 1e-3)
    optimizer: str = _in("train", "adam")
    schedule: str = _in("train", "constant")
    warmup_epochs: int = _in("train", 0)
    clip_norm: float | None = _in("train", None)
    loss: str = _in("train", "mse")
    patience: int | None = _in("train", 50)
    seed: int = _in("train", 0)
    shuffle: bool = _in("train", True)
    checkpoint_every: int = _in("train", 10)
    ensemble: int = _in("train", 1)

    def __post_init__(self):
        for name in ("target", "covariates", "calendar", "layers"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.dataset is None and self.data is None:
            object.__setattr__(self, "dataset", DEFAULT_DATASET)
        if self.dataset is not None and self.data is not None:
            raise SettingsError("data", "data and dataset are exclusive: pick a file or a built-in")
        if self.transform is None:
            own = self.data is not None and not (self.log is True or self.delta is True)
            object.__setattr__(self, "transform", "auto" if own else "none")
        for f in dataclasses.fields(self):
            check_setting(f.name, getattr(self, f.name))
        if self.transform == "auto" and (self.log or self.delta):
            raise SettingsError(
                "transform",
                "transform auto chooses log and delta itself: drop --log/--delta, or name the "
                "transform (e.g. --transform log_delta)",
            )
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
        """Settings from ``given`` values > the built-in dataset's preprocessing > defaults.

        The target transform: a given ``transform`` wins over the dataset's ``log`` and
        ``delta``; a given ``log`` or ``delta`` (either value) without ``transform``
        turns ``auto`` off (your own data then gets exactly those); a given
        ``transform`` that contradicts a given ``log``/``delta`` is an error.
        """
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
            if given.get("transform") is not None:
                defaults = {k: v for k, v in defaults.items() if k not in ("log", "delta")}
            values = defaults | values
        flags = {k for k in ("log", "delta") if k in given}
        if given.get("transform") is None and flags:
            values["transform"] = "none"
        elif given.get("transform") not in (None, "auto"):
            _check_transform_flags(given)
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
        # Runs saved before a setting existed take its default.
        if not set(cls.names()) - _ADDED <= set(data) <= set(cls.names()):
            raise SettingsError("settings", "not the settings of a `jlstm train` run")
        data = dict(data)
        data.setdefault("transform", "none")  # runs from before `auto`: log/delta only
        return cls(**data)

    def with_data_defaults(self, series: Series) -> Settings:
        """``steps`` and ``calendar`` left ``None`` resolved for ``series``.

        Your own data with monthly dates gets a window of 12 steps (one season, when
        every split can hold it) and the month of year as an input; anything else 4 steps
        and no calendar inputs. (On monthly seasonal series, 4 steps could not see the
        season: seasonal naive won; see docs/forecasting-defaults.md.)
        """
        if self.steps is not None and self.calendar is not None:
            return self
        monthly = self.data is not None and date_step(series.dates) == ("M", 1)
        calendar = self.calendar
        if calendar is None:
            calendar = ("month",) if monthly else ()
        steps = self.steps
        if steps is None:
            steps = 4
            if monthly:
                try:
                    split_bounds(
                        len(series), self.val_size, self.test_size, steps=12, horizon=self.horizon
                    )
                    steps = 12
                except DataError:
                    pass  # too short for 12-step windows in every split: keep 4
        return dataclasses.replace(self, steps=steps, calendar=calendar)

    def feature_config(self) -> FeatureConfig:
        """The ``FeatureConfig`` (``steps``/``calendar`` still ``None``: 4 and none)."""
        return FeatureConfig(
            steps=4 if self.steps is None else self.steps,
            horizon=self.horizon,
            stride=self.stride,
            val_size=self.val_size,
            test_size=self.test_size,
            scaler=self.scaler,
            log=self.log,
            delta=self.delta,
            calendar=() if self.calendar is None else self.calendar,
            transform=self.transform,
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
            shuffle=self.shuffle,
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


def _check_transform_flags(given: Mapping[str, Any]) -> None:
    """A named transform and explicit ``log``/``delta`` values must agree.

    ``--log`` or ``--delta`` add to a transform (``--transform delta --log`` is
    ``log_delta``, as in ``FeatureConfig``); ``--no-log``/``--no-delta`` against a
    transform that has that part, and ``--delta`` with ``revin``, are contradictions.
    """
    log, window = split_transform(given["transform"])
    for name, wanted in (("log", log), ("delta", window == "delta")):
        value = given.get(name)
        if value is None or value == wanted or (value and window != "revin"):
            continue
        if value:
            fix = "drop --delta (revin normalises each window itself)"
        else:
            fix = f"drop --no-{name}, or use --transform {_with(log, window, name, False)}"
        raise SettingsError(
            "transform",
            f"--transform {given['transform']} contradicts --{'' if value else 'no-'}{name}: {fix}",
        )


def _with(log: bool, window: str, name: str, on: bool = True) -> str:
    if name == "log":
        return compose_transform(on, window)
    return compose_transform(log, "delta" if on else "none")


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
    "steps": lambda v: v is None or _feature(steps=v),
    "horizon": lambda v: _feature(horizon=v),
    "stride": lambda v: _feature(stride=v),
    "val_size": lambda v: _size("val_size", v),
    "test_size": lambda v: _size("test_size", v),
    "scaler": lambda v: _feature(scaler=v),
    "log": lambda v: _feature(log=v),
    "delta": lambda v: _feature(delta=v),
    "calendar": lambda v: v is None or _feature(calendar=v),
    "transform": lambda v: v is None or _feature(transform=v),
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
    "shuffle": lambda v: TrainConfig(shuffle=v),
    "checkpoint_every": lambda v: check_int("checkpoint_every", v, 1, 1_000_000),
    "ensemble": lambda v: check_int("ensemble", v, 1, MAX_MEMBERS),
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
