"""An independent float64 NumPy reference of the LSTM equations (Keras semantics).

Written from the equations, not from jlstm's code: no JAX here.
"""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf)

ACTIVATIONS = {
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_sigmoid_keras2": lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0),
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "selu": lambda x: (
        1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0.0)))
    ),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: (
        0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    ),
    "exponential": np.exp,
    "linear": lambda x: x,
}


def cell_step(kernel, recurrent, bias, h, c, x, act="tanh", ract="sigmoid", xm=None, hm=None):
    """One step in float64. ``xm``/``hm``: optional (4, ..., D)/(4, ..., H) per-gate masks."""
    kernel, recurrent = np.asarray(kernel, np.float64), np.asarray(recurrent, np.float64)
    h, c, x = (np.asarray(a, np.float64) for a in (h, c, x))
    units = recurrent.shape[0]
    a, r = ACTIVATIONS[act], ACTIVATIONS[ract]
    z = []
    for k in range(4):
        cols = slice(k * units, (k + 1) * units)
        xk = x if xm is None else x * xm[k]
        hk = h if hm is None else h * hm[k]
        zk = xk @ kernel[:, cols] + hk @ recurrent[:, cols]
        if bias is not None:
            zk = zk + np.asarray(bias, np.float64)[cols]
        z.append(zk)
    i, f, g, o = r(z[0]), r(z[1]), a(z[2]), r(z[3])
    c_new = f * c + i * g
    return o * a(c_new), c_new


def lstm_layer(
    kernel,
    recurrent,
    bias,
    x,
    h0=None,
    c0=None,
    mask=None,
    go_backwards=False,
    act="tanh",
    ract="sigmoid",
    zero_output_for_mask=False,
    xm=None,
    hm=None,
):
    """A layer over ``x`` ``(B, T, D)``: returns (outputs ``(B, T, H)``, h, c), Keras semantics."""
    x = np.asarray(x, np.float64)
    batch, steps, _ = x.shape
    units = np.asarray(recurrent).shape[0]
    h = np.zeros((batch, units)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((batch, units)) if c0 is None else np.asarray(c0, np.float64)
    order = range(steps - 1, -1, -1) if go_backwards else range(steps)
    outs = []
    for t in order:
        h_new, c_new = cell_step(kernel, recurrent, bias, h, c, x[:, t], act, ract, xm, hm)
        if mask is None:
            h, c, out = h_new, c_new, h_new
        else:
            m = np.asarray(mask, bool)[:, t][:, None]
            out = np.where(m, h_new, 0.0 if zero_output_for_mask else h)
            h, c = np.where(m, h_new, h), np.where(m, c_new, c)
        outs.append(out)
    return np.stack(outs, axis=1), h, c
