"""cell_step against the float64 NumPy reference: both implementations, every activation pair."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm
from jlstm.activations import ACTIVATIONS as JLSTM_ACTIVATIONS

from . import reference as ref

NAMES = sorted(ref.ACTIVATIONS)
PAIRS = list(itertools.product(NAMES, NAMES))


def test_reference_covers_every_registered_activation():
    assert set(NAMES) == set(JLSTM_ACTIVATIONS)


def _problem(rng, batch=3, d=4, units=5, scale=0.4):
    """Values on float32's grid, so the reference sees exactly the inputs jlstm sees."""
    arrays = (
        rng.normal(0, scale, (d, 4 * units)),
        rng.normal(0, scale, (units, 4 * units)),
        rng.normal(0, scale, (4 * units,)),
        rng.normal(0, 0.7, (batch, units)),
        rng.normal(0, 0.7, (batch, units)),
        rng.normal(0, 0.7, (batch, d)),
    )
    return tuple(a.astype(np.float32).astype(np.float64) for a in arrays)


def _run(problem, dtype, act, ract, impl, use_bias=True):
    kernel, recurrent, bias, h, c, x = (jnp.asarray(a, dtype) for a in problem)
    params = jlstm.CellParams(kernel, recurrent, bias if use_bias else None)
    state, out = jlstm.cell_step(
        params,
        jlstm.LSTMState(h, c),
        x,
        activation=act,
        recurrent_activation=ract,
        implementation=impl,
    )
    assert out.dtype == dtype and state.c.dtype == dtype
    np.testing.assert_array_equal(out, state.h)
    return np.asarray(state.h, np.float64), np.asarray(state.c, np.float64)


@pytest.mark.parametrize("impl", [1, 2])
def test_every_activation_pair_float32(impl, rng):
    problem = _problem(rng)
    for act, ract in PAIRS:
        want_h, want_c, bound_h, bound_c = ref.cell_step_bound(*problem, act, ract)
        got_h, got_c = _run(problem, jnp.float32, act, ract, impl)
        # Bounds from the float analysis (tests/reference.py): exp(exp(z)) gets its condition
        # number |z exp(z)|, so it is allowed more than tanh/sigmoid, on any CPU.
        ref.assert_within(got_h, want_h, bound_h, err_msg=f"h {act}/{ract}")
        ref.assert_within(got_c, want_c, bound_c, err_msg=f"c {act}/{ract}")


@pytest.mark.parametrize("impl", [1, 2])
def test_every_activation_pair_float64(impl, rng):
    problem = _problem(rng)
    with jax.enable_x64(True):
        for act, ract in PAIRS:
            want_h, want_c, bound_h, bound_c = ref.cell_step_bound(
                *problem, act, ract, dtype=np.float64
            )
            got_h, got_c = _run(problem, jnp.float64, act, ract, impl)
            ref.assert_within(got_h, want_h, bound_h, err_msg=f"h {act}/{ract}")
            ref.assert_within(got_c, want_c, bound_c, err_msg=f"c {act}/{ract}")


@pytest.mark.parametrize("impl", [1, 2])
def test_without_bias(impl, rng):
    problem = _problem(rng)
    kernel, recurrent, _, h, c, x = problem
    want_h, want_c, bound_h, bound_c = ref.cell_step_bound(kernel, recurrent, None, h, c, x)
    got_h, got_c = _run(problem, jnp.float32, "tanh", "sigmoid", impl, use_bias=False)
    ref.assert_within(got_h, want_h, bound_h, err_msg="h")
    ref.assert_within(got_c, want_c, bound_c, err_msg="c")


def test_callable_activations_equal_named(rng):
    problem = _problem(rng)
    named = _run(problem, jnp.float32, "softsign", "hard_sigmoid", 2)
    fns = _run(
        problem,
        jnp.float32,
        lambda v: v / (1 + jnp.abs(v)),
        lambda v: jnp.clip(v / 6 + 0.5, 0, 1),
        2,
    )
    # Same formulas, possibly other roundings: each side is within the reference's bound.
    want_h, _, bound_h, _ = ref.cell_step_bound(*problem, "softsign", "hard_sigmoid")
    ref.assert_within(fns[0], want_h, bound_h, err_msg="callables")
    ref.assert_within(named[0], want_h, bound_h, err_msg="names")


def test_none_activation_is_linear(rng):
    problem = _problem(rng)
    want_h, _, bound_h, _ = ref.cell_step_bound(*problem, "linear", "linear")
    got = _run(problem, jnp.float32, None, None, 2)
    ref.assert_within(got[0], want_h, bound_h, err_msg="h")


def test_per_gate_masks_implementation_1(rng):
    problem = _problem(rng)
    kernel, recurrent, bias, h, c, x = problem
    xm = (rng.random((4, *x.shape)) > 0.3) / 0.7
    hm = (rng.random((4, *h.shape)) > 0.4) / 0.6
    want_h, want_c, bound_h, bound_c = ref.cell_step_bound(*problem, xm=xm, hm=hm)
    params = jlstm.CellParams(*(jnp.asarray(a, jnp.float32) for a in (kernel, recurrent, bias)))
    state, _ = jlstm.cell_step(
        params,
        jlstm.LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32)),
        jnp.asarray(x, jnp.float32),
        implementation=1,
        input_mask=jnp.asarray(xm, jnp.float32),
        recurrent_mask=jnp.asarray(hm, jnp.float32),
    )
    ref.assert_within(state.h, want_h, bound_h, err_msg="h")
    ref.assert_within(state.c, want_c, bound_c, err_msg="c")
    with pytest.raises(ValueError, match="one shared input_mask"):
        jlstm.cell_step(
            params,
            state,
            jnp.asarray(x, jnp.float32),
            implementation=2,
            input_mask=jnp.asarray(xm, jnp.float32),
        )


def test_unbatched_and_multi_batch_axes(rng):
    problem = _problem(rng, batch=6)
    kernel, recurrent, bias, h, c, x = problem
    params = jlstm.CellParams(*(jnp.asarray(a, jnp.float32) for a in (kernel, recurrent, bias)))
    batched, _ = jlstm.cell_step(
        params,
        jlstm.LSTMState(jnp.asarray(h, jnp.float32), jnp.asarray(c, jnp.float32)),
        jnp.asarray(x, jnp.float32),
    )
    grid, _ = jlstm.cell_step(
        params,
        jlstm.LSTMState(
            jnp.asarray(h.reshape(2, 3, -1), jnp.float32),
            jnp.asarray(c.reshape(2, 3, -1), jnp.float32),
        ),
        jnp.asarray(x.reshape(2, 3, -1), jnp.float32),
    )
    single, _ = jlstm.cell_step(
        params,
        jlstm.LSTMState(jnp.asarray(h[4], jnp.float32), jnp.asarray(c[4], jnp.float32)),
        jnp.asarray(x[4], jnp.float32),
    )
    # Two float32 runs of one step: each within the bound of the exact step, so within twice it.
    _, _, bound_h, _ = ref.cell_step_bound(*problem)
    ref.assert_within(grid.h.reshape(6, -1), batched.h, 2 * bound_h, err_msg="(2, 3) batch")
    ref.assert_within(single.h, batched.h[4], 2 * bound_h[4], err_msg="unbatched")


def test_bad_implementation():
    params = jlstm.init_cell_params(jax.random.key(0), 2, 3)
    with pytest.raises(ValueError, match="implementation must be 1 or 2"):
        jlstm.cell_step(params, jlstm.zero_state((1,), 3), jnp.ones((1, 2)), implementation=3)
