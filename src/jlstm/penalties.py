r"""Model-level regularization penalties and constraint projections.

The leaf definitions (``jlstm.regularizers``: ``L1``, ``L2``, ...;
``jlstm.constraints``: ``MaxNorm``, ...) sit in a ``ModelConfig``; this module walks
a model's parameters and outputs with them. It sits above the model (it calls
``jlstm.model.apply_with_outputs``), as ``train`` does.

Where each applies (the Keras ``LSTM`` / ``Dense`` arguments, per layer in
``ModelConfig``): ``kernel_*`` on ``kernel`` ``(D, 4H)``, ``recurrent_*`` on
``recurrent_kernel`` ``(H, 4H)``, ``bias_*`` on ``bias`` ``(4H,)``, each on both
directions of a bidirectional layer; the head's ``head_kernel_*`` / ``head_bias_*``.
``activity_regularizer`` applies to a layer's output (each direction's output for a
bidirectional layer), divided by the batch size as Keras does, so it needs the
activations:

* ``regularization_loss(params, config)``: the weight penalty, a function of the
  parameters only (the train step's ``penalty(params)`` hook).
* ``regularized_apply(params, x, config, ...)``: ``(y, weight + activity penalty)`` from
  one forward pass, for losses with an activity regularizer.
* ``apply_constraints(params, config)``: the projection after each optimizer update
  (the train step's ``project(params)`` hook).

Keras adds the penalties to the data loss; so does jlstm: ``loss = mse + penalty``.
The optax forms of the same (``add_regularization``, ``constrain``) are in
``jlstm.optax_adapters``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from .model import ModelConfig, apply_with_outputs
from .regularizers import RegularizerFn
from .types import Array, BidirectionalParams, CellParams, DenseParams, ModelParams
from .validation import check_layer_count

__all__ = [
    "activity_loss",
    "apply_constraints",
    "has_activity_regularizer",
    "has_constraints",
    "has_weight_regularizer",
    "regularization_loss",
    "regularized_apply",
]

_WEIGHT_REGULARIZERS = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer")
_HEAD_REGULARIZERS = ("head_kernel_regularizer", "head_bias_regularizer")
_CONSTRAINTS = ("kernel_constraint", "recurrent_constraint", "bias_constraint")
_HEAD_CONSTRAINTS = ("head_kernel_constraint", "head_bias_constraint")


def _any_set(config: ModelConfig, layer_fields, head_fields) -> bool:
    return any(getattr(cfg, n) is not None for cfg in config.layers for n in layer_fields) or any(
        getattr(config, n) is not None for n in head_fields
    )


def has_weight_regularizer(config: ModelConfig) -> bool:
    """Whether any kernel, recurrent, bias or head weight has a regularizer."""
    return _any_set(config, _WEIGHT_REGULARIZERS, _HEAD_REGULARIZERS)


def has_activity_regularizer(config: ModelConfig) -> bool:
    """Whether any layer (or the head) has an ``activity_regularizer``."""
    return _any_set(config, ("activity_regularizer",), ("head_activity_regularizer",))


def has_constraints(config: ModelConfig) -> bool:
    """Whether any weight of ``config`` has a constraint."""
    return _any_set(config, _CONSTRAINTS, _HEAD_CONSTRAINTS)


def _cells(layer: CellParams | BidirectionalParams) -> tuple[CellParams, ...]:
    return tuple(layer) if isinstance(layer, BidirectionalParams) else (layer,)


def _weight_terms(params: ModelParams, config: ModelConfig):
    """``(regularizer, weight)`` for every regularized weight."""
    check_layer_count(params.layers, config.layers)
    for layer, cfg in zip(params.layers, config.layers, strict=True):
        for cell in _cells(layer):
            yield from zip((getattr(cfg, n) for n in _WEIGHT_REGULARIZERS), cell, strict=True)
    yield from zip((getattr(config, n) for n in _HEAD_REGULARIZERS), params.head, strict=True)


def regularization_loss(params: ModelParams, config: ModelConfig) -> Array:
    """The summed weight penalties of ``config``'s regularizers, a float32 scalar.

    A pure function of ``params`` (differentiable, jit-friendly with ``config``
    static): the ``penalty(params)`` hook of a train step. Zero when no weight has
    a regularizer. Activity regularizers need the activations: see
    ``regularized_apply``.
    """
    total = jnp.zeros((), jnp.float32)
    for reg, weight in _weight_terms(params, config):
        if reg is not None and weight is not None:
            total = total + jnp.asarray(reg(weight), jnp.float32)
    return total


def _activity_term(reg: RegularizerFn, output: Array, batch_ndim: int) -> Array:
    # Keras divides each layer's activity penalty by the batch size (its axis 0);
    # with several leading batch axes jlstm divides by their product.
    batch = 1
    for size in output.shape[:batch_ndim]:
        batch *= size
    return jnp.asarray(reg(output), jnp.float32) / max(batch, 1)


def activity_loss(
    layer_outputs: tuple[tuple[Array, ...], ...],
    head_output: Array | None,
    config: ModelConfig,
    *,
    batch_ndim: int = 1,
) -> Array:
    """The activity penalty from each layer's outputs, as Keras computes it.

    Args:
        layer_outputs: per LSTM layer, the output of each direction (one entry for a
            unidirectional layer, forward and backward for a bidirectional one), each
            ``(B..., T, H)`` or ``(B..., H)``: what the Keras ``LSTM`` layer returns.
        head_output: the dense head's output ``(B..., O)`` or ``(B..., T, O)``.
        config: the ``ModelConfig``.
        batch_ndim: number of leading batch axes (the penalty is divided by their size).

    Returns:
        A float32 scalar: ``sum over layers and directions of reg(output) / batch``.
    """
    total = jnp.zeros((), jnp.float32)
    for cfg, outputs in zip(config.layers, layer_outputs, strict=True):
        reg = cfg.activity_regularizer
        if reg is not None:
            for out in outputs:
                total = total + _activity_term(reg, out, batch_ndim)
    reg = config.head_activity_regularizer
    if reg is not None and head_output is not None:
        total = total + _activity_term(reg, head_output, batch_ndim)
    return total


@functools.partial(jax.jit, static_argnames=("config", "return_state", "training"))
def regularized_apply(
    params: ModelParams,
    x: Array,
    config: ModelConfig,
    *,
    return_state: bool = False,
    **options: Any,
):
    """``jlstm.apply`` that also returns the total regularization penalty.

    Runs the model once and adds the weight penalty (``regularization_loss``) and the
    activity penalty of every layer's output (``activity_loss``), which is what
    Keras adds to a model's loss (``sum(model.losses)``). A model-level entry point:
    ``jax.jit`` with ``config``, ``return_state`` and ``training`` static.

    Args:
        params, x, config: as ``jlstm.apply``; ``x`` is ``(B..., T, D)``.
        return_state: also return the final state of every layer, as ``jlstm.apply``.
        **options: ``jlstm.apply``'s other keywords (``mask``, ``seq_lengths``,
            ``initial_states``, ``training``, ``key``).

    Returns:
        ``(y, penalty)`` (or ``((y, states), penalty)`` with ``return_state=True``),
        ``penalty`` a float32 scalar.
    """
    y, states, layer_outputs = apply_with_outputs(params, x, config, **options)
    batch_ndim = jnp.ndim(x) - 2
    penalty = regularization_loss(params, config) + activity_loss(
        layer_outputs, y, config, batch_ndim=batch_ndim
    )
    return ((y, states) if return_state else y), penalty


def _project(con, w: Array | None) -> Array | None:
    # ``con`` is a config field: already resolved by ``LayerConfig``/``ModelConfig``.
    if con is None or w is None:
        return w
    return jnp.asarray(con(w), w.dtype)


def apply_constraints(params: ModelParams, config: ModelConfig) -> ModelParams:
    """Project ``params`` onto ``config``'s constraints (weights without one pass through).

    A pure function of ``params``, jit-friendly with ``config`` static: call it after
    every ``optax.apply_updates`` (the train step's ``project(params)`` hook), as Keras'
    optimizer does. Returns ``ModelParams`` with the same structure, shapes and dtypes.
    """
    if not has_constraints(config):
        return params
    check_layer_count(params.layers, config.layers)

    def cell(p: CellParams, cfg) -> CellParams:
        return CellParams(
            *(_project(getattr(cfg, n), w) for n, w in zip(_CONSTRAINTS, p, strict=True))
        )

    layers = []
    for p, cfg in zip(params.layers, config.layers, strict=True):
        if isinstance(p, BidirectionalParams):
            layers.append(BidirectionalParams(cell(p.forward, cfg), cell(p.backward, cfg)))
        else:
            layers.append(cell(p, cfg))
    head = DenseParams(
        *(
            _project(getattr(config, n), w)
            for n, w in zip(_HEAD_CONSTRAINTS, params.head, strict=True)
        )
    )
    return ModelParams(tuple(layers), head)
