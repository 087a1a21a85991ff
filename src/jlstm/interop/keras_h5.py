"""Keras HDF5 files read with h5py directly (no Keras needed): Keras 2 / tf.keras full
models and weights, and Keras 3 ``.weights.h5``.

* Full-model ``.h5`` (Keras 2.x, tf.keras 2.x ``model.save("m.h5")``): root attributes
  ``keras_version``, ``backend``, ``model_config`` (the model's JSON config) and the
  group ``model_weights`` whose ``layer_names`` attribute lists the layers in order;
  each layer's group lists its datasets in its ``weight_names`` attribute
  (``lstm_1/kernel:0`` in Keras 2.2, ``lstm/lstm_cell/kernel:0`` in tf.keras 2.x,
  stored as nested groups). The first layer carries ``batch_input_shape`` (Keras 2.2)
  or an ``InputLayer`` comes first (tf.keras 2.4+). ``Sequential`` configs (also the
  Keras <= 2.1 list form) and single-chain functional ``Model``/``Functional``
  configs are read, with ``InputLayer``, ``Masking``, ``Dropout``, ``LSTM``,
  ``Bidirectional(LSTM)``, ``Dense`` and ``Activation`` layers.
* A file whose ``keras_version`` is below 3 means Keras 2's ``hard_sigmoid``
  (``clip(0.2 x + 0.5, 0, 1)``): it loads as ``"hard_sigmoid_keras2"``.
* Weights-only files (Keras 2 ``save_weights("w.h5")``: ``layer_names`` at the root;
  Keras 3 ``save_weights("m.weights.h5")``: ``layers/<name>/.../vars/<i>``) hold no
  config: pass the model's ``ModelConfig``.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

import numpy as np

from ..constraints import get_constraint
from ..initializers import get_initializer
from ..model import PER_LAYER_FIELDS, ModelConfig
from ..regularizers import get_regularizer
from ..types import BidirectionalParams, CellParams, DenseParams, ModelParams

__all__ = ["load_keras_h5"]

_LSTM_KEYS = (
    "units",
    "activation",
    "recurrent_activation",
    "use_bias",
    "unit_forget_bias",
    "dropout",
    "recurrent_dropout",
    "go_backwards",
    "unroll",
)


def _h5py():
    try:
        import h5py
    except ImportError as err:  # pragma: no cover
        raise ImportError("reading Keras HDF5 files needs h5py: pip install h5py") from err
    return h5py


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _names(group, attr: str) -> list[str]:
    """A Keras list attribute (split into ``attr0``, ``attr1``... when it was too long)."""
    if attr in group.attrs:
        values = list(group.attrs[attr])
    else:
        values, chunk = [], 0
        while f"{attr}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{attr}{chunk}"])
            chunk += 1
    return [_text(v) for v in values]


def _keras_major(version: str | None) -> int:
    if not version:
        return 2  # files without a version predate Keras 3's format
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 2


class _Reader:
    """Translates one file's layer configs; ``keras2`` decides what hard_sigmoid means."""

    def __init__(self, keras2: bool):
        self.keras2 = keras2

    def error(self, name: str, why: str) -> ValueError:
        return ValueError(f"load_keras: layer {name!r} {why}")

    def activation(self, spec, name: str) -> str:
        if isinstance(spec, dict):
            spec = spec.get("config", {}).get("name", spec.get("class_name"))
        from ..activations import ACTIVATIONS

        spec = str(spec).lower()
        if spec == "hard_sigmoid" and self.keras2:
            return "hard_sigmoid_keras2"
        if spec not in ACTIVATIONS or spec in ("hard_sigmoid_keras2", "gelu_tanh"):
            raise self.error(name, f"uses the activation {spec!r}, which jlstm does not have")
        return spec

    def spec(self, kind, spec, name: str):
        if spec is None or isinstance(spec, str):
            return spec
        spec = {"class_name": spec["class_name"], "config": spec.get("config") or {}}
        try:
            return kind(spec)
        except (ValueError, TypeError, KeyError):
            if kind is get_initializer:
                return None  # only re-initialisation is affected: the weights are read
            raise self.error(
                name, f"uses {spec['class_name']!r}, which jlstm does not have"
            ) from None

    def lstm(self, cfg: dict, name: str) -> dict[str, Any]:
        if cfg.get("return_state"):
            raise self.error(name, "has return_state=True inside a model")
        if cfg.get("stateful"):
            pass  # loads as an ordinary layer; carry state with jlstm.stateful
        if cfg.get("time_major"):
            raise self.error(name, "is time_major (jlstm reads (batch, steps, features))")
        options = {key: cfg[key] for key in _LSTM_KEYS if key in cfg}
        options["units"] = int(options["units"])
        for key in ("activation", "recurrent_activation"):
            default = "tanh" if key == "activation" else "hard_sigmoid"
            options[key] = self.activation(cfg.get(key, default), name)
        for key, default in (
            ("kernel_initializer", "glorot_uniform"),
            ("recurrent_initializer", "orthogonal"),
            ("bias_initializer", "zeros"),
        ):
            options[key] = self.spec(get_initializer, cfg.get(key), name) or default
        for key in ("kernel", "recurrent", "bias", "activity"):
            options[f"{key}_regularizer"] = self.spec(
                get_regularizer, cfg.get(f"{key}_regularizer"), name
            )
        for key in ("kernel", "recurrent", "bias"):
            options[f"{key}_constraint"] = self.spec(
                get_constraint, cfg.get(f"{key}_constraint"), name
            )
        recurrent_dropout = float(cfg.get("recurrent_dropout", 0.0))
        implementation = int(cfg.get("implementation", 2))
        options["implementation"] = 1 if implementation == 1 and not recurrent_dropout else "auto"
        options["zero_output_for_mask"] = bool(cfg.get("zero_output_for_mask", False))
        options["return_sequences"] = bool(cfg.get("return_sequences", False))
        for key in ("dropout", "recurrent_dropout"):
            options[key] = float(options.get(key, 0.0))
        return options


