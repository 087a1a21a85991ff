"""Keras' step with the input projection hoisted out of the scan.

``x_t @ W + b`` does not depend on the recurrence, so all ``T`` of them are one
``(T*B, D) @ (D, 4H)`` product before the loop; the loop keeps only
``h_{t-1} @ U``. Any activations; plain autodiff (forward and reverse mode). It pays
when ``D`` is comparable to ``H``; at ``D = 1`` with large ``B*T`` the precomputed
``(T, B, 4H)`` array costs more memory traffic than it saves (``benchmarks/README.md``).
"""

from __future__ import annotations

from jax import lax

from ..activations import get_activation
from ..types import CellParams, LSTMState
from .common import masked_update

__all__ = ["run"]


def run(params: CellParams, xs, state: LSTMState, *, mask, input_mask, recurrent_mask, options):
    """The ``"hoisted"`` mode: ``xs`` ``(T, B..., D)`` -> ``ys`` ``(T, B..., H)``."""
    act = get_activation(options.activation)
    ract = get_activation(options.recurrent_activation)
    units = params.recurrent_kernel.shape[0]
    if input_mask is not None:
        xs = xs * input_mask
    xw = xs @ params.kernel  # (T, B..., 4H), one product for every step
    if params.bias is not None:
        xw = xw + params.bias

    def step(carry: LSTMState, inputs):
        h, c = carry
        xw_t, m_t = inputs
        h_in = h if recurrent_mask is None else h * recurrent_mask
        z = xw_t + h_in @ params.recurrent_kernel
        z_i, z_f, z_g, z_o = (z[..., k * units : (k + 1) * units] for k in range(4))
        c_new = ract(z_f) * c + ract(z_i) * act(z_g)
        h_new = ract(z_o) * act(c_new)
        if m_t is None:
            return LSTMState(h_new, c_new), h_new
        h_t, c_t, out = masked_update(
            m_t[..., None], h_new, c_new, h, c, options.zero_output_for_mask
        )
        return LSTMState(h_t, c_t), out

    unroll = options.scan_unroll(xs.shape[0])
    final, ys = lax.scan(step, LSTMState(*state), (xw, mask), unroll=unroll)
    return ys, final
