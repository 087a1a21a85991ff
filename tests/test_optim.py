"""jlstm.optim: Keras 3's Adam, RMSprop and SGD step for step, and against a real Keras fit."""

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest

import jlstm
from jlstm.interop.keras import to_keras
from jlstm.optim import OPTIMIZERS, keras_adam, keras_rmsprop, keras_sgd

from .conftest import count_traces

KERAS = {
    "keras_adam": (keras.optimizers.Adam, {}),
    "keras_rmsprop": (keras.optimizers.RMSprop, {}),
    "keras_rmsprop_momentum": (keras.optimizers.RMSprop, {"momentum": 0.9, "centered": True}),
    "keras_sgd": (keras.optimizers.SGD, {"momentum": 0.9}),
    "keras_sgd_nesterov": (keras.optimizers.SGD, {"momentum": 0.9, "nesterov": True}),
}
OURS = {
    "keras_adam": lambda lr: keras_adam(lr),
    "keras_rmsprop": lambda lr: keras_rmsprop(lr),
    "keras_rmsprop_momentum": lambda lr: keras_rmsprop(lr, momentum=0.9, centered=True),
    "keras_sgd": lambda lr: keras_sgd(lr, momentum=0.9),
    "keras_sgd_nesterov": lambda lr: keras_sgd(lr, momentum=0.9, nesterov=True),
}


def test_registry():
    assert set(OPTIMIZERS) == {"keras_adam", "keras_rmsprop", "keras_sgd"}


@pytest.mark.parametrize("name", sorted(KERAS))
def test_steps_match_keras_optimizer(name):
    """Ten steps on one variable with fixed gradients: Keras' apply vs ours, float32."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(3, 4)).astype(np.float32)
    grads = rng.normal(size=(10, 3, 4)).astype(np.float32)
    lr = 0.05
    keras_cls, kwargs = KERAS[name]
    opt = keras_cls(learning_rate=lr, **kwargs)
    var = keras.Variable(w0)
    opt.build([var])
    ours = OURS[name](lr)
    params = {"w": jnp.asarray(w0)}
    state = ours.init(params)
    update = jax.jit(ours.update)
    for g in grads:
        opt.apply([jnp.asarray(g)], [var])
        updates, state = update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
    # Keras' 1 - beta_2**t cancels (~6e-5 relative at t = 1 in float32), so one ulp of
    # pow moves the step by that much: the bar is relative to the total change.
    want = np.asarray(var.value)
    change = np.max(np.abs(want - w0))
    assert np.max(np.abs(np.asarray(params["w"]) - want)) <= 2e-5 * change


def test_schedule_learning_rate_and_jit_does_not_recompile():
    opt = keras_adam(optax.linear_schedule(1e-2, 1e-3, 5))
    params = (jnp.ones(3), None)
    state = opt.init(params)
    update = jax.jit(opt.update)
    with count_traces() as traces:
        for _ in range(3):
            _, state = update((jnp.ones(3), None), state, params)
    assert traces("update") == 1
    assert int(state.count) == 3


def _windows(n=40, steps=5):
    t = np.arange(n + steps + 1, dtype=np.float32)
    series = np.sin(t / 3.0) + 0.1 * np.cos(t)
    x = np.stack([series[i : i + steps] for i in range(n)])[..., None]
    y = series[steps : steps + n][:, None]
    return x.astype(np.float32), y.astype(np.float32)


def _jlstm_fit(params, cfg, opt, x, y, *, epochs, batch_size):
    """What Keras' fit(shuffle=False) does: batches in order, the last one partial."""

    def loss(p, xb, yb):
        return jnp.mean(jnp.square(jlstm.apply(p, xb, cfg) - yb))

    @jax.jit
    def step(p, s, xb, yb):
        grads = jax.grad(loss)(p, xb, yb)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s

    state = opt.init(params)
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            sl = slice(start, start + batch_size)
            params, state = step(params, state, x[sl], y[sl])
    return params


