"""The three jobs: ``run_training``, ``evaluate_run``, ``predict_run``, over an ``Experiment``."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import io
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, TextIO

import jax
import numpy as np

from .. import checkpoint, fileio, metrics, parallel
from ..data import (
    DataError,
    Pipeline,
    Series,
    Windows,
    dataset_info,
    future_dates,
    load_csv,
    load_dataset,
    season_from_dates,
    window_targets,
)
from ..ensemble import member
from ..forecast import one_step, recursive
from ..model import ModelConfig
from ..train import FitState, TrainConfig, check_int, fit
from .reports import (
    baseline_warning,
    input_style,
    metrics_report,
    transform_line,
    write_history,
    write_metrics,
    write_plot,
    write_predictions,
)
from .settings import Settings, SettingsError

__all__ = [
    "MAX_FORECAST",
    "Evaluation",
    "Experiment",
    "NonFiniteError",
    "Prediction",
    "Progress",
    "TrainingInterrupted",
    "TrainingResult",
    "checkpoint_path",
    "default_out",
    "evaluate_run",
    "load_run",
    "load_series",
    "predict_run",
    "run_directory",
    "run_training",
]

MAX_FORECAST = 1_000_000


class NonFiniteError(ArithmeticError):
    """The model's forecasts or metrics are not finite numbers."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM during training. ``.resumable``: a checkpoint is there to resume."""

    def __init__(self, message: str, *, resumable: bool, out: str):
        super().__init__(message)
        self.resumable = resumable
        self.out = out


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
        settings = settings.with_data_defaults(series)
        season = settings.season or _default_season(settings, series)
        if pipeline is None:
            pipeline = Pipeline.fit(series, settings.feature_config(), season=season)
        windows = pipeline.windows(series)
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

    @property
    def members(self) -> int | None:
        """The ensemble's member count (``settings.ensemble``), ``None`` for one model."""
        return self.settings.ensemble if self.settings.ensemble > 1 else None

    def fit(self, **kwargs) -> FitState:
        """``jlstm.train.fit`` on the training and validation windows (an ensemble's too).

        ``kwargs`` go to ``fit`` (``mesh=``, ``on_epoch_end=``, ...).
        """
        w = self.windows
        return fit(
            self.model_config,
            (w["train"].x, w["train"].y),
            (w["val"].x, w["val"].y),
            self.train_config,
            ensemble=self.members,
            **kwargs,
        )

    def member_params(self, params) -> list:
        """Each member's weights of an ensemble's stacked ``params`` (``[params]`` if none)."""
        if self.members is None:
            return [params]
        return [member(params, i) for i in range(self.members)]

    def evaluate(self, params) -> dict[str, tuple[np.ndarray, dict, dict]]:
        """``{"val", "test"}``: ``(actual, forecasts, scores)`` of the model and baselines.

        An ensemble's ``"model"`` forecast is the mean of its members' forecasts.
        """
        return _evaluate_splits(
            self.member_params(params),
            self.model_config,
            self.pipeline,
            self.series,
            self.windows,
            self.season,
        )

    def member_scores(self, params) -> dict[str, Any]:
        """An ensemble's members, each on its own: ``{"seeds", "val", "test", "spread"}``.

        ``val`` and ``test`` list each member's metrics; ``spread`` holds, per split and
        metric, their standard deviation across members (``ddof=1``).
        """
        seeds = [self.train_config.seed + i for i in range(self.members or 1)]
        out: dict[str, Any] = {"seeds": seeds}
        for name, result in self.evaluate_members(params).items():
            out[name] = result
        out["spread"] = {
            split: {
                m: float(np.std([row[m] for row in out[split]], ddof=1)) if len(seeds) > 1 else 0.0
                for m in out[split][0]
            }
            for split in ("val", "test")
        }
        return out

    def evaluate_members(self, params) -> dict[str, list[dict[str, float]]]:
        """``{"val", "test"}``: each member's metrics (its own forecast, no averaging)."""
        train_rows = self.pipeline.bounds_for(self.series, self.pipeline.config).train
        y_train = self.series.values[:train_rows]
        out = {}
        for split in ("val", "test"):
            windows = self.windows[split]
            actual = window_targets(self.series, windows.origin, self.pipeline.config.horizon)
            out[split] = [
                metrics.evaluate(
                    actual,
                    one_step(p, self.model_config, self.pipeline, windows),
                    y_train,
                    self.season,
                )
                for p in self.member_params(params)
            ]
        return out


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


