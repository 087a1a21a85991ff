"""A bidirectional LSTM layer with Keras ``Bidirectional`` semantics.

Keras' ``Bidirectional(LSTM(...))`` runs two copies of the layer on the same
input: the forward one as given and a backward one with ``go_backwards=True``,
each with its own weights. Then:

* the backward layer reverses the whole time axis and the mask (a plain reversal:
  see ``jlstm.masking`` for how it treats padding); with ``return_sequences`` its
  outputs, which come out in processing order, are flipped back so that step ``t``
  of both outputs belongs to input step ``t``; without, its output is its last
  processed step, i.e. the one at input step 0;
* both layers emit zeros at masked steps when they return sequences and the
  previous output otherwise (Keras sets ``zero_output_for_mask = return_sequences``);
* the two outputs are merged: ``concat`` (forward features first), ``sum``, ``mul``,
  ``ave`` or ``None`` (both returned);
* ``initial_state`` and the returned states are the forward layer's then the backward
  layer's (Keras' flat ``[h_f, c_f, h_b, c_b]``; here a ``BidirectionalState``).

Dropout masks are drawn separately for each direction (one key split in two).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .activations import ActivationSpec
from .layer import STACK_MERGE_MODES, DropoutMasks, lstm_layer
from .masking import step_mask
from .types import Array, BidirectionalParams, LSTMState, register_for_export

__all__ = ["MERGE_MODES", "BidirectionalState", "bidirectional_layer", "merge_outputs"]

# A stacked layer's merge modes, and None: return both outputs.
MERGE_MODES = (*STACK_MERGE_MODES, None)


@register_for_export
class BidirectionalState(NamedTuple):
    """The states of a bidirectional layer: forward first, as Keras orders them.

    Attributes:
        forward: ``LSTMState`` of the forward layer, ``h, c`` each ``(B..., H)``.
        backward: ``LSTMState`` of the backward layer.
    """

    forward: LSTMState
    backward: LSTMState


def as_bidirectional_state(state) -> BidirectionalState:
    """Accept a ``BidirectionalState``, a pair of ``(h, c)``, or Keras' flat
    ``(h_f, c_f, h_b, c_b)``."""
    if isinstance(state, BidirectionalState):
        return state
    state = tuple(state)
    if len(state) == 4:
        return BidirectionalState(LSTMState(*state[:2]), LSTMState(*state[2:]))
    if len(state) == 2:
        return BidirectionalState(LSTMState(*state[0]), LSTMState(*state[1]))
    raise ValueError(
        "a bidirectional initial state is a BidirectionalState, a (forward, backward) pair "
        f"of (h, c), or Keras' flat (h_f, c_f, h_b, c_b); got {len(state)} parts"
    )


def merge_outputs(y: Array, y_rev: Array, merge_mode: str | None):
    """Merge the forward and (time-aligned) backward outputs as Keras does.

    Args:
        y, y_rev: ``(B..., [T,] H)`` each.
        merge_mode: ``"concat"`` -> ``(..., 2H)`` forward first; ``"sum"``, ``"mul"``,
            ``"ave"`` -> ``(..., H)``; ``None`` -> the pair ``(y, y_rev)``.
    """
    if merge_mode == "concat":
        return jnp.concatenate([y, y_rev], axis=-1)
    if merge_mode == "sum":
        return y + y_rev
    if merge_mode == "mul":
        return y * y_rev
    if merge_mode == "ave":
        return (y + y_rev) / 2
    if merge_mode is None:
        return (y, y_rev)
    raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")


def bidirectional_layer(
    params: BidirectionalParams,
    x: Array,
    *,
    merge_mode: str | None = "concat",
    initial_state: BidirectionalState | Sequence | None = None,
    mask: Array | None = None,
    seq_lengths: Array | None = None,
    return_sequences: bool = False,
    return_state: bool = False,
    unroll: bool | int = False,
    activation: ActivationSpec = "tanh",
    recurrent_activation: ActivationSpec = "sigmoid",
    implementation: int | str = "auto",
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    training: bool = False,
    key: Array | None = None,
    zero_output_for_mask: bool | None = None,
    fixed_dropout_masks: tuple[DropoutMasks, DropoutMasks] | None = None,
):
    """Run a bidirectional LSTM layer over a sequence (Keras ``Bidirectional(LSTM)``).

    Args:
        params: ``BidirectionalParams(forward, backward)``, each ``CellParams`` with
            kernel ``(D, 4H)``, recurrent_kernel ``(H, 4H)``, bias ``(4H,)`` or ``None``.
        x: ``(B..., T, D)`` inputs.
        merge_mode: ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"`` or ``None``.
        initial_state: a ``BidirectionalState`` (or see ``as_bidirectional_state``);
            zeros if ``None``.
        mask: ``(B..., T)`` step mask of any pattern (``True`` = real step).
        seq_lengths: ``(B...,)`` right-padded lengths, instead of ``mask``.
        return_sequences: outputs at every step, ``(B..., T, H')``, instead of the last.
        return_state: also return the final ``BidirectionalState``.
        zero_output_for_mask: ``None`` follows Keras (``return_sequences``).
        fixed_dropout_masks: per-direction ``DropoutMasks`` (forward, backward) to use
            instead of drawing them from ``key``.
        unroll, activation, recurrent_activation, implementation: as ``lstm_layer``, for
            both directions.
        dropout, recurrent_dropout, training, key: as ``lstm_layer``, for both directions.

    Returns:
        The merged output: ``(B..., [T,] 2H)`` for ``concat``, ``(B..., [T,] H)`` for the
        others, the pair ``(y_forward, y_backward)`` for ``None`` (the backward one
        time-aligned with the input); with ``return_state``, ``(output, state)``.
    """
    if not isinstance(params, BidirectionalParams):
        raise TypeError(
            f"bidirectional_layer needs BidirectionalParams(forward, backward), got "
            f"{type(params).__name__}; build them with jlstm.init_layer_params(key, "
            "LayerConfig(..., bidirectional='concat'))"
        )
    if merge_mode not in MERGE_MODES:
        raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {merge_mode!r}")
    mask = step_mask(mask, seq_lengths, x.shape[-2])
    states = (None, None) if initial_state is None else as_bidirectional_state(initial_state)
    if zero_output_for_mask is None:
        zero_output_for_mask = return_sequences
    keys = (None, None) if key is None else tuple(jax.random.split(key))
    fixed = (None, None) if fixed_dropout_masks is None else tuple(fixed_dropout_masks)
    common = dict(
        mask=mask,
        return_sequences=return_sequences,
        return_state=True,
        unroll=unroll,
        activation=activation,
        recurrent_activation=recurrent_activation,
        implementation=implementation,
        dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        training=training,
        zero_output_for_mask=zero_output_for_mask,
    )
    y, forward_state = lstm_layer(
        params.forward,
        x,
        initial_state=states[0],
        go_backwards=False,
        key=keys[0],
        fixed_dropout_masks=fixed[0],
        **common,
    )
    y_rev, backward_state = lstm_layer(
        params.backward,
        x,
        initial_state=states[1],
        go_backwards=True,
        key=keys[1],
        fixed_dropout_masks=fixed[1],
        **common,
    )
    if return_sequences:
        y_rev = jnp.flip(y_rev, axis=-2)
    output = merge_outputs(y, y_rev, merge_mode)
    if return_state:
        return output, BidirectionalState(forward_state, backward_state)
    return output
