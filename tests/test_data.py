"""jlstm.data: windows (exact values), splits (no leakage), scalers, CSV loading, datasets."""

import numpy as np
import pytest

from jlstm.data import (
    DataError,
    FeatureConfig,
    Pipeline,
    Series,
    calendar_features,
    date_step,
    feature_defaults,
    fit_scaler,
    future_dates,
    list_datasets,
    load_csv,
    load_dataset,
    make_windows,
    parse_dates,
    season_from_dates,
    split_bounds,
    window_count,
    window_targets,
)

from . import reference as ref

# -- windows --------------------------------------------------------------------------------


def test_make_windows_exact_values():
    series = np.arange(10.0)
    x, y = make_windows(series, steps=3, horizon=2, stride=2)
    # starts 0, 2, 4: the last window needs rows 4..8 (row 9 would start a 4th at 6..10).
    np.testing.assert_array_equal(x[..., 0], [[0, 1, 2], [2, 3, 4], [4, 5, 6]])
    np.testing.assert_array_equal(y[..., 0], [[3, 4], [5, 6], [7, 8]])
    assert x.shape == (3, 3, 1) and y.shape == (3, 2, 1)
    assert window_count(10, 3, 2, 2) == 3


def test_make_windows_multivariate_with_separate_targets():
    series = np.arange(12.0).reshape(6, 2)  # rows [0,1], [2,3], ...
    targets = -np.arange(6.0)
    x, y = make_windows(series, steps=2, targets=targets)
    assert x.shape == (4, 2, 2) and y.shape == (4, 1, 1)
    np.testing.assert_array_equal(x[0], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(x[3], [[6, 7], [8, 9]])
    np.testing.assert_array_equal(y[:, 0, 0], [-2, -3, -4, -5])


def test_make_windows_too_short_and_bad_arguments():
    x, y = make_windows(np.arange(4.0), steps=4, horizon=1)
    assert x.shape == (0, 4, 1) and y.shape == (0, 1, 1)
    for kwargs in ({"steps": 0}, {"steps": 2, "horizon": 0}, {"steps": 2, "stride": -1}):
        with pytest.raises(DataError, match="positive integer"):
            make_windows(np.arange(8.0), **kwargs)
    with pytest.raises(DataError, match="targets"):
        make_windows(np.arange(8.0), 2, targets=np.arange(7.0))


# -- splits ----------------------------------------------------------------------------------


def test_split_bounds_counts_and_fractions():
    assert split_bounds(144, 24, 24, steps=4) == (96, 120, 144)
    assert split_bounds(100, 0.15, 0.15, steps=4) == (70, 85, 100)
    assert split_bounds(100, 10.0, 0.2, steps=4) == (70, 80, 100)
    with pytest.raises(DataError, match="too short"):
        split_bounds(20, 8, 8, steps=4)
    with pytest.raises(DataError, match="val_size"):
        split_bounds(100, 1.5, 10, steps=4)
    with pytest.raises(DataError, match="test_size"):
        split_bounds(100, 10, 0, steps=4)


def _series(values, dates=None, covariates=None):
    values = np.asarray(values, float)
    cov = np.zeros((len(values), 0)) if covariates is None else np.asarray(covariates, float)
    names = tuple(f"c{i}" for i in range(cov.shape[1]))
    return Series(values, cov, dates, ("y",), names, "test")


def test_windows_never_cross_a_split_boundary():
    rng = np.random.default_rng(0)
    series = _series(rng.normal(size=60).cumsum() + 50)
    for horizon, stride in ((1, 1), (3, 2)):
        cfg = FeatureConfig(steps=5, horizon=horizon, stride=stride, val_size=12, test_size=15)
        pipe = Pipeline.fit(series, cfg)
        bounds = pipe.bounds_for(series, cfg)
        for name, (start, stop) in bounds.segments().items():
            w = pipe.windows(series)[name]
            first_input = w.origin - cfg.steps + 1
            last_target = w.origin + horizon
            assert first_input.min() >= start and last_target.max() < stop, name
            assert len(w.x) == window_count(stop - start, 5, horizon, stride)
            # The inputs are exactly the scaled rows the origins say.
            rows = first_input[:, None] + np.arange(cfg.steps)
            # float32 inputs from float64 levels: one rounding, u = 6e-8 relative.
            np.testing.assert_allclose(
                w.x[..., 0],
                pipe.levels(series.values)[rows, 0],
                rtol=ref.unit_roundoff(np.float32),
                atol=0,
            )


def test_scaler_is_fit_on_training_rows_only():
    rng = np.random.default_rng(1)
    values = rng.normal(10, 2, 80)
    cfg = FeatureConfig(steps=4, val_size=20, test_size=20)
    pipe = Pipeline.fit(_series(values), cfg)
    # The same float64 statistics, maybe summed in another order: a sum of 40 values ~10 is
    # within gamma_40 * 400 = 2e-12 / 40 per mean, the std (of values ~2) about as close.
    assert pipe.target_scaler.shift[0] == pytest.approx(values[:40].mean(), abs=1e-12)
    assert pipe.target_scaler.scale[0] == pytest.approx(values[:40].std(), abs=1e-12)
    # Changing validation and test values changes neither the scaler nor the training windows.
    changed = values.copy()
    changed[40:] *= 100
    other = Pipeline.fit(_series(changed), cfg)
    np.testing.assert_array_equal(other.target_scaler.shift, pipe.target_scaler.shift)
    np.testing.assert_array_equal(
        other.windows(_series(changed))["train"].x, pipe.windows(_series(values))["train"].x
    )


@pytest.mark.parametrize("kind", ["standard", "minmax", "none"])
def test_scaler_round_trip(kind):
    rng = np.random.default_rng(2)
    x = rng.normal(3, 5, (50, 3))
    scaler = fit_scaler(kind, x[:30])
    z = scaler.transform(x)
    # (x - s) / c * c + s: four float64 roundings of values below ~25: 4 * 25 * 1.1e-16 =
    # 1.1e-14; the mean/std/min/max of z[:30] likewise (sums of 30 terms ~1: < 1e-13).
    np.testing.assert_allclose(scaler.inverse(z), x, rtol=0, atol=1e-12)
    if kind == "standard":
        np.testing.assert_allclose(z[:30].mean(0), 0, atol=1e-12)
        np.testing.assert_allclose(z[:30].std(0), 1, atol=1e-12)
    if kind == "minmax":
        np.testing.assert_allclose(z[:30].min(0), 0, atol=1e-12)
        np.testing.assert_allclose(z[:30].max(0), 1, atol=1e-12)
        assert (z[30:] > 1).any() or (z[30:] < 0).any()  # test values are not clipped


def test_constant_column_is_refused():
    with pytest.raises(DataError, match="constant"):
        fit_scaler("standard", np.ones((10, 1)), ["target 'y'"])
    with pytest.raises(DataError, match="constant"):
        Pipeline.fit(_series(np.full(40, 7.0)), FeatureConfig(val_size=8, test_size=8))
    covs = np.c_[np.arange(40.0), np.ones(40)]
    with pytest.raises(DataError, match="covariate 'c1' is constant"):
        Pipeline.fit(
            _series(np.arange(40.0), covariates=covs), FeatureConfig(val_size=8, test_size=8)
        )


def test_delta_log_pipeline_round_trips_to_original_units():
    series = load_dataset("airline_passengers")
    cfg = FeatureConfig(**feature_defaults("airline_passengers"))
    pipe = Pipeline.fit(series, cfg)
    for name, w in pipe.windows(series).items():
        # The model targets, mapped back, are the true values after each origin.
        back = pipe.to_original(w.y, w.last)
        want = window_targets(series, w.origin, cfg.horizon)
        # The float32 targets carry u = 6e-8 relative error in scaled log units; mapped back
        # through exp it is a relative error of u |y| scale in the value (plus float64 noise).
        scale = pipe.target_scaler.scale
        bound = np.abs(want) * (ref.unit_roundoff(np.float32) * np.abs(w.y) * scale + 1e-13)
        ref.assert_within(back, want, bound, err_msg=name)
        # delta: the last input level is 0 and `last` is that row's scaled log value.
        np.testing.assert_array_equal(w.x[:, -1, 0], 0.0)
        # log, scale, unscale, exp in float64: a few roundings of log values ~6, i.e. ~1e-15
        # relative, amplified by exp's condition |log value| ~6: 1e-12 covers it.
        np.testing.assert_allclose(pipe.from_levels(w.last), series.values[w.origin], rtol=1e-12)
    assert pipe.input_size == 3 and pipe.output_size == 1


def test_calendar_features_exact():
    dates = np.array(["2000-01", "2000-04", "2000-07", "2000-10"], dtype="datetime64[M]")
    feats = calendar_features(dates, ("month",))
    np.testing.assert_allclose(feats, [[0, 1], [1, 0], [0, -1], [-1, 0]], atol=1e-12)
    days = np.array(["2024-01-01", "2024-01-03"], dtype="datetime64[D]")  # Monday, Wednesday
    np.testing.assert_allclose(
        calendar_features(days, ("weekday",))[:, 0], np.sin(2 * np.pi * np.array([0, 2]) / 7)
    )


def test_log_needs_positive_values_and_calendar_needs_dates():
    with pytest.raises(DataError, match="log transform needs positive"):
        Pipeline.fit(_series(np.arange(40.0)), FeatureConfig(log=True, val_size=8, test_size=8))
    with pytest.raises(DataError, match="need a date column"):
        Pipeline.fit(
            _series(np.arange(1.0, 41.0)),
            FeatureConfig(calendar=("month",), val_size=8, test_size=8),
        )
    with pytest.raises(DataError, match="unknown calendar"):
        FeatureConfig(calendar=("moon",))


# -- CSV ----------------------------------------------------------------------------------------


def _write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_csv_columns_dates_and_covariates(tmp_path):
    path = _write(
        tmp_path,
        "when,sales,price,promo\n2020-01-06,10,1.5,0\n2020-01-13,12,1.4,1\n\n2020-01-20,11,1.6,0\n",
    )
    s = load_csv(path, target="sales", covariates=["price", "promo"], date_column="when")
    assert s.target_names == ("sales",) and s.covariate_names == ("price", "promo")
    np.testing.assert_array_equal(s.values[:, 0], [10, 12, 11])
    np.testing.assert_array_equal(s.covariates, [[1.5, 0], [1.4, 1], [1.6, 0]])
    assert s.dates.dtype == np.dtype("datetime64[D]") and date_step(s.dates) == ("D", 7)
    assert season_from_dates(s.dates) == 52
    np.testing.assert_array_equal(
        future_dates(s.dates, 2), np.array(["2020-01-27", "2020-02-03"], dtype="datetime64[D]")
    )
    # One column besides the auto-detected date column: it is the target.
    s2 = load_csv(_write(tmp_path, "Month,v\n1949-01,1\n1949-02,2\n", "b.csv"))
    assert s2.target_names == ("v",) and date_step(s2.dates) == ("M", 1)


def test_load_csv_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "missing.csv")
    good = _write(tmp_path, "date,a,b\n2000,1,2\n2001,3,4\n")
    with pytest.raises(DataError, match=r"no column 'zz'.*columns are \['date', 'a', 'b'\]"):
        load_csv(good, target="zz")
    with pytest.raises(DataError, match="name the column to forecast with --target"):
        load_csv(good)
    bad = _write(tmp_path, "date,a\n2000,1\n2001,abc\n", "bad.csv")
    with pytest.raises(DataError, match=r"line 3: column 'a' has the non-numeric value 'abc'"):
        load_csv(bad)
    inf = _write(tmp_path, "date,a\n2000,1\n2001,inf\n", "inf.csv")
    with pytest.raises(DataError, match="non-finite value 'inf'"):
        load_csv(inf)
    unsorted = _write(tmp_path, "date,a\n2001,1\n2000,2\n", "unsorted.csv")
    with pytest.raises(DataError, match="strictly increasing"):
        load_csv(unsorted)
    with pytest.raises(DataError, match="cannot parse '31/01/2000'"):
        load_csv(_write(tmp_path, "date,a\n31/01/2000,1\n", "dmy.csv"))
    s = load_csv(_write(tmp_path, "date,a\n31/01/2000,1\n", "dmy2.csv"), date_format="%d/%m/%Y")
    assert str(s.dates[0]) == "2000-01-31"


