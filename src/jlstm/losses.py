"""Training losses as callables, optax.losses style: ``loss(pred, target) -> (B,)``.

Every loss maps a batch of predictions ``pred`` and targets ``target`` to one
value per row (window): the mean of the pointwise loss over the row's outputs.
The training step takes the ``w``-weighted mean of these rows, so a loss here
knows nothing of padding, penalties or optimizers.

Point losses take ``pred`` and ``target`` of the same shape ``(B, O)``.
``pinball(quantiles)`` takes a quantile head's ``pred`` of shape ``(B, O * Q)``
(for each of the ``O`` outputs, ``Q`` quantiles in increasing level order, the
quantile axis last: ``pred.reshape(B, O, Q)``) and the ``(B, O)`` point targets.

    step = make_step(config, optax.adam(1e-3), loss=losses.pinball((0.1, 0.5, 0.9)))
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import optax

from .types import Array

__all__ = ["LOSSES", "Loss", "by_name", "huber", "mae", "mse", "pinball", "quantile_levels"]

Loss = Callable[[Array, Array], Array]


def mse(pred: Array, target: Array) -> Array:
    """``(B,)`` mean squared error of each row."""
    err = pred - target
    return jnp.mean(err * err, axis=-1)


def mae(pred: Array, target: Array) -> Array:
    """``(B,)`` mean absolute error of each row."""
    return jnp.mean(jnp.abs(pred - target), axis=-1)


def huber(delta: float = 1.0) -> Loss:
    """The Huber loss (quadratic within ``delta``, linear beyond), ``(B,)`` per row."""
    if not delta > 0:
        raise ValueError(f"huber delta must be > 0, got {delta!r}")

    def loss(pred: Array, target: Array) -> Array:
        return jnp.mean(optax.huber_loss(pred - target, delta=delta), axis=-1)

    return loss


def quantile_levels(quantiles: Sequence[float]) -> tuple[float, ...]:
    """``quantiles`` checked: at least one level, each in ``(0, 1)``, strictly increasing."""
    levels = tuple(float(q) for q in quantiles)
    if not levels:
        raise ValueError("quantiles must name at least one level, e.g. 0.1,0.5,0.9")
    for q in levels:
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {q!r}")
    if any(b <= a for a, b in itertools.pairwise(levels)):
        raise ValueError(f"quantile levels must be strictly increasing, got {list(levels)}")
    return levels


def pinball(quantiles: Sequence[float]) -> Loss:
    """The pinball (quantile) loss of a ``Q``-quantile head, ``(B,)`` per row.

    For level ``q`` and error ``e = target - pred_q`` the loss is
    ``max(q * e, (q - 1) * e)``; its minimiser over a distribution is that
    distribution's ``q``-quantile. The row value is the mean over outputs and levels.

    Args:
        quantiles: increasing levels in ``(0, 1)``.
    """
    levels = quantile_levels(quantiles)
    n = len(levels)

    def loss(pred: Array, target: Array) -> Array:
        q = jnp.asarray(levels, pred.dtype)
        pred = pred.reshape(*target.shape, n)
        err = target[..., None] - pred
        return jnp.mean(jnp.maximum(q * err, (q - 1.0) * err), axis=(-2, -1))

    return loss


LOSSES: dict[str, Loss] = {"mse": mse, "mae": mae, "huber": huber(1.0)}


def by_name(name: str) -> Loss:
    """The point loss called ``name`` (``"mse"``, ``"mae"`` or ``"huber"``, delta 1)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; use one of {list(LOSSES)}") from None