@pytest.mark.parametrize("name", ["keras_adam", "keras_rmsprop"])
def test_training_matches_keras_fit(name):
    """Three epochs of Keras fit (shuffle=False) vs a jlstm loop with the same optimizer:
    the weights agree to ~1e-6 of their change; optax's own optimizer is far off."""
    cfg = jlstm.ModelConfig(input_size=1, layer_sizes=(8, 4))
    params0 = jlstm.init_params(jax.random.key(0), cfg)
    x, y = _windows()
    lr, epochs, batch = 1e-2, 3, 16  # 40 windows: batches of 16, 16, 8
    keras_cls, kwargs = KERAS[name]
    model = to_keras(cfg, params0)
    model.compile(optimizer=keras_cls(learning_rate=lr, **kwargs), loss="mse")
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0)
    want = [np.asarray(w) for w in model.get_weights()]

    def flat(p):
        return [np.asarray(a) for a in jax.tree.leaves(p)]

    start = flat(params0)
    change = np.sqrt(sum(np.sum((w - s) ** 2) for w, s in zip(want, start, strict=True)))

    def distance(p):
        return np.sqrt(sum(np.sum((w - a) ** 2) for w, a in zip(want, flat(p), strict=True)))

    ours = _jlstm_fit(params0, cfg, OURS[name](lr), x, y, epochs=epochs, batch_size=batch)
    assert distance(ours) < 1e-5 * change  # float32 rounding over 9 steps
    plain = optax.adam(lr) if name == "keras_adam" else optax.rmsprop(lr)
    optax_run = _jlstm_fit(params0, cfg, plain, x, y, epochs=epochs, batch_size=batch)
    assert distance(optax_run) > 100 * distance(ours)


def test_fit_matches_keras_fit_without_shuffle():
    """``jlstm.train.fit(optimizer="keras_adam", shuffle=False)`` from the same weights is
    three epochs of Keras ``fit(shuffle=False)``: batches in order, the last one partial."""
    from jlstm.train import TrainConfig, fit, init_fit_state, make_optimizer

    cfg = jlstm.ModelConfig(input_size=1, layer_sizes=(8, 4))
    params0 = jlstm.init_params(jax.random.key(0), cfg)
    x, y = _windows()
    lr, epochs, batch = 1e-2, 3, 16  # 40 windows: batches of 16, 16, 8
    model = to_keras(cfg, params0)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="mse")
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0)
    want = [np.asarray(w) for w in model.get_weights()]

    train_cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch,
        learning_rate=lr,
        optimizer="keras_adam",
        shuffle=False,
        patience=None,
        restore_best=False,
    )
    opt = make_optimizer(train_cfg, steps_per_epoch=3)
    state = init_fit_state(cfg, opt, 0)
    state = state._replace(
        train=state.train._replace(params=params0, opt_state=opt.init(params0)),
        best_params=params0,
    )
    got = [
        np.asarray(a)
        for a in jax.tree.leaves(fit(cfg, (x, y), None, train_cfg, state=state).params)
    ]
    start = [np.asarray(a) for a in jax.tree.leaves(params0)]
    change = np.sqrt(sum(np.sum((w - s) ** 2) for w, s in zip(want, start, strict=True)))
    distance = np.sqrt(sum(np.sum((w - a) ** 2) for w, a in zip(want, got, strict=True)))
    # The bar of test_training_matches_keras_fit (float32 rounding over 9 steps); fit's
    # zero-weight padding of the last batch adds no rounding to its mean (weights 0 or 1).
    assert distance < 1e-5 * change
    shuffled = fit(cfg, (x, y), None, dataclasses.replace(train_cfg, shuffle=True), state=state)
    off = np.sqrt(
        sum(
            np.sum((w - np.asarray(a)) ** 2)
            for w, a in zip(want, jax.tree.leaves(shuffled.params), strict=True)
        )
    )
    assert off > 100 * distance  # the order matters: shuffle=True is another run


def test_keras_optimizer_state_checkpoints_and_resumes_bit_for_bit(tmp_path):
    from jlstm.checkpoint import load_checkpoint, save_checkpoint
    from jlstm.train import TrainConfig, fit

    cfg = jlstm.ModelConfig(input_size=1, layer_sizes=(4,))
    x, y = _windows(20, 3)
    train_cfg = TrainConfig(epochs=4, optimizer="keras_rmsprop", shuffle=False, patience=None)
    saved = []
    whole = fit(cfg, (x, y), None, train_cfg, on_epoch_end=saved.append)
    save_checkpoint(tmp_path / "ckpt", cfg, train_cfg, saved[1])
    ckpt = load_checkpoint(tmp_path / "ckpt")
    assert ckpt.train_config == train_cfg
    resumed = fit(cfg, (x, y), None, ckpt.train_config, state=ckpt.state)
    for a, b in zip(jax.tree.leaves(resumed.train), jax.tree.leaves(whole.train), strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
