"""Conformance of every implementation mode against a float64 NumPy reference.

Each mode that runs on CPU must compute Keras' LSTM (values) and its derivatives
(reverse mode; forward mode where the mode declares it) for every feature it claims:
step masks, ``zero_output_for_mask``, input and recurrent dropout masks, initial
states, ``D = 1``, unbatched and multi-axis batches. The reference and its
derivatives (central finite differences in float64) are plain NumPy, written from the
equations. The ``"auto"`` rules, the capability flags and the cuDNN weight packing
(checked through ``jax.experimental.rnn.lstm_ref``, which runs on CPU) are tested here
too. Speed is not: that is ``benchmarks/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm
from jlstm import modes
from jlstm.kernels import cudnn, fused, fused_jvp, fused_vjp
from jlstm.types import CellParams, LSTMState

from . import reference as ref

CPU_MODES = modes.list_modes("cpu")
NO_FORWARD_AD = {"fused_vjp", "cudnn"}


# ----------------------------------------------------------------------------- reference


def np_lstm(W, U, b, xs, h0, c0, mask=None, zero_output=False, in_mask=None, rec_mask=None):
    """Keras' LSTM over time-major ``xs`` ``(T, B, D)``: ``tests/reference.py`` in float64.

    Returns ``(ys (T, B, H), h_T, c_T)``. A masked step keeps ``h`` and ``c`` and emits
    the previous ``h`` (zeros with ``zero_output``); dropout masks multiply ``x`` and
    ``h_{t-1}`` before the products (one mask for all four gates).
    """
    ys, h, c = ref.lstm_layer(
        W,
        U,
        b,
        np.swapaxes(xs, 0, 1),
        h0,
        c0,
        mask=None if mask is None else np.swapaxes(mask, 0, 1),
        zero_output_for_mask=zero_output,
        xm=None if in_mask is None else (in_mask,) * 4,
        hm=None if rec_mask is None else (rec_mask,) * 4,
    )
    return np.swapaxes(ys, 0, 1), h, c


def _loss_weights(rng, steps, batch, units):
    """Random coefficients: the test loss is linear in every output."""
    return tuple(
        rng.normal(size=s) for s in [(steps, batch, units), (batch, units), (batch, units)]
    )


def np_loss(args, weights, **kw):
    ys, h, c = np_lstm(*args, **kw)
    wy, wh, wc = weights
    return float(np.sum(ys * wy) + np.sum(h * wh) + np.sum(c * wc))


def central_differences(f, args, eps):
    """Central differences of the float64 function ``f(*args) -> float`` for every
    element of every argument."""
    grads = []
    for k, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() for x in args]
            minus = [x.copy() for x in args]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            g[idx] = (f(*plus) - f(*minus)) / (2 * eps)
        grads.append(g)
    return grads


def fd_grad_and_bound(f, args, loss_error, eps=1e-6):
    """Central differences of ``f`` with step ``eps`` and an elementwise bound on their
    distance from the true derivative.

    Rounding: each value of ``f`` is within ``loss_error`` of exact, so a quotient is
    within ``loss_error / eps``. Truncation: ``g(e) = g + c e^2 + O(e^4)``, so the step
    ``2 eps`` differences give ``|g(2e) - g(e)| = 3 |c| e^2`` up to rounding
    ``1.5 loss_error / eps``: ``|c| e^2 <= (|g(2e) - g(e)| + 1.5 loss_error / eps) / 3``
    (Richardson). ``ref.SAFETY`` covers the ``O(e^4)`` terms. A float64 derivative
    computed by AD is within ``O(n u64)`` relative of exact, far below ``loss_error / eps``.
    """
    g1 = central_differences(f, args, eps)
    g2 = central_differences(f, args, 2 * eps)
    rounding = loss_error / eps
    bounds = [
        ref.SAFETY * ((np.abs(b - a) + 1.5 * rounding) / 3 + rounding)
        for a, b in zip(g1, g2, strict=True)
    ]
    return g1, bounds


def np_loss_error(args, weights, **kw):
    """A bound on the float64 rounding error of ``np_loss``: the reference's derived
    output bounds through the loss's weights, plus the loss sum's own rounding."""
    W, U, b, xs, h0, c0 = args
    ys, h, c = np_lstm(*args, **kw)
    mask = kw.get("mask")
    in_mask, rec_mask = kw.get("in_mask"), kw.get("rec_mask")
    b_out, b_h, b_c = ref.lstm_layer_bound(
        W, U, b, np.swapaxes(xs, 0, 1), h0, c0,
        mask=None if mask is None else np.swapaxes(mask, 0, 1),
        zero_output_for_mask=kw.get("zero_output", False),
        xm=None if in_mask is None else (in_mask,) * 4,
        hm=None if rec_mask is None else (rec_mask,) * 4,
        dtype=np.float64,
    )  # fmt: skip
    wy, wh, wc = weights
    terms = np.sum(np.abs(ys * wy)) + np.sum(np.abs(h * wh)) + np.sum(np.abs(c * wc))
    n = ys.size + h.size + c.size
    propagated = np.sum(np.abs(wy) * np.swapaxes(b_out, 0, 1))
    propagated += np.sum(np.abs(wh) * b_h) + np.sum(np.abs(wc) * b_c)
    return propagated + ref.sum_rtol(n, np.float64) * terms


def np_grad(args, weights, **kw):
    """``np_loss``'s central differences for every argument, and their error bounds."""
    return fd_grad_and_bound(
        lambda *a: np_loss(a, weights, **kw), args, np_loss_error(args, weights, **kw)
    )