def test_missing_values_error_by_default_and_fill_policies(tmp_path):
    path = _write(tmp_path, "t,a\n2001,1\n2002,\n2003,NaN\n2004,7\n")
    with pytest.raises(DataError, match=r"2 row\(s\) with missing values \(first at line 3\)"):
        load_csv(path, target="a")
    ffill = load_csv(path, date_column="", target="a", fill="ffill").values[:, 0]
    np.testing.assert_array_equal(ffill, [1, 1, 1, 7])
    linear = load_csv(path, date_column="", target="a", fill="linear").values[:, 0]
    np.testing.assert_array_equal(linear, [1, 3, 5, 7])
    dropped = load_csv(path, date_column="t", fill="drop")
    np.testing.assert_array_equal(dropped.values[:, 0], [1, 7])
    assert [str(d) for d in dropped.dates] == ["2001", "2004"]
    lead = _write(tmp_path, "a\n\nNA\n2\n", "lead.csv")
    with pytest.raises(DataError, match="ffill cannot fill"):
        load_csv(lead, fill="ffill")


def test_parse_dates_formats():
    assert str(parse_dates(["19580329"])[0]) == "1958-03-29"
    assert parse_dates(["1700", "1701"]).dtype == np.dtype("datetime64[Y]")
    assert parse_dates(["2000-01-01T06:00", "2000-01-01T07:00"]).dtype == np.dtype("datetime64[h]")


