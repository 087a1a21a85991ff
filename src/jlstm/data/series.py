"""Series loaded from CSV: target and covariate columns, dates, missing values.

``load_csv`` reads a file with a header row into a ``Series``: one or more
target columns (what the model forecasts), optional covariate columns (extra
inputs), and an optional date column (parsed to ``datetime64``, used for
calendar features, plot axes and the dates of future forecasts).

Missing values (empty cells, ``NA``, ``NaN``, ``null``) are an error unless the
caller picks a fill policy: ``ffill`` (carry the last value forward),
``linear`` (interpolate between neighbours; ends take the nearest value) or
``drop`` (drop the rows). Infinite and non-numeric values are always errors.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os
import re
from collections.abc import Sequence

import numpy as np

from .errors import DataError

__all__ = [
    "FILL_POLICIES",
    "Series",
    "date_step",
    "future_dates",
    "load_csv",
    "parse_dates",
    "season_from_dates",
]

FILL_POLICIES = ("error", "ffill", "linear", "drop")
_MISSING = {"", "na", "nan", "null", "none", "n/a", "?"}
_DATE_NAMES = ("date", "datetime", "time", "timestamp", "ds", "year", "month", "period")
# Coarsest first: a date column is represented in the coarsest unit that holds every date exactly.
_UNITS = ("Y", "M", "D", "h", "m", "s")


@dataclasses.dataclass(frozen=True, eq=False)
class Series:
    """A multivariate time series in time order.

    Attributes:
        values: ``(T, K)`` float64 target columns (what is forecast).
        covariates: ``(T, C)`` float64 extra input columns (``C`` may be 0).
        dates: ``(T,)`` ``datetime64``, strictly increasing, or ``None``.
        target_names: the ``K`` target column names.
        covariate_names: the ``C`` covariate column names.
        source: where the series came from (a path or ``dataset:NAME``).
    """

    values: np.ndarray
    covariates: np.ndarray
    dates: np.ndarray | None
    target_names: tuple[str, ...]
    covariate_names: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self):
        values = np.asarray(self.values, np.float64)
        if values.ndim == 1:
            values = values[:, None]
        covariates = np.asarray(self.covariates, np.float64).reshape(len(values), -1)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "covariates", covariates)
        if len(self.target_names) != values.shape[1]:
            raise DataError(f"{values.shape[1]} target columns but names {self.target_names}")
        if len(self.covariate_names) != covariates.shape[1]:
            raise DataError(
                f"{covariates.shape[1]} covariate columns but names {self.covariate_names}"
            )
        if self.dates is not None and len(self.dates) != len(values):
            raise DataError(f"{len(self.dates)} dates for {len(values)} rows")
        for name, block, names in (
            ("target", values, self.target_names),
            ("covariate", covariates, self.covariate_names),
        ):
            bad = ~np.isfinite(block)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise DataError(
                    f"{name} column {names[col]!r} has a non-finite value ({block[row, col]}) at "
                    f"row {row}: remove it or mark it missing and pick a --fill policy"
                )

    def __len__(self) -> int:
        return len(self.values)


def _parse_number(cell: str, column: str, line: int, path: str) -> float:
    text = cell.strip()
    if text.lower() in _MISSING:
        return np.nan
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"{path}, line {line}: column {column!r} has the non-numeric value {cell!r}; "
            "fix the value or choose numeric --target/--covariates columns"
        ) from None
    if not np.isfinite(value):
        raise DataError(
            f"{path}, line {line}: column {column!r} has the non-finite value {cell!r}; "
            "replace it with a number or leave it empty and pick a --fill policy"
        )
    return value


def _coarsest(dates: np.ndarray) -> np.ndarray:
    """``dates`` in the coarsest unit that represents every one exactly."""
    for unit in _UNITS:
        coarse = dates.astype(f"datetime64[{unit}]")
        if np.array_equal(coarse.astype(dates.dtype), dates):
            return coarse
    return dates


def parse_dates(
    texts: Sequence[str],
    *,
    fmt: str | None = None,
    column: str = "date",
    path: str = "",
    lines: Sequence[int] | None = None,
) -> np.ndarray:
    """Parse date strings to ``(T,)`` ``datetime64`` in the coarsest exact unit.

    Without ``fmt`` it understands ISO 8601 (``1949``, ``1949-01``,
    ``1949-01-31``, ``1949-01-31T12:00``), ``YYYYMMDD`` and plain years.
    With ``fmt`` it uses ``datetime.strptime`` (e.g. ``"%d/%m/%Y"``). Error
    messages cite ``lines[i]`` for ``texts[i]`` (default ``i + 1``).

    Raises:
        DataError: on an unparsable date or dates that are not strictly increasing.
    """
    out = []
    where = f"{path}, " if path else ""
    lines = list(lines) if lines is not None else list(range(1, len(texts) + 1))
    for row, text in enumerate(texts):
        text = text.strip()
        try:
            if fmt is not None:
                out.append(np.datetime64(datetime.datetime.strptime(text, fmt), "s"))
            elif re.fullmatch(r"\d{8}", text):
                out.append(np.datetime64(f"{text[:4]}-{text[4:6]}-{text[6:]}", "s"))
            else:
                out.append(np.datetime64(text).astype("datetime64[s]"))
        except ValueError:
            hint = "check --date-format" if fmt else "pass --date-format (e.g. '%d/%m/%Y')"
            raise DataError(
                f"{where}line {lines[row]}: cannot parse {text!r} in date column {column!r}; {hint}"
            ) from None
    dates = np.array(out, dtype="datetime64[s]")
    if len(dates) > 1:
        bad = np.flatnonzero(np.diff(dates) <= np.timedelta64(0, "s"))
        if bad.size:
            i = bad[0]
            raise DataError(
                f"{where}dates in column {column!r} must be strictly increasing: line "
                f"{lines[i + 1]} ({texts[i + 1].strip()!r}) does not come after line "
                f"{lines[i]} "
                f"({texts[i].strip()!r}); sort the file or remove duplicate rows"
            )
    return _coarsest(dates)


def date_step(dates: np.ndarray | None) -> tuple[str, int] | None:
    """The regular spacing of ``dates`` as ``(unit, count)``, e.g. ``("M", 1)``, or ``None``."""
    if dates is None or len(dates) < 2:
        return None
    dates = _coarsest(dates)
    unit = np.datetime_data(dates.dtype)[0]
    gaps = np.unique(np.diff(dates).astype(np.int64))
    if len(gaps) != 1:
        return None
    return unit, int(gaps[0])


def season_from_dates(dates: np.ndarray | None) -> int:
    """Seasonal period implied by regular dates: monthly 12, quarterly 4, weekly 52,
    daily 7, hourly 24; 1 (no season) otherwise."""
    known = {("M", 1): 12, ("M", 3): 4, ("D", 7): 52, ("D", 1): 7, ("h", 1): 24}
    return known.get(date_step(dates), 1)


def future_dates(dates: np.ndarray | None, n: int) -> np.ndarray | None:
    """The ``n`` dates after the last of regularly spaced ``dates``, or ``None``."""
    step = date_step(dates)
    if step is None:
        return None
    unit, count = step
    # ``date_step`` works in the coarsest exact unit: the last date is exact in it too.
    last = dates[-1].astype(f"datetime64[{unit}]")
    return last + np.arange(1, n + 1) * np.timedelta64(count, unit)


def _fill(block: np.ndarray, names: Sequence[str], policy: str, path: str) -> np.ndarray:
    """Fill NaNs column by column (``ffill`` or ``linear``)."""
    block = block.copy()
    rows = np.arange(len(block))
    for k in range(block.shape[1]):
        col = block[:, k]
        missing = np.isnan(col)
        if not missing.any():
            continue
        if missing.all():
            raise DataError(f"{path}: column {names[k]!r} has no values at all")
        if policy == "linear":
            col[missing] = np.interp(rows[missing], rows[~missing], col[~missing])
        else:
            if missing[0]:
                raise DataError(
                    f"{path}: column {names[k]!r} starts with a missing value, which ffill "
                    "cannot fill; use --fill linear or --fill drop"
                )
            last = np.maximum.accumulate(np.where(missing, 0, rows))
            col[:] = col[last]
    return block


def _resolve_columns(
    header: list[str],
    target: str | Sequence[str] | None,
    covariates: Sequence[str],
    date_column: str | None,
    path: str,
) -> tuple[list[str], list[str], str | None]:
    def check(name: str, role: str) -> str:
        if name not in header:
            raise DataError(f"{path} has no column {name!r} (for {role}); its columns are {header}")
        return name

    if date_column is None:
        date_column = next((h for h in header if h.strip().lower() in _DATE_NAMES), None)
    elif date_column == "":
        date_column = None
    else:
        check(date_column, "--date-column")
    covariates = [check(c, "--covariates") for c in covariates]
    if target is None:
        rest = [h for h in header if h != date_column and h not in covariates]
        if len(rest) != 1:
            raise DataError(
                f"{path} has columns {header}: name the column to forecast with --target"
            )
        targets = rest
    else:
        targets = [target] if isinstance(target, str) else list(target)
        if not targets:
            raise DataError("--target needs at least one column name")
        targets = [check(t, "--target") for t in targets]
    overlap = (set(targets) & set(covariates)) | ({date_column} & (set(targets) | set(covariates)))
    if overlap:
        raise DataError(
            f"column(s) {sorted(overlap)} are used twice: target, covariate and date columns "
            "must be different"
        )
    return targets, covariates, date_column


def load_csv(
    path: str | os.PathLike,
    *,
    target: str | Sequence[str] | None = None,
    covariates: Sequence[str] = (),
    date_column: str | None = None,
    date_format: str | None = None,
    fill: str = "error",
    source: str | None = None,
) -> Series:
    """Read a CSV file with a header row into a ``Series``.

    Args:
        path: the file.
        target: the column(s) to forecast; ``None`` picks the only column that is
            neither the date nor a covariate.
        covariates: extra input columns (known alongside the target).
        date_column: the date column; ``None`` looks for a column called ``date``,
            ``time``, ``timestamp``, ``ds``, ``year``, ``month`` or ``period``
            (any case), ``""`` means there is none.
        date_format: a ``strptime`` format for the dates (default: ISO 8601,
            ``YYYYMMDD`` or a plain year).
        fill: missing-value policy, one of ``FILL_POLICIES``; ``"error"`` refuses
            a file with missing values and names the first.
        source: label stored in ``Series.source`` (default: the path).

    Raises:
        DataError: missing file, unknown column, non-numeric or non-finite value,
            missing values under ``fill="error"``, unparsable or unsorted dates.
    """
    path = os.fspath(path)
    if fill not in FILL_POLICIES:
        raise DataError(f"unknown fill policy {fill!r}; use one of {list(FILL_POLICIES)}")
    if not os.path.isfile(path):
        raise DataError(f"data file {path!r} does not exist (or is not a file)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            # Blank lines are skipped; keep each row's line number for error messages.
            rows = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path!r} as a UTF-8 CSV file: {err}") from None
    if not rows:
        raise DataError(f"{path!r} is empty: expected a header row and data rows")
    header = [h.strip() for h in rows[0][1]]
    if len(set(header)) != len(header):
        raise DataError(f"{path} has duplicate column names in its header {header}")
    targets, covs, date_col = _resolve_columns(header, target, covariates, date_column, path)
    lines = [line for line, _ in rows[1:]]
    body = [row for _, row in rows[1:]]
    if not body:
        raise DataError(f"{path} has a header but no data rows")
    for line, row in zip(lines, body, strict=True):
        if len(row) != len(header):
            raise DataError(
                f"{path}, line {line}: {len(row)} fields but the header has {len(header)}"
            )
    index = {h: j for j, h in enumerate(header)}

    def numbers(names: list[str]) -> np.ndarray:
        out = np.empty((len(body), len(names)))
        for k, name in enumerate(names):
            j = index[name]
            for i, row in enumerate(body):
                out[i, k] = _parse_number(row[j], name, lines[i], path)
        return out

    values, cov = numbers(targets), numbers(covs)
    dates = None
    if date_col is not None:
        dates = parse_dates(
            [row[index[date_col]] for row in body],
            fmt=date_format,
            column=date_col,
            path=path,
            lines=lines,
        )
    missing = np.isnan(values).any(axis=1) | np.isnan(cov).any(axis=1)
    if missing.any():
        if fill == "error":
            first = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{path} has {int(missing.sum())} row(s) with missing values (first at line "
                f"{lines[first]}); pick a policy with --fill ffill, --fill linear or --fill drop"
            )
        if fill == "drop":
            keep = ~missing
            values, cov = values[keep], cov[keep]
            dates = None if dates is None else dates[keep]
        else:
            values = _fill(values, targets, fill, path)
            cov = _fill(cov, covs, fill, path)
    return Series(values, cov, dates, tuple(targets), tuple(covs), source or path)
