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
import itertools
import os
import re
import warnings
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


def _parse_number(cell: str, column: str, line, path: str) -> float:
    """One cell as a float (NaN if missing). ``line()`` gives its line number, for errors."""
    text = cell.strip()
    if text.lower() in _MISSING:
        return np.nan
    try:
        value = float(text)
    except ValueError:
        raise DataError(
            f"{path}, line {line()}: column {column!r} has the non-numeric value {cell!r}; "
            "fix the value or choose numeric --target/--covariates columns"
        ) from None
    if not np.isfinite(value):
        raise DataError(
            f"{path}, line {line()}: column {column!r} has the non-finite value {cell!r}; "
            "replace it with a number or leave it empty and pick a --fill policy"
        )
    return value


def _numbers(cells: Sequence[str], column: str, path: str, line_of) -> np.ndarray:
    """A column of cells as ``(N,)`` float64, NaN where missing.

    Bulk conversion in C when every cell is a finite number (the common case); otherwise
    cell by cell, which keeps the exact rules and error messages of ``_parse_number``.
    """
    try:
        out = np.array(cells, dtype=str).astype(np.float64)
    except ValueError:
        out = None
    if out is not None and np.all(np.isfinite(out)):
        return out
    return np.array(
        [_parse_number(cell, column, lambda i=i: line_of(i), path) for i, cell in enumerate(cells)],
        dtype=np.float64,
    )


def _coarsest(dates: np.ndarray) -> np.ndarray:
    """``dates`` in the coarsest unit that represents every one exactly."""
    for unit in _UNITS:
        coarse = dates.astype(f"datetime64[{unit}]")
        if np.array_equal(coarse.astype(dates.dtype), dates):
            return coarse
    return dates


# An ISO date-time with a UTC offset: ``2020-03-01T00:00+02:00``, ``...Z``, ``...+0200``.
_WITH_OFFSET = re.compile(
    r"(\d{4}-\d{2}-\d{2}[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?)\s*"
    r"(Z|[+-]\d{2}(?::?\d{2})?)",
    re.IGNORECASE,
)
_NO_OFFSET = "no offset"


def _offset_name(text: str) -> str:
    """``+02:00`` for ``+02``, ``+0200``, ``+02:00``; ``+00:00`` for ``Z``."""
    if text.upper() == "Z":
        return "+00:00"
    digits = text[1:].replace(":", "")
    return f"{text[0]}{digits[:2]}:{digits[2:4] or '00'}"


class _BadDate(Exception):
    def __init__(self, index: int):
        self.index = index


