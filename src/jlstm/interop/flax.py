"""Flax nnx <-> jlstm: LSTM cells' weights, and a whole jlstm model as an ``nnx.Module``.

Cells (REFERENCE: gate order ``i, f, g, o`` in both, the Keras layout):

* ``nnx.OptimizedLSTMCell``: ``dense_i.kernel`` ``(D, 4H)`` (no bias),
  ``dense_h.kernel`` ``(H, 4H)`` and ``dense_h.bias`` ``(4H,)``.
* ``nnx.LSTMCell``: per-gate ``ii/if_/ig/io.kernel`` ``(D, H)`` (no bias) and
  ``hi/hf/hg/ho.kernel`` ``(H, H)`` with biases ``(H,)``: concatenated into the fused
  layout.

A cell's ``gate_fn`` and ``activation_fn`` are jlstm's ``recurrent_activation`` and
``activation``. ``from_flax_cell`` refuses a cell whose functions are not
sigmoid/tanh unless asked for them (``with_activations=True``), and refuses
functions jlstm does not have (e.g. ``jax.nn.gelu``, whose default is the tanh
approximation): dropping them silently would change the model.

Flax's carry is ``(c, h)``: cell state first, the reverse of ``LSTMState(h, c)``;
``carry_to_state`` / ``state_to_carry`` swap them.

``LSTMModel(config, params)`` is an ``nnx.Module`` running ``jlstm.apply``: every
weight is an ``nnx.Param``, so ``nnx.Optimizer``, ``nnx.grad`` and ``nnx.jit`` train
it like any Flax model, and ``.params`` gives the jlstm ``ModelParams`` back.
"""

from __future__ import annotations

from ..activations import activation_name
from ..types import CellParams, LSTMState

__all__ = [
    "LSTMModel",  # noqa: F822 - built lazily by __getattr__
    "carry_to_state",
    "from_flax_cell",
    "state_to_carry",
    "to_flax_cell",
]

_GATES = ("i", "f", "g", "o")
_LSTM_CELL_INPUT = ("ii", "if_", "ig", "io")
_LSTM_CELL_HIDDEN = ("hi", "hf", "hg", "ho")


def _function_name(fn, what: str) -> str:
    name = activation_name(fn)
    if name is None:
        raise ValueError(
            f"from_flax_cell: the cell's {what} {getattr(fn, '__name__', fn)!r} has no jlstm "
            "activation (jlstm.activations.ACTIVATIONS: use one of those functions)"
        )
    return name


def from_flax_cell(cell, *, with_activations: bool = False):
    """Copy an ``nnx.OptimizedLSTMCell``'s or ``nnx.LSTMCell``'s weights.

    Args:
        cell: the Flax cell.
        with_activations: also return the activations as jlstm names.

    Returns:
        ``CellParams``; with ``with_activations``, ``(CellParams, {"activation": ...,
        "recurrent_activation": ...})`` for ``LayerConfig``/``ModelConfig``.

    Raises:
        ValueError: a cell of another kind, an activation jlstm does not have, or
            non-default activations without ``with_activations=True``.
    """
    import jax.numpy as jnp
    from flax import nnx

    if isinstance(cell, nnx.OptimizedLSTMCell):
        bias = cell.dense_h.bias
        params = CellParams(
            jnp.asarray(cell.dense_i.kernel[...]),
            jnp.asarray(cell.dense_h.kernel[...]),
            None if bias is None else jnp.asarray(bias[...]),
        )
    elif isinstance(cell, nnx.LSTMCell):
        params = CellParams(
            jnp.concatenate([getattr(cell, n).kernel[...] for n in _LSTM_CELL_INPUT], axis=1),
            jnp.concatenate([getattr(cell, n).kernel[...] for n in _LSTM_CELL_HIDDEN], axis=1),
            jnp.concatenate([getattr(cell, n).bias[...] for n in _LSTM_CELL_HIDDEN]),
        )
    else:
        raise ValueError(
            f"from_flax_cell takes nnx.OptimizedLSTMCell or nnx.LSTMCell, got "
            f"{type(cell).__name__} (GRU and SimpleCell are other recurrences)"
        )
    activations = {
        "activation": _function_name(cell.activation_fn, "activation_fn"),
        "recurrent_activation": _function_name(cell.gate_fn, "gate_fn"),
    }
    if with_activations:
        return params, activations
    if activations != {"activation": "tanh", "recurrent_activation": "sigmoid"}:
        raise ValueError(
            f"from_flax_cell: the cell computes with {activations}; call "
            "from_flax_cell(cell, with_activations=True) and put them in the jlstm config"
        )
    return params


