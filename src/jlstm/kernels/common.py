"""What every kernel shares: the call's prologue and epilogue, Keras' masked step, and
size decisions that stay valid when a dimension is symbolic (``jax.export``).

A mode's kernel receives the layer's time-major ``(T, B..., D)`` inputs; ``prepare``
applies the input dropout mask and flattens the batch axes to one, ``unflatten``
restores them on the outputs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..activations import activation_name
from ..types import Array, LSTMState

__all__ = [
    "LARGE",
    "STANDARD_ACTIVATIONS_HINT",
    "explicitly_sharded",
    "flatten",
    "is_standard",
    "masked_update",
    "prepare",
    "project",
    "static_size",
    "unflatten",
]

# What a symbolic dimension counts as in a kernel's Python-side size decision: larger
# than any threshold, so an exported program takes the branch meant for large sizes.
LARGE = 2**62

STANDARD_ACTIVATIONS_HINT = (
    "the fused kernels compute the standard LSTM (activation='tanh', "
    "recurrent_activation='sigmoid'); use implementation 2, 1 or 'hoisted' for other "
    "activations, or 'auto', which picks one"
)


def static_size(*dims) -> int:
    """The product of ``dims`` as a Python int; ``LARGE`` when any is symbolic.

    Kernel decisions compare sizes in Python (store or recompute, chunk length,
    layout). Under ``jax.export`` with a symbolic dimension such a comparison is
    inconclusive, so a symbolic size is treated as large, never compared.
    """
    size = 1
    for d in dims:
        if not isinstance(d, int):
            try:
                d = int(d)  # a symbolic dimension that is a known constant
            except Exception:
                return LARGE
        size *= d
    return min(size, LARGE)


def explicitly_sharded(a) -> bool:
    """Whether ``a``'s type carries an explicit sharding of some axis (``Explicit`` mesh
    axes): such an axis cannot be merged with another by a reshape."""
    try:
        spec = jax.typeof(a).sharding.spec
    except AttributeError:
        return False
    return any(s is not None for s in spec)


def batch_may_be_split(a) -> bool:
    """Whether XLA may partition ``a``'s batch axis, so a reshape merging it with another
    axis would all-gather: ``a`` is explicitly sharded, or the program is traced under a
    mesh (``jax.set_mesh``, as ``fit(mesh=...)`` does) with an axis that is not manual.
    Inside ``shard_map`` every axis is manual and the body sees its own shard only."""
    mesh = jax.sharding.get_abstract_mesh()
    return explicitly_sharded(a) or not (mesh.empty or mesh.are_all_axes_manual)


def is_standard(activation, recurrent_activation) -> bool:
    """Whether the activations are ``tanh`` and ``sigmoid`` (by name or as the functions)."""
    try:
        return activation_name(activation) == "tanh" and (
            activation_name(recurrent_activation) == "sigmoid"
        )
    except ValueError:  # an unknown name: not a standard one
        return False


def masked_update(keep: Array, h_new: Array, c_new: Array, h: Array, c: Array, zero_output: bool):
    """Keras' masked step: ``(h_t, c_t, y)`` for a step mask ``keep`` broadcast to the states.

    Where ``keep`` is false the step keeps the state ``(h, c)`` and emits the previous
    output ``h`` (zeros with ``zero_output``).
    """
    h_t = jnp.where(keep, h_new, h)
    c_t = jnp.where(keep, c_new, c)
    y = jnp.where(keep, h_new, jnp.zeros_like(h) if zero_output else h)
    return h_t, c_t, y


def project(x: Array, kernel: Array) -> Array:
    """``x @ kernel`` for ``x`` ``(..., D)``; a broadcast product when ``D == 1``.

    XLA:CPU runs a contraction of length 1 as a general matrix product, several times
    slower than the equivalent elementwise product it fuses with its neighbours.
    """
    if kernel.shape[0] == 1:
        return x * kernel[0]
    return x @ kernel


def flatten(xs: Array, state: LSTMState, mask, recurrent_mask):
    """Flatten the batch axes of a layer call: ``(T, B..., D)`` -> ``(T, B, D)``.

    Returns:
        ``(xs, h0, c0, mask, recurrent_mask, batch_shape)`` with ``xs`` ``(T, B, D)``,
        states ``(B, H)``, ``mask`` ``(T, B)`` or ``None`` and the recurrent dropout mask
        ``(B, H)`` or ``None``; an unbatched call gets ``B = 1``.
    """
    steps, features = xs.shape[0], xs.shape[-1]
    batch_shape = xs.shape[1:-1]
    flat = math.prod(batch_shape)

    def rows(a):
        return None if a is None else a.reshape(flat, a.shape[-1])

    if len(batch_shape) != 1:  # a reshape to the same shape would be a no-op anyway
        xs = xs.reshape(steps, flat, features)
        mask = None if mask is None else mask.reshape(steps, flat)
        return xs, rows(state.h), rows(state.c), mask, rows(recurrent_mask), batch_shape
    return xs, state.h, state.c, mask, recurrent_mask, batch_shape


def prepare(name: str, xs: Array, state: LSTMState, mask, input_mask, recurrent_mask, options):
    """The start of every fused-gate mode's ``run``: check the activations are the standard
    ones, apply the input dropout mask, then ``flatten`` (and return what it returns).

    Raises:
        ValueError: for other activations, naming the mode ``name``.
    """
    if not is_standard(options.activation, options.recurrent_activation):
        raise ValueError(
            f"implementation {name!r} needs standard activations: {STANDARD_ACTIVATIONS_HINT}"
        )
    if input_mask is not None:
        xs = xs * input_mask
    return flatten(xs, state, mask, recurrent_mask)


def unflatten(ys: Array, final: LSTMState, batch_shape: tuple[int, ...]):
    """Inverse of ``flatten`` for the outputs: ``ys`` ``(T, B..., H)``, states ``(B..., H)``."""
    if len(batch_shape) == 1:
        return ys, LSTMState(*final)
    units = ys.shape[-1]
    ys = ys.reshape(ys.shape[0], *batch_shape, units)
    return ys, LSTMState(*(s.reshape(*batch_shape, units) for s in final))