# ----------------------------------------------------------------------------- problems


def _problem(seed, steps, batch, features, units, *, masked, zero_output, dropout):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(features, 4 * units)) * 0.6
    U = rng.normal(size=(units, 4 * units)) * 0.5
    b = rng.normal(size=(4 * units,)) * 0.3
    xs = rng.normal(size=(steps, batch, features))
    h0 = rng.normal(size=(batch, units)) * 0.5
    c0 = rng.normal(size=(batch, units)) * 0.5
    kw = {"zero_output": zero_output}
    if masked:
        mask = rng.random((steps, batch)) > 0.35
        mask[0, 0] = False  # a masked first step: the initial state passes through
        kw["mask"] = mask
    if dropout:
        kw["in_mask"] = (rng.random((batch, features)) > 0.3) / 0.7
        kw["rec_mask"] = (rng.random((batch, units)) > 0.3) / 0.7
    return (W, U, b, xs, h0, c0), _loss_weights(rng, steps, batch, units), kw


CASES = {
    # name: (steps, batch, features, units, masked, zero_output, dropout)
    "plain": (5, 3, 2, 4, False, False, False),
    "D=1": (6, 2, 1, 3, False, False, False),
    "mask": (7, 3, 2, 3, True, False, False),
    "mask-zero-output": (7, 2, 3, 3, True, True, False),
    "dropout": (5, 2, 3, 4, False, False, True),
    "long-chunked": (13, 2, 9, 3, True, False, False),  # > one backward chunk, hoisted
}


def _run_mode(name, args, kw):
    """The mode's kernel on float64 JAX arrays; returns ``(ys, h_T, c_T)``."""
    W, U, b, xs, h0, c0 = args
    mode = modes.get_mode(name)
    mask = kw.get("mask")
    in_mask, rec_mask = kw.get("in_mask"), kw.get("rec_mask")
    if rec_mask is not None and mode.name == "keras1":
        rec_mask = jnp.broadcast_to(rec_mask, (4, *rec_mask.shape))  # one per gate, equal
        in_mask = jnp.broadcast_to(in_mask, (4, *in_mask.shape))
    ys, final = mode.run(
        CellParams(W, U, b),
        xs,
        LSTMState(h0, c0),
        mask=None if mask is None else jnp.asarray(mask),
        input_mask=None if in_mask is None else jnp.asarray(in_mask),
        recurrent_mask=None if rec_mask is None else jnp.asarray(rec_mask),
        options=modes.RecurrenceOptions(zero_output_for_mask=kw.get("zero_output", False)),
    )
    return ys, final.h, final.c


