"""The options of ``jlstm train``: one table for the flags, the TOML file and the help.

A flag's text is parsed (integer, number, list, ...) here; its value is then
checked by the config that owns it (``jlstm.experiment.check_setting`` calls
``FeatureConfig``, ``ModelConfig`` or ``TrainConfig``), so every rule lives once.

The TOML file has one table per group, ``[data]``, ``[features]``, ``[model]``,
``[train]``, holding the flag names with underscores::

    [data]
    dataset = "nile"
    [train]
    epochs = 100

A key outside its table, an unknown key, or a value given twice (a table and a
dotted key) is an error naming the fix. Flags override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Callable
from typing import Any

from ..data import CALENDAR_FEATURES, FILL_POLICIES, SCALERS, TRANSFORMS
from ..experiment import GROUPS, Settings, SettingsError, check_setting
from ..train import LOSSES, MAX_SEED, OPTIMIZERS, SCHEDULES

__all__ = ["OPTIONS", "Option", "UsageError", "add_options", "given_settings", "read_toml"]

# Integers a flag may hold (int32 step counters); the seed alone takes a 64-bit value.
MAX_INT = 2**31 - 1


class UsageError(Exception):
    """Bad flags, config values or paths: reported as one line, exit status 2."""


# -- text -> value (syntax only; ranges are the configs' business) --------------------------


def parse_int(text, maximum: int = MAX_INT) -> int:
    if isinstance(text, bool):
        raise ValueError("must be an integer")
    if isinstance(text, str):
        text = text.strip()
        if not text.lstrip("+-").isdigit():
            raise ValueError(f"must be an integer, got {text!r}")
        if len(text) > 20:
            raise ValueError(f"must be at most {maximum}")
        text = int(text)
    if not isinstance(text, int):
        raise ValueError(f"must be an integer, got {text!r}")
    if text > maximum:
        raise ValueError(f"must be at most {maximum}, got {text}")
    return text


def _seed(text) -> int:
    return parse_int(text, MAX_SEED)


def _float(text) -> float:
    if isinstance(text, bool):
        raise ValueError("must be a number")
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {text!r}") from None


def _size(text) -> int | float:
    """A row count or a fraction: ``24`` -> 24, ``0.15`` -> 0.15."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return text
    try:
        return parse_int(text)
    except ValueError:
        try:
            return float(text)
        except (TypeError, ValueError):
            raise ValueError("must be a row count (e.g. 24) or a fraction (e.g. 0.15)") from None


def _optional(parse):
    """``parse``, where ``none`` or ``0`` means ``None`` (no limit)."""

    def wrapped(text):
        if isinstance(text, str) and text.strip().lower() in ("none", "0"):
            return None
        if isinstance(text, int | float) and not isinstance(text, bool) and text == 0:
            return None
        return parse(text)

    return wrapped


def _list(parse):
    def wrapped(text) -> tuple:
        if isinstance(text, str):
            stripped = text.strip()
            items = [] if stripped.lower() in ("", "none") else stripped.split(",")
        elif isinstance(text, list | tuple):
            items = list(text)
        else:
            raise ValueError("must be a comma-separated list")
        return tuple(parse(v.strip() if isinstance(v, str) else v) for v in items)

    return wrapped


def _text(text) -> str:
    if not isinstance(text, str):
        raise ValueError(f"must be a string, got {text!r}")
    return text.strip()


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("must be true or false")


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting of ``jlstm train``: a flag, a TOML key in ``[group]``, its parser and help."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    metavar: str | None = None
    boolean: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def group(self) -> str:
        return Settings.group(self.name)

    def convert(self, raw) -> Any:
        """Parse ``raw`` and check it with the owning config; ``ValueError`` naming the flag."""
        try:
            value = self.parse(raw)
        except ValueError as err:
            raise ValueError(f"{self.flag} {err}") from None
        try:
            return check_setting(self.name, value)
        except SettingsError as err:
            message = str(err)
            if message.startswith(self.name + " "):
                message = message[len(self.name) + 1 :]
                raise ValueError(f"{self.flag} {message}") from None
            raise ValueError(f"{self.flag}: {message}") from None


