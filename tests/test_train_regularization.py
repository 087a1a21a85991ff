"""The train step applies the config's Keras regularizers (in the loss) and constraints (after)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jlstm
from jlstm import constraints, penalties, regularizers
from jlstm.train import TrainState, make_train_step

from . import reference as ref


def _data():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 5, 2)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(6, 1)), jnp.float32)
    return x, y, jnp.ones((6,), jnp.float32)


def _state(config, opt):
    params = jlstm.init_params(jax.random.key(0), config)
    return TrainState(params, opt.init(params), jnp.zeros((), jnp.int32), jax.random.key(1))


def test_step_loss_includes_weight_and_activity_penalties():
    config = jlstm.ModelConfig(
        input_size=2,
        layer_sizes=(4, 3),
        kernel_regularizer=regularizers.L2(0.1),
        activity_regularizer=(None, regularizers.L1(0.05)),
        head_kernel_regularizer=regularizers.L1L2(0.01, 0.02),
    )
    opt = optax.sgd(0.0)  # a zero step: the reported loss is the loss at the initial weights
    state = _state(config, opt)
    x, y, w = _data()
    _, loss = make_train_step(config, opt)(state, x, y, w)
    pred, penalty = penalties.regularized_apply(state.params, x, config)
    want = jnp.mean((pred - y) ** 2) + penalty
    assert float(penalty) > 0.0
    # Same forward pass; the loss and the penalty are sums of n nonnegative terms (squared
    # errors, |w|, w^2, |activity|) that the jitted step may group differently: 2 gamma_n.
    n = sum(a.size for a in jax.tree.leaves(state.params)) + x.shape[0] * x.shape[1] * 7
    np.testing.assert_allclose(loss, want, rtol=ref.sum_rtol(n))
    plain = jlstm.ModelConfig(input_size=2, layer_sizes=(4, 3))
    _, plain_loss = make_train_step(plain, opt)(state, x, y, w)
    # A difference of two such sums: the error is relative to the sums, not to the penalty.
    atol = ref.sum_rtol(n) * (abs(float(loss)) + abs(float(plain_loss)))
    np.testing.assert_allclose(loss - plain_loss, penalty, rtol=ref.sum_rtol(n), atol=atol)


def test_step_applies_constraints_after_the_update():
    config = jlstm.ModelConfig(
        input_size=2,
        layer_sizes=(4, 3),
        kernel_constraint=constraints.MaxNorm(0.5),
        head_kernel_constraint=constraints.NonNeg(),
    )
    opt = optax.sgd(0.5)
    state = _state(config, opt)
    x, y, w = _data()
    new, _ = make_train_step(config, opt)(state, x, y, w)
    for layer in new.params.layers:
        # Keras max_norm on a kernel bounds the norm of each column (axis 0).
        # The projected column norm, recomputed: norms over <= 4 entries, the clip's division
        # and product: <= 8 roundings in the projection and again in the check, 2 gamma_8.
        assert float(jnp.max(jnp.linalg.norm(layer.kernel, axis=0))) <= 0.5 * (1 + ref.sum_rtol(8))
    assert float(jnp.min(new.params.head.kernel)) >= 0.0
    # Without the constraints the same step leaves a kernel column longer than 0.5.
    plain = jlstm.ModelConfig(input_size=2, layer_sizes=(4, 3))
    free, _ = make_train_step(plain, opt)(state, x, y, w)
    assert max(float(jnp.max(jnp.linalg.norm(p.kernel, axis=0))) for p in free.params.layers) > 0.5
