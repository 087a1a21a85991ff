"""A stack of LSTM layers, threaded bottom-up like ``stax.serial``.

Every layer but the top one returns its whole sequence to the next; the top
layer returns its sequence or only its last output. The step mask, when given,
is passed to every layer (Keras propagates it through ``return_sequences``
layers). Dropout keys are split per layer from one key.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from .layer import LayerConfig, init_layer_params, lstm_layer
from .types import Array, CellParams, LSTMState

__all__ = ["apply_stack", "init_stack"]


def init_stack(key: Array, configs: Sequence[LayerConfig], dtype) -> tuple[CellParams, ...]:
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
    initial_states: Sequence[LSTMState | None] | None = None,
    training: bool = False,
    key: Array | None = None,
) -> tuple[Array, tuple[LSTMState, ...]]:
    """Run the stack on ``x`` ``(B..., T, D)``.

    Returns:
        ``(y, final_states)``: ``y`` is the top layer's output, ``(B..., T, H_top)`` with
        ``return_sequences`` else ``(B..., H_top)``; ``final_states`` one ``LSTMState``
        per layer, bottom-up.
    """
    if len(layers) != len(configs):
        raise ValueError(f"{len(layers)} layer parameter sets for {len(configs)} layer configs")
    if initial_states is None:
        initial_states = (None,) * len(configs)
    if len(initial_states) != len(configs):
        raise ValueError(f"{len(initial_states)} initial states for {len(configs)} layers")
    keys = (None,) * len(configs) if key is None else tuple(jax.random.split(key, len(configs)))
    finals = []
    h = x
    for idx, (params, cfg) in enumerate(zip(layers, configs, strict=True)):
        top = idx == len(configs) - 1
        h, state = lstm_layer(
            params,
            h,
            initial_state=initial_states[idx],
            mask=mask,
            return_sequences=return_sequences or not top,
            return_state=True,
            go_backwards=cfg.go_backwards,
            unroll=cfg.unroll,
            activation=cfg.activation,
            recurrent_activation=cfg.recurrent_activation,
            implementation=cfg.implementation,
            dropout=cfg.dropout,
            recurrent_dropout=cfg.recurrent_dropout,
            training=training,
            key=keys[idx],
            zero_output_for_mask=cfg.zero_output_for_mask,
        )
        finals.append(state)
    return h, tuple(finals)
