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

**Inference only.** The one GPU run recorded (NVIDIA H200, jax/jaxlib 0.11.2, CUDA 13;
``benchmarks/results/gpu/``) found the forward pass within 2.5e-8 of the float64
reference, but the weight gradients of the seed model through
``jax.experimental.rnn.lstm`` wrong by a relative error of 0.57 (a direct call of
``jax.experimental.rnn.lstm`` in a small program agreed with ``lstm_ref`` to 2e-7, so
the fault depends on the surrounding program; JAX's backward accumulates cuDNN's weight
gradient into an aliased zeros buffer, ``CUDNN_WGRAD_MODE_ADD``). Until a GPU run shows
correct gradients, differentiating through this mode raises ``GRADIENT_HINT`` instead
of returning wrong numbers; it was also slower than ``auto`` on that card, forward and
training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ..types import CellParams, LSTMState
from . import common

__all__ = ["GRADIENT_HINT", "TRANSFORM_HINT", "inference_only", "pack", "run"]

TRANSFORM_HINT = (
    "implementation 'cudnn' (jax.experimental.rnn) has no batching (vmap), forward-mode "
    "or higher-order derivative rules; use implementation='auto' (or 'fused_jvp'), which "
    "runs every transform"
)

GRADIENT_HINT = (
    "implementation 'cudnn' is inference-only: on the recorded GPU run (H200, jax 0.11.2) "
    "its weight gradients through jax.experimental.rnn were wrong (relative error 0.57; "
    "benchmarks/results/gpu/gpu_check.md); train with implementation='auto'"
)


@jax.custom_vjp
def inference_only(x):
    """The identity, whose reverse-mode derivative raises ``GRADIENT_HINT`` (a ``ValueError``)."""
    return x


def _inference_only_fwd(x):
    return x, None


def _inference_only_bwd(_, cotangent):
    raise ValueError(GRADIENT_HINT)


inference_only.defvjp(_inference_only_fwd, _inference_only_bwd)


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
        # Every differentiable input goes through the guard: a gradient raises, never lies.
        ys, h_n, c_n = rnn.lstm(
            inference_only(jnp.swapaxes(xs, 0, 1)),  # cuDNN is batch-major: (B, T, D)
            inference_only(h0[None]),
            inference_only(c0[None]),
            inference_only(pack(params)),
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
