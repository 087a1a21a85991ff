"""PyTorch ``nn.LSTM`` <-> jlstm ``CellParams``.

PyTorch stores ``weight_ih_l{k}`` ``(4H, D)``, ``weight_hh_l{k}`` ``(4H, H)`` and two
biases ``bias_ih_l{k}``, ``bias_hh_l{k}`` ``(4H,)``, gate order ``i, f, g, o`` (the
same as Keras). jlstm's ``kernel`` is ``weight_ih.T``, ``recurrent_kernel`` is
``weight_hh.T`` and ``bias`` is ``bias_ih + bias_hh`` (the sum is what enters the
gates; splitting it back puts it all in ``bias_ih`` and zeros in ``bias_hh``).

``nn.LSTM(num_layers>1)`` needs equal hidden sizes, so a ``64 -> 32 -> 16`` stack is
three modules: ``from_torch_lstm`` takes one module (any number of layers) and
returns one ``CellParams`` per layer.
"""

from __future__ import annotations

import numpy as np

from ..types import CellParams

__all__ = ["from_torch_lstm", "to_torch_lstm"]


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def from_torch_lstm(module, dtype=np.float32) -> tuple[CellParams, ...]:
    """Copy the weights of a ``torch.nn.LSTM`` into ``CellParams``, one per layer.

    Raises:
        ValueError: for features jlstm's LSTM does not have (``proj_size``,
            ``bidirectional`` modules: convert each direction's layers with
            ``jlstm.BidirectionalParams`` yourself).
    """
    import jax.numpy as jnp

    if getattr(module, "proj_size", 0):
        raise ValueError("nn.LSTM with proj_size > 0 has no jlstm equivalent (no projection)")
    if module.bidirectional:
        raise ValueError("bidirectional nn.LSTM: convert a unidirectional module per direction")
    layers = []
    for k in range(module.num_layers):
        kernel = _numpy(getattr(module, f"weight_ih_l{k}")).T
        recurrent = _numpy(getattr(module, f"weight_hh_l{k}")).T
        bias = None
        if module.bias:
            bias = _numpy(getattr(module, f"bias_ih_l{k}")) + _numpy(
                getattr(module, f"bias_hh_l{k}")
            )
            bias = jnp.asarray(bias, dtype)
        layers.append(CellParams(jnp.asarray(kernel, dtype), jnp.asarray(recurrent, dtype), bias))
    return tuple(layers)


def to_torch_lstm(layers: CellParams | tuple[CellParams, ...], *, batch_first: bool = True):
    """A ``torch.nn.LSTM`` holding ``layers`` (all of one hidden size; float32).

    The summed bias goes to ``bias_ih`` and ``bias_hh`` is zero.
    """
    import torch

    if isinstance(layers, CellParams):
        layers = (layers,)
    sizes = {int(p.recurrent_kernel.shape[0]) for p in layers}
    if len(sizes) != 1:
        raise ValueError(
            f"nn.LSTM needs one hidden size for all layers, got {sorted(sizes)}; "
            "convert each layer to its own module"
        )
    has_bias = {p.bias is not None for p in layers}
    if len(has_bias) != 1:
        raise ValueError("all layers must either have a bias or not")
    hidden = sizes.pop()
    module = torch.nn.LSTM(
        int(layers[0].kernel.shape[0]),
        hidden,
        num_layers=len(layers),
        bias=has_bias.pop(),
        batch_first=batch_first,
    )
    with torch.no_grad():
        for k, p in enumerate(layers):
            getattr(module, f"weight_ih_l{k}").copy_(
                torch.from_numpy(np.array(p.kernel, np.float32).T)
            )
            getattr(module, f"weight_hh_l{k}").copy_(
                torch.from_numpy(np.array(p.recurrent_kernel, np.float32).T)
            )
            if p.bias is not None:
                getattr(module, f"bias_ih_l{k}").copy_(
                    torch.from_numpy(np.array(p.bias, np.float32))
                )
                getattr(module, f"bias_hh_l{k}").zero_()
    return module
