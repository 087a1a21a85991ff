"""jlstm.export: serialised jax.export programs that run without jlstm."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jlstm
from jlstm.checkpoint import save_checkpoint
from jlstm.cli import main
from jlstm.data import FeatureConfig, Pipeline, load_dataset
from jlstm.experiment import load_run, predict_run
from jlstm.export import (
    export_checkpoint,
    export_forecaster,
    export_forecaster_jax,
    export_jax,
    export_model,
    read_forecaster,
)
from jlstm.forecaster import Forecaster, encode_dates
from jlstm.train import TrainConfig, init_ensemble_state, init_fit_state, make_optimizer

from . import forecaster_reference as fref

TOL = 1e-5


def _model(**overrides):
    cfg = jlstm.ModelConfig(**{"input_size": 3, "layer_sizes": (6, 4), **overrides})
    return cfg, jlstm.init_params(jax.random.key(0), cfg)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the default ("auto") implementation
        {"bidirectional": ("concat", "ave"), "return_sequences": True},
        {"activation": "relu", "recurrent_activation": "hard_sigmoid", "go_backwards": True},
        {"mask_value": 0.0},
    ],
)
def test_round_trip_symbolic_batch_and_time(overrides):
    cfg, params = _model(**overrides)
    exported = export.deserialize(export_jax(params, cfg).serialize())
    for shape in [(1, 1), (5, 7)]:
        x = np.random.default_rng(0).normal(size=(*shape, 3)).astype(np.float32)
        np.testing.assert_allclose(exported.call(x), jlstm.apply(params, x, cfg), atol=TOL)


def test_seq_lengths_input():
    cfg, params = _model()
    exported = export.deserialize(export_jax(params, cfg, seq_lengths=True).serialize())
    x = np.random.default_rng(1).normal(size=(3, 5, 3)).astype(np.float32)
    lengths = np.array([5, 2, 3], np.int32)
    want = jlstm.apply(params, x, cfg, seq_lengths=lengths)
    np.testing.assert_allclose(exported.call(x, lengths), want, atol=TOL)


def test_multi_platform_lowering():
    cfg, params = _model()
    exported = export_jax(params, cfg, platforms=("cpu", "cuda", "tpu"))
    assert exported.platforms == ("cpu", "cuda", "tpu")
    x = np.ones((2, 3, 3), np.float32)
    np.testing.assert_allclose(
        export.deserialize(exported.serialize()).call(x), jlstm.apply(params, x, cfg), atol=TOL
    )


def test_file_runs_in_a_process_without_jlstm(tmp_path):
    cfg, params = _model()
    path = tmp_path / "model.jax"
    export_model(params, cfg, path)
    # The file is one serialised Exported, nothing around it.
    assert str(export.deserialize(bytearray(path.read_bytes())).in_avals[0].shape) == (
        "(batch, steps, 3)"
    )
    x = np.random.default_rng(2).normal(size=(4, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        """
        import sys
        sys.modules["jlstm"] = None  # any attempt to import jlstm fails
        try:
            import jlstm  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("jlstm was importable")
        import jax, numpy as np
        exported = jax.export.deserialize(bytearray(open("model.jax", "rb").read()))
        np.save("y.npy", np.asarray(exported.call(np.load("x.npy"))))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, check=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), jlstm.apply(params, x, cfg), atol=TOL)


