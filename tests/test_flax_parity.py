"""Parity with Flax nnx.OptimizedLSTMCell + nnx.RNN on copied weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jlstm
from jlstm.interop.flax import carry_to_state, from_flax_cell, state_to_carry, to_flax_cell

from . import reference as ref

# Gradients only (reference.py has no backward-pass bound yet): the float32 bar.
# Forward outputs and carries use the derived bound (_bound).
TOL = 1e-5


def _bound(params, x, *args, **kwargs):
    """Bounds ``(outputs, h, c)`` on |jlstm - flax|: each float32 run is within
    ``lstm_layer_bound`` of the exact layer (flax sums x W + (h R + b), jlstm another order
    of the same D + H + 1 terms; the bound holds for any order), so twice it."""
    weights = (np.asarray(a, np.float64) for a in params)
    bounds = ref.lstm_layer_bound(*weights, np.asarray(x, np.float64), *args, **kwargs)
    return tuple(2 * b for b in bounds)


B, T, D, H = 4, 7, 3, 6


@pytest.fixture
def setup(rng):
    params = jlstm.init_cell_params(jax.random.key(0), D, H, bias_initializer="random_normal")
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    return params, x


def test_weights_round_trip(setup):
    params, _ = setup
    cell = to_flax_cell(params)
    back = from_flax_cell(cell)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    fresh = nnx.OptimizedLSTMCell(D, H, rngs=nnx.Rngs(3))
    converted = from_flax_cell(fresh)
    assert converted.kernel.shape == (D, 4 * H) and converted.recurrent_kernel.shape == (H, 4 * H)


@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_outputs_and_carry(setup, rng, reverse):
    params, x = setup
    rnn = nnx.RNN(to_flax_cell(params), return_carry=True, reverse=reverse)
    h0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    c0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    initial = jlstm.LSTMState(h0, c0)
    carry, y_flax = rnn(x, initial_carry=state_to_carry(initial))
    # Flax reverse without keep_order == Keras go_backwards (outputs in processing order).
    y, state = jlstm.lstm_layer(
        params,
        x,
        initial_state=initial,
        return_sequences=True,
        return_state=True,
        go_backwards=reverse,
    )
    dy, dh, dc = _bound(params, x, h0, c0, go_backwards=reverse)
    ref.assert_within(y, y_flax, dy, err_msg="outputs")
    flax_state = carry_to_state(carry)
    ref.assert_within(state.h, flax_state.h, dh, err_msg="h")
    ref.assert_within(state.c, flax_state.c, dc, err_msg="c")


def test_seq_lengths_match_right_padding_mask(setup):
    params, x = setup
    lengths = jnp.array([7, 3, 5, 1])
    rnn = nnx.RNN(to_flax_cell(params), return_carry=True)
    carry, y_flax = rnn(x, seq_lengths=lengths)
    mask = jnp.arange(T)[None, :] < lengths[:, None]
    y, state = jlstm.lstm_layer(params, x, mask=mask, return_sequences=True, return_state=True)
    flax_state = carry_to_state(carry)
    dy, dh, dc = _bound(params, x, mask=np.asarray(mask))
    ref.assert_within(state.h, flax_state.h, dh, err_msg="h")
    ref.assert_within(state.c, flax_state.c, dc, err_msg="c")
    # Flax leaves outputs at padded steps unspecified (it keeps computing); compare valid ones.
    valid = np.asarray(mask)
    ref.assert_within(np.asarray(y)[valid], np.asarray(y_flax)[valid], dy[valid], err_msg="y")


def test_gradients_match(setup):
    params, x = setup
    w = jnp.asarray(np.random.default_rng(5).normal(size=(B, T, H)), jnp.float32)
    rnn = nnx.RNN(to_flax_cell(params))

    def flax_loss(model, x):
        return jnp.sum(model(x) * w)

    g_model, g_x_flax = nnx.grad(flax_loss, argnums=(0, 1))(rnn, x)

    def loss(p, x):
        return jnp.sum(jlstm.lstm_layer(p, x, return_sequences=True) * w)

    g_params, g_x = jax.grad(loss, argnums=(0, 1))(params, x)
    np.testing.assert_allclose(g_x, g_x_flax, atol=TOL, rtol=TOL)
    cell = g_model.cell
    np.testing.assert_allclose(g_params.kernel, cell.dense_i.kernel[...], atol=TOL, rtol=TOL)
    np.testing.assert_allclose(
        g_params.recurrent_kernel, cell.dense_h.kernel[...], atol=TOL, rtol=TOL
    )
    np.testing.assert_allclose(g_params.bias, cell.dense_h.bias[...], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("kind", ["optimized", "lstm"])
def test_both_cell_kinds_with_activations(setup, kind):
    """nnx.LSTMCell (per-gate layout) and OptimizedLSTMCell, non-default activations."""
    params, x = setup
    cell = to_flax_cell(params, kind=kind, activation="relu", recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="with_activations=True"):
        from_flax_cell(cell)
    back, acts = from_flax_cell(cell, with_activations=True)
    assert acts == {"activation": "relu", "recurrent_activation": "hard_sigmoid"}
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    y_flax = nnx.RNN(cell)(x)
    y = jlstm.lstm_layer(params, x, return_sequences=True, **acts)
    dy, _, _ = _bound(params, x, act="relu", ract="hard_sigmoid")
    ref.assert_within(y, y_flax, dy, err_msg="outputs")


def test_fresh_lstm_cell_and_refusals():
    cell = nnx.LSTMCell(D, H, rngs=nnx.Rngs(0))
    params = from_flax_cell(cell)
    x = jnp.ones((2, 3, D))
    dy, _, _ = _bound(params, x)
    ref.assert_within(
        jlstm.lstm_layer(params, x, return_sequences=True), nnx.RNN(cell)(x), dy, err_msg="y"
    )
    with pytest.raises(ValueError, match="gelu"):
        from_flax_cell(nnx.OptimizedLSTMCell(D, H, activation_fn=jax.nn.gelu, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="GRUCell"):
        from_flax_cell(nnx.GRUCell(D, H, rngs=nnx.Rngs(0)))


def test_lstm_model_trains_in_an_nnx_loop(rng):
    """A whole jlstm model in an nnx.Optimizer loop: gradients equal jax.grad of
    jlstm.apply, and the loss goes down."""
    import optax

    from jlstm.interop.flax import LSTMModel

    config = jlstm.ModelConfig(input_size=2, layer_sizes=(8, 4), bidirectional=(True, False))
    model = LSTMModel(config, rngs=nnx.Rngs(0))
    x = jnp.asarray(rng.normal(size=(16, 5, 2)), jnp.float32)
    y = jnp.sum(x, axis=(1, 2))[:, None] / 5

    def loss_fn(m):
        return jnp.mean((m(x) - y) ** 2)

    def jlstm_loss(p):
        return jnp.mean((jlstm.apply(p, x, config) - y) ** 2)

    grads = nnx.grad(loss_fn)(model)
    want = jax.grad(jlstm_loss)(model.params)
    got = jax.tree.leaves(grads)  # the weights' gradients, in ModelParams leaf order
    for a, b in zip(got, jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)

    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]
    assert isinstance(model.params, jlstm.ModelParams)
