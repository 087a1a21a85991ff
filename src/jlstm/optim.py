"""Keras 3's optimizers as optax transformations, step for step.

optax's ``adam``, ``rmsprop`` and ``sgd`` are not Keras' formulas, so a jlstm run
with them drifts away from a Keras ``fit`` of the same model: over a few epochs of
the airline windows the weights differ by ~46% of the update. These reproduce
Keras 3 (``keras/src/optimizers/{adam,rmsprop,sgd}.py``) exactly, in the dtype of
each parameter:

* ``keras_adam``: ``t += 1; m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
  alpha = lr * sqrt(1 - b2^t) / (1 - b1^t); w -= alpha * m / (sqrt(v) + eps)``.
  optax adds ``eps`` to the bias-corrected ``sqrt(v_hat)`` instead, with eps 1e-8.
* ``keras_rmsprop``: ``v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps)``
  (eps inside the root; optax puts it outside); with ``momentum``
  ``mom = momentum * mom + lr g / sqrt(v + eps); w -= mom``; ``centered``
  subtracts the squared running mean of ``g`` inside the root.
* ``keras_sgd``: ``m = momentum * m - lr g; w += m`` (Nesterov:
  ``w += momentum * m - lr g``). optax keeps the learning rate out of the trace, which
  differs from Keras once the learning rate changes.

``learning_rate`` is a float or an optax schedule ``count -> lr`` (``count`` = Keras'
``iterations``, from 0).

Example::

    opt = jlstm.optim.keras_adam(1e-3)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "OPTIMIZERS",
    "KerasAdamState",
    "KerasRMSpropState",
    "KerasSGDState",
    "keras_adam",
    "keras_rmsprop",
    "keras_sgd",
]

ScalarOrSchedule = float | Callable[[jax.Array], jax.Array]


def _lr(learning_rate: ScalarOrSchedule, count: jax.Array, dtype) -> jax.Array:
    lr = learning_rate(count) if callable(learning_rate) else learning_rate
    return jnp.asarray(lr, dtype)


def _zeros(params):
    return jax.tree.map(jnp.zeros_like, params)


class KerasAdamState(NamedTuple):
    """State of ``keras_adam``.

    Attributes:
        count: ``()`` int32, Keras' ``iterations`` (steps taken).
        m: first moments, like ``params``.
        v: second moments, like ``params``.
    """

    count: jax.Array
    m: optax.Updates
    v: optax.Updates


def keras_adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
) -> optax.GradientTransformation:
    """Keras 3 ``Adam`` (no amsgrad, no weight decay): see the module docstring."""

    def init(params):
        return KerasAdamState(jnp.zeros((), jnp.int32), _zeros(params), _zeros(params))

    def update(grads, state, params=None):
        del params
        count = state.count

        def one(g, m, v):
            dt = m.dtype
            g = g.astype(dt)
            t = (count + 1).astype(dt)
            alpha = (
                _lr(learning_rate, count, dt)
                * jnp.sqrt(1 - jnp.asarray(beta_2, dt) ** t)
                / (1 - jnp.asarray(beta_1, dt) ** t)
            )
            m = m + (g - m) * (1 - jnp.asarray(beta_1, dt))
            v = v + (jnp.square(g) - v) * (1 - jnp.asarray(beta_2, dt))
            return -(m * alpha) / (jnp.sqrt(v) + jnp.asarray(epsilon, dt)), m, v

        out = jax.tree.map(one, grads, state.m, state.v)
        updates, m, v = _unzip(grads, out)
        return updates, KerasAdamState(count + 1, m, v)

    return optax.GradientTransformation(init, update)


class KerasRMSpropState(NamedTuple):
    """State of ``keras_rmsprop``.

    Attributes:
        count: ``()`` int32 steps taken.
        velocity: running mean of ``g^2``, like ``params``.
        momentum: momentum buffers (zeros, unused when ``momentum == 0``).
        average_grad: running mean of ``g`` (zeros, unused unless ``centered``).
    """

    count: jax.Array
    velocity: optax.Updates
    momentum: optax.Updates
    average_grad: optax.Updates


def keras_rmsprop(
    learning_rate: ScalarOrSchedule = 1e-3,
    rho: float = 0.9,
    momentum: float = 0.0,
    epsilon: float = 1e-7,
    centered: bool = False,
) -> optax.GradientTransformation:
    """Keras 3 ``RMSprop``: see the module docstring."""

    def init(params):
        return KerasRMSpropState(
            jnp.zeros((), jnp.int32), _zeros(params), _zeros(params), _zeros(params)
        )

    def update(grads, state, params=None):
        del params
        count = state.count

        def one(g, v, mom, avg):
            dt = v.dtype
            g = g.astype(dt)
            v = rho * v + (1 - rho) * jnp.square(g)
            if centered:
                avg = rho * avg + (1 - rho) * g
                denominator = v - jnp.square(avg) + epsilon
            else:
                denominator = v + epsilon
            increment = _lr(learning_rate, count, dt) * g / jnp.sqrt(denominator)
            if momentum > 0:
                mom = momentum * mom + increment
                return -mom, v, mom, avg
            return -increment, v, mom, avg

        out = jax.tree.map(one, grads, state.velocity, state.momentum, state.average_grad)
        updates, v, mom, avg = _unzip(grads, out)
        return updates, KerasRMSpropState(count + 1, v, mom, avg)

    return optax.GradientTransformation(init, update)


class KerasSGDState(NamedTuple):
    """State of ``keras_sgd``.

    Attributes:
        count: ``()`` int32 steps taken.
        momentum: Keras' ``m`` buffers (they include the learning rate), like ``params``.
    """

    count: jax.Array
    momentum: optax.Updates


def keras_sgd(
    learning_rate: ScalarOrSchedule = 0.01, momentum: float = 0.0, nesterov: bool = False
) -> optax.GradientTransformation:
    """Keras 3 ``SGD``: see the module docstring."""

    def init(params):
        return KerasSGDState(jnp.zeros((), jnp.int32), _zeros(params))

    def update(grads, state, params=None):
        del params
        count = state.count

        def one(g, m):
            dt = m.dtype
            g = g.astype(dt)
            lr = _lr(learning_rate, count, dt)
            if momentum == 0:
                return -g * lr, m
            m = m * momentum - g * lr
            return (m * momentum - g * lr if nesterov else m), m

        out = jax.tree.map(one, grads, state.momentum)
        updates, m = _unzip(grads, out)
        return updates, KerasSGDState(count + 1, m)

    return optax.GradientTransformation(init, update)


def _unzip(tree, out):
    """``tree``-shaped tree of tuples -> tuple of ``tree``-shaped trees."""
    structure = jax.tree.structure(tree)
    leaves = structure.flatten_up_to(out)
    return tuple(jax.tree.unflatten(structure, list(p)) for p in zip(*leaves, strict=True))


# Name -> factory(learning_rate, **keras_kwargs), for TrainConfig(optimizer=...).
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "keras_adam": keras_adam,
    "keras_rmsprop": keras_rmsprop,
    "keras_sgd": keras_sgd,
}
