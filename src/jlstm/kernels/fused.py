r"""The fused-gate kernel: all four gates from one ``tanh``, an exact rewrite.

With the standard activations (``recurrent_activation="sigmoid"``,
``activation="tanh"``) the identity ``sigmoid(x) = 0.5 * tanh(x / 2) + 0.5`` turns
the four gate activations into one ``tanh`` over the whole fused ``(B, 4H)`` gate
array, once the input, forget and output columns of ``W``, ``U`` and ``b`` are
halved (``fold``; halving is exact in binary floating point)::

    t = tanh(x_t @ (W * s) + h_{t-1} @ (U * s) + b * s)     s = [1/2, 1/2, 1, 1/2] per gate block
    i = t_i / 2 + 1/2    f = t_f / 2 + 1/2    g = t_g    o = t_o / 2 + 1/2
    c_t = f * c_{t-1} + i * g        h_t = o * tanh(c_t)

The function is Keras' cell exactly; only the rounding of the activations differs
(by a few float32 ulps). Why it pays on XLA:CPU: one vectorised transcendental over a
contiguous array instead of four activations over column slices of the gate array,
which XLA:CPU emits as separate, poorly vectorised loops (``benchmarks/README.md``).

Everything here works on time-major arrays with one flattened batch axis:
``xs`` ``(T, B, D)``, states ``(B, H)``; ``common.flatten`` / ``common.unflatten``
convert from the layer's ``(T, B..., D)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..types import Array, CellParams, LSTMState
from .common import batch_may_be_split, masked_update, prepare, project, static_size, unflatten

__all__ = [
    "BATCH_MAJOR",
    "CHUNK",
    "FEATURE_MAJOR",
    "HOIST_CHUNK",
    "HOIST_MIN_FEATURES",
    "STORE_GATES_MAX_BYTES",
    "STORE_GATES_MIN_UNITS",
    "TRANSPOSE_MIN_RATIO",
    "TRANSPOSE_MIN_UNITS",
    "Folded",
    "Layout",
    "Sequence",
    "choose_layout",
    "chunked_options",
    "chunks",
    "fold",
    "forward",
    "run",
]

# Input widths from which the forward pass computes x @ W + b per chunk as one product
# instead of once per step (measured, benchmarks/README.md). At D = 1 the per-step
# product is an elementwise broadcast that fuses into the step.
HOIST_MIN_FEATURES = 8
HOIST_CHUNK = 10
# When the feature-major layout is used: H >= TRANSPOSE_MIN_UNITS and H >= 64 B.
# Measured on XLA:CPU (benchmarks/README.md): a H = 1024 layer at B = 16 runs 1.5x
# (forward) and 1.4x (training) faster feature-major; at B = 16, H = 512 the two
# layouts tie, and at B = 64 batch-major is up to 1.1x faster.
TRANSPOSE_MIN_UNITS = 256

# The chunked custom-derivative kernels (``fused_vjp``, and ``fused_jvp`` whose transpose
# is the same backward pass) share these. Steps per backward chunk, measured on XLA:CPU
# (benchmarks/README.md): 10 to 20 is the plateau for the seed model at T = 100; shorter
# chunks make the weight-gradient products small, longer ones spill the chunk's gate
# arrays out of cache.
CHUNK = 10
# When the forward pass keeps the gates (T * B * 4H values) for the backward pass
# instead of recomputing them per chunk: when they are small, or when H is large.
# Recomputing costs ~8 T B H^2 FLOPs, storing ~16 T B H bytes of fresh memory (page
# faults and traffic): per value, the product costs more from H ~ 128 on. Measured
# (benchmarks/README.md): a H = 512 layer trains 1.2x faster storing; the seed model
# (H <= 64, 26 MB of gates in its first layer) 1.3x faster recomputing. A symbolic size
# (``jax.export``) counts as large.
STORE_GATES_MAX_BYTES = 4 * 2**20
STORE_GATES_MIN_UNITS = 128
TRANSPOSE_MIN_RATIO = 64


class Folded(NamedTuple):
    """Layer weights with the sigmoid gates' columns halved (``fold``).

    Attributes:
        kernel: ``(D, 4H)``.
        recurrent_kernel: ``(H, 4H)``.
        bias: ``(4H,)`` or ``None``.
    """

    kernel: Array
    recurrent_kernel: Array
    bias: Array | None


def gate_scale(units: int, dtype) -> Array:
    """``(4H,)``: 1/2 on the input, forget and output blocks, 1 on the candidate block."""
    half = jnp.full((units,), 0.5, dtype)
    return jnp.concatenate([half, half, jnp.ones((units,), dtype), half])


def fold(params: CellParams) -> Folded:
    """Halve the sigmoid gates' columns of every weight (exact: a power of two)."""
    scale = gate_scale(params.recurrent_kernel.shape[0], params.recurrent_kernel.dtype)
    bias = None if params.bias is None else params.bias * scale
    return Folded(params.kernel * scale, params.recurrent_kernel * scale, bias)


