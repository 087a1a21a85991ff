"""Kernels behind the implementation modes of ``jlstm.modes``.

Each module computes the ``jlstm.cell`` equations over a whole sequence, laid out
for some hardware; ``jlstm.modes`` registers them and documents when each wins.

* ``fused``: the sigmoid/tanh gates as one ``tanh`` over the fused gate array
  (an exact rewrite), scanned with plain autodiff.
* ``fused_vjp``: the same forward pass with a custom VJP whose backward pass runs
  only the recurrence and forms the weight gradients as whole-chunk products.
* ``hoisted``: the input projection ``x @ W + b`` for all steps as one product,
  then Keras' step (any activation).
* ``multicore``: any of the above split over the batch across local CPU devices.
* ``cudnn``: NVIDIA cuDNN through ``jax.experimental.rnn`` (GPU only).
"""
