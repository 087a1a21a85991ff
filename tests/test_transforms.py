"""Every JAX transform through every implementation mode, on a small stacked model.

The promise of docs/functional-api.md ("Transformations"): ``jit``, ``grad``,
``value_and_grad``, ``vjp``, ``jvp``, ``jacfwd``, ``jacrev``, ``hessian``, ``linearize``,
``vmap`` (over params, keys and data), ``jax.checkpoint``, ``shard_map`` (default
``check_vma``), jit with ``NamedSharding`` inputs on Auto and Explicit meshes, and
``jax.export`` with a symbolic batch. ``auto`` (the default) must do all of them.

References are independent of jlstm: ``tests/reference.py`` (float64 NumPy) for
values, and central finite differences of that reference for derivatives.

Tolerances, derived rather than tuned. The modes run in float64 here, so the mode's
own rounding is ``~ c * T * (D + H) * eps64`` relative to the output scale: each
step's products are sums of ``D + H`` terms (the standard dot-product bound) and a
contractive recurrence (forget gate < 1, tanh' <= 1) adds step errors at most
linearly over ``T`` steps and ``L`` layers; with T = 12, D + H <= 7, L = 2 that is
~ 1e-13, far below the finite-difference error, which therefore sets the
tolerances:

* first derivatives by central differences with step ``h``: truncation
  ``h^2 |f'''| / 6`` plus rounding ``eps64 |f| / h``; with ``h = 1e-5`` and O(1)
  derivatives (unit-scale weights and inputs, bounded activations) both are below
  1e-9, so ``FD1_TOL = 1e-7`` leaves a 100x margin.
* second derivatives by a four-point stencil with ``h = 1e-4``: truncation
  ``~ h^2 |f''''|`` ~ 1e-8, rounding ``~ eps64 |f| / h^2`` ~ 2e-8; ``FD2_TOL = 1e-5``.

None of this depends on the CPU's vector width: a float64 rounding difference
between AVX2 and AVX-512 kernels is ~ eps64, six orders below these tolerances.
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

from . import reference as ref

FD1_TOL = 1e-7
FD2_TOL = 1e-5
VALUE_TOL = 1e-10

BATCH, STEPS, FEATURES = 2, 12, 2  # T = 12 > the fused kernels' chunk: a head and a chunk
SIZES = (4, 3)

# Every mode that runs on CPU, and auto. fused_vjp (reverse mode only) is checked
# for its forward-mode error separately.
FORWARD_MODES = [m for m in modes.list_modes("cpu") if modes.get_mode(m).supports_forward_ad]
ALL_MODES = [*FORWARD_MODES, "fused_vjp", "auto"]


def _config(mode):
    return jlstm.ModelConfig(
        input_size=FEATURES, layer_sizes=SIZES, output_size=1, implementation=mode
    )


def _np_model(params, x):
    """The float64 NumPy reference of the stacked model: ``(B, T, D)`` -> ``(B, 1)``."""
    h = np.asarray(x, np.float64)
    for layer in params.layers:
        h, _, _ = ref.lstm_layer(*(np.asarray(a, np.float64) for a in layer), h)
    head = params.head
    return h[:, -1] @ np.asarray(head.kernel, np.float64) + np.asarray(head.bias, np.float64)


def _np_loss(params, x):
    return float(np.sum(np.sin(_np_model(params, x))))


def _loss(config):
    return lambda params, x: jnp.sum(jnp.sin(jlstm.apply(params, x, config)))


def _tree_add(a, b, scale):
    return jax.tree.map(lambda u, v: np.asarray(u, np.float64) + scale * np.asarray(v), a, b)


def _fd1(f, primal, direction, h=1e-5):
    """Central difference of ``f`` at ``primal`` along ``direction`` (pytrees)."""
    return (f(_tree_add(primal, direction, h)) - f(_tree_add(primal, direction, -h))) / (2 * h)


def _fd2(f, primal, v, w, h=1e-4):
    """``v^T (d^2 f) w`` by the four-point stencil."""

    def at(a, b):
        return f(_tree_add(_tree_add(primal, v, a * h), w, b * h))

    return (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (4 * h * h)


def _dot(a, b):
    return sum(
        float(np.sum(np.asarray(u) * np.asarray(v)))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        config = jlstm.ModelConfig(
            input_size=FEATURES, layer_sizes=SIZES, output_size=1, param_dtype="float64"
        )
        params = jlstm.init_params(jax.random.key(0), config)
        # Non-zero biases so that every parameter's derivative is exercised.
        params = jax.tree.map(lambda a: np.asarray(a) + 0.1 * rng.normal(size=a.shape), params)
    x = rng.normal(size=(BATCH, STEPS, FEATURES))
    dp = jax.tree.map(lambda a: rng.normal(size=np.shape(a)), params)
    dx = rng.normal(size=x.shape)
    dx2 = rng.normal(size=x.shape)
    expected = {
        "value": _np_model(params, x),
        "d_params": _fd1(lambda p: _np_loss(p, x), params, dp),
        "d_x": _fd1(lambda xx: _np_loss(params, xx), x, dx),
        "d2_x": _fd2(lambda xx: _np_loss(params, xx), x, dx, dx2),
    }
    return params, x, dp, dx, dx2, expected


def _run_transforms(mode, params, x, dp, dx, dx2, forward):
    """One compiled program per mode: every transform's result, as scalars/arrays."""
    config = jlstm.ModelConfig(
        input_size=FEATURES,
        layer_sizes=SIZES,
        output_size=1,
        implementation=mode,
        param_dtype="float64",
    )
    loss = _loss(config)

    def body(params, x, dp, dx, dx2):
        out = {"value": jlstm.apply(params, x, config)}
        out["grad"] = _tdot(jax.grad(loss)(params, x), dp)
        _, g = jax.value_and_grad(loss)(params, x)
        out["value_and_grad"] = _tdot(g, dp)
        _, pullback = jax.vjp(loss, params, x)
        gp, gx = pullback(jnp.ones((), x.dtype))
        out["vjp_params"], out["vjp_x"] = _tdot(gp, dp), jnp.sum(gx * dx)
        out["jacrev_x"] = jnp.sum(jax.jacrev(loss, argnums=1)(params, x) * dx)
        out["remat"] = _tdot(jax.grad(jax.checkpoint(loss))(params, x), dp)
        # vmap over params: an ensemble of two copies, and over data: one sequence each.
        ens = jax.tree.map(lambda a: jnp.stack([a, a]), params)
        out["vmap_params"] = jax.vmap(lambda p: jlstm.apply(p, x, config))(ens)
        out["vmap_data"] = jax.vmap(lambda s: jlstm.apply(params, s[None], config)[0])(x)
        out["vmap_grad"] = jax.vmap(jax.grad(loss), in_axes=(0, None))(ens, x)
        if forward:
            out["jvp_params"] = jax.jvp(lambda p: loss(p, x), (params,), (dp,))[1]
            out["jvp_x"] = jax.jvp(lambda s: loss(params, s), (x,), (dx,))[1]
            out["jacfwd_x"] = jnp.sum(jax.jacfwd(loss, argnums=1)(params, x) * dx)
            _, lin = jax.linearize(lambda p: loss(p, x), params)
            out["linearize"] = lin(dp)
            hess = jax.hessian(loss, argnums=1)(params, x)
            out["hessian_x"] = jnp.einsum("btd,btdsue,sue->", dx, hess, dx2)
        return out

    with jax.enable_x64(True):
        return jax.jit(body)(params, jnp.asarray(x), dp, jnp.asarray(dx), jnp.asarray(dx2))


