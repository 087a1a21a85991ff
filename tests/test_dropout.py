"""Dropout semantics: Keras' variational masks (drawn once per sequence, reused at every
step, scaled by 1/(1-rate), one per gate for implementation 1), active only in
training, reproducible from the key; Keras ``Dropout`` layers between LSTMs."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm
from jlstm import CellParams, DropoutMasks, LSTMState

from . import reference as ref
from .keras_helpers import APPLY, LSTM_LAYER, MASK, build_lstm, np32

# float32's unit roundoff (6e-8): the probes below route values through identity weights and
# zero biases (exact), so their only roundings are the mask scale 1/(1 - rate) in float32 and
# the products of it; each tolerance counts those roundings.
U32 = ref.unit_roundoff(np.float32)

N = 4  # D = H, so identity blocks route features straight through
B, D, H = 5, 3, 4  # shared shapes: the compiled mask draws are reused across tests


def _probe(route: str) -> CellParams:
    """Weights that make h_t reveal the dropout mask of the candidate (g) gate.

    With linear activations and gate biases i = 1, f = 0, o = 1: c_t = g_t and
    h_t = g_t. ``route="input"``: g_t = (x_t * m) @ I, so with x = 1, h_t = m.
    ``route="recurrent"``: g_t = (h_{t-1} * m) @ I, so from h_0 = 1, h_t = m ** t.
    """
    kernel = np.zeros((N, 4 * N), np.float32)
    recurrent = np.zeros((N, 4 * N), np.float32)
    (kernel if route == "input" else recurrent)[:, 2 * N : 3 * N] = np.eye(N)
    bias = np.concatenate([np.ones(N), np.zeros(N), np.zeros(N), np.ones(N)]).astype(np.float32)
    return CellParams(jnp.asarray(kernel), jnp.asarray(recurrent), jnp.asarray(bias))


LINEAR = {"activation": "linear", "recurrent_activation": "linear"}


@pytest.mark.parametrize("implementation", [1, 2])
def test_input_mask_is_the_same_at_every_step_with_keras_scale(implementation):
    batch, steps, rate = B, 5, 0.4
    key = jax.random.key(7)
    y = LSTM_LAYER(
        _probe("input"),
        jnp.ones((batch, steps, N)),
        dropout=rate,
        training=True,
        key=key,
        return_sequences=True,
        implementation=implementation,
        **LINEAR,
    )
    y = np.asarray(y)
    for t in range(1, steps):
        np.testing.assert_array_equal(y[:, t], y[:, 0])  # one mask for the whole sequence
    # Keras' scale, rounded once to float32.
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / (1 - rate)], rtol=U32, atol=0)
    assert 0 < (y[:, 0] == 0).sum() < y[:, 0].size  # some dropped, some kept
    drawn = jlstm.draw_dropout_masks(
        key, (batch,), N, N, dropout=rate, recurrent_dropout=0.0, per_gate=implementation == 1
    )
    want = drawn.input[2] if implementation == 1 else drawn.input  # the g gate's mask
    np.testing.assert_array_equal(y[:, 0], np.asarray(want))  # 1 * m @ I + 0: exact


@pytest.mark.parametrize("implementation", [1, 2])
def test_recurrent_mask_is_the_same_at_every_step(implementation):
    batch, steps, rate = B, 4, 0.5
    key = jax.random.key(3)
    ones = jnp.ones((batch, N))
    y = LSTM_LAYER(
        _probe("recurrent"),
        jnp.zeros((batch, steps, N)),
        initial_state=LSTMState(ones, jnp.zeros((batch, N))),
        recurrent_dropout=rate,
        training=True,
        key=key,
        return_sequences=True,
        implementation=implementation,
        **LINEAR,
    )
    # Keras 3: recurrent_dropout runs implementation 1, one mask per gate, whatever was asked.
    drawn = jlstm.draw_dropout_masks(
        key, (batch,), N, N, dropout=0.0, recurrent_dropout=rate, per_gate=True
    )
    m = np.asarray(drawn.recurrent[2], np.float64)
    for t in range(steps):
        # t + 1 float32 products of the (float32) mask values: (t + 1) roundings at most.
        np.testing.assert_allclose(np.asarray(y[:, t]), m ** (t + 1), rtol=(t + 1) * U32, atol=0)


def test_mask_values_rate_and_independence():
    rate = 0.3
    masks = jlstm.draw_dropout_masks(
        jax.random.key(0), (200,), 50, 40, dropout=rate, recurrent_dropout=rate, per_gate=True
    )
    for m in masks:
        m = np.asarray(m)
        assert m.shape[0] == 4
        np.testing.assert_allclose(np.unique(m), [0.0, 1 / (1 - rate)], rtol=U32, atol=0)
        dropped = (m == 0).mean()
        n = m.size
        assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n)  # binomial, 5 sd
        assert abs(m.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation
        # One mask per gate: the four gates do not share their draws.
        assert not any(np.array_equal(m[a], m[b]) for a in range(4) for b in range(a + 1, 4))
    one = jax.eval_shape(
        lambda k: jlstm.draw_dropout_masks(
            k, (200,), 50, 40, dropout=rate, recurrent_dropout=0.0, per_gate=False
        ),
        jax.random.key(0),
    )
    assert one.input.shape == (200, 50) and one.recurrent is None


@pytest.mark.parametrize(
    "implementation,dropout,recurrent_dropout,per_gate",
    [(1, 0.3, 0.0, True), (2, 0.3, 0.0, False), (2, 0.3, 0.2, True)],
)
def test_layer_draws_keras_mask_layout_from_the_key(
    implementation, dropout, recurrent_dropout, per_gate
):
    """Implementation 1: one mask per gate; 2: one mask; recurrent dropout: per gate (Keras 3)."""
    rng = np.random.default_rng(0)
    params = jlstm.init_cell_params(jax.random.key(1), D, H)
    x = jnp.asarray(rng.normal(size=(B, 6, D)), jnp.float32)
    key = jax.random.key(11)
    options = dict(dropout=dropout, recurrent_dropout=recurrent_dropout, return_sequences=True)
    y = LSTM_LAYER(params, x, training=True, key=key, implementation=implementation, **options)
    masks = jlstm.draw_dropout_masks(
        key, (B,), D, H, dropout=dropout, recurrent_dropout=recurrent_dropout, per_gate=per_gate
    )
    given = LSTM_LAYER(
        params,
        x,
        training=True,
        fixed_dropout_masks=masks,
        implementation=implementation,
        **options,
    )
    np.testing.assert_array_equal(np.asarray(y), np.asarray(given))


@pytest.mark.slow
def test_same_key_same_result_other_key_other_draw():
    rng = np.random.default_rng(0)
    params = jlstm.init_cell_params(jax.random.key(1), D, H)
    x = jnp.asarray(rng.normal(size=(B, 6, D)), jnp.float32)

    @jax.jit
    def run(key):
        return LSTM_LAYER(params, x, dropout=0.3, recurrent_dropout=0.2, training=True, key=key)

    a, b, c = run(jax.random.key(11)), run(jax.random.key(11)), run(jax.random.key(12))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_dropout_is_identity_outside_training():
    rng = np.random.default_rng(1)
    params = jlstm.init_cell_params(jax.random.key(2), D, H)
    x = jnp.asarray(rng.normal(size=(B, 6, D)), jnp.float32)
    plain = LSTM_LAYER(params, x, return_sequences=True)
    y = LSTM_LAYER(params, x, dropout=0.5, recurrent_dropout=0.5, return_sequences=True)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(plain))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        jlstm.lstm_layer(params, x, dropout=0.5, training=True)
    # The model: LSTM dropout, Dropout layers between LSTMs and on the inputs.
    config = jlstm.ModelConfig(
        input_size=D, layer_sizes=(H,), dropout=0.3, output_dropout=0.5, input_dropout=0.1
    )
    bare = jlstm.ModelConfig(input_size=D, layer_sizes=(H,))
    mparams = jlstm.init_params(jax.random.key(3), config)
    np.testing.assert_array_equal(
        np.asarray(APPLY(mparams, x, config)), np.asarray(APPLY(mparams, x, bare))
    )
    k = jax.random.key(4)
    a = APPLY(mparams, x, config, training=True, key=k)
    b = APPLY(mparams, x, config, training=True, key=k)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(APPLY(mparams, x, bare)))


def test_dropout_layer_between_lstms_is_elementwise_keras_dropout():
    """``output_dropout``: each element of the layer output kept with 1 - rate, scaled."""
    rng = np.random.default_rng(2)
    rate = 0.5
    config = jlstm.LayerConfig(units=H, input_size=D, output_dropout=rate)
    params = jlstm.init_layer_params(jax.random.key(5), config)
    x = jnp.asarray(rng.normal(size=(B, 6, D)), jnp.float32)
    y, _, (raw,) = jlstm.apply_stack(
        [params],
        x,
        [config],
        return_sequences=True,
        training=True,
        key=jax.random.key(6),
        collect_outputs=True,
    )
    y, raw = np.asarray(y), np.asarray(raw[0])
    kept = y != 0
    # raw * float32(1 / (1 - rate)): the scale's rounding and the product's, 2u relative.
    np.testing.assert_allclose(y[kept], raw[kept] / (1 - rate), rtol=2 * U32, atol=0)
    assert abs((~kept).mean() - rate) < 0.15  # 120 draws: 3.3 sd
    # Not variational: the dropped units change from step to step.
    assert not all(np.array_equal(kept[:, 0], kept[:, t]) for t in range(1, 6))


@pytest.mark.parametrize(
    "implementation,dropout,recurrent_dropout,masked",
    [(2, 0.4, 0.0, False), (1, 0.4, 0.0, True), (1, 0.3, 0.25, True)],
    ids=["impl2-input", "impl1-input-masked", "impl1-both-masked"],
)
def test_dropout_matches_keras_given_the_same_masks(
    implementation, dropout, recurrent_dropout, masked
):
    """Keras' LSTMCell reuses a cached mask: put jlstm's draw there and compare the
    training-mode outputs and states step for step."""
    rng = np.random.default_rng(3)
    b, t, d, h = B, MASK.shape[1], D, H
    layer, params = build_lstm(
        rng,
        h,
        d,
        # Keras 3.15's default use_cudnn="auto" path crashes for implementation 1 with
        # dropout and no recurrent dropout (it broadcasts the list of four masks as one);
        # use_cudnn=False takes the generic loop, which is what runs on CPU anyway.
        use_cudnn=False,
        dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        implementation=implementation,
        return_sequences=True,
        return_state=True,
    )
    per_gate = implementation == 1 or recurrent_dropout > 0
    masks = jlstm.draw_dropout_masks(
        jax.random.key(9),
        (b,),
        d,
        h,
        dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        per_gate=per_gate,
    )
    as_keras = lambda m: None if m is None else (list(np.asarray(m)) if per_gate else np.asarray(m))  # noqa: E731
    layer.cell._dropout_mask = as_keras(masks.input)
    layer.cell._recurrent_dropout_mask = as_keras(masks.recurrent)
    x = rng.normal(size=(b, t, d)).astype("float32")
    mask = MASK if masked else None
    y_k, h_k, c_k = layer(x, mask=mask, training=True)
    y, state = LSTM_LAYER(
        params,
        jnp.asarray(x),
        mask=None if mask is None else jnp.asarray(mask),
        dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        implementation=implementation,
        training=True,
        fixed_dropout_masks=masks,
        return_sequences=True,
        return_state=True,
    )

    # Twice the derived bound (each side within it of the exact computation, masks included).
    def gates(m):
        if m is None:
            return None
        m = np.asarray(m, np.float64)
        return m if per_gate else np.broadcast_to(m, (4, *m.shape))

    bound_y, bound_h, bound_c = ref.lstm_layer_bound(
        *(np.asarray(a, np.float64) for a in params),
        x,
        mask=mask,
        xm=gates(masks.input),
        hm=gates(masks.recurrent),
    )
    ref.assert_within(np32(y), np32(y_k), 2 * bound_y, err_msg="outputs")
    ref.assert_within(np32(state.h), np32(h_k), 2 * bound_h, err_msg="h")
    ref.assert_within(np32(state.c), np32(c_k), 2 * bound_c, err_msg="c")
    # And the masks matter: without them the outputs differ.
    plain = LSTM_LAYER(params, jnp.asarray(x), return_sequences=True)
    assert not np.allclose(np32(plain), np32(y_k), atol=1e-3)


def test_fixed_masks_are_checked():
    params = jlstm.init_cell_params(jax.random.key(0), 3, 5)
    x = jnp.ones((2, 4, 3))
    bad = DropoutMasks(jnp.ones((2, 3)), None)
    with pytest.raises(ValueError, match="must have shape"):
        jlstm.lstm_layer(params, x, training=True, implementation=1, fixed_dropout_masks=bad)
