"""jlstm.parallel: the data-parallel step equals the single-device step.

Device counts are fixed when JAX starts, so each count runs in its own subprocess
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``).

Tolerance, derived: sharding changes only the order in which the per-row gradient
contributions are added (per-device partial sums, then XLA's all-reduce), a relative
change of the float32 gradient of about ``sqrt(B T) * 2**-24``, i.e. ~1e-6 here. Adam's
update ``lr * m_hat / (sqrt(v_hat) + eps)`` is scale-free in ``g``: a relative change
``r`` of ``g`` moves each update by about ``lr * r`` (more only for the rare element
whose gradient sits near its own rounding noise, whose sign may flip: at most
``2 lr``). After ``K`` steps the parameters therefore agree to ``K * lr * 1e-3``
(a thousand times the expected ``K * lr * 1e-6``, far below the ``2 K lr`` a
wrong gradient would give), and the losses to ``rtol 1e-5``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from jlstm import parallel

WORKER = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np, optax, jlstm
    from jlstm import parallel
    from jlstm.train import init_fit_state, make_eval_loss, make_train_step

    devices, batch, steps, layers, impl, dropout = (
        int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
        tuple(int(u) for u in sys.argv[4].split(",")), sys.argv[5], float(sys.argv[6]))
    assert jax.device_count() == devices, jax.devices()
    K, lr = 3, 1e-2
    config = jlstm.ModelConfig(input_size=2, layer_sizes=layers, output_size=1,
                               implementation=impl, dropout=dropout)
    optimizer = optax.adam(lr)
    step = make_train_step(config, optimizer)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(K, batch, steps, 2)).astype(np.float32)
    ys = rng.normal(size=(K, batch, 1)).astype(np.float32)
    ws = np.ones((K, batch), np.float32)
    ws[:, -1] = 0.5                       # weights other than 1 are honoured too

    ref = init_fit_state(config, optimizer, 0).train
    ref_losses = []
    for k in range(K):
        ref, loss = step(ref, xs[k], ys[k], ws[k])
        ref_losses.append(float(loss))

    traces = []

    def counted(*args):
        traces.append(1)
        return step(*args)

    mesh = parallel.data_mesh()
    run = parallel.data_parallel(counted, mesh)
    state = parallel.replicate(init_fit_state(config, optimizer, 0).train, mesh)
    losses = []
    for k in range(K):
        state, loss = run(state, xs[k], ys[k], ws[k])   # host rows: padded, sharded
        losses.append(float(loss))
    leaf = jax.tree.leaves(state.params)[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == devices
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=K * lr * 1e-3)
    assert int(state.step) == K
    assert len(traces) == 1, "the sharded step was traced again"
    evaluate = make_eval_loss(config)
    total, count = parallel.data_parallel_eval(evaluate, mesh)(state.params, xs[0], ys[0], ws[0])
    ref_total, ref_count = evaluate(parallel.local_copy(state.params), xs[0], ys[0], ws[0])
    np.testing.assert_allclose([float(total), float(count)], [ref_total, ref_count], rtol=1e-5)
    text = run.jitted.lower(state, *parallel.shard_batch(
        parallel.pad_batch(xs[0], ys[0], ws[0], devices), mesh)).compile().as_text()
    if devices > 1:
        assert "all-reduce" in text, "no gradient all-reduce in the program"
    print("ok")
    """
)


def _run(devices: int, *args: str, timeout: float = 150) -> None:
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    env.pop("JAX_NUM_CPU_DEVICES", None)
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(devices), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


@pytest.mark.parametrize("devices", [2, 4])
def test_data_parallel_steps_equal_single_device_steps(devices):
    """An odd batch (13 rows: padded to a multiple of the devices with weight-0 rows)."""
    _run(devices, "13", "5", "8,4", "auto", "0.0")


def test_data_parallel_with_dropout_draws_the_same_masks():
    """Dropout keys are replicated and JAX's partitionable threefry makes the masks
    independent of the sharding (batch divisible, so no padding changes the shapes)."""
    _run(2, "12", "5", "8", "fused_vjp", "0.25")


def test_data_parallel_with_auto_kernels_at_a_multicore_shape():
    """B=128, T=16 on 2 devices: ``auto`` would pick ``multicore`` unsharded; inside the
    sharded step (traced under the mesh) it steps aside and the result is the same."""
    _run(2, "128", "16", "8", "auto", "0.0")


# -- in-process helpers -------------------------------------------------------------------


def test_pad_batch_adds_weight_zero_rows():
    x = np.arange(5 * 2 * 1, dtype=np.float32).reshape(5, 2, 1)
    y = np.ones((5, 1), np.float32)
    px, py, pw = parallel.pad_batch(x, y, None, 4)
    assert px.shape == (8, 2, 1) and py.shape == (8, 1)
    np.testing.assert_array_equal(pw, [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(px[:5], x)
    same = parallel.pad_batch(x[:4], y[:4], np.full(4, 0.5), 2)
    assert same[0].shape[0] == 4 and same[2].dtype == np.float32


def test_padded_batch_size_local_slice_and_local_copy():
    mesh = parallel.data_mesh()
    size = mesh.devices.size
    assert parallel.padded_batch_size(1, mesh) == size
    assert parallel.padded_batch_size(2 * size, mesh) == 2 * size
    assert parallel.local_slice(2 * size, mesh) == slice(0, 2 * size)  # one process: all
    if size > 1:  # one device divides every batch
        with pytest.raises(ValueError, match="padded_batch_size"):
            parallel.local_slice(2 * size + 1, mesh)
    tree = {"w": np.ones(3, np.float32), "key": jax.random.key(0)}
    local = parallel.local_copy(parallel.replicate(tree, mesh))
    np.testing.assert_array_equal(local["w"], tree["w"])
    assert jax.random.key_data(local["key"]).shape == jax.random.key_data(tree["key"]).shape


def test_initialize_rejects_partial_arguments():
    with pytest.raises(ValueError, match="together"):
        parallel.initialize("localhost:1234", None, 0)
    with pytest.raises(ValueError, match="host:port"):
        parallel.initialize("localhost", 2, 0)
    with pytest.raises(ValueError, match="process_id"):
        parallel.initialize("localhost:1234", 2, 2)


def test_use_devices_after_jax_started():
    jax.devices()  # JAX has started
    count = len(jax.local_devices(backend="cpu"))
    assert parallel.use_devices(count) == count  # the count in effect: a no-op
    with pytest.raises(RuntimeError, match="before any JAX operation"):
        parallel.use_devices(count + 1)
    with pytest.raises(ValueError):
        parallel.use_devices(0)


def test_data_mesh_and_summary():
    mesh = parallel.data_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count()
    with pytest.raises(ValueError, match="use_devices"):
        parallel.data_mesh(jax.device_count() + 1)
    summary = parallel.device_summary()
    assert summary["device_count"] == jax.device_count()
    assert summary["process_count"] == 1 and summary["process_index"] == 0
    x = parallel.shard_batch(np.zeros((3, 2), np.float32), parallel.data_mesh(1))
    assert x.shape == (3, 2) and x.sharding.spec == PartitionSpec("data")
