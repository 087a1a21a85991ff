"""jlstm.losses against float64 NumPy, and the pinball loss's minimiser is the quantile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jlstm import losses


def _data(seed=0, shape=(7, 3)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), rng.normal(size=shape)


def test_point_losses_match_numpy():
    pred, target = _data()
    err = pred - target
    huber = np.where(np.abs(err) <= 1.0, 0.5 * err**2, np.abs(err) - 0.5)
    expected = {"mse": (err**2).mean(-1), "mae": np.abs(err).mean(-1), "huber": huber.mean(-1)}
    eps = np.finfo(np.float32).eps
    for name, want in expected.items():
        got = np.asarray(
            losses.by_name(name)(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32))
        )
        assert got.shape == (7,)
        # float32 inputs rounded (1 eps each), squared/abs, mean of 3: a few eps of the magnitude.
        np.testing.assert_allclose(got, want, rtol=0, atol=16 * eps * (1 + np.abs(want).max()))


def test_pinball_matches_numpy_and_checks_levels():
    rng = np.random.default_rng(1)
    q = (0.1, 0.5, 0.9)
    target = rng.normal(size=(5, 2))
    pred = rng.normal(size=(5, 2 * 3))
    e = target[..., None] - pred.reshape(5, 2, 3)
    lv = np.asarray(q)
    want = np.maximum(lv * e, (lv - 1) * e).mean(axis=(-2, -1))
    got = losses.pinball(q)(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32))
    # Inputs rounded to float32, one subtraction, one product, a mean of 6 terms:
    # each term errs by a few eps of |target| + |pred|.
    scale = (np.abs(target)[..., None] + np.abs(pred.reshape(5, 2, 3))).max()
    np.testing.assert_allclose(
        np.asarray(got), want, rtol=0, atol=8 * np.finfo(np.float32).eps * scale
    )
    for bad in ([], [0.5, 0.5], [0.9, 0.1], [0.0], [1.0]):
        with pytest.raises(ValueError, match="quantile"):
            losses.pinball(bad)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.by_name("mape")


def test_pinball_minimiser_is_the_empirical_quantile():
    # Minimise the pinball loss over a constant prediction by gradient descent;
    # the minimiser of the mean pinball loss of a sample is its q-quantile.
    sample = np.random.default_rng(2).exponential(size=(4001, 1)).astype(np.float32)
    for q in (0.1, 0.5, 0.9):
        loss = losses.pinball((q,))

        def objective(c, q=q, loss=loss):
            return jnp.mean(loss(jnp.broadcast_to(c, sample.shape), jnp.asarray(sample)))

        grid = jnp.linspace(0.0, 4.0, 4001)
        values = jax.vmap(objective)(grid)
        best = float(grid[int(jnp.argmin(values))])
        # The sample quantile is a minimiser; the grid step is 1e-3.
        assert abs(best - np.quantile(sample, q, method="inverted_cdf")) < 2e-3
