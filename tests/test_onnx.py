"""ONNX export: onnx.reference and onnxruntime match jlstm.apply on copied weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm

onnx = pytest.importorskip("onnx")
from onnx.reference import ReferenceEvaluator  # noqa: E402

from jlstm.interop.onnx import to_onnx  # noqa: E402

TOL = 1e-5
C = jlstm.ModelConfig


def _ort():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def _random_params(cfg, seed):
    params = jlstm.init_params(jax.random.key(seed), cfg)
    rng = np.random.default_rng(seed)
    # Nonzero biases everywhere, so that a bias in the wrong gate shows.
    return jax.tree.map(lambda a: a + 0.2 * jnp.asarray(rng.normal(size=a.shape), a.dtype), params)


def _check(cfg, *, seed=0, lengths=None, reference=True):
    params = _random_params(cfg, seed)
    rng = np.random.default_rng(seed + 100)
    batch, steps = 3, 7
    x = rng.normal(size=(batch, steps, cfg.input_size)).astype(np.float32)
    model = to_onnx(cfg, params, seq_lengths=lengths is not None)
    onnx.checker.check_model(model)
    feed = {"x": x}
    if lengths is not None:
        feed["sequence_lens"] = np.asarray(lengths, np.int32)
    want = np.asarray(jlstm.apply(params, x, cfg, seq_lengths=feed.get("sequence_lens")))
    ran = 0
    # onnx.reference's LSTM ignores the activations attribute and sequence_lens.
    if reference:
        got = ReferenceEvaluator(model).run(None, feed)[0]
        np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)
        ran += 1
    ort = _ort()
    if ort is not None:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        np.testing.assert_allclose(session.run(None, feed)[0], want, atol=TOL, rtol=TOL)
        ran += 1
    if not ran:
        pytest.skip("needs onnxruntime")


def _random_stack(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 4))
    merges = [False, "concat", "sum", "ave", "mul"]
    return C(
        input_size=int(rng.integers(1, 6)),
        layer_sizes=tuple(int(s) for s in rng.integers(1, 9, n)),
        output_size=int(rng.integers(1, 4)),
        bidirectional=tuple(merges[int(rng.integers(0, 5))] for _ in range(n)),
        return_sequences=bool(rng.integers(0, 2)),
        use_bias=bool(rng.integers(0, 4)),  # mostly with bias
        head_use_bias=bool(rng.integers(0, 2)),
    )


@pytest.mark.parametrize(
    "seed", [0, 1, *(pytest.param(s, marks=pytest.mark.slow) for s in range(2, 6))]
)
def test_random_stacks(seed):
    _check(_random_stack(seed), seed=seed)


def test_seed_model_and_go_backwards():
    _check(C())
    _check(C(input_size=2, layer_sizes=(5, 4), go_backwards=(True, False)))
    _check(C(input_size=2, layer_sizes=(5, 4), go_backwards=True, return_sequences=True))


@pytest.mark.parametrize(
    "activations",
    [
        dict(activation="relu", recurrent_activation="hard_sigmoid"),
        dict(activation="elu", recurrent_activation="sigmoid", head_activation="selu"),
        dict(activation="linear", recurrent_activation="hard_sigmoid_keras2", bidirectional=True),
        dict(activation="softsign", recurrent_activation="sigmoid", head_activation="relu6"),
        dict(activation="softplus", recurrent_activation="sigmoid", head_activation="silu"),
    ],
)
def test_activations(activations):
    if _ort() is None:
        pytest.skip("onnx.reference ignores LSTM activations: needs onnxruntime")
    _check(C(input_size=3, layer_sizes=(5, 4), **activations), reference=False)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"bidirectional": ("concat", "sum")},
        {"bidirectional": True, "return_sequences": True},
        {"return_sequences": True, "zero_output_for_mask": True},
    ],
)
def test_right_padding(overrides):
    if _ort() is None:
        pytest.skip("onnx.reference ignores sequence_lens: needs onnxruntime")
    _check(C(input_size=3, layer_sizes=(5, 4), **overrides), lengths=[7, 2, 4], reference=False)


@pytest.mark.parametrize(
    "overrides, lengths, option",
    [
        ({"activation": "gelu"}, False, "activation"),
        ({"recurrent_activation": "selu"}, False, "recurrent_activation"),
        ({"head_activation": "gelu"}, False, "head_activation"),
        ({"mask_value": 0.0}, False, "mask_value"),
        ({"go_backwards": True}, True, "go_backwards"),
        ({"return_sequences": True}, True, "zero_output_for_mask"),
        ({"compute_dtype": "bfloat16"}, False, "compute_dtype"),
    ],
)
def test_refuses_what_onnx_cannot_express(overrides, lengths, option):
    cfg = C(input_size=2, layer_sizes=(3,), **overrides)
    params = jlstm.init_params(jax.random.key(0), cfg)
    with pytest.raises(ValueError, match=option):
        to_onnx(cfg, params, seq_lengths=lengths)


def test_float64_with_the_reference_evaluator():
    """float64 is valid ONNX (onnxruntime's LSTM kernel is float32 only)."""
    with jax.enable_x64(True):
        cfg = C(
            input_size=2, layer_sizes=(3, 2), bidirectional=(True, False), param_dtype="float64"
        )
        params = _random_params(cfg, 0)
        x = np.random.default_rng(0).normal(size=(2, 4, 2))
        model = to_onnx(cfg, params)
        got = ReferenceEvaluator(model).run(None, {"x": x})[0]
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, jlstm.apply(params, x, cfg), atol=1e-12, rtol=1e-12)