def _evaluate_split(members, model_config, pipeline, series, windows, season, train_rows):
    horizon = pipeline.config.horizon
    actual = window_targets(series, windows.origin, horizon)
    each = [one_step(p, model_config, pipeline, windows) for p in members]
    forecasts = {
        "model": each[0] if len(each) == 1 else np.mean(each, axis=0),
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


def _evaluate_splits(members, model_config, pipeline, series, windows, season):
    train_rows = pipeline.bounds_for(series, pipeline.config).train
    return {
        name: _evaluate_split(
            members, model_config, pipeline, series, windows[name], season, train_rows
        )
        for name in ("val", "test")
    }


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
        warning: one line when the model does not beat a baseline on validation or
            test, with the remedies (``baseline_warning``), else ``None``.
    """

    out: str
    experiment: Experiment
    state: FitState
    scores: dict[str, dict[str, dict[str, float]]]
    report: dict[str, Any]
    files: list[str]
    notes: list[str]
    warning: str | None = None


def _recovered(path: str) -> bool:
    """``checkpoint.recover(path)``; a checkpoint there that is not complete raises its reason."""
    if checkpoint.recover(path):
        return True
    if os.path.isdir(path):
        checkpoint.load_checkpoint(path)  # names what is wrong: corrupt, truncated, ...
    return False


def _nonempty(out: str) -> bool:
    return any(name != fileio.LOCK_FILE for name in os.listdir(out))


def _check_out(out: str, resume: bool, resumable: bool = True) -> None:
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SettingsError("out", f"--out {out!r} exists and is not a directory")
    if resume:
        ckpt = os.path.join(out, "checkpoint")
        fileio.refuse_symlink(ckpt, "checkpoint directory")
        if not os.path.isdir(out) or not _recovered(ckpt):
            raise SettingsError(
                "out",
                f"nothing to resume: {out!r} has no complete checkpoint/ (start the run "
                "without --resume)",
            )
    elif os.path.isdir(out) and _nonempty(out):
        fix = ", or add --resume to continue the run in it" if resumable else ""
        raise SettingsError(
            "out", f"output directory {out!r} is not empty: choose another --out{fix}"
        )


@contextlib.contextmanager
def run_directory(out: str, *, resume: bool = False, resumable: bool = True) -> Iterator[bool]:
    """Hold ``out`` as a run directory while the block writes into it.

    ``out`` must be new or empty (or, with ``resume``, hold a complete checkpoint); it is
    created, proved writable (``fileio.check_writable``), locked (``fileio.DirLock``) and
    checked again under the lock, so two runs never share it. A directory created here
    that is still empty at the end is removed. ``resumable=False`` leaves ``--resume``
    out of the error that names the fix. Yields whether the directory was created.
    """
    _check_out(out, resume, resumable)
    created = not os.path.isdir(out)
    try:
        fileio.check_writable(out)
        lock = fileio.DirLock(out).acquire()
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    try:
        if not resume:
            _check_out(out, False, resumable)  # another run may have started here meanwhile
        yield created
    finally:
        lock.release()
        if created and os.path.isdir(out) and not _nonempty(out):
            shutil.rmtree(out, ignore_errors=True)


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
    mesh: jax.sharding.Mesh | int | str | None = None,
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
        mesh: train data-parallel on this mesh (``fit(mesh=...)``); ``None``: one
            device; ``"auto"``: ``jlstm.parallel.auto_mesh``'s rule for the run's batch
            size and ensemble (what ``jlstm train`` does); an int ``n``: that rule with
            ``n`` devices (``jlstm train --devices n``).

    In a ``jax.distributed`` job every process calls this with the same arguments and
    trains its share; only process 0 checks, locks and writes ``out`` (checkpoints,
    reports), the others write nothing and wait for it at a barrier before training
    and after every checkpoint. ``--resume`` needs ``out`` readable by every process
    (a shared file system) and the same process count.

    The directory is locked (``fileio.DirLock``) while the run lives; its writability
    is checked before training. On SIGINT (or SIGTERM mapped to ``KeyboardInterrupt``)
    the last completed epoch is checkpointed and ``TrainingInterrupted`` raised.
    """
    say = log or (lambda message: None)
    if jax.process_index() != 0:
        return _train_follower(settings, out, resume, given, mesh, say)
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
    with run_directory(out, resume=resumed is not None) as created:
        _barrier("jlstm start")  # the other processes read the checkpoint after recovery
        return _train_locked(exp, out, resumed, created, progress, plot, say, mesh)


def _barrier(name: str) -> None:
    """Wait for every process of a ``jax.distributed`` job (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _checkpoint_due(state: FitState, settings: Settings, train_config: TrainConfig) -> bool:
    finished = state.stopped or state.epoch == train_config.epochs
    return finished or state.epoch % settings.checkpoint_every == 0


def _mesh(mesh, exp: Experiment):
    if mesh is None or isinstance(mesh, jax.sharding.Mesh):
        return mesh
    devices = None if mesh == "auto" else mesh
    if devices is not None and (not isinstance(devices, int) or devices < 1):
        raise SettingsError(
            "devices", f"mesh must be a Mesh, 'auto' or a device count, got {mesh!r}"
        )
    return parallel.auto_mesh(
        exp.settings.batch_size, exp.settings.steps, ensemble=exp.members, devices=devices
    )


def _train_follower(settings, out, resume, given, mesh, say) -> TrainingResult:
    """Process ``i > 0`` of a multi-process run: train its share, write nothing."""
    _barrier("jlstm start")  # process 0 has checked `out` (and recovered its checkpoint)
    resumed = None
    if resume:
        if not out:
            raise SettingsError("out", "--resume needs --out DIR: the run directory to continue")
        resumed, settings = _resume_settings(out, given)
        exp = Experiment.build(
            settings, pipeline=Pipeline.from_state(resumed.meta["pipeline"], resumed.arrays)
        )
    else:
        exp = Experiment.build(settings if settings is not None else Settings())

    def on_epoch_end(state: FitState) -> None:
        if _checkpoint_due(state, exp.settings, exp.train_config):
            _barrier(f"jlstm checkpoint {state.epoch}")

    mesh = _mesh(mesh, exp)
    rank, count = jax.process_index(), jax.process_count()
    say(f"jlstm train: process {rank} of {count}; process 0 writes the run")
    state = exp.fit(
        state=None if resumed is None else resumed.state, on_epoch_end=on_epoch_end, mesh=mesh
    )
    scores = {name: result[2] for name, result in exp.evaluate(state.params).items()}
    note = f"process {rank} of {count}: nothing written here (process 0 writes {out or 'the run'})"
    report = metrics_report(exp, scores, {"epochs": state.epoch, "seed": exp.train_config.seed})
    warning = baseline_warning(exp, scores)
    return TrainingResult(out or "", exp, state, scores, report, [], [note], warning)


def _train_locked(exp, out, resumed, created, progress, plot, say, mesh) -> TrainingResult:
    mesh = _mesh(mesh, exp)
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
        if _checkpoint_due(state, settings, train_config):
            save(state, state.stopped or state.epoch == train_config.epochs)
            _barrier(f"jlstm checkpoint {state.epoch}")

    source = settings.dataset or settings.data
    counts = "/".join(str(len(windows[s].x)) for s in ("train", "val", "test"))
    features = pipeline.config
    prep = ([] if features.transform == "none" else [features.transform]) + list(features.calendar)
    say(
        f"jlstm train: {source}, windows train/val/test {counts}, {features.steps} steps -> "
        f"{features.horizon}, preprocessing: {', '.join(prep) or 'none'} + {features.scaler} "
        f"scaler; model {model_config.input_size} -> "
        f"{' -> '.join(map(str, model_config.layer_sizes))} -> {model_config.output_size}; "
        f"seed {train_config.seed}"
        + (f", {exp.members} members" if exp.members else "")
        + f"; {1 if mesh is None else mesh.size} device(s); output {out}"
    )
    say(transform_line(pipeline))
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
            mesh=mesh,
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
    seconds = time.perf_counter() - started
    return _report_training(exp, out, state, seconds, plot, 1 if mesh is None else mesh.size)


def _report_training(exp, out, state, seconds, plot, mesh_devices: int) -> TrainingResult:
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
            "devices": {**parallel.device_summary(), "mesh_devices": mesh_devices},
        },
    )
    if exp.members is not None:
        report["members"] = exp.member_scores(state.params)
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
    warning = baseline_warning(exp, scores)
    return TrainingResult(out, exp, state, scores, report, files, notes, warning)


def _future(params, exp: Experiment) -> np.ndarray | None:
    n = max(exp.season, exp.pipeline.config.horizon, 12 if exp.season == 1 else 0)
    if exp.pipeline.covariate_names:
        n = exp.pipeline.config.horizon
    try:
        values, _ = _recursive_mean(params, exp, n)
    except DataError:
        return None
    return values if np.all(np.isfinite(values)) else None


def _recursive_mean(params, exp: Experiment, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``(n, K)`` recursive forecast and, for an ensemble, its ``(n, K)`` spread.

    Each member forecasts recursively from its own outputs; the forecast is their mean
    and the spread their standard deviation per step (``ensemble.mean_and_spread``).
    """
    each = [
        recursive(p, exp.model_config, exp.pipeline, exp.series, n)
        for p in exp.member_params(params)
    ]
    if len(each) == 1:
        return each[0], None
    stacked = np.stack(each)
    return stacked.mean(axis=0), stacked.std(axis=0, ddof=1)


class Evaluation(NamedTuple):
    """What ``evaluate_run`` computed: ``scores`` as in ``TrainingResult``, the report,
    and ``baseline_warning``'s line (``None`` when the model beats every baseline)."""

    experiment: Experiment
    scores: dict[str, dict[str, dict[str, float]]]
    report: dict[str, Any]
    warning: str | None = None


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
    if not _recovered(path):
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
    if exp.members is not None:
        report["members"] = exp.member_scores(ckpt.state.params)
    return Evaluation(exp, scores, report, baseline_warning(exp, scores))


class Prediction(NamedTuple):
    """``n`` forecasts past the end of the series.

    Attributes:
        labels: the ``n`` dates (in the input's date style) or step numbers, as text.
        values: ``(n, K)`` float64 forecasts in original units (an ensemble's mean).
        names: the ``K`` target names.
        spread: an ensemble's ``(n, K)`` spread across members per step (standard
            deviation, ``ddof=1``; a ``<name>_spread`` column of the CSV), else ``None``.
        csv: the forecasts as CSV text, numbers rounded to the input's decimals.
    """

    labels: list[str]
    values: np.ndarray
    names: tuple[str, ...]
    csv: str
    spread: np.ndarray | None = None


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
    values, spread = _recursive_mean(ckpt.state.params, exp, n)
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
    names = exp.series.target_names
    spread_names = [] if spread is None else [f"{name}_spread" for name in names]
    writer.writerow(["date" if dates is not None else "step", *names, *spread_names])
    for i, (label, row) in enumerate(zip(labels, values, strict=True)):
        extra = [] if spread is None else [style.number(v) for v in spread[i]]
        writer.writerow([label, *(style.number(v) for v in row), *extra])
    return Prediction(labels, values, names, out.getvalue(), spread)