def _jax_loss(name, kw, weights):
    wy, wh, wc = (jnp.asarray(w) for w in weights)

    def loss(*args):
        ys, h, c = _run_mode(name, args, kw)
        return jnp.sum(ys * wy) + jnp.sum(h * wh) + jnp.sum(c * wc)

    return loss


@pytest.fixture(scope="module")
def references():
    """Reference values and finite-difference gradients of every case (computed once)."""
    out = {}
    for seed, (case, spec) in enumerate(CASES.items()):
        steps, batch, features, units, masked, zo, drop = spec
        args, weights, kw = _problem(
            seed, steps, batch, features, units, masked=masked, zero_output=zo, dropout=drop
        )
        out[case] = (args, weights, kw, np_lstm(*args, **kw), np_grad(args, weights, **kw))
    return out


# ----------------------------------------------------------------------------- conformance


def test_every_cpu_mode_is_covered():
    assert set(CPU_MODES) == {
        "keras1",
        "keras2",
        "hoisted",
        "fused",
        "fused_jvp",
        "fused_vjp",
        "multicore",
    }
    assert "cudnn" in modes.list_modes() and "cudnn" not in CPU_MODES


# "auto" and "multicore" run fused_jvp here (one CPU device): two cases each suffice.
MODE_CASES = [
    (name, case)
    for name in [*CPU_MODES, "auto"]
    for case in CASES
    if name not in ("auto", "multicore") or case in ("mask-zero-output", "dropout")
]


