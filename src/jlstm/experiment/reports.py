"""Report writers and text: metrics.json, history, predictions.csv, forecast.png, the tables.

Files are written through ``jlstm.fileio`` (atomic, no symlink followed).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import importlib.resources
import io
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from .. import fileio, metrics
from ..data import DataError, Series, dataset_info, future_dates, parse_dates

__all__ = [
    "BASELINES",
    "InputStyle",
    "baseline_warning",
    "baselines",
    "format_dates",
    "history_csv",
    "input_style",
    "metrics_report",
    "score_table",
    "transform_line",
    "transform_record",
    "verdict",
    "write_history",
    "write_metrics",
    "write_plot",
    "write_predictions",
]

BASELINES = {"naive": "persistence", "seasonal_naive": "seasonal naive"}


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


def metrics_report(exp, scores, extra: Mapping[str, Any]) -> dict[str, Any]:
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
    report["transform"] = transform_record(pipeline)
    report.update(extra)
    return _json_safe(report)


def transform_record(pipeline) -> dict[str, Any]:
    """The resolved target transform and why: ``auto``'s evidence, or ``"given"``."""
    if pipeline.transform_choice is not None:
        return pipeline.transform_choice.to_dict()
    return {"transform": pipeline.config.transform, "requested": "given"}


def transform_line(pipeline) -> str:
    """One line: ``transform: delta (auto: KPSS 1.67 > 0.463 ...)`` or ``(given)``."""
    if pipeline.transform_choice is not None:
        return f"transform: {pipeline.transform_choice.reason}"
    return f"transform: {pipeline.config.transform} (given)"


def _losses(scores, season: int) -> list[tuple[str, str, float, float]]:
    """``(split, baseline name, model rmse, baseline rmse)`` where the model's RMSE is not lower."""
    out = []
    for split in ("val", "test"):
        model = scores[split]["model"]["rmse"]
        for key, name in baselines(season).items():
            base = scores[split][key]["rmse"]
            if not model < base:
                out.append((split, name, model, base))
    return out


def baseline_warning(exp, scores) -> str | None:
    """One line when the model does not beat a baseline on validation or test, with remedies.

    ``None`` when the model's RMSE is below every baseline's on both splits. The
    remedies are concrete flags: another ``--transform`` when the model sees levels
    (or ``auto`` chose one that lost), ``--steps`` that span the season when seasonal
    naive wins, more data when the training windows are few.
    """
    lost = _losses(scores, exp.season)
    if not lost:
        return None
    pipeline, settings = exp.pipeline, exp.settings
    cfg = pipeline.config
    words = {"val": "validation", "test": "test"}
    parts = []
    for name in dict.fromkeys(name for _, name, _, _ in lost):
        mine = [(words[sp], m, b) for sp, n, m, b in lost if n == name]
        splits = " and ".join(w for w, _, _ in mine)
        rmse = ", ".join(f"{w} RMSE {m:.4g} vs {b:.4g}" for w, m, b in mine)
        parts.append(f"{name} on {splits} ({rmse})")
    fixes = []
    mode = cfg.window_mode
    positive = bool(np.all(exp.series.values > 0))
    if mode != "delta":
        alt = "log_delta" if positive and cfg.log else "delta"
        fixes.append(
            f"--transform {alt} (the model sees "
            + (
                "levels, which it cannot follow out of their training range"
                if mode == "none"
                else "each window normalised"
            )
            + ")"
        )
    else:
        others = [t for t in ("log_delta" if positive else "", "revin", "none") if t]
        others = [t for t in others if t != cfg.transform]
        fixes.append(f"another --transform ({' or '.join(others)})")
    lost_seasonal = any(name == BASELINES["seasonal_naive"] for _, name, _, _ in lost)
    if exp.season > 1 and lost_seasonal and cfg.steps < exp.season:
        fix = f"--steps {exp.season} so that a window spans the season"
        if exp.series.dates is not None and not cfg.calendar:
            fix += " (or --calendar month for monthly data)"
        fixes.append(fix)
    train = len(exp.windows["train"].x)
    if train < 100:
        fixes.append(f"more data (only {train} training windows)")
    if settings.ensemble == 1:
        fixes.append("--ensemble 5 (the mean of 5 seeds)")
    return (
        f"warning: the model does not beat {' nor '.join(parts)} with transform "
        f"{cfg.transform}, {cfg.steps} steps; try {'; '.join(fixes)}"
    )


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


def write_predictions(path: str, exp, actual, forecasts) -> None:
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


def write_plot(path: str, exp, forecasts, future: np.ndarray | None, title: str):
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
