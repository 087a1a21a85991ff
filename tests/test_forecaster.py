"""jlstm.forecaster: the pipeline and model as one program, run in JAX and in onnxruntime,
against a float64 NumPy reference of the pipeline with derived float32 bounds
(tests/forecaster_reference.py) and against jlstm.forecast (what `jlstm predict` runs)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm
from jlstm.data import (
    DataError,
    FeatureConfig,
    Pipeline,
    Series,
    calendar_features,
    load_dataset,
)
from jlstm.ensemble import stack
from jlstm.forecast import one_step
from jlstm.forecaster import (
    Affine,
    Calendar,
    Forecaster,
    JaxOps,
    Log,
    RevIN,
    TargetTransform,
    date_unit,
    encode_dates,
)

from . import forecaster_reference as fref
from . import reference as ref

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper  # noqa: E402

from jlstm.interop.onnx import OPSET, OnnxGraph, OnnxOps, forecaster_to_onnx  # noqa: E402


def _params(cfg, seed):
    params = jlstm.init_params(jax.random.key(seed), cfg)
    rng = np.random.default_rng(seed)
    # Nonzero biases and a livelier head, so that every output depends on every input.
    return jax.tree.map(lambda a: a + 0.2 * jnp.asarray(rng.normal(size=a.shape), a.dtype), params)


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _feeds(forecaster, history, covariates=None, dates=None, series=None):
    """The program's inputs: float32 values, int64 dates and indices (JAX takes int32)."""
    feed = {"history": np.asarray(history, np.float32)}
    if covariates is not None:
        feed["covariates"] = np.asarray(covariates, np.float32)
    if dates is not None:
        feed["dates"] = encode_dates(dates, forecaster.calendar.unit)
    if series is not None:
        feed["series"] = np.asarray(series, np.int64)
    return feed


def _outputs(forecaster, feed):
    """``{"jax": outputs, "onnx": outputs}`` of the same inputs."""
    jax_feed = {k: v.astype(np.int32) if v.dtype.kind == "i" else v for k, v in feed.items()}
    got = jax.jit(lambda **f: forecaster(**f))(**jax_feed)
    session = _session(forecaster_to_onnx(forecaster))
    names = [o.name for o in session.get_outputs()]
    return {
        "jax": {k: np.asarray(v) for k, v in got.items()},
        "onnx": dict(zip(names, session.run(None, feed), strict=True)),
    }


def _calendar_graph(calendar, what):
    """An ONNX model of ``calendar.positions`` (``what="positions"``) or ``.features``."""
    g = OnnxGraph(np.dtype(np.float32))
    ops = OnnxOps(g, None)
    if what == "positions":
        values = {name: v for name, (v, _) in calendar.positions(ops, "dates").items()}
        elem = onnx.TensorProto.INT64
    else:
        values = {"features": calendar.features(ops, "dates")}
        elem = onnx.TensorProto.FLOAT
    for name, value in values.items():
        g.nodes.append(helper.make_node("Identity", [value], [name]))
    graph = helper.make_graph(
        g.nodes,
        "calendar",
        [helper.make_tensor_value_info("dates", onnx.TensorProto.INT64, [None])],
        [helper.make_tensor_value_info(name, elem, None) for name in values],
        initializer=g.initializers,
    )
    session = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))
    return list(values), session


_JAX_OPS = JaxOps(jlstm.ModelConfig(input_size=1, layer_sizes=(1,)), None, None)


# -- dates ------------------------------------------------------------------------------------

WIDE = {
    "M": np.arange(np.datetime64("-7000-01"), np.datetime64("9999-12"), 7),
    "D": np.concatenate(
        [
            np.arange(np.datetime64("-7000-01-01"), np.datetime64("9999-12-31"), 37),
            # every day around two leap-year rules (2000: a leap century, 2100: not)
            np.arange(np.datetime64("1999-12-01"), np.datetime64("2001-03-05")),
            np.arange(np.datetime64("2099-12-01"), np.datetime64("2101-03-05")),
            np.array(["1969-12-31", "1970-01-01", "9999-12-31"], "datetime64[D]"),
        ]
    ),
    "h": np.arange(np.datetime64("-7000-01-01T00"), np.datetime64("9999-12-31T23"), 3331),
}
UNIT_FEATURES = {
    "M": ("month",),
    "D": ("month", "yearday", "weekday"),
    "h": ("hour", "weekday", "yearday", "month"),
}