@pytest.mark.parametrize(("name", "case"), MODE_CASES)
def test_values_and_gradients_match_reference(name, case, references):
    args, weights, kw, (ys_ref, h_ref, c_ref), grads_ref = references[case]
    with jax.enable_x64(True):
        jargs = tuple(jnp.asarray(a) for a in args)
        ys, h, c = jax.jit(lambda *a: _run_mode(name, a, kw))(*jargs)
        np.testing.assert_allclose(ys, ys_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(h, h_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(c, c_ref, rtol=1e-10, atol=1e-12)
        grads = jax.jit(jax.grad(_jax_loss(name, kw, weights), argnums=range(6)))(*jargs)
    # AD in float64 vs central differences: the differences' derived error bound.
    grads_ref, bounds = grads_ref
    labels = ("W", "U", "b", "x", "h0", "c0")
    for g, g_ref, bound, label in zip(grads, grads_ref, bounds, labels, strict=True):
        ref.assert_within(g, g_ref, bound, err_msg=f"d loss / d {label}")


@pytest.mark.parametrize("name", [*CPU_MODES, "auto"])
def test_forward_mode_where_supported(name, references):
    args, weights, kw, _, grads_ref = references["mask"]
    rng = np.random.default_rng(7)
    tangents = [rng.normal(size=a.shape) for a in args]
    grads_ref, bounds = grads_ref
    expected = sum(float(np.sum(g * t)) for g, t in zip(grads_ref, tangents, strict=True))
    # The directional derivative from central differences: each element's derived bound
    # times |tangent|.
    tol = sum(float(np.sum(b * np.abs(t))) for b, t in zip(bounds, tangents, strict=True))
    supported = modes.get_mode(name).supports_forward_ad
    with jax.enable_x64(True):
        jargs = tuple(jnp.asarray(a) for a in args)
        jtan = tuple(jnp.asarray(t) for t in tangents)
        loss = _jax_loss(name, kw, weights)
        if supported:
            _, derivative = jax.jvp(loss, jargs, jtan)
            np.testing.assert_allclose(derivative, expected, rtol=0, atol=tol)
        else:
            with pytest.raises(TypeError, match="forward-mode"):
                jax.jvp(loss, jargs, jtan)


def test_modes_without_forward_ad_are_the_documented_ones():
    declared = {n for n in modes.list_modes() if not modes.get_mode(n).supports_forward_ad}
    assert declared == NO_FORWARD_AD
    assert modes.get_mode("auto").supports_forward_ad  # it never picks one of them


@pytest.mark.parametrize("name", ["fused_vjp", "fused", "hoisted"])
@pytest.mark.parametrize("batch_shape", [(), (2, 3)])
def test_unbatched_and_multi_axis_batches(name, batch_shape):
    """``(T, D)`` and ``(T, B1, B2, D)`` inputs equal the flattened batch, per sequence."""
    rng = np.random.default_rng(3)
    steps, features, units = 4, 2, 3
    with jax.enable_x64(True):
        params = CellParams(
            *(
                jnp.asarray(rng.normal(size=s))
                for s in [(features, 4 * units), (units, 4 * units), (4 * units,)]
            )
        )
        xs = jnp.asarray(rng.normal(size=(steps, *batch_shape, features)))
        state = jlstm.zero_state(batch_shape, units, jnp.float64)
        run = modes.get_mode(name).run
        none = {"mask": None, "input_mask": None, "recurrent_mask": None}
        ys, final = run(params, xs, state, options=modes.RecurrenceOptions(), **none)
        assert ys.shape == (steps, *batch_shape, units) and final.h.shape == (*batch_shape, units)
        flat = xs.reshape(steps, -1, features)
        ref, _, _ = np_lstm(
            *(np.asarray(p) for p in params),
            np.asarray(flat),
            np.zeros((flat.shape[1], units)),
            np.zeros((flat.shape[1], units)),
        )
        np.testing.assert_allclose(np.asarray(ys).reshape(ref.shape), ref, rtol=1e-10, atol=1e-12)


def test_layer_options_through_auto_match_keras2():
    """go_backwards, initial_state, return_state and a mask through ``lstm_layer``."""
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        params = jlstm.init_cell_params(jax.random.key(1), 2, 3, dtype=jnp.float64)
        x = jnp.asarray(rng.normal(size=(2, 6, 2)))
        mask = jnp.asarray(rng.random((2, 6)) > 0.3)
        init = LSTMState(jnp.asarray(rng.normal(size=(2, 3))), jnp.asarray(rng.normal(size=(2, 3))))

        def run(impl):
            def f(params, x):
                y, st = jlstm.lstm_layer(
                    params,
                    x,
                    mask=mask,
                    initial_state=init,
                    go_backwards=True,
                    return_sequences=True,
                    return_state=True,
                    implementation=impl,
                )
                return jnp.sum(y**2) + jnp.sum(st.c)

            return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, x)

        (v_auto, g_auto), (v_ref, g_ref) = run("auto"), run(2)
    args = [np.asarray(a, np.float64) for a in (*params, x)]
    h0, c0, np_mask = np.asarray(init.h), np.asarray(init.c), np.asarray(mask)
    layer = dict(h0=h0, c0=c0, mask=np_mask, go_backwards=True)
    y, _, c = ref.lstm_layer(*args, **layer)
    b_y, _, b_c = ref.lstm_layer_bound(*args, **layer, dtype=np.float64)
    # Two float64 runs, each output within b of exact: the loss sum(y^2) + sum(c) moves
    # by sum((2|y| + 2b) 2b) + sum(2 b_c), plus its own rounding (2 gamma_n of its terms).
    terms = np.sum(y**2) + np.sum(np.abs(c))
    loss_error = np.sum((2 * np.abs(y) + b_y) * b_y) + np.sum(b_c)
    loss_error += ref.sum_rtol(y.size + c.size, np.float64) / 2 * terms
    np.testing.assert_allclose(v_auto, v_ref, rtol=0, atol=2 * loss_error)

    def np_loss(*a):
        y, _, c = ref.lstm_layer(*a, **layer)
        return float(np.sum(y**2) + np.sum(c))

    # Each AD gradient within the central differences' derived bound (two of them apart).
    fd, bounds = fd_grad_and_bound(np_loss, args, loss_error)
    for a, b, g, bound in zip(
        jax.tree.leaves(g_auto), jax.tree.leaves(g_ref), fd, bounds, strict=True
    ):
        ref.assert_within(a, g, bound, err_msg="auto vs differences")
        ref.assert_within(b, g, bound, err_msg="keras2 vs differences")


@pytest.mark.parametrize("kernel", [fused_jvp, fused_vjp], ids=["fused_jvp", "fused_vjp"])
@pytest.mark.parametrize("layout", ["batch-major", "feature-major"])
@pytest.mark.parametrize(("hoist", "store_gates"), [(False, False), (True, True)])
def test_fused_kernel_variants_match_reference(kernel, layout, hoist, store_gates, references):
    """The kernels' layout / hoisting / stored-gate variants ``auto`` picks by shape."""
    args, weights, kw, (ys_ref, _, _), grads_ref = references["long-chunked"]
    lay = fused.FEATURE_MAJOR if layout == "feature-major" else fused.BATCH_MAJOR
    wy, wh, wc = weights
    with jax.enable_x64(True):
        jargs = tuple(jnp.asarray(a) for a in args)

        def loss(W, U, b, xs, h0, c0):
            ys, final = kernel.sequence(
                CellParams(W, U, b),
                xs,
                h0,
                c0,
                mask=jnp.asarray(kw["mask"]),
                chunk=4,
                hoist=hoist,
                store_gates=store_gates,
                layout=lay,
            )
            return jnp.sum(ys * wy) + jnp.sum(final.h * wh) + jnp.sum(final.c * wc), ys

        (_, ys), grads = jax.value_and_grad(loss, argnums=range(6), has_aux=True)(*jargs)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-10, atol=1e-12)
    # AD in float64 vs central differences: the differences' derived error bound.
    for g, g_ref, bound in zip(grads, *grads_ref, strict=True):
        ref.assert_within(g, g_ref, bound, err_msg="gradient")


