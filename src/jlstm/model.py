"""The stacked LSTM model: ``ModelConfig``, ``init_params`` and ``apply``.

The default config is the seed tutorial's Keras model::

    LSTM(64, return_sequences=True) -> LSTM(32, return_sequences=True) -> LSTM(16) -> Dense(1)

on ``(samples, steps, 1)`` inputs: every LSTM but the last returns its sequence,
and the dense head reads the last layer's final output.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from .activations import ActivationSpec, activation_name, get_activation
from .constraints import ConstraintSpec, constraint_to_dict, get_constraint
from .initializers import InitializerSpec, get_initializer, initializer_to_dict
from .layer import LayerConfig
from .masking import apply_masking, step_mask
from .regularizers import RegularizerSpec, get_regularizer, regularizer_to_dict
from .stack import apply_stack, dropout, init_stack
from .types import Array, BidirectionalParams, DenseParams, LSTMState, ModelParams
from .validation import (
    check_fields,
    check_hashable,
    check_int,
    check_layer_count,
    require_dropout_key,
)

__all__ = ["ModelConfig", "apply", "apply_with_outputs", "init_params", "param_count"]

# Options that Keras lets each LSTM layer set on its own: a ModelConfig field holds
# one value for every layer or a tuple with one value per layer.
PER_LAYER_FIELDS = tuple(
    f.name for f in dataclasses.fields(LayerConfig) if f.name not in ("units", "input_size")
)
_REGULARIZER_FIELDS = (
    *(name for name in PER_LAYER_FIELDS if name.endswith("_regularizer")),
    "head_kernel_regularizer",
    "head_bias_regularizer",
    "head_activity_regularizer",
)
_CONSTRAINT_FIELDS = (
    *(name for name in PER_LAYER_FIELDS if name.endswith("_constraint")),
    "head_kernel_constraint",
    "head_bias_constraint",
)
_ACTIVATION_FIELDS = ("activation", "recurrent_activation", "head_activation")
_INITIALIZER_FIELDS = (
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "head_kernel_initializer",
    "head_bias_initializer",
)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of a stacked LSTM model (frozen, hashable, JSON-able).

    Attributes:
        input_size: ``D``, features per time step.
        layer_sizes: hidden units of each LSTM layer, bottom-up.
        output_size: ``O``, outputs of the dense head.
        head_activation: activation of the dense head (Keras ``Dense(activation=...)``).
        head_use_bias, head_kernel_initializer, head_bias_initializer: the head's
            ``Dense`` options (Keras defaults).
        return_sequences: apply the head at every step, ``y`` ``(B, T, O)``, instead of
            only to the last layer's final output, ``y`` ``(B, O)``.
        activation ... zero_output_for_mask: the Keras ``LSTM`` arguments, each either
            one value for every layer or a tuple with one value per layer (see
            ``LayerConfig`` for their meaning). ``implementation`` takes Keras' 1 or 2
            or a ``jlstm.modes`` name.
        param_dtype: dtype of the parameters: ``"float32"`` (default), ``"float64"``
            (needs ``jax.config.update("jax_enable_x64", True)``) or ``"bfloat16"``.
        compute_dtype: dtype the model computes in; ``None`` means ``param_dtype``.
            ``"bfloat16"`` with float32 params is mixed precision: the parameters
            and gradients stay float32, the recurrence runs in bfloat16, and
            ``apply`` returns ``param_dtype`` outputs.
        bidirectional, output_dropout, *_regularizer, *_constraint: per-layer
            options beyond Keras' ``LSTM`` arguments (see ``LayerConfig``): a Keras
            ``Bidirectional`` merge mode, a Keras ``Dropout`` layer after the layer,
            regularizers (``jlstm.regularizers``) and constraints (``jlstm.constraints``).
        mask_value: a Keras ``Masking(mask_value)`` layer at the input: steps whose
            features all equal it are masked (and zeroed). ``None``: no masking layer.
        input_dropout: rate of a Keras ``Dropout`` layer on the inputs (after masking).
        head_*_regularizer, head_*_constraint: the dense head's Keras ``Dense``
            regularizers (kernel, bias, activity) and constraints (kernel, bias).
    """

    input_size: int = 1
    layer_sizes: tuple[int, ...] = (64, 32, 16)
    output_size: int = 1
    head_activation: ActivationSpec = "linear"
    head_use_bias: bool = True
    head_kernel_initializer: InitializerSpec = "glorot_uniform"
    head_bias_initializer: InitializerSpec = "zeros"
    return_sequences: bool = False
    activation: Any = "tanh"
    recurrent_activation: Any = "sigmoid"
    use_bias: Any = True
    kernel_initializer: Any = "glorot_uniform"
    recurrent_initializer: Any = "orthogonal"
    bias_initializer: Any = "zeros"
    unit_forget_bias: Any = True
    forget_bias: Any = 1.0
    dropout: Any = 0.0
    recurrent_dropout: Any = 0.0
    implementation: Any = "auto"
    go_backwards: Any = False
    unroll: Any = False
    zero_output_for_mask: Any = False
    param_dtype: str = "float32"
    compute_dtype: str | None = None
    bidirectional: Any = False
    kernel_regularizer: Any = None
    recurrent_regularizer: Any = None
    bias_regularizer: Any = None
    activity_regularizer: Any = None
    kernel_constraint: Any = None
    recurrent_constraint: Any = None
    bias_constraint: Any = None
    output_dropout: Any = 0.0
    mask_value: float | None = None
    input_dropout: float = 0.0
    head_kernel_regularizer: RegularizerSpec = None
    head_bias_regularizer: RegularizerSpec = None
    head_activity_regularizer: RegularizerSpec = None
    head_kernel_constraint: ConstraintSpec = None
    head_bias_constraint: ConstraintSpec = None

    def __post_init__(self):
        sizes = self.layer_sizes
        if isinstance(sizes, int):
            sizes = (sizes,)
        object.__setattr__(self, "layer_sizes", tuple(sizes))
        if not self.layer_sizes:
            raise ValueError("layer_sizes must name at least one LSTM layer, e.g. (64, 32, 16)")
        for name in ("input_size", "output_size"):
            object.__setattr__(self, name, check_int(name, getattr(self, name)))
        for name in PER_LAYER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
                value = tuple(value)
            if isinstance(value, tuple) and len(value) != len(self.layer_sizes):
                raise ValueError(
                    f"{name} has {len(value)} per-layer values but there are "
                    f"{len(self.layer_sizes)} layers {self.layer_sizes}; "
                    "give one value or one per layer"
                )
        # Regularizers and constraints are stored resolved (instances), so that specs
        # given as Keras-style dicts keep the config hashable.
        resolvers = (
            (_REGULARIZER_FIELDS, get_regularizer),
            (_CONSTRAINT_FIELDS, get_constraint),
            (_INITIALIZER_FIELDS, _resolve_initializer),
        )
        for names, resolve in resolvers:
            for name in names:
                value = getattr(self, name)
                value = tuple(map(resolve, value)) if isinstance(value, tuple) else resolve(value)
                object.__setattr__(self, name, value)
        if not 0.0 <= self.input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {self.input_dropout!r}")
        if self.mask_value is not None and not isinstance(self.mask_value, int | float):
            raise ValueError(f"mask_value must be a number or None, got {self.mask_value!r}")
        get_activation(self.head_activation)
        get_initializer(self.head_kernel_initializer)
        get_initializer(self.head_bias_initializer)
        for name in ("param_dtype", "compute_dtype"):
            value = getattr(self, name)
            if value is None and name == "compute_dtype":
                continue
            try:
                dt = jnp.dtype(value)
            except TypeError:
                raise ValueError(f"{name} {value!r} is not a dtype name") from None
            if not jnp.issubdtype(dt, jnp.floating):
                raise ValueError(f"{name} must be a floating dtype, got {value!r}")
        self.layers  # noqa: B018 - builds and validates every LayerConfig now
        check_hashable(self)

    @functools.cached_property
    def layers(self) -> tuple[LayerConfig, ...]:
        """One ``LayerConfig`` per LSTM layer, with per-layer values resolved."""
        configs = []
        input_size = self.input_size
        for idx, units in enumerate(self.layer_sizes):
            options = {}
            for name in PER_LAYER_FIELDS:
                value = getattr(self, name)
                options[name] = value[idx] if isinstance(value, tuple) else value
            configs.append(LayerConfig(units=units, input_size=input_size, **options))
            input_size = configs[-1].output_size
        return tuple(configs)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (``from_dict`` inverts it).

        Raises:
            TypeError: if an activation or initializer is an arbitrary callable.
        """
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            convert = None
            if field.name in _REGULARIZER_FIELDS:
                convert = regularizer_to_dict
            elif field.name in _CONSTRAINT_FIELDS:
                convert = constraint_to_dict
            elif field.name in _ACTIVATION_FIELDS or field.name in _INITIALIZER_FIELDS:
                convert = _activation_to_json if "activation" in field.name else initializer_to_dict
            if convert is not None:
                value = [convert(v) for v in value] if isinstance(value, tuple) else convert(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild a config from ``to_dict``'s output (unknown keys are an error)."""
        check_fields(cls, data)
        kwargs = {}
        for key, value in data.items():
            if isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)


