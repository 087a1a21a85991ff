"""Keras 3 models <-> jlstm ``(ModelConfig, ModelParams)``.

``load_keras(path_or_model)`` reads a ``.keras`` file or an in-memory ``Sequential``
or functional model whose layers form one chain of

    [InputLayer] [Masking] [Dropout]* (LSTM | Bidirectional(LSTM)) [Dropout]* ...
    Dense [Activation]

(the seed tutorial's ``LSTM(64) -> LSTM(32) -> LSTM(16) -> Dense(1)`` first), with any
``LSTM`` argument: activations, ``use_bias``, initializers, ``unit_forget_bias``,
regularizers (``activity_regularizer`` included), constraints, ``dropout``,
``recurrent_dropout``, ``implementation``, ``return_sequences`` (on the top layer),
``go_backwards``, ``unroll``, ``zero_output_for_mask``; ``stateful`` layers load as
ordinary ones (carry state with ``jlstm.stateful``); ``seed`` and ``use_cudnn`` have
no jlstm counterpart (jlstm takes explicit keys and picks kernels by mode).
Consecutive ``Dropout`` layers fold into one with the same distribution
(``1 - prod(1 - rate)``). Anything else raises a ``ValueError`` naming the layer.

``to_keras(config, params)`` builds the equivalent ``keras.Sequential`` (weights
copied), optionally stateful with a fixed batch size. Both directions predict the
same to float32 rounding (tests: 1e-5).

Keras is imported lazily, inside the functions; set ``KERAS_BACKEND`` (``jax``
recommended) before the first import of Keras.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..activations import ACTIVATIONS, activation_name
from ..constraints import Constraint, MaxNorm, MinMaxNorm, NonNeg, UnitNorm, get_constraint
from ..initializers import Initializer, VarianceScaling, get_initializer, initializer_to_dict
from ..model import PER_LAYER_FIELDS, ModelConfig
from ..modes import get_mode
from ..regularizers import L1, L1L2, L2, OrthogonalRegularizer, Regularizer, get_regularizer
from ..types import BidirectionalParams, CellParams, DenseParams, ModelParams
from ..validation import check_layer_count

__all__ = ["load_keras", "to_keras"]

SUPPORTED_LAYERS = (
    "InputLayer",
    "Masking",
    "Dropout",
    "LSTM",
    "Bidirectional(LSTM)",
    "Dense",
    "Activation",
)
# Keras activation names jlstm computes identically (jlstm.activations follows Keras 3):
# all of jlstm's but its Keras 2 hard sigmoid and tanh-approximated GELU.
_KERAS_ACTIVATIONS = set(ACTIVATIONS) - {"hard_sigmoid_keras2", "gelu_tanh"}


def _keras():
    try:
        import keras
    except ImportError as err:  # pragma: no cover - keras is a test dependency
        raise ImportError(
            "jlstm.interop.keras needs Keras 3: pip install 'jlstm[keras]' "
            "(and set KERAS_BACKEND=jax before importing it)"
        ) from err
    if int(keras.__version__.split(".")[0]) < 3:
        raise ImportError(f"jlstm.interop.keras needs Keras 3, found {keras.__version__}")
    return keras


def _unsupported(layer, why: str = "") -> ValueError:
    kind = type(layer).__name__
    return ValueError(
        f"load_keras: layer {layer.name!r} ({kind}) is not supported{': ' + why if why else ''}; "
        f"jlstm reads chains of {', '.join(SUPPORTED_LAYERS)}"
    )


# ----------------------------------------------------------------------------- reading


def _is_symbolic(value) -> bool:
    return isinstance(value, _keras().KerasTensor)


def _flatten_layers(model) -> list:
    """The model's layers in data order (nested models expanded), checking that they
    form a single chain."""
    keras = _keras()
    chain = model.layers if isinstance(model, keras.Sequential) else _functional_chain(model)
    layers = []
    for layer in chain:
        layers.extend(_flatten_layers(layer) if isinstance(layer, keras.Model) else [layer])
    return layers


def _functional_chain(model) -> list:
    """A functional model's top-level layers from input to output, checking that they
    form a single chain."""
    keras = _keras()
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"load_keras takes a path to a .keras file or a keras.Model, got {type(model).__name__}"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"load_keras: model {model.name!r} has {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs; jlstm reads single-input, single-output chains"
        )
    chain = []
    tensor = model.outputs[0]
    source = model.inputs[0]
    while tensor is not source:
        op, node_index, _ = tensor._keras_history
        node = op._inbound_nodes[node_index]
        args = [a for a in keras.tree.flatten(node.arguments.args) if _is_symbolic(a)]
        # Keras passes the propagated step mask as a `mask` keyword: that one is the
        # chain's own mask; any other tensor argument (initial_state, ...) is not a chain.
        extra = [
            name
            for name, value in node.arguments.kwargs.items()
            if name != "mask" and any(map(_is_symbolic, keras.tree.flatten(value)))
        ]
        if len(args) != 1 or extra:
            raise _unsupported(
                op,
                f"it takes {len(args)} input tensors{' and ' + ', '.join(extra) if extra else ''} "
                "(a chain takes one per layer)",
            )
        chain.append(op)
        tensor = args[0]
    return chain[::-1]


def _numpy(variable) -> np.ndarray:
    keras = _keras()
    return np.asarray(keras.ops.convert_to_numpy(variable.value))


def _activation(spec, layer) -> str:
    keras = _keras()
    name = spec if isinstance(spec, str) else keras.activations.serialize(spec)
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    if not isinstance(name, str) or name not in _KERAS_ACTIVATIONS:
        raise _unsupported(
            layer,
            f"activation {name!r} has no jlstm equivalent (known: {sorted(_KERAS_ACTIVATIONS)})",
        )
    return name


def _initializer(spec, layer):
    if spec is None or isinstance(spec, str):
        return spec
    try:
        init = get_initializer({"class_name": spec["class_name"], "config": spec.get("config")})
    except ValueError:
        warnings.warn(
            f"load_keras: layer {layer.name!r}: initializer {spec.get('class_name')!r} has no "
            "jlstm equivalent; the config keeps jlstm's default (the weights are copied, so "
            "predictions are unaffected)",
            stacklevel=3,
        )
        return None
    # A default instance reads better (and compares equal to the defaults) as its name.
    as_json = initializer_to_dict(init)
    return as_json if isinstance(as_json, str) else init


def _regularizer(spec, layer) -> Regularizer | None:
    if spec is None:
        return None
    try:
        return get_regularizer({"class_name": spec["class_name"], "config": spec.get("config")})
    except (ValueError, TypeError, KeyError):
        raise _unsupported(layer, f"regularizer {spec!r} has no jlstm equivalent") from None


def _constraint(spec, layer) -> Constraint | None:
    if spec is None:
        return None
    try:
        return get_constraint({"class_name": spec["class_name"], "config": spec.get("config")})
    except (ValueError, TypeError, KeyError):
        raise _unsupported(layer, f"constraint {spec!r} has no jlstm equivalent") from None


def _dtypes(layer) -> tuple[str, str | None]:
    policy = layer.dtype_policy
    variable, compute = policy.variable_dtype, policy.compute_dtype
    if variable not in ("float32", "float64", "bfloat16", "float16"):
        raise _unsupported(layer, f"dtype policy {policy.name!r}")
    return variable, (None if compute == variable else compute)


def _lstm_options(layer) -> dict[str, Any]:
    cfg = layer.get_config()
    if cfg.get("return_state"):
        raise _unsupported(
            layer,
            "return_state=True inside a model; call jlstm.lstm_layer(..., return_state=True) "
            "or jlstm.apply(..., return_state=True) instead",
        )
    return dict(
        units=int(cfg["units"]),
        activation=_activation(cfg["activation"], layer),
        recurrent_activation=_activation(cfg["recurrent_activation"], layer),
        use_bias=bool(cfg["use_bias"]),
        kernel_initializer=_initializer(cfg["kernel_initializer"], layer) or "glorot_uniform",
        recurrent_initializer=_initializer(cfg["recurrent_initializer"], layer) or "orthogonal",
        bias_initializer=_initializer(cfg["bias_initializer"], layer) or "zeros",
        unit_forget_bias=bool(cfg["unit_forget_bias"]),
        dropout=float(cfg["dropout"]),
        recurrent_dropout=float(cfg["recurrent_dropout"]),
        implementation=_implementation(layer, float(cfg["recurrent_dropout"])),
        go_backwards=bool(cfg["go_backwards"]),
        unroll=bool(cfg["unroll"]),
        zero_output_for_mask=bool(cfg.get("zero_output_for_mask", False)),
        kernel_regularizer=_regularizer(cfg["kernel_regularizer"], layer),
        recurrent_regularizer=_regularizer(cfg["recurrent_regularizer"], layer),
        bias_regularizer=_regularizer(cfg["bias_regularizer"], layer),
        activity_regularizer=_regularizer(cfg["activity_regularizer"], layer),
        kernel_constraint=_constraint(cfg["kernel_constraint"], layer),
        recurrent_constraint=_constraint(cfg["recurrent_constraint"], layer),
        bias_constraint=_constraint(cfg["bias_constraint"], layer),
        return_sequences=bool(cfg["return_sequences"]),
    )


def _implementation(layer, recurrent_dropout: float) -> int | str:
    """Keras' ``implementation`` as a jlstm one: 1 stays 1 (one dropout mask per gate);
    Keras' 2, and the 1 it forces with recurrent dropout, become ``"auto"``, which
    computes the same function with the same dropout mask layout, on the fastest mode.

    ``implementation`` is not in Keras' config (a constructor-only argument), so it is
    read from the live cell; a ``.keras`` file always comes back with Keras' default.
    """
    keras_value = int(getattr(layer.cell, "implementation", 2))
    return 1 if keras_value == 1 and recurrent_dropout == 0.0 else "auto"


def _cell_params(layer) -> CellParams:
    cell = layer.cell
    bias = None if cell.bias is None else _numpy(cell.bias)
    return CellParams(_numpy(cell.kernel), _numpy(cell.recurrent_kernel), bias)


def _bidirectional(layer) -> tuple[dict[str, Any], BidirectionalParams]:
    keras = _keras()
    forward, backward = layer.forward_layer, layer.backward_layer
    for sub in (forward, backward):
        if not isinstance(sub, keras.layers.LSTM):
            raise _unsupported(layer, f"it wraps a {type(sub).__name__}; jlstm wraps LSTM layers")
    if layer.merge_mode is None:
        raise _unsupported(
            layer,
            "merge_mode=None returns two tensors; use jlstm.bidirectional_layer(..., "
            "merge_mode=None) for it",
        )
    if layer.activity_regularizer is not None:
        raise _unsupported(layer, "an activity_regularizer on the Bidirectional wrapper itself")
    if forward.go_backwards or not backward.go_backwards:
        raise _unsupported(layer, "its forward layer reads backwards")
    ignore = {"name", "go_backwards"}
    f_cfg = {k: v for k, v in forward.get_config().items() if k not in ignore}
    b_cfg = {k: v for k, v in backward.get_config().items() if k not in ignore}
    if f_cfg != b_cfg or forward.cell.implementation != backward.cell.implementation:
        raise _unsupported(layer, "a backward_layer configured unlike the forward layer")
    options = _lstm_options(forward)
    options["bidirectional"] = layer.merge_mode
    options["go_backwards"] = False
    # Keras forces zero_output_for_mask = return_sequences in both directions; jlstm's
    # bidirectional layers always do, so the stored value is left at its default.
    options["zero_output_for_mask"] = False
    return options, BidirectionalParams(_cell_params(forward), _cell_params(backward))


def _fold_dropout(rates: list[float]) -> float:
    """One Dropout with the distribution of several in a row: keep = prod(1 - rate)."""
    if len(rates) <= 1:
        return rates[0] if rates else 0.0
    return 1.0 - float(np.prod([1.0 - r for r in rates]))


def _collapse(values: list):
    """One value if every layer has the same, else a tuple per layer."""
    first = values[0]
    if all(type(v) is type(first) and v == first for v in values):
        return first
    return tuple(values)


def load_keras(
    path_or_model, *, custom_objects: dict | None = None, config: ModelConfig | None = None
) -> tuple[ModelConfig, ModelParams]:
    """Read a Keras 3 LSTM model into jlstm.

    Args:
        path_or_model: a path to a ``.keras`` file (Keras 3's zip format, loaded with
            ``safe_mode``), or a built ``keras.Model`` (``Sequential`` or functional).
        custom_objects: passed to ``keras.saving.load_model`` for a path.
        config: for HDF5 files: the ``ModelConfig`` of a weights-only file (Keras 2
            ``save_weights("w.h5")`` or Keras 3 ``"m.weights.h5"``).

    A ``.h5`` / ``.hdf5`` path is read with h5py, without Keras
    (``jlstm.interop.keras_h5``): full models saved by Keras 2.x and tf.keras 2.x
    (``keras_version < 3`` makes ``hard_sigmoid`` Keras 2's ``0.2 x + 0.5``, loaded as
    ``"hard_sigmoid_keras2"``), and weights files given ``config``.

    Returns:
        ``(config, params)``: ``jlstm.apply(params, x, config)`` predicts what the Keras
        model predicts (inference mode). Parameters are float32 NumPy-backed JAX
        arrays in the model's variable dtype.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for a layer (or layer option) jlstm has no equivalent of; the
            message names the layer.
    """
    import jax.numpy as jnp

    if isinstance(path_or_model, str | os.PathLike):
        path = Path(path_or_model)
        if not path.is_file():
            raise FileNotFoundError(f"load_keras: no Keras model file at {str(path)!r}")
        if path.suffix in (".h5", ".hdf5"):
            from .keras_h5 import load_keras_h5

            return load_keras_h5(path, config)
    keras = _keras()
    if isinstance(path_or_model, str | os.PathLike):
        if path.suffix != ".keras":
            raise ValueError(
                f"load_keras reads Keras 3 '.keras' and HDF5 '.h5' files, got {path.name!r}; "
                "load other formats with keras.saving.load_model and pass the model"
            )
        model = keras.saving.load_model(path, compile=False, custom_objects=custom_objects)
    else:
        model = path_or_model
    layers = _flatten_layers(model)
    if not model.inputs:
        raise ValueError("load_keras: the model is not built; call it on data or give it an Input")
    input_shape = tuple(model.inputs[0].shape)
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ValueError(
            f"load_keras: the model input must be (batch, steps, features) with known features, "
            f"got {input_shape}"
        )

    model_options: dict[str, Any] = {"input_size": int(input_shape[-1])}
    layer_options: list[dict[str, Any]] = []
    cells: list = []
    dtypes: set[tuple[str, str | None]] = set()
    head = None
    head_activation_set = False
    pending_dropout: list[float] = []  # rates of the Dropout layers since the last LSTM

    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if head is not None:
            if isinstance(layer, keras.layers.Activation) and not head_activation_set:
                model_options["head_activation"] = _activation(
                    layer.get_config()["activation"], layer
                )
                head_activation_set = True
                continue
            raise _unsupported(layer, "jlstm's model ends with one Dense head (and an Activation)")
        if isinstance(layer, keras.layers.Masking):
            if layer_options or pending_dropout or "mask_value" in model_options:
                raise _unsupported(layer, "Masking must come first, before Dropout and LSTM layers")
            model_options["mask_value"] = float(layer.mask_value)
            continue
        if isinstance(layer, keras.layers.Dropout):
            if layer.noise_shape is not None:
                raise _unsupported(
                    layer, f"noise_shape={layer.noise_shape} (only elementwise dropout)"
                )
            pending_dropout.append(float(layer.rate))
            continue
        if isinstance(layer, keras.layers.LSTM | keras.layers.Bidirectional):
            if layer_options and not layer_options[-1]["return_sequences"]:
                raise _unsupported(layer, "the LSTM below it does not return sequences")
            rate = _fold_dropout(pending_dropout)
            if layer_options:
                layer_options[-1]["output_dropout"] = rate
            else:
                model_options["input_dropout"] = rate
            pending_dropout = []
            if isinstance(layer, keras.layers.Bidirectional):
                options, cell = _bidirectional(layer)
            else:
                options, cell = _lstm_options(layer), _cell_params(layer)
                options["bidirectional"] = False
            options["output_dropout"] = 0.0
            layer_options.append(options)
            cells.append(cell)
            dtypes.add(_dtypes(layer))
            continue
        if isinstance(layer, keras.layers.Dense):
            if not layer_options:
                raise _unsupported(layer, "a Dense layer before any LSTM layer")
            if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
                raise _unsupported(layer, "LoRA or quantized Dense layers")
            layer_options[-1]["output_dropout"] = _fold_dropout(pending_dropout)
            pending_dropout = []
            cfg = layer.get_config()
            model_options.update(
                output_size=int(cfg["units"]),
                head_activation=_activation(cfg["activation"], layer),
                head_use_bias=bool(cfg["use_bias"]),
                head_kernel_initializer=_initializer(cfg["kernel_initializer"], layer)
                or "glorot_uniform",
                head_bias_initializer=_initializer(cfg["bias_initializer"], layer) or "zeros",
                head_kernel_regularizer=_regularizer(cfg["kernel_regularizer"], layer),
                head_bias_regularizer=_regularizer(cfg.get("bias_regularizer"), layer),
                head_activity_regularizer=_regularizer(
                    keras.regularizers.serialize(layer.activity_regularizer)
                    if layer.activity_regularizer is not None
                    else None,
                    layer,
                ),
                head_kernel_constraint=_constraint(cfg["kernel_constraint"], layer),
                head_bias_constraint=_constraint(cfg["bias_constraint"], layer),
            )
            head_activation_set = model_options["head_activation"] != "linear"
            bias = None if layer.bias is None else _numpy(layer.bias)
            head = DenseParams(_numpy(layer.kernel), bias)
            dtypes.add(_dtypes(layer))
            continue
        raise _unsupported(layer)

    if not layer_options:
        raise ValueError(f"load_keras: model {model.name!r} has no LSTM layer")
    if head is None:
        raise ValueError(
            f"load_keras: model {model.name!r} has no Dense head after its LSTM layers; "
            "jlstm's model is LSTM layers then one Dense layer"
        )
    if pending_dropout:
        raise ValueError("load_keras: a Dropout layer after the Dense head is not supported")
    if len(dtypes) != 1:
        raise ValueError(
            f"load_keras: layers use different dtype policies {sorted(map(str, dtypes))}"
        )
    param_dtype, compute_dtype = dtypes.pop()

    model_options["return_sequences"] = layer_options[-1]["return_sequences"]
    model_options["layer_sizes"] = tuple(opt["units"] for opt in layer_options)
    for name in PER_LAYER_FIELDS:
        if name in layer_options[0]:
            model_options[name] = _collapse([opt[name] for opt in layer_options])
    config = ModelConfig(param_dtype=param_dtype, compute_dtype=compute_dtype, **model_options)

    def to_jax(tree):
        return None if tree is None else jnp.asarray(tree, param_dtype)

    layers_params = []
    for cell in cells:
        if isinstance(cell, BidirectionalParams):
            layers_params.append(BidirectionalParams(*(CellParams(*map(to_jax, c)) for c in cell)))
        else:
            layers_params.append(CellParams(*map(to_jax, cell)))
    params = ModelParams(tuple(layers_params), DenseParams(*map(to_jax, head)))
    return config, params


# ----------------------------------------------------------------------------- writing


def _keras_activation(spec, what: str) -> str:
    name = activation_name(spec)
    if name not in _KERAS_ACTIVATIONS:
        raise ValueError(
            f"to_keras: {what} activation {spec!r} has no Keras 3 equivalent "
            f"(Keras names: {sorted(_KERAS_ACTIVATIONS)})"
        )
    return name


def _keras_initializer(spec, default: str, what: str):
    keras = _keras()
    init = get_initializer(spec)
    try:
        as_json = initializer_to_dict(init)
    except TypeError:
        as_json = None
    if isinstance(as_json, str) and as_json not in ("block_identity", "torch_lstm"):
        return keras.initializers.get(as_json)
    if isinstance(init, VarianceScaling):
        return keras.initializers.VarianceScaling(
            scale=init.scale, mode=init.mode, distribution=init.distribution
        )
    if isinstance(init, Initializer) and isinstance(as_json, dict):
        keras_name = {"Identity": "IdentityInitializer"}.get(
            type(init).__name__, type(init).__name__
        )
        try:
            return keras.initializers.get({"class_name": keras_name, "config": init.get_config()})
        except (ValueError, TypeError):
            pass
    warnings.warn(
        f"to_keras: {what} initializer {spec!r} has no Keras equivalent; using Keras' "
        f"{default!r} (only re-initialisation is affected: the weights are copied)",
        stacklevel=3,
    )
    return keras.initializers.get(default)


def _keras_regularizer(spec, what: str):
    keras = _keras()
    reg = get_regularizer(spec)
    if reg is None:
        return None
    if isinstance(reg, L1):
        return keras.regularizers.L1(reg.l1)
    if isinstance(reg, L2):
        return keras.regularizers.L2(reg.l2)
    if isinstance(reg, L1L2):
        return keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)
    if isinstance(reg, OrthogonalRegularizer):
        return keras.regularizers.OrthogonalRegularizer(factor=reg.factor, mode=reg.mode)
    raise ValueError(
        f"to_keras: {what} regularizer {spec!r} is a custom callable Keras cannot hold"
    )


def _keras_constraint(spec, what: str):
    keras = _keras()
    con = get_constraint(spec)
    if con is None:
        return None
    axis = lambda a: list(a) if isinstance(a, tuple) else a  # noqa: E731
    if isinstance(con, MaxNorm):
        return keras.constraints.MaxNorm(max_value=con.max_value, axis=axis(con.axis))
    if isinstance(con, NonNeg):
        return keras.constraints.NonNeg()
    if isinstance(con, UnitNorm):
        return keras.constraints.UnitNorm(axis=axis(con.axis))
    if isinstance(con, MinMaxNorm):
        return keras.constraints.MinMaxNorm(
            min_value=con.min_value, max_value=con.max_value, rate=con.rate, axis=axis(con.axis)
        )
    raise ValueError(f"to_keras: {what} constraint {spec!r} is a custom callable Keras cannot hold")


def _keras_dtype(config: ModelConfig) -> str:
    param = np.dtype(config.param_dtype).name  # ml_dtypes (via JAX) registers bfloat16
    compute = config.compute_dtype or config.param_dtype
    if compute == config.param_dtype:
        return param
    if param == "float32" and compute in ("bfloat16", "float16"):
        return f"mixed_{compute}"
    raise ValueError(
        f"to_keras: param_dtype {config.param_dtype!r} with compute_dtype {compute!r} has no "
        "Keras dtype policy"
    )


def _assign_cell(cell, params: CellParams) -> None:
    cell.kernel.assign(np.asarray(params.kernel))
    cell.recurrent_kernel.assign(np.asarray(params.recurrent_kernel))
    if cell.bias is not None:
        cell.bias.assign(np.asarray(params.bias))


def to_keras(
    config: ModelConfig,
    params: ModelParams,
    *,
    batch_size: int | None = None,
    steps: int | None = None,
    stateful: bool = False,
    name: str | None = None,
):
    """Build the Keras 3 ``Sequential`` model equivalent to ``(config, params)``.

    Layers: ``Input`` -> ``Masking`` (if ``config.mask_value``) -> ``Dropout`` (if
    ``input_dropout``) -> per layer ``LSTM`` (or ``Bidirectional(LSTM)``) and its
    ``Dropout`` -> ``Dense``. Every jlstm option maps to its Keras argument
    (``implementation``: jlstm's ``"keras1"`` -> 1, any other mode -> 2; an integer
    ``unroll`` -> ``False``, since partial unrolling does not change the result).
    Initializers without a Keras equivalent (and ``forget_bias`` other than 1) only
    affect re-initialisation: the weights are copied.

    Args:
        config: the jlstm ``ModelConfig``.
        params: its ``ModelParams`` (copied into the Keras variables).
        batch_size: fixed batch size of the ``Input`` (required with ``stateful``).
        steps: fixed number of time steps, or ``None`` for any.
        stateful: build stateful ``LSTM`` layers (Keras' ``stateful=True``).
        name: the Keras model's name.

    Returns:
        A built ``keras.Sequential`` whose ``predict`` matches ``jlstm.apply``.
    """
    keras = _keras()
    if stateful and batch_size is None:
        raise ValueError("to_keras: a stateful Keras model needs a fixed batch_size")
    dtype = _keras_dtype(config)
    check_layer_count(params.layers, config.layers)
    layers: list = [keras.Input(batch_shape=(batch_size, steps, config.input_size))]
    if config.mask_value is not None:
        layers.append(keras.layers.Masking(mask_value=config.mask_value, dtype=dtype))
    if config.input_dropout:
        layers.append(keras.layers.Dropout(config.input_dropout, dtype=dtype))
    recurrent = []
    for idx, cfg in enumerate(config.layers):
        top = idx == len(config.layers) - 1
        what = f"layer {idx}"
        if cfg.bidirectional and cfg.go_backwards:
            raise ValueError(
                f"to_keras: {what} is bidirectional with go_backwards (Keras rejects it)"
            )
        lstm = keras.layers.LSTM(
            cfg.units,
            activation=_keras_activation(cfg.activation, what),
            recurrent_activation=_keras_activation(cfg.recurrent_activation, what),
            use_bias=cfg.use_bias,
            kernel_initializer=_keras_initializer(cfg.kernel_initializer, "glorot_uniform", what),
            recurrent_initializer=_keras_initializer(cfg.recurrent_initializer, "orthogonal", what),
            bias_initializer=_keras_initializer(cfg.bias_initializer, "zeros", what),
            unit_forget_bias=cfg.unit_forget_bias,
            kernel_regularizer=_keras_regularizer(cfg.kernel_regularizer, what),
            recurrent_regularizer=_keras_regularizer(cfg.recurrent_regularizer, what),
            bias_regularizer=_keras_regularizer(cfg.bias_regularizer, what),
            activity_regularizer=_keras_regularizer(cfg.activity_regularizer, what),
            kernel_constraint=_keras_constraint(cfg.kernel_constraint, what),
            recurrent_constraint=_keras_constraint(cfg.recurrent_constraint, what),
            bias_constraint=_keras_constraint(cfg.bias_constraint, what),
            dropout=cfg.dropout,
            recurrent_dropout=cfg.recurrent_dropout,
            implementation=1 if get_mode(cfg.implementation).name == "keras1" else 2,
            return_sequences=config.return_sequences or not top,
            go_backwards=cfg.go_backwards if not cfg.bidirectional else False,
            stateful=stateful,
            unroll=cfg.unroll is True,
            zero_output_for_mask=cfg.zero_output_for_mask,
            dtype=dtype,
        )
        layer = (
            keras.layers.Bidirectional(lstm, merge_mode=cfg.bidirectional, dtype=dtype)
            if cfg.bidirectional
            else lstm
        )
        layers.append(layer)
        recurrent.append(layer)
        if cfg.output_dropout:
            layers.append(keras.layers.Dropout(cfg.output_dropout, dtype=dtype))
    dense = keras.layers.Dense(
        config.output_size,
        activation=_keras_activation(config.head_activation, "head"),
        use_bias=config.head_use_bias,
        kernel_initializer=_keras_initializer(
            config.head_kernel_initializer, "glorot_uniform", "head"
        ),
        bias_initializer=_keras_initializer(config.head_bias_initializer, "zeros", "head"),
        kernel_regularizer=_keras_regularizer(config.head_kernel_regularizer, "head"),
        bias_regularizer=_keras_regularizer(config.head_bias_regularizer, "head"),
        activity_regularizer=_keras_regularizer(config.head_activity_regularizer, "head"),
        kernel_constraint=_keras_constraint(config.head_kernel_constraint, "head"),
        bias_constraint=_keras_constraint(config.head_bias_constraint, "head"),
        dtype=dtype,
    )
    layers.append(dense)
    model = keras.Sequential(layers, name=name)
    for layer, cell_params in zip(recurrent, params.layers, strict=True):
        if isinstance(layer, keras.layers.Bidirectional):
            if not isinstance(cell_params, BidirectionalParams):
                raise ValueError("to_keras: a bidirectional layer needs BidirectionalParams")
            _assign_cell(layer.forward_layer.cell, cell_params.forward)
            _assign_cell(layer.backward_layer.cell, cell_params.backward)
        else:
            _assign_cell(layer.cell, cell_params)
    dense.kernel.assign(np.asarray(params.head.kernel))
    if dense.bias is not None:
        dense.bias.assign(np.asarray(params.head.bias))
    return model
