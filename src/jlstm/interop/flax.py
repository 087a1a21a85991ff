"""Flax ``nnx.OptimizedLSTMCell`` <-> jlstm ``CellParams``.

``OptimizedLSTMCell`` holds ``dense_i.kernel`` ``(D, 4H)`` (no bias) and
``dense_h.kernel`` ``(H, 4H)`` with ``dense_h.bias`` ``(4H,)``; gates ``i, f, g, o``,
the Keras layout. Its carry is ``(c, h)``: cell state first, the reverse of
``LSTMState(h, c)``; ``carry_to_state`` / ``state_to_carry`` swap them.
"""

from __future__ import annotations

from ..types import CellParams, LSTMState

__all__ = ["carry_to_state", "from_flax_cell", "state_to_carry", "to_flax_cell"]


def from_flax_cell(cell) -> CellParams:
    """Copy an ``nnx.OptimizedLSTMCell``'s weights into ``CellParams``."""
    import jax.numpy as jnp

    bias = cell.dense_h.bias
    return CellParams(
        jnp.asarray(cell.dense_i.kernel[...]),
        jnp.asarray(cell.dense_h.kernel[...]),
        None if bias is None else jnp.asarray(bias[...]),
    )


def to_flax_cell(params: CellParams, *, seed: int = 0):
    """An ``nnx.OptimizedLSTMCell`` holding ``params`` (``bias=None`` becomes zeros)."""
    import jax.numpy as jnp
    from flax import nnx

    in_features, four_h = params.kernel.shape
    cell = nnx.OptimizedLSTMCell(
        in_features, four_h // 4, param_dtype=params.kernel.dtype, rngs=nnx.Rngs(seed)
    )
    cell.dense_i.kernel[...] = params.kernel
    cell.dense_h.kernel[...] = params.recurrent_kernel
    bias = params.bias if params.bias is not None else jnp.zeros((four_h,), params.kernel.dtype)
    cell.dense_h.bias[...] = bias
    return cell


def carry_to_state(carry) -> LSTMState:
    """Flax carry ``(c, h)`` -> ``LSTMState(h, c)``."""
    c, h = carry
    return LSTMState(h, c)


def state_to_carry(state: LSTMState):
    """``LSTMState(h, c)`` -> Flax carry ``(c, h)``."""
    return (state.c, state.h)
