"""A float64 NumPy reference of a forecaster (pipeline + model, original units) with the
rounding bounds of a float32 run of it.

Written from the pipeline's definition (``jlstm.data.pipeline``'s docstring), not from
``jlstm.forecaster``: every quantity is carried as ``(value, bound)``, the exact float64
value and a first-order bound on how far a float32 computation of it may be, op by op
(the standard model ``fl(a op b) = (a op b)(1 + d)``, ``|d| <= u``; library functions
``ACT_ULPS`` ulps of their result, as in ``tests/reference.py``). The model's bound is
``reference.lstm_layer_bound`` per layer and ``dense_bound`` for the head, with the input
bound entering each step.

Two float32 paths are bounded against the exact result:

* the exported program: every transform in float32 (``program``);
* ``jlstm predict``: the transforms in float64, the model input rounded to float32, the
  float32 model, the inverse in float64 (``predict``).

Two float32 runs are then within the sum of their bounds of each other.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jlstm.data import calendar_features

from . import reference as ref

F32 = np.float32
# The reference's own float64 roundings are covered by adding float64's unit roundoff.
U32 = ref.unit_roundoff(F32) + ref.unit_roundoff(np.float64)
U64 = 2 * ref.unit_roundoff(np.float64)


def _gamma(n, u):
    return n * u / (1 - n * u)


class B(NamedTuple):
    """An exact value and a bound on a float computation's error (elementwise)."""

    v: np.ndarray
    e: np.ndarray


class Arith:
    """Value-and-bound arithmetic at unit roundoff ``u``."""

    def __init__(self, u: float):
        self.u = u

    def exact(self, v, e=0.0) -> B:
        v = np.asarray(v, np.float64)
        return B(v, np.broadcast_to(np.asarray(e, np.float64), v.shape))

    def const(self, c) -> B:
        c = np.asarray(c, np.float64)
        return B(c, self.u * np.abs(c))

    def add(self, a: B, b: B) -> B:
        v = a.v + b.v
        return B(v, a.e + b.e + self.u * np.abs(v))

    def sub(self, a: B, b: B) -> B:
        v = a.v - b.v
        return B(v, a.e + b.e + self.u * np.abs(v))

    def mul(self, a: B, b: B) -> B:
        v = a.v * b.v
        return B(v, np.abs(a.v) * b.e + np.abs(b.v) * a.e + a.e * b.e + self.u * np.abs(v))

    def div(self, a: B, b: B) -> B:
        v = a.v / b.v
        room = np.abs(b.v) - b.e
        assert np.all(room > 0), "a divisor's error bound reaches zero"
        return B(v, (a.e + np.abs(v) * b.e) / room + self.u * np.abs(v))

    def log(self, a: B) -> B:
        room = np.abs(a.v) - a.e
        assert np.all(room > 0), "a log argument's error bound reaches zero"
        v = np.log(a.v)
        return B(v, a.e / room + ref.ACT_ULPS * self.u * np.abs(v))

    def exp(self, a: B) -> B:
        v = np.exp(a.v)
        return B(v, np.abs(v) * np.expm1(a.e) + ref.ACT_ULPS * self.u * np.abs(v))

    def sqrt(self, a: B) -> B:
        v = np.sqrt(a.v)
        with np.errstate(divide="ignore"):
            first = np.where(v > 0, a.e / (2 * v), np.inf)
        return B(v, np.minimum(first, np.sqrt(a.e)) + self.u * v)

    def mean(self, a: B, axis: int, keepdims=False) -> B:
        n = a.v.shape[axis]
        v = a.v.mean(axis, keepdims=keepdims)
        e = (
            a.e.mean(axis, keepdims=keepdims)
            + _gamma(n, self.u) * np.abs(a.v).mean(axis, keepdims=keepdims)
            + self.u * np.abs(v)
        )
        return B(v, e)

    def round32(self, a: B) -> B:
        """``a`` rounded to float32 (the model's input): the exact rounding error added."""
        return B(a.v, a.e + np.abs(a.v.astype(F32).astype(np.float64) - a.v))


