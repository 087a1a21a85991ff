"""Converters between jlstm parameters and other frameworks' LSTMs.

Each submodule imports its framework lazily, inside the functions, so
``import jlstm`` never needs PyTorch, Flax, Keras, h5py or ONNX:

* ``jlstm.interop.pytorch``: ``torch.nn.LSTM`` stacks (``num_layers``,
  ``bidirectional``) and ``nn.Linear`` <-> jlstm params.
* ``jlstm.interop.flax``: Flax ``nnx.OptimizedLSTMCell`` / ``nnx.LSTMCell`` <->
  ``CellParams``, and ``LSTMModel``, a whole jlstm model as an ``nnx.Module``.
* ``jlstm.interop.keras``: Keras 3 models <-> ``(ModelConfig, ModelParams)``;
  ``load_keras`` also reads Keras 2 / tf.keras ``.h5`` files
  (``jlstm.interop.keras_h5``, h5py only).
* ``jlstm.interop.onnx``: ``(ModelConfig, ModelParams)`` -> an ONNX model of standard
  ``LSTM`` operators (see also ``jlstm.export``).
"""