def _chain(model_config: dict) -> list[dict]:
    """The layer configs of a Sequential or single-chain functional model, in order."""
    kind = model_config.get("class_name")
    config = model_config.get("config")
    if kind == "Sequential":
        layers = config if isinstance(config, list) else config["layers"]
        return list(layers)
    if kind in ("Model", "Functional"):
        layers = list(config["layers"])
        for prev, layer in itertools.pairwise(layers):
            inbound = json.dumps(layer.get("inbound_nodes", []))
            if f'"{prev["config"]["name"]}"' not in inbound:
                raise ValueError(
                    f"load_keras: functional model layer {layer['config']['name']!r} does not "
                    f"read the layer before it; jlstm reads single chains"
                )
        return layers
    raise ValueError(f"load_keras: model class {kind!r} is not Sequential or a functional Model")


def _config_from_json(model_config: dict, keras2: bool) -> tuple[ModelConfig, list]:
    """``(ModelConfig, plan)``; ``plan`` names the weight layers: ``("lstm", name)``,
    ``("bidirectional", name)``, ``("dense", name)``."""
    reader = _Reader(keras2)
    model_options: dict[str, Any] = {}
    layer_options: list[dict[str, Any]] = []
    plan: list[tuple[str, str]] = []
    pending: list[float] = []
    dtypes: set[str] = set()
    input_size = None
    head_done = head_activation = False

    def fold(rates):
        return 1.0 - float(np.prod([1.0 - r for r in rates])) if rates else 0.0

    for layer in _chain(model_config):
        kind, cfg = layer["class_name"], layer["config"]
        name = cfg.get("name", kind)
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        if shape is not None and input_size is None:
            if len(shape) != 3 or shape[-1] is None:
                raise reader.error(name, f"has input shape {shape}; jlstm reads (batch, steps, D)")
            input_size = int(shape[-1])
        if kind == "InputLayer":
            continue
        if head_done:
            if kind == "Activation" and not head_activation:
                model_options["head_activation"] = reader.activation(cfg["activation"], name)
                head_activation = True
                continue
            raise reader.error(name, "comes after the Dense head (jlstm's model ends there)")
        if isinstance(cfg.get("dtype"), str):
            dtypes.add(cfg["dtype"])
        if kind == "Masking":
            if layer_options or pending:
                raise reader.error(name, "is a Masking layer that does not come first")
            model_options["mask_value"] = float(cfg.get("mask_value", 0.0))
        elif kind == "Dropout":
            if cfg.get("noise_shape") is not None:
                raise reader.error(name, "has a noise_shape (only elementwise dropout)")
            pending.append(float(cfg["rate"]))
        elif kind in ("LSTM", "CuDNNLSTM", "Bidirectional"):
            if layer_options and not layer_options[-1]["return_sequences"]:
                raise reader.error(name, "reads an LSTM that does not return sequences")
            if layer_options:
                layer_options[-1]["output_dropout"] = fold(pending)
            else:
                model_options["input_dropout"] = fold(pending)
            pending = []
            if kind == "Bidirectional":
                inner = cfg["layer"]
                if inner["class_name"] != "LSTM":
                    raise reader.error(name, f"wraps a {inner['class_name']}, not an LSTM")
                if cfg.get("merge_mode") is None:
                    raise reader.error(name, "has merge_mode=None (two outputs)")
                options = reader.lstm(inner["config"], name)
                if options.get("go_backwards"):
                    raise reader.error(name, "wraps a go_backwards LSTM")
                options["bidirectional"] = cfg["merge_mode"]
                options["zero_output_for_mask"] = False
                if isinstance(inner["config"].get("dtype"), str):
                    dtypes.add(inner["config"]["dtype"])
                plan.append(("bidirectional", name))
            else:
                if kind == "CuDNNLSTM":
                    raise reader.error(
                        name,
                        "is a CuDNNLSTM (two biases, a different layout); convert it to LSTM in "
                        "Keras 2 first",
                    )
                options = reader.lstm(cfg, name)
                options["bidirectional"] = False
                plan.append(("lstm", name))
            options["output_dropout"] = 0.0
            layer_options.append(options)
        elif kind == "Dense":
            if not layer_options:
                raise reader.error(name, "is a Dense layer before any LSTM")
            layer_options[-1]["output_dropout"] = fold(pending)
            pending = []
            model_options.update(
                output_size=int(cfg["units"]),
                head_activation=reader.activation(cfg.get("activation", "linear"), name),
                head_use_bias=bool(cfg.get("use_bias", True)),
                head_kernel_regularizer=reader.spec(
                    get_regularizer, cfg.get("kernel_regularizer"), name
                ),
                head_bias_regularizer=reader.spec(
                    get_regularizer, cfg.get("bias_regularizer"), name
                ),
                head_activity_regularizer=reader.spec(
                    get_regularizer, cfg.get("activity_regularizer"), name
                ),
                head_kernel_constraint=reader.spec(
                    get_constraint, cfg.get("kernel_constraint"), name
                ),
                head_bias_constraint=reader.spec(get_constraint, cfg.get("bias_constraint"), name),
            )
            head_activation = model_options["head_activation"] != "linear"
            plan.append(("dense", name))
            head_done = True
        else:
            raise reader.error(
                name,
                f"is a {kind}; jlstm reads chains of InputLayer, Masking, Dropout, LSTM, "
                "Bidirectional(LSTM), Dense, Activation",
            )
    if not layer_options:
        raise ValueError("load_keras: the model has no LSTM layer")
    if not head_done:
        raise ValueError("load_keras: the model has no Dense head after its LSTM layers")
    if input_size is None:
        raise ValueError(
            "load_keras: the model config has no input shape (no InputLayer and no "
            "batch_input_shape): the number of input features is unknown"
        )
    if len(dtypes) > 1:
        raise ValueError(f"load_keras: layers use different dtypes {sorted(dtypes)}")
    model_options["input_size"] = input_size
    model_options["param_dtype"] = dtypes.pop() if dtypes else "float32"
    model_options["return_sequences"] = layer_options[-1]["return_sequences"]
    model_options["layer_sizes"] = tuple(opt["units"] for opt in layer_options)
    for key in PER_LAYER_FIELDS:
        values = [opt[key] for opt in layer_options if key in opt]
        if len(values) == len(layer_options):
            first = values[0]
            same = all(type(v) is type(first) and v == first for v in values)
            model_options[key] = first if same else tuple(values)
    return ModelConfig(**model_options), plan


