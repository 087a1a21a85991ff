"""One LSTM layer over a sequence: ``jlstm.cell`` scanned over time.

``lstm_layer`` owns the time-axis options (Keras' ``LSTM`` layer arguments):
``initial_state``, ``mask``, ``return_sequences``, ``return_state``,
``go_backwards``, ``unroll``, dropout; the step itself runs through an
implementation mode from ``jlstm.modes``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .activations import ActivationSpec, get_activation
from .cell import init_cell_params, zero_state
from .initializers import InitializerSpec, get_initializer
from .modes import RecurrenceOptions, get_mode, resolve_mode, valid_implementation
from .types import Array, CellParams, LSTMState

__all__ = ["LayerConfig", "dropout_masks", "init_layer_params", "lstm_layer"]


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """The options of one LSTM layer (Keras ``LSTM`` arguments, same names and defaults).

    Hashable, so it can be a static argument of ``jit``. ``ModelConfig.layer(i)``
    builds these for a stacked model.
    """

    units: int
    input_size: int
    activation: ActivationSpec = "tanh"
    recurrent_activation: ActivationSpec = "sigmoid"
    use_bias: bool = True
    kernel_initializer: InitializerSpec = "glorot_uniform"
    recurrent_initializer: InitializerSpec = "orthogonal"
    bias_initializer: InitializerSpec = "zeros"
    unit_forget_bias: bool = True
    forget_bias: float = 1.0
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    implementation: int | str = 2
    go_backwards: bool = False
    unroll: bool | int = False
    zero_output_for_mask: bool = False

    def __post_init__(self):
        for name in ("units", "input_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("dropout", "recurrent_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        get_activation(self.activation)
        get_activation(self.recurrent_activation)
        for name in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
            get_initializer(getattr(self, name))
        if not valid_implementation(self.implementation):
            get_mode(self.implementation)  # raises with the list of modes
        if isinstance(self.unroll, int) and not isinstance(self.unroll, bool) and self.unroll < 1:
            raise ValueError(f"unroll must be a bool or a positive integer, got {self.unroll!r}")


def init_layer_params(key: Array, config: LayerConfig, dtype=jnp.float32) -> CellParams:
    """Initial ``CellParams`` for a ``LayerConfig``."""
    return init_cell_params(
        key,
        config.input_size,
        config.units,
        use_bias=config.use_bias,
        kernel_initializer=config.kernel_initializer,
        recurrent_initializer=config.recurrent_initializer,
        bias_initializer=config.bias_initializer,
        unit_forget_bias=config.unit_forget_bias,
        forget_bias=config.forget_bias,
        dtype=dtype,
    )


def dropout_masks(
    key: Array, rate: float, shape: tuple[int, ...], dtype, *, per_gate: bool
) -> Array | None:
    """A Keras dropout mask: 0 with probability ``rate``, else ``1 / (1 - rate)``.

    Shape ``shape``, or ``(4, *shape)`` with ``per_gate`` (one mask per gate).
    Returns ``None`` for ``rate == 0``.
    """
    if rate == 0.0:
        return None
    full = (4, *shape) if per_gate else shape
    keep = jax.random.bernoulli(key, 1.0 - rate, full)
    return keep.astype(dtype) / jnp.asarray(1.0 - rate, dtype)


def lstm_layer(
    params: CellParams,
    x: Array,
    *,
    initial_state: LSTMState | None = None,
    mask: Array | None = None,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    unroll: bool | int = False,
    activation: ActivationSpec = "tanh",
    recurrent_activation: ActivationSpec = "sigmoid",
    implementation: int | str = 2,
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    training: bool = False,
    key: Array | None = None,
    zero_output_for_mask: bool = False,
):
    """Run one LSTM layer over a sequence, with Keras ``LSTM`` semantics.

    Args:
        params: ``CellParams`` (kernel ``(D, 4H)``, recurrent_kernel ``(H, 4H)``, bias).
        x: ``(B..., T, D)`` inputs, batch-major as in Keras (any number of leading
            batch axes, including none: ``(T, D)`` is one sequence).
        initial_state: ``LSTMState`` with ``h, c`` of shape ``(B..., H)``; zeros if ``None``.
        mask: ``(B..., T)`` boolean (or 0/1) step mask of any pattern. A masked step
            keeps ``h`` and ``c`` and emits the previous output (zeros with
            ``zero_output_for_mask``), as Keras does.
        return_sequences: return every step's output ``(B..., T, H)`` instead of the
            last ``(B..., H)``.
        return_state: also return the final ``LSTMState``.
        go_backwards: process the sequence (and mask) from the last step to the first;
            the returned sequence stays in processing order (reversed), as in Keras.
        unroll: ``True`` unrolls the whole loop; an integer unrolls that many steps per
            iteration (``lax.scan``'s ``unroll``). ``False`` keeps a rolled loop.
        activation, recurrent_activation: as in ``cell_step``.
        implementation: Keras' 1 or 2, or a ``jlstm.modes`` name / ``"auto"``.
        dropout, recurrent_dropout: fractions of the inputs / recurrent state to drop,
            with masks drawn once per sequence from ``key`` and reused at every step
            (variational dropout). Only active when ``training`` is true.
        training: whether dropout is active.
        key: PRNG key for the dropout masks (required when dropout is active).

    Returns:
        ``outputs`` (``(B..., T, H)`` or ``(B..., H)``), or ``(outputs, LSTMState)`` with
        ``return_state``. With ``return_sequences=False`` the output is the last
        step's (so a masked last step gives the previous output, as Keras).
    """
    if x.ndim < 2:
        raise ValueError(f"x must have shape (B..., T, D), got {x.shape}")
    kernel = params.kernel
    if x.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"x has {x.shape[-1]} features but the kernel expects {kernel.shape[0]} "
            f"(kernel shape {kernel.shape})"
        )
    units = params.recurrent_kernel.shape[0]
    batch_shape = x.shape[:-2]
    if initial_state is None:
        initial_state = zero_state(batch_shape, units, x.dtype)
    else:
        initial_state = LSTMState(*initial_state)
        for part in initial_state:
            if part.shape != (*batch_shape, units):
                raise ValueError(
                    f"initial_state parts must have shape {(*batch_shape, units)}, got {part.shape}"
                )

    use_dropout = training and (dropout > 0.0 or recurrent_dropout > 0.0)
    mode = resolve_mode(implementation, mask=mask is not None, dropout=use_dropout)

    xs = jnp.moveaxis(x, -2, 0)  # (T, B..., D): scan runs over the leading axis
    mask_t = None
    if mask is not None:
        if mask.shape != x.shape[:-1]:
            raise ValueError(f"mask must have shape (B..., T) = {x.shape[:-1]}, got {mask.shape}")
        mask_t = jnp.moveaxis(mask.astype(bool), -1, 0)
    if go_backwards:
        xs = xs[::-1]
        mask_t = None if mask_t is None else mask_t[::-1]

    input_mask = recurrent_mask = None
    if use_dropout:
        if key is None:
            raise ValueError("dropout in training needs a PRNG key: pass key=jax.random.key(...)")
        k_in, k_rec = jax.random.split(key)
        input_mask = dropout_masks(
            k_in, dropout, x.shape[:-2] + x.shape[-1:], x.dtype, per_gate=mode.gate_masks
        )
        recurrent_mask = dropout_masks(
            k_rec, recurrent_dropout, (*batch_shape, units), x.dtype, per_gate=mode.gate_masks
        )

    options = RecurrenceOptions(activation, recurrent_activation, unroll, zero_output_for_mask)
    ys, final = mode.run(
        params,
        xs,
        initial_state,
        mask=mask_t,
        input_mask=input_mask,
        recurrent_mask=recurrent_mask,
        options=options,
    )
    outputs = jnp.moveaxis(ys, 0, -2) if return_sequences else ys[-1]
    return (outputs, final) if return_state else outputs
