"""Parameter and state pytrees shared by every part of jlstm.

All containers are ``NamedTuple``s, hence pytrees: they pass through ``jit``,
``grad``, ``vmap`` and optax unchanged. Weights use the Keras layout so that a
Keras user can read them without translation (see ``jlstm.interop`` for the
PyTorch, Flax and Keras converters).

Shape letters: ``B`` batch (any number of leading axes), ``T`` time steps,
``D`` input features, ``H`` hidden units, ``O`` head outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

Array = jax.Array

__all__ = [
    "Array",
    "BidirectionalParams",
    "CellParams",
    "DenseParams",
    "LSTMState",
    "ModelParams",
    "register_for_export",
]


def register_for_export(nodetype):
    """Register a public NamedTuple for ``jax.export`` serialisation as ``jlstm.<Name>``
    (a class decorator): exported functions that take or return it then serialise
    without any user registration."""
    return jax.export.register_namedtuple_serialization(
        nodetype, serialized_name=f"jlstm.{nodetype.__name__}"
    )


@register_for_export
class LSTMState(NamedTuple):
    """The recurrent state of one LSTM layer, hidden ``h`` first (Keras order).

    Attributes:
        h: ``(B..., H)`` hidden state, the layer's output at the last step.
        c: ``(B..., H)`` cell (carry) state.
    """

    h: Array
    c: Array


@register_for_export
class CellParams(NamedTuple):
    """Weights of one LSTM layer in the Keras layout, gate order ``i, f, g(c), o``.

    Attributes:
        kernel: ``(D, 4H)`` input-to-gates weights.
        recurrent_kernel: ``(H, 4H)`` hidden-to-gates weights.
        bias: ``(4H,)`` gate bias, or ``None`` for ``use_bias=False``.
    """

    kernel: Array
    recurrent_kernel: Array
    bias: Array | None


@register_for_export
class BidirectionalParams(NamedTuple):
    """Weights of a bidirectional LSTM layer: one ``CellParams`` per direction."""

    forward: CellParams
    backward: CellParams


@register_for_export
class DenseParams(NamedTuple):
    """Weights of the dense head ``y = act(h @ kernel + bias)``.

    Attributes:
        kernel: ``(H, O)``.
        bias: ``(O,)`` or ``None``.
    """

    kernel: Array
    bias: Array | None


@register_for_export
class ModelParams(NamedTuple):
    """Weights of a stacked LSTM model: the LSTM layers bottom-up, then the head.

    Attributes:
        layers: one ``CellParams`` (or ``BidirectionalParams``) per LSTM layer.
        head: the ``DenseParams`` of the output layer.
    """

    layers: tuple[CellParams | BidirectionalParams, ...]
    head: DenseParams