def _resolve_initializer(spec: InitializerSpec) -> InitializerSpec:
    """Keras-style dicts become initializer instances (hashable); names stay names."""
    return get_initializer(spec) if isinstance(spec, dict) else spec


def _activation_to_json(spec: ActivationSpec) -> str:
    name = activation_name(spec)
    if name is None:
        raise TypeError(
            f"cannot serialise the activation {spec!r}: use a name from jlstm.activations"
        )
    return name


def _check_dtype(name: str) -> jnp.dtype:
    dt = jnp.dtype(name)
    if dt == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "float64 needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before creating arrays"
        )
    return dt


# The jit policy: model-level entry points (``init_params``, ``apply``,
# ``apply_with_outputs``, ``jlstm.penalties.regularized_apply``, ``jlstm.stateful``'s
# ``apply_stateful`` and ``stream_step``) are ``jax.jit`` with the
# config static, so an eager call runs one compiled program per config and shapes (an
# eager seed-model forward took 0.65 s op by op, 0.3 ms compiled); inside a caller's
# ``jit``, ``grad`` or ``vmap`` they are inlined. Building blocks (``cell_step``,
# ``lstm_layer``, ``apply_stack``) never jit: the caller's jit covers them.


@functools.partial(jax.jit, static_argnames=("config",))
def init_params(key: Array, config: ModelConfig) -> ModelParams:
    """Initial ``ModelParams`` for ``config``: Keras initializers, one key per layer.

    ``jax.jit`` with ``config`` static: compiled once per config.

    Returns:
        ``ModelParams(layers, head)``: ``layers[k]`` is ``CellParams`` with kernel
        ``(D_k, 4H_k)``; ``head`` is ``DenseParams`` with kernel ``(H_top, O)``.
    """
    dtype = _check_dtype(config.param_dtype)
    k_layers, k_head, k_head_bias = jax.random.split(key, 3)
    layers = init_stack(k_layers, config.layers, dtype)
    top = config.layers[-1].output_size
    kernel = get_initializer(config.head_kernel_initializer)(
        k_head, (top, config.output_size), dtype
    )
    bias = None
    if config.head_use_bias:
        bias = get_initializer(config.head_bias_initializer)(
            k_head_bias, (config.output_size,), dtype
        )
    return ModelParams(layers, DenseParams(kernel, bias))


