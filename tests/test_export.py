"""jlstm.export: serialised jax.export programs that run without jlstm."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jlstm
from jlstm.export import export_checkpoint, export_jax, export_model

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
    from jlstm.checkpoint import load_checkpoint, save_checkpoint
    from jlstm.train import TrainConfig, init_fit_state, make_optimizer

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
