"""jlstm ``(ModelConfig, ModelParams)`` -> an ONNX graph of standard operators.

``to_onnx(config, params)`` builds one ONNX ``LSTM`` operator per layer
(``direction="bidirectional"`` for a bidirectional layer, ``"reverse"`` for
``go_backwards``) and the dense head as ``MatMul`` + ``Add`` + its activation:

* input ``x`` ``(batch, steps, D)``, batch-first like jlstm (``Transpose`` to ONNX's
  time-major layout; ``batch`` and ``steps`` are symbolic dimensions);
* optional input ``sequence_lens`` ``(batch,)`` int32 (``seq_lengths=True``): lengths
  of right-padded sequences, ONNX's only padding. Keras masks of other patterns
  (and ``mask_value``, a Keras ``Masking`` layer) cannot be expressed and are refused;
* output ``y`` ``(batch, O)``, or ``(batch, steps, O)`` with ``return_sequences``.

float32 and float64 models are valid ONNX; onnxruntime's ``LSTM`` kernel runs float32
only (``onnx.reference`` runs both).

Weights: ONNX's gate order is ``i, o, f, c`` against Keras' ``i, f, c, o``;
``W = kernel.T`` ``[dirs, 4H, D]``, ``R = recurrent_kernel.T`` ``[dirs, 4H, H]``, and
``B`` ``[dirs, 8H]`` holds the Keras bias in its input half and zeros in its
recurrent half (ONNX adds the two).

Activations (ONNX ``LSTM`` attribute ``activations``: ``f`` = Keras
``recurrent_activation``, ``g`` = ``h`` = Keras ``activation``): ``sigmoid``,
``tanh``, ``relu``, ``linear`` (``Affine(1, 0)``), ``hard_sigmoid`` (Keras 3:
``HardSigmoid(alpha=1/6, beta=0.5)``), ``hard_sigmoid_keras2``
(``HardSigmoid(0.2, 0.5)``), ``elu``, ``softsign``, ``softplus``. The others (gelu,
selu, silu, relu6, exponential, callables) raise ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..activations import activation_name
from ..model import ModelConfig
from ..types import BidirectionalParams, CellParams, ModelParams

__all__ = [
    "LSTM_ACTIVATIONS",
    "OPSET",
    "OnnxGraph",
    "OnnxOps",
    "forecaster_to_onnx",
    "to_onnx",
]

OPSET = 17
# jlstm activation name -> (ONNX LSTM activation, alpha, beta); None = default.
LSTM_ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "hard_sigmoid_keras2": ("HardSigmoid", 0.2, 0.5),
    "elu": ("Elu", 1.0, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
}
# Keras' i, f, c, o blocks in ONNX's i, o, f, c order.
_ONNX_GATES = (0, 3, 1, 2)
_DTYPES = {"float32": 1, "float64": 11}  # onnx.TensorProto.FLOAT, DOUBLE


def _refuse(option: str, why: str) -> ValueError:
    return ValueError(f"to_onnx: {option} {why}")


def _lstm_activation(spec, option: str) -> tuple[str, float | None, float | None]:
    name = activation_name(spec)
    if name not in LSTM_ACTIVATIONS:
        raise _refuse(
            option,
            f"{spec!r} has no ONNX LSTM activation (ONNX LSTM takes {sorted(LSTM_ACTIVATIONS)})",
        )
    return LSTM_ACTIVATIONS[name]


def _gates(a: np.ndarray, units: int) -> np.ndarray:
    """Reorder the last axis' four ``units`` blocks from Keras' i,f,c,o to ONNX's i,o,f,c."""
    blocks = [a[..., k * units : (k + 1) * units] for k in _ONNX_GATES]
    return np.concatenate(blocks, axis=-1)