def _tdot(a, b):
    return sum(jnp.sum(u * v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_transform_matches_the_reference(mode, problem):
    params, x, dp, dx, dx2, expected = problem
    forward = mode != "fused_vjp"
    out = jax.tree.map(np.asarray, _run_transforms(mode, params, x, dp, dx, dx2, forward))
    np.testing.assert_allclose(out["value"], expected["value"], rtol=VALUE_TOL, atol=VALUE_TOL)
    d_params, d_x = expected["d_params"], expected["d_x"]
    for name in ("grad", "value_and_grad", "vjp_params", "remat"):
        np.testing.assert_allclose(out[name], d_params, rtol=FD1_TOL, atol=FD1_TOL, err_msg=name)
    for name in ("vjp_x", "jacrev_x"):
        np.testing.assert_allclose(out[name], d_x, rtol=FD1_TOL, atol=FD1_TOL, err_msg=name)
    for copy in out["vmap_params"]:
        np.testing.assert_allclose(copy, expected["value"], rtol=VALUE_TOL, atol=VALUE_TOL)
    np.testing.assert_allclose(out["vmap_data"], expected["value"], rtol=VALUE_TOL, atol=VALUE_TOL)
    for k in range(2):
        got = _dot(jax.tree.map(lambda a, k=k: a[k], out["vmap_grad"]), dp)
        np.testing.assert_allclose(got, d_params, rtol=FD1_TOL, atol=FD1_TOL)
    if forward:
        for name in ("jvp_params", "linearize"):
            np.testing.assert_allclose(out[name], d_params, rtol=FD1_TOL, atol=FD1_TOL)
        for name in ("jvp_x", "jacfwd_x"):
            np.testing.assert_allclose(out[name], d_x, rtol=FD1_TOL, atol=FD1_TOL)
        np.testing.assert_allclose(out["hessian_x"], expected["d2_x"], rtol=FD2_TOL, atol=FD2_TOL)


def test_reverse_only_mode_fails_forward_mode_with_the_fix_named(problem):
    params, x, dp, *_ = problem
    loss = _loss(_config("fused_vjp"))
    # Called directly the kernel names the fix; through a jit JAX raises its own error.
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda p: loss(p, x), (params,), (dp,))


def test_auto_never_picks_a_reverse_only_mode():
    for facts in [{}, {"platform": "gpu"}, {"platform": "tpu"}, {"cpu_devices": 2}]:
        name = modes.choose_mode(
            **{
                "platform": "cpu",
                "standard": True,
                "dtype": "float32",
                "mask": False,
                "recurrent_dropout": False,
                "steps": 100,
                "batch": 256,
                "input_size": 1,
                "units": 64,
                **facts,
            }
        )
        assert modes.get_mode(name).supports_forward_ad, (facts, name)


def test_vmap_over_dropout_keys_equals_a_loop():
    config = jlstm.ModelConfig(
        input_size=2, layer_sizes=(4, 3), dropout=0.3, recurrent_dropout=0.2, output_dropout=0.1
    )
    params = jlstm.init_params(jax.random.key(0), config)
    x = jax.random.normal(jax.random.key(1), (2, 5, 2))
    keys = jax.random.split(jax.random.key(2), 3)

    def run(key):
        return jlstm.apply(params, x, config, training=True, key=key)

    batched = jax.jit(jax.vmap(run))(keys)
    for k, key in enumerate(keys):
        np.testing.assert_allclose(batched[k], run(key), rtol=1e-6, atol=1e-6)


def test_export_with_symbolic_batch_serialises_without_registration():
    config = jlstm.ModelConfig(input_size=1, layer_sizes=(8, 4), output_size=1)
    params = jlstm.init_params(jax.random.key(0), config)
    x = jax.random.normal(jax.random.key(1), (3, 12, 1))
    (b,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, 12, 1), jnp.float32)

    def f(p, x):
        return jlstm.apply(p, x, config, return_state=True)

    exported = jax.export.export(jax.jit(f))(params, spec)
    restored = jax.export.deserialize(exported.serialize())
    y, states = restored.call(params, x)
    y_ref, states_ref = f(params, x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-7)
    assert type(states[0]) is jlstm.LSTMState
    np.testing.assert_allclose(states[1].c, states_ref[1].c, rtol=1e-6, atol=1e-7)
    # The gradient exports too (the kernels' size decisions never compare symbolically).
    grad = jax.export.export(jax.jit(jax.grad(lambda p, x: jnp.sum(jlstm.apply(p, x, config)))))
    grad(params, spec)