# -- built-in datasets ---------------------------------------------------------------------------


def test_airline_invariants():
    s = load_dataset()
    v = s.values[:, 0]
    assert len(v) == 144 and v.sum() == 40363 and v[0] == 112 and v[-1] == 432
    assert v.min() == 104 and str(s.dates[v.argmin()]) == "1949-11"
    assert v.max() == 622 and str(s.dates[v.argmax()]) == "1960-07"
    assert s.source == "dataset:airline_passengers"


def test_every_builtin_dataset_loads():
    sizes = {d.name: len(load_dataset(d.name)) for d in list_datasets() if d.id_column is None}
    assert sizes == {
        "airline_passengers": 144,
        "co2_mauna_loa_weekly": 2284,
        "sunspots_yearly": 309,
        "nile": 100,
        "us_real_gdp_quarterly": 203,
        "elnino_nino12_monthly": 732,
    }
    with pytest.raises(DataError, match="59 row"):
        load_dataset("co2_mauna_loa_weekly", fill="error")
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope")


# -- hardening: time zones, overflow, the bulk CSV reader -----------------------------------


def test_utc_offsets_keep_local_wall_time(tmp_path):
    """Issue 11 (6): +02:00 dates were shifted to UTC, so each month slipped to the previous."""
    text = "date,v\n" + "".join(f"2020-{m:02d}-01T00:00+02:00,{m}\n" for m in range(1, 13))
    s = load_csv(_write(tmp_path, text))
    assert s.dates.dtype == np.dtype("datetime64[M]")
    assert [str(d) for d in s.dates[:2]] == ["2020-01", "2020-02"]
    assert season_from_dates(s.dates) == 12
    np.testing.assert_allclose(calendar_features(s.dates[:1], ("month",)), [[0.0, 1.0]], atol=0)
    for stamp in ("2020-01-01T00:00Z", "2020-01-01 00:00+0200", "2020-01-01T00:00:00-05"):
        assert str(parse_dates([stamp, "2020-01-01T01:00" + stamp[16:]])[0]) == "2020-01-01T00"
    fmt = parse_dates(["01/03/2020 00:00 +0100", "02/03/2020 00:00 +0100"], fmt="%d/%m/%Y %H:%M %z")
    assert str(fmt[0]) == "2020-03-01"


