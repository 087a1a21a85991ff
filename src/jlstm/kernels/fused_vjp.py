r"""The fused-gate kernel with a custom VJP: a backward pass that runs only the recurrence.

Reverse-mode autodiff of ``lax.scan`` stores every intermediate of every step and,
in its backward loop, accumulates ``dW``, ``dU`` and ``db`` with one small product
per step. Here the forward pass stores only the cell states ``c_t`` (the outputs
``h_t`` are kept anyway), and the backward pass walks the sequence in chunks of
``CHUNK`` steps, from the last chunk to the first. Per chunk it

1. recomputes the chunk's gates with one ``(K*B, H) @ (H, 4H)`` product from the
   stored ``h_{t-1}`` (no recurrence: the states are known);
2. runs the reverse recurrence over the chunk's steps, one ``(B, 4H) @ (4H, H)``
   product per step, producing the gate-gradient block ``dz`` ``(K, B, 4H)``::

       dh = dy_t + dh_next                 dc = dc_next + dh * o * (1 - tanh(c_t)^2)
       dz = [dc*g*i*(1-i), dc*c_{t-1}*f*(1-f), dc*i*(1-g^2), dh*tanh(c_t)*o*(1-o)]
       dh_next = dz @ U^T                  dc_next = dc * f

3. forms ``dW += x^T dz``, ``dU += h_{t-1}^T dz``, ``db += sum(dz)`` and
   ``dx = dz @ W^T`` as single products over the whole chunk.

Chunking keeps every temporary small (cache-resident, and below the sizes at which
allocations become fresh page-faulting mappings) while the products stay large.
Masks (Keras: a masked step keeps the state) and a recurrent dropout mask are handled
in both passes.

Being a ``jax.custom_vjp``, this kernel supports reverse mode (``grad``, ``vjp``,
``jacrev``, also nested) and ``vmap``, but not forward mode (``jvp``, ``jacfwd``,
``hessian``; it raises ``FORWARD_MODE_HINT``): ``fused_jvp`` is the same kernel with
a custom JVP that serves both.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ..types import Array, CellParams, LSTMState
from . import common, fused

__all__ = [
    "CHUNK",
    "FORWARD_MODE_HINT",
    "run",
    "sequence",
]

FORWARD_MODE_HINT = (
    "implementation 'fused_vjp' is reverse-mode only (a custom VJP): for jax.jvp, "
    "jax.jacfwd, jax.linearize or jax.hessian use implementation='auto' or 'fused_jvp', "
    "the same kernel with forward mode"
)

CHUNK = fused.CHUNK  # steps per backward chunk (measured: fused.CHUNK)


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
        chunk: steps per backward chunk (and per forward chunk when hoisting).
        hoist: compute ``x @ W + b`` per chunk as one product in the forward pass;
            ``None``: when ``D >= fused.HOIST_MIN_FEATURES``.
        store_gates: keep every step's gates from the forward pass instead of
            recomputing them in the backward pass; ``None``: when they take at most
            ``fused.STORE_GATES_MAX_BYTES`` or ``H >= fused.STORE_GATES_MIN_UNITS``.
        layout: ``fused.Layout`` the kernel runs in (inputs and outputs stay
            batch-major); ``None``: ``fused.choose_layout``.

    Returns:
        ``(ys, LSTMState(h_T, c_T))``: ``ys`` ``(T, B, H)``, states ``(B, H)``.
    """
    chunk, hoist, store_gates, layout = fused.chunked_options(
        params, xs, chunk, hoist, store_gates, layout
    )
    try:
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
    except TypeError as err:
        if "forward-mode" not in str(err):
            raise
        raise TypeError(f"{FORWARD_MODE_HINT} ({err})") from err
    return layout.back(ys), LSTMState(layout.back(h_last), layout.back(c_last))


