r"""The fused-gate kernel with a custom JVP that transposes into a recurrence-only backward.

One rule serves forward and reverse mode. The tangent of the sequence is written so
that everything that does not depend on the previous step's tangent happens outside
the step loop, as whole-chunk products::

    dp_t = dx_t W' + x_t dW' + h'_{t-1} dU' + db'          (one product per chunk of K steps)
    dz_t = dp_t + dh_{t-1} U'                               (the only per-step product)
    dt_t = (1 - t_t^2) dz_t          t_t = tanh(z_t): the folded gates (``fused``)
    di, df, do = dt_i / 2, dt_f / 2, dt_o / 2       dg = dt_g
    dc_t = df c_{t-1} + f dc_{t-1} + di g + i dg
    dh_t = do tanh(c_t) + o (1 - tanh(c_t)^2) dc_t

(primes: the folded weights of ``fused.fold``; ``h'`` the hidden state times the
recurrent dropout mask; masked steps keep the tangent state as they keep the state.)

``jax.jvp``/``jax.jacfwd`` evaluate it directly. For ``jax.grad``/``jax.vjp`` JAX
linearises and transposes it: the per-step loop becomes the reverse recurrence
``dz -> dz U'^T`` alone, and the chunk products become ``dW += x^T dz``,
``dU += h'^T dz``, ``db += sum(dz)``, ``dx = dz W'^T``: one product each per chunk,
the backward pass of ``fused_vjp``. Each chunk's tangent is a ``jax.checkpoint``, so
the backward pass recomputes the chunk's gates and cell states from the stored
hidden states and chunk-boundary cell states instead of storing ``(T, B, 4H)`` of
them (unless ``store_gates``: then the forward pass stores the gates). Everything
inside is ordinary JAX, so the rule itself can be differentiated again (hessians),
batched (``vmap``) and partitioned (``shard_map``, shardings).

The tangent of a recurrent dropout mask is ignored (masks are constants).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from ..types import Array, CellParams, LSTMState
from . import common, fused

__all__ = ["CHUNK", "run", "sequence"]

CHUNK = fused.CHUNK  # steps per chunk: the backward pass of fused_vjp, same plateau


def sequence(
    params: CellParams,
    xs: Array,
    h0: Array,
    c0: Array,
    *,
    mask: Array | None = None,
    recurrent_mask: Array | None = None,
    zero_output: bool = False,
    chunk: int = CHUNK,
    hoist: bool | None = None,
    store_gates: bool | None = None,
    layout: fused.Layout | None = None,
) -> tuple[Array, LSTMState]:
    """Run the standard LSTM over ``xs`` ``(T, B, D)`` from ``(h0, c0)`` ``(B, H)``.

    Args:
        params: ``CellParams`` in the Keras layout.
        mask: ``(T, B)`` bool step mask (Keras semantics) or ``None``.
        recurrent_mask: ``(B, H)`` dropout mask on ``h_{t-1}`` or ``None``.
        zero_output: emit zeros at masked steps instead of the previous output.
        chunk: steps per chunk of the tangent (and of the forward pass when hoisting).
        hoist: compute ``x @ W + b`` per chunk as one product in the forward pass;
            ``None``: when ``D >= fused.HOIST_MIN_FEATURES``.
        store_gates: keep every step's gates from the forward pass instead of
            recomputing them for the tangent; ``None``: when they take at most
            ``fused.STORE_GATES_MAX_BYTES`` or ``H >= fused.STORE_GATES_MIN_UNITS``.
        layout: ``fused.Layout`` the kernel runs in (inputs and outputs stay
            batch-major); ``None``: ``fused.choose_layout``.

    Returns:
        ``(ys, LSTMState(h_T, c_T))``: ``ys`` ``(T, B, H)``, states ``(B, H)``.
    """
    chunk, hoist, store_gates, layout = fused.chunked_options(
        params, xs, chunk, hoist, store_gates, layout
    )
    ys, h_last, c_last = _sequence(
        (bool(zero_output), chunk, bool(hoist), bool(store_gates), layout),
        params.kernel,
        params.recurrent_kernel,
        params.bias,
        layout.to(xs),
        layout.to(h0),
        layout.to(c0),
        mask,
        layout.to(recurrent_mask),
    )
    return layout.back(ys), LSTMState(layout.back(h_last), layout.back(c_last))


def _forward(static, kernel, recurrent, bias, xs, h0, c0, mask, recurrent_mask, *, save):
    zero_output, chunk, hoist, store_gates, layout = static
    return fused.forward(
        fused.fold(CellParams(kernel, recurrent, bias)),
        xs,
        h0,
        c0,
        mask=mask,
        recurrent_mask=recurrent_mask,
        zero_output=zero_output,
        chunk=chunk if save or hoist else None,
        save=save,
        save_gates=save and store_gates,
        hoist=hoist,
        layout=layout,
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _sequence(static, kernel, recurrent, bias, xs, h0, c0, mask, recurrent_mask):
    seq = _forward(static, kernel, recurrent, bias, xs, h0, c0, mask, recurrent_mask, save=False)
    return seq.ys, seq.final.h, seq.final.c


def _present(t):
    return None if t is None or isinstance(t, SymbolicZero) else t


def _sequence_jvp(static, primals, tangents):
    zero_output, chunk, _, _, layout = static
    kernel, recurrent, bias, xs, h0, c0, mask, recurrent_mask = primals
    d_kernel, d_recurrent, d_bias, dxs, dh0, dc0 = map(_present, tangents[:6])
    seq = _forward(static, *primals, save=True)
    hs = seq.ys if seq.hs is None else seq.hs
    units = recurrent.shape[0]
    scale = fused.gate_scale(units, recurrent.dtype)

    def arrange(w):  # a (F, 4H) weight (or its tangent), folded and as the products take it
        return None if w is None else layout.weight(w * scale)

    weights = (
        arrange(kernel),
        arrange(recurrent),
        None if bias is None else layout.bias(bias * scale),
    )
    d_weights = (
        arrange(d_kernel),
        arrange(d_recurrent),
        None if d_bias is None or bias is None else layout.bias(d_bias * scale),
    )
    # Zero tangents of the initial state, made from the state so that they carry its
    # sharding and varying manual axes (shard_map's check_vma).
    dh = jnp.zeros_like(h0) if dh0 is None else dh0
    dc = jnp.zeros_like(c0) if dc0 is None else dc0

    def body(carry, inputs):
        return _chunk_tangent(
            weights, d_weights, recurrent_mask, zero_output, layout, units, carry, inputs
        )

    # Recompute the chunk's gates in the backward pass rather than store them.
    body = jax.checkpoint(body, prevent_cse=False)
    steps = xs.shape[0]
    head, full = fused.chunks(steps, chunk)
    ts = seq.gates
    carry = (dh, dc)
    pieces = []
    if head:
        inputs = (
            xs[:head],
            hs[:head],
            None if mask is None else mask[:head],
            None if ts is None else ts[:head],
            None if dxs is None else dxs[:head],
            h0,
            seq.boundaries[0],
        )
        carry, dys_head = body(carry, inputs)
        pieces.append(dys_head)
    if full:

        def blocks(a):
            return None if a is None else a[head:].reshape(full, chunk, *a.shape[1:])

        # The hidden state before each full chunk: stored at a - 1, or h0 at a = 0.
        if head:
            h_before = hs[head - 1 : steps - 1 : chunk]
        else:
            h_before = jnp.concatenate([h0[None], hs[chunk - 1 : steps - 1 : chunk]])
        inputs = (
            blocks(xs),
            blocks(hs),
            blocks(mask),
            blocks(ts),
            blocks(dxs),
            h_before,
            seq.boundaries[1 if head else 0 :],
        )
        carry, dys_full = lax.scan(body, carry, inputs)
        pieces.append(dys_full.reshape(full * chunk, *dys_full.shape[2:]))
    dys = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces)
    return (seq.ys, seq.final.h, seq.final.c), (dys, *carry)


_sequence.defjvp(_sequence_jvp, symbolic_zeros=True)


def _weight_tangent_product(layout: fused.Layout, a: Array, d_weight: Array) -> Array:
    """``a dW`` for ``a`` ``(K, B, F)`` and a weight (tangent) ``dW`` arranged by ``layout.weight``.

    Also the input tangent's ``dx W``: as a broadcast product at ``D = 1`` its
    transpose materialised ``W`` broadcast to the chunk's ``(K, B, 4H)`` every chunk.

    Batch-major, the product is one ``(K*B, F) @ (F, 4H)`` product, so that its
    transpose (reverse mode's weight gradient ``a^T dz``) reads ``dz`` in place; as a
    product over two batch axes XLA:CPU first copied ``dz`` transposed, every chunk.
    Also at ``F = 1``: the transpose is then one matrix-vector product over ``dz``
    where the broadcast product's transpose materialised a broadcast of ``a``. An
    explicitly sharded batch axis cannot be merged with the time axis, so such
    arrays keep the two axes; so do all arrays of a program traced under a mesh
    (``jax.set_mesh``, as ``fit(mesh=...)`` does), whose batch axis GSPMD may split:
    merging it would all-gather the activations (18 all-gathers in the seed model's
    data-parallel epoch program, 0 without the merge).
    """
    if layout.transposed:
        return layout.input_product(a, d_weight)
    if common.batch_may_be_split(a):
        return layout.input_product(a, d_weight)
    rows = a.shape[0] * a.shape[1]
    return (a.reshape(rows, a.shape[-1]) @ d_weight).reshape(*a.shape[:-1], d_weight.shape[-1])


def _chunk_tangent(weights, d_weights, recurrent_mask, zero_output, layout, units, carry, inputs):
    """Tangent of one chunk of K steps (module docstring).

    ``inputs``: ``x`` ``(K, B, D)``, ``h`` ``(K, B, H)`` the hidden states after each
    step, ``m`` ``(K, B)`` or ``None``, ``t`` ``(K, B, 4H)`` stored gates or ``None``
    (recomputed), ``dx`` ``(K, B, D)`` or ``None`` (zero), and ``h``/``c`` ``(B, H)``
    before the chunk (the last two axes swapped in the feature-major ``layout``).
    ``carry``: the tangents ``dh, dc`` of the state before the chunk.
    """
    kernel, recurrent, bias = weights
    d_kernel, d_recurrent, d_bias = d_weights
    x, h, m, t, dx, h_first, c_first = inputs
    h_prev = jnp.concatenate([h_first[None], h[:-1]])
    if recurrent_mask is not None:
        h_prev = h_prev * recurrent_mask
    if t is None:
        z = layout.input_product(x, kernel) + layout.recurrent_product(h_prev, recurrent)
        if bias is not None:
            z = z + bias
        t = jnp.tanh(z)
    i, f, g, o = layout.gates(t, units)

    def cell(c, inputs):
        i, f, g, m = inputs
        c_new = f * c + i * g
        c_t = c_new if m is None else jnp.where(layout.keep(m), c_new, c)
        return c_t, (c_new, c)

    _, (c_new, c_prev) = lax.scan(cell, c_first, (i, f, g, m))

    # The chunk's tangent pre-activations that do not depend on the recurrence.
    terms = []
    if dx is not None:
        terms.append(_weight_tangent_product(layout, dx, kernel))
    if d_kernel is not None:
        terms.append(_weight_tangent_product(layout, x, d_kernel))
    if d_recurrent is not None:
        terms.append(_weight_tangent_product(layout, h_prev, d_recurrent))
    dp = sum(terms[1:], terms[0]) if terms else None
    if d_bias is not None:
        dp = jnp.broadcast_to(d_bias, t.shape) if dp is None else dp + d_bias

    def step(carry, inputs):
        dh, dc = carry
        dp_t, i, f, g, o, c_n, c_p, m_t = inputs
        # What the step's tangent multiplies by: dc_t = sum of coef_{i,f,g} * dz_{i,f,g}
        # + f dc_{t-1}, dh_t = coef_o * dz_o + od dc_t, with d(sigmoid gate)/dz =
        # 2 s (1 - s) (z folded: halved) and d(g)/dz = 1 - g^2. From the gates as
        # separate (B, H) arrays (shared with the cell-state loop), not the (B, 4H)
        # gate array: the transposed loop then reads contiguous blocks. The step is a
        # checkpoint, so its transpose recomputes these in the backward loop instead
        # of storing them.
        tc = jnp.tanh(c_n)
        od = o * (1.0 - tc * tc)
        dh_in = dh if recurrent_mask is None else dh * recurrent_mask
        dz = layout.recurrent_product(dh_in, recurrent)
        if dp_t is not None:
            dz = dz + dp_t
        # The gate blocks by ``split``, whose transpose is one concatenation of the
        # blocks' cotangents (each formed elementwise from its own coefficients): the
        # transposed step builds the gate gradient in one pass, as fused_vjp does.
        # (A slice's transpose is a pad per block; a product with the whole
        # coefficient array costs one more pass over the (B, 4H) gate array.)
        dz_i, dz_f, dz_g, dz_o = jnp.split(dz, 4, axis=-2 if layout.transposed else -1)
        coef_i = 2.0 * i * (1.0 - i) * g
        coef_f = 2.0 * f * (1.0 - f) * c_p
        coef_g = i * (1.0 - g * g)
        coef_o = 2.0 * o * (1.0 - o) * tc
        dc_new = coef_i * dz_i + coef_f * dz_f + coef_g * dz_g + f * dc
        dh_new = coef_o * dz_o + od * dc_new
        if m_t is None:
            return (dh_new, dc_new), dh_new
        keep = layout.keep(m_t)
        dy = jnp.where(keep, dh_new, jnp.zeros_like(dh) if zero_output else dh)
        return (jnp.where(keep, dh_new, dh), jnp.where(keep, dc_new, dc)), dy

    step = jax.checkpoint(step, prevent_cse=False)
    return lax.scan(step, carry, (dp, i, f, g, o, c_new, c_prev, m))


def run(params: CellParams, xs, state: LSTMState, *, mask, input_mask, recurrent_mask, options):
    """The ``"fused_jvp"`` mode (shapes as in ``jlstm.modes``)."""
    xs, h0, c0, mask, recurrent_mask, batch_shape = common.prepare(
        "fused_jvp", xs, state, mask, input_mask, recurrent_mask, options
    )
    ys, final = sequence(
        params,
        xs,
        h0,
        c0,
        mask=mask,
        recurrent_mask=recurrent_mask,
        zero_output=options.zero_output_for_mask,
    )
    return common.unflatten(ys, final, batch_shape)