def test_mixed_utc_offsets_are_refused(tmp_path):
    text = "date,v\n2020-03-28T12:00+01:00,1\n2020-03-29T12:00+02:00,2\n"
    with pytest.raises(DataError, match=r"line 3 has \+02:00.*single offset"):
        load_csv(_write(tmp_path, text))
    with pytest.raises(DataError, match="mix UTC offsets"):
        parse_dates(["2020-01-01T00:00", "2020-01-02T00:00Z"])


def test_values_that_overflow_the_scaler_are_refused():
    """Issue 11 (5): values ~1e300 made the scaler's variance overflow: NaN forecasts."""
    x = np.array([[1e300], [-1e300], [5e299]])
    with pytest.raises(DataError, match=r"too large to scale.*divide the column"):
        fit_scaler("standard", x, ["target 'v'"])
    with pytest.raises(DataError, match="too large to scale"):
        fit_scaler("minmax", np.array([[1.7e308], [-1.7e308]]))
    with pytest.raises(DataError, match="too large to scale"):
        fit_scaler("none", np.array([[1e39], [1.0]]))  # float32 cannot hold the input
    fit_scaler("standard", np.array([[1e150], [-1e150]]))  # large but representable


def test_test_values_far_outside_the_training_range_are_refused():
    values = np.concatenate([np.linspace(1.0, 2.0, 40), [1e300] * 10])
    series = Series(values, np.zeros((50, 0)), None, ("v",))
    pipe = Pipeline.fit(series, FeatureConfig(steps=3, val_size=5, test_size=5))
    with pytest.raises(DataError, match="overflow float32"):
        pipe.windows(series)


def _same_series(a, b):
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.covariates, b.covariates)
    assert (a.dates is None and b.dates is None) or (
        a.dates.dtype == b.dates.dtype and np.array_equal(a.dates, b.dates)
    )