@pytest.mark.parametrize("unit", ["M", "D", "h"])
def test_calendar_positions_are_exact_integers(unit):
    """The integer calendar equals NumPy's datetime64 arithmetic at every date tried,
    years -7000..9999, in JAX (int32) and ONNX (int64)."""
    dates = WIDE[unit]
    calendar = Calendar(UNIT_FEATURES[unit], unit)
    days = dates.astype("datetime64[D]")
    want = {
        "month": dates.astype("datetime64[M]").astype(np.int64) % 12,
        "yearday": (days - days.astype("datetime64[Y]")).astype(np.int64),
        "weekday": (days.astype(np.int64) + 3) % 7,
        "hour": dates.astype("datetime64[h]").astype(np.int64) % 24,
    }
    codes = encode_dates(dates, unit)
    got_jax = calendar.positions(_JAX_OPS, jnp.asarray(codes, jnp.int32))
    names, session = _calendar_graph(calendar, "positions")
    got_onnx = dict(zip(names, session.run(None, {"dates": codes}), strict=True))
    for name in calendar.names:
        np.testing.assert_array_equal(np.asarray(got_jax[name][0]), want[name], err_msg=name)
        np.testing.assert_array_equal(got_onnx[name], want[name], err_msg=name)


@pytest.mark.parametrize("unit", ["M", "D", "h"])
def test_calendar_features_match_the_pipeline(unit):
    """sin/cos of position * (2 pi / period) in float32: the angle carries two roundings
    (|angle| < 2 pi), sin and cos ACT_ULPS ulps of their result."""
    dates = WIDE[unit][:4000]
    calendar = Calendar(UNIT_FEATURES[unit], unit)
    want = calendar_features(dates, calendar.names)
    bound = ref.SAFETY * (2 * fref.U32 * 2 * math.pi + ref.ACT_ULPS * fref.U32 * np.abs(want))
    codes = encode_dates(dates, unit)
    got = calendar.features(_JAX_OPS, jnp.asarray(codes, jnp.int32))
    ref.assert_within(got, want, bound, err_msg="jax")
    _, session = _calendar_graph(calendar, "features")
    ref.assert_within(session.run(None, {"dates": codes})[0], want, bound, err_msg="onnx")


def test_date_units_and_encoding():
    assert date_unit(()) is None
    assert date_unit(("month",)) == "M"
    assert date_unit(("month", "weekday")) == "D"
    assert date_unit(("yearday", "hour")) == "h"
    # A finer date is floored to the unit.
    day = np.array(["2020-03-17"], "datetime64[D]")
    assert encode_dates(day, "M")[0] == (2020 - 1970) * 12 + 2
    assert encode_dates(day, "D")[0] == day.astype(np.int64)[0]
    with pytest.raises(DataError, match=r"years -7000\.\.9999"):
        encode_dates(np.array(["-8000-01"], "datetime64[M]"), "M")
    with pytest.raises(DataError, match="datetime64"):
        encode_dates(np.array([1, 2]), "D")
    with pytest.raises(DataError, match="unknown date unit"):
        encode_dates(day, "W")
    with pytest.raises(DataError, match="needs dates in days"):
        Calendar(("weekday",), "M")


# -- the program against the pipeline ------------------------------------------------------------