def _forward(static, kernel, recurrent, bias, xs, h0, c0, mask, recurrent_mask, *, save):
    """``fused.forward`` for ``_sequence``: chunked when hoisting or saving for the
    backward pass (``chunk`` is already at most ``T``), saving the gates when storing."""
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _sequence(static, kernel, recurrent, bias, xs, h0, c0, mask, recurrent_mask):
    seq = _forward(static, kernel, recurrent, bias, xs, h0, c0, mask, recurrent_mask, save=False)
    return seq.ys, seq.final.h, seq.final.c


def _sequence_fwd(static, kernel, recurrent, bias, xs, h0, c0, mask, recurrent_mask):
    args = (kernel, recurrent, bias, xs, h0, c0, mask, recurrent_mask)
    seq = _forward(static, *args, save=True)
    hs = seq.ys if seq.hs is None else seq.hs
    residuals = (
        (kernel, recurrent, bias, xs, h0, mask, recurrent_mask),
        (hs, seq.boundaries, seq.gates),
    )
    return (seq.ys, seq.final.h, seq.final.c), residuals


def _sequence_bwd(static, residuals, cotangents):
    zero_output, chunk, _, _, layout = static
    (kernel, recurrent, bias, xs, h0, mask, recurrent_mask), (hs, boundaries, ts) = residuals
    dys, dh_last, dc_last = cotangents
    steps = xs.shape[0]
    head, full = fused.chunks(steps, chunk)
    folded = fused.fold(CellParams(kernel, recurrent, bias))
    # The folded weights as the chunk's products take them, arranged once, here.
    folded = fused.Folded(
        layout.weight(folded.kernel),
        layout.weight(folded.recurrent_kernel),
        None if folded.bias is None else layout.bias(folded.bias),
    )

    def body(carry, inputs):
        return _chunk_bwd(
            folded, kernel, recurrent, recurrent_mask, zero_output, layout, carry, inputs
        )

    units = recurrent.shape[0]
    carry = (
        dh_last,
        dc_last,
        jnp.zeros_like(kernel),
        jnp.zeros_like(recurrent),
        jnp.zeros((4 * units,), recurrent.dtype),
    )
    pieces = []
    if full:

        def blocks(a):
            return None if a is None else a[head:].reshape(full, chunk, *a.shape[1:])

        # The hidden state before each full chunk: stored at a - 1, or h0 at a = 0.
        if head:
            h_before = hs[head - 1 : steps - 1 : chunk]
        else:
            h_before = jnp.concatenate([h0[None], hs[chunk - 1 : steps - 1 : chunk]])
        inputs = (blocks(xs), blocks(hs), blocks(dys), blocks(mask), blocks(ts))
        carry, dxs_full = lax.scan(
            body, carry, (*inputs, h_before, boundaries[1 if head else 0 :]), reverse=True
        )
        pieces.append(dxs_full.reshape(full * chunk, *xs.shape[1:]))
    if head:
        head_mask = None if mask is None else mask[:head]
        head_ts = None if ts is None else ts[:head]
        inputs = (xs[:head], hs[:head], dys[:head], head_mask, head_ts, h0, boundaries[0])
        carry, dxs_head = body(carry, inputs)
        pieces.insert(0, dxs_head)
    dh0, dc0, d_kernel, d_recurrent, d_bias = carry
    dxs = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces)
    d_bias = None if bias is None else d_bias
    return d_kernel, d_recurrent, d_bias, dxs, dh0, dc0, None, None


_sequence.defvjp(_sequence_fwd, _sequence_bwd)


