"""Converters between jlstm parameters and other frameworks' LSTMs.

Each submodule imports its framework lazily, inside the functions, so
``import jlstm`` never needs PyTorch, Flax or Keras:

* ``jlstm.interop.pytorch``: ``torch.nn.LSTM`` <-> ``CellParams``.
* ``jlstm.interop.flax``: Flax ``nnx.OptimizedLSTMCell`` <-> ``CellParams``.
* ``jlstm.interop.keras``: Keras 3 models <-> ``(ModelConfig, ModelParams)``.
"""