def _hourly_series(rows=300, seed=0):
    """Two positive targets and two covariates, hourly, with a daily cycle."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    dates = np.datetime64("2021-03-27T00", "h") + t  # crosses a month end
    cov = np.stack(
        [np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=rows), rng.normal(size=rows)], -1
    )
    values = np.stack(
        [50 + 10 * np.sin(2 * np.pi * t / 24) + 0.03 * t, 20 + 5 * cov[:, 0]], -1
    ) + rng.normal(size=(rows, 2))
    return Series(values, cov, dates, ("load", "temp"), ("sun", "noise"), "synthetic")


CASES = {
    # the airline default (log, delta, month of year), horizon 2
    "log_delta_month": (
        lambda: load_dataset("airline_passengers"),
        dict(
            steps=6, horizon=2, log=True, delta=True, calendar=("month",), val_size=24, test_size=24
        ),
    ),
    # weekly CO2: delta, day of year and weekday from days, the minmax scaler
    "delta_yearday_minmax": (
        lambda: load_dataset("co2_mauna_loa_weekly", fill="linear"),
        dict(
            steps=5,
            delta=True,
            calendar=("yearday", "weekday"),
            scaler="minmax",
            test_size=30,
            val_size=30,
        ),
    ),
    # two targets, two covariates, hourly calendar, horizon 3, no delta
    "covariates_hourly": (
        _hourly_series,
        dict(steps=8, horizon=3, calendar=("hour", "weekday"), test_size=40, val_size=40),
    ),
    # the plain transform: scaler only, no dates input
    "none": (
        lambda: load_dataset("nile"),
        dict(steps=4, horizon=2, test_size=25, val_size=20),
    ),
    # log and delta without a scaler
    "log_no_scaler": (
        lambda: load_dataset("airline_passengers"),
        dict(steps=4, log=True, delta=True, scaler="none", test_size=24, val_size=24),
    ),
}


def _windows(series, pipeline, split="test"):
    """The split's windows and, for each, its rows of the series (what a user would pass)."""
    windows = pipeline.windows(series)[split]
    rows = windows.origin[:, None] + np.arange(1 - pipeline.config.steps, 1)
    covariates = series.covariates[rows] if series.covariate_names else None
    dates = series.dates[rows] if pipeline.config.calendar else None
    return windows, series.values[rows], covariates, dates


@pytest.mark.parametrize("case", list(CASES))
def test_program_matches_the_pipeline(case):
    load, features = CASES[case]
    series = load()
    pipeline = Pipeline.fit(series, FeatureConfig(**features))
    cfg = jlstm.ModelConfig(
        input_size=pipeline.input_size, layer_sizes=(6,), output_size=pipeline.output_size
    )
    params = _params(cfg, 1)
    forecaster = Forecaster.from_pipeline(pipeline, cfg, params)
    windows, history, covariates, dates = _windows(series, pipeline)
    spec = fref.spec_of(pipeline)
    exact = fref.forecast(spec, [params], history, covariates, dates)["forecast"]
    predicted = fref.forecast(spec, [params], history, covariates, dates, path="predict")
    want = one_step(params, cfg, pipeline, windows)  # the forecasts `jlstm predict` makes
    predict_bound = predicted["forecast"].e
    fref.check(want, exact.v, predict_bound, err_msg="predict vs exact")
    feed = _feeds(forecaster, history, covariates, dates)
    for backend, out in _outputs(forecaster, feed).items():
        assert out["forecast"].shape == want.shape
        fref.check(out["forecast"], exact.v, exact.e, err_msg=f"{backend} vs exact")
        _, rel = fref.check(
            out["forecast"], want, exact.e + predict_bound, err_msg=f"{backend} vs predict"
        )
        err = np.max(np.abs(out["forecast"] - want) / np.abs(want))
        print(f"{case} {backend}: vs predict {err:.2g} relative, derived bound {rel:.2g}")


# -- ensembles, quantile heads, per-window and per-series transforms -----------------------------