def _direction_weights(p: CellParams, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kernel = np.asarray(p.kernel, dtype)
    units = kernel.shape[1] // 4
    w = _gates(kernel, units).T
    r = _gates(np.asarray(p.recurrent_kernel, dtype), units).T
    bias = np.zeros(4 * units, dtype) if p.bias is None else np.asarray(p.bias, dtype)
    b = np.concatenate([_gates(bias, units), np.zeros(4 * units, dtype)])
    return w, r, b


class OnnxGraph:
    """ONNX nodes and initializers under construction, each output with a fresh name.

    ``const(stem, value)`` adds an initializer, ``op(op_type, inputs, n_out, **attrs)`` a
    node; both return the new tensor names. ``helper.make_graph(g.nodes, ...,
    initializer=g.initializers)`` makes the graph.
    """

    def __init__(self, dtype):
        self.nodes: list = []
        self.initializers: list = []
        self.dtype = dtype
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, stem: str, value) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs) -> Any:
        from onnx import helper

        outputs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs[0] if n_out == 1 else outputs


def _head_activation(g: OnnxGraph, y: str, spec) -> str:
    name = activation_name(spec)
    simple = {
        "tanh": "Tanh",
        "sigmoid": "Sigmoid",
        "relu": "Relu",
        "softsign": "Softsign",
        "softplus": "Softplus",
        "exponential": "Exp",
    }
    if name == "linear":
        return y
    if name in simple:
        return g.op(simple[name], [y])
    if name == "hard_sigmoid":
        return g.op("HardSigmoid", [y], alpha=1.0 / 6.0, beta=0.5)
    if name == "hard_sigmoid_keras2":
        return g.op("HardSigmoid", [y], alpha=0.2, beta=0.5)
    if name == "elu":
        return g.op("Elu", [y], alpha=1.0)
    if name == "selu":
        return g.op("Selu", [y], alpha=1.6732632423543772, gamma=1.0507009873554805)
    if name == "relu6":
        lo, hi = g.const("zero", np.array(0, g.dtype)), g.const("six", np.array(6, g.dtype))
        return g.op("Clip", [y, lo, hi])
    if name in ("silu", "swish"):
        return g.op("Mul", [y, g.op("Sigmoid", [y])])
    raise _refuse("head_activation", f"{spec!r} has no ONNX operator in opset {OPSET}")


def _merge(g: OnnxGraph, a: str, b: str, mode: str) -> str:
    if mode == "concat":
        return g.op("Concat", [a, b], axis=-1)
    if mode == "sum":
        return g.op("Add", [a, b])
    if mode == "mul":
        return g.op("Mul", [a, b])
    half = g.const("half", np.array(0.5, g.dtype))
    return g.op("Mul", [g.op("Add", [a, b]), half])  # "ave"


def _check(config: ModelConfig, params: ModelParams, seq_lengths: bool) -> None:
    if config.param_dtype not in _DTYPES:
        raise _refuse("param_dtype", f"{config.param_dtype!r}: ONNX LSTM takes float32 or float64")
    if (config.compute_dtype or config.param_dtype) != config.param_dtype:
        raise _refuse("compute_dtype", "(mixed precision) has no ONNX LSTM equivalent")
    if config.mask_value is not None:
        raise _refuse(
            "mask_value",
            "(a Keras Masking layer, any mask pattern) has no ONNX LSTM equivalent; export "
            "with seq_lengths=True and pass the lengths of right-padded sequences",
        )
    if len(params.layers) != len(config.layers):
        raise ValueError(
            f"to_onnx: {len(params.layers)} layer parameter sets for {len(config.layers)} layers"
        )
    for idx, (cfg, p) in enumerate(zip(config.layers, params.layers, strict=True)):
        if bool(cfg.bidirectional) != isinstance(p, BidirectionalParams):
            raise ValueError(f"to_onnx: layer {idx}'s params do not match its bidirectional flag")
        if seq_lengths and cfg.go_backwards:
            raise _refuse(
                f"go_backwards (layer {idx}) with seq_lengths",
                "cannot be expressed: Keras reverses the padded sequence and keeps the mask "
                "in input order, ONNX reverses only the valid steps",
            )
    top = config.layers[-1]
    if seq_lengths and config.return_sequences and not top.bidirectional:
        if not top.zero_output_for_mask:
            raise _refuse(
                "return_sequences with seq_lengths",
                "needs zero_output_for_mask=True on the top layer: ONNX LSTM emits zeros "
                "at padded steps, jlstm (like Keras) repeats the last valid output there",
            )