def _layer_arrays(root, name: str) -> list[np.ndarray]:
    """A legacy layer group's arrays in ``weight_names`` order."""
    if name not in root:
        raise ValueError(f"load_keras: the file has no weights for layer {name!r}")
    group = root[name]
    return [np.asarray(group[w]) for w in _names(group, "weight_names")]


def _cell(arrays: list[np.ndarray], use_bias: bool, name: str) -> CellParams:
    expected = 3 if use_bias else 2
    if len(arrays) != expected:
        raise ValueError(
            f"load_keras: layer {name!r} has {len(arrays)} weight arrays, expected {expected} "
            "(kernel, recurrent_kernel[, bias])"
        )
    return CellParams(arrays[0], arrays[1], arrays[2] if use_bias else None)


def _params_from_legacy(root, config: ModelConfig, plan: list) -> ModelParams:
    layers = []
    lstm_plan = [p for p in plan if p[0] != "dense"]
    for cfg, (kind, name) in zip(config.layers, lstm_plan, strict=True):
        arrays = _layer_arrays(root, name)
        if kind == "bidirectional":
            half = len(arrays) // 2
            layers.append(
                BidirectionalParams(
                    _cell(arrays[:half], cfg.use_bias, name),
                    _cell(arrays[half:], cfg.use_bias, name),
                )
            )
        else:
            layers.append(_cell(arrays, cfg.use_bias, name))
    dense = _layer_arrays(root, plan[-1][1])
    head = DenseParams(dense[0], dense[1] if config.head_use_bias else None)
    return _to_jax(ModelParams(tuple(layers), head), config)


