"""An independent float64 NumPy reference of the LSTM equations (Keras semantics).

Written from the equations, not from jlstm's code: no JAX here.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

_erfc = np.vectorize(math.erfc)

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
    # erfc, not 1 + erf: the latter cancels for x << 0 and is wrong even in float64.
    "gelu": lambda x: 0.5 * x * _erfc(-x / math.sqrt(2.0)),
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


# -- error bounds: tolerances derived from the computation -------------------------------------
#
# A float computation of the cell differs from the exact one by rounding only. A first-order
# bound per element, from the standard model fl(a op b) = (a op b)(1 + d), |d| <= u (unit
# roundoff, u = eps / 2: 5.96e-8 for float32, 1.11e-16 for float64):
#
# * a dot product of n terms: |err| <= gamma_n * sum |terms|, gamma_n = n u / (1 - n u), in any
#   summation order (pairwise, blocked, FMA); z = x W + h R + b has n = D + H + 1 terms, plus one
#   rounding per masked operand, plus the error already in h, propagated through |R|;
# * an activation a: the exact image of the error interval, max |a(z +- dz) - a(z)| (this is
#   |a'(z)| dz to first order, so exp(exp(z)) gets its condition number z exp(z) for free), plus
#   the library's own error, ``ACT_ULPS`` ulps of the result (XLA's and libm's exp, tanh, log1p,
#   erf are within a few ulps);
# * c' = f c + i g and h' = o a(c'): the product rule, plus one rounding per product and sum.
#
# Second-order terms are dropped; ``SAFETY`` covers them (they are O(u^2)) and nothing else.

ACT_ULPS = 4
SAFETY = 2.0


def unit_roundoff(dtype) -> float:
    """``u = eps / 2`` of a float dtype: 5.96e-8 for float32, 1.11e-16 for float64, 3.9e-3
    for bfloat16."""
    return float(ml_dtypes.finfo(dtype).eps) / 2.0  # ml_dtypes: numpy's floats and bfloat16


def _gamma(n: int, u: float) -> float:
    return n * u / (1.0 - n * u)


# Activations whose usual formula loses more than a few ulps of the result: the extra absolute
# error per unit roundoff. gelu_tanh is x (1 + tanh(.)) / 2: for x << 0, tanh's ulps of ~1 are
# not small next to 1 + tanh, so the error is ~ulps * |x| / 2, not ulps * |gelu_tanh(x)|.
_FORMULA_ERROR = {"gelu_tanh": lambda z: 0.5 * np.abs(z)}


def _image_error(name, z, dz, u):
    """``fn(z)`` and its error: the worst change over ``[z - dz, z + dz]`` plus the
    implementation's own, ``ACT_ULPS`` ulps of the result (and ``_FORMULA_ERROR``)."""
    fn = ACTIVATIONS[name]
    y = fn(z)
    with np.errstate(over="ignore", invalid="ignore"):
        spread = np.maximum(np.abs(fn(z + dz) - y), np.abs(fn(z - dz) - y))
    own = np.abs(y) + _FORMULA_ERROR.get(name, lambda z: 0.0)(z)
    return y, spread + ACT_ULPS * u * own