def model(params, x: B) -> B:
    """The float32 model (unidirectional layers, linear head on the last step)."""
    y, dy = x.v, x.e
    for p in params.layers:
        weights = [None if a is None else np.asarray(a, np.float64) for a in p]
        out, _, _ = ref.lstm_layer(*weights, y)
        dy, _, _ = ref.lstm_layer_bound(*weights, y, dx=dy)
        y = out
    head = params.head
    bias = None if head.bias is None else np.asarray(head.bias, np.float64)
    o, do = ref.dense_bound(np.asarray(head.kernel, np.float64), bias, y[:, -1], dy[:, -1])
    return B(o, do)


class Spec(NamedTuple):
    """A forecaster's definition, as the pipeline's docstring states it.

    Attributes:
        transforms: target transforms in forward order: ``("log",)``,
            ``("scale", shift, scale)`` (``(K,)``, or ``(N, K)`` per series),
            ``("delta",)``, ``("revin", eps)``.
        covariate_scale: ``(shift, scale)`` of the covariates, or ``None``.
        calendar: calendar feature names (the reference computes them from datetime64).
        horizon: forecast rows; quantiles: a quantile head's levels.
    """

    transforms: tuple
    covariate_scale: tuple | None
    calendar: tuple
    horizon: int
    quantiles: tuple = ()


def spec_of(pipeline) -> Spec:
    cfg = pipeline.config
    transforms = []
    if cfg.log:
        transforms.append(("log",))
    if cfg.scaler != "none":
        transforms.append(("scale", pipeline.target_scaler.shift, pipeline.target_scaler.scale))
    if cfg.delta:
        transforms.append(("delta",))
    cov = None
    if pipeline.covariate_scaler is not None and cfg.scaler != "none":
        cov = (pipeline.covariate_scaler.shift, pipeline.covariate_scaler.scale)
    return Spec(tuple(transforms), cov, cfg.calendar, cfg.horizon)


def _forward(a: Arith, t, z: B, series):
    """One transform on ``z`` ``(B, S, K)``: ``(z, context)``."""
    if t[0] == "log":
        return a.log(z), None
    if t[0] == "scale":
        shift, scale = (np.asarray(s, np.float64) for s in t[1:])
        if shift.ndim == 2:
            shift, scale = shift[series][:, None], scale[series][:, None]
        s, c = a.const(shift), a.const(scale)
        return a.div(a.sub(z, s), c), (s, c)
    if t[0] == "delta":
        last = B(z.v[:, -1:], z.e[:, -1:])
        return a.sub(z, last), last
    if t[0] == "revin":
        mean = a.mean(z, 1, keepdims=True)
        centred = a.sub(z, mean)
        std = a.sqrt(a.mean(a.mul(centred, centred), 1, keepdims=True))
        floor = std.v < t[1]
        std = B(np.where(floor, t[1], std.v), np.where(floor, 0.0, std.e))
        return a.div(centred, std), (mean, std)
    raise ValueError(t)


def _expand(x: B) -> B:
    """Per-window ``(B, 1, K)`` or per-column ``(K,)`` context against ``(B, H, K, Q)``."""
    return B(x.v[..., None], x.e[..., None])


def _inverse(a: Arith, t, y: B, context) -> B:
    if t[0] == "log":
        return a.exp(y)
    if t[0] == "scale":
        s, c = (_expand(x) for x in context)
        return a.add(a.mul(y, c), s)
    if t[0] == "delta":
        return a.add(y, _expand(context))
    if t[0] == "revin":
        mean, std = (_expand(x) for x in context)
        return a.add(a.mul(y, std), mean)
    raise ValueError(t)


