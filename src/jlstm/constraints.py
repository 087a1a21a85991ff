r"""Weight constraints (Keras' ``max_norm``, ``non_neg``, ``unit_norm``, ``min_max_norm``).

A constraint is a projection applied to a weight after each optimizer update
(Keras: ``variable.assign(constraint(variable))`` once the gradients are
applied). Each is a frozen dataclass (hashable, JSON-able like Keras'
``{"class_name", "config"}``) with ``__call__(w) -> w``, Keras 3's definitions,
``eps = 1e-7`` (Keras' ``epsilon()``) and ``norms = sqrt(sum(w**2, axis, keepdims))``::

    MaxNorm(max_value=2, axis=0)     w * clip(norms, 0, max_value) / (eps + norms)
    NonNeg()                         max(w, 0)
    UnitNorm(axis=0)                 w / (eps + norms)
    MinMaxNorm(min_value=0, max_value=1, rate=1, axis=0)
        w * (rate * clip(norms, min_value, max_value) + (1 - rate) * norms) / (eps + norms)

Axis semantics are Keras': jlstm's weights have Keras' layout, so ``axis=0`` on a
``kernel`` ``(D, 4H)`` constrains each column, the weights into one gate unit, and on a
``recurrent_kernel`` ``(H, 4H)`` likewise; ``axis`` may be a tuple. Note that
``MaxNorm`` scales every column by ``norm / (eps + norm)`` even below the bound, as
Keras does.

Where they apply: ``ModelConfig(kernel_constraint=..., recurrent_constraint=...,
bias_constraint=...)`` per LSTM layer (both directions of a bidirectional one) and
``head_kernel_constraint`` / ``head_bias_constraint``. This module holds the leaf
definitions only; ``apply_constraints(params, config)`` is in ``jlstm.penalties``
and the optax transformation ``constrain(config)`` in ``jlstm.optax_adapters``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from .registry import lookup, to_dict
from .types import Array

ConstraintFn = Callable[[Array], Array]
ConstraintSpec = str | dict | ConstraintFn | None
Axis = int | tuple[int, ...]

# Keras' backend.epsilon(), added to norms before dividing.
EPSILON = 1e-7

__all__ = [
    "CONSTRAINTS",
    "EPSILON",
    "Constraint",
    "ConstraintSpec",
    "MaxNorm",
    "MinMaxNorm",
    "NonNeg",
    "UnitNorm",
    "constraint_to_dict",
    "get_constraint",
]


class Constraint:
    """Base class: subclasses are frozen dataclasses with ``__call__(w) -> w``."""

    def __call__(self, w: Array) -> Array:
        raise NotImplementedError

    def get_config(self) -> dict:
        config = dataclasses.asdict(self)
        if isinstance(config.get("axis"), tuple):
            config["axis"] = list(config["axis"])
        return config


def _axis(value) -> Axis:
    if isinstance(value, list | tuple):
        return tuple(int(a) for a in value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"constraint axis must be an int or a tuple of ints, got {value!r}")
    return value


def _norms(w: Array, axis: Axis) -> Array:
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


@dataclasses.dataclass(frozen=True)
class MaxNorm(Constraint):
    """Norm along ``axis`` at most ``max_value``."""

    max_value: float = 2.0
    axis: Axis = 0

    def __post_init__(self):
        object.__setattr__(self, "axis", _axis(self.axis))

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = jnp.clip(norms, 0.0, self.max_value)
        return w * (desired / (EPSILON + norms))


@dataclasses.dataclass(frozen=True)
class NonNeg(Constraint):
    """Weights at least 0."""

    def __call__(self, w):
        return jnp.maximum(w, 0.0).astype(w.dtype)


@dataclasses.dataclass(frozen=True)
class UnitNorm(Constraint):
    """Norm along ``axis`` equal to 1."""

    axis: Axis = 0

    def __post_init__(self):
        object.__setattr__(self, "axis", _axis(self.axis))

    def __call__(self, w):
        return w / (EPSILON + _norms(w, self.axis))


@dataclasses.dataclass(frozen=True)
class MinMaxNorm(Constraint):
    """Norm along ``axis`` moved a fraction ``rate`` into ``[min_value, max_value]``."""

    min_value: float = 0.0
    max_value: float = 1.0
    rate: float = 1.0
    axis: Axis = 0

    def __post_init__(self):
        object.__setattr__(self, "axis", _axis(self.axis))
        if self.min_value > self.max_value:
            raise ValueError(
                f"MinMaxNorm needs min_value <= max_value, got {self.min_value} > {self.max_value}"
            )

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = (
            self.rate * jnp.clip(norms, self.min_value, self.max_value) + (1.0 - self.rate) * norms
        )
        return w * (desired / (EPSILON + norms))


CONSTRAINTS: dict[str, type[Constraint]] = {
    "max_norm": MaxNorm,
    "non_neg": NonNeg,
    "unit_norm": UnitNorm,
    "min_max_norm": MinMaxNorm,
}
_HINT = "an instance from jlstm.constraints or a callable w -> w"


def get_constraint(spec: ConstraintSpec) -> ConstraintFn | None:
    """Resolve ``None``, a name (``"max_norm"`` or ``"MaxNorm"``), a ``{"class_name",
    "config"}`` dict (Keras' serialisation), an instance or a callable ``w -> w``.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    return lookup("constraint", spec, CONSTRAINTS, hint=_HINT, optional=True)


def constraint_to_dict(spec: ConstraintSpec) -> dict | None:
    """JSON form of a constraint: ``None`` or ``{"class_name", "config"}``.

    Raises:
        TypeError: for an arbitrary callable, which cannot be serialised.
    """
    return to_dict("constraint", get_constraint(spec), CONSTRAINTS)