def cell_step_bound(
    kernel,
    recurrent,
    bias,
    h,
    c,
    x,
    act="tanh",
    ract="sigmoid",
    xm=None,
    hm=None,
    *,
    dtype=np.float32,
    dh=0.0,
    dc=0.0,
    dx=0.0,
):
    """``cell_step`` in float64 plus a bound on how far a ``dtype`` computation may be from it.

    Args:
        kernel, recurrent, bias, h, c, x, act, ract, xm, hm: as ``cell_step`` (exact values: the
            inputs the implementation under test sees, rounded to ``dtype`` already).
        dtype: the precision of the implementation under test.
        dh, dc: bounds on the error already in ``h`` and ``c`` (from earlier steps).
        dx: bound on the error already in ``x`` (the outputs of a layer below).

    Returns:
        ``(h, c, bound_h, bound_c)``: the float64 step and elementwise bounds on
        ``|dtype result - float64 result|``. The bound is linear in ``u``, so the float64
        reference's own rounding is covered by using ``u(dtype) + u(float64)``.
    """
    u = unit_roundoff(dtype) + unit_roundoff(np.float64)
    kernel, recurrent = np.asarray(kernel, np.float64), np.asarray(recurrent, np.float64)
    h, c, x = (np.asarray(a, np.float64) for a in (h, c, x))
    dh = np.broadcast_to(np.asarray(dh, np.float64), h.shape)
    dc = np.broadcast_to(np.asarray(dc, np.float64), c.shape)
    dx = np.broadcast_to(np.asarray(dx, np.float64), x.shape)
    units = recurrent.shape[0]
    # A mask costs two roundings: its own value rounded to dtype, and the product.
    n = kernel.shape[0] + units + 1 + 2 * (xm is not None or hm is not None)
    gates, errors = [], []
    for k in range(4):
        cols = slice(k * units, (k + 1) * units)
        xk = x if xm is None else x * xm[k]
        hk = h if hm is None else h * hm[k]
        dhk = dh if hm is None else dh * np.abs(hm[k])
        dxk = dx if xm is None else dx * np.abs(xm[k])
        zk = xk @ kernel[:, cols] + hk @ recurrent[:, cols]
        size = np.abs(xk) @ np.abs(kernel[:, cols]) + np.abs(hk) @ np.abs(recurrent[:, cols])
        if bias is not None:
            zk = zk + np.asarray(bias, np.float64)[cols]
            size = size + np.abs(np.asarray(bias, np.float64)[cols])
        dz = _gamma(n, u) * size + dhk @ np.abs(recurrent[:, cols]) + dxk @ np.abs(kernel[:, cols])
        y, dy = _image_error(ract if k != 2 else act, zk, dz, u)
        gates.append(y)
        errors.append(dy)
    (i, f, g, o), (di, df, dg, do) = gates, errors
    c_new = f * c + i * g
    dc_new = (
        df * np.abs(c)
        + np.abs(f) * dc
        + di * np.abs(g)
        + np.abs(i) * dg
        + 2 * u * (np.abs(f * c) + np.abs(i * g))
    )
    ac, dac = _image_error(act, c_new, dc_new, u)
    h_new = o * ac
    dh_new = do * np.abs(ac) + np.abs(o) * dac + u * np.abs(h_new)
    return h_new, c_new, SAFETY * dh_new, SAFETY * dc_new


def lstm_layer_bound(
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
    *,
    dtype=np.float32,
    dx=None,
):
    """Elementwise error bounds ``(outputs (B, T, H), h, c)`` for a ``dtype`` run of
    ``lstm_layer`` with the same arguments, against its float64 result.

    Each step's own rounding error ``e_t`` (``cell_step_bound`` from an exact state) reaches
    a later output through the exact linearised recurrence: ``|err_s| <= sum_t |J_st| e_t``,
    with ``J_st`` the Jacobian of output ``s`` with respect to the state after step ``t``
    (central differences in float64; batch rows are independent, so one perturbed run per
    state component serves every row). Using ``|J|`` of the exact product, not the product
    of ``|J|``'s, keeps the bound within a small factor of real errors over many steps.
    ``dx`` ``(B, T, D)`` bounds an error already in ``x`` (a lower layer's outputs); it
    enters each step like that step's rounding.
    """
    x = np.asarray(x, np.float64)
    batch, steps, _ = x.shape
    units = np.asarray(recurrent).shape[0]
    mask = np.ones((batch, steps), bool) if mask is None else np.asarray(mask, bool)
    dx = np.zeros_like(x) if dx is None else np.asarray(dx, np.float64)
    if go_backwards:  # work in processing order; lstm_layer returns that order too
        x, mask, dx = x[:, ::-1], mask[:, ::-1], dx[:, ::-1]
    h = np.zeros((batch, units)) if h0 is None else np.asarray(h0, np.float64)
    c = np.zeros((batch, units)) if c0 is None else np.asarray(c0, np.float64)

    def run(t0, h, c):
        """Outputs of steps ``t0..`` and the final state, from state ``(h, c)``."""
        return lstm_layer(
            kernel, recurrent, bias, x[:, t0:], h, c, mask[:, t0:], False, act, ract,
            zero_output_for_mask, xm, hm,
        )  # fmt: skip

    bound_out = np.zeros((batch, steps, units))
    bound_h, bound_c = np.zeros((batch, units)), np.zeros((batch, units))
    for t in range(steps):
        h_new, c_new, eh, ec = cell_step_bound(
            kernel, recurrent, bias, h, c, x[:, t], act, ract, xm, hm, dtype=dtype, dx=dx[:, t]
        )
        m = mask[:, t][:, None]
        eh, ec = np.where(m, eh, 0.0), np.where(m, ec, 0.0)  # a masked step copies exactly
        h, c = np.where(m, h_new, h), np.where(m, c_new, c)
        bound_out[:, t] += eh  # this step's own rounding (earlier steps' arrive below)
        if t + 1 == steps:
            bound_h += eh
            bound_c += ec
            continue
        if not (eh.any() or ec.any()):
            continue
        for k, (state, err) in enumerate(((h, eh), (c, ec))):
            for j in range(units):
                delta = 1e-6 * max(1.0, float(np.abs(state[:, j]).max()))
                runs = []
                for sign in (1.0, -1.0):
                    moved = [h.copy(), c.copy()]
                    moved[k][:, j] += sign * delta
                    runs.append(run(t + 1, *moved))
                (op, hp, cp), (om, hm_, cm) = runs
                scale = err[:, j][:, None] / (2 * delta)
                bound_out[:, t + 1 :] += np.abs(op - om) * scale[:, None]
                bound_h += np.abs(hp - hm_) * scale
                bound_c += np.abs(cp - cm) * scale
    return bound_out, bound_h, bound_c


