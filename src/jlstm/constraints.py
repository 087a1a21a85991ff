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
``head_kernel_constraint`` / ``head_bias_constraint``.

* ``apply_constraints(params, config)``: the projection, a pure function (the train
  step's ``project(params)`` hook, called after ``optax.apply_updates``).
* ``constrain(config)``: the same as the last link of an optax chain,
  ``optax.chain(optax.adam(1e-3), constrain(config))``: its updates move the
  parameters onto the constrained values (exact up to one float rounding of
  ``p + (constraint(p + u) - p)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from ._keras_config import from_keras_config
from .types import Array, BidirectionalParams, CellParams, DenseParams, ModelParams

if TYPE_CHECKING:
    from .model import ModelConfig

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
    "apply_constraints",
    "constrain",
    "constraint_to_dict",
    "get_constraint",
    "has_constraints",
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
_CLASSES = {cls.__name__: cls for cls in CONSTRAINTS.values()}


def get_constraint(spec: ConstraintSpec) -> ConstraintFn | None:
    """Resolve ``None``, a name (``"max_norm"`` or ``"MaxNorm"``), a ``{"class_name",
    "config"}`` dict (Keras' serialisation), an instance or a callable ``w -> w``.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    if spec is None:
        return None
    if isinstance(spec, str | dict):
        name = spec if isinstance(spec, str) else spec.get("class_name")
        cls = _CLASSES.get(name) or CONSTRAINTS.get(str(name).lower())
        if cls is None:
            raise ValueError(
                f"unknown constraint {name!r}; use one of {sorted(CONSTRAINTS)}, an instance "
                "from jlstm.constraints or a callable w -> w"
            )
        if isinstance(spec, str):
            return cls()
        return from_keras_config(cls, spec.get("config"))
    if callable(spec):
        return spec
    raise TypeError(f"constraint must be a name, dict, callable or None, got {type(spec).__name__}")


def constraint_to_dict(spec: ConstraintSpec) -> dict | None:
    """JSON form of a constraint: ``None`` or ``{"class_name", "config"}``.

    Raises:
        TypeError: for an arbitrary callable, which cannot be serialised.
    """
    con = get_constraint(spec)
    if con is None:
        return None
    if isinstance(con, Constraint):
        return {"class_name": type(con).__name__, "config": con.get_config()}
    raise TypeError(
        f"cannot serialise the constraint {spec!r}: use an instance from jlstm.constraints"
    )


def has_constraints(config: ModelConfig) -> bool:
    """Whether any weight of ``config`` has a constraint."""
    names = ("kernel_constraint", "recurrent_constraint", "bias_constraint")
    return any(getattr(cfg, n) is not None for cfg in config.layers for n in names) or any(
        getattr(config, n) is not None for n in ("head_kernel_constraint", "head_bias_constraint")
    )


def _apply(con: ConstraintFn | None, w: Array | None) -> Array | None:
    # ``con`` is a config field: already resolved by ``LayerConfig``/``ModelConfig``.
    if con is None or w is None:
        return w
    return jnp.asarray(con(w), w.dtype)


def apply_constraints(params: ModelParams, config: ModelConfig) -> ModelParams:
    """Project ``params`` onto ``config``'s constraints (weights without one pass through).

    A pure function of ``params``, jit-friendly with ``config`` static: call it after
    every ``optax.apply_updates`` (the train step's ``project(params)`` hook), as Keras'
    optimizer does. Returns ``ModelParams`` with the same structure, shapes and dtypes.
    """
    if not has_constraints(config):
        return params
    if len(params.layers) != len(config.layers):
        raise ValueError(
            f"{len(params.layers)} layer parameter sets for {len(config.layers)} layer configs"
        )

    def cell(p: CellParams, cfg) -> CellParams:
        return CellParams(
            _apply(cfg.kernel_constraint, p.kernel),
            _apply(cfg.recurrent_constraint, p.recurrent_kernel),
            _apply(cfg.bias_constraint, p.bias),
        )

    layers = []
    for p, cfg in zip(params.layers, config.layers, strict=True):
        if isinstance(p, BidirectionalParams):
            layers.append(BidirectionalParams(cell(p.forward, cfg), cell(p.backward, cfg)))
        else:
            layers.append(cell(p, cfg))
    head = DenseParams(
        _apply(config.head_kernel_constraint, params.head.kernel),
        _apply(config.head_bias_constraint, params.head.bias),
    )
    return ModelParams(tuple(layers), head)


def constrain(config: ModelConfig):
    """An optax ``GradientTransformation`` that applies ``config``'s constraints.

    Put it last in a chain, after the optimizer::

        tx = optax.chain(optax.adam(1e-3), jlstm.constraints.constrain(config))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)   # now constrained

    It returns ``constraint(params + updates) - params``, so ``apply_updates`` lands on
    the constrained weights (up to one float rounding; ``apply_constraints`` after
    ``apply_updates`` is exact).
    """
    import optax

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("constrain needs params: call tx.update(grads, state, params)")
        if not has_constraints(config):
            return updates, state
        moved = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)
        projected = apply_constraints(moved, config)
        return jax.tree.map(
            lambda q, p, u: (q - p).astype(u.dtype), projected, params, updates
        ), state

    return optax.GradientTransformation(init, update)