def _legacy_plan(root, config: ModelConfig) -> list:
    """For a weights-only legacy file: the layers with weights, in ``layer_names`` order."""
    names = [n for n in _names(root, "layer_names") if _names(root[n], "weight_names")]
    if len(names) != len(config.layers) + 1:
        raise ValueError(
            f"load_keras: the weights file has {len(names)} layers with weights ({names}); "
            f"the config has {len(config.layers)} LSTM layers and a Dense head"
        )
    kinds = ["bidirectional" if c.bidirectional else "lstm" for c in config.layers]
    return [*zip(kinds, names[:-1], strict=True), ("dense", names[-1])]


def _keras3_vars(group) -> list[np.ndarray]:
    vars_ = group["vars"]
    return [np.asarray(vars_[str(i)]) for i in range(len(vars_))]


def _params_from_keras3(f, config: ModelConfig) -> ModelParams:
    """Keras 3 ``.weights.h5``: ``layers/<snake_case class name>[_k]`` in model order."""
    layers_group = f["layers"]
    counts: dict[str, int] = {}

    def next_name(stem: str) -> str:
        k = counts.get(stem, 0)
        counts[stem] = k + 1
        name = stem if k == 0 else f"{stem}_{k}"
        if name not in layers_group:
            raise ValueError(
                f"load_keras: the weights file has no layer {name!r} (has "
                f"{sorted(layers_group)}); is the config the model's?"
            )
        return name

    layers = []
    for cfg in config.layers:
        if cfg.bidirectional:
            group = layers_group[next_name("bidirectional")]
            directions = [
                _cell(_keras3_vars(group[f"{d}_layer"]["cell"]), cfg.use_bias, d)
                for d in ("forward", "backward")
            ]
            layers.append(BidirectionalParams(*directions))
        else:
            group = layers_group[next_name("lstm")]
            layers.append(_cell(_keras3_vars(group["cell"]), cfg.use_bias, group.name))
    dense = _keras3_vars(layers_group[next_name("dense")])
    head = DenseParams(dense[0], dense[1] if config.head_use_bias else None)
    return _to_jax(ModelParams(tuple(layers), head), config)


def _to_jax(params: ModelParams, config: ModelConfig) -> ModelParams:
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(config.param_dtype)
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    for idx, (cfg, p) in enumerate(zip(config.layers, params.layers, strict=True)):
        for cell in p if isinstance(p, BidirectionalParams) else (p,):
            want = (cfg.input_size, 4 * cfg.units)
            if cell.kernel.shape != want or cell.recurrent_kernel.shape != (cfg.units, want[1]):
                raise ValueError(
                    f"load_keras: LSTM layer {idx} weights have shapes {cell.kernel.shape}, "
                    f"{cell.recurrent_kernel.shape}; the config needs {want}, "
                    f"({cfg.units}, {want[1]})"
                )
    return params


def load_keras_h5(
    path: str | os.PathLike, config: ModelConfig | None = None
) -> tuple[ModelConfig, ModelParams]:
    """Read a Keras HDF5 file (see the module docstring) into ``(config, params)``.

    Args:
        path: a full-model ``.h5`` (Keras 2 / tf.keras), a Keras 2 weights ``.h5``, or a
            Keras 3 ``.weights.h5``.
        config: the ``ModelConfig``; required for weights-only files, and for a
            full-model file it replaces the stored config (the weights are still checked).
    """
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"load_keras: {os.fspath(path)!r} is not an HDF5 file ({err})") from None
    with f:
        if "layers" in f and "layer_names" not in f.attrs:
            if config is None:
                raise ValueError(
                    f"load_keras: {os.fspath(path)!r} is a Keras 3 weights file (no model "
                    "config): pass config=ModelConfig(...)"
                )
            return config, _params_from_keras3(f, config)
        if "model_config" in f.attrs:
            keras2 = _keras_major(_text(f.attrs.get("keras_version", b""))) < 3
            stored, plan = _config_from_json(json.loads(_text(f.attrs["model_config"])), keras2)
            root = f["model_weights"]
            params = _params_from_legacy(root, stored, plan)
            if config is not None:
                _to_jax(params, config)
                return config, params
            return stored, params
        if "layer_names" in f.attrs:
            if config is None:
                raise ValueError(
                    f"load_keras: {os.fspath(path)!r} holds weights only (no model_config): "
                    "pass config=ModelConfig(...)"
                )
            return config, _params_from_legacy(f, config, _legacy_plan(f, config))
    raise ValueError(f"load_keras: {os.fspath(path)!r} is not a Keras HDF5 model or weights file")