def _calendar(a: Arith, names, dates) -> B:
    """Float64 features (``jlstm.data.calendar_features``) with a float32 program's bound:
    angle = position * (2 pi / period) (two roundings), then sin/cos."""
    flat = dates.reshape(-1)
    exact = calendar_features(flat, tuple(names)).reshape(*dates.shape, -1)
    cols = []
    for k in range(exact.shape[-1]):
        angle_error = 2 * a.u * 2 * math.pi  # |angle| < 2 pi
        cols.append(angle_error + ref.ACT_ULPS * a.u * np.abs(exact[..., k]))
    return B(exact, np.stack(cols, -1))


def forecast(
    spec: Spec,
    members,
    history,
    covariates=None,
    dates=None,
    series=None,
    *,
    path: str = "program",
):
    """The exact forecast and the bound of one float32 path.

    Args:
        spec: the forecaster's definition (``spec_of(pipeline)``).
        members: a list of model params (one per ensemble member).
        history: ``(B, S, K)`` float64 values the user has; ``covariates`` ``(B, S, C)``;
            ``dates`` ``(B, S)`` datetime64; ``series`` ``(B,)`` panel indices.
        path: ``"program"`` (the exported function: float32 throughout, float32 inputs)
            or ``"predict"`` (float64 transforms, float32 model).

    Returns:
        ``{"forecast": B, ["spread": B]}``, values ``(B, horizon, K[, Q])``.
    """
    program = path == "program"
    a = Arith(U32 if program else U64)
    h = np.asarray(history, np.float64)
    z = a.round32(a.exact(h)) if program else a.exact(h)
    contexts = []
    for t in spec.transforms:
        z, context = _forward(a, t, z, series)
        contexts.append(context)
    parts = [z]
    if covariates is not None:
        cov = np.asarray(covariates, np.float64)
        c = a.round32(a.exact(cov)) if program else a.exact(cov)
        if spec.covariate_scale is not None:
            c, _ = _forward(a, ("scale", *spec.covariate_scale), c, series)
        parts.append(c)
    if spec.calendar:
        parts.append(
            _calendar(a, spec.calendar, dates)
            if program
            else _calendar(Arith(U64), spec.calendar, dates)
        )
    x = B(np.concatenate([p.v for p in parts], -1), np.concatenate([p.e for p in parts], -1))
    if not program:
        x = a.round32(x)  # predict encodes in float64, then the model computes in float32
    k = h.shape[-1]
    q = max(1, len(spec.quantiles))
    outs = []
    for params in members:
        o = model(params, x)
        o = B(o.v.reshape(-1, spec.horizon, k, q), o.e.reshape(-1, spec.horizon, k, q))
        if q > 1:  # sorted: a permutation of values each within its bound
            order = np.argsort(o.v, -1)
            o = B(
                np.take_along_axis(o.v, order, -1),
                np.broadcast_to(o.e.max(-1, keepdims=True), o.e.shape),
            )
        y = o
        for t, context in zip(reversed(spec.transforms), reversed(contexts), strict=True):
            y = _inverse(a, t, y, context)
        outs.append(y)
    ys = B(np.stack([y.v for y in outs]), np.stack([y.e for y in outs]))
    mean = a.mean(ys, 0)
    out = {"forecast": mean}
    m = len(members)
    if m > 1:
        dev = a.sub(ys, B(mean.v[None], mean.e[None]))
        var = a.mean(a.mul(dev, dev), 0)
        var = a.mul(var, a.const(m / (m - 1)))
        out["spread"] = a.sqrt(var)
    if not spec.quantiles:
        out = {name: B(b.v[..., 0], b.e[..., 0]) for name, b in out.items()}
    return out


def check(got, want, bound, *, err_msg=""):
    """``|got - want| <= bound`` elementwise; returns ``(worst error / bound, worst
    bound / |want|)``, the second to compare with a relative tolerance."""
    want = np.asarray(want, np.float64)
    ratio = ref.assert_within(got, want, bound, err_msg=err_msg)
    return ratio, float(np.max(bound / np.maximum(np.abs(want), np.finfo(np.float64).tiny)))