def _model_nodes(
    g: OnnxGraph, config: ModelConfig, params: ModelParams, x: str, lens, tag=""
) -> str:
    """Add the model's nodes reading ``x`` ``(batch, steps, D)``; return its output's name."""
    dtype = g.dtype
    h = g.op("Transpose", [x], perm=[1, 0, 2])  # (T, B, D)
    n_layers = len(config.layers)
    for idx, (cfg, p) in enumerate(zip(config.layers, params.layers, strict=True)):
        f = _lstm_activation(cfg.recurrent_activation, f"recurrent_activation (layer {idx})")
        a = _lstm_activation(cfg.activation, f"activation (layer {idx})")
        directions = (p.forward, p.backward) if cfg.bidirectional else (p,)
        acts = [f, a, a] * len(directions)
        weights = [_direction_weights(d, dtype) for d in directions]
        w, r, b = (np.stack(parts) for parts in zip(*weights, strict=True))
        attrs: dict[str, Any] = dict(
            hidden_size=cfg.units,
            direction="bidirectional"
            if cfg.bidirectional
            else ("reverse" if cfg.go_backwards else "forward"),
            activations=[act[0] for act in acts],
        )
        # Each activation that takes an alpha (beta) consumes the next one in order,
        # as onnxruntime reads the lists; the others take none.
        alphas = [act[1] for act in acts if act[1] is not None]
        betas = [act[2] for act in acts if act[2] is not None]
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
        lstm_in = [
            h,
            g.const(f"{tag}W{idx}", w),
            g.const(f"{tag}R{idx}", r),
            g.const(f"{tag}B{idx}", b),
        ]
        if lens is not None:
            lstm_in.append(lens)
        y, y_h = g.op("LSTM", lstm_in, n_out=2, **attrs)  # (T, dirs, B, H), (dirs, B, H)
        sequences = idx < n_layers - 1 or config.return_sequences
        source, axis = (y, 1) if sequences else (y_h, 0)
        if cfg.bidirectional:
            i0, i1 = g.const("zero", np.array(0, np.int64)), g.const("one", np.array(1, np.int64))
            fwd = g.op("Gather", [source, i0], axis=axis)
            bwd = g.op("Gather", [source, i1], axis=axis)
            h = _merge(g, fwd, bwd, cfg.bidirectional)
        else:
            h = g.op("Squeeze", [source, g.const("axis", np.array([axis], np.int64))])
            if sequences and cfg.go_backwards:
                # Keras returns a go_backwards sequence in processing (reversed) order;
                # ONNX aligns it with the input.
                starts = g.const("starts", np.array([-1], np.int64))
                ends = g.const("ends", np.array([np.iinfo(np.int64).min], np.int64))
                axes = g.const("axes", np.array([0], np.int64))
                steps = g.const("steps", np.array([-1], np.int64))
                h = g.op("Slice", [h, starts, ends, axes, steps])
    if config.return_sequences:
        h = g.op("Transpose", [h], perm=[1, 0, 2])  # back to (B, T, F)
    y = g.op("MatMul", [h, g.const(f"{tag}head_kernel", np.asarray(params.head.kernel, dtype))])
    if params.head.bias is not None:
        y = g.op("Add", [y, g.const(f"{tag}head_bias", np.asarray(params.head.bias, dtype))])
    return _head_activation(g, y, config.head_activation)