def test_vmap_of_grad_through_the_custom_vjp():
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):  # float64, so that central differences can bound the result
        params = jlstm.init_cell_params(jax.random.key(0), 2, 3, dtype=jnp.float64)
        x = jnp.asarray(rng.normal(size=(3, 5, 2)))

        def loss(impl):
            return lambda p, x1: jnp.sum(jlstm.lstm_layer(p, x1, implementation=impl) ** 2)

        per_seq = jax.jit(jax.vmap(jax.grad(loss("fused_vjp")), in_axes=(None, 0)))(params, x)
        keras2 = jax.jit(jax.vmap(jax.grad(loss(2)), in_axes=(None, 0)))(params, x)
    weights = [np.asarray(a) for a in params]
    for i in range(x.shape[0]):
        xi = np.asarray(x[i : i + 1])
        _, h, _ = ref.lstm_layer(*weights, xi)
        _, b_h, _ = ref.lstm_layer_bound(*weights, xi, dtype=np.float64)
        # sum(h^2) moves by sum((2|h| + b) b), plus its own rounding (gamma_n of its terms).
        loss_error = np.sum((2 * np.abs(h) + b_h) * b_h)
        loss_error += ref.sum_rtol(h.size, np.float64) / 2 * np.sum(h**2)

        def np_loss(*w, xi=xi):
            return float(np.sum(ref.lstm_layer(*w, xi)[1] ** 2))

        # Each per-sequence AD gradient within the central differences' derived bound.
        fd, bounds = fd_grad_and_bound(np_loss, weights, loss_error)
        for a, b, g, bound in zip(per_seq, keras2, fd, bounds, strict=True):
            ref.assert_within(a[i], g, bound, err_msg=f"fused_vjp, sequence {i}")
            ref.assert_within(b[i], g, bound, err_msg=f"keras2, sequence {i}")


