"""The target transforms and the ``auto`` rule (``jlstm.data.transforms``), end to end.

The test statistics are checked against statsmodels (an independent implementation);
the rule on synthetic series whose properties are known; the settings' precedence,
the checkpoint record, the printed line, the baseline warning and ``--require-beat``
through the real CLI.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest

from jlstm.cli import main
from jlstm.data import (
    REVIN_EPS,
    DataError,
    FeatureConfig,
    Pipeline,
    Series,
    adf,
    choose_transform,
    kpss,
    window_stats,
    window_targets,
)
from jlstm.experiment import Settings, SettingsError, run_training

EPS32 = float(np.finfo(np.float32).eps)


def _random_walk(seed, n=200, drift=0.5, start=100.0):
    rng = np.random.default_rng(seed)
    return start + np.cumsum(drift + rng.normal(size=n))


def _ar1(seed, n=200, phi=0.5):
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + rng.normal()
    return x + 10.0


def _exponential(seed, n=200, growth=0.02, noise=0.03):
    rng = np.random.default_rng(seed)
    return 50.0 * np.exp(growth * np.arange(n) + np.cumsum(rng.normal(0, noise, n)))


# -- the statistics against statsmodels ---------------------------------------------------


@pytest.fixture(scope="module")
def stattools():
    sm = pytest.importorskip("statsmodels.tsa.stattools")
    return sm


SERIES = {
    "random walk": _random_walk(0, 150),
    "ar1": _ar1(1, 120),
    "exponential": _exponential(2, 90),
    "short noise": np.random.default_rng(3).normal(size=30),
}


@pytest.mark.parametrize("name", sorted(SERIES))
def test_kpss_matches_statsmodels(stattools, name):
    x = SERIES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns when the p-value is off its table
        stat, _, lags, crit = stattools.kpss(x, regression="c", nlags="auto")
        fixed = stattools.kpss(x, regression="c", nlags=3)[0]
    ours = kpss(x)
    # Sums of ~n products of O(1) terms: relative error a few n * eps64.
    assert ours.lags == lags
    assert ours.statistic == pytest.approx(stat, rel=1e-10)
    assert ours.critical == crit["5%"]
    assert kpss(x, lags=3).statistic == pytest.approx(fixed, rel=1e-10)


@pytest.mark.parametrize("name", sorted(SERIES))
def test_adf_matches_statsmodels(stattools, name):
    x = SERIES[name]
    stat, _, used, _, crit, _ = stattools.adfuller(
        x, regression="c", autolag="AIC", result_object=False
    )
    ours = adf(x)
    assert ours.lags == used
    # A t value from a least-squares fit with condition number << 1e6 here: 1e-8 relative.
    assert ours.statistic == pytest.approx(stat, rel=1e-8)
    assert ours.critical == pytest.approx(crit["5%"], rel=1e-12)
    fixed = stattools.adfuller(x, maxlag=2, autolag=None, result_object=False)[0]
    assert adf(x, lags=2).statistic == pytest.approx(fixed, rel=1e-8)


def test_statistics_refuse_bad_input():
    with pytest.raises(DataError, match="at least"):
        kpss(np.ones(2))
    with pytest.raises(DataError, match="at least"):
        adf(np.arange(5.0))
    with pytest.raises(DataError, match="lags"):
        kpss(np.arange(10.0), lags=10)


# -- the rule on series with known properties -----------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_auto_differences_a_random_walk_with_drift(seed):
    x = _random_walk(seed, drift=0.3, start=-20.0)  # crosses zero: no log possible
    choice = choose_transform(x[:, None], ["y"], season=1)
    assert choice.transform == "delta"
    assert not choice.evidence["y"]["stationary"]


@pytest.mark.parametrize("seed", range(4))
def test_auto_keeps_the_level_of_a_stationary_ar1(seed):
    choice = choose_transform(_ar1(seed)[:, None], ["y"], season=1)
    assert choice.transform == "none", choice.reason
    ev = choice.evidence["y"]
    assert ev["kpss"] <= ev["kpss_critical_5pct"] and ev["adf"] < ev["adf_critical_5pct"]


@pytest.mark.parametrize("seed", range(4))
def test_auto_takes_log_changes_of_exponential_growth(seed):
    choice = choose_transform(_exponential(seed)[:, None], ["y"], season=4)
    assert choice.transform == "log_delta", choice.reason
    assert choice.evidence["y"]["log_slope"] > 0.5


def test_auto_no_log_for_additive_trend_even_when_positive():
    # A linear trend with constant noise: changes do not grow with the level.
    x = 100.0 + 2.0 * np.arange(200) + np.random.default_rng(0).normal(0, 3, 200)
    choice = choose_transform(x[:, None], ["y"], season=4)
    assert choice.transform == "delta", choice.reason


def test_auto_several_targets_difference_if_any_and_log_only_if_all():
    both = np.stack([_ar1(0), _exponential(0)], axis=1)
    assert choose_transform(both, ["a", "b"]).transform == "delta"
    growth = np.stack([_exponential(0), _exponential(1)], axis=1)
    assert choose_transform(growth, ["a", "b"], season=4).transform == "log_delta"


def test_auto_too_short_to_test_differences():
    choice = choose_transform(np.arange(1.0, 12.0)[:, None], ["y"])
    assert choice.transform in ("delta", "log_delta")
    assert "too few" in choice.evidence["y"]["why"]


# -- FeatureConfig spelling --------------------------------------------------------------------


def test_feature_config_transform_and_flags_agree():
    assert FeatureConfig(log=True, delta=True).transform == "log_delta"
    cfg = FeatureConfig(transform="delta", log=True)
    assert (cfg.transform, cfg.log, cfg.delta) == ("log_delta", True, True)
    cfg = FeatureConfig(transform="log_revin")
    assert (cfg.log, cfg.delta, cfg.window_mode) == (True, False, "revin")
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in FeatureConfig(delta=True).to_dict().items() if k != "transform"}
    assert FeatureConfig.from_dict(old).transform == "delta"  # a checkpoint from before
    with pytest.raises(DataError, match="both normalise"):
        FeatureConfig(transform="revin", delta=True)
    with pytest.raises(DataError, match="auto chooses"):
        FeatureConfig(transform="auto", log=True)
    with pytest.raises(DataError, match="unknown transform"):
        FeatureConfig(transform="diff")


# -- revin ---------------------------------------------------------------------------------


def _series(values, start="2000-01"):
    values = np.asarray(values, np.float64)
    dates = np.arange(np.datetime64(start), np.datetime64(start) + len(values))
    return Series(values, np.zeros((len(values), 0)), dates, ("y",), source="test")


def test_revin_window_stats_normalise_each_window():
    levels = np.random.default_rng(0).normal(size=(7, 5, 2)) * 3 + 1
    centre, scale = window_stats(levels, "revin")
    z = (levels - centre[:, None]) / scale[:, None]
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-14)
    np.testing.assert_allclose(z.std(axis=1), 1, rtol=1e-13)
    flat = np.ones((1, 4, 1)) * 3.0
    assert window_stats(flat, "revin")[1][0, 0] == REVIN_EPS


def test_revin_round_trip_is_the_identity_to_float_rounding():
    series = _series(_exponential(0, n=120))
    pipe = Pipeline.fit(series, FeatureConfig(steps=6, horizon=3, transform="log_revin"))
    for w in pipe.windows(series).values():
        back = pipe.to_original(w.y, w.last, w.scale)
        truth = window_targets(series, w.origin, 3)
        # y holds float32 values z: z rounds by <= |z| eps32/2, which scale, exp and the
        # scaler turn into a relative error <= |z| * scale * target_scale * eps32 (log).
        bound = np.abs(w.y) * w.scale[:, None] * pipe.target_scaler.scale * EPS32 + 1e-12
        assert np.all(np.abs(back / truth - 1) <= bound)
        with pytest.raises(DataError, match="scale"):
            pipe.to_levels(w.y, w.last)


def test_revin_inputs_are_per_window_normalised():
    series = _series(100 + np.arange(60.0) ** 1.5)
    pipe = Pipeline.fit(series, FeatureConfig(steps=8, transform="revin"))
    x = pipe.windows(series)["train"].x[..., 0].astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(x.std(axis=1), 1, atol=1e-5)


# -- settings precedence --------------------------------------------------------------------


def _resolve(**given):
    return Settings.resolve(given).feature_config().transform


def test_settings_transform_precedence(tmp_path):
    data = str(tmp_path / "x.csv")
    assert _resolve(data=data) == "auto"  # your own CSV: auto
    assert _resolve(data=data, delta=True) == "delta"  # an explicit flag wins over auto
    assert _resolve(data=data, log=False) == "none"
    assert _resolve(data=data, transform="revin") == "revin"
    assert _resolve(data=data, transform="delta", log=True) == "log_delta"
    assert _resolve(dataset="airline_passengers") == "log_delta"  # curated
    assert _resolve(dataset="airline_passengers", transform="delta") == "delta"
    assert _resolve(dataset="airline_passengers", delta=False) == "log"
    assert _resolve(dataset="nile") == "none"
    assert _resolve(dataset="nile", transform="auto") == "auto"
    for given, match in (
        ({"transform": "revin", "delta": True}, "revin normalises"),
        ({"transform": "log_delta", "log": False}, "--no-log"),
        ({"transform": "delta", "delta": False}, "--no-delta"),
        ({"transform": "auto", "log": True}, "auto chooses"),
    ):
        with pytest.raises(SettingsError, match=match):
            Settings.resolve({"data": data, **given})


def test_monthly_own_data_gets_a_season_long_window_and_the_month(tmp_path):
    from jlstm.experiment import Experiment

    long = _write_csv(tmp_path / "long.csv", _ar1(0, n=150))
    exp = Experiment.build(Settings.resolve({"data": long}))
    assert (exp.settings.steps, exp.settings.calendar) == (12, ("month",))
    assert exp.pipeline.config.steps == 12 and exp.pipeline.input_size == 3
    given = Experiment.build(Settings.resolve({"data": long, "steps": 6, "calendar": ()}))
    assert (given.settings.steps, given.settings.calendar) == (6, ())  # given values win
    short = _write_csv(tmp_path / "short.csv", _ar1(0, n=40))  # splits too short for 12
    assert Experiment.build(Settings.resolve({"data": short})).settings.steps == 4
    assert Experiment.build(Settings.resolve({"dataset": "nile"})).settings.steps == 4


def test_stored_settings_from_before_auto_keep_their_transform():
    stored = Settings(dataset="nile").to_dict()
    del stored["transform"]
    stored |= {"dataset": None, "data": "x.csv", "delta": True}
    assert Settings.from_dict(stored).feature_config().transform == "delta"
    stored["delta"] = False
    assert Settings.from_dict(stored).feature_config().transform == "none"


# -- a real run: the record, the printed line, the warning, --require-beat ---------------------


def _write_csv(path, values):
    dates = np.arange(np.datetime64("1990-01"), np.datetime64("1990-01") + len(values))
    with open(path, "w") as f:
        f.write("date,y\n")
        for d, v in zip(dates, values, strict=True):
            f.write(f"{d},{v:.6f}\n")
    return str(path)


FAST = ["--epochs", "2", "--layers", "4", "--batch-size", "32", "--quiet", "--no-plot"]


def test_auto_choice_is_recorded_and_printed(tmp_path):
    data = _write_csv(tmp_path / "trend.csv", _random_walk(0, n=120, drift=1.0, start=-50))
    lines = []
    settings = Settings.resolve({"data": data, "epochs": 2, "layers": (4,), "batch_size": 32})
    result = run_training(settings, str(tmp_path / "run"), plot=False, log=lines.append)
    printed = [line for line in lines if line.startswith("transform:")]
    assert printed == [f"transform: {result.experiment.pipeline.transform_choice.reason}"]
    assert printed[0].startswith("transform: delta (auto: ")
    with open(tmp_path / "run" / "checkpoint" / "config.json") as f:
        meta = json.load(f)["meta"]
    record = meta["pipeline"]["transform_choice"]
    assert meta["pipeline"]["features"]["transform"] == "delta"
    assert record["requested"] == "auto" and record["transform"] == "delta"
    ev = record["evidence"]["y"]
    assert ev["kpss"] > ev["kpss_critical_5pct"] or ev["adf"] >= ev["adf_critical_5pct"]
    with open(tmp_path / "run" / "metrics.json") as f:
        assert json.load(f)["transform"] == record
    # Reloaded from the checkpoint, the pipeline keeps the choice (no re-deciding).
    from jlstm.experiment import load_run

    _, exp = load_run(str(tmp_path / "run"))
    assert exp.pipeline.transform_choice.to_dict() == record


def test_losing_run_warns_with_the_remedy_and_require_beat_exits_1(tmp_path, capsys):
    # A steep trend modelled as levels: the test values are far above the training range,
    # so the model cannot beat persistence (it cannot extrapolate the scaled level).
    data = _write_csv(tmp_path / "up.csv", 10.0 * np.arange(1, 101) + np.sin(np.arange(100)))
    args = ["train", "--data", data, "--target", "y", "--transform", "none", *FAST]
    out = str(tmp_path / "run")
    assert main([*args, "--out", out, "--require-beat"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    warning = [line for line in err if line.startswith("warning:")]
    assert len(warning) == 1
    assert "does not beat persistence on validation and test (validation RMSE" in warning[0]
    assert "--transform delta" in warning[0]
    assert err[-1].startswith("jlstm train: --require-beat")
    for name in ("metrics.json", "predictions.csv", "history.json", "checkpoint/config.json"):
        assert os.path.isfile(os.path.join(out, name)), name  # the run is fully written
    # Without the flag: the same warning, exit 0.
    assert main([*args, "--out", str(tmp_path / "run2")]) == 0
    assert "warning: the model does not beat" in capsys.readouterr().err
    # evaluate repeats it.
    assert main(["evaluate", out]) == 0
    assert "warning: the model does not beat" in capsys.readouterr().err


def test_transform_flag_is_checked_on_the_command_line(tmp_path, capsys):
    data = _write_csv(tmp_path / "x.csv", np.arange(1.0, 61.0))
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", data, "--transform", "diff", *FAST])
    assert exc.value.code == 2
    assert "--transform" in capsys.readouterr().err
    code = main(["train", "--data", data, "--transform", "revin", "--delta", *FAST])
    assert code == 2
    assert "revin normalises each window" in capsys.readouterr().err
    assert not math.isnan(REVIN_EPS)