def to_onnx(
    config: ModelConfig,
    params: ModelParams,
    *,
    seq_lengths: bool = False,
    opset: int = OPSET,
    name: str = "jlstm",
):
    """Build the ONNX model computing ``jlstm.apply(params, x, config)`` (inference).

    Args:
        config: the ``ModelConfig``. Dropout, regularizers, constraints, ``unroll``
            and ``implementation`` do not change inference and are ignored.
        params: its ``ModelParams``; copied into the graph as initializers.
        seq_lengths: add a second input ``sequence_lens`` ``(batch,)`` int32 with the
            lengths of right-padded sequences (``apply(..., seq_lengths=...)``).
        opset: the ONNX opset to declare (at least 14, ``LSTM``'s last revision).
        name: the graph's name.

    Returns:
        An ``onnx.ModelProto`` (checked with ``onnx.checker.check_model``); save it
        with ``onnx.save`` or ``model.SerializeToString()``.

    Raises:
        ValueError: for options ONNX cannot express; the message names the option.
    """
    import onnx
    from onnx import helper

    _check(config, params, seq_lengths)
    elem = _DTYPES[config.param_dtype]
    g = OnnxGraph(np.dtype(config.param_dtype))
    inputs = [helper.make_tensor_value_info("x", elem, ["batch", "steps", config.input_size])]
    lens = None
    if seq_lengths:
        inputs.append(
            helper.make_tensor_value_info("sequence_lens", onnx.TensorProto.INT32, ["batch"])
        )
        lens = "sequence_lens"
    y = _model_nodes(g, config, params, "x", lens)
    out_shape = (
        ["batch", "steps", config.output_size]
        if config.return_sequences
        else ["batch", config.output_size]
    )
    g.nodes.append(helper.make_node("Identity", [y], ["y"]))
    graph = helper.make_graph(
        g.nodes,
        name,
        inputs,
        [helper.make_tensor_value_info("y", elem, out_shape)],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="jlstm"
    )
    onnx.checker.check_model(model)
    return model


# -- a forecaster (pipeline + model in original units) as one ONNX graph ----------------------

_ONNX_INT = 7  # onnx.TensorProto.INT64: dates and series indices
_INT64_MAX = np.iinfo(np.int64).max


class OnnxOps:
    """``jlstm.forecaster``'s array operations as ONNX nodes (values are tensor names).

    Float constants are made in the model's dtype, integer ones in int64 (the dates'
    and series indices' type). ``model`` adds one subgraph per ensemble member.
    """

    def __init__(self, g: OnnxGraph, forecaster):
        self.g = g
        self.forecaster = forecaster

    def _i64(self, values) -> str:
        return self.g.const("i", np.asarray(values, np.int64))

    def _int(self, b) -> str:
        return self._i64(b) if isinstance(b, int | np.integer) else b

    def const(self, value):
        return self.g.const("c", np.asarray(value, self.g.dtype))

    def add(self, a, b):
        return self.g.op("Add", [a, b])

    def sub(self, a, b):
        return self.g.op("Sub", [a, b])

    def mul(self, a, b):
        return self.g.op("Mul", [a, b])

    def div(self, a, b):
        return self.g.op("Div", [a, b])

    def maximum(self, a, b):
        return self.g.op("Max", [a, b])

    def log(self, a):
        return self.g.op("Log", [a])

    def exp(self, a):
        return self.g.op("Exp", [a])

    def sqrt(self, a):
        return self.g.op("Sqrt", [a])

    def sin(self, a):
        return self.g.op("Sin", [a])

    def cos(self, a):
        return self.g.op("Cos", [a])

    def last_step(self, z):
        return self.g.op("Slice", [z, self._i64([-1]), self._i64([_INT64_MAX]), self._i64([1])])

    def mean_steps(self, z):
        return self.g.op("ReduceMean", [z], axes=[1], keepdims=1)

    def rows(self, table, index):
        rows = self.g.op("Gather", [self.const(table), index], axis=0)  # (B, K)
        return self.g.op("Unsqueeze", [rows, self._i64([1])])

    def unsqueeze_last(self, a):
        return self.g.op("Unsqueeze", [a, self._i64([-1])])

    def concat_last(self, values):
        return self.g.op("Concat", list(values), axis=-1)

    def iadd(self, a, b):
        return self.g.op("Add", [a, self._int(b)])

    def isub(self, a, b):
        return self.g.op("Sub", [a, self._int(b)])

    def imul(self, a, b):
        return self.g.op("Mul", [a, self._int(b)])

    def idiv(self, a, b):
        # ONNX integer Div truncates toward zero: floor division for the non-negative
        # operands the forecaster's calendar arithmetic uses.
        return self.g.op("Div", [a, self._int(b)])

    def imod(self, a, b):
        return self.g.op("Mod", [a, self._int(b)])

    def to_float(self, a):
        return self.g.op("Cast", [a], to=_DTYPES[np.dtype(self.g.dtype).name])

    def model(self, x):
        fc = self.forecaster
        if fc.members is None:
            members = [fc.params]
        else:
            members = [_member(fc.params, i) for i in range(fc.members)]
        outs = [
            self.g.op(
                "Unsqueeze", [_model_nodes(self.g, fc.config, p, x, None, f"m{i}_"), self._i64([0])]
            )
            for i, p in enumerate(members)
        ]
        return outs[0] if len(outs) == 1 else self.g.op("Concat", outs, axis=0)  # (M, B, O)

    def heads(self, y, shape):
        return self.g.op("Reshape", [y, self._i64([0, 0, *shape])])

    def sort_last(self, y):
        size = len(self.forecaster.quantiles)
        values, _ = self.g.op("TopK", [y, self._i64([size])], n_out=2, axis=-1, largest=0, sorted=1)
        return values

    def mean_members(self, y):
        return self.g.op("ReduceMean", [y], axes=[0], keepdims=0)

    def squeeze_last(self, y):
        return self.g.op("Squeeze", [y, self._i64([-1])])


