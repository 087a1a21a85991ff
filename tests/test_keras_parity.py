"""jlstm's LSTM layer against real Keras 3 (JAX backend), argument by argument.

Each case builds a small Keras ``LSTM`` with the argument under test, randomises its
weights, copies them into ``CellParams`` and compares outputs and final ``(h, c)``
to 1e-5. Masks cover every pattern (full, right and left padding, holes, all
masked). The slow tier sweeps every activation and every combination.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import itertools

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import jlstm
from jlstm.interop.keras import load_keras

from . import reference as ref
from .keras_helpers import APPLY, ATOL, LSTM_LAYER, MASK, build_lstm, np32, randomize

B, T, D, H = MASK.shape[0], MASK.shape[1], 3, 4


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    x = rng.normal(size=(B, T, D)).astype("float32")
    h0 = rng.normal(size=(B, H)).astype("float32")
    c0 = rng.normal(size=(B, H)).astype("float32")
    return x, h0, c0


def _compare(data, seed, keras_kwargs, *, mask=None, initial_state=False, scale=0.5):
    """Run Keras and jlstm on the same weights and inputs; assert outputs and states agree
    within twice the derived float32 error bound of the computation (each side is within
    the bound of the exact result: ``reference.lstm_layer_bound``, rounding analysis and the
    conditioning of the activations, so unbounded gates get the room they need)."""
    x, h0, c0 = data
    rng = np.random.default_rng(seed)
    layer, params = build_lstm(rng, H, D, scale=scale, return_state=True, **keras_kwargs)
    call = {}
    if mask is not None:
        call["mask"] = mask
    if initial_state:
        call["initial_state"] = [h0, c0]
    y_keras, h_keras, c_keras = layer(x, **call)

    options = {
        k: v
        for k, v in keras_kwargs.items()
        if k not in ("use_bias", "unit_forget_bias", "kernel_initializer")
    }
    y, state = LSTM_LAYER(
        params,
        jnp.asarray(x),
        mask=None if mask is None else jnp.asarray(mask),
        initial_state=jlstm.LSTMState(h0, c0) if initial_state else None,
        return_state=True,
        **options,
    )
    bound_y, bound_h, bound_c = ref.lstm_layer_bound(
        *(None if a is None else np.asarray(a, np.float64) for a in params),
        x,
        h0 if initial_state else None,
        c0 if initial_state else None,
        mask,
        keras_kwargs.get("go_backwards", False),
        keras_kwargs.get("activation", "tanh"),
        keras_kwargs.get("recurrent_activation", "sigmoid"),
        keras_kwargs.get("zero_output_for_mask", False),
    )
    if not keras_kwargs.get("return_sequences", False):
        bound_y = np.maximum(bound_y[:, -1], bound_h)  # the last output, or the kept state
    for name, ours, theirs, bound in (
        ("outputs", y, y_keras, bound_y),
        ("h", state.h, h_keras, bound_h),
        ("c", state.c, c_keras, bound_c),
    ):
        assert np.isfinite(np32(theirs)).all()
        ref.assert_within(np32(ours), np32(theirs), 2 * bound, err_msg=name)
    return y, state


UNMASKED = [
    {},
    {"return_sequences": True, "implementation": 1, "use_bias": False},
    {"return_sequences": True, "activation": "relu", "recurrent_activation": "hard_sigmoid"},
    {
        "activation": "softsign",
        "recurrent_activation": "hard_sigmoid",
        "implementation": 1,
        "go_backwards": True,
    },
    {"return_sequences": True, "go_backwards": True},
    {"return_sequences": True, "unroll": True},
]


@pytest.mark.parametrize(
    "kwargs", UNMASKED, ids=lambda k: ",".join(f"{a}={v}" for a, v in k.items()) or "defaults"
)
def test_unmasked_arguments_match_keras(data, kwargs):
    _compare(data, 0, kwargs)


MASKED = [
    {"return_sequences": True},
    {"return_sequences": True, "zero_output_for_mask": True, "use_bias": False},
    {"return_sequences": False, "zero_output_for_mask": True},
    {
        "return_sequences": True,
        "go_backwards": True,
        "zero_output_for_mask": True,
        "implementation": 1,
    },
    {"return_sequences": True, "unroll": True},
]


@pytest.mark.parametrize("kwargs", MASKED, ids=lambda k: ",".join(f"{a}={v}" for a, v in k.items()))
def test_masks_of_every_pattern_match_keras(data, kwargs):
    _, state = _compare(data, 1, kwargs, mask=MASK)
    # The all-masked sample never moves from the (zero) initial state.
    np.testing.assert_array_equal(np32(state.h)[4], 0.0)
    np.testing.assert_array_equal(np32(state.c)[4], 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"return_sequences": True, "go_backwards": True, "implementation": 1},
        {"return_sequences": False, "activation": "linear", "recurrent_activation": "hard_sigmoid"},
    ],
    ids=["backwards-impl1", "linear-hardsig"],
)
def test_initial_state_with_masks_matches_keras(data, kwargs):
    _, h0, c0 = data
    y, state = _compare(data, 2, kwargs, mask=MASK, initial_state=True)
    # An all-masked sample keeps its initial state and (with sequences) re-emits h0.
    np.testing.assert_allclose(np32(state.h)[4], h0[4], atol=0)
    np.testing.assert_allclose(np32(state.c)[4], c0[4], atol=0)
    if kwargs["return_sequences"]:
        np.testing.assert_allclose(np32(y)[4], np.broadcast_to(h0[4], (T, H)), atol=0)


def test_return_state_false_and_sequences_shapes(data):
    """The call forms without return_state return only the outputs, as Keras does."""
    x, _, _ = data
    rng = np.random.default_rng(3)
    layer, params = build_lstm(rng, H, D, return_sequences=True)
    y_keras = layer(x)
    y = LSTM_LAYER(params, jnp.asarray(x), return_sequences=True)
    assert y.shape == y_keras.shape == (B, T, H)
    bound, _, _ = ref.lstm_layer_bound(*(np.asarray(a, np.float64) for a in params), x)
    ref.assert_within(np32(y), np32(y_keras), 2 * bound, err_msg="sequences")
    last = LSTM_LAYER(params, jnp.asarray(x))
    ref.assert_within(np32(last), np32(y_keras)[:, -1], 2 * bound[:, -1], err_msg="last")


def test_keras_unroll_quirk_is_not_copied(data):
    """Keras' JAX backend with unroll=True emits zeros (not h0) at leading masked steps and
    ignores zero_output_for_mask; jlstm's unroll is a speed option only, so it keeps the
    rolled-loop semantics. Documented in docs/keras.md; this pins the difference."""
    x, h0, c0 = data
    rng = np.random.default_rng(4)
    layer, params = build_lstm(rng, H, D, return_sequences=True, unroll=True)
    y_keras = np32(layer(x, mask=MASK, initial_state=[h0, c0]))
    y = np32(
        LSTM_LAYER(
            params,
            jnp.asarray(x),
            mask=jnp.asarray(MASK),
            initial_state=jlstm.LSTMState(h0, c0),
            return_sequences=True,
            unroll=True,
        )
    )
    rolled = np32(
        LSTM_LAYER(
            params,
            jnp.asarray(x),
            mask=jnp.asarray(MASK),
            initial_state=jlstm.LSTMState(h0, c0),
            return_sequences=True,
        )
    )
    np.testing.assert_array_equal(y, rolled)
    # Where a real step has happened the two agree; the left-padded row's leading
    # steps differ (Keras: zeros, jlstm and Keras' rolled loop: h0).
    bound, _, _ = ref.lstm_layer_bound(
        *(np.asarray(a, np.float64) for a in params), x, h0, c0, MASK
    )
    ref.assert_within(y[:2], y_keras[:2], 2 * bound[:2], err_msg="rows with no leading mask")
    np.testing.assert_array_equal(y_keras[2, :2], 0.0)
    np.testing.assert_allclose(y[2, :2], np.broadcast_to(h0[2], (2, H)), atol=0)


def test_model_apply_matches_keras_stack_with_masking(data):
    """A Keras Masking -> LSTM(seq) -> LSTM(go_backwards) -> Dense stack, masks propagated
    (including Keras' unreversed mask after a go_backwards layer)."""
    x, _, _ = data
    xm = x.copy()
    xm[~MASK] = -1.0
    rng = np.random.default_rng(5)
    model = keras.Sequential(
        [
            keras.Input((T, D)),
            keras.layers.Masking(-1.0),
            keras.layers.LSTM(H, return_sequences=True, go_backwards=True, implementation=1),
            keras.layers.LSTM(3, return_sequences=True, recurrent_activation="hard_sigmoid"),
            keras.layers.Dense(2, activation="tanh"),
        ]
    )
    randomize(model, rng)
    config, params = load_keras(model)
    assert config.mask_value == -1.0 and config.go_backwards == (True, False)
    assert config.implementation == (1, "auto")  # Keras' 2 runs on jlstm's fastest mode
    y = APPLY(params, jnp.asarray(xm), config)
    # A two-layer stack and a head, not yet bounded per element (lstm_layer_bound takes exact
    # inputs): ATOL = 1e-5 is about twice the per-layer bound of such layers
    # (reference.lstm_layer_bound gives 2x bound < 6e-6 for H = 4, T = 6, weights at 0.5),
    # which the second layer passes on scaled by its |kernel| sums (~1 here).
    np.testing.assert_allclose(np32(y), model.predict(xm, verbose=0), atol=ATOL, rtol=0)


# ------------------------------------------------------------------ initializers


def _stats(w):
    w = np.asarray(w, np.float64)
    return w.mean(), w.std(), np.abs(w).max()


@pytest.mark.parametrize(
    "name",
    [
        "glorot_uniform",
        "glorot_normal",
        "he_uniform",
        "lecun_normal",
        "random_normal",
        "truncated_normal",
    ],
)
def test_initializer_statistics_match_keras(name):
    shape = (64, 256)
    k = np.asarray(keras.initializers.get(name)(shape))
    j = np.asarray(jlstm.initializers.get_initializer(name)(jax.random.key(0), shape))
    (km, ks, kmax), (jm, js, jmax) = _stats(k), _stats(j)
    # 16384 draws: the sd of the sample sd is ~0.6%; a wrong fan is off by >= 20%.
    assert abs(js / ks - 1.0) < 0.05, (name, js, ks)
    assert abs(jm) < 4 * ks / np.sqrt(k.size) and abs(km) < 4 * ks / np.sqrt(k.size)
    if "uniform" in name or "truncated" in name or name == "glorot_normal":
        # bounded families: same support
        assert abs(jmax / kmax - 1.0) < 0.05, (name, jmax, kmax)


@pytest.mark.parametrize("unit_forget_bias", [True, False])
def test_lstm_default_initialization_matches_keras(unit_forget_bias):
    d, h = 16, 32
    layer = keras.layers.LSTM(
        h,
        unit_forget_bias=unit_forget_bias,
        bias_initializer="ones" if not unit_forget_bias else "zeros",
    )
    layer.build((None, None, d))
    k = layer.cell
    params = jlstm.init_cell_params(
        jax.random.key(1),
        d,
        h,
        unit_forget_bias=unit_forget_bias,
        bias_initializer="ones" if not unit_forget_bias else "zeros",
    )
    # Kernel: glorot_uniform over the fused (D, 4H) matrix: U(+-sqrt(6 / (D + 4H))).
    limit = np.sqrt(6.0 / (d + 4 * h))
    for w in (np.asarray(k.kernel.value), np.asarray(params.kernel)):
        assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
        assert abs(w.std() / (limit / np.sqrt(3.0)) - 1.0) < 0.08
    # Recurrent: orthogonal (H, 4H) with orthonormal rows.
    for u in (np.asarray(k.recurrent_kernel.value), np.asarray(params.recurrent_kernel)):
        np.testing.assert_allclose(u @ u.T, np.eye(h), atol=1e-5)
    # Bias: exactly Keras' (zeros with ones in the forget block, or all ones).
    np.testing.assert_array_equal(np.asarray(params.bias), np.asarray(k.bias.value))


# ------------------------------------------------------------------ slow sweeps

_ACTS = [
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "relu",
    "relu6",
    "elu",
    "selu",
    "softsign",
    "softplus",
    "silu",
    "gelu",
    "exponential",
    "linear",
]


@pytest.mark.slow
@pytest.mark.parametrize("role", ["activation", "recurrent_activation"])
@pytest.mark.parametrize("name", _ACTS)
def test_every_activation_matches_keras(data, name, role):
    other = "sigmoid" if role == "activation" else "tanh"
    kwargs = {role: name, "return_sequences": True}
    kwargs["recurrent_activation" if role == "activation" else "activation"] = other
    # Unbounded gates (linear, relu, exponential, ...) let the cell state grow far past 1:
    # smaller weights keep it finite; the derived bound scales with the values.
    _compare(data, 10, kwargs, mask=MASK, initial_state=True, scale=0.25)


@pytest.mark.slow
@pytest.mark.parametrize(
    "go_backwards,implementation,zero_output,use_bias,initial_state,return_sequences",
    list(
        itertools.product(
            [False, True], [1, 2], [False, True], [True, False], [False, True], [False, True]
        )
    ),
)
def test_every_combination_matches_keras(
    data, go_backwards, implementation, zero_output, use_bias, initial_state, return_sequences
):
    kwargs = {
        "go_backwards": go_backwards,
        "implementation": implementation,
        "zero_output_for_mask": zero_output,
        "use_bias": use_bias,
        "return_sequences": return_sequences,
        "recurrent_activation": "hard_sigmoid" if implementation == 1 else "sigmoid",
    }
    _compare(data, 11, kwargs, mask=MASK, initial_state=initial_state)