def _chunk_bwd(folded, kernel, recurrent, recurrent_mask, zero_output, layout, carry, inputs):
    """Backward pass over one chunk of K steps (module docstring, steps 1 to 3).

    ``folded`` holds the folded weights arranged by ``layout.weight`` (and bias by
    ``layout.bias``); ``kernel`` and ``recurrent`` are the plain ``(F, 4H)`` weights.

    ``inputs``: ``x`` ``(K, B, D)``, ``h`` ``(K, B, H)`` the hidden states after each
    step, ``dy`` ``(K, B, H)``, ``m`` ``(K, B)`` or ``None``, ``t`` ``(K, B, 4H)`` the
    stored gates or ``None`` (recomputed), and ``h``/``c`` ``(B, H)`` before the chunk
    (the last two axes swapped in the feature-major ``layout``). ``carry``: ``dh, dc``
    flowing into the chunk's last step, and the running ``dW`` ``(D, 4H)``, ``dU``
    ``(H, 4H)``, ``db`` ``(4H,)``.
    """
    dh, dc, d_kernel, d_recurrent, d_bias = carry
    x, h, dy, m, t, h_first, c_first = inputs
    units = recurrent.shape[0]
    h_prev = jnp.concatenate([h_first[None], h[:-1]])
    if recurrent_mask is not None:
        h_prev = h_prev * recurrent_mask
    if t is None:
        z = layout.input_product(x, folded.kernel)
        z = z + layout.recurrent_product(h_prev, folded.recurrent_kernel)
        if folded.bias is not None:
            z = z + folded.bias
        t = jnp.tanh(z)
    i, f, g, o = layout.gates(t, units)

    # The cell states, recomputed from the one stored before the chunk: elementwise,
    # no products. c_new is what each step computed, c_prev the state it started from.
    def cell(c, inputs):
        i, f, g, m = inputs
        c_new = f * c + i * g
        c_t = c_new if m is None else jnp.where(layout.keep(m), c_new, c)
        return c_t, (c_new, c)

    _, (c_new, c_prev) = lax.scan(cell, c_first, (i, f, g, m))

    def step(carry, inputs):
        dh_next, dc_next = carry
        dy_t, i, f, g, o, c_t, c_p, m_t = inputs
        if m_t is None:
            dh_t, dc_t = dy_t + dh_next, dc_next
        else:
            keep = layout.keep(m_t)
            # A masked step passes the state's gradient through (and the output's,
            # which re-emitted h_{t-1}, unless zeros were emitted).
            through_h = dh_next if zero_output else dy_t + dh_next
            dh_t = jnp.where(keep, dy_t + dh_next, 0.0)
            dc_t = jnp.where(keep, dc_next, 0.0)
        tc = jnp.tanh(c_t)
        dc_t = dc_t + dh_t * o * (1.0 - tc * tc)
        dz = layout.concat(
            [
                dc_t * g * i * (1.0 - i),
                dc_t * c_p * f * (1.0 - f),
                dc_t * i * (1.0 - g * g),
                dh_t * tc * o * (1.0 - o),
            ]
        )
        dh_prev = layout.recurrent_grad(dz, recurrent)
        if recurrent_mask is not None:
            dh_prev = dh_prev * recurrent_mask
        dc_prev = dc_t * f
        if m_t is not None:
            dh_prev = dh_prev + jnp.where(keep, 0.0, through_h)
            dc_prev = dc_prev + jnp.where(keep, 0.0, dc_next)
        return (dh_prev, dc_prev), dz

    (dh, dc), dz = lax.scan(step, (dh, dc), (dy, i, f, g, o, c_new, c_prev, m), reverse=True)
    d_kernel = d_kernel + layout.weight_grad(x, dz)
    d_recurrent = d_recurrent + layout.weight_grad(h_prev, dz)
    d_bias = d_bias + layout.bias_grad(dz)
    return (dh, dc, d_kernel, d_recurrent, d_bias), layout.input_grad(dz, kernel)


def run(params: CellParams, xs, state: LSTMState, *, mask, input_mask, recurrent_mask, options):
    """The ``"fused_vjp"`` mode (shapes as in ``jlstm.modes``)."""
    xs, h0, c0, mask, recurrent_mask, batch_shape = common.prepare(
        "fused_vjp", xs, state, mask, input_mask, recurrent_mask, options
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
