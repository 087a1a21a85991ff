"""The built-in real datasets: invariants of the files, the panel, the registry.

The invariants (row counts, sums, first and last values) were read from the source
files of statsmodels' ``macrodata`` and ``elnino`` datasets; a changed file fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from jlstm.cli import main
from jlstm.data import DataError, dataset_info, list_datasets, load_dataset
from jlstm.data.registry import panel_ids

MACRO = [
    "realgdp",
    "realcons",
    "realinv",
    "realgovt",
    "realdpi",
    "cpi",
    "m1",
    "tbilrate",
    "unemp",
    "pop",
    "infl",
    "realint",
]


def test_us_real_gdp_invariants():
    s = load_dataset("us_real_gdp_quarterly")
    v = s.values[:, 0]
    assert len(v) == 203 and s.target_names == ("realgdp",)
    # Sum of 203 values with 3 decimals: exact to float64 rounding of ~1e6.
    assert v.sum() == pytest.approx(1465897.896, abs=1e-6)
    assert (v[0], v[-1], v.max()) == (2710.349, 12990.341, 13415.266)
    assert (str(s.dates[0]), str(s.dates[-1])) == ("1959-01", "2009-07")
    assert dataset_info("us_real_gdp_quarterly").season == 4


def test_elnino_invariants():
    s = load_dataset("elnino_nino12_monthly")
    v = s.values[:, 0]
    assert len(v) == 732 and s.target_names == ("sst",)
    assert v.sum() == pytest.approx(16903.8, abs=1e-8)
    assert (v[0], v[-1], v.min(), v.max()) == (23.11, 22.07, 18.95, 29.24)
    assert (str(s.dates[0]), str(s.dates[-1])) == ("1950-01", "2010-12")
    assert np.all(np.diff(s.dates.astype("datetime64[M]").astype(int)) == 1)


def test_macro_panel_invariants():
    info = dataset_info("us_macro_quarterly")
    assert info.id_column == "series" and (info.target, info.date_column) == ("value", "date")
    assert panel_ids("us_macro_quarterly") == MACRO
    total = 0.0
    for name in MACRO:
        s = load_dataset("us_macro_quarterly", series=name)
        assert len(s) == 203 and s.target_names == (name,)
        assert (str(s.dates[0]), str(s.dates[-1])) == ("1959-01", "2009-07")
        total += s.values.sum()
    assert total == pytest.approx(4072671.312, abs=1e-5)
    gdp = load_dataset("us_macro_quarterly", series="realgdp").values
    np.testing.assert_array_equal(gdp, load_dataset("us_real_gdp_quarterly").values)
    cpi = load_dataset("us_macro_quarterly", series="cpi").values[:, 0]
    assert (cpi[0], cpi[-1]) == (28.98, 216.385)
    real_int = load_dataset("us_macro_quarterly", series="realint").values[:, 0]
    assert real_int[-1] == -3.44


def test_panel_needs_a_series_and_a_single_series_refuses_one():
    with pytest.raises(DataError, match=r"panel of 12 series.*pick one of"):
        load_dataset("us_macro_quarterly")
    with pytest.raises(DataError, match="has no series 'gdp'"):
        load_dataset("us_macro_quarterly", series="gdp")
    with pytest.raises(DataError, match="single series"):
        load_dataset("nile", series="nile")
    with pytest.raises(DataError, match="single series"):
        panel_ids("nile")


def test_every_dataset_is_documented_with_a_licence(capsys):
    import importlib.resources

    readme = (importlib.resources.files("jlstm.datasets") / "README.md").read_text()
    for info in list_datasets():
        assert info.file in readme, info.name
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for info in list_datasets():
        assert info.name in out
