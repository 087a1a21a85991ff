"""Kernels behind the implementation modes of ``jlstm.modes``.

Each module computes the ``jlstm.cell`` equations over a whole sequence, laid out
for some hardware; ``jlstm.modes`` registers them and documents when each wins.

* ``common``: what every kernel shares (prologue, epilogue, Keras' masked step,
  size decisions that stay valid for symbolic ``jax.export`` dimensions).
* ``scan``: Keras' own formulation, ``cell_step`` scanned over time (any activations).
* ``fused``: the sigmoid/tanh gates as one ``tanh`` over the fused gate array
  (an exact rewrite), scanned with plain autodiff.
* ``fused_jvp``: the same forward pass with a custom JVP that JAX transposes into a
  backward pass running only the recurrence, the weight gradients as whole-chunk
  products: forward and reverse mode from one rule (``"auto"``'s choice).
* ``fused_vjp``: the same backward pass written by hand as a custom VJP (reverse
  mode only).
* ``hoisted``: the input projection ``x @ W + b`` for all steps as one product,
  then Keras' step (any activation).
* ``multicore``: ``fused_jvp`` split over the batch across local CPU devices.
* ``cudnn``: NVIDIA cuDNN through ``jax.experimental.rnn`` (GPU only).
"""
