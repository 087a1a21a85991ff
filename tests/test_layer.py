"""lstm_layer: scan vs loop, jit vs eager, vmap, gradients, causality, Keras time-axis options."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jlstm

from . import reference as ref

B, T, D, H = 3, 6, 4, 5


@pytest.fixture
def problem(rng):
    key = jax.random.key(1)
    params = jlstm.init_cell_params(key, D, H, bias_initializer="random_normal")
    # A visibly non-zero bias everywhere (not only the forget block).
    params = params._replace(
        bias=params.bias + 0.3 * jnp.asarray(rng.normal(size=4 * H), jnp.float32)
    )
    x = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    return params, x


def _ref(params, x, **kw):
    return ref.lstm_layer(params.kernel, params.recurrent_kernel, params.bias, x, **kw)


@pytest.mark.parametrize("impl", [1, 2])
def test_matches_reference_and_python_loop(problem, impl):
    params, x = problem
    out, state = jlstm.lstm_layer(
        params, x, return_sequences=True, return_state=True, implementation=impl
    )
    want, want_h, want_c = _ref(params, x)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.c, want_c, rtol=1e-5, atol=1e-6)

    loop_state = jlstm.zero_state((B,), H)
    loop_out = []
    for t in range(T):
        loop_state, h = jlstm.cell_step(params, loop_state, x[:, t], implementation=impl)
        loop_out.append(h)
    np.testing.assert_allclose(out, jnp.stack(loop_out, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state.c, loop_state.c, rtol=1e-6, atol=1e-7)


def test_return_conventions(problem):
    params, x = problem
    last = jlstm.lstm_layer(params, x)
    seq = jlstm.lstm_layer(params, x, return_sequences=True)
    last2, state = jlstm.lstm_layer(params, x, return_state=True)
    assert last.shape == (B, H) and seq.shape == (B, T, H)
    assert isinstance(state, jlstm.LSTMState)
    np.testing.assert_array_equal(last, seq[:, -1])
    np.testing.assert_array_equal(last2, state.h)


def test_jit_equals_eager(problem):
    params, x = problem
    fn = functools.partial(jlstm.lstm_layer, return_sequences=True, return_state=True)
    eager = fn(params, x)
    jitted = jax.jit(fn)(params, x)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_vmap_over_sequences_equals_batched(problem):
    params, x = problem
    batched = jlstm.lstm_layer(params, x, return_sequences=True)
    per_seq = jax.vmap(lambda s: jlstm.lstm_layer(params, s, return_sequences=True))(x)
    np.testing.assert_allclose(per_seq, batched, rtol=1e-6, atol=1e-7)
    single = jlstm.lstm_layer(params, x[1], return_sequences=True)  # unbatched (T, D)
    np.testing.assert_allclose(single, batched[1], rtol=1e-6, atol=1e-7)


def test_initial_state(problem, rng):
    params, x = problem
    h0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    c0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    out = jlstm.lstm_layer(params, x, initial_state=jlstm.LSTMState(h0, c0), return_sequences=True)
    want, _, _ = _ref(params, x, h0=h0, c0=c0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_go_backwards_keras_semantics(problem):
    params, x = problem
    out, state = jlstm.lstm_layer(
        params, x, go_backwards=True, return_sequences=True, return_state=True
    )
    # Keras: process reversed input and return the sequence in processing order.
    forward_on_reversed, fstate = jlstm.lstm_layer(
        params, x[:, ::-1], return_sequences=True, return_state=True
    )
    np.testing.assert_allclose(out, forward_on_reversed, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state.c, fstate.c, rtol=1e-6, atol=1e-7)
    want, _, _ = _ref(params, x, go_backwards=True)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("zero_output", [False, True])
def test_mask_any_pattern(problem, zero_output):
    params, x = problem
    mask = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 0, 1]], bool)
    out, state = jlstm.lstm_layer(
        params,
        x,
        mask=jnp.asarray(mask),
        return_sequences=True,
        return_state=True,
        zero_output_for_mask=zero_output,
    )
    want, want_h, want_c = _ref(params, x, mask=mask, zero_output_for_mask=zero_output)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.h, want_h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.c, want_c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("unroll", [True, 2, 4])
def test_unroll_is_the_same_function(problem, unroll):
    params, x = problem
    rolled = jlstm.lstm_layer(params, x, return_sequences=True)
    unrolled = jlstm.lstm_layer(params, x, return_sequences=True, unroll=unroll)
    np.testing.assert_allclose(unrolled, rolled, rtol=1e-6, atol=1e-7)


def _loss(impl):
    def loss(params, x):
        out = jlstm.lstm_layer(params, x, return_sequences=True, implementation=impl)
        return jnp.sum(out**2) + jnp.sum(jnp.sin(out[:, -1]))

    return loss


def test_implementations_agree_in_values_and_gradients(problem):
    params, x = problem
    v1, g1 = jax.value_and_grad(_loss(1), argnums=(0, 1))(params, x)
    v2, g2 = jax.value_and_grad(_loss(2), argnums=(0, 1))(params, x)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# Second order for the default implementation; first order for implementation 1, whose
# gradients are also pinned to implementation 2's above (nested AD of a scan compiles slowly).
@pytest.mark.parametrize(("impl", "order"), [(1, 1), (2, 2)])
def test_check_grads_float64(impl, order, rng):
    with jax.enable_x64(True):
        params = jlstm.init_cell_params(
            jax.random.key(2), 2, 3, dtype=jnp.float64, bias_initializer="random_normal"
        )
        x = jnp.asarray(rng.normal(size=(2, 4, 2)), jnp.float64)
        check_grads(
            jax.jit(_loss(impl)),
            (params, x),
            order=order,
            modes=("fwd", "rev"),
            atol=1e-6,
            rtol=1e-6,
        )


def test_causality(problem):
    """d output_t / d x_s == 0 exactly for s > t."""
    params, x = problem

    def outputs(x1):  # one sequence, (T, D) -> (T, H)
        return jlstm.lstm_layer(params, x1, return_sequences=True)

    jac = jax.jacrev(outputs)(x[0])  # (T, H, T, D)
    jac = np.asarray(jac)
    for t in range(T):
        assert np.all(jac[t, :, t + 1 :, :] == 0.0), f"output {t} depends on later inputs"
        assert np.any(jac[t, :, t, :] != 0.0)


def test_errors(problem):
    params, x = problem
    with pytest.raises(ValueError, match="features but the kernel expects"):
        jlstm.lstm_layer(params, x[..., :2])
    with pytest.raises(ValueError, match="mask must have shape"):
        jlstm.lstm_layer(params, x, mask=jnp.ones((B, T + 1), bool))
    with pytest.raises(ValueError, match="initial_state parts"):
        jlstm.lstm_layer(params, x, initial_state=jlstm.zero_state((B + 1,), H))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        jlstm.lstm_layer(params, x, dropout=0.5, training=True)
    with pytest.raises(ValueError, match="unknown implementation"):
        jlstm.lstm_layer(params, x, implementation="nope")
