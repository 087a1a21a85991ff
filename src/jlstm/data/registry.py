"""The built-in datasets shipped inside the package (``jlstm/datasets/*.csv``).

Each entry knows its file, its target and date columns, its seasonal period
(for the seasonal-naive baseline and MASE) and the preprocessing that
``jlstm train --dataset NAME`` uses unless flags override it. Attribution and
licences are in ``jlstm/datasets/README.md``.

A *panel* (``DatasetInfo.id_column`` set) holds many series in long format, one
row per series and time step (``series,date,value``); ``load_dataset(name,
series=ID)`` loads one of them as a ``Series``, ``panel_ids(name)`` lists them.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
from types import MappingProxyType
from typing import Any

from .errors import DataError
from .series import Series, load_csv, parse_dates

__all__ = [
    "DEFAULT_DATASET",
    "DatasetInfo",
    "dataset_info",
    "feature_defaults",
    "list_datasets",
    "load_dataset",
    "panel_ids",
]

DEFAULT_DATASET = "airline_passengers"


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetInfo:
    """A built-in dataset.

    Attributes:
        name: registry name (``--dataset NAME``).
        file: CSV file name inside ``jlstm/datasets``.
        target: the column forecast.
        date_column: the date column.
        season: seasonal period in rows (seasonal-naive baseline, MASE scale).
        fill: missing-value policy it needs (``"error"`` if it has none missing).
        description: one line: what, when, units, source.
        features: ``FeatureConfig`` fields this dataset uses by default.
        id_column: for a panel (many series in long format), the column naming each
            row's series; ``None`` for a single series.
    """

    name: str
    file: str
    target: str
    date_column: str
    season: int
    fill: str
    description: str
    features: MappingProxyType = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    id_column: str | None = None


_DATASETS = {
    info.name: info
    for info in (
        DatasetInfo(
            "airline_passengers",
            "airline_passengers.csv",
            "Passengers",
            "Date",
            12,
            "error",
            "monthly international airline passengers (thousands), 1949-01..1960-12, 144 rows; "
            "Box & Jenkins Series G",
            # Multiplicative trend and season: forecast the log change from the last
            # value, with the month of year as an input (4 lags alone cannot see a
            # 12-month season). Test = the last two years, validation the two before.
            MappingProxyType(
                {
                    "log": True,
                    "delta": True,
                    "calendar": ("month",),
                    "val_size": 24,
                    "test_size": 24,
                }
            ),
        ),
        DatasetInfo(
            "co2_mauna_loa_weekly",
            "co2_mauna_loa_weekly.csv",
            "co2",
            "date",
            52,
            "linear",
            "weekly atmospheric CO2 at Mauna Loa (ppm), 1958-03-29..2001-12-29, 2284 rows, "
            "59 missing weeks (filled by linear interpolation); Keeling & Whorf",
            MappingProxyType({"delta": True, "calendar": ("yearday",)}),
        ),
        DatasetInfo(
            "sunspots_yearly",
            "sunspots_yearly.csv",
            "SUNACTIVITY",
            "YEAR",
            11,
            "error",
            "yearly sunspot activity (Wolf numbers, NOAA NGDC v1), 1700..2008, 309 rows; "
            "seasonal naive uses the ~11-year cycle",
            MappingProxyType({}),
        ),
        DatasetInfo(
            "us_real_gdp_quarterly",
            "us_real_gdp_quarterly.csv",
            "realgdp",
            "date",
            4,
            "error",
            "US real GDP (billions of chained 2005 dollars, seasonally adjusted), quarterly, "
            "1959Q1..2009Q3, 203 rows; FRED via statsmodels macrodata",
            # A trend the training rows never reach: the auto rule picks the transform.
            MappingProxyType({"transform": "auto"}),
        ),
        DatasetInfo(
            "elnino_nino12_monthly",
            "elnino_nino12_monthly.csv",
            "sst",
            "date",
            12,
            "error",
            "monthly sea surface temperature of the Nino 1+2 region (deg C), 1950-01..2010-12, "
            "732 rows; NOAA ERSST v3b via statsmodels elnino",
            # A strong 12-month season: a window of 12 months sees it, the month of year
            # places it.
            MappingProxyType({"transform": "auto", "steps": 12, "calendar": ("month",)}),
        ),
        DatasetInfo(
            "us_macro_quarterly",
            "us_macro_quarterly.csv",
            "value",
            "date",
            4,
            "error",
            "panel: 12 US macroeconomic series (real GDP, consumption, investment, government "
            "spending, disposable income, CPI, M1, T-bill rate, unemployment, population, "
            "inflation, real interest rate), quarterly, 1959Q1..2009Q3, 2436 rows in long "
            "format (series,date,value); FRED and BLS via statsmodels macrodata",
            MappingProxyType({"transform": "auto"}),
            id_column="series",
        ),
        DatasetInfo(
            "nile",
            "nile.csv",
            "volume",
            "year",
            1,
            "error",
            "annual Nile flow at Aswan (10^8 m^3), 1871..1970, 100 rows; Cobb (1978)",
            MappingProxyType({}),
        ),
    )
}


def list_datasets() -> list[DatasetInfo]:
    """The built-in datasets, default first."""
    return sorted(_DATASETS.values(), key=lambda d: (d.name != DEFAULT_DATASET, d.name))


def dataset_info(name: str) -> DatasetInfo:
    """The ``DatasetInfo`` of a built-in dataset.

    Raises:
        DataError: for an unknown name (the message lists the known ones).
    """
    try:
        return _DATASETS[name]
    except (KeyError, TypeError):
        raise DataError(
            f"unknown dataset {name!r}; the built-in datasets are {sorted(_DATASETS)} "
            "(`jlstm datasets` lists them), or pass your own file with --data FILE.csv"
        ) from None


def _panel_rows(info: DatasetInfo) -> list[dict[str, str]]:
    resource = importlib.resources.files("jlstm.datasets") / info.file
    with resource.open("r", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def panel_ids(name: str) -> list[str]:
    """The series of a panel dataset, in file order.

    Raises:
        DataError: ``name`` is not a panel.
    """
    info = dataset_info(name)
    if info.id_column is None:
        raise DataError(f"dataset {name!r} is a single series, not a panel")
    return list(dict.fromkeys(row[info.id_column] for row in _panel_rows(info)))


def load_dataset(
    name: str = DEFAULT_DATASET, *, fill: str | None = None, series: str | None = None
) -> Series:
    """Load a built-in dataset as a ``Series`` (target, dates; no covariates).

    Args:
        name: a name from ``list_datasets()``.
        fill: override the dataset's missing-value policy.
        series: for a panel, the id of the series to load (``panel_ids(name)``);
            its target is named after it.

    Raises:
        DataError: a panel without ``series`` (or with an unknown one), ``series``
            for a single-series dataset.
    """
    info = dataset_info(name)
    if info.id_column is not None:
        return _load_panel_series(info, series)
    if series is not None:
        raise DataError(f"dataset {name!r} is a single series: drop series={series!r}")
    resource = importlib.resources.files("jlstm.datasets") / info.file
    with importlib.resources.as_file(resource) as path:
        return load_csv(
            path,
            target=info.target,
            date_column=info.date_column,
            fill=fill or info.fill,
            source=f"dataset:{name}",
        )


def feature_defaults(name: str) -> dict[str, Any]:
    """The ``FeatureConfig`` fields a built-in dataset sets (a copy)."""
    return dict(dataset_info(name).features)


def _load_panel_series(info: DatasetInfo, series: str | None) -> Series:
    rows = _panel_rows(info)
    ids = list(dict.fromkeys(row[info.id_column] for row in rows))
    if series is None or series not in ids:
        what = "names no series" if series is None else f"has no series {series!r}"
        raise DataError(
            f"dataset {info.name!r} is a panel of {len(ids)} series in long format (columns "
            f"{info.id_column}, {info.date_column}, {info.target}) and the request {what}: "
            f"pick one of {ids} (load_dataset({info.name!r}, series=ID))"
        )
    mine = [row for row in rows if row[info.id_column] == series]
    values = [float(row[info.target]) for row in mine]
    dates = parse_dates([row[info.date_column] for row in mine])
    return Series(values, [[]] * len(values), dates, (series,), source=f"dataset:{info.name}")