def _member(params, i: int):
    from ..ensemble import member

    return member(params, i)


def forecaster_to_onnx(forecaster, *, opset: int = OPSET, name: str = "jlstm_forecaster"):
    """The ONNX model of a ``jlstm.forecaster.Forecaster``: original units in and out.

    Inputs (named as ``forecaster.input_names``): ``history`` ``(batch, steps, K)``,
    ``covariates`` ``(batch, steps, C)`` in the model's float type, ``dates``
    ``(batch, steps)`` int64 (``forecaster.signature()["inputs"]["dates"]["encoding"]``),
    ``series`` ``(batch,)`` int64. Outputs: ``forecast`` (and ``spread`` for an ensemble).
    The signature is stored as JSON in ``metadata_props["jlstm.signature"]``.

    Raises:
        ValueError: a transform or model option ONNX cannot express; the message names
            it and says that the jax format can.
    """
    import json

    import onnx
    from onnx import helper

    from ..forecaster import run_program

    for transform in forecaster.unsupported("onnx"):
        raise ValueError(
            f"the {transform!r} transform cannot be expressed in ONNX; export with "
            "--format jax (jlstm.export.export_forecaster(..., format='jax'))"
        )
    config = forecaster.config
    members = (
        [forecaster.params]
        if forecaster.members is None
        else [_member(forecaster.params, i) for i in range(forecaster.members)]
    )
    try:
        for p in members:
            _check(config, p, False)
    except ValueError as err:
        raise ValueError(f"{err}; --format jax can export this model") from None
    elem = _DTYPES[config.param_dtype]
    signature = forecaster.signature(date_dtype="int64")
    g = OnnxGraph(np.dtype(config.param_dtype))
    inputs = []
    for key, spec in signature["inputs"].items():
        kind = elem if spec["dtype"] == config.param_dtype else _ONNX_INT
        info = helper.make_tensor_value_info(key, kind, spec["shape"])
        info.doc_string = spec["meaning"]
        inputs.append(info)
    try:
        ops = OnnxOps(g, forecaster)
        outputs = run_program(forecaster, ops, {k: k for k in signature["inputs"]})
    except ValueError as err:  # a model option ONNX cannot express (names it)
        raise ValueError(f"{err}; --format jax can export this model") from None
    infos = []
    for key, value in outputs.items():
        g.nodes.append(helper.make_node("Identity", [value], [key]))
        spec = signature["outputs"][key]
        info = helper.make_tensor_value_info(key, elem, spec["shape"])
        info.doc_string = spec["meaning"]
        infos.append(info)
    graph = helper.make_graph(g.nodes, name, inputs, infos, initializer=g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="jlstm"
    )
    model.doc_string = (
        "A jlstm forecaster: the run's data pipeline and model in one graph; inputs and "
        "outputs in the series' original units. Signature: metadata_props['jlstm.signature']."
    )
    helper.set_model_props(model, {"jlstm.signature": json.dumps(signature, allow_nan=False)})
    onnx.checker.check_model(model)
    return model
