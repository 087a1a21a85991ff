"""jlstm.ensemble: N members in one vmapped step equal N separate runs.

Tolerance, derived: ``vmap`` turns each member's matrix products into one batched
product, which may sum in another order: a relative change of ~``k * 2**-24`` in the
float32 gradients (``k`` the contraction length, here <= 8 * 4 * 8 rows and units),
~1e-5 at most. Adam's update ``lr * m_hat / (sqrt(v_hat) + eps)`` is invariant to the
scale of the gradient, so each step's update moves by about ``lr`` times that relative
change (up to ``2 lr`` for an element whose gradient is at its rounding noise and
flips sign). After ``K`` steps the parameters agree to ``K * lr * 1e-3``, which a
member trained on another member's batches or dropout masks misses by orders of
magnitude (checked below).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

import jlstm
from jlstm import ensemble, parallel
from jlstm.train import (
    TrainConfig,
    epoch_order,
    fit,
    init_fit_state,
    make_optimizer,
    make_train_step,
    shuffle_key,
)

LR = 1e-2
SEEDS = (3, 4, 5)
EPOCHS = 2


def _data(n=20):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6, 2)).astype(np.float32)
    y = rng.normal(size=(n, 1)).astype(np.float32)
    return x, y


def _config():
    return jlstm.ModelConfig(input_size=2, layer_sizes=(8, 4), output_size=1, dropout=0.2)


def _train_ensemble(config, x, y, batch_size, seeds, *, mesh=None):
    cfg = TrainConfig(batch_size=batch_size, learning_rate=LR, epochs=EPOCHS)
    steps_per_epoch = -(-len(x) // batch_size)
    optimizer = make_optimizer(cfg, steps_per_epoch)
    step = ensemble.ensemble_step(make_train_step(config, optimizer), mesh=mesh)
    states = ensemble.init_ensemble(config, optimizer, seeds)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    losses = []
    for epoch in range(EPOCHS):
        for idx, w in ensemble.member_batches(len(x), batch_size, seeds, epoch):
            states, loss = step(states, x_dev, y_dev, idx, w)
            losses.append(loss)
    return states, np.stack(losses), EPOCHS * steps_per_epoch


def _max_diff(a, b) -> float:
    return max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def trained():
    """Three members trained together for two epochs of 20 rows in batches of 8."""
    config, (x, y) = _config(), _data()
    return (config, x, y, *_train_ensemble(config, x, y, 8, SEEDS))


def test_ensemble_members_equal_separate_runs(trained):
    """Three members (own init, batch order, dropout) = three single-member step loops."""
    config, x, y, states, losses, steps = trained
    assert losses.shape == (steps, len(SEEDS))
    optimizer = make_optimizer(TrainConfig(batch_size=8, learning_rate=LR), 3)
    step = make_train_step(config, optimizer)
    tol = steps * LR * 1e-3
    singles = []
    for i, seed in enumerate(SEEDS):
        state = init_fit_state(config, optimizer, seed).train
        single_losses = []
        for epoch in range(EPOCHS):
            order = np.asarray(epoch_order(shuffle_key(seed), epoch, len(x)))
            for start in range(0, len(x), 8):
                idx = order[start : start + 8]
                w = np.zeros(8, np.float32)
                w[: len(idx)] = 1.0
                idx = np.concatenate([idx, np.full(8 - len(idx), idx[0])])
                state, loss = step(state, x[idx], y[idx], w)
                single_losses.append(float(loss))
        singles.append(state)
        np.testing.assert_allclose(losses[:, i], single_losses, rtol=1e-4)
        assert _max_diff(ensemble.member(states.params, i), state.params) <= tol
        assert int(states.step[i]) == steps
    # The check can fail: members differ from each other far beyond the tolerance.
    assert _max_diff(singles[0].params, singles[1].params) > 100 * tol


def test_member_i_is_fit_with_seed_i(trained):
    """The contract ``fit(..., ensemble=N)`` builds on: member i = ``fit`` with seeds[i]."""
    config, x, y, states, _, steps = trained
    for i, seed in enumerate(SEEDS):
        cfg = TrainConfig(batch_size=8, learning_rate=LR, epochs=EPOCHS, seed=seed, patience=None)
        result = fit(config, (x, y), None, cfg, progress=False)
        assert _max_diff(ensemble.member(states.params, i), result.train.params) <= (
            steps * LR * 1e-3
        )


def test_ensemble_step_compiles_once_and_members_split_over_a_mesh():
    config, (x, y) = _config(), _data(12)
    mesh = parallel.data_mesh()  # every device here (one by default): members split on it
    optimizer = optax.adam(LR)
    inner, traces = make_train_step(config, optimizer), []

    def counted(*args):
        traces.append(1)
        return inner(*args)

    step = ensemble.ensemble_step(counted, mesh=mesh)
    seeds = ensemble.member_seeds(0, jax.device_count())
    states = ensemble.init_ensemble(config, optimizer, seeds)
    for idx, w in ensemble.member_batches(len(x), 5, seeds, 0):
        states, losses = step(states, jnp.asarray(x), jnp.asarray(y), idx, w)
    assert len(traces) == 1  # three batches (the last padded), one trace
    assert losses.shape == (len(seeds),) and states.params.head.kernel.shape[0] == len(seeds)
    assert states.params.head.kernel.sharding.spec == PartitionSpec("data")


SPLIT_WORKER = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax, jlstm
    from jlstm import ensemble, parallel
    from jlstm.train import make_train_step
    assert jax.device_count() == 2
    config = jlstm.ModelConfig(input_size=2, layer_sizes=(8,), output_size=1, dropout=0.2)
    optimizer = optax.adam(1e-2)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(12, 5, 2)).astype(np.float32))
    y = jnp.asarray(rng.normal(size=(12, 1)).astype(np.float32))
    seeds = (0, 1, 2, 3)
    out = []
    for mesh in (None, parallel.data_mesh()):
        step = ensemble.ensemble_step(make_train_step(config, optimizer), mesh=mesh)
        states = ensemble.init_ensemble(config, optimizer, seeds)
        for idx, w in ensemble.member_batches(12, 5, seeds, 0):
            states, losses = step(states, x, y, idx, w)
        out.append(states)
    leaf = out[1].params.head.kernel
    assert len(leaf.sharding.device_set) == 2 and not leaf.sharding.is_fully_replicated
    for a, b in zip(jax.tree.leaves(out[0].params), jax.tree.leaves(out[1].params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=3 * 1e-2 * 1e-3)
    print("ok")
    """
)


