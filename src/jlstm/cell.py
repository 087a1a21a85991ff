r"""One LSTM step: the equations, in the Keras layout and Keras numerics.

For input ``x_t`` ``(B..., D)`` and state ``(h_{t-1}, c_{t-1})`` ``(B..., H)``, with
``W = kernel`` ``(D, 4H)``, ``U = recurrent_kernel`` ``(H, 4H)``, ``b = bias`` ``(4H,)``
split into gate blocks in the order ``i, f, g(c), o``::

    z_t = x_t @ W + h_{t-1} @ U + b                         (B..., 4H)
    i_t = sigma(z_i)    f_t = sigma(z_f)    o_t = sigma(z_o)  input, forget, output gates
    g_t = act(z_g)                                            candidate cell
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * act(c_t)

``sigma`` is the ``recurrent_activation`` (default sigmoid), ``act`` the
``activation`` (default tanh). This is Keras' ``LSTMCell`` exactly, including
the output ``h_t`` (no projection, no peepholes).

Implementation 1 forms the four gate pre-activations with four separate
``(B, D) @ (D, H)`` and ``(B, H) @ (H, H)`` products (so each gate can see its
own dropout mask, as Keras does); implementation 2 forms ``z_t`` with one fused
product each. They compute the same function; the faster one depends on shapes
and hardware (``jlstm.modes``).

Dropout enters as multiplicative masks (Keras' variational dropout): the input
mask multiplies ``x_t`` and the recurrent mask ``h_{t-1}``, before the products.
A mask with a leading axis of 4 gives each gate its own (implementation 1 only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .activations import ActivationSpec, get_activation
from .initializers import InitializerSpec, get_initializer
from .types import Array, CellParams, LSTMState

__all__ = ["cell_step", "init_cell_params", "zero_state"]


def init_cell_params(
    key: Array,
    input_size: int,
    units: int,
    *,
    use_bias: bool = True,
    kernel_initializer: InitializerSpec = "glorot_uniform",
    recurrent_initializer: InitializerSpec = "orthogonal",
    bias_initializer: InitializerSpec = "zeros",
    unit_forget_bias: bool = True,
    forget_bias: float = 1.0,
    dtype=jnp.float32,
) -> CellParams:
    """Initial weights of one LSTM layer, with Keras' defaults.

    The kernel initializer sees the whole fused ``(D, 4H)`` matrix and the
    recurrent one the whole ``(H, 4H)`` matrix, as in Keras (so Glorot's fans
    are ``D`` and ``4H``). With ``unit_forget_bias`` the forget block of the
    bias is ``forget_bias`` (Keras: 1.0) and the other three blocks come from
    ``bias_initializer``; ``forget_bias`` lets you pick another value (a large one
    such as 5 helps long-memory tasks).

    Args:
        key: a PRNG key.
        input_size: ``D``.
        units: ``H``.
        dtype: parameter dtype.

    Returns:
        ``CellParams(kernel (D, 4H), recurrent_kernel (H, 4H), bias (4H,) or None)``.
    """
    if input_size < 1 or units < 1:
        raise ValueError(f"input_size and units must be >= 1, got {input_size} and {units}")
    k_kernel, k_recurrent, k_bias, k_bias2 = jax.random.split(key, 4)
    kernel = get_initializer(kernel_initializer)(k_kernel, (input_size, 4 * units), dtype)
    recurrent = get_initializer(recurrent_initializer)(k_recurrent, (units, 4 * units), dtype)
    bias = None
    if use_bias:
        bias_init = get_initializer(bias_initializer)
        if unit_forget_bias:
            bias = jnp.concatenate(
                [
                    bias_init(k_bias, (units,), dtype),
                    jnp.full((units,), forget_bias, dtype),
                    bias_init(k_bias2, (2 * units,), dtype),
                ]
            )
        else:
            bias = bias_init(k_bias, (4 * units,), dtype)
    return CellParams(kernel, recurrent, bias)


def zero_state(batch_shape: tuple[int, ...], units: int, dtype=jnp.float32) -> LSTMState:
    """An all-zero ``LSTMState`` with ``h`` and ``c`` of shape ``(*batch_shape, units)``."""
    zeros = jnp.zeros((*batch_shape, units), dtype)
    return LSTMState(zeros, zeros)


def _per_gate(mask: Array | None, x: Array) -> list[Array]:
    """Four gate copies of ``x``, each times its mask (a shared mask or one per gate)."""
    if mask is None:
        return [x] * 4
    if mask.ndim == x.ndim + 1:
        if mask.shape[0] != 4:
            raise ValueError(f"a per-gate dropout mask needs a leading axis of 4, got {mask.shape}")
        return [x * mask[k] for k in range(4)]
    return [x * mask] * 4


def cell_step(
    params: CellParams,
    state: LSTMState,
    x: Array,
    *,
    activation: ActivationSpec = "tanh",
    recurrent_activation: ActivationSpec = "sigmoid",
    implementation: int = 2,
    input_mask: Array | None = None,
    recurrent_mask: Array | None = None,
) -> tuple[LSTMState, Array]:
    """Advance one LSTM layer by one time step (equations in the module docstring).

    The signature is a ``lax.scan`` body once ``params`` is bound:
    ``(state, x_t) -> (new_state, h_t)``. Leading batch axes are free (none, one or
    several), so the step works per example under ``vmap`` as well as batched.

    Args:
        params: ``CellParams`` with kernel ``(D, 4H)``, recurrent_kernel ``(H, 4H)``,
            bias ``(4H,)`` or ``None``.
        state: ``LSTMState(h, c)``, each ``(B..., H)``.
        x: ``(B..., D)`` input at this step.
        activation: cell/candidate activation (name, callable or None = linear).
        recurrent_activation: gate activation.
        implementation: 1 (four per-gate products) or 2 (one fused product).
        input_mask: optional dropout mask for ``x``: ``(B..., D)``, or ``(4, B..., D)``
            for one mask per gate (implementation 1 only).
        recurrent_mask: the same for ``h``: ``(B..., H)`` or ``(4, B..., H)``.

    Returns:
        ``(LSTMState(h_t, c_t), h_t)``, all ``(B..., H)`` in the dtype of the inputs.
    """
    act = get_activation(activation)
    ract = get_activation(recurrent_activation)
    h_prev, c_prev = state
    if implementation == 1:
        units = params.recurrent_kernel.shape[0]
        xs = _per_gate(input_mask, x)
        hs = _per_gate(recurrent_mask, h_prev)
        z = []
        for k in range(4):
            cols = slice(k * units, (k + 1) * units)
            z_k = xs[k] @ params.kernel[:, cols]
            if params.bias is not None:
                z_k = z_k + params.bias[cols]
            z.append(z_k + hs[k] @ params.recurrent_kernel[:, cols])
        z_i, z_f, z_g, z_o = z
    elif implementation == 2:
        for name, mask in (("input_mask", input_mask), ("recurrent_mask", recurrent_mask)):
            if mask is not None and mask.ndim == (x if name == "input_mask" else h_prev).ndim + 1:
                raise ValueError(
                    f"implementation 2 takes one shared {name}, not one per gate; "
                    "use implementation=1 for per-gate masks"
                )
        if input_mask is not None:
            x = x * input_mask
        if recurrent_mask is not None:
            h_prev = h_prev * recurrent_mask
        z = x @ params.kernel + h_prev @ params.recurrent_kernel
        if params.bias is not None:
            z = z + params.bias
        z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=-1)
    else:
        raise ValueError(f"cell_step implementation must be 1 or 2, got {implementation!r}")
    i = ract(z_i)
    f = ract(z_f)
    o = ract(z_o)
    c = f * c_prev + i * act(z_g)
    h = o * act(c)
    return LSTMState(h, c), h
