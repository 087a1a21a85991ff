"""jlstm.train: one compile per run, hooks inside the step, determinism, early stopping."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jlstm
from jlstm.train import (
    EVAL_BUCKETS,
    FitState,
    TrainConfig,
    eval_buckets,
    fit,
    init_fit_state,
    learning_rate_schedule,
    make_eval_loss,
    make_optimizer,
    make_train_step,
)

from . import reference as ref

CONFIG = jlstm.ModelConfig(input_size=2, layer_sizes=(8,), output_size=1)
# The fit tests share one model (and, through fit's cache, one compiled step); it has
# dropout so that determinism covers the dropout keys.
DROPOUT = jlstm.ModelConfig(input_size=2, layer_sizes=(8,), output_size=1, dropout=0.2)


def _data(n, seed=0):
    """Windows of a sine at random phases: 4 steps of (sin, cos) predict the next sin."""
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, (n, 1)) + 0.3 * np.arange(4)
    x = np.stack([np.sin(phase), np.cos(phase)], -1).astype(np.float32)  # (n, 4, 2)
    y = np.sin(phase[:, -1:] + 0.3).astype(np.float32)  # (n, 1)
    return x, y


TRAIN = _data(40, 0)
VAL = _data(12, 1)
TINY = TrainConfig(epochs=6, batch_size=16, learning_rate=1e-2, patience=None)


def _fresh(state):
    return jax.tree.map(jnp.copy, state)


def test_one_program_for_every_step_and_padding_rows_change_nothing():
    traces = []

    def penalty(params):
        traces.append(1)  # runs only while tracing
        return 0.0

    optimizer = make_optimizer(TINY, 3)
    step = make_train_step(CONFIG, optimizer, penalty=penalty)
    start = init_fit_state(CONFIG, optimizer, 0).train
    x, y = TRAIN
    ones = np.ones(16, np.float32)
    state, _ = step(_fresh(start), (x[:16], y[:16], ones))
    state, _ = step(state, (x[16:32], y[16:32], ones))
    # A last batch of 8 windows padded to 16 with zero-weight junk rows...
    w = np.r_[np.ones(8), np.zeros(8)].astype(np.float32)
    padded, loss_padded = step(
        _fresh(start), (np.r_[x[:8], 100 * x[8:16]], np.r_[y[:8], -y[8:16]], w)
    )
    # ...is exactly the step with other junk in the padding: a zero-weight row adds exact
    # zeros to the loss and to every gradient sum (0 * finite), so no bit changes...
    other, loss_other = step(_fresh(start), (np.r_[x[:8], x[:8]], np.r_[y[:8], y[:8]], w))
    assert float(loss_other) == float(loss_padded) and _leaves_equal(other, padded)
    # ...and has the mean loss of the same 8 windows twice.
    _, loss_twice = step(_fresh(start), (np.r_[x[:8], x[:8]], np.r_[y[:8], y[:8]], ones))
    assert len(traces) == 1
    assert int(state.step) == 2 and int(padded.step) == 1
    # Both are float32 sums of 16 nonnegative per-window losses (zeros or repeats) in some
    # order, each within gamma_16 of the exact sum; dividing by 8 or 16 is exact: 2 gamma_16.
    assert float(loss_padded) == pytest.approx(float(loss_twice), rel=ref.sum_rtol(16))
    total, count = make_eval_loss(CONFIG)(start.params, (np.r_[x[:8], x[8:16]], y[:16], w))
    assert float(total / count) == pytest.approx(float(loss_twice), rel=ref.sum_rtol(16))


def test_the_step_donates_the_state_buffers():
    optimizer = make_optimizer(TINY, 3)
    step = make_train_step(CONFIG, optimizer, donate=True)
    state = _fresh(init_fit_state(CONFIG, optimizer, 0).train)
    x, y = TRAIN
    new, _ = step(state, (x[:16], y[:16], np.ones(16, np.float32)))
    assert state.params.head.kernel.is_deleted() and not new.params.head.kernel.is_deleted()


def test_evaluation_buckets_are_fixed_sizes():
    assert list(eval_buckets(0)) == []
    assert list(eval_buckets(5)) == [(0, 5, 8)]
    assert list(eval_buckets(1024)) == [(0, 1024, 1024)]
    assert list(eval_buckets(2500)) == [(0, 1024, 1024), (1024, 2048, 1024), (2048, 2500, 512)]
    sizes = {size for n in range(1, 3000, 7) for _, _, size in eval_buckets(n)}
    assert sizes <= set(EVAL_BUCKETS)


def test_fit_compiles_once_per_run_and_reads_the_losses_once_per_epoch():
    from jlstm import train as train_module

    fit(CONFIG, TRAIN, VAL, TINY)
    transfers = []
    real = jax.device_get

    def counting(tree):
        transfers.append(1)
        return real(tree)

    jax.device_get = counting
    try:
        fit(CONFIG, TRAIN, VAL, TINY)
    finally:
        jax.device_get = real
    assert len(transfers) == TINY.epochs
    cfg = dataclasses.replace(TINY, seed=0, patience=None, epochs=1)  # as fit normalises it
    programs = train_module._programs(CONFIG, cfg, 3, 16, None, None)
    assert programs[1]._cache_size() == 1


def test_float64_models_train_in_float64():
    with jax.enable_x64(True):
        config = jlstm.ModelConfig(
            input_size=2, layer_sizes=(4,), output_size=1, param_dtype="float64"
        )
        state = fit(config, TRAIN, VAL, TrainConfig(epochs=2, batch_size=16))
        assert state.params.head.kernel.dtype == jnp.float64
        assert isinstance(state.history[-1]["loss"], float)
        # The loss is computed in float64: it differs from a float32 run beyond float32 eps.
        assert state.train.opt_state[0].mu.head.kernel.dtype == jnp.float64


def test_penalty_is_added_and_project_is_applied_inside_the_step():
    optimizer = optax.sgd(0.5)
    state = init_fit_state(CONFIG, optimizer, 0).train
    x, y = TRAIN[0][:16], TRAIN[1][:16]
    w = np.ones(16, np.float32)

    def l2(params):
        return 1e-3 * sum(jnp.sum(a * a) for a in jax.tree.leaves(params))

    def clip(params):
        return jax.tree.map(lambda a: jnp.clip(a, -0.05, 0.05), params)

    plain = make_train_step(CONFIG, optimizer)
    hooked = make_train_step(CONFIG, optimizer, penalty=l2, project=clip)
    s_plain, loss_plain = plain(_fresh(state), (x, y, w))
    s_hooked, loss_hooked = hooked(_fresh(state), (x, y, w))

    @jax.jit
    def reference(params, after_plain):
        # The penalty's gradient joins the update, then the projection: sgd by hand.
        grad = jax.grad(l2)(params)
        return l2(params), clip(jax.tree.map(lambda p, g: p - 0.5 * g, after_plain, grad))

    penalty, want = reference(state.params, s_plain.params)
    # loss_plain: 16 nonnegative window losses; the penalty: one square per parameter; both
    # nonnegative, so each side is within gamma_n of the exact sum, n = all the terms + 1.
    n = 16 + sum(a.size for a in jax.tree.leaves(state.params)) + 1
    assert float(loss_hooked) == pytest.approx(
        float(loss_plain) + float(penalty), rel=ref.sum_rtol(n)
    )
    bound = np.float32(0.05)
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(s_hooked.params)) <= bound
    # p - 0.5 (g + g_pen) in one program against (p - 0.5 g) - 0.5 g_pen by hand: three
    # roundings on either side, each at most u of the largest operand, |p|, |0.5 g| or
    # |0.5 g_pen| (0.5 g = p - plain step, g_pen = 2e-3 p); SAFETY 2 as in reference.py.
    u = ref.unit_roundoff(np.float32)
    leaves = zip(
        jax.tree.leaves(s_hooked.params),
        jax.tree.leaves(want),
        jax.tree.leaves(state.params),
        jax.tree.leaves(s_plain.params),
        strict=True,
    )
    for got, expected, p, after in leaves:
        p, after = np.asarray(p, np.float64), np.asarray(after, np.float64)
        size = np.abs(p) + np.abs(p - after) + 1e-3 * np.abs(p)
        ref.assert_within(got, expected, 2 * 2 * 3 * u * size, err_msg="penalty + projection")


def _leaves_equal(a, b) -> bool:
    def raw(leaf):
        is_key = jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        return np.asarray(jax.random.key_data(leaf) if is_key else leaf)

    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(raw(u), raw(v)) for u, v in pairs)


def test_same_seed_same_result_with_dropout_and_shuffling():
    a = fit(DROPOUT, TRAIN, VAL, TINY)
    b = fit(DROPOUT, TRAIN, VAL, TINY)
    c = fit(DROPOUT, TRAIN, VAL, TrainConfig(**{**TINY.to_dict(), "seed": 1}))
    assert _leaves_equal(a.params, b.params) and _leaves_equal(a.train, b.train)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert not _leaves_equal(a.params, c.params)
    assert a.history[-1]["val_loss"] < a.history[0]["val_loss"]  # it learns


def test_continuing_from_a_saved_state_is_bit_identical():
    whole = fit(DROPOUT, TRAIN, VAL, TINY)
    saved = []
    fit(DROPOUT, TRAIN, VAL, TINY, on_epoch_end=saved.append)
    resumed = fit(DROPOUT, TRAIN, VAL, TINY, state=saved[2])
    assert resumed.epoch == 6
    assert _leaves_equal(resumed.train, whole.train)
    assert _leaves_equal(resumed.params, whole.params)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]


def test_the_batch_order_is_the_public_epoch_order():
    from jlstm.train import epoch_order, shuffle_key

    order = np.asarray(epoch_order(shuffle_key(3), 2, 40))
    assert sorted(order) == list(range(40))
    batched = jax.vmap(epoch_order, (0, None, None))(jax.vmap(shuffle_key)(jnp.arange(2, 4)), 2, 40)
    np.testing.assert_array_equal(batched[1], order)


def test_early_stopping_restores_the_best_weights():
    cfg = TrainConfig(epochs=40, batch_size=16, learning_rate=1e-2, patience=3)
    seen = []
    state = fit(DROPOUT, TRAIN, _data(12, 7), cfg, on_epoch_end=seen.append)
    val = [h["val_loss"] for h in state.history]
    best = int(np.argmin(val))
    assert state.best_epoch == best + 1 and state.best_loss == val[best]
    assert _leaves_equal(state.params, seen[best].train.params)
    # With this seed the validation loss stalls after epoch 13 (deterministic).
    assert state.stopped and state.epoch == state.best_epoch + cfg.patience < cfg.epochs
    last_only = fit(
        DROPOUT,
        TRAIN,
        _data(12, 7),
        TrainConfig(**{**cfg.to_dict(), "restore_best": False}),
    )
    assert _leaves_equal(last_only.params, last_only.train.params)


def test_optimizer_clipping_and_schedules():
    cfg = TrainConfig(optimizer="sgd", learning_rate=1.0, clip_norm=0.5)
    opt = make_optimizer(cfg, 10)
    grads = {"w": jnp.full((3,), 100.0)}
    updates, _ = opt.update(grads, opt.init(grads))
    # Two float32 norms of 3 squares (sqrt halves gamma_3, plus its own rounding), a
    # division and a product: within 2 (gamma_3 / 2 + u) + 2 u of exact.
    u = ref.unit_roundoff(np.float32)
    rel = ref.sum_rtol(3) / 2 + 4 * u
    assert float(optax.tree.norm(updates)) == pytest.approx(0.5, rel=rel)
    cosine = learning_rate_schedule(TrainConfig(epochs=10, schedule="cosine"), 5)
    assert float(cosine(0)) == pytest.approx(1e-3) and float(cosine(50)) == pytest.approx(0.0)
    warm = learning_rate_schedule(
        TrainConfig(epochs=10, schedule="warmup_cosine", warmup_epochs=2), 5
    )
    assert float(warm(0)) == 0.0 and float(warm(10)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=-1.0)
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(patience=0)


def test_fit_checks_shapes():
    with pytest.raises(ValueError, match=r"\(N, steps, 2\)"):
        fit(CONFIG, (np.zeros((4, 3, 5)), np.zeros((4, 1))), None, TINY)
    with pytest.raises(ValueError, match="1 values per window"):
        fit(CONFIG, (np.zeros((4, 3, 2)), np.zeros((4, 2))), None, TINY)


def test_progress_hook_is_called_every_epoch_and_off_by_default(capsys):
    seen = []
    fit(CONFIG, TRAIN, VAL, TINY, progress=seen.append)
    assert [s.epoch for s in seen] == list(range(1, TINY.epochs + 1))
    fit(CONFIG, TRAIN, VAL, TINY)
    assert capsys.readouterr().err == ""


def test_huge_and_wrong_numbers_are_refused():
    with pytest.raises(ValueError, match="seed must be <="):
        TrainConfig(seed=2**63)
    with pytest.raises(ValueError, match="epochs must be <="):
        TrainConfig(epochs=10**12)
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        TrainConfig(batch_size=1.5)


def test_fit_state_params_before_validation():
    state = init_fit_state(CONFIG, make_optimizer(TINY, 1), 0)
    assert isinstance(state, FitState) and state.best_epoch == 0 and math.isinf(state.best_loss)
    assert state.params is state.train.params