def test_every_public_namedtuple_is_registered_for_export():
    for cls in (
        jlstm.CellParams,
        jlstm.LSTMState,
        jlstm.DenseParams,
        jlstm.ModelParams,
        jlstm.BidirectionalParams,
        jlstm.BidirectionalState,
        jlstm.DropoutMasks,
    ):
        with pytest.raises(ValueError, match="Duplicate serialization registration"):
            jax.export.register_namedtuple_serialization(cls, serialized_name=f"x.{cls.__name__}")


_DEVICE_CHECKS = """
import jax, jax.numpy as jnp, numpy as np, jlstm
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from jlstm import modes
n = jax.device_count()
assert n == {n}, n
cfg = jlstm.ModelConfig(input_size=1, layer_sizes=(8, 4), output_size=1)
params = jlstm.init_params(jax.random.key(0), cfg)
B = 4 * n
x = jax.random.normal(jax.random.key(1), (B, 24, 1))
y = jnp.zeros((B, 1))
ref = jlstm.apply(params, x, cfg)
def loss(p, x, y):
    return jnp.mean((jlstm.apply(p, x, cfg) - y) ** 2)
ref_v, ref_g = jax.value_and_grad(loss)(params, x, y)
def close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=2e-5, atol=2e-6)
mesh = jax.make_mesh((n,), ("b",), axis_types=(AxisType.Auto,))
# shard_map with the default check_vma, forward and a data-parallel gradient.
f = jax.shard_map(lambda p, x: jlstm.apply(p, x, cfg), mesh=mesh,
                  in_specs=(P(), P("b")), out_specs=P("b"))
close(jax.jit(f)(params, x), ref)
# With check_vma the gradient of replicated params is summed over the shards by
# JAX itself (the transpose of the implicit pvary), so each shard's loss is its share.
def shard_loss(p, x, y):
    return jnp.sum((jlstm.apply(p, x, cfg) - y) ** 2) / B
g = jax.shard_map(jax.grad(shard_loss), mesh=mesh,
                  in_specs=(P(), P("b"), P("b")), out_specs=P())
close(jax.jit(g)(params, x, y), ref_g)
# A jitted train step on batch-sharded inputs, Auto and Explicit meshes.
for axis_type in (AxisType.Auto, AxisType.Explicit):
    mesh = jax.make_mesh((n,), ("data",), axis_types=(axis_type,))
    sharding = NamedSharding(mesh, P("data"))
    xs, ys = jax.device_put(x, sharding), jax.device_put(y, sharding)
    with jax.set_mesh(mesh):
        v, grads = jax.jit(jax.value_and_grad(loss))(params, xs, ys)
        text = jax.jit(loss).lower(params, xs, ys).as_text()
    close((v, grads), (ref_v, ref_g))
    if axis_type == AxisType.Explicit:
        assert "jlstm_batch" not in text, "multicore re-sharded a sharded program"
# multicore splits an unsharded batch over the devices, equal to the single-device run.
mc = jlstm.ModelConfig(input_size=1, layer_sizes=(8, 4), output_size=1,
                       implementation="multicore")
close(jax.jit(jax.value_and_grad(lambda p: jnp.mean((jlstm.apply(p, x, mc) - y) ** 2)))(params),
      (ref_v, ref_g))
print("ok")
"""


