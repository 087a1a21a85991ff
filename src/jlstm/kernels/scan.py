"""Keras' own formulation: ``jlstm.cell.cell_step`` scanned over time (any activations).

``implementation=1`` runs four per-gate products per step (and takes one dropout mask
per gate), ``implementation=2`` one fused product; plain autodiff, so every transform
works through it.
"""

from __future__ import annotations

from jax import lax

from ..cell import cell_step
from ..types import CellParams, LSTMState
from .common import masked_update, static_size

__all__ = ["scan_cell"]


def scan_cell(implementation: int):
    """A mode ``run`` that scans ``cell_step`` with Keras' ``implementation`` (1 or 2)."""

    def run(params: CellParams, xs, state: LSTMState, *, mask, input_mask, recurrent_mask, options):
        def step(carry: LSTMState, inputs):
            x_t, m_t = inputs
            new, h = cell_step(
                params,
                carry,
                x_t,
                activation=options.activation,
                recurrent_activation=options.recurrent_activation,
                implementation=implementation,
                input_mask=input_mask,
                recurrent_mask=recurrent_mask,
            )
            if m_t is None:
                return new, h
            h_t, c_t, out = masked_update(
                m_t[..., None], new.h, new.c, carry.h, carry.c, options.zero_output_for_mask
            )
            # Not a no-op: with activations that return a narrower dtype than the state's,
            # h is narrower than carry.h, and the step's output keeps h's dtype.
            return LSTMState(h_t, c_t), out.astype(h.dtype)

        unroll = options.scan_unroll(static_size(xs.shape[0]))
        final, ys = lax.scan(step, LSTMState(*state), (xs, mask), unroll=unroll)
        return ys, final

    return run