def test_ensemble_mean_and_spread():
    """The members' mean and standard deviation (ddof=1) in original units, as `jlstm
    predict` combines them."""
    series = load_dataset("airline_passengers")
    pipeline = Pipeline.fit(
        series, FeatureConfig(steps=4, horizon=2, log=True, delta=True, calendar=("month",))
    )
    cfg = jlstm.ModelConfig(
        input_size=pipeline.input_size, layer_sizes=(5,), output_size=pipeline.output_size
    )
    members = [_params(cfg, seed) for seed in (3, 4, 5)]
    forecaster = Forecaster.from_pipeline(pipeline, cfg, stack(members), members=3)
    assert forecaster.output_names == ("forecast", "spread")
    windows, history, _, dates = _windows(series, pipeline)
    spec = fref.spec_of(pipeline)
    exact = fref.forecast(spec, members, history, dates=dates)
    predicted = fref.forecast(spec, members, history, dates=dates, path="predict")
    each = np.stack([one_step(p, cfg, pipeline, windows) for p in members])
    mean, spread = each.mean(0), each.std(0, ddof=1)
    for backend, out in _outputs(forecaster, _feeds(forecaster, history, dates=dates)).items():
        for name, want in (("forecast", mean), ("spread", spread)):
            fref.check(out[name], exact[name].v, exact[name].e, err_msg=f"{backend} {name}")
            fref.check(
                out[name],
                want,
                exact[name].e + predicted[name].e,
                err_msg=f"{backend} {name} vs predict",
            )


def test_quantile_head_is_sorted_and_inverted_per_level():
    """A (B, horizon * K * Q) head read as (B, horizon, K, Q), levels sorted (non-crossing),
    each transformed back like a point forecast."""
    series = load_dataset("airline_passengers")
    pipeline = Pipeline.fit(series, FeatureConfig(steps=4, horizon=2, log=True, delta=True))
    quantiles = (0.1, 0.5, 0.9)
    cfg = jlstm.ModelConfig(
        input_size=pipeline.input_size, layer_sizes=(5,), output_size=pipeline.output_size * 3
    )
    params = _params(cfg, 7)
    forecaster = Forecaster.from_pipeline(pipeline, cfg, params, quantiles=quantiles)
    _, history, _, _ = _windows(series, pipeline)
    spec = fref.spec_of(pipeline)._replace(quantiles=quantiles)
    exact = fref.forecast(spec, [params], history)["forecast"]
    # The random head does cross: sorting is tested, not assumed.
    raw = np.asarray(jlstm.apply(params, np.zeros((1, 4, 1), np.float32), cfg)).reshape(2, 1, 3)
    assert np.any(np.diff(raw, axis=-1) < 0)
    for backend, out in _outputs(forecaster, _feeds(forecaster, history)).items():
        got = out["forecast"]
        assert got.shape == (len(history), 2, 1, 3)
        assert np.all(np.diff(got, axis=-1) >= 0), backend
        fref.check(got, exact.v, exact.e, err_msg=backend)
    assert forecaster.signature()["outputs"]["forecast"]["shape"] == ["batch", 2, 1, 3]


def test_revin_and_per_series_scaling():
    """Per-series tables gathered by the `series` input, then per-window normalisation."""
    rng = np.random.default_rng(0)
    n_series, k, steps, horizon, batch = 3, 2, 6, 2, 9
    shift = rng.normal(size=(n_series, k)) + 3.0
    scale = rng.uniform(0.5, 2.0, size=(n_series, k))
    transforms = (Log(), Affine("standard", shift, scale), RevIN(eps=1e-3))
    cfg = jlstm.ModelConfig(input_size=k, layer_sizes=(5,), output_size=horizon * k)
    params = _params(cfg, 2)
    forecaster = Forecaster(
        cfg, params, steps, horizon, ("a", "b"), transforms=transforms, series=n_series
    )
    history = np.exp(rng.normal(size=(batch, steps, k)) + 3.0)
    history[0, :, 1] = history[0, 0, 1]  # a flat window: its std is floored at eps
    series = rng.integers(0, n_series, size=batch)
    spec = fref.Spec((("log",), ("scale", shift, scale), ("revin", 1e-3)), None, (), horizon)
    exact = fref.forecast(spec, [params], history, series=series)["forecast"]
    feed = _feeds(forecaster, history, series=series)
    for backend, out in _outputs(forecaster, feed).items():
        fref.check(out["forecast"], exact.v, exact.e, err_msg=backend)
    assert forecaster.signature()["inputs"]["series"]["shape"] == ["batch"]