def _choices(names) -> str:
    return ", ".join(names)


OPTIONS = (
    # data
    Option(
        "dataset",
        _text,
        "built-in dataset (see `jlstm datasets`); default airline_passengers",
        "NAME",
    ),
    Option("data", _text, "your own CSV file (header row; one row per time step)", "FILE.csv"),
    Option("target", _list(_text), "column(s) to forecast (comma-separated)", "COLS"),
    Option("covariates", _list(_text), "extra input columns (comma-separated)", "COLS"),
    Option(
        "date_column",
        _text,
        "date column (default: a column named date, time, year, month, ...; '' for none)",
        "COL",
    ),
    Option(
        "date_format",
        _text,
        "strptime format of the dates, e.g. %%d/%%m/%%Y (default: ISO 8601, YYYYMMDD or a year)",
        "FMT",
    ),
    Option("fill", _text, f"missing values: {_choices(FILL_POLICIES)}", "POLICY"),
    Option(
        "season",
        parse_int,
        "seasonal period of the seasonal-naive baseline and MASE (default: the dataset's, or "
        "from the dates: monthly 12, weekly 52, ...)",
        "N",
    ),
    # features
    Option(
        "steps",
        parse_int,
        "past rows per input window (default 4; 12 for your own monthly data when it fits)",
        "N",
    ),
    Option("horizon", parse_int, "rows forecast per window (> 1: direct multi-output head)", "N"),
    Option("stride", parse_int, "rows between windows", "N"),
    Option("val_size", _size, "validation rows before the test rows (count or fraction)", "SIZE"),
    Option("test_size", _size, "test rows at the end: a count or a fraction", "SIZE"),
    Option("scaler", _text, f"{_choices(SCALERS)} (fitted on the training rows)", "KIND"),
    Option(
        "transform",
        _text,
        f"how the model sees the target: {_choices(TRANSFORMS)} (default: auto for your own "
        "CSV, chosen by stationarity tests on the training rows; the dataset's for a "
        "built-in); an explicit --log/--delta turns auto off",
        "NAME",
    ),
    Option("log", _bool, "model the log of the target", boolean=True),
    Option("delta", _bool, "model the change from the last input value", boolean=True),
    Option(
        "calendar",
        _list(_text),
        f"calendar inputs from the dates: {_choices(CALENDAR_FEATURES)} (or none; default "
        "none, month for your own monthly data)",
        "LIST",
    ),
    # model
    Option("layers", _list(parse_int), "LSTM sizes, bottom-up (default 64,32,16)", "H,H,..."),
    Option("dropout", _float, "input dropout of every LSTM layer", "RATE"),
    Option("recurrent_dropout", _float, "recurrent dropout of every LSTM layer", "RATE"),
    # train
    Option("epochs", parse_int, "maximum epochs (default 300)", "N"),
    Option("batch_size", parse_int, "windows per step (default 16)", "N"),
    Option("lr", _float, "learning rate (default 1e-3)", "RATE"),
    Option("optimizer", _text, _choices(OPTIMIZERS), "NAME"),
    Option("schedule", _text, f"learning-rate schedule: {_choices(SCHEDULES)}", "NAME"),
    Option("warmup_epochs", parse_int, "warm-up epochs of warmup_cosine", "N"),
    Option("clip_norm", _optional(_float), "clip gradients to this global norm", "NORM"),
    Option("loss", _text, _choices(LOSSES), "NAME"),
    Option("patience", _optional(parse_int), "early-stopping patience (0: none; default 50)", "N"),
    Option("seed", _seed, "seed of the weights, batch order and dropout (0 .. 2**63-1)", "N"),
    Option(
        "shuffle",
        _bool,
        "a new window order every epoch; --no-shuffle: in order, as Keras fit(shuffle=False)",
        boolean=True,
    ),
    Option("checkpoint_every", parse_int, "save the checkpoint every N epochs (default 10)", "N"),
    Option(
        "ensemble",
        parse_int,
        "train N members (seeds seed..seed+N-1) in one compiled step; the forecast is their "
        "mean, with a spread (default 1)",
        "N",
    ),
)
BY_NAME = {o.name: o for o in OPTIONS}
assert set(BY_NAME) == set(Settings.names()), "every setting has a flag"