@pytest.mark.parametrize("block", [16, 64, 1 << 22])
def test_bulk_reader_matches_row_by_row_rules_at_any_block_size(tmp_path, monkeypatch, block):
    import jlstm.data.series as series_mod

    rows = [f"2020-01-{d:02d},{d}.5,{d % 3}" for d in range(1, 29)]
    plain = "date,a,b\n" + "\n".join(rows) + "\n"
    # Blank lines, a blank row of commas, CRLF endings and a quoted field late in the file.
    messy = "date,a,b\r\n" + "\r\n".join(rows[:10]) + "\r\n\r\n,,\r\n"
    messy += "\r\n".join(rows[10:20]) + '\r\n"2020-01-21",21.5,"0"\r\n' + "\r\n".join(rows[21:])
    monkeypatch.setattr(series_mod, "_BLOCK_BYTES", block)
    monkeypatch.setattr(series_mod, "_BLOCK_ROWS", 3)
    want = load_csv(_write(tmp_path, plain), target="a", covariates=["b"])
    got = load_csv(_write(tmp_path, messy, "messy.csv"), target="a", covariates=["b"])
    _same_series(got, want)
    assert len(got) == 28 and str(got.dates[-1]) == "2020-01-28"
    # Errors name the right line whichever path found them.
    wide = plain.replace("2020-01-20,20.5,2", "2020-01-20,20.5,2,9")
    with pytest.raises(DataError, match="line 21: 4 fields but the header has 3"):
        load_csv(_write(tmp_path, wide, "wide.csv"), target="a")
    text = plain.replace("2020-01-25,25.5", "2020-01-25,abc")
    with pytest.raises(DataError, match="line 26: column 'a' has the non-numeric value 'abc'"):
        load_csv(_write(tmp_path, text, "abc.csv"), target="a")
    text = plain.replace("2020-01-25,25.5", "2020-01-25,")
    with pytest.raises(DataError, match=r"1 row\(s\) with missing values \(first at line 26\)"):
        load_csv(_write(tmp_path, text, "gap.csv"), target="a")
    text = plain.replace("2020-01-25", "2020-01-32")
    with pytest.raises(DataError, match="line 26: cannot parse '2020-01-32'"):
        load_csv(_write(tmp_path, text, "bad_date.csv"), target="a")
    text = plain.replace("2020-01-25", "2020-01-02")
    with pytest.raises(DataError, match=r"line 26 \('2020-01-02'\) does not come after line 25"):
        load_csv(_write(tmp_path, text, "order.csv"), target="a")


def test_outputs_of_the_wrong_shape_are_a_data_error():
    series = load_dataset("airline_passengers")
    cfg = FeatureConfig(**{**feature_defaults("airline_passengers"), "horizon": 2})
    pipe = Pipeline.fit(series, cfg)
    w = pipe.windows(series)["test"]
    assert pipe.to_original(np.zeros((len(w.last), 2)), w.last).shape == (len(w.last), 2, 1)
    for bad in (np.zeros((len(w.last), 3)), np.zeros((len(w.last) + 1, 2))):
        with pytest.raises(DataError, match="do not fit this pipeline"):
            pipe.to_original(bad, w.last)
    with pytest.raises(DataError, match="do not fit this pipeline"):
        pipe.to_levels(np.zeros((len(w.last), 2)), w.last[:, None])


def test_pipeline_state_from_a_checkpoint_is_validated_field_by_field():
    """Issue 11 (9): a hand-edited checkpoint's pipeline raised KeyError/TypeError."""
    series = load_dataset("airline_passengers")
    pipe = Pipeline.fit(series, FeatureConfig(**feature_defaults("airline_passengers")))
    meta, arrays = pipe.to_state()
    again = Pipeline.from_state(meta, arrays)
    np.testing.assert_array_equal(again.target_scaler.scale, pipe.target_scaler.scale)
    cases = [
        ({k: v for k, v in meta.items() if k != "features"}, arrays, "no 'features' field"),
        ({**meta, "features": "log"}, arrays, "'features' is 'log'"),
        ({**meta, "features": {**meta["features"], "steps": "4"}}, arrays, "'features' are"),
        ({**meta, "target_names": "Passengers"}, arrays, "'target_names' is"),
        ({**meta, "target_names": [1]}, arrays, "list of strings"),
        (meta, {"target_shift": arrays["target_shift"]}, "no scaler array 'target_scale'"),
        (meta, {**arrays, "target_scale": np.array([1.0, 2.0])}, "'target_scale' is float64"),
        (meta, {**arrays, "target_scale": np.array([0.0])}, "non-positive"),
        (meta, {**arrays, "target_shift": np.array(["a"])}, "'target_shift' is <U1"),
    ]
    for bad_meta, bad_arrays, message in cases:
        with pytest.raises(DataError, match=message):
            Pipeline.from_state(bad_meta, bad_arrays)