class Layout(NamedTuple):
    """Where the batch axis sits in the kernels' arrays.

    Batch-major (``transposed=False``, Keras' layout): states ``(B, H)``, gate arrays
    ``(B, 4H)`` with the gates as column blocks, ``z = h @ U``. Feature-major
    (``transposed=True``): states ``(H, B)``, gate arrays ``(4H, B)`` with the gates as
    contiguous row blocks, ``z = U^T @ h``. The same numbers either way; on XLA:CPU the
    feature-major product runs faster when the batch is small next to ``H`` (a
    ``(4H, H) @ (H, B)`` product with long rows), see ``choose_layout``.
    Arrays may carry leading axes (time, chunk) before these two.
    """

    transposed: bool = False

    def gates(self, t: Array, units: int) -> tuple[Array, Array, Array, Array]:
        """``(i, f, g, o)`` from ``t = tanh(folded z)``: each ``(..., B, H)`` / ``(..., H, B)``."""
        if self.transposed:
            blocks = (t[..., k * units : (k + 1) * units, :] for k in range(4))
        else:
            blocks = (t[..., k * units : (k + 1) * units] for k in range(4))
        t_i, t_f, t_g, t_o = blocks
        return 0.5 * t_i + 0.5, 0.5 * t_f + 0.5, t_g, 0.5 * t_o + 0.5

    def concat(self, blocks) -> Array:
        """Gate blocks joined into one gate array."""
        return jnp.concatenate(blocks, axis=-2 if self.transposed else -1)

    def input_product(self, x: Array, kernel_l: Array) -> Array:
        """``x W`` for ``x`` ``(..., B, D)`` / ``(..., D, B)``, ``kernel_l = self.weight(W)``."""
        if self.transposed:
            return kernel_l * x if kernel_l.shape[1] == 1 else _left(kernel_l, x)
        return project(x, kernel_l)

    def recurrent_product(self, h: Array, recurrent_l: Array) -> Array:
        """``h U`` with ``recurrent_l = self.weight(U)``."""
        return _left(recurrent_l, h) if self.transposed else h @ recurrent_l

    def weight(self, w: Array) -> Array:
        """A ``(F, 4H)`` weight as the products take it (``W^T`` feature-major). Call it
        outside loops: XLA does not always hoist the transpose out of a loop body."""
        return w.T if self.transposed else w

    def recurrent_grad(self, dz: Array, recurrent: Array) -> Array:
        """``dz U^T``: the gradient reaching ``h_{t-1}`` from the gate gradient ``dz``."""
        return _left(recurrent, dz) if self.transposed else dz @ recurrent.T

    def bias(self, bias: Array) -> Array:
        return bias[:, None] if self.transposed else bias

    def keep(self, m: Array) -> Array:
        """A ``(B,)`` step mask, broadcastable against a state."""
        return m[None, :] if self.transposed else m[:, None]

    def weight_grad(self, a: Array, dz: Array) -> Array:
        """``sum over steps and batch of a^T dz``: ``(F, 4H)`` for ``a`` with ``F`` features."""
        if self.transposed:
            if a.shape[-2] == 1:
                return jnp.sum(a * dz, axis=(0, 2))[None]
            return jnp.einsum("kfb,kgb->fg", a, dz)
        if batch_may_be_split(a):
            # A program traced under a mesh (``fit(mesh=...)``) may split the batch axis:
            # contract over both axes instead of merging them (a merge all-gathers).
            if a.shape[-1] == 1:
                return jnp.sum(a * dz, axis=(0, 1))[None]
            return jnp.einsum("kbf,kbg->fg", a, dz)
        rows = dz.shape[0] * dz.shape[1]
        a2, dz2 = a.reshape(rows, a.shape[-1]), dz.reshape(rows, dz.shape[-1])
        if a.shape[-1] == 1:
            # Contractions of length 1 run much faster as fused elementwise products.
            return jnp.sum(a2 * dz2, axis=0, keepdims=True)
        return a2.T @ dz2

    def bias_grad(self, dz: Array) -> Array:
        return jnp.sum(dz, axis=(0, 2) if self.transposed else (0, 1))

    def input_grad(self, dz: Array, kernel: Array) -> Array:
        """``dz W^T``: the gradient reaching the inputs, shaped like them."""
        if self.transposed:
            if kernel.shape[0] == 1:
                return jnp.sum(kernel[0][:, None] * dz, axis=-2, keepdims=True)
            return _left(kernel, dz)
        if kernel.shape[0] == 1:
            return jnp.sum(dz * kernel[0], axis=-1, keepdims=True)
        return dz @ kernel.T

    def to(self, a: Array | None) -> Array | None:
        """A batch-major array (``(..., B, F)``) in this layout."""
        return a if a is None or not self.transposed else jnp.swapaxes(a, -1, -2)

    back = to  # the swap is its own inverse


