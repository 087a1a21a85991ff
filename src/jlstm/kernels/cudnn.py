"""NVIDIA cuDNN's LSTM through ``jax.experimental.rnn``, on jlstm's parameters.

cuDNN takes one flat float32 weight vector in PyTorch's layout (``W_ih`` ``(4H, D)``,
``W_hh`` ``(4H, H)``, then two biases ``b_ih``, ``b_hh``), gate order ``i, f, g, o``,
the same as Keras'. ``pack`` builds it from ``CellParams`` (``kernel.T``,
``recurrent_kernel.T``, ``bias``, zeros), so gradients flow back to the Keras-layout
parameters through ordinary JAX ops. ``jax.experimental.rnn.unpack_lstm_weights``
inverts ``pack`` and ``jax.experimental.rnn.lstm_ref`` runs the same layout anywhere,
which is how the packing is tested without a GPU.

Limits (declared in the mode's capability flags; ``"auto"`` falls back to another
mode for them): CUDA GPUs only, float32 only, the standard activations, no step masks
(cuDNN only knows right-padded lengths, whose outputs differ from Keras' masking), no
recurrent dropout, no forward-mode autodiff (``jax.experimental.rnn.lstm`` is a
``custom_vjp``), no ``vmap`` and no derivatives of derivatives (its primitives lack
those rules: under ``vmap`` the mode raises ``TRANSFORM_HINT``; a grad of a grad fails
inside JAX's transposition, out of the mode's reach). ``"auto"`` never picks it.
Matrix products run in full float32 (TF32 off), so results match the
other modes to float32 rounding.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ..types import CellParams, LSTMState
from . import common

__all__ = ["TRANSFORM_HINT", "pack", "run"]

TRANSFORM_HINT = (
    "implementation 'cudnn' (jax.experimental.rnn) has no batching (vmap), forward-mode "
    "or higher-order derivative rules; use implementation='auto' (or 'fused_jvp'), which "
    "runs every transform"
)


def pack(params: CellParams) -> jnp.ndarray:
    """The flat cuDNN weight vector ``(4H*D + 4H*H + 8H,)`` of one unidirectional layer."""
    units = params.recurrent_kernel.shape[0]
    dtype = params.kernel.dtype
    bias = jnp.zeros((4 * units,), dtype) if params.bias is None else params.bias
    return jnp.concatenate(
        [
            params.kernel.T.reshape(-1),
            params.recurrent_kernel.T.reshape(-1),
            bias,
            jnp.zeros((4 * units,), dtype),
        ]
    )


def run(params: CellParams, xs, state: LSTMState, *, mask, input_mask, recurrent_mask, options):
    """The ``"cudnn"`` mode: ``xs`` ``(T, B..., D)`` -> ``ys`` ``(T, B..., H)``."""
    from jax.experimental import rnn  # GPU-only module: imported when the mode runs

    dtype = xs.dtype  # before the input dropout mask may promote it
    xs, h0, c0, mask, recurrent_mask, batch_shape = common.prepare(
        "cudnn", xs, state, mask, input_mask, recurrent_mask, options
    )
    if mask is not None or recurrent_mask is not None:
        raise ValueError(
            "implementation 'cudnn' supports neither step masks nor recurrent dropout; "
            "use implementation='auto', which picks another mode for them"
        )
    if dtype != jnp.float32 or params.kernel.dtype != jnp.float32:
        raise ValueError(
            f"implementation 'cudnn' runs in float32 only, got {dtype} inputs and "
            f"{params.kernel.dtype} weights; use implementation='auto'"
        )
    steps, batch, features = xs.shape
    units = params.recurrent_kernel.shape[0]
    try:
        ys, h_n, c_n = rnn.lstm(
            jnp.swapaxes(xs, 0, 1),  # cuDNN is batch-major: (B, T, D)
            h0[None],
            c0[None],
            pack(params),
            jnp.full((batch,), steps, jnp.int32),
            input_size=features,
            hidden_size=units,
            num_layers=1,
            dropout=0.0,
            bidirectional=False,
            precision=lax.Precision.HIGHEST,  # full float32: no TF32
        )
    except NotImplementedError as err:  # jax.experimental.rnn's missing rules
        raise NotImplementedError(f"{TRANSFORM_HINT} ({err})") from err
    return common.unflatten(jnp.swapaxes(ys, 0, 1), LSTMState(h_n[0], c_n[0]), batch_shape)