@functools.partial(jax.jit, static_argnames=("config", "return_state", "training"))
def apply(
    params: ModelParams,
    x: Array,
    config: ModelConfig,
    *,
    mask: Array | None = None,
    seq_lengths: Array | None = None,
    initial_states: tuple[LSTMState | None, ...] | None = None,
    return_state: bool = False,
    training: bool = False,
    key: Array | None = None,
):
    """Run the model: stacked LSTM layers, then the dense head.

    ``jax.jit`` with ``config``, ``return_state`` and ``training`` static: compiled
    once per config, flags and input shapes; inside a caller's ``jit``, ``grad`` or
    ``vmap`` it is inlined.

    Args:
        params: ``ModelParams`` from ``init_params`` (or an interop converter).
        x: ``(B..., T, D)`` inputs (``D = config.input_size``), cast to the compute dtype.
        config: the ``ModelConfig`` the params were made for.
        mask: optional ``(B..., T)`` step mask (any pattern), passed to every layer;
            with ``config.mask_value`` it is combined (and) with the masking mask.
        seq_lengths: optional ``(B...,)`` lengths of right-padded sequences, instead
            of ``mask``.
        initial_states: optional per-layer ``LSTMState`` (``BidirectionalState`` for
            a bidirectional layer; ``None`` entries mean zeros).
        return_state: also return the final state of every layer.
        training: activates dropout (needs ``key``).
        key: PRNG key for dropout masks.

    Returns:
        ``y`` ``(B..., O)`` (or ``(B..., T, O)`` with ``config.return_sequences``) in
        ``config.param_dtype``; with ``return_state``, ``(y, states)``.
    """
    y, states, _ = _forward(
        params,
        x,
        config,
        mask=mask,
        seq_lengths=seq_lengths,
        initial_states=initial_states,
        training=training,
        key=key,
    )
    return (y, states) if return_state else y


@functools.partial(jax.jit, static_argnames=("config", "training"))
def apply_with_outputs(params: ModelParams, x: Array, config: ModelConfig, **options: Any):
    """``apply`` that also returns every layer's outputs (for activity regularizers).

    Arguments as ``apply`` (``jax.jit`` likewise); ``options`` are its keywords but
    ``return_state``: ``mask``, ``seq_lengths``, ``initial_states``, ``training``, ``key``.

    Returns:
        ``(y, states, layer_outputs)``: ``y`` and ``states`` as ``apply(...,
        return_state=True)``; ``layer_outputs[k]`` holds layer ``k``'s output per
        direction, before merging and dropout (see ``apply_stack``).
    """
    return _forward(params, x, config, collect_outputs=True, **options)


