"""Activation functions by Keras name or as callables.

Every function is elementwise and dtype-preserving. Definitions follow Keras 3
(``keras.activations``), which is what jlstm's parity tests compare against:

* ``hard_sigmoid``: Keras 3 / JAX definition ``clip(x / 6 + 0.5, 0, 1)``
  (``relu6(x + 3) / 6``).
* ``hard_sigmoid_keras2``: the Keras 2 (and TensorFlow 1) definition
  ``clip(0.2 * x + 0.5, 0, 1)``, for models trained with Keras < 3. Keras < 2.3
  used it as the default ``recurrent_activation``.
* ``gelu``: the exact erf form (Keras' default ``approximate=False``);
  ``gelu_tanh`` is the tanh approximation.
* ``selu``: alpha 1.6732632423543772, scale 1.0507009873554805 (Keras, JAX).
* ``elu``: alpha 1.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]
ActivationSpec = str | Activation | None

__all__ = ["ACTIVATIONS", "Activation", "ActivationSpec", "activation_name", "get_activation"]


def linear(x: jax.Array) -> jax.Array:
    """Identity, ``a(x) = x``."""
    return x


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """Keras 3 hard sigmoid, ``clip(x / 6 + 0.5, 0, 1)``."""
    return jnp.clip(x / 6.0 + 0.5, 0.0, 1.0).astype(x.dtype)


def hard_sigmoid_keras2(x: jax.Array) -> jax.Array:
    """Keras 2 hard sigmoid, ``clip(0.2 * x + 0.5, 0, 1)``."""
    return jnp.clip(0.2 * x + 0.5, 0.0, 1.0).astype(x.dtype)


def softsign(x: jax.Array) -> jax.Array:
    """``x / (1 + |x|)``."""
    return x / (1.0 + jnp.abs(x))


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, ``x * Phi(x)`` (Keras default)."""
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """GELU, tanh approximation."""
    return jax.nn.gelu(x, approximate=True)


def elu(x: jax.Array) -> jax.Array:
    """ELU with alpha 1."""
    return jax.nn.elu(x, alpha=1.0)


ACTIVATIONS: dict[str, Activation] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": hard_sigmoid,
    "hard_sigmoid_keras2": hard_sigmoid_keras2,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "elu": elu,
    "selu": jax.nn.selu,
    "softsign": softsign,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "exponential": jnp.exp,
    "linear": linear,
}


def get_activation(spec: ActivationSpec) -> Activation:
    """Return the activation function for a name, a callable or ``None`` (linear).

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
        TypeError: for anything that is neither a string, a callable nor ``None``.
    """
    if spec is None:
        return linear
    if isinstance(spec, str):
        try:
            return ACTIVATIONS[spec.lower()]
        except KeyError:
            raise ValueError(
                f"unknown activation {spec!r}; use one of {sorted(ACTIVATIONS)} or pass a callable"
            ) from None
    if callable(spec):
        return spec
    raise TypeError(f"activation must be a name, a callable or None, got {type(spec).__name__}")


def activation_name(spec: ActivationSpec) -> str | None:
    """The registry name of ``spec``, or ``None`` for a callable not in the registry."""
    if spec is None:
        return "linear"
    if isinstance(spec, str):
        get_activation(spec)
        return spec.lower()
    for name, fn in ACTIVATIONS.items():
        if fn is spec:
            return name
    return None
