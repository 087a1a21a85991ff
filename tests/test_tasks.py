"""The paper tasks: generators follow the definitions, and jlstm meets the paper's criterion."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm
from jlstm.checkpoint import load_checkpoint
from jlstm.tasks import (
    TASKS,
    adding_batch,
    copy_batch,
    evaluate_task,
    get_task,
    run_task,
    task_config,
    temporal_order_batch,
)


@pytest.mark.parametrize("length", [30, 100])
def test_adding_batch_follows_the_paper(length):
    b = jax.jit(adding_batch, static_argnums=(1, 2))(jax.random.key(0), 512, length)
    x, y, lengths = (np.asarray(a) for a in b)
    assert x.shape == (512, length + length // 10, 2) and y.shape == (512, 1)
    assert lengths.min() >= length and lengths.max() <= length + length // 10
    values, marker = x[..., 0], x[..., 1]
    for i in range(512):
        n = lengths[i]
        assert marker[i, 0] == -1 and marker[i, n - 1] == -1
        assert np.all(x[i, n:] == 0)
        assert np.all(np.abs(values[i, :n]) <= 1)
        ones = np.flatnonzero(marker[i] == 1)
        # X1 among the first ten (one fewer 1 when the first pair was drawn); X2 among
        # the first T/2 - 1 unmarked pairs: positions 1..T/2 less X1's.
        assert len(ones) in (1, 2) and ones.max() <= length // 2
        if len(ones) == 2:
            assert ones[0] < 10
            expected = 0.5 + values[i, ones].sum() / 4
        else:  # the first pair was X1's: X1 := 0
            expected = 0.5 + values[i, ones[0]] / 4
        assert y[i, 0] == pytest.approx(expected, abs=1e-6)


def test_temporal_order_and_copy_batches():
    b = jax.jit(temporal_order_batch, static_argnums=(1, 2))(jax.random.key(1), 256, 100)
    sym, y, lengths = np.argmax(np.asarray(b.x), -1), np.asarray(b.y), np.asarray(b.lengths)
    for i in range(256):
        n = int(lengths[i])
        assert 100 <= n <= 110 and sym[i, 0] == 4 and sym[i, n - 1] == 5
        xy = np.flatnonzero(sym[i, :n] >= 6)
        assert len(xy) == 2 and 10 <= xy[0] <= 20 and 50 <= xy[1] <= 60
        cls = 2 * (sym[i, xy[0]] - 6) + (sym[i, xy[1]] - 6)
        assert np.argmax(y[i]) == cls
    c = jax.jit(copy_batch, static_argnums=(1, 2))(jax.random.key(2), 4, 15)
    inputs, targets = np.argmax(np.asarray(c.x), -1), np.asarray(c.y)
    assert inputs.shape == targets.shape == (4, 35)
    assert np.all(inputs[:, 10:24] == 0) and np.all(inputs[:, 24] == 9)
    assert np.all(targets[:, -10:] == inputs[:, :10]) and np.all(targets[:, :25] == 0)
    # The memoryless guess (a sure blank for T + 10 steps, then uniform over the
    # 8 symbols) scores exactly the baseline 10 ln 8 / (T + 20).
    blank = jnp.where(jnp.arange(10) == 0, 0.0, -1e9)
    uniform = jnp.where((jnp.arange(10) >= 1) & (jnp.arange(10) <= 8), 0.0, -1e9)
    guess = jnp.where(jnp.arange(35)[:, None] < 25, blank, uniform)
    loss = get_task("copy").loss(jnp.broadcast_to(guess, (4, 35, 10)), c)
    assert np.allclose(loss, 10 * math.log(8) / 35, rtol=1e-5)


def test_padding_keeps_the_last_real_output():
    config = task_config("adding", units=8)
    params = jlstm.init_params(jax.random.key(3), config)
    b = adding_batch(jax.random.key(4), 4, 30)
    padded = jlstm.apply(params, b.x, config, seq_lengths=b.lengths)
    for i in range(4):
        alone = jlstm.apply(params, b.x[i : i + 1, : int(b.lengths[i])], config)
        np.testing.assert_allclose(padded[i], alone[0], rtol=1e-5, atol=1e-6)


def test_adding_t30_meets_the_paper_criterion(tmp_path):
    report = run_task("adding", 30, tmp_path, seed=0, budget_seconds=45)
    assert report["test"]["n"] == 2560
    assert report["test"]["wrong"] <= 3, report
    assert report["success"]
    # A normal run directory: the checkpoint loads and predicts in the paper's units.
    ckpt = load_checkpoint(tmp_path / "checkpoint")
    assert ckpt.meta["task"] == "adding"
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == report["test"]
    again = evaluate_task("adding", ckpt.state.params, ckpt.model_config, 30, seed=0)
    assert again["wrong"] == report["test"]["wrong"]
    # One hand-made sequence of length 30: X1 = 0.5 at step 2, X2 = -0.3 at step 7.
    x = np.zeros((1, 30, 2), np.float32)
    x[0, :, 0] = 0.1
    x[0, [2, 7], 0] = [0.5, -0.3]
    x[0, [2, 7], 1] = 1.0
    x[0, [0, 29], 1] = -1.0
    y = jlstm.apply(ckpt.state.params, x, ckpt.model_config)
    assert abs(float(y[0, 0]) - (0.5 + 0.2 / 4)) < 0.04


@pytest.mark.slow
def test_adding_t100_meets_the_paper_criterion_with_forget_bias_5(tmp_path):
    report = run_task("adding", 100, tmp_path, seed=0, budget_seconds=240, forget_bias=5.0)
    assert report["stopped_by"] == "criterion", report
    assert report["test"]["wrong"] <= 3, report


@pytest.mark.slow
def test_temporal_order_t100_meets_the_criterion(tmp_path):
    report = run_task("temporal_order", 100, tmp_path, seed=0, budget_seconds=240)
    assert report["stopped_by"] == "criterion", report
    assert report["test"]["wrong"] <= 3, report


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="adding"):
        get_task("addition")
    assert set(TASKS) == {"adding", "temporal_order", "copy"}