def _left(w: Array, a: Array) -> Array:
    """``w @ a`` over ``a``'s last two axes, leading axes folded into one product.

    ``jnp.matmul`` would broadcast ``w`` over the leading axes, a batch of skinny
    products that each re-read ``w``; this is a single ``(F, G) @ (G, K*B)`` product.
    """
    return jnp.einsum("fg,...gb->...fb", w, a)


BATCH_MAJOR = Layout(False)
FEATURE_MAJOR = Layout(True)


def choose_layout(batch: int, units: int) -> Layout:
    """Feature-major when ``H >= TRANSPOSE_MIN_UNITS`` and ``H >= TRANSPOSE_MIN_RATIO * B``."""
    wide = units >= TRANSPOSE_MIN_UNITS and units >= TRANSPOSE_MIN_RATIO * batch
    return FEATURE_MAJOR if wide else BATCH_MAJOR


def chunked_options(
    params: CellParams, xs: Array, chunk: int, hoist, store_gates, layout
) -> tuple[int, bool, bool, Layout]:
    """Resolve the ``None`` options of a chunked kernel for ``xs`` ``(T, B, D)``.

    Returns:
        ``(chunk, hoist, store_gates, layout)``: the chunk capped at ``T`` (at least 1),
        hoisting when ``D >= HOIST_MIN_FEATURES``, gates stored when they take at most
        ``STORE_GATES_MAX_BYTES`` or ``H >= STORE_GATES_MIN_UNITS``, ``choose_layout``.
    """
    steps, batch, features = xs.shape
    units = params.recurrent_kernel.shape[0]
    if hoist is None:
        hoist = features >= HOIST_MIN_FEATURES
    if store_gates is None:
        gate_bytes = static_size(steps, batch, 4 * units) * xs.dtype.itemsize
        store_gates = gate_bytes <= STORE_GATES_MAX_BYTES or units >= STORE_GATES_MIN_UNITS
    if layout is None:
        layout = choose_layout(batch, units)
    chunk = max(1, min(int(chunk), static_size(steps)))
    return chunk, bool(hoist), bool(store_gates), layout


class Sequence(NamedTuple):
    """What ``forward`` returns.

    Attributes:
        ys: ``(T, B, H)`` outputs.
        final: ``LSTMState`` after the last step, ``(B, H)`` each.
        hs: ``(T, B, H)`` hidden states, only when saving and they differ from ``ys``
            (a mask with ``zero_output``); else ``None``.
        boundaries: ``(chunks, B, H)`` the cell state before the first step of each
            backward chunk (``chunks(T, chunk)``), only when saving; else ``None``.
        gates: ``(T, B, 4H)`` ``tanh`` of the folded gate pre-activations, only when
            saving with ``save_gates``; else ``None``.
    """

    ys: Array
    final: LSTMState
    hs: Array | None
    boundaries: Array | None
    gates: Array | None = None


def chunks(steps: int, chunk: int) -> tuple[int, int]:
    """How ``T`` steps split into chunks: ``(head, full)``, a first chunk of ``head``
    steps (``0 <= head < chunk``) then ``full`` chunks of ``chunk`` steps."""
    full, head = divmod(steps, chunk)
    return head, full