def test_members_split_over_two_devices_equal_one_device():
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }
    env.pop("JAX_NUM_CPU_DEVICES", None)
    out = subprocess.run(
        [sys.executable, "-c", SPLIT_WORKER],
        capture_output=True,
        text=True,
        env=env,
        timeout=150,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_member_batches_cover_every_row_once_per_epoch():
    seeds = (0, 1, 2)
    batches = list(ensemble.member_batches(10, 4, seeds, epoch=0))
    assert len(batches) == 3
    for i, seed in enumerate(seeds):
        rows = np.concatenate([idx[i][w[i] > 0] for idx, w in batches])
        np.testing.assert_array_equal(rows, np.asarray(epoch_order(shuffle_key(seed), 0, 10)))
    assert all(idx.shape == (3, 4) and idx.dtype == np.int32 for idx, _ in batches)


def test_ensemble_apply_and_mean_and_spread():
    config, (x, _) = _config(), _data(4)
    params = ensemble.init_ensemble(config, optax.adam(LR), (0, 1, 2, 3)).params
    preds = ensemble.ensemble_apply(params, x, config)
    assert preds.shape == (4, 4, 1)
    np.testing.assert_allclose(
        preds[2], jlstm.apply(ensemble.member(params, 2), x, config), rtol=1e-6
    )
    mean, spread = ensemble.mean_and_spread(preds)
    np.testing.assert_allclose(mean, np.mean(preds, axis=0), rtol=1e-6)
    np.testing.assert_allclose(spread, np.std(preds, axis=0, ddof=1), rtol=1e-5)
    _, population = ensemble.mean_and_spread(preds, ddof=0)
    np.testing.assert_allclose(population, np.std(preds, axis=0), rtol=1e-5)
    one_mean, one_spread = ensemble.mean_and_spread(preds[:1])
    np.testing.assert_array_equal(one_spread, 0.0)
    np.testing.assert_array_equal(one_mean, preds[0])


def test_where_members_and_seeds():
    new = {"a": jnp.ones((3, 2)), "b": jnp.ones(3)}
    old = {"a": jnp.zeros((3, 2)), "b": jnp.zeros(3)}
    out = ensemble.where_members(jnp.array([True, False, True]), new, old)
    np.testing.assert_array_equal(out["a"][:, 0], [1, 0, 1])
    np.testing.assert_array_equal(out["b"], [1, 0, 1])
    assert ensemble.member_seeds(7, 3) == (7, 8, 9)
    with pytest.raises(ValueError):
        ensemble.member_seeds(0, 0)
