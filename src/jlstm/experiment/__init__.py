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

from .reports import (
    BASELINES,
    InputStyle,
    baseline_warning,
    baselines,
    format_dates,
    history_csv,
    input_style,
    metrics_report,
    score_table,
    transform_line,
    transform_record,
    verdict,
    write_history,
    write_metrics,
    write_plot,
    write_predictions,
)
from .runs import (
    MAX_FORECAST,
    Evaluation,
    Experiment,
    NonFiniteError,
    Prediction,
    Progress,
    TrainingInterrupted,
    TrainingResult,
    checkpoint_path,
    default_out,
    evaluate_run,
    load_run,
    load_series,
    predict_run,
    run_directory,
    run_training,
)
from .settings import GROUPS, Settings, SettingsError, check_setting

__all__ = [
    "BASELINES",
    "GROUPS",
    "MAX_FORECAST",
    "Evaluation",
    "Experiment",
    "InputStyle",
    "NonFiniteError",
    "Prediction",
    "Progress",
    "Settings",
    "SettingsError",
    "TrainingInterrupted",
    "TrainingResult",
    "baseline_warning",
    "baselines",
    "check_setting",
    "checkpoint_path",
    "default_out",
    "evaluate_run",
    "format_dates",
    "history_csv",
    "input_style",
    "load_run",
    "load_series",
    "metrics_report",
    "predict_run",
    "run_directory",
    "run_training",
    "score_table",
    "transform_line",
    "transform_record",
    "verdict",
    "write_history",
    "write_metrics",
    "write_plot",
    "write_predictions",
]