def forward(
    folded: Folded,
    xs: Array,
    h0: Array,
    c0: Array,
    *,
    mask: Array | None = None,
    recurrent_mask: Array | None = None,
    zero_output: bool = False,
    chunk: int | None = None,
    save: bool = False,
    save_gates: bool = False,
    hoist: bool = False,
    unroll: int = 1,
    layout: Layout = BATCH_MAJOR,
) -> Sequence:
    """Scan the fused cell over ``xs`` ``(T, B, D)`` from ``(h0, c0)`` ``(B, H)``.

    In the feature-major ``layout`` every array has its last two axes swapped:
    ``xs`` ``(T, D, B)``, states ``(H, B)``, ``ys`` ``(T, H, B)``, ``recurrent_mask``
    ``(H, B)`` (``mask`` stays ``(T, B)``).

    Args:
        folded: ``fold(params)``.
        mask: ``(T, B)`` bool: where false the step keeps the state and emits the
            previous output (zeros with ``zero_output``), as Keras does.
        recurrent_mask: ``(B, H)`` dropout mask multiplying ``h_{t-1}`` before ``U``.
        chunk: run the steps in chunks of this many (``chunks(T, chunk)``), an outer
            scan over chunks around an inner scan over steps; ``None``: one scan.
        save: also return what the backward pass of ``fused_vjp`` needs: the cell
            states at the chunk boundaries (and the hidden states when they differ
            from the outputs). The other cell states are recomputed from those, so
            the forward pass stores ``(chunks, B, H)`` instead of ``(T, B, H)``.
        save_gates: with ``save``, also store every step's ``tanh`` of the folded
            gate array, ``(T, B, 4H)``, so the backward pass need not recompute it.
        hoist: compute ``x @ W + b`` for a whole chunk as one product before its
            steps (the whole sequence when ``chunk`` is ``None``).
        unroll: ``lax.scan`` unroll factor of the steps.
        layout: ``Layout`` of the arrays.
    """
    units = h0.shape[-2] if layout.transposed else h0.shape[-1]
    kernel, recurrent, bias = folded
    kernel, recurrent = layout.weight(kernel), layout.weight(recurrent)
    bias = None if bias is None else layout.bias(bias)
    keep_hs = save and mask is not None and zero_output
    if save and chunk is None:
        chunk = xs.shape[0]

    def step(carry, inputs):
        h, c = carry
        x, m = inputs
        h_in = h if recurrent_mask is None else h * recurrent_mask
        if hoist:
            z = x + layout.recurrent_product(h_in, recurrent)  # x: x_t W + b, per chunk
        else:
            z = layout.input_product(x, kernel) + layout.recurrent_product(h_in, recurrent)
            if bias is not None:
                z = z + bias
        t = jnp.tanh(z)
        i, f, g, o = layout.gates(t, units)
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        if m is None:
            h_t, c_t, y = h_new, c_new, h_new
        else:
            h_t, c_t, y = masked_update(layout.keep(m), h_new, c_new, h, c, zero_output)
        if not save:
            return (h_t, c_t), y
        return (h_t, c_t), (y, h_t if keep_hs else None, t if save_gates else None)

    def steps(carry, x, m):
        if hoist:
            x = layout.input_product(x, kernel)  # (K, B, 4H): one product for the chunk
            if bias is not None:
                x = x + bias
        return lax.scan(step, carry, (x, m), unroll=unroll)

    if chunk is None:
        (h_last, c_last), ys = steps((h0, c0), xs, mask)
        return Sequence(ys, LSTMState(h_last, c_last), None, None, None)

    head, full = chunks(xs.shape[0], chunk)
    carry = (h0, c0)
    outs, bounds = [], []
    if head:
        carry, out = steps(carry, xs[:head], None if mask is None else mask[:head])
        outs.append(out)
        bounds.append(c0[None])
    if full:

        def blocks(a):
            return None if a is None else a[head:].reshape(full, chunk, *a.shape[1:])

        def chunk_step(carry, inputs):
            c_before = carry[1]
            carry, out = steps(carry, *inputs)
            return carry, (out, c_before)

        carry, (out, c_before) = lax.scan(chunk_step, carry, (blocks(xs), blocks(mask)))
        outs.append(jax.tree.map(lambda a: a.reshape(full * chunk, *a.shape[2:]), out))
        bounds.append(c_before)
    out = outs[0] if len(outs) == 1 else jax.tree.map(lambda *a: jnp.concatenate(a), *outs)
    if not save:
        return Sequence(out, LSTMState(*carry), None, None, None)
    ys, hs, ts = out
    boundaries = bounds[0] if len(bounds) == 1 else jnp.concatenate(bounds)
    return Sequence(ys, LSTMState(*carry), hs, boundaries, ts)


def run(params: CellParams, xs, state: LSTMState, *, mask, input_mask, recurrent_mask, options):
    """The ``"fused"`` mode: ``forward`` with plain autodiff (forward and reverse mode).

    Shapes as in ``jlstm.modes``: ``xs`` ``(T, B..., D)``, ``ys`` ``(T, B..., H)``.
    """
    xs, h0, c0, mask, recurrent_mask, batch_shape = prepare(
        "fused", xs, state, mask, input_mask, recurrent_mask, options
    )
    hoist = xs.shape[-1] >= HOIST_MIN_FEATURES
    layout = choose_layout(xs.shape[1], params.recurrent_kernel.shape[0])
    steps = static_size(xs.shape[0])
    seq = forward(
        fold(params),
        layout.to(xs),
        layout.to(h0),
        layout.to(c0),
        mask=mask,
        recurrent_mask=layout.to(recurrent_mask),
        zero_output=options.zero_output_for_mask,
        chunk=min(HOIST_CHUNK, steps) if hoist else None,
        hoist=hoist,
        unroll=options.scan_unroll(steps),
        layout=layout,
    )
    final = LSTMState(layout.back(seq.final.h), layout.back(seq.final.c))
    return unflatten(layout.back(seq.ys), final, batch_shape)