def sum_rtol(n: int, dtype=np.float32) -> float:
    """Relative tolerance between two ``dtype`` computations of a sum of ``n`` nonnegative
    terms (or any result of ``n`` roundings on nonnegative data): each is within
    ``gamma_n`` of the exact value, whatever the summation order, so ``2 gamma_n``."""
    return 2 * _gamma(n, unit_roundoff(dtype))


def dense_bound(kernel, bias, h, dh, act="linear", *, dtype=np.float32):
    """``act(h @ kernel + bias)`` in float64 and a bound on a ``dtype`` run's error, given
    the bound ``dh`` on the error already in ``h`` ``(..., H)``."""
    u = unit_roundoff(dtype) + unit_roundoff(np.float64)
    kernel, h = np.asarray(kernel, np.float64), np.asarray(h, np.float64)
    z = h @ kernel
    size = np.abs(h) @ np.abs(kernel)
    if bias is not None:
        z, size = z + np.asarray(bias, np.float64), size + np.abs(np.asarray(bias, np.float64))
    dz = _gamma(kernel.shape[0] + 1, u) * size + np.asarray(dh, np.float64) @ np.abs(kernel)
    y, dy = _image_error(act, z, dz, u)
    return y, SAFETY * dy


def stack_bound(layers, x, mask=None, acts=None, racts=None, head=None, *, dtype=np.float32):
    """A unidirectional stack of layers (every one returning sequences) and an optional
    per-step dense head: float64 outputs and the bound on a ``dtype`` run's error.

    Args:
        layers: ``[(kernel, recurrent, bias), ...]`` bottom-up.
        x: ``(B, T, D)`` inputs; ``mask``: ``(B, T)`` bool, shared by every layer.
        acts, racts: per-layer activation names (default tanh / sigmoid).
        head: ``(kernel, bias, activation)`` of a dense layer applied at every step.

    Returns:
        ``(y, bound_y, states)``: ``y`` ``(B, T, out)`` and its bound, ``states`` a list of
        per-layer ``(bound_h, bound_c)`` of the final states.
    """
    acts = acts or ["tanh"] * len(layers)
    racts = racts or ["sigmoid"] * len(layers)
    y, dy, states = np.asarray(x, np.float64), np.zeros(np.shape(x)), []
    for (kernel, recurrent, bias), act, ract in zip(layers, acts, racts, strict=True):
        weights = [
            None if a is None else np.asarray(a, np.float64) for a in (kernel, recurrent, bias)
        ]
        out, _, _ = lstm_layer(*weights, y, mask=mask, act=act, ract=ract)
        dy, dh, dc = lstm_layer_bound(
            *weights, y, mask=mask, act=act, ract=ract, dtype=dtype, dx=dy
        )
        y = out
        states.append((dh, dc))
    if head is not None:
        kernel, bias, act = head
        y, dy = dense_bound(kernel, bias, y, dy, act or "linear", dtype=dtype)
    return y, dy, states


def assert_within(got, want, bound, *, err_msg=""):
    """Assert ``|got - want| <= bound`` elementwise (NaN only where both are NaN).

    The bound gets float32's smallest subnormal added, so a flush-to-zero of a tiny value is
    not a failure. Returns the worst ``error / bound`` ratio (below 1).
    """
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    bound = np.asarray(bound, np.float64) + np.finfo(np.float32).smallest_subnormal
    err = np.abs(got - want)
    ok = err <= bound
    if not np.all(ok | (np.isnan(got) & np.isnan(want))):
        worst = np.unravel_index(np.argmax(np.where(ok, 0, err / bound)), err.shape)
        raise AssertionError(
            f"{err_msg}: {int((~ok).sum())} of {ok.size} elements exceed the derived bound; "
            f"worst at {worst}: got {got[worst]!r}, want {want[worst]!r}, error "
            f"{err[worst]:.3g} > bound {bound[worst]:.3g} ({err[worst] / bound[worst]:.2f}x)"
        )
    return float(np.max(err / bound))
