"""Shared helpers for the Keras 3 parity tests (JAX backend).

Imported by the ``test_keras_*``, ``test_bidirectional``, ``test_stateful``,
``test_dropout`` and ``test_regularizers_constraints`` modules, each of which sets
``KERAS_BACKEND`` itself before anything imports Keras.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import keras
import numpy as np

import jlstm
from jlstm import CellParams

if keras.backend.backend() != "jax":
    raise RuntimeError(
        f"the Keras parity tests need KERAS_BACKEND=jax, but Keras runs on "
        f"{keras.backend.backend()!r}: something imported Keras first"
    )

# The float32 bar (absolute), for models reference.py's derived bounds do not cover
# yet: masks, bidirectional or go_backwards layers, non-default activations in a stack.
# Plain stacks use parity_bound, derived from the computation and scaled by its values.
ATOL = 1e-5


def parity_bound(params, x, *, dtype=np.float32):
    """Per-element bound on |jlstm - Keras| for a unidirectional tanh/sigmoid stack with a
    linear head on the last step: each side is within ``reference.stack_bound`` of the exact
    model on the same (``dtype``-rounded) weights and inputs, so twice it. ``(B, O)``."""
    from . import reference as ref

    def exact(a):
        return None if a is None else np.asarray(np.asarray(a).astype(dtype), np.float64)

    layers = [(exact(p.kernel), exact(p.recurrent_kernel), exact(p.bias)) for p in params.layers]
    head = (exact(params.head.kernel), exact(params.head.bias), "linear")
    _, bound, _ = ref.stack_bound(layers, exact(x), head=head, dtype=dtype)
    return 2 * bound[:, -1]


# One mask with every pattern: full, right padding, left padding, holes, all masked.
MASK = np.array(
    [
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [1, 0, 1, 0, 0, 1],
        [0, 0, 0, 0, 0, 0],
    ],
    dtype=bool,
)


def randomize(layer, rng: np.random.Generator, scale: float = 0.5) -> None:
    """Overwrite every weight of a built Keras layer with N(0, scale^2) values, so that
    parity does not lean on zero biases or small default weights."""
    for weight in layer.weights:
        weight.assign(rng.normal(0.0, scale, size=tuple(weight.shape)).astype("float32"))


def random_params(config, seed: int):
    """``jlstm.init_params`` for ``config`` with every array redrawn from N(0, 0.5^2)
    (NumPy generator seeded with ``seed``)."""
    params = jlstm.init_params(jax.random.key(seed), config)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(0.0, 0.5, a.shape), a.dtype), params)


def cell_params(lstm) -> CellParams:
    """``CellParams`` copied from a built ``keras.layers.LSTM`` (or its cell)."""
    cell = getattr(lstm, "cell", lstm)
    bias = None if cell.bias is None else jnp.asarray(np.asarray(cell.bias.value))
    return CellParams(
        jnp.asarray(np.asarray(cell.kernel.value)),
        jnp.asarray(np.asarray(cell.recurrent_kernel.value)),
        bias,
    )


def build_lstm(rng, units: int, input_size: int, *, scale: float = 0.5, **kwargs):
    """A built, randomised ``keras.layers.LSTM`` and its weights as ``CellParams``."""
    layer = keras.layers.LSTM(units, **kwargs)
    layer.build((None, None, input_size))
    randomize(layer, rng, scale)
    return layer, cell_params(layer)


def np32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# Jitted entry points shared by the tests: one compile per static configuration, much
# faster than eager dispatch of every op (and jit is how users run jlstm).
LSTM_LAYER = jax.jit(
    jlstm.lstm_layer,
    static_argnames=(
        "return_sequences",
        "return_state",
        "go_backwards",
        "unroll",
        "activation",
        "recurrent_activation",
        "implementation",
        "dropout",
        "recurrent_dropout",
        "training",
        "zero_output_for_mask",
    ),
)
BIDIRECTIONAL_LAYER = jax.jit(
    jlstm.bidirectional_layer,
    static_argnames=(
        "merge_mode",
        "return_sequences",
        "return_state",
        "unroll",
        "activation",
        "recurrent_activation",
        "implementation",
        "dropout",
        "recurrent_dropout",
        "training",
        "zero_output_for_mask",
    ),
)
APPLY = jax.jit(jlstm.apply, static_argnames=("config", "return_state", "training"))
