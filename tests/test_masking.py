"""Masks of any pattern, sequence lengths, Keras' ``Masking`` layer and padding-aware
reversal (and how it differs from Keras' plain reversal)."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import jlstm
from jlstm.masking import apply_masking, masking_mask, reverse_padded, sequence_lengths

from . import reference as ref
from .keras_helpers import APPLY, LSTM_LAYER, MASK, build_lstm, np32

B, T, D, H = MASK.shape[0], MASK.shape[1], 3, 4


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, D)).astype("float32")
    params = jlstm.init_cell_params(jax.random.key(0), D, H, bias_initializer="random_normal")
    return x, params


def test_sequence_mask_and_lengths():
    lengths = jnp.array([0, 2, 4])
    right = jlstm.sequence_mask(lengths, 4)
    left = jlstm.sequence_mask(lengths, 4, padding="left")
    np.testing.assert_array_equal(right, [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(left, [[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_array_equal(sequence_lengths(right), lengths)
    np.testing.assert_array_equal(sequence_lengths(MASK), MASK.sum(-1))
    with pytest.raises(ValueError, match="padding"):
        jlstm.sequence_mask(lengths, 4, padding="middle")
    with pytest.raises(ValueError, match="integers"):
        jlstm.sequence_mask(jnp.array([1.5]), 4)


def test_masking_layer_matches_keras():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, T, D)).astype("float32")
    x[~MASK] = 0.5
    x[3, 1, 0] = 0.5  # one feature equal to mask_value does not mask the step
    layer = keras.layers.Masking(mask_value=0.5)
    want_mask = np.asarray(layer.compute_mask(x))
    want_out = np.asarray(layer(x))
    np.testing.assert_array_equal(np.asarray(masking_mask(jnp.asarray(x), 0.5)), want_mask)
    np.testing.assert_array_equal(want_mask, MASK)
    out, mask = apply_masking(jnp.asarray(x), 0.5)
    np.testing.assert_array_equal(np.asarray(out), want_out)
    np.testing.assert_array_equal(np.asarray(mask), MASK)


def test_reverse_padded_values_and_involution():
    x = jnp.arange(2 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 1)
    lengths = jnp.array([3, 5])
    r = reverse_padded(x, lengths)
    np.testing.assert_array_equal(r[..., 0], [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]])
    l = reverse_padded(x, lengths, padding="left")
    np.testing.assert_array_equal(l[..., 0], [[0, 1, 4, 3, 2], [9, 8, 7, 6, 5]])
    np.testing.assert_array_equal(reverse_padded(r, lengths), x)
    np.testing.assert_array_equal(reverse_padded(l, lengths, padding="left"), x)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_masked_steps_are_skipped_exactly(problem, go_backwards):
    """Any pattern: the final state equals running only the real steps, in order."""
    x, params = problem
    _, final = LSTM_LAYER(
        params, jnp.asarray(x), mask=jnp.asarray(MASK), go_backwards=go_backwards, return_state=True
    )
    # Two float32 runs of the same real steps: each within the derived bound of the exact one.
    weights = [np.asarray(a, np.float64) for a in params]
    _, bound_h, bound_c = ref.lstm_layer_bound(*weights, x, mask=MASK, go_backwards=go_backwards)
    for i in range(B):
        real = x[i][MASK[i]]
        if go_backwards:
            real = real[::-1]
        if len(real) == 0:
            want = jlstm.zero_state((), H)
        else:
            _, want = LSTM_LAYER(params, jnp.asarray(real), return_state=True)
        ref.assert_within(np32(final.h[i]), np32(want.h), 2 * bound_h[i], err_msg=f"h[{i}]")
        ref.assert_within(np32(final.c[i]), np32(want.c), 2 * bound_c[i], err_msg=f"c[{i}]")


def test_seq_lengths_is_a_mask_shortcut(problem):
    x, params = problem
    lengths = jnp.array([6, 4, 0, 1, 3])
    mask = jlstm.sequence_mask(lengths, T)
    a = LSTM_LAYER(params, jnp.asarray(x), seq_lengths=lengths, return_sequences=True)
    b = LSTM_LAYER(params, jnp.asarray(x), mask=mask, return_sequences=True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="either mask or seq_lengths"):
        jlstm.lstm_layer(params, jnp.asarray(x), seq_lengths=lengths, mask=mask)


def test_mask_value_config_is_a_keras_masking_layer(problem):
    x, _ = problem
    xm = x.copy()
    xm[~MASK] = -1.0
    config = jlstm.ModelConfig(input_size=D, layer_sizes=(H,), return_sequences=True)
    masked = jlstm.ModelConfig(
        input_size=D, layer_sizes=(H,), return_sequences=True, mask_value=-1.0
    )
    params = jlstm.init_params(jax.random.key(2), config)
    want = APPLY(params, jnp.asarray(x), config, mask=jnp.asarray(MASK))
    got = APPLY(params, jnp.asarray(xm), masked)
    # The same program on the same real steps (masked steps' inputs are never used): exact.
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # And seq_lengths at the model level: the right-padded mask.
    lengths = jnp.array([6, 4, 0, 1, 3])
    np.testing.assert_array_equal(
        np.asarray(APPLY(params, jnp.asarray(x), config, seq_lengths=lengths)),
        np.asarray(APPLY(params, jnp.asarray(x), config, mask=jlstm.sequence_mask(lengths, T))),
    )


def test_padding_aware_reversal_versus_keras_plain_reversal(problem):
    """Right-padded batch. Keras' go_backwards reverses the whole padded axis: with the
    mask the padding is skipped (same final state as padding-aware reversal, outputs
    the same once aligned); without it, Keras reads the padding first and its state
    differs, while padding-aware reversal never sees the padding."""
    x, _ = problem
    lengths = np.array([6, 4, 2, 5, 1])
    mask = np.asarray(jlstm.sequence_mask(jnp.asarray(lengths), T))
    xp = np.where(mask[..., None], x, 0.0).astype("float32")
    rng = np.random.default_rng(3)
    layer, params = build_lstm(
        rng,
        H,
        D,
        go_backwards=True,
        return_sequences=True,
        return_state=True,
        zero_output_for_mask=True,
    )
    y_k, h_k, c_k = layer(xp, mask=mask)
    y_k_aligned = np32(y_k)[:, ::-1]  # Keras returns processing order; flip to align

    xr = reverse_padded(jnp.asarray(xp), jnp.asarray(lengths))
    y_r, final = LSTM_LAYER(
        params,
        xr,
        seq_lengths=jnp.asarray(lengths),
        return_sequences=True,
        return_state=True,
        zero_output_for_mask=True,
    )
    y_aligned = np32(reverse_padded(y_r, jnp.asarray(lengths)))
    # Keras' run in processing order is the exact computation the bound is derived for.
    weights = [np.asarray(a, np.float64) for a in params]
    bound_y, bound_h, bound_c = ref.lstm_layer_bound(
        *weights, xp, mask=mask, go_backwards=True, zero_output_for_mask=True
    )
    ref.assert_within(np32(final.h), np32(h_k), 2 * bound_h, err_msg="h")
    ref.assert_within(np32(final.c), np32(c_k), 2 * bound_c, err_msg="c")
    ref.assert_within(y_aligned, y_k_aligned, 2 * bound_y[:, ::-1], err_msg="outputs")
    # In processing order Keras' sequence starts with the padding (zeros here) ...
    np.testing.assert_array_equal(np32(y_k)[1, :2], 0.0)
    # ... and without a mask it reads the padding, padding-aware reversal does not.
    _, h_plain, _ = layer(xp)
    unmasked = LSTM_LAYER(params, xr, return_sequences=True)
    assert not np.allclose(np32(h_plain)[1], np32(final.h)[1], atol=1e-3)
    ref.assert_within(
        np32(unmasked)[np.arange(B), lengths - 1], np32(final.h), 2 * bound_h, err_msg="unmasked"
    )