def test_export_model_onnx_and_unknown_format(tmp_path):
    onnx = pytest.importorskip("onnx")
    cfg, params = _model()
    export_model(params, cfg, tmp_path / "m.onnx", format="onnx")
    onnx.checker.check_model(onnx.load(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(params, cfg, tmp_path / "m.x", format="tflite")


def test_export_checkpoint(tmp_path):
    from jlstm.checkpoint import load_checkpoint

    cfg = jlstm.ModelConfig(input_size=2, layer_sizes=(3,))
    train_cfg = TrainConfig()
    state = init_fit_state(cfg, make_optimizer(train_cfg, 1), 0)
    save_checkpoint(tmp_path / "ckpt", cfg, train_cfg, state)
    returned = export_checkpoint(tmp_path / "ckpt", tmp_path / "m.jax")
    assert returned == cfg
    params = load_checkpoint(tmp_path / "ckpt").state.params
    x = jnp.ones((2, 4, 2))
    exported = export.deserialize(bytearray((tmp_path / "m.jax").read_bytes()))
    np.testing.assert_allclose(exported.call(x), jlstm.apply(params, x, cfg), atol=TOL)


# -- forecasters: `jlstm export` of a trained run, original units in and out ------------------

FAST = ["--layers", "8", "--epochs", "1", "--quiet", "--no-plot", "--batch-size", "32"]


def _monthly_csv(path, rows=150, seed=0):
    """A trending monthly target with a covariate that leads it."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    dates = np.datetime64("1990-01", "M") + t
    driver = np.sin(2 * np.pi * t / 12) + 0.2 * rng.normal(size=rows)
    y = 200 + 0.8 * t + 15 * np.roll(driver, 1) + rng.normal(size=rows)
    lines = ["date,sales,promo"] + [
        f"{d},{a:.3f},{b:.4f}" for d, a, b in zip(dates.astype(str), y, driver, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _plain_csv(path, rows=120, seed=1):
    """Two positive targets, no dates."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    a = 50 + 5 * np.sin(t / 5) + rng.normal(size=rows)
    b = 30 + 0.1 * t + rng.normal(size=rows)
    lines = ["a,b"] + [f"{x:.3f},{y:.3f}" for x, y in zip(a, b, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


RUNS = {
    # the airline default: log, delta, month of year
    "airline": lambda d: [],
    # the plain transform (no log, no delta) with a covariate, horizon 3, month of year
    "covariates": lambda d: [
        "--data", str(_monthly_csv(d / "sales.csv")), "--target", "sales",
        "--covariates", "promo", "--horizon", "3", "--no-delta", "--calendar", "month",
        "--scaler", "minmax",
    ],
    # two targets and no dates (no dates input), horizon 2
    "two_targets": lambda d: [
        "--data", str(_plain_csv(d / "plain.csv")), "--target", "a,b", "--horizon", "2",
        "--date-column", "",
    ],
    # an ensemble of 3: the members' mean and spread
    "ensemble": lambda d: ["--ensemble", "3"],
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(name)``: the run directory of ``RUNS[name]`` (trained once per module)."""
    done = {}

    def get(name):
        if name not in done:
            root = tmp_path_factory.mktemp(name)
            out = root / "run"
            assert main(["train", "--out", str(out), *FAST, *RUNS[name](root)]) == 0
            done[name] = out
        return done[name]

    return get


def _inputs(exp, origins):
    """The artifact's inputs for windows ending at ``origins``: raw rows of the series."""
    steps = exp.pipeline.config.steps
    rows = np.asarray(origins)[:, None] + np.arange(1 - steps, 1)
    series = exp.series
    raw = {"history": series.values[rows]}
    if series.covariate_names:
        raw["covariates"] = series.covariates[rows]
    if exp.pipeline.config.calendar:
        raw["dates"] = series.dates[rows]
    return raw


def _feed(raw, unit):
    feed = {"history": raw["history"].astype(np.float32)}
    if "covariates" in raw:
        feed["covariates"] = raw["covariates"].astype(np.float32)
    if "dates" in raw:
        feed["dates"] = encode_dates(raw["dates"], unit)
    return feed


_JAX_ONLY_SCRIPT = textwrap.dedent(
    """
    import json, sys, zipfile
    sys.modules["jlstm"] = None  # any attempt to import jlstm fails
    try:
        import jlstm  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("jlstm was importable")
    import jax, numpy as np
    with zipfile.ZipFile("forecaster.jax") as bundle:
        signature = json.loads(bundle.read("signature.json"))
        exported = jax.export.deserialize(bytearray(bundle.read("exported.bin")))
    inputs = {
        name: np.load(name + ".npy").astype(spec["dtype"])
        for name, spec in signature["inputs"].items()
    }
    for name, value in exported.call(**inputs).items():
        np.save("out_" + name + ".npy", np.asarray(value))
    """
)


def _run_jax_bundle(path, feed, cwd):
    """The bundle's outputs, computed in a process where only JAX is importable."""
    for name, value in feed.items():
        np.save(cwd / f"{name}.npy", value)
    (cwd / "forecaster.jax").write_bytes(path.read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-I", "-c", _JAX_ONLY_SCRIPT], cwd=cwd, env=env, check=True)
    return {p.stem[4:]: np.load(p) for p in cwd.glob("out_*.npy")}


def _run_onnx(path, feed):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feed), strict=True))


@pytest.mark.parametrize(
    "name",
    [
        "airline",
        "covariates",
        # tests/test_forecaster.py covers both without training; here end to end
        pytest.param("two_targets", marks=pytest.mark.slow),
        pytest.param("ensemble", marks=pytest.mark.slow),
    ],
)
def test_export_round_trip_matches_predict(name, trained, tmp_path, capsys):
    """`jlstm export` (jax and onnx) on raw rows in original units gives what `jlstm
    predict` (the last window) and the test forecasts of `jlstm evaluate` give, within the
    derived float32 bound of each path (tests/forecaster_reference.py)."""
    pytest.importorskip("onnx")
    run = trained(name)
    capsys.readouterr()  # the training's output
    ckpt, exp = load_run(str(run))
    horizon = exp.pipeline.config.horizon
    members = exp.member_params(ckpt.state.params)
    paths = {fmt: tmp_path / f"forecaster.{fmt}" for fmt in ("jax", "onnx")}
    for fmt, path in paths.items():
        assert main(["export", str(run), "-o", str(path)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"wrote {path}: {fmt} forecaster export") and "original units" in out
    # The test windows and the last window (what `jlstm predict -n horizon` forecasts).
    _, forecasts, _ = exp.evaluate(ckpt.state.params)["test"]
    origins = np.append(exp.windows["test"].origin, len(exp.series) - 1)
    predicted = predict_run(str(run), horizon)
    want = np.concatenate([forecasts["model"], predicted.values[None]])
    raw = _inputs(exp, origins)
    spec = fref.spec_of(exp.pipeline)
    exact = fref.forecast(spec, members, **raw)
    path_predict = fref.forecast(spec, members, **raw, path="predict")
    bound = exact["forecast"].e + path_predict["forecast"].e
    fref.check(want, exact["forecast"].v, path_predict["forecast"].e, err_msg="predict vs exact")
    forecaster = Forecaster.from_checkpoint(run / "checkpoint")
    unit = forecaster.calendar.unit if forecaster.calendar else None
    feed = _feed(raw, unit)
    results = {
        "jax": _run_jax_bundle(paths["jax"], feed, tmp_path),
        "onnx": _run_onnx(paths["onnx"], feed),
    }
    for fmt, got in results.items():
        assert got["forecast"].shape == want.shape
        _, rel = fref.check(got["forecast"], want, bound, err_msg=f"{name} {fmt}")
        err = np.max(np.abs(got["forecast"] - want) / np.abs(want))
        print(f"{name} {fmt}: {err:.2g} relative to predict; derived bound {rel:.2g} relative")
    if name == "ensemble":
        assert predicted.spread is not None
        spread_bound = exact["spread"].e + path_predict["spread"].e
        for fmt, got in results.items():
            fref.check(
                got["spread"][-1], predicted.spread, spread_bound[-1], err_msg=f"{fmt} spread"
            )


def test_export_is_deterministic_and_self_describing(trained, tmp_path, capsys):
    run = trained("airline")
    capsys.readouterr()
    for fmt in ("jax", "onnx"):
        first, second = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        for path in (first, second):
            assert main(["export", str(run), "-o", str(path)]) == 0
        assert first.read_bytes() == second.read_bytes(), fmt
    capsys.readouterr()
    exported, signature = read_forecaster(tmp_path / "a.jax")
    assert signature["inputs"]["dates"]["encoding"] == "months since 1970-01"
    assert signature["inputs"]["dates"]["dtype"] == "int32"
    assert [t["name"] for t in signature["transforms"]] == ["log", "scale", "delta"]
    assert signature["platforms"] == ["cpu"]
    assert str(exported.in_avals[0].shape) == "(batch, 4)"  # dates (keyword inputs, sorted)
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tmp_path / "a.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    stored = json.loads(props["jlstm.signature"])
    assert stored["inputs"]["dates"]["dtype"] == "int64"
    assert stored["inputs"]["history"] == signature["inputs"]["history"]
    assert [i.name for i in model.graph.input] == ["history", "dates"]
    with pytest.raises(ValueError, match="not a jlstm forecaster bundle"):
        read_forecaster(tmp_path / "a.onnx")


def _assert_usage_error(capsys, argv, *matches):
    status = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err + out, (status, err)
    for match in matches:
        assert match in lines[0], lines[0]


def _checkpoint(path, model_config, pipeline=None, members=None):
    """A checkpoint as `jlstm train` stores one (the pipeline in its metadata)."""
    train_cfg = TrainConfig()
    optimizer = make_optimizer(train_cfg, 1)
    if members is None:
        state = init_fit_state(model_config, optimizer, 0)
    else:
        state = init_ensemble_state(model_config, optimizer, 0, members)
    meta, arrays = {}, {}
    if pipeline is not None:
        p = Pipeline.fit(load_dataset(), FeatureConfig(**pipeline))
        pipeline_meta, arrays = p.to_state()
        meta = {"pipeline": pipeline_meta}
    save_checkpoint(path, model_config, train_cfg, state, extra_meta=meta, extra_arrays=arrays)
    return path


def test_export_refusals(tmp_path, capsys):
    # A model ONNX cannot express: one line, exit 2, naming it and the format that can.
    gelu = jlstm.ModelConfig(input_size=1, layer_sizes=(3,), activation="gelu")
    run = _checkpoint(tmp_path / "gelu", gelu, pipeline={})
    _assert_usage_error(
        capsys,
        ["export", str(run), "-o", str(tmp_path / "m.onnx")],
        "cannot export",
        "activation",
        "--format jax",
    )
    assert not (tmp_path / "m.onnx").exists()
    assert main(["export", str(run), "-o", str(tmp_path / "m.jax")]) == 0
    capsys.readouterr()
    # A checkpoint without a pipeline: only the bare model.
    bare = _checkpoint(tmp_path / "bare", jlstm.ModelConfig(input_size=1, layer_sizes=(3,)))
    _assert_usage_error(
        capsys,
        ["export", str(bare), "-o", str(tmp_path / "f.jax")],
        "without a data pipeline",
        "--raw",
    )
    assert main(["export", str(bare), "-o", str(tmp_path / "f.jax"), "--raw"]) == 0
    out = capsys.readouterr().out
    assert "bare-model export" in out and "scaled units" in out
    # A raw export of an ensemble: one network cannot stand for the members.
    ens = _checkpoint(
        tmp_path / "ens", jlstm.ModelConfig(input_size=1, layer_sizes=(3,)), pipeline={}, members=2
    )
    _assert_usage_error(
        capsys, ["export", str(ens), "-o", str(tmp_path / "e.jax"), "--raw"], "ensemble of 2"
    )
    assert main(["export", str(ens), "-o", str(tmp_path / "e.jax")]) == 0
    assert "mean of 2 members" in capsys.readouterr().out


def test_forecaster_lowers_for_every_platform():
    series = load_dataset()
    pipeline = Pipeline.fit(series, FeatureConfig(steps=4, delta=True, calendar=("month",)))
    cfg = jlstm.ModelConfig(input_size=pipeline.input_size, layer_sizes=(4,))
    forecaster = Forecaster.from_pipeline(pipeline, cfg, jlstm.init_params(jax.random.key(0), cfg))
    exported = export_forecaster_jax(forecaster, platforms=("cpu", "cuda", "tpu"))
    assert exported.platforms == ("cpu", "cuda", "tpu")
    feed = {
        "history": series.values[None, -4:].astype(np.float32),
        "dates": encode_dates(series.dates[-4:], "M")[None].astype(np.int32),
    }
    got = export.deserialize(exported.serialize()).call(**feed)["forecast"]
    exact = fref.forecast(
        fref.spec_of(pipeline), [forecaster.params], series.values[None, -4:],
        dates=series.dates[None, -4:],
    )["forecast"]  # fmt: skip
    fref.check(got, exact.v, exact.e, err_msg="multi-platform program on cpu")


def test_export_forecaster_python_api(tmp_path):
    """`export_forecaster` of a forecaster built in Python; `read_forecaster` loads it."""
    series = load_dataset()
    pipeline = Pipeline.fit(series, FeatureConfig(steps=4, log=True, delta=True))
    cfg = jlstm.ModelConfig(input_size=1, layer_sizes=(4,))
    params = jlstm.init_params(jax.random.key(0), cfg)
    forecaster = Forecaster.from_pipeline(pipeline, cfg, params)
    export_forecaster(forecaster, tmp_path / "f.jax")
    with pytest.raises(FileExistsError):
        export_forecaster(forecaster, tmp_path / "f.jax", overwrite=False)
    exported, signature = read_forecaster(tmp_path / "f.jax")
    assert list(signature["inputs"]) == ["history"]
    history = series.values[None, -4:].astype(np.float32)
    got = exported.call(history=history)["forecast"]
    exact = fref.forecast(fref.spec_of(pipeline), [params], series.values[None, -4:])
    fref.check(got, exact["forecast"].v, exact["forecast"].e, err_msg="read_forecaster")


# -- docs/export.md's examples run (each block whole, as a reader pastes it) -------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"


def _doc_blocks(slow):
    found = re.findall(r"(<!-- slow -->\n)?```python\n(.*?)```", DOC.read_text(), flags=re.S)
    return [block for marker, block in found if bool(marker) == slow]


@pytest.mark.parametrize(
    "slow", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["fast", "slow"]
)
def test_docs_examples_run(slow, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    blocks = _doc_blocks(slow)
    assert blocks
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {"__name__": "docs_example"})
