"""jlstm: a functional, Keras-faithful, fast LSTM library for JAX.

The core is pure functions over pytrees::

    import jax, jlstm
    config = jlstm.ModelConfig(input_size=1, layer_sizes=(64, 32, 16), output_size=1)
    params = jlstm.init_params(jax.random.key(0), config)
    y = jlstm.apply(params, x, config)          # x: (batch, steps, 1) -> y: (batch, 1)

Layers of the code follow the data: ``cell`` (one step) -> ``layer`` (scan over
time) -> ``stack`` -> ``model`` (stack + dense head) -> ``train`` -> ``cli``.
"""

from . import activations, initializers, modes
from .cell import cell_step, init_cell_params, zero_state
from .layer import LayerConfig, init_layer_params, lstm_layer
from .model import ModelConfig, apply, init_params, param_count
from .modes import list_modes
from .stack import apply_stack, init_stack
from .types import BidirectionalParams, CellParams, DenseParams, LSTMState, ModelParams

__version__ = "0.1.0"

__all__ = [
    "BidirectionalParams",
    "CellParams",
    "DenseParams",
    "LSTMState",
    "LayerConfig",
    "ModelConfig",
    "ModelParams",
    "__version__",
    "activations",
    "apply",
    "apply_stack",
    "cell_step",
    "init_cell_params",
    "init_layer_params",
    "init_params",
    "init_stack",
    "initializers",
    "list_modes",
    "lstm_layer",
    "modes",
    "param_count",
    "zero_state",
]
