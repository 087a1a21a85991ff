"""PyTorch ``nn.LSTM`` (and ``nn.Linear``) <-> jlstm parameters.

PyTorch stores ``weight_ih_l{k}`` ``(4H, D)``, ``weight_hh_l{k}`` ``(4H, H)`` and two
biases ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``(4H,)``, gate order ``i, f, g, o`` (the
same as Keras), with ``_reverse`` twins for the backward direction of a bidirectional
module. jlstm's ``kernel`` is ``weight_ih.T``, ``recurrent_kernel`` is
``weight_hh.T`` and ``bias`` is ``bias_ih + bias_hh`` (the sum is what enters the
gates).

Bias split on the way out: ``bias_ih = bias`` and ``bias_hh = 0``. It is exact and
round-trips bit for bit. Training the converted module in PyTorch updates *both*
biases, each with the full gradient of the sum, so the effective bias moves twice
as fast as jlstm's single bias under SGD (and takes two Adam steps per step). No
split avoids that: freeze ``bias_hh`` (``requires_grad_(False)``) to train like
Keras and jlstm.

``nn.LSTM(num_layers>1)`` needs equal hidden sizes, so the seed tutorial's
``64 -> 32 -> 16`` stack is three modules: ``from_torch`` takes one module or a list
of them, ``to_torch_modules`` gives one module per layer. A bidirectional module
concatenates the directions: it matches jlstm's ``bidirectional="concat"``.
``proj_size`` has no jlstm equivalent and is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..types import BidirectionalParams, CellParams, DenseParams

__all__ = [
    "from_torch",
    "from_torch_linear",
    "from_torch_lstm",
    "to_torch",
    "to_torch_linear",
    "to_torch_lstm",
    "to_torch_modules",
]

LayerParams = CellParams | BidirectionalParams


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _direction(module, k: int, suffix: str, dtype) -> CellParams:
    import jax.numpy as jnp

    kernel = _numpy(getattr(module, f"weight_ih_l{k}{suffix}")).T
    recurrent = _numpy(getattr(module, f"weight_hh_l{k}{suffix}")).T
    bias = None
    if module.bias:
        bias = _numpy(getattr(module, f"bias_ih_l{k}{suffix}")) + _numpy(
            getattr(module, f"bias_hh_l{k}{suffix}")
        )
        bias = jnp.asarray(bias, dtype)
    return CellParams(jnp.asarray(kernel, dtype), jnp.asarray(recurrent, dtype), bias)


def from_torch(modules, *, dtype=None) -> tuple[LayerParams, ...]:
    """Copy ``torch.nn.LSTM`` weights into jlstm layer params, one per layer.

    Args:
        modules: one ``nn.LSTM`` (any ``num_layers``, ``bidirectional``,
            ``batch_first``) or a list of them applied in sequence (the seed's
            ``64 -> 32 -> 16`` stack).
        dtype: the params' dtype; ``None`` keeps the module's (``float64`` needs
            ``jax_enable_x64``).

    Returns:
        ``CellParams`` per unidirectional layer, ``BidirectionalParams`` per
        bidirectional one (use ``bidirectional="concat"`` in the ``ModelConfig``).

    Raises:
        ValueError: ``proj_size > 0`` (jlstm has no projection), or a non-LSTM module.
    """
    import torch

    if isinstance(modules, torch.nn.LSTM):
        modules = [modules]
    layers: list[LayerParams] = []
    for index, module in enumerate(modules):
        if not isinstance(module, torch.nn.LSTM):
            raise ValueError(
                f"from_torch: module {index} is a {type(module).__name__}, not an nn.LSTM"
            )
        if getattr(module, "proj_size", 0):
            raise ValueError(
                f"from_torch: module {index} has proj_size={module.proj_size}; jlstm's LSTM has "
                "no output projection (h = o * tanh(c) is the output)"
            )
        dt = dtype or _numpy(module.weight_ih_l0).dtype
        for k in range(module.num_layers):
            forward = _direction(module, k, "", dt)
            if module.bidirectional:
                layers.append(BidirectionalParams(forward, _direction(module, k, "_reverse", dt)))
            else:
                layers.append(forward)
    return tuple(layers)


def from_torch_linear(linear, *, dtype=None) -> DenseParams:
    """An ``nn.Linear`` head as ``DenseParams`` (``kernel = weight.T``)."""
    import jax.numpy as jnp

    dt = dtype or _numpy(linear.weight).dtype
    bias = None if linear.bias is None else jnp.asarray(_numpy(linear.bias), dt)
    return DenseParams(jnp.asarray(_numpy(linear.weight).T, dt), bias)


def from_torch_lstm(module, dtype=np.float32) -> tuple[LayerParams, ...]:
    """``from_torch`` of one module, float32 by default (the earlier API)."""
    return from_torch(module, dtype=dtype)


def _cells(layer: LayerParams) -> tuple[CellParams, ...]:
    return (layer.forward, layer.backward) if isinstance(layer, BidirectionalParams) else (layer,)


def _torch_dtype(layers: Sequence[LayerParams], dtype):
    import torch

    name = np.dtype(dtype or _cells(layers[0])[0].kernel.dtype).name
    try:
        return {"float32": torch.float32, "float64": torch.float64}[name]
    except KeyError:
        raise ValueError(
            f"to_torch: dtype {name!r}; nn.LSTM here takes float32 or float64"
        ) from None


def to_torch(layers: LayerParams | Sequence[LayerParams], *, batch_first: bool = True, dtype=None):
    """One ``torch.nn.LSTM`` holding ``layers`` (``num_layers = len(layers)``).

    All layers must share a hidden size, a bias setting and direction (a
    bidirectional module concatenates: jlstm's ``"concat"`` merge). Biases: the
    jlstm bias in ``bias_ih``, zeros in ``bias_hh`` (see the module docstring on
    training them).

    Args:
        layers: ``CellParams`` / ``BidirectionalParams``, one or a sequence.
        batch_first: the module's ``batch_first`` (jlstm is batch-first).
        dtype: ``float32`` or ``float64``; ``None`` keeps the params' dtype.

    Raises:
        ValueError: mixed hidden sizes, biases or directions (use ``to_torch_modules``).
    """
    import torch

    if isinstance(layers, CellParams | BidirectionalParams):
        layers = (layers,)
    layers = tuple(layers)
    sizes = {int(c.recurrent_kernel.shape[0]) for layer in layers for c in _cells(layer)}
    if len(sizes) != 1:
        raise ValueError(
            f"nn.LSTM needs one hidden size for all layers, got {sorted(sizes)}; "
            "use to_torch_modules for one module per layer"
        )
    has_bias = {c.bias is not None for layer in layers for c in _cells(layer)}
    if len(has_bias) != 1:
        raise ValueError("to_torch: all layers must either have a bias or not")
    kinds = {isinstance(layer, BidirectionalParams) for layer in layers}
    if len(kinds) != 1:
        raise ValueError(
            "to_torch: an nn.LSTM is bidirectional in every layer or none; use "
            "to_torch_modules for one module per layer"
        )
    bidirectional = kinds.pop()
    torch_dtype = _torch_dtype(layers, dtype)
    np_dtype = np.float64 if torch_dtype == torch.float64 else np.float32
    module = torch.nn.LSTM(
        int(_cells(layers[0])[0].kernel.shape[0]),
        sizes.pop(),
        num_layers=len(layers),
        bias=has_bias.pop(),
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=torch_dtype,
    )
    with torch.no_grad():
        for k, layer in enumerate(layers):
            for suffix, p in zip(("", "_reverse"), _cells(layer), strict=False):
                getattr(module, f"weight_ih_l{k}{suffix}").copy_(
                    torch.from_numpy(np.array(p.kernel, np_dtype).T)
                )
                getattr(module, f"weight_hh_l{k}{suffix}").copy_(
                    torch.from_numpy(np.array(p.recurrent_kernel, np_dtype).T)
                )
                if p.bias is not None:
                    getattr(module, f"bias_ih_l{k}{suffix}").copy_(
                        torch.from_numpy(np.array(p.bias, np_dtype))
                    )
                    getattr(module, f"bias_hh_l{k}{suffix}").zero_()
    return module


def to_torch_modules(
    layers: Sequence[LayerParams], *, batch_first: bool = True, dtype=None
) -> list:
    """One single-layer ``nn.LSTM`` per jlstm layer (any hidden sizes): apply them in
    sequence, as the seed-style ``64 -> 32 -> 16`` stack."""
    return [to_torch(layer, batch_first=batch_first, dtype=dtype) for layer in layers]


def to_torch_linear(head: DenseParams, *, dtype=None):
    """``DenseParams`` as an ``nn.Linear`` (``weight = kernel.T``)."""
    import torch

    torch_dtype = _torch_dtype([CellParams(head.kernel, head.kernel, None)], dtype)
    np_dtype = np.float64 if torch_dtype == torch.float64 else np.float32
    fan_in, fan_out = head.kernel.shape
    linear = torch.nn.Linear(fan_in, fan_out, bias=head.bias is not None, dtype=torch_dtype)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.array(head.kernel, np_dtype).T))
        if head.bias is not None:
            linear.bias.copy_(torch.from_numpy(np.array(head.bias, np_dtype)))
    return linear


def to_torch_lstm(layers: CellParams | tuple[CellParams, ...], *, batch_first: bool = True):
    """``to_torch`` in float32 (the earlier API)."""
    return to_torch(layers, batch_first=batch_first, dtype=np.float32)
