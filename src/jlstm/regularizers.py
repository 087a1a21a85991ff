r"""Weight and activity regularizers (Keras' ``L1``, ``L2``, ``L1L2``) as loss terms.

A regularizer is a frozen dataclass (hashable, so it sits in a jit-static
``ModelConfig``; serialised as ``{"class_name", "config"}`` like Keras) whose
``__call__(w)`` returns a scalar penalty, with Keras 3's definitions::

    L1(l1)        l1 * sum(|w|)                       name "l1",  default l1 = 0.01
    L2(l2)        l2 * sum(w ** 2)                    name "l2",  default l2 = 0.01
    L1L2(l1, l2)  l1 * sum(|w|) + l2 * sum(w ** 2)    name "l1l2" (Keras 3: l1 = l2 = 0),
                                                      name "l1_l2" (Keras 2: l1 = l2 = 0.01)
    OrthogonalRegularizer(factor, mode)               Keras 3's, for 2-D weights

Where they apply (the Keras ``LSTM`` / ``Dense`` arguments, per layer in
``ModelConfig``): ``kernel_regularizer`` on ``kernel`` ``(D, 4H)``,
``recurrent_regularizer`` on ``recurrent_kernel`` ``(H, 4H)``, ``bias_regularizer``
on ``bias`` ``(4H,)``, each on both directions of a bidirectional layer; the head's
``head_kernel_regularizer`` / ``head_bias_regularizer``; ``activity_regularizer``
on a layer's output. This module holds the leaf definitions only; the model-level
penalties (``regularization_loss``, ``regularized_apply``) are in ``jlstm.penalties``
and the optax transformation (``add_regularization``) in ``jlstm.optax_adapters``.

Keras adds these terms to the data loss; so does jlstm: ``loss = mse + penalty``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .registry import lookup, to_dict
from .types import Array

RegularizerFn = Callable[[Array], Array]
RegularizerSpec = str | dict | RegularizerFn | None

__all__ = [
    "L1",
    "L1L2",
    "L2",
    "REGULARIZERS",
    "OrthogonalRegularizer",
    "Regularizer",
    "RegularizerSpec",
    "get_regularizer",
    "regularizer_to_dict",
]


class Regularizer:
    """Base class: subclasses are frozen dataclasses with ``__call__(w) -> scalar``."""

    def __call__(self, w: Array) -> Array:
        raise NotImplementedError

    def get_config(self) -> dict:
        return dataclasses.asdict(self)


def _check_factor(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"regularization factor {name} must be a float >= 0, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"regularization factor {name} must be finite, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class L1(Regularizer):
    """``l1 * sum(|w|)``."""

    l1: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "l1", _check_factor("l1", self.l1))

    def __call__(self, w):
        return self.l1 * jnp.sum(jnp.abs(w))


@dataclasses.dataclass(frozen=True)
class L2(Regularizer):
    """``l2 * sum(w ** 2)``."""

    l2: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "l2", _check_factor("l2", self.l2))

    def __call__(self, w):
        return self.l2 * jnp.sum(jnp.square(w))


@dataclasses.dataclass(frozen=True)
class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w ** 2)`` (Keras 3 defaults: both 0)."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "l1", _check_factor("l1", self.l1))
        object.__setattr__(self, "l2", _check_factor("l2", self.l2))

    def __call__(self, w):
        out = jnp.zeros((), w.dtype)
        # Keras skips a zero term entirely (so an inf weight with l1 = 0 stays finite).
        if self.l1:
            out = out + self.l1 * jnp.sum(jnp.abs(w))
        if self.l2:
            out = out + self.l2 * jnp.sum(jnp.square(w))
        return out


@dataclasses.dataclass(frozen=True)
class OrthogonalRegularizer(Regularizer):
    """Keras 3's: ``factor/2 * mean |<u_i, u_j>|`` over pairs of L2-normalised rows (or columns)."""

    factor: float = 0.01
    mode: str = "rows"

    def __post_init__(self):
        object.__setattr__(self, "factor", _check_factor("factor", self.factor))
        if self.mode not in ("rows", "columns"):
            raise ValueError(
                f"OrthogonalRegularizer mode must be 'rows' or 'columns', got {self.mode!r}"
            )

    def __call__(self, w):
        if w.ndim != 2:
            raise ValueError(f"OrthogonalRegularizer needs a 2-D weight, got shape {w.shape}")
        # Keras' ops.normalize: x * min(rsqrt(sum(x^2)), 1 / epsilon), epsilon = 1e-7.
        axis = 1 if self.mode == "rows" else 0
        inv_norm = jax.lax.rsqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))
        unit = w * jnp.minimum(inv_norm, 1.0 / 1e-7)
        product = unit @ unit.T if self.mode == "rows" else unit.T @ unit
        size = product.shape[0]
        off_diagonal = product * (1.0 - jnp.eye(size, dtype=w.dtype))
        pairs = size * (size - 1.0) / 2.0
        return self.factor * 0.5 * jnp.sum(jnp.abs(off_diagonal)) / pairs


REGULARIZERS: dict[str, Callable[[], Regularizer]] = {
    "l1": L1,
    "l2": L2,
    "l1l2": L1L2,
    # Keras 2 (and the Keras docs) give "l1_l2" both factors 0.01; Keras 3's "l1l2" gives 0.
    "l1_l2": lambda: L1L2(0.01, 0.01),
    "orthogonal_regularizer": OrthogonalRegularizer,
}
_HINT = "an instance from jlstm.regularizers or a callable w -> scalar"


def get_regularizer(spec: RegularizerSpec) -> RegularizerFn | None:
    """Resolve ``None``, a name, a ``{"class_name", "config"}`` dict (Keras' serialisation),
    an instance or a callable ``w -> scalar``.

    Raises:
        ValueError: for an unknown name or class; the message lists the known ones.
    """
    return lookup("regularizer", spec, REGULARIZERS, hint=_HINT, optional=True)


def regularizer_to_dict(spec: RegularizerSpec) -> dict | None:
    """JSON form of a regularizer: ``None``, or ``{"class_name", "config"}``.

    Raises:
        TypeError: for an arbitrary callable, which cannot be serialised.
    """
    return to_dict("regularizer", get_regularizer(spec), REGULARIZERS)
