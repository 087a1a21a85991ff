r"""Weight and activity regularizers (Keras' ``L1``, ``L2``, ``L1L2``) as loss terms.

A regularizer is a frozen dataclass (hashable, so it sits in a jit-static
``ModelConfig``; serialised as ``{"class_name", "config"}`` like Keras) whose
``__call__(w)`` returns a scalar penalty, with Keras 3's definitions::

    L1(l1)        l1 * sum(|w|)                       name "l1",  default l1 = 0.01
    L2(l2)        l2 * sum(w ** 2)                    name "l2",  default l2 = 0.01
    L1L2(l1, l2)  l1 * sum(|w|) + l2 * sum(w ** 2)    name "l1l2" (Keras 3: l1 = l2 = 0),
                                                      name "l1_l2" (Keras 2: l1 = l2 = 0.01)
    OrthogonalRegularizer(factor, mode)               Keras 3's, for 2-D weights

Where they apply (the Keras ``LSTM`` / ``Dense`` arguments, per layer in
``ModelConfig``): ``kernel_regularizer`` on ``kernel`` ``(D, 4H)``,
``recurrent_regularizer`` on ``recurrent_kernel`` ``(H, 4H)``, ``bias_regularizer``
on ``bias`` ``(4H,)``, each on both directions of a bidirectional layer; the head's
``head_kernel_regularizer`` / ``head_bias_regularizer``. ``activity_regularizer``
applies to a layer's output (each direction's output for a bidirectional layer),
divided by the batch size as Keras does, so it needs the activations:

* ``regularization_loss(params, config)``: the weight penalty, a function of the
  parameters only (the train step's ``penalty(params)`` hook).
* ``regularized_apply(params, x, config, ...)``: ``(y, weight + activity penalty)`` from
  one forward pass, for losses with an activity regularizer.
* ``add_regularization(config)``: an optax transformation that adds the gradient of
  the weight penalty to the updates, so ``optax.chain(add_regularization(config),
  optax.adam(1e-3))`` trains as if the penalty were in the loss.

Keras adds these terms to the data loss; so does jlstm: ``loss = mse + penalty``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from ._keras_config import from_keras_config
from .types import Array, BidirectionalParams, CellParams, ModelParams

if TYPE_CHECKING:
    from .model import ModelConfig

RegularizerFn = Callable[[Array], Array]
RegularizerSpec = str | dict | RegularizerFn | None

__all__ = [
    "L1",
    "L1L2",
    "L2",
    "REGULARIZERS",
    "OrthogonalRegularizer",
    "Regularizer",
    "RegularizerSpec",
    "activity_loss",
    "add_regularization",
    "get_regularizer",
    "has_activity_regularizer",
    "has_weight_regularizer",
    "regularization_loss",
    "regularized_apply",
    "regularizer_to_dict",
]


class Regularizer:
    """Base class: subclasses are frozen dataclasses with ``__call__(w) -> scalar``."""

    def __call__(self, w: Array) -> Array:
        raise NotImplementedError

    def get_config(self) -> dict:
        return dataclasses.asdict(self)


def _check_factor(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"regularization factor {name} must be a float >= 0, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"regularization factor {name} must be finite, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class L1(Regularizer):
    """``l1 * sum(|w|)``."""

    l1: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "l1", _check_factor("l1", self.l1))

    def __call__(self, w):
        return self.l1 * jnp.sum(jnp.abs(w))


@dataclasses.dataclass(frozen=True)
class L2(Regularizer):
    """``l2 * sum(w ** 2)``."""

    l2: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "l2", _check_factor("l2", self.l2))

    def __call__(self, w):
        return self.l2 * jnp.sum(jnp.square(w))


@dataclasses.dataclass(frozen=True)
class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w ** 2)`` (Keras 3 defaults: both 0)."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "l1", _check_factor("l1", self.l1))
        object.__setattr__(self, "l2", _check_factor("l2", self.l2))

    def __call__(self, w):
        out = jnp.zeros((), w.dtype)
        # Keras skips a zero term entirely (so an inf weight with l1 = 0 stays finite).
        if self.l1:
            out = out + self.l1 * jnp.sum(jnp.abs(w))
        if self.l2:
            out = out + self.l2 * jnp.sum(jnp.square(w))
        return out


@dataclasses.dataclass(frozen=True)
class OrthogonalRegularizer(Regularizer):
    """Keras 3's: ``factor/2 * mean |<u_i, u_j>|`` over pairs of L2-normalised rows (or columns)."""

    factor: float = 0.01
    mode: str = "rows"

    def __post_init__(self):
        object.__setattr__(self, "factor", _check_factor("factor", self.factor))
        if self.mode not in ("rows", "columns"):
            raise ValueError(
                f"OrthogonalRegularizer mode must be 'rows' or 'columns', got {self.mode!r}"
            )

    def __call__(self, w):
        if w.ndim != 2:
            raise ValueError(f"OrthogonalRegularizer needs a 2-D weight, got shape {w.shape}")
        # Keras' ops.normalize: x * min(rsqrt(sum(x^2)), 1 / epsilon), epsilon = 1e-7.
        axis = 1 if self.mode == "rows" else 0
        inv_norm = jax.lax.rsqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))
        unit = w * jnp.minimum(inv_norm, 1.0 / 1e-7)
        product = unit @ unit.T if self.mode == "rows" else unit.T @ unit
        size = product.shape[0]
        off_diagonal = product * (1.0 - jnp.eye(size, dtype=w.dtype))
        pairs = size * (size - 1.0) / 2.0
        return self.factor * 0.5 * jnp.sum(jnp.abs(off_diagonal)) / pairs