def _parse_one(text: str, fmt: str | None) -> tuple[np.datetime64, str]:
    """One date string -> ``(datetime64[s] local wall time, its UTC offset or _NO_OFFSET)``."""
    text = text.strip()
    if fmt is not None:
        value = datetime.datetime.strptime(text, fmt)
        offset = _NO_OFFSET
        if value.tzinfo is not None:
            minutes = int(value.utcoffset().total_seconds() // 60)
            sign = "-" if minutes < 0 else "+"
            offset = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
            value = value.replace(tzinfo=None)
        return np.datetime64(value, "s"), offset
    if re.fullmatch(r"\d{8}", text):
        return np.datetime64(f"{text[:4]}-{text[4:6]}-{text[6:]}", "s"), _NO_OFFSET
    match = _WITH_OFFSET.fullmatch(text)
    if match:
        local = match.group(1).replace(" ", "T")
        return np.datetime64(local).astype("datetime64[s]"), _offset_name(match.group(2))
    with warnings.catch_warnings():
        # numpy converts other time-zone forms to UTC with only a warning: refuse them.
        warnings.simplefilter("error")
        return np.datetime64(text).astype("datetime64[s]"), _NO_OFFSET


def _date_block(texts: Sequence[str], fmt: str | None) -> tuple[np.ndarray, list[str]]:
    """``(datetime64[s] (N,), one offset name per row)``; raises ``_BadDate(i)``.

    Bulk ISO parsing in C first (no offsets, no ``YYYYMMDD``, no format); anything else, or
    any failure, goes string by string through ``_parse_one``.
    """
    if fmt is None and len(texts):
        array = np.array(texts, dtype=str)
        eight = (np.char.str_len(array) == 8) & np.char.isdigit(array)
        if not eight.any():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # a time zone: numpy warns and shifts
                    return array.astype("datetime64[s]"), [_NO_OFFSET] * len(texts)
            except (ValueError, OverflowError, Warning):
                pass
    out, offsets = np.empty(len(texts), "datetime64[s]"), []
    for i, text in enumerate(texts):
        try:
            out[i], offset = _parse_one(text, fmt)
        except (ValueError, OverflowError, Warning):
            raise _BadDate(i) from None
        offsets.append(offset)
    return out, offsets


class _DateColumn:
    """Parses a date column block by block, then checks offsets and order (``finish``).

    ``text_of(i)`` and ``line_of(i)`` give row ``i``'s original string and line number for
    error messages (only called on an error, so ``load_csv`` can find them lazily).
    """

    def __init__(self, fmt, column, path, text_of, line_of):
        self.fmt, self.column, self.path = fmt, column, path
        self.text_of, self.line_of = text_of, line_of
        self.where = f"{path}, " if path else ""
        self.parts: list[np.ndarray] = []
        self.rows = 0
        self.offset: tuple[str, int] | None = None  # the first row's offset and row

    def add(self, texts: Sequence[str]) -> None:
        try:
            dates, offsets = _date_block(texts, self.fmt)
        except _BadDate as bad:
            row = self.rows + bad.index
            hint = "check --date-format" if self.fmt else "pass --date-format (e.g. '%d/%m/%Y')"
            raise DataError(
                f"{self.where}line {self.line_of(row)}: cannot parse "
                f"{self.text_of(row).strip()!r} in date column {self.column!r}; {hint}"
            ) from None
        if self.offset is None and len(offsets):
            self.offset = (offsets[0], self.rows)
        if set(offsets) - {self.offset[0] if self.offset else None}:
            i, offset = next((i, o) for i, o in enumerate(offsets) if o != self.offset[0])
            first, row = self.offset
            raise DataError(
                f"{self.where}dates in column {self.column!r} mix UTC offsets: line "
                f"{self.line_of(row)} has {first}, line {self.line_of(self.rows + i)} has "
                f"{offset}; jlstm keeps each date's local time, which is only consistent "
                "under one offset: convert the column to a single offset (or to UTC) first"
            )
        self.parts.append(dates)
        self.rows += len(texts)

    def finish(self) -> np.ndarray:
        dates = np.concatenate(self.parts) if self.parts else np.zeros(0, "datetime64[s]")
        if len(dates) > 1:
            bad = np.flatnonzero(np.diff(dates) <= np.timedelta64(0, "s"))
            if bad.size:
                i = int(bad[0])
                raise DataError(
                    f"{self.where}dates in column {self.column!r} must be strictly increasing: "
                    f"line {self.line_of(i + 1)} ({self.text_of(i + 1).strip()!r}) does not "
                    f"come after line {self.line_of(i)} ({self.text_of(i).strip()!r}); sort "
                    "the file or remove duplicate rows"
                )
        return _coarsest(dates)


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

    A UTC offset (``2020-03-01T00:00+02:00``, ``...Z``, or ``%z`` in ``fmt``) is dropped
    and the local wall time kept, so months, days and hours stay those of the data (a
    conversion to UTC would move midnight on the 1st into the previous month). Every date
    must then carry the same offset (or none).

    Raises:
        DataError: on an unparsable date, mixed UTC offsets, or dates that are not strictly
            increasing.
    """
    parser = _DateColumn(
        fmt,
        column,
        path,
        lambda i: texts[i],
        (lambda i: i + 1) if lines is None else (lambda i: lines[i]),
    )
    parser.add(list(texts))
    return parser.finish()


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
    rows = _Rows(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next((r for r in reader if _nonblank(r)), None)
            if header is None:
                raise DataError(f"{path!r} is empty: expected a header row and data rows")
            header = [h.strip() for h in header]
            if len(set(header)) != len(header):
                raise DataError(f"{path} has duplicate column names in its header {header}")
            targets, covs, date_col = _resolve_columns(
                header, target, covariates, date_column, path
            )
            index = {h: j for j, h in enumerate(header)}
            numeric = [index[name] for name in (*targets, *covs)]
            names = [*targets, *covs]
            dates = None
            if date_col is not None:
                dates = _DateColumn(
                    date_format,
                    date_col,
                    path,
                    lambda i: rows[i][1][index[date_col]],
                    lambda i: rows[i][0],
                )
            width = len(header)
            blocks: list[np.ndarray] = []
            count = 0  # data rows converted so far

            def convert(n: int, column, lines: list[str] | None = None) -> None:
                """Convert ``n`` rows: ``column(j)`` gives column ``j``'s cells; ``lines``
                (the raw lines, when they hold no quotes) allow a C parse of the numbers."""
                block = None
                if lines is not None:
                    try:
                        block = np.loadtxt(
                            lines, np.float64, delimiter=",", usecols=numeric, comments=None,
                            ndmin=2,
                        )  # fmt: skip
                    except ValueError:
                        block = None
                    if block is not None and not np.all(np.isfinite(block)):
                        block = None  # missing or infinite: the exact rules below decide
                if block is None:
                    block = np.empty((n, len(numeric)))
                    for k, j in enumerate(numeric):
                        block[:, k] = _numbers(
                            column(j), names[k], path, lambda i: rows[count + i][0]
                        )
                blocks.append(block)
                if dates is not None:
                    dates.add(column(index[date_col]))

            def convert_rows(chunk: list[list[str]]) -> None:
                columns = list(zip(*chunk, strict=True))
                convert(len(chunk), columns.__getitem__)

            # The rows are converted in blocks of about 4 MB with NumPy's C parser: a file of
            # 5 million rows (132 MB) took 45 s and 2.3 GB of memory when every cell went
            # through Python (4.2 s and under 2x the file size now). A block with a quote
            # character, a blank row or a row of the wrong width switches to the csv module
            # for the rest of the file (quoted fields may span lines), with the same rules.
            pending: list[str] = []
            while True:
                lines = pending or f.readlines(_BLOCK_BYTES)
                pending = []
                if not lines:
                    break
                table = None
                if '"' not in "".join(lines):
                    try:
                        table = np.loadtxt(
                            lines, object, delimiter=",", comments=None, ndmin=2
                        )  # fmt: skip
                    except ValueError:
                        table = None
                    if table is not None and (table.shape[1] != width or np.any(table[:, 0] == "")):
                        table = None
                if table is None:
                    pending = lines
                    break
                convert(len(table), lambda j, t=table: t[:, j], lines)
                count += len(table)
            if pending:
                reader = csv.reader(itertools.chain(pending, f))
                chunk: list[list[str]] = []
                for row in reader:
                    if len(row) != width or not row[0]:
                        if not _nonblank(row):
                            continue  # blank lines are skipped
                        if len(row) != width:
                            line = rows[count + len(chunk)][0]
                            raise DataError(
                                f"{path}, line {line}: {len(row)} fields but the header has {width}"
                            )
                    chunk.append(row)
                    if len(chunk) == _BLOCK_ROWS:
                        convert_rows(chunk)
                        count += len(chunk)
                        chunk = []
                if chunk:
                    convert_rows(chunk)
                    count += len(chunk)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path!r} as a UTF-8 CSV file: {err}") from None
    if count == 0:
        raise DataError(f"{path} has a header but no data rows")
    table = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    blocks.clear()
    values, cov = table[:, : len(targets)], table[:, len(targets) :]
    dates = None if dates is None else dates.finish()
    missing = np.isnan(table).any(axis=1)
    if missing.any():
        if fill == "error":
            first = int(np.flatnonzero(missing)[0])
            raise DataError(
                f"{path} has {int(missing.sum())} row(s) with missing values (first at line "
                f"{rows[first][0]}); pick a policy with --fill ffill, --fill linear or --fill drop"
            )
        if fill == "drop":
            keep = ~missing
            values, cov = values[keep], cov[keep]
            dates = None if dates is None else dates[keep]
        else:
            values = _fill(values, targets, fill, path)
            cov = _fill(cov, covs, fill, path)
    return Series(values, cov, dates, tuple(targets), tuple(covs), source or path)


_BLOCK_BYTES = 1 << 22  # about this much text is converted at a time
_BLOCK_ROWS = 1 << 16  # rows at a time on the csv-module path


def _nonblank(row: list[str]) -> bool:
    return any(cell.strip() for cell in row)


class _Rows:
    """Data row ``i`` of a CSV file as ``(line number, cells)``, found by reading the file
    again: only error messages need it, so the fast path keeps no per-row bookkeeping."""

    def __init__(self, path: str):
        self.path = path

    def __getitem__(self, i: int) -> tuple[int, list[str]]:
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            seen = -1  # the header row
            for row in reader:
                if not _nonblank(row):
                    continue
                if seen == i:
                    return reader.line_num, row
                seen += 1
        raise IndexError(i)
