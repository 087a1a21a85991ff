"""A stack of LSTM layers, threaded bottom-up like ``stax.serial``.

Every layer but the top one returns its whole sequence to the next; the top
layer returns its sequence or only its last output. The step mask, when given,
is passed to every layer unchanged (Keras propagates it through
``return_sequences`` layers, also past a ``go_backwards`` layer whose outputs
are reversed). A layer is unidirectional or bidirectional (``LayerConfig.bidirectional``,
Keras ``Bidirectional`` semantics: ``jlstm.bidirectional``), and may be followed
by a Keras ``Dropout`` layer (``LayerConfig.output_dropout``). Dropout keys are
split per layer from one key.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .bidirectional import bidirectional_layer, merge_outputs
from .layer import LayerConfig, init_layer_params, lstm_layer
from .types import Array, BidirectionalParams, CellParams
from .validation import check_layer_count, require_dropout_key

__all__ = ["apply_stack", "dropout", "init_stack"]


def dropout(x: Array, rate: float, *, key: Array) -> Array:
    """A Keras ``Dropout`` layer in training: each element kept with probability
    ``1 - rate`` and scaled by ``1 / (1 - rate)``, independently (no reuse over time).

    Args:
        x: any shape and float dtype.

    Returns:
        An array like ``x``.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}")
    if rate == 0.0:
        return x
    require_dropout_key(key)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def init_stack(
    key: Array, configs: Sequence[LayerConfig], dtype
) -> tuple[CellParams | BidirectionalParams, ...]:
    """Initial parameters of each layer in ``configs``, one key per layer."""
    keys = jax.random.split(key, len(configs))
    return tuple(init_layer_params(k, cfg, dtype) for k, cfg in zip(keys, configs, strict=True))


def apply_stack(
    layers: Sequence[CellParams],
    x: Array,
    configs: Sequence[LayerConfig],
    *,
    return_sequences: bool = False,
    mask: Array | None = None,
    initial_states: Sequence | None = None,
    training: bool = False,
    key: Array | None = None,
    collect_outputs: bool = False,
):
    """Run the stack on ``x`` ``(B..., T, D)``.

    Args:
        layers: per layer, ``CellParams`` or (bidirectional) ``BidirectionalParams``.
        configs: the matching ``LayerConfig``s.
        initial_states: per layer ``LSTMState`` (``BidirectionalState`` for a
            bidirectional layer) or ``None`` for zeros.
        collect_outputs: also return each layer's raw outputs (for activity
            regularizers).

    Returns:
        ``(y, final_states)``: ``y`` is the top layer's output (after its
        ``output_dropout``), ``(B..., T, H_top)`` with ``return_sequences`` else
        ``(B..., H_top)`` (``H_top`` doubled by a concat bidirectional layer);
        ``final_states`` one ``LSTMState`` (or ``BidirectionalState``) per layer,
        bottom-up. With ``collect_outputs``, ``(y, final_states, outputs)`` where
        ``outputs[k]`` holds layer ``k``'s output per direction before merging and
        dropout: what each Keras ``LSTM`` layer returns.
    """
    check_layer_count(layers, configs)
    if initial_states is None:
        initial_states = (None,) * len(configs)
    if len(initial_states) != len(configs):
        raise ValueError(f"{len(initial_states)} initial states for {len(configs)} layers")
    keys = (None,) * len(configs) if key is None else tuple(jax.random.split(key, len(configs)))
    finals = []
    outputs = []
    h = x
    for idx, (params, cfg) in enumerate(zip(layers, configs, strict=True)):
        top = idx == len(configs) - 1
        if isinstance(params, BidirectionalParams) != bool(cfg.bidirectional):
            raise ValueError(
                f"layer {idx}: config bidirectional={cfg.bidirectional!r} but params are "
                f"{type(params).__name__}"
            )
        common = dict(
            initial_state=initial_states[idx],
            mask=mask,
            return_sequences=return_sequences or not top,
            return_state=True,
            unroll=cfg.unroll,
            activation=cfg.activation,
            recurrent_activation=cfg.recurrent_activation,
            implementation=cfg.implementation,
            dropout=cfg.dropout,
            recurrent_dropout=cfg.recurrent_dropout,
            training=training,
            key=keys[idx],
        )
        if cfg.bidirectional:
            # Keras' Bidirectional forces zero_output_for_mask = return_sequences.
            (y, y_rev), state = bidirectional_layer(params, h, merge_mode=None, **common)
            outputs.append((y, y_rev))
            h = merge_outputs(y, y_rev, cfg.bidirectional)
        else:
            h, state = lstm_layer(
                params,
                h,
                go_backwards=cfg.go_backwards,
                zero_output_for_mask=cfg.zero_output_for_mask,
                **common,
            )
            outputs.append((h,))
        if training and cfg.output_dropout:
            layer_key = None if keys[idx] is None else jax.random.fold_in(keys[idx], 1)
            h = dropout(h, cfg.output_dropout, key=layer_key)
        finals.append(state)
    if collect_outputs:
        return h, tuple(finals), tuple(outputs)
    return h, tuple(finals)