def _forward(
    params: ModelParams,
    x: Array,
    config: ModelConfig,
    *,
    mask: Array | None = None,
    seq_lengths: Array | None = None,
    initial_states=None,
    training: bool = False,
    key: Array | None = None,
    collect_outputs: bool = False,
):
    """``apply``'s body: ``(y, states, layer_outputs or None)`` (see ``apply_stack``)."""
    if isinstance(x, list | tuple):
        x = jnp.asarray(x)
    _check_input(x, config)
    _check_params(params, config)
    param_dtype = jnp.dtype(config.param_dtype)
    compute = jnp.dtype(config.compute_dtype or config.param_dtype)
    if compute != param_dtype:
        params = jax.tree.map(lambda a: a.astype(compute), params)
        if initial_states is not None:
            initial_states = tuple(
                None if s is None else jax.tree.map(lambda a: a.astype(compute), s)
                for s in initial_states
            )
    x = jnp.asarray(x, compute)
    mask = step_mask(mask, seq_lengths, x.shape[-2])
    if config.mask_value is not None:
        # A Keras Masking layer: mask the steps whose features all equal mask_value,
        # and zero them.
        x, value_mask = apply_masking(x, config.mask_value)
        mask = value_mask if mask is None else jnp.logical_and(mask, value_mask)
    if training and config.input_dropout:
        require_dropout_key(key)
        key, k_input = jax.random.split(key)
        x = dropout(x, config.input_dropout, key=k_input)
    h, states, *outputs = apply_stack(
        params.layers,
        x,
        config.layers,
        return_sequences=config.return_sequences,
        mask=mask,
        initial_states=initial_states,
        training=training,
        key=key,
        collect_outputs=collect_outputs,
    )
    y = h @ params.head.kernel
    if params.head.bias is not None:
        y = y + params.head.bias
    y = get_activation(config.head_activation)(y).astype(param_dtype)
    return y, states, (outputs[0] if outputs else None)


def _check_input(x, config: ModelConfig) -> None:
    """Raise a ValueError naming the expected ``(batch..., steps, features)`` shape."""
    expected = f"(batch..., steps, {config.input_size}) = (batch..., steps, features)"
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) < 3:
        raise ValueError(
            f"x must have shape {expected}, at least 3 axes; got shape {shape}. "
            "A single sequence is x[None]; a univariate series needs a features axis, "
            "x[..., None]"
        )
    if shape[-2] == 0:
        raise ValueError(f"x must have shape {expected} with steps >= 1; got shape {shape}")
    if shape[-1] != config.input_size:
        raise ValueError(
            f"x has {shape[-1]} features per step but config.input_size is "
            f"{config.input_size}: x must have shape {expected}; got shape {shape}"
        )


def _check_params(params: ModelParams, config: ModelConfig) -> None:
    """Raise a ValueError naming the first way ``params`` do not fit ``config``."""
    hint = "; params must come from init_params(key, config) with the same config"
    if not (hasattr(params, "layers") and hasattr(params, "head")):
        raise ValueError(f"params must be ModelParams, got {type(params).__name__}{hint}")
    check_layer_count(params.layers, config.layers, f" (layer_sizes {config.layer_sizes}){hint}")
    for idx, (layer, cfg) in enumerate(zip(params.layers, config.layers, strict=True)):
        cells = layer if isinstance(layer, BidirectionalParams) else (layer,)
        if isinstance(layer, BidirectionalParams) != bool(cfg.bidirectional):
            raise ValueError(
                f"layer {idx}: config bidirectional={cfg.bidirectional!r} but params are "
                f"{type(layer).__name__}{hint}"
            )
        four = 4 * cfg.units
        for cell in cells:
            expected = {
                "kernel": (cfg.input_size, four),
                "recurrent_kernel": (cfg.units, four),
                "bias": (four,) if cfg.use_bias else None,
            }
            for name, want in expected.items():
                got = getattr(cell, name)
                got_shape = None if got is None else tuple(got.shape)
                if got_shape != want:
                    what = "None (use_bias=False)" if want is None else want
                    raise ValueError(
                        f"layer {idx} ({cfg.units} units, input size {cfg.input_size}, "
                        f"use_bias={cfg.use_bias}): {name} must be {what}, got "
                        f"{got_shape}{hint}"
                    )
    top = config.layers[-1].output_size
    head = {
        "kernel": (top, config.output_size),
        "bias": (config.output_size,) if config.head_use_bias else None,
    }
    for name, want in head.items():
        got = getattr(params.head, name)
        got_shape = None if got is None else tuple(got.shape)
        if got_shape != want:
            raise ValueError(
                f"head {name} must be {want} (top layer output {top}, output_size "
                f"{config.output_size}, head_use_bias={config.head_use_bias}), got "
                f"{got_shape}{hint}"
            )


def param_count(params: ModelParams) -> int:
    """Total number of scalar parameters."""
    return sum(a.size for a in jax.tree.leaves(params))
