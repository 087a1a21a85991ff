"""One LSTM layer over a sequence: ``jlstm.cell`` scanned over time.

``lstm_layer`` owns the time-axis options (Keras' ``LSTM`` layer arguments):
``initial_state``, ``mask``, ``return_sequences``, ``return_state``,
``go_backwards``, ``unroll``, dropout; the step itself runs through an
implementation mode from ``jlstm.modes``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .activations import ActivationSpec, get_activation
from .cell import init_cell_params
from .constraints import ConstraintSpec, get_constraint
from .initializers import InitializerSpec, get_initializer
from .masking import step_mask
from .modes import RecurrenceOptions, get_mode, resolve_mode
from .regularizers import RegularizerSpec, get_regularizer
from .types import Array, BidirectionalParams, CellParams, LSTMState, register_for_export

__all__ = [
    "DropoutMasks",
    "LayerConfig",
    "draw_dropout_masks",
    "dropout_masks",
    "init_layer_params",
    "lstm_layer",
]

# Keras Bidirectional merge modes a stacked layer may use (merge_mode=None returns two
# outputs, which no next layer can read: use jlstm.bidirectional_layer for it).
_STACK_MERGE_MODES = ("concat", "sum", "mul", "ave")
_REGULARIZER_FIELDS = (
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "activity_regularizer",
)
_CONSTRAINT_FIELDS = ("kernel_constraint", "recurrent_constraint", "bias_constraint")


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """The options of one LSTM layer (Keras ``LSTM`` arguments, same names and defaults).

    Hashable, so it can be a static argument of ``jit``. ``ModelConfig.layers``
    builds these for a stacked model.

    Beyond Keras' ``LSTM`` arguments: ``forget_bias`` (the value ``unit_forget_bias``
    puts in the forget block, Keras: 1.0); ``bidirectional``, ``False`` or a Keras
    ``Bidirectional`` merge mode (``"concat"``, ``"sum"``, ``"mul"``, ``"ave"``;
    ``True`` means ``"concat"``); ``output_dropout``, the rate of a Keras ``Dropout``
    layer after this one. Regularizers and constraints take names, Keras-style dicts
    or instances from ``jlstm.regularizers`` / ``jlstm.constraints``, and are stored
    as instances (hashable).
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
    implementation: int | str = "auto"
    go_backwards: bool = False
    unroll: bool | int = False
    zero_output_for_mask: bool = False
    bidirectional: bool | str = False
    kernel_regularizer: RegularizerSpec = None
    recurrent_regularizer: RegularizerSpec = None
    bias_regularizer: RegularizerSpec = None
    activity_regularizer: RegularizerSpec = None
    kernel_constraint: ConstraintSpec = None
    recurrent_constraint: ConstraintSpec = None
    bias_constraint: ConstraintSpec = None
    output_dropout: float = 0.0

    def __post_init__(self):
        for name in ("units", "input_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("dropout", "recurrent_dropout", "output_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        merge = self.bidirectional
        if merge is True:
            merge = "concat"
        elif merge is None or merge is False:
            merge = False
        elif merge not in _STACK_MERGE_MODES:
            raise ValueError(
                f"bidirectional must be False, True or one of {_STACK_MERGE_MODES}, got {merge!r}"
                + (
                    "; merge_mode=None returns two outputs: use jlstm.bidirectional_layer"
                    if merge in ("none", "None")
                    else ""
                )
            )
        object.__setattr__(self, "bidirectional", merge)
        if merge and self.go_backwards:
            raise ValueError(
                "a bidirectional layer already reads both ways: go_backwards must be False "
                "(Keras' Bidirectional rejects it too)"
            )
        # Stored resolved so that dict specs (Keras' serialisation) stay hashable.
        for name in _REGULARIZER_FIELDS:
            object.__setattr__(self, name, get_regularizer(getattr(self, name)))
        for name in _CONSTRAINT_FIELDS:
            object.__setattr__(self, name, get_constraint(getattr(self, name)))
        get_activation(self.activation)
        get_activation(self.recurrent_activation)
        for name in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
            get_initializer(getattr(self, name))
        get_mode(self.implementation)  # raises with the list of modes
        if isinstance(self.unroll, int) and not isinstance(self.unroll, bool) and self.unroll < 1:
            raise ValueError(f"unroll must be a bool or a positive integer, got {self.unroll!r}")

    @property
    def output_size(self) -> int:
        """Features per step this layer emits: ``2 * units`` for a concat bidirectional layer."""
        return 2 * self.units if self.bidirectional == "concat" else self.units


def init_layer_params(
    key: Array, config: LayerConfig, dtype=jnp.float32
) -> CellParams | BidirectionalParams:
    """Initial ``CellParams`` for a ``LayerConfig`` (``BidirectionalParams`` for a
    bidirectional one, each direction from its own key)."""
    if config.bidirectional:
        k_forward, k_backward = jax.random.split(key)
        return BidirectionalParams(
            _init_cell(k_forward, config, dtype), _init_cell(k_backward, config, dtype)
        )
    return _init_cell(key, config, dtype)


def _init_cell(key: Array, config: LayerConfig, dtype) -> CellParams:
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


@register_for_export
class DropoutMasks(NamedTuple):
    """The variational dropout masks of one layer call, reused at every step.

    Attributes:
        input: ``(B..., D)``, or ``(4, B..., D)`` with one mask per gate; ``None`` for none.
        recurrent: ``(B..., H)`` or ``(4, B..., H)``; ``None`` for none.

    Values are 0 (dropped) or ``1 / (1 - rate)`` (kept), as Keras draws them.
    """

    input: Array | None
    recurrent: Array | None


def draw_dropout_masks(
    key: Array,
    batch_shape: tuple[int, ...],
    input_size: int,
    units: int,
    dtype=jnp.float32,
    *,
    dropout: float,
    recurrent_dropout: float,
    per_gate: bool,
) -> DropoutMasks:
    """Draw one layer call's masks as Keras does: once per sequence, from ``key``.

    The input mask has shape ``(*batch_shape, input_size)`` and the recurrent one
    ``(*batch_shape, units)``, each with a leading axis of 4 when ``per_gate`` (Keras
    implementation 1). Same key, same masks.
    """
    k_in, k_rec = jax.random.split(key)
    return DropoutMasks(
        dropout_masks(k_in, dropout, (*batch_shape, input_size), dtype, per_gate=per_gate),
        dropout_masks(k_rec, recurrent_dropout, (*batch_shape, units), dtype, per_gate=per_gate),
    )


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
    implementation: int | str = "auto",
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    training: bool = False,
    key: Array | None = None,
    zero_output_for_mask: bool = False,
    seq_lengths: Array | None = None,
    fixed_dropout_masks: DropoutMasks | None = None,
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
            (variational dropout). Only active when ``training`` is true. As in Keras 3,
            implementation 1 draws one mask per gate and implementation 2 one mask,
            and ``recurrent_dropout > 0`` runs implementation 1 (``"keras1"``) in
            training whatever mode was asked for.
        training: whether dropout is active.
        key: PRNG key for the dropout masks (required when dropout is active).
        zero_output_for_mask: emit zeros at masked steps instead of the previous output.
        seq_lengths: ``(B...,)`` integer lengths of right-padded sequences, a shortcut
            for ``mask=jlstm.masking.sequence_mask(seq_lengths, T)``.
        fixed_dropout_masks: ``DropoutMasks`` to use in training instead of drawing them
            from ``key`` (fixed-mask Monte Carlo dropout, or another framework's draw);
            shapes as ``draw_dropout_masks`` returns them.

    Returns:
        ``outputs`` (``(B..., T, H)`` or ``(B..., H)``), or ``(outputs, LSTMState)`` with
        ``return_state``. With ``return_sequences=False`` the output is the last
        step's (so a masked last step gives the previous output, as Keras).
    """
    if x.ndim < 2 or x.shape[-2] == 0:
        raise ValueError(
            f"x must have shape (batch..., steps, features) with steps >= 1, got {x.shape}"
        )
    kernel = params.kernel
    if x.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"x has {x.shape[-1]} features but the kernel expects {kernel.shape[0]} "
            f"(kernel shape {kernel.shape})"
        )
    units = params.recurrent_kernel.shape[0]
    batch_shape = x.shape[:-2]
    if initial_state is None:
        # Zeros made from the inputs, so that they carry the inputs' sharding and
        # varying manual axes (shard_map's check_vma): a scan carry must keep its type.
        zeros = jnp.broadcast_to(jnp.zeros_like(x[..., 0, :1]), (*batch_shape, units))
        initial_state = LSTMState(zeros, zeros)
    else:
        initial_state = LSTMState(*initial_state)
        for part in initial_state:
            if part.shape != (*batch_shape, units):
                raise ValueError(
                    f"initial_state parts must have shape {(*batch_shape, units)}, got {part.shape}"
                )

    mask = step_mask(mask, seq_lengths, x.shape[-2])
    has_input_drop, has_recurrent_drop = dropout > 0.0, recurrent_dropout > 0.0
    if fixed_dropout_masks is not None:
        has_input_drop = fixed_dropout_masks.input is not None
        has_recurrent_drop = fixed_dropout_masks.recurrent is not None
    use_dropout = training and (has_input_drop or has_recurrent_drop)
    mode = resolve_mode(implementation, mask=mask is not None)
    if use_dropout and has_recurrent_drop and not mode.gate_masks:
        # Keras 3 forces implementation 1 when recurrent_dropout > 0: one mask per gate
        # for the inputs and for the state. Follow it so the noise is Keras'.
        mode = resolve_mode(1, mask=mask is not None)

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
    if use_dropout and fixed_dropout_masks is not None:
        input_mask, recurrent_mask = _check_fixed_masks(
            fixed_dropout_masks, batch_shape, x.shape[-1], units, mode.gate_masks
        )
    elif use_dropout:
        if key is None:
            raise ValueError("dropout in training needs a PRNG key: pass key=jax.random.key(...)")
        input_mask, recurrent_mask = draw_dropout_masks(
            key,
            batch_shape,
            x.shape[-1],
            units,
            x.dtype,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            per_gate=mode.gate_masks,
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


def _check_fixed_masks(
    masks: DropoutMasks, batch_shape: tuple[int, ...], input_size: int, units: int, per_gate: bool
) -> DropoutMasks:
    """Validate user-given dropout masks against the shapes the chosen mode needs."""
    out = []
    pairs = (("input", masks.input, input_size), ("recurrent", masks.recurrent, units))
    for name, mask, width in pairs:
        if mask is None:
            out.append(None)
            continue
        shared = (*batch_shape, width)
        allowed = [(4, *shared)] if per_gate else [shared]
        if mask.shape not in allowed:
            hint = " (implementation 1, or a call with recurrent_dropout, takes one per gate)"
            raise ValueError(
                f"fixed_dropout_masks.{name} must have shape {allowed[0]}, got {mask.shape}{hint}"
            )
        out.append(mask)
    return DropoutMasks(*out)
