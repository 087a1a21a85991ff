"""Bidirectional LSTM against Keras 3's ``Bidirectional(LSTM)``: every merge mode, masks
of every pattern, ``return_state``, ``initial_state``, and stacked in a model."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import jlstm
from jlstm import BidirectionalParams, BidirectionalState, LSTMState
from jlstm.interop.keras import load_keras

from . import reference as ref
from .keras_helpers import (
    APPLY,
    ATOL,
    BIDIRECTIONAL_LAYER,
    LSTM_LAYER,
    MASK,
    cell_params,
    np32,
    randomize,
)

B, T, D, H = MASK.shape[0], MASK.shape[1], 3, 4
U = ref.unit_roundoff(np.float32)


def _bounds(params, x, mask, states, return_sequences, merge_mode):
    """Derived float32 error bounds of a Bidirectional layer: per merged output, and of the
    four final states (forward h, c, backward h, c). Each half is ``lstm_layer_bound``; the
    backward half runs reversed and is flipped back; the merge adds its own rounding."""
    halves = []
    for k, (half, backwards) in enumerate(((params.forward, False), (params.backward, True))):
        weights = [np.asarray(a, np.float64) for a in half]
        h0, c0 = (None, None) if states is None else (states[2 * k], states[2 * k + 1])
        args = (*weights, x, h0, c0, mask, backwards)
        y, _, _ = ref.lstm_layer(*args)
        by, bh, bc = ref.lstm_layer_bound(*args)
        if return_sequences:
            y, by = (y[:, ::-1], by[:, ::-1]) if backwards else (y, by)
        else:
            y, by = y[:, -1], np.maximum(by[:, -1], bh)  # the last output, or the kept state
        halves.append((y, by, bh, bc))
    (yf, bf, *sf), (yb, bb, *sb) = halves
    merged = {
        None: [bf, bb],
        "concat": [np.concatenate([bf, bb], -1)],
        "sum": [bf + bb + U * np.abs(yf + yb)],
        "ave": [(bf + bb) / 2 + 2 * U * np.abs(yf + yb)],
        "mul": [np.abs(yf) * bb + np.abs(yb) * bf + U * np.abs(yf * yb)],
    }[merge_mode]
    return merged, [*sf, *sb]


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(B, T, D)).astype("float32")


def _keras_bidirectional(seed, merge_mode, **lstm_kwargs):
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_state=True, **lstm_kwargs), merge_mode=merge_mode
    )
    layer.build((None, None, D))
    randomize(layer, np.random.default_rng(seed))
    params = BidirectionalParams(
        cell_params(layer.forward_layer), cell_params(layer.backward_layer)
    )
    return layer, params


@pytest.mark.parametrize(
    "merge_mode,return_sequences,initial_state",
    [
        ("concat", False, True),
        ("sum", True, True),
        ("mul", True, False),
        ("ave", True, False),
        (None, True, False),
        pytest.param("concat", True, False, marks=pytest.mark.slow),
        pytest.param(None, False, False, marks=pytest.mark.slow),
    ],
)
def test_every_merge_mode_matches_keras(x, merge_mode, return_sequences, initial_state):
    rng = np.random.default_rng(1)
    states = [rng.normal(size=(B, H)).astype("float32") for _ in range(4)]
    layer, params = _keras_bidirectional(
        2, merge_mode, return_sequences=return_sequences, implementation=1
    )
    call = {"mask": MASK}
    if initial_state:
        call["initial_state"] = states
    out = layer(x, **call)
    n_out = 2 if merge_mode is None else 1
    keras_y, keras_states = out[:n_out], [np32(s) for s in out[n_out:]]

    y, state = BIDIRECTIONAL_LAYER(
        params,
        jnp.asarray(x),
        merge_mode=merge_mode,
        mask=jnp.asarray(MASK),
        initial_state=states if initial_state else None,
        return_sequences=return_sequences,
        return_state=True,
        implementation=1,
    )
    ys = y if merge_mode is None else (y,)
    assert len(ys) == len(keras_y)
    # Twice the derived bound: each side is within it of the exact computation.
    bounds, state_bounds = _bounds(
        params, x, MASK, states if initial_state else None, return_sequences, merge_mode
    )
    for ours, theirs, bound in zip(ys, keras_y, bounds, strict=True):
        assert ours.shape == theirs.shape
        ref.assert_within(np32(ours), np32(theirs), 2 * bound, err_msg="outputs")
    assert isinstance(state, BidirectionalState)
    flat = [state.forward.h, state.forward.c, state.backward.h, state.backward.c]
    for ours, theirs, bound in zip(flat, keras_states, state_bounds, strict=True):
        ref.assert_within(np32(ours), theirs, 2 * bound, err_msg="states")


def test_backward_half_is_a_go_backwards_layer_flipped_back(x):
    """The definition, checked without Keras: backward = lstm_layer(go_backwards=True) whose
    sequence is flipped to input order, zeros at masked steps (Keras forces
    zero_output_for_mask with return_sequences)."""
    params = jlstm.init_layer_params(
        jax.random.key(0), jlstm.LayerConfig(units=H, input_size=D, bidirectional=True)
    )
    y, y_rev = BIDIRECTIONAL_LAYER(
        params, jnp.asarray(x), merge_mode=None, mask=jnp.asarray(MASK), return_sequences=True
    )
    back = LSTM_LAYER(
        params.backward,
        jnp.asarray(x),
        mask=jnp.asarray(MASK),
        go_backwards=True,
        return_sequences=True,
        zero_output_for_mask=True,
    )
    np.testing.assert_array_equal(np.asarray(y_rev), np.asarray(back)[:, ::-1])
    np.testing.assert_array_equal(np.asarray(y_rev)[~MASK], 0.0)
    np.testing.assert_array_equal(np.asarray(y)[~MASK], 0.0)
    # Dropout: each direction gets its own key, split from the one given.
    key = jax.random.key(3)
    kf, kb = jax.random.split(key)
    yf, yb = BIDIRECTIONAL_LAYER(
        params, jnp.asarray(x), merge_mode=None, dropout=0.5, training=True, key=key
    )
    np.testing.assert_array_equal(
        np.asarray(yf),
        np.asarray(LSTM_LAYER(params.forward, jnp.asarray(x), dropout=0.5, training=True, key=kf)),
    )
    np.testing.assert_array_equal(
        np.asarray(yb),
        np.asarray(
            LSTM_LAYER(
                params.backward,
                jnp.asarray(x),
                go_backwards=True,
                dropout=0.5,
                training=True,
                key=kb,
            )
        ),
    )


def test_stacked_bidirectional_model_matches_keras(x):
    xm = x.copy()
    xm[~MASK] = 0.0
    model = keras.Sequential(
        [
            keras.Input((None, D)),
            keras.layers.Masking(0.0),
            keras.layers.Bidirectional(
                keras.layers.LSTM(H, return_sequences=True), merge_mode="sum"
            ),
            keras.layers.Bidirectional(keras.layers.LSTM(3, recurrent_activation="hard_sigmoid")),
            keras.layers.Dense(2),
        ]
    )
    randomize(model, np.random.default_rng(4))
    config, params = load_keras(model)
    assert config.bidirectional == ("sum", "concat")
    assert config.layers[1].input_size == H and config.layers[1].output_size == 6
    y, states = APPLY(params, jnp.asarray(xm), config, return_state=True)
    # A stacked bidirectional model has no per-element bound helper: ATOL (1e-5) is about
    # twice the per-layer bound of these sizes (see _bounds: 2x bound < 6e-6 for H = 4, T = 6).
    np.testing.assert_allclose(np32(y), model.predict(xm, verbose=0), atol=ATOL, rtol=0)
    assert all(isinstance(s, BidirectionalState) for s in states)


def test_bad_bidirectional_arguments():
    params = jlstm.init_cell_params(jax.random.key(0), D, H)
    with pytest.raises(TypeError, match="BidirectionalParams"):
        BIDIRECTIONAL_LAYER(params, jnp.ones((2, 3, D)))
    bi = BidirectionalParams(params, params)
    with pytest.raises(ValueError, match="merge_mode"):
        BIDIRECTIONAL_LAYER(bi, jnp.ones((2, 3, D)), merge_mode="max")
    with pytest.raises(ValueError, match="go_backwards must be False"):
        jlstm.LayerConfig(units=H, input_size=D, bidirectional="sum", go_backwards=True)
    with pytest.raises(ValueError, match="merge_mode=None returns two outputs"):
        jlstm.ModelConfig(bidirectional="none")
    with pytest.raises(ValueError, match="bidirectional"):
        BIDIRECTIONAL_LAYER(bi, jnp.ones((2, 3, D)), initial_state=(1, 2, 3))
    state = LSTMState(jnp.zeros((2, H)), jnp.zeros((2, H)))
    out, final = BIDIRECTIONAL_LAYER(
        bi, jnp.ones((2, 3, D)), initial_state=(state, state), return_state=True
    )
    assert out.shape == (2, 2 * H) and final.backward.h.shape == (2, H)