# -- refusals, checks, the signature ----------------------------------------------------------


class _Reverse(TargetTransform):
    """A test transform that declares itself JAX-only."""

    name = "reverse"
    formats = ("jax",)

    def forward(self, ops, z, inputs):
        return z[:, ::-1], None

    def inverse(self, ops, y, context):
        return y


def test_onnx_refuses_a_transform_it_cannot_express():
    cfg = jlstm.ModelConfig(input_size=1, layer_sizes=(3,))
    params = _params(cfg, 0)
    forecaster = Forecaster(cfg, params, 4, 1, ("y",), transforms=(_Reverse(),))
    assert forecaster.unsupported("onnx") == ["reverse"]
    with pytest.raises(
        ValueError, match=r"'reverse' transform cannot be expressed in ONNX.*--format jax"
    ):
        forecaster_to_onnx(forecaster)
    x = np.arange(8, dtype=np.float32).reshape(2, 4, 1)
    exact = fref.model(params, fref.B(x[:, ::-1].astype(np.float64), np.zeros((2, 4, 1))))
    fref.check(forecaster(history=x)["forecast"][..., 0], exact.v, exact.e, err_msg="reversed")


def test_onnx_refuses_a_model_it_cannot_express():
    cfg = jlstm.ModelConfig(input_size=1, layer_sizes=(3,), activation="gelu")
    forecaster = Forecaster(cfg, _params(cfg, 0), 4, 1, ("y",))
    with pytest.raises(ValueError, match=r"activation.*--format jax can"):
        forecaster_to_onnx(forecaster)


def test_model_must_fit_the_pipeline():
    series = load_dataset("airline_passengers")
    pipeline = Pipeline.fit(series, FeatureConfig(steps=4, calendar=("month",)))
    cfg = jlstm.ModelConfig(input_size=1, layer_sizes=(3,))  # the pipeline makes 3 features
    with pytest.raises(DataError, match=r"takes 1 features.*makes 3 features"):
        Forecaster.from_pipeline(pipeline, cfg, _params(cfg, 0))


def test_inputs_are_checked_by_name():
    cfg = jlstm.ModelConfig(input_size=3, layer_sizes=(3,))
    calendar = Calendar(("month",), "M")
    forecaster = Forecaster(cfg, _params(cfg, 0), 4, 1, ("y",), calendar=calendar)
    assert forecaster.input_names == ("history", "dates")
    with pytest.raises(TypeError, match=r"missing \['dates'\], unknown \['date'\]"):
        forecaster(history=np.ones((1, 4, 1), np.float32), date=np.zeros((1, 4), np.int32))


def test_signature_describes_every_input_and_output():
    series = _hourly_series()
    pipeline = Pipeline.fit(series, FeatureConfig(steps=8, horizon=3, calendar=("hour",)))
    cfg = jlstm.ModelConfig(
        input_size=pipeline.input_size, layer_sizes=(3,), output_size=pipeline.output_size
    )
    forecaster = Forecaster.from_pipeline(pipeline, cfg, _params(cfg, 0))
    signature = json.loads(json.dumps(forecaster.signature(), allow_nan=False))
    assert signature["format"] == "jlstm.forecaster" and signature["version"] == 1
    inputs, outputs = signature["inputs"], signature["outputs"]
    assert list(inputs) == ["history", "covariates", "dates"]
    assert inputs["history"]["shape"] == ["batch", 8, 2]
    assert inputs["history"]["columns"] == ["load", "temp"]
    assert inputs["covariates"]["columns"] == ["sun", "noise"]
    assert inputs["dates"] | {"meaning": None} == {
        "shape": ["batch", 8],
        "dtype": "int64",
        "unit": "h",
        "encoding": "hours since 1970-01-01T00:00",
        "meaning": None,
    }
    assert outputs["forecast"]["shape"] == ["batch", 3, 2]
    assert [t["name"] for t in signature["transforms"]] == ["scale"]
    assert signature["transforms"][0]["shift"] == pipeline.target_scaler.shift.tolist()
    assert signature["calendar"]["features"] == ["hour"]