def to_flax_cell(
    params: CellParams,
    *,
    seed: int = 0,
    activation="tanh",
    recurrent_activation="sigmoid",
    kind: str = "optimized",
):
    """A Flax cell holding ``params`` (``bias=None`` becomes zeros).

    Args:
        params: the jlstm ``CellParams``.
        seed: seeds the cell's own (overwritten) initialisation.
        activation, recurrent_activation: jlstm names or functions, the cell's
            ``activation_fn`` and ``gate_fn``.
        kind: ``"optimized"`` (``nnx.OptimizedLSTMCell``) or ``"lstm"`` (``nnx.LSTMCell``).
    """
    import jax.numpy as jnp
    from flax import nnx

    from ..activations import get_activation

    in_features, four_h = params.kernel.shape
    units = four_h // 4
    bias = params.bias if params.bias is not None else jnp.zeros((four_h,), params.kernel.dtype)
    options = dict(
        param_dtype=params.kernel.dtype,
        rngs=nnx.Rngs(seed),
        activation_fn=get_activation(activation),
        gate_fn=get_activation(recurrent_activation),
    )
    if kind == "optimized":
        cell = nnx.OptimizedLSTMCell(in_features, units, **options)
        cell.dense_i.kernel[...] = params.kernel
        cell.dense_h.kernel[...] = params.recurrent_kernel
        cell.dense_h.bias[...] = bias
        return cell
    if kind == "lstm":
        cell = nnx.LSTMCell(in_features, units, **options)
        for k in range(4):
            cols = slice(k * units, (k + 1) * units)
            getattr(cell, _LSTM_CELL_INPUT[k]).kernel[...] = params.kernel[:, cols]
            hidden = getattr(cell, _LSTM_CELL_HIDDEN[k])
            hidden.kernel[...] = params.recurrent_kernel[:, cols]
            hidden.bias[...] = bias[cols]
        return cell
    raise ValueError(f"to_flax_cell: kind must be 'optimized' or 'lstm', got {kind!r}")


def carry_to_state(carry) -> LSTMState:
    """Flax carry ``(c, h)`` -> ``LSTMState(h, c)``."""
    c, h = carry
    return LSTMState(h, c)


def state_to_carry(state: LSTMState):
    """``LSTMState(h, c)`` -> Flax carry ``(c, h)``."""
    return (state.c, state.h)


def __getattr__(name):
    # ``LSTMModel`` subclasses nnx.Module: built on first use, so that importing this
    # file needs no Flax.
    if name == "LSTMModel":
        cls = _make_lstm_model()
        globals()["LSTMModel"] = cls
        return cls
    raise AttributeError(name)


def _make_lstm_model():
    import jax
    from flax import nnx

    from ..model import ModelConfig, apply, init_params

    class LSTMModel(nnx.Module):
        """A jlstm model as an ``nnx.Module``: ``model(x, **apply_kwargs) -> y``.

        Example::

            model = LSTMModel(config, rngs=nnx.Rngs(0))  # or LSTMModel(config, params)
            optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

            @nnx.jit
            def step(model, optimizer, x, y):
                loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
                optimizer.update(model, grads)
                return loss

        Attributes:
            config: the ``ModelConfig`` (static).
            weights: one ``nnx.Param`` per array of the ``ModelParams``.
        """

        def __init__(self, config: ModelConfig, params=None, *, rngs: nnx.Rngs | None = None):
            if params is None:
                if rngs is None:
                    raise ValueError("LSTMModel needs params or rngs=nnx.Rngs(seed)")
                params = init_params(rngs.params(), config)
            self.config = config
            leaves, self.treedef = jax.tree.flatten(params)
            self.weights = nnx.List([nnx.Param(a) for a in leaves])

        @property
        def params(self):
            """The weights as jlstm ``ModelParams``."""
            return jax.tree.unflatten(self.treedef, [w[...] for w in self.weights])

        def __call__(self, x, **kwargs):
            """``jlstm.apply(self.params, x, self.config, **kwargs)``."""
            return apply(self.params, x, self.config, **kwargs)

    LSTMModel.__module__ = __name__
    return LSTMModel
