"""jlstm: a functional, Keras-faithful, fast LSTM library for JAX.

The core is pure functions over pytrees::

    import jax, jlstm
    config = jlstm.ModelConfig(input_size=1, layer_sizes=(64, 32, 16), output_size=1)
    params = jlstm.init_params(jax.random.key(0), config)
    y = jlstm.apply(params, x, config)          # x: (batch, steps, 1) -> y: (batch, 1)

Layers of the code follow the data: ``cell`` (one step) -> ``layer`` (scan over
time) -> ``stack`` -> ``model`` (stack + dense head) -> ``penalties`` (regularizers
and constraints over a model) -> ``train`` -> ``cli``.
"""

from . import (
    activations,
    constraints,
    initializers,
    masking,
    modes,
    optax_adapters,
    penalties,
    regularizers,
    stateful,
)
from .bidirectional import BidirectionalState, bidirectional_layer
from .cell import cell_step, init_cell_params, zero_state
from .layer import DropoutMasks, LayerConfig, draw_dropout_masks, init_layer_params, lstm_layer
from .masking import reverse_padded, sequence_mask
from .model import ModelConfig, apply, apply_with_outputs, init_params, param_count
from .modes import list_modes
from .stack import apply_stack, init_stack
from .stateful import StatefulModel, apply_stateful, init_states, reset_states, stream_step
from .types import BidirectionalParams, CellParams, DenseParams, LSTMState, ModelParams

__version__ = "0.1.0"

__all__ = [
    "BidirectionalParams",
    "BidirectionalState",
    "CellParams",
    "DenseParams",
    "DropoutMasks",
    "LSTMState",
    "LayerConfig",
    "ModelConfig",
    "ModelParams",
    "StatefulModel",
    "__version__",
    "activations",
    "apply",
    "apply_stack",
    "apply_stateful",
    "apply_with_outputs",
    "bidirectional_layer",
    "cell_step",
    "constraints",
    "draw_dropout_masks",
    "init_cell_params",
    "init_layer_params",
    "init_params",
    "init_stack",
    "init_states",
    "initializers",
    "list_modes",
    "lstm_layer",
    "masking",
    "modes",
    "optax_adapters",
    "param_count",
    "penalties",
    "regularizers",
    "reset_states",
    "reverse_padded",
    "sequence_mask",
    "stateful",
    "stream_step",
    "zero_state",
]