def test_multicore_splits_the_batch_over_cpu_devices():
    """With two CPU devices the batch really is sharded, and the numbers do not change."""
    code = textwrap.dedent(
        """
        import jax
        jax.config.update("jax_num_cpu_devices", 2)
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp, numpy as np, jlstm
        from jlstm import modes
        rng = np.random.default_rng(0)
        p = jlstm.init_cell_params(jax.random.key(0), 3, 4, dtype=jnp.float64)
        x = jnp.asarray(rng.normal(size=(4, 7, 3)))
        mask = jnp.asarray(rng.random((4, 7)) > 0.3)
        def loss(impl):
            return lambda p, x: jnp.sum(jnp.sin(jlstm.lstm_layer(
                p, x, mask=mask, return_sequences=True, implementation=impl)))
        text = jax.jit(loss("multicore")).lower(p, x).as_text()
        assert "manual_computation" in text, "no shard_map in the program"
        v, g = jax.jit(jax.value_and_grad(loss("multicore"), argnums=(0, 1)))(p, x)
        vr, gr = jax.value_and_grad(loss(2), argnums=(0, 1))(p, x)
        assert abs(float(v - vr)) < 1e-12
        err = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                  zip(jax.tree.leaves(g), jax.tree.leaves(gr)))
        assert err < 1e-12, err
        assert modes.choose_mode(platform="cpu", standard=True, dtype="float32", mask=False,
            recurrent_dropout=False, steps=30, batch=256, input_size=1,
            units=64, cpu_devices=2) == "multicore"
        print("ok")
        """
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ----------------------------------------------------------------------------- cuDNN


def test_cudnn_packing_matches_the_reference_layout():
    """``pack`` builds what cuDNN reads: ``lstm_ref`` on the unpacked weights is jlstm."""
    from jax.experimental import rnn

    rng = np.random.default_rng(6)
    batch, steps, features, units = 3, 5, 2, 4
    params = jlstm.init_cell_params(
        jax.random.key(3), features, units, bias_initializer="random_normal"
    )
    flat = cudnn.pack(params)
    assert flat.shape == (rnn.get_num_params_in_lstm(features, units, 1, False),)
    W_ih, W_hh, b_ih, b_hh = rnn.unpack_lstm_weights(flat, features, units, 1, False)
    np.testing.assert_array_equal(W_ih[0], params.kernel.T)
    np.testing.assert_array_equal(W_hh[0], params.recurrent_kernel.T)
    np.testing.assert_array_equal(b_ih[0] + b_hh[0], params.bias)
    x = jnp.asarray(rng.normal(size=(batch, steps, features)), jnp.float32)
    h0 = jnp.asarray(rng.normal(size=(1, batch, units)), jnp.float32)
    c0 = jnp.asarray(rng.normal(size=(1, batch, units)), jnp.float32)
    y, h_n, c_n = rnn.lstm_ref(
        x,
        h0,
        c0,
        W_ih,
        W_hh,
        b_ih,
        b_hh,
        jnp.full((batch,), steps, jnp.int32),
        features,
        units,
        1,
        0.0,
        False,
    )
    ours, state = jlstm.lstm_layer(
        params,
        x,
        initial_state=LSTMState(h0[0], c0[0]),
        return_sequences=True,
        return_state=True,
        implementation=2,
    )
    # Two float32 runs of one layer, each within the derived float64 bound: twice it.
    b_out, b_h, b_c = ref.lstm_layer_bound(*params, x, h0[0], c0[0])
    ref.assert_within(y, ours, 2 * b_out, err_msg="lstm_ref outputs")
    ref.assert_within(h_n[0], state.h, 2 * b_h, err_msg="lstm_ref h")
    ref.assert_within(c_n[0], state.c, 2 * b_c, err_msg="lstm_ref c")


def test_cudnn_is_gpu_only_and_declares_its_limits():
    mode = modes.get_mode("cudnn")
    assert mode.platforms == frozenset({"gpu"})
    assert not mode.supports_mask and mode.standard_only and mode.dtypes == {"float32"}
    with pytest.raises(ValueError, match="platform 'cpu'"):
        modes.resolve_mode("cudnn", platform="cpu")


def test_cudnn_guard_passes_values_and_refuses_gradients():
    # The guard every differentiable cuDNN input goes through: the identity forward, and
    # a gradient is an error naming the fix (the recorded GPU run found wrong gradients).
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(jax.jit(cudnn.inference_only)(x), x)
    with pytest.raises(ValueError, match=r"inference-only.*implementation='auto'"):
        jax.grad(lambda a: jnp.sum(cudnn.inference_only(a) ** 2))(x)


# ----------------------------------------------------------------------------- auto


def _choose(**overrides):
    facts = dict(
        platform="cpu",
        standard=True,
        dtype="float32",
        mask=False,
        recurrent_dropout=False,
        steps=30,
        batch=256,
        input_size=1,
        units=64,
        cpu_devices=1,
    )
    return modes.choose_mode(**{**facts, **overrides})


def test_auto_rules():
    assert _choose() == "fused_jvp"
    assert _choose(mask=True, recurrent_dropout=True) == "fused_jvp"
    assert _choose(cpu_devices=2) == "multicore"
    assert _choose(cpu_devices=2, batch=32) == "fused_jvp"  # too little work per device
    assert _choose(cpu_devices=2, batch=255) == "fused_jvp"  # devices do not divide B
    assert _choose(cpu_devices=2, steps=4) == "fused_jvp"  # too few steps
    assert _choose(cpu_devices=2, batch=64, units=512, input_size=512) == "fused_jvp"
    assert _choose(standard=False, input_size=1) == "keras2"
    assert _choose(standard=False, input_size=64, units=64) == "hoisted"
    # cudnn is opt-in until a GPU conformance and speed run is recorded.
    assert _choose(platform="gpu") == "fused_jvp"
    assert _choose(platform="gpu", mask=True) == "fused_jvp"
    assert _choose(platform="gpu", standard=False) == "keras2"
    assert _choose(platform="tpu") == "fused_jvp"
    # A symbolic batch (jax.export) is never split over devices.
    (b,) = jax.export.symbolic_shape("b")
    assert _choose(cpu_devices=2, batch=b) == "fused_jvp"


def test_auto_is_the_default_and_resolves_per_call():
    assert jlstm.LayerConfig(units=2, input_size=1).implementation == "auto"
    assert jlstm.ModelConfig().implementation == "auto"
    assert modes.resolve_mode("auto") is modes.get_mode("auto")
    assert "auto" not in modes.list_modes()


def test_auto_falls_back_for_other_activations():
    """A named fused mode rejects non-standard activations; ``auto`` runs them exactly."""
    rng = np.random.default_rng(8)
    params = jlstm.init_cell_params(jax.random.key(2), 2, 3)
    x = jnp.asarray(rng.normal(size=(2, 4, 2)), jnp.float32)
    kw = {"activation": "relu", "recurrent_activation": "hard_sigmoid", "return_sequences": True}
    with pytest.raises(ValueError, match="standard activations"):
        jlstm.lstm_layer(params, x, implementation="fused_vjp", **kw)
    # Two float32 runs, each within the derived float64 bound (relu, hard_sigmoid): twice it.
    bound, _, _ = ref.lstm_layer_bound(*params, x, act="relu", ract="hard_sigmoid")
    ref.assert_within(
        jlstm.lstm_layer(params, x, implementation="auto", **kw),
        jlstm.lstm_layer(params, x, implementation=2, **kw),
        2 * bound,
        err_msg="auto vs 2, relu",
    )


def test_unknown_implementation_names_the_choices():
    with pytest.raises(ValueError, match="use 1, 2, 'auto' or one of"):
        modes.get_mode("fastest")
