"""The data layer: series, windows, splits, scalers and built-in datasets (NumPy only).

Nothing here knows about JAX models: it turns a CSV file or a built-in dataset
into ``(samples, steps, dim)`` windows for training and maps model outputs back
to the series' own units.

    series = load_dataset("airline_passengers")               # or load_csv("my.csv", ...)
    pipeline = Pipeline.fit(series, FeatureConfig(steps=4))   # scalers fit on train rows
    splits = pipeline.windows(series)                         # {"train", "val", "test"}
    x, y = splits["train"].x, splits["train"].y               # (N, 4, D), (N, 1, K)
"""

from .errors import DataError
from .pipeline import (
    CALENDAR_FEATURES,
    Encoded,
    FeatureConfig,
    Pipeline,
    Windows,
    calendar_features,
    window_targets,
)
from .registry import (
    DEFAULT_DATASET,
    DatasetInfo,
    dataset_info,
    feature_defaults,
    list_datasets,
    load_dataset,
)
from .scalers import SCALERS, Scaler, fit_scaler
from .series import (
    FILL_POLICIES,
    Series,
    date_step,
    future_dates,
    load_csv,
    parse_dates,
    season_from_dates,
)
from .transforms import (
    REVIN_EPS,
    TRANSFORMS,
    TransformChoice,
    adf,
    choose_transform,
    compose_transform,
    kpss,
    split_transform,
    window_stats,
)
from .windows import SplitBounds, make_windows, split_bounds, window_count

__all__ = [
    "CALENDAR_FEATURES",
    "DEFAULT_DATASET",
    "FILL_POLICIES",
    "REVIN_EPS",
    "SCALERS",
    "TRANSFORMS",
    "DataError",
    "DatasetInfo",
    "Encoded",
    "FeatureConfig",
    "Pipeline",
    "Scaler",
    "Series",
    "SplitBounds",
    "TransformChoice",
    "Windows",
    "adf",
    "calendar_features",
    "choose_transform",
    "compose_transform",
    "dataset_info",
    "date_step",
    "feature_defaults",
    "fit_scaler",
    "future_dates",
    "kpss",
    "list_datasets",
    "load_csv",
    "load_dataset",
    "make_windows",
    "parse_dates",
    "season_from_dates",
    "split_bounds",
    "split_transform",
    "window_count",
    "window_stats",
    "window_targets",
]
