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


def _bound(params, x, **kw):
    """``(outputs, h, c)`` bounds of a float32 run against the float64 reference; two
    float32 runs of the same layer are within twice that of each other."""
    return ref.lstm_layer_bound(params.kernel, params.recurrent_kernel, params.bias, x, **kw)


@pytest.mark.parametrize("impl", [1, 2])
def test_matches_reference_and_python_loop(problem, impl):
    params, x = problem
    out, state = jlstm.lstm_layer(
        params, x, return_sequences=True, return_state=True, implementation=impl
    )
    want, want_h, want_c = _ref(params, x)
    # float32 vs the float64 reference: the derived bound of each output.
    b_out, b_h, b_c = _bound(params, x)
    ref.assert_within(out, want, b_out, err_msg="outputs")
    ref.assert_within(state.h, want_h, b_h, err_msg="h")
    ref.assert_within(state.c, want_c, b_c, err_msg="c")

    loop_state = jlstm.zero_state((B,), H)
    loop_out = []
    for t in range(T):
        loop_state, h = jlstm.cell_step(params, loop_state, x[:, t], implementation=impl)
        loop_out.append(h)
    # Two float32 runs (scan and loop), each within the bound of float64: twice it.
    ref.assert_within(out, jnp.stack(loop_out, 1), 2 * b_out, err_msg="scan vs loop")
    ref.assert_within(state.c, loop_state.c, 2 * b_c, err_msg="scan vs loop, c")


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
    # Two float32 runs (fused differently), each within the float64 bound: twice it.
    b_out, b_h, b_c = _bound(params, x)
    leaves = zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), (b_out, b_h, b_c), strict=True)
    for a, b, bound in leaves:
        ref.assert_within(a, b, 2 * bound, err_msg="jit vs eager")


def test_vmap_over_sequences_equals_batched(problem):
    params, x = problem
    batched = jlstm.lstm_layer(params, x, return_sequences=True)
    per_seq = jax.vmap(lambda s: jlstm.lstm_layer(params, s, return_sequences=True))(x)
    # Two float32 runs of the same rows, each within the float64 bound: twice it.
    b_out, _, _ = _bound(params, x)
    ref.assert_within(per_seq, batched, 2 * b_out, err_msg="vmap vs batched")
    single = jlstm.lstm_layer(params, x[1], return_sequences=True)  # unbatched (T, D)
    ref.assert_within(single, batched[1], 2 * b_out[1], err_msg="unbatched vs batched")


def test_initial_state(problem, rng):
    params, x = problem
    h0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    c0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    out = jlstm.lstm_layer(params, x, initial_state=jlstm.LSTMState(h0, c0), return_sequences=True)
    want, _, _ = _ref(params, x, h0=h0, c0=c0)
    b_out, _, _ = _bound(params, x, h0=h0, c0=c0)  # float32 vs float64: the derived bound
    ref.assert_within(out, want, b_out, err_msg="with an initial state")


def test_go_backwards_keras_semantics(problem):
    params, x = problem
    out, state = jlstm.lstm_layer(
        params, x, go_backwards=True, return_sequences=True, return_state=True
    )
    # Keras: process reversed input and return the sequence in processing order.
    forward_on_reversed, fstate = jlstm.lstm_layer(
        params, x[:, ::-1], return_sequences=True, return_state=True
    )
    # Bounds in processing order; two float32 runs of one recurrence: twice the bound.
    b_out, _, b_c = _bound(params, x, go_backwards=True)
    ref.assert_within(out, forward_on_reversed, 2 * b_out, err_msg="go_backwards")
    ref.assert_within(state.c, fstate.c, 2 * b_c, err_msg="go_backwards, c")
    want, _, _ = _ref(params, x, go_backwards=True)
    ref.assert_within(out, want, b_out, err_msg="go_backwards vs float64")


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
    # float32 vs float64; a masked step copies its state exactly, so it adds nothing.
    b_out, b_h, b_c = _bound(params, x, mask=mask, zero_output_for_mask=zero_output)
    ref.assert_within(out, want, b_out, err_msg="masked outputs")
    ref.assert_within(state.h, want_h, b_h, err_msg="masked h")
    ref.assert_within(state.c, want_c, b_c, err_msg="masked c")


@pytest.mark.parametrize("unroll", [True, 2, 4])
def test_unroll_is_the_same_function(problem, unroll):
    params, x = problem
    rolled = jlstm.lstm_layer(params, x, return_sequences=True)
    unrolled = jlstm.lstm_layer(params, x, return_sequences=True, unroll=unroll)
    # Two float32 runs of one recurrence, each within the float64 bound: twice it.
    b_out, _, _ = _bound(params, x)
    ref.assert_within(unrolled, rolled, 2 * b_out, err_msg=f"unroll={unroll}")


def _loss(impl):
    def loss(params, x):
        out = jlstm.lstm_layer(params, x, return_sequences=True, implementation=impl)
        return jnp.sum(out**2) + jnp.sum(jnp.sin(out[:, -1]))

    return loss


def test_implementations_agree_in_values_and_gradients(problem):
    params, x = problem
    v1, g1 = jax.value_and_grad(_loss(1), argnums=(0, 1))(params, x)
    v2, g2 = jax.value_and_grad(_loss(2), argnums=(0, 1))(params, x)
    # loss = sum(out^2) + sum(sin(out_last)): moving each output by at most 2 b (two
    # float32 runs) moves it by sum((2|out| + 2 b) 2 b) + sum(2 b at the last step), plus
    # the float32 rounding of the loss itself, a sum of B*T*H + B*H terms (2 gamma_n).
    out = np.asarray(jlstm.lstm_layer(params, x, return_sequences=True), np.float64)
    b_out, _, _ = _bound(params, x)
    n = out.size + out[:, -1].size
    tol = np.sum((2 * np.abs(out) + 2 * b_out) * 2 * b_out) + np.sum(2 * b_out[:, -1])
    tol += ref.sum_rtol(n) * (np.sum(out**2) + np.sum(np.abs(np.sin(out[:, -1]))))
    np.testing.assert_allclose(v1, v2, rtol=0, atol=tol)
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