REGULARIZERS: dict[str, Callable[[], Regularizer]] = {
    "l1": L1,
    "l2": L2,
    "l1l2": L1L2,
    # Keras 2 (and the Keras docs) give "l1_l2" both factors 0.01; Keras 3's "l1l2" gives 0.
    "l1_l2": lambda: L1L2(0.01, 0.01),
    "orthogonal_regularizer": OrthogonalRegularizer,
}
_SNAKE = {"l1": "L1", "l2": "L2", "l1l2": "L1L2", "orthogonal_regularizer": "OrthogonalRegularizer"}
_CLASSES: dict[str, type[Regularizer]] = {
    "L1": L1,
    "L2": L2,
    "L1L2": L1L2,
    "OrthogonalRegularizer": OrthogonalRegularizer,
}


def get_regularizer(spec: RegularizerSpec) -> RegularizerFn | None:
    """Resolve ``None``, a name, a ``{"class_name", "config"}`` dict (Keras' serialisation),
    an instance or a callable ``w -> scalar``.

    Raises:
        ValueError: for an unknown name or class; the message lists the known ones.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec in _CLASSES:
            return _CLASSES[spec]()
        try:
            return REGULARIZERS[spec.lower()]()
        except KeyError:
            raise ValueError(
                f"unknown regularizer {spec!r}; use one of {sorted(REGULARIZERS)}, "
                "an instance from jlstm.regularizers or a callable w -> scalar"
            ) from None
    if isinstance(spec, dict):
        name = spec.get("class_name")
        cls = _CLASSES.get(name) or _CLASSES.get(_SNAKE.get(name, ""))
        if cls is None:
            raise ValueError(f"unknown regularizer class {name!r}; use one of {sorted(_CLASSES)}")
        return from_keras_config(cls, spec.get("config"))
    if callable(spec):
        return spec
    raise TypeError(
        f"regularizer must be a name, dict, callable or None, got {type(spec).__name__}"
    )


def regularizer_to_dict(spec: RegularizerSpec) -> str | dict | None:
    """JSON form of a regularizer: ``None``, or ``{"class_name", "config"}``.

    Raises:
        TypeError: for an arbitrary callable, which cannot be serialised.
    """
    reg = get_regularizer(spec)
    if reg is None:
        return None
    if isinstance(reg, Regularizer):
        return {"class_name": type(reg).__name__, "config": reg.get_config()}
    raise TypeError(
        f"cannot serialise the regularizer {spec!r}: use an instance from jlstm.regularizers"
    )


def _layer_pairs(params: ModelParams, config: ModelConfig):
    """``(LayerConfig, [CellParams per direction])`` for each LSTM layer."""
    if len(params.layers) != len(config.layers):
        raise ValueError(
            f"{len(params.layers)} layer parameter sets for {len(config.layers)} layer configs"
        )
    for cell, cfg in zip(params.layers, config.layers, strict=True):
        cells = list(cell) if isinstance(cell, BidirectionalParams) else [cell]
        yield cfg, cells


def _weight_terms(params: ModelParams, config: ModelConfig):
    for cfg, cells in _layer_pairs(params, config):
        for cell in cells:
            cell: CellParams
            for reg, weight in (
                (cfg.kernel_regularizer, cell.kernel),
                (cfg.recurrent_regularizer, cell.recurrent_kernel),
                (cfg.bias_regularizer, cell.bias),
            ):
                if reg is not None and weight is not None:
                    yield reg, weight
    for reg, weight in (
        (config.head_kernel_regularizer, params.head.kernel),
        (config.head_bias_regularizer, params.head.bias),
    ):
        if reg is not None and weight is not None:
            yield reg, weight


def has_weight_regularizer(config: ModelConfig) -> bool:
    """Whether any kernel, recurrent, bias or head weight has a regularizer."""
    names = ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer")
    return any(getattr(cfg, n) is not None for cfg in config.layers for n in names) or any(
        getattr(config, n) is not None for n in ("head_kernel_regularizer", "head_bias_regularizer")
    )


def has_activity_regularizer(config: ModelConfig) -> bool:
    """Whether any layer (or the head) has an ``activity_regularizer``."""
    return config.head_activity_regularizer is not None or any(
        cfg.activity_regularizer is not None for cfg in config.layers
    )


def regularization_loss(params: ModelParams, config: ModelConfig) -> Array:
    """The summed weight penalties of ``config``'s regularizers, a float32 scalar.

    A pure function of ``params`` (differentiable, jit-friendly with ``config``
    static): the ``penalty(params)`` hook of a train step. Zero when no weight has
    a regularizer. Activity regularizers need the activations: see
    ``regularized_apply``.
    """
    total = jnp.zeros((), jnp.float32)
    for reg, weight in _weight_terms(params, config):
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


def regularized_apply(
    params: ModelParams,
    x: Array,
    config: ModelConfig,
    **apply_kwargs: Any,
):
    """``jlstm.apply`` that also returns the total regularization penalty.

    Runs the model once and adds the weight penalty (``regularization_loss``) and the
    activity penalty of every layer's output (``activity_loss``), which is what
    Keras adds to a model's loss (``sum(model.losses)``).

    Args:
        params, x, config: as ``jlstm.apply``; ``x`` is ``(B..., T, D)``.
        **apply_kwargs: ``jlstm.apply``'s keywords (``mask``, ``seq_lengths``,
            ``initial_states``, ``return_state``, ``training``, ``key``).

    Returns:
        ``(y, penalty)`` (or ``((y, states), penalty)`` with ``return_state=True``),
        ``penalty`` a float32 scalar.
    """
    from .model import _forward  # the model imports this module's names lazily too

    return_state = apply_kwargs.pop("return_state", False)
    y, states, layer_outputs = _forward(params, x, config, collect_outputs=True, **apply_kwargs)
    batch_ndim = x.ndim - 2
    penalty = regularization_loss(params, config) + activity_loss(
        layer_outputs, y, config, batch_ndim=batch_ndim
    )
    return ((y, states) if return_state else y), penalty


def add_regularization(config: ModelConfig):
    """An optax ``GradientTransformation`` adding ``grad(regularization_loss)`` to the updates.

    Put it first in a chain, on raw gradients::

        tx = optax.chain(jlstm.regularizers.add_regularization(config), optax.adam(1e-3))

    which optimises ``loss + regularization_loss(params, config)`` without changing the
    loss function. Activity regularizers depend on the activations and cannot be
    added here: use ``regularized_apply`` in the loss for them.
    """
    import optax

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(
                "add_regularization needs params: call tx.update(grads, state, params)"
            )
        if not has_weight_regularizer(config):
            return updates, state
        grads = jax.grad(regularization_loss)(params, config)
        return jax.tree.map(lambda u, g: u + g.astype(u.dtype), updates, grads), state

    return optax.GradientTransformation(init, update)