@pytest.mark.parametrize("devices", [2, 4])
def test_sharding_forms_on_forced_cpu_devices(devices):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    code = textwrap.dedent(_DEVICE_CHECKS).replace("{n}", str(devices))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_cudnn_under_vmap_raises_a_jlstm_error_naming_the_fix():
    """Traced on CPU (no GPU needed): jax.experimental.rnn has no batching rule."""
    from jlstm.kernels import cudnn

    params = jlstm.init_cell_params(jax.random.key(0), 2, 3)
    state = jlstm.LSTMState(jnp.zeros((2, 3)), jnp.zeros((2, 3)))

    def run(xs):
        return cudnn.run(
            params,
            xs,
            state,
            mask=None,
            input_mask=None,
            recurrent_mask=None,
            options=modes.RecurrenceOptions(),
        )[0]

    with pytest.raises(NotImplementedError, match="implementation='auto'"):
        jax.make_jaxpr(jax.vmap(run))(jnp.ones((3, 4, 2, 2)))


def test_fused_vjp_names_the_fix_under_forward_mode():
    params = jlstm.init_cell_params(jax.random.key(0), 2, 3)
    x = jnp.ones((2, 4, 2))

    def f(p):
        return jnp.sum(jlstm.lstm_layer(p, x, implementation="fused_vjp"))

    with pytest.raises(TypeError, match=r"implementation='auto' or 'fused_jvp'"):
        jax.jvp(f, (params,), (params,))
