"""The built-in datasets shipped inside the package (``jlstm/datasets/*.csv``).

Each entry knows its file, its target and date columns, its seasonal period
(for the seasonal-naive baseline and MASE) and the preprocessing that
``jlstm train --dataset NAME`` uses unless flags override it. Attribution and
licences are in ``jlstm/datasets/README.md``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from types import MappingProxyType
from typing import Any

from .errors import DataError
from .series import Series, load_csv

__all__ = [
    "DEFAULT_DATASET",
    "DatasetInfo",
    "dataset_info",
    "feature_defaults",
    "list_datasets",
    "load_dataset",
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
    """

    name: str
    file: str
    target: str
    date_column: str
    season: int
    fill: str
    description: str
    features: MappingProxyType = dataclasses.field(default_factory=lambda: MappingProxyType({}))


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


def load_dataset(name: str = DEFAULT_DATASET, *, fill: str | None = None) -> Series:
    """Load a built-in dataset as a ``Series`` (target, dates; no covariates).

    Args:
        name: a name from ``list_datasets()``.
        fill: override the dataset's missing-value policy.
    """
    info = dataset_info(name)
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
