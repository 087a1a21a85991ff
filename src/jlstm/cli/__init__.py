"""The ``jlstm`` command: a thin shell over ``jlstm.experiment``.

``main`` parses the command line, dispatches to one function of
``jlstm.cli.commands`` and maps exceptions to exit statuses:

* bad input (flags, config file, data, checkpoint, file system): one line on
  stderr, exit status 2, no traceback;
* forecasts or metrics that are not finite numbers: one line, exit status 1;
* SIGINT or SIGTERM: the last completed epoch is checkpointed, one line,
  exit status 130 or 143 (128 + the signal number).

``jlstm train`` with no arguments trains the seed model (LSTM 64 -> 32 -> 16 ->
Dense(1), 4 past values predict the next) on the built-in airline series.
Options come from flags, a TOML file (``--config run.toml``), the built-in
dataset's preprocessing, then the defaults, in that order of precedence
(``jlstm.cli.options``).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Sequence

from .. import __version__
from ..checkpoint import CheckpointError
from ..data import DataError
from ..experiment import (
    MAX_FORECAST,
    NonFiniteError,
    SettingsError,
    TrainingInterrupted,
)
from ..export import EXPORT_FORMATS
from ..tasks import TASKS
from . import commands
from .options import BY_NAME, UsageError, add_options, parse_int

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2
# The tasks by their command-line names (jlstm.tasks.TASKS, "-" for "_").
TASK_NAMES = tuple(sorted(name.replace("_", "-") for name in TASKS))
# jax.export's lowering platforms.
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
EXIT_NONFINITE = 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _steps_ahead(text: str) -> int:
    try:
        value = parse_int(text, MAX_FORECAST)
        if value < 1:
            raise ValueError(f"must be >= 1, got {value}")
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"--steps-ahead {err} (an integer from 1 to {MAX_FORECAST})"
        ) from None
    return value


def _platforms(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in names if p not in PLATFORMS]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"--platforms takes a comma-separated list of {', '.join(PLATFORMS)}, got {text!r}"
        )
    return tuple(dict.fromkeys(names))


def _positive(flag: str, minimum: int = 1):
    def convert(text: str) -> int:
        try:
            value = parse_int(text)
            if value < minimum:
                raise ValueError(f"must be >= {minimum}, got {value}")
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{flag} {err}") from None
        return value

    return convert


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"--budget must be a number of seconds > 0, got {text!r}")
    return value


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run", metavar="RUN", help="a run directory from `jlstm train` (or its checkpoint/)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--data",
        metavar="FILE.csv",
        help="use this CSV (same columns as the training data) instead of the run's data",
    )
    group.add_argument("--dataset", metavar="NAME", help="use this built-in dataset instead")


def _scale_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "devices and processes (how the run is spread; the results do not depend on it "
        "beyond float rounding)"
    )
    group.add_argument(
        "--devices",
        type=_positive("--devices"),
        metavar="N",
        help="CPU cores to expose as JAX devices and train on, the batch split over them "
        "(default: every core exposed; the batch is split only when each core gets >= 2048 "
        "row-steps (batch / cores x --steps), an ensemble's members over the most cores that "
        "divide their count)",
    )
    group.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="join a multi-process run (jax.distributed): process 0's address; every process "
        "runs the same command with its own --process-id; only process 0 writes --out",
    )
    group.add_argument(
        "--num-processes",
        type=_positive("--num-processes"),
        metavar="N",
        help="processes in the run",
    )
    group.add_argument(
        "--process-id",
        type=_positive("--process-id", 0),
        metavar="I",
        help="this process's index, 0..N-1",
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
        help="read options from a TOML file: tables [data], [features], [model], [train] with "
        "the flag names below (underscores); a relative `data` path is relative to the file",
    )
    train.add_argument(
        "--out",
        metavar="DIR",
        help="output directory (default: runs/<dataset>-<date>-<time>); must be new or empty "
        "unless --resume",
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
    train.add_argument(
        "--require-beat",
        action="store_true",
        help="exit 1 (after writing the whole run) when the model's RMSE does not beat every "
        "naive baseline on validation and test, for pipelines; the warning says why",
    )
    _scale_arguments(train)
    add_options(train)
    train.set_defaults(func=commands.train)

    evaluate = sub.add_parser(
        "evaluate",
        help="metrics of a trained model and the baselines on its test split",
        description="Recompute the validation and test metrics of a trained model (and of the "
        "persistence and seasonal-naive baselines) on its data, or on another file with the "
        "same columns.",
    )
    _run_arguments(evaluate)
    evaluate.add_argument("--out", metavar="DIR", help="also write DIR/metrics.json")
    evaluate.set_defaults(func=commands.evaluate)

    predict = sub.add_parser(
        "predict",
        help="forecast N steps past the end of the series, as CSV",
        description="Forecast the N rows after the end of the series (recursively when N is "
        "larger than the model's horizon) and write them as CSV, dates and decimals written "
        "as in the input. A model trained with covariates forecasts at most its --horizon "
        "rows (the covariates' future is unknown).",
    )
    _run_arguments(predict)
    predict.add_argument(
        "-n",
        "--steps-ahead",
        dest="n",
        type=_steps_ahead,
        default=12,
        metavar="N",
        help="rows to forecast (default: 12)",
    )
    predict.add_argument(
        "--output", "-o", metavar="FILE.csv", help="write the CSV here (default: standard output)"
    )
    predict.set_defaults(func=commands.predict)

    export = sub.add_parser(
        "export",
        help="write a trained run as one inference file in original units (jax.export or ONNX)",
        description="Write the run as one inference file that takes the last rows of the series "
        "in its original units (and the covariates and dates, if the run used them) and returns "
        "the forecasts in original units: the log, scaling, delta, calendar features and their "
        "inverse are inside. --format jax: a zip of a jax.export program (exported.bin) and "
        "its signature (signature.json); no jlstm needed to run it. --format onnx: one ONNX "
        "graph, the signature in its metadata. --raw writes the bare model instead (scaled "
        "inputs x (batch, steps, D) -> outputs y (batch, O)). An existing file is kept unless "
        "--force. See docs/export.md.",
    )
    export.add_argument(
        "run", metavar="RUN", help="a run directory from `jlstm train` (or its checkpoint/)"
    )
    export.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the file to write (.jax, .onnx)"
    )
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        help="jax or onnx (default: onnx for a FILE ending in .onnx, else jax)",
    )
    export.add_argument(
        "--platforms",
        type=_platforms,
        metavar="LIST",
        help=f"--format jax: where the program runs, from {', '.join(PLATFORMS)} "
        "(comma-separated; default cpu)",
    )
    export.add_argument(
        "--raw",
        action="store_true",
        help="the bare model: scaled inputs and outputs, no pipeline (a jax file is the "
        "bytes of Exported.serialize())",
    )
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    export.set_defaults(func=commands.export)

    task = sub.add_parser(
        "task",
        help="train on a long-time-lag task of the LSTM papers (adding, temporal-order, copy)",
        description="Train a one-layer LSTM on a synthetic task of the LSTM papers until the "
        "paper's stopping criterion or the time budget, then count the wrong sequences of 2560 "
        "fresh test sequences next to the paper's result. Exit status 0 when the success "
        "criterion is met, 1 when not. Writes checkpoint/, metrics.json, history.json.",
    )
    task.add_argument("name", metavar="NAME", choices=TASK_NAMES, help=", ".join(TASK_NAMES))
    task.add_argument(
        "--length", required=True, type=_positive("--length"), metavar="T", help="the task's T"
    )
    task.add_argument(
        "--out", required=True, metavar="DIR", help="output directory (must be new or empty)"
    )
    task.add_argument(
        "--seed", type=_positive("--seed", 0), default=0, metavar="S", help="seed (default 0)"
    )
    task.add_argument(
        "--budget",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="wall-clock training budget, compilation included (default 60)",
    )
    task.set_defaults(func=commands.task)

    datasets = sub.add_parser(
        "datasets",
        help="list the built-in datasets",
        description="List the datasets shipped with jlstm (attribution in "
        "jlstm/datasets/README.md).",
    )
    datasets.set_defaults(func=commands.datasets)
    return parser


def _message(err: BaseException) -> str:
    if isinstance(err, SettingsError) and err.name in BY_NAME:
        text = str(err)
        if text.startswith(err.name + " "):
            return BY_NAME[err.name].flag + text[len(err.name) :]
        return text
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename!r}" if err.filename else ""
        return f"{err.strerror}{where}"
    return str(err)


# Bad input of every kind: one line, exit status 2.
_BAD_INPUT = (UsageError, DataError, CheckpointError, SettingsError, FloatingPointError, OSError)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, handled as SIGINT."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jlstm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    name = f"jlstm {args.command}"
    previous = signal.getsignal(signal.SIGTERM)
    terminated = False
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM alone
        previous = None
    try:
        return args.func(args)
    except (
        UsageError,
        DataError,
        CheckpointError,
        SettingsError,
        FloatingPointError,
        OSError,
    ) as err:
        print(f"{name}: error: {_message(err)}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return EXIT_NONFINITE
    except TrainingInterrupted as err:
        terminated = isinstance(err.__context__, _Terminated)
        print(f"{name}: {err}", file=sys.stderr)
    except KeyboardInterrupt as err:
        terminated = isinstance(err, _Terminated)
        print(f"{name}: interrupted", file=sys.stderr)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 128 + (signal.SIGTERM if terminated else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