def add_options(parser: argparse.ArgumentParser) -> None:
    """One argument group per settings group; a flag is absent from the namespace unless given."""
    for group in GROUPS:
        grp = parser.add_argument_group(f"{group} options ([{group}] in the TOML file)")
        for opt in OPTIONS:
            if opt.group != group:
                continue
            if opt.boolean:
                grp.add_argument(
                    opt.flag,
                    dest=opt.name,
                    action=argparse.BooleanOptionalAction,
                    default=argparse.SUPPRESS,
                    help=f"{opt.help} (default: {_boolean_default(opt.name)})",
                )
                continue
            grp.add_argument(
                opt.flag,
                dest=opt.name,
                type=_argparse_type(opt),
                # Absent unless given, so that an explicit value that converts to None
                # (--patience 0, --clip-norm none) still overrides the config file.
                default=argparse.SUPPRESS,
                metavar=opt.metavar,
                help=opt.help,
            )


def _boolean_default(name: str) -> str:
    default = {f.name: f.default for f in dataclasses.fields(Settings)}[name]
    return "on" if default else "off, or the dataset's"


def _argparse_type(opt: Option):
    def convert(text):
        try:
            return opt.convert(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def read_toml(path: str) -> dict[str, Any]:
    """The settings in a TOML file, checked: ``{name: value}``.

    Raises:
        UsageError: unreadable file, a key outside its table or in the wrong one, an unknown
            key, a bad value.
    """
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file {path!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read config file {path!r}: {err}") from None
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in GROUPS:
            opt = BY_NAME.get(key)
            if opt is not None:
                raise UsageError(
                    f"{path}: {key} must be in the [{opt.group}] table: write "
                    f"`[{opt.group}]` above `{key} = ...`"
                )
            raise UsageError(f"{path}: unknown table or key {key!r}; the tables are {list(GROUPS)}")
        if not isinstance(value, dict):
            raise UsageError(f"{path}: {key} must be a table: write `[{key}]` on its own line")
        for name, item in value.items():
            opt = BY_NAME.get(name)
            if opt is None:
                raise UsageError(
                    f"{path}: unknown option {name!r} in [{key}]; known options are "
                    f"{sorted(BY_NAME)}"
                )
            if opt.group != key:
                raise UsageError(
                    f"{path}: {name} belongs in the [{opt.group}] table, not [{key}]: move it"
                )
            try:
                flat[name] = opt.convert(item)
            except ValueError as err:
                raise UsageError(f"{path}: [{key}] {name} = {item!r}: {err}") from None
    if flat.get("data") is not None:  # a relative data path is relative to the config file
        flat["data"] = os.path.join(os.path.dirname(os.path.abspath(path)), flat["data"])
    return flat


def given_settings(args: argparse.Namespace, *, note=None) -> dict[str, Any]:
    """Settings given in ``--config`` and as flags (flags win), already checked.

    ``note(message)`` is told about each flag that overrides a value of the file, so that
    a setting given twice is never silently replaced.
    """
    given = read_toml(args.config) if args.config else {}
    flags = {name: value for name, value in vars(args).items() if name in BY_NAME}
    if note is not None:
        for name in sorted(set(given) & set(flags)):
            if given[name] != flags[name]:
                opt = BY_NAME[name]
                note(
                    f"note: {opt.flag} {flags[name]!r} overrides [{opt.group}] {name} = "
                    f"{given[name]!r} from {args.config}"
                )
    if "data" in flags and "dataset" not in flags:
        given.pop("dataset", None)
    if "dataset" in flags and "data" not in flags:
        given.pop("data", None)
    given.update(flags)
    if given.get("data") is not None and given.get("dataset") is not None:
        raise UsageError("--data and --dataset are exclusive: pick your file or a built-in")
    return given
