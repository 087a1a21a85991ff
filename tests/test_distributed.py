"""Two processes on localhost train as one: ``jax.distributed`` + gloo, each feeding its half.

Each process has one CPU device; the global batch is split between them by
``jlstm.parallel.global_batch`` and XLA all-reduces the gradients through gloo. Every
process also runs the whole global batch on its own device without sharding (a
single-process run) and checks the two agree (tolerance derived in
``test_parallel.py``: ``K * lr * 1e-3`` on the parameters). Every wait is bounded, so
a hang fails the test instead of blocking CI.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

WORKER = textwrap.dedent(
    """
    import sys
    import jax
    from jlstm import parallel

    port, pid = sys.argv[1], int(sys.argv[2])
    parallel.initialize(f"127.0.0.1:{port}", 2, pid, timeout_s=60)

    import jax.numpy as jnp, numpy as np, optax, jlstm
    from jlstm.train import init_fit_state, make_train_step

    summary = parallel.device_summary()
    assert summary["process_count"] == 2 and summary["process_index"] == pid, summary
    assert summary["device_count"] == 2 and summary["local_device_count"] == 1, summary
    K, lr, batch = 3, 1e-2, 10
    config = jlstm.ModelConfig(input_size=2, layer_sizes=(8, 4), output_size=1)
    optimizer = optax.adam(lr)
    step = make_train_step(config, optimizer)
    rng = np.random.default_rng(0)                  # the same global data everywhere
    xs = rng.normal(size=(K, batch, 5, 2)).astype(np.float32)
    ys = rng.normal(size=(K, batch, 1)).astype(np.float32)
    ws = np.ones((K, batch), np.float32)

    ref = init_fit_state(config, optimizer, 0).train   # one device, the whole batch
    ref_losses = []
    for k in range(K):
        ref, loss = step(ref, xs[k], ys[k], ws[k])
        ref_losses.append(float(loss))

    mesh = parallel.data_mesh()
    run = parallel.data_parallel(step, mesh)
    state = parallel.replicate(init_fit_state(config, optimizer, 0).train, mesh)
    mine = parallel.local_slice(batch, mesh)                 # this process's rows
    assert mine == slice(pid * batch // 2, (pid + 1) * batch // 2), mine
    losses = []
    for k in range(K):
        state, loss = run(state, xs[k, mine], ys[k, mine], ws[k, mine])
        losses.append(float(loss))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params), strict=True):
        local = np.asarray(a.addressable_data(0))
        np.testing.assert_allclose(local, np.asarray(b), rtol=0, atol=K * lr * 1e-3)
    local = parallel.local_copy(state)               # for evaluation, checkpoints
    assert local.params.head.kernel.sharding.is_fully_addressable
    jax.random.fold_in(local.key, 1)                 # a usable local key
    print("ok", pid, flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_as_one():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"}
    env.pop("XLA_FLAGS", None)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, port, str(pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for pid in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=150))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for pid, (proc, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        lines = out.strip().splitlines()  # gloo prints its own lines too
        assert proc.returncode == 0 and lines[-1:] == [f"ok {pid}"], err[-3000:]


MULTI_DEVICE_WORKER = textwrap.dedent(
    """
    import sys
    from jlstm import parallel

    port, pid = sys.argv[1], int(sys.argv[2])
    parallel.use_devices(2)
    parallel.initialize(f"127.0.0.1:{port}", 2, pid, timeout_s=60)
    import jax, numpy as np, jlstm
    from jlstm.train import TrainConfig, fit

    assert jax.device_count() == 4 and jax.local_device_count() == 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16, 1)).astype(np.float32)
    y = rng.normal(size=(512, 1)).astype(np.float32)
    config = jlstm.ModelConfig(input_size=1, layer_sizes=(8,), output_size=1)
    cfg = TrainConfig(epochs=2, batch_size=256, patience=None)   # "auto" alone: multicore
    state = fit(config, (x, y), (x[:256], y[:256]), cfg, mesh=parallel.data_mesh())
    print("loss", repr(state.history[-1]["loss"]), flush=True)
    """
)


def test_two_processes_with_two_devices_each_fit_as_one():
    """2 processes x 2 CPU devices, at a shape where ``auto`` would split each layer over
    the local devices: inside fit's partitioned program it steps aside, and the losses
    agree across processes and with one device."""
    from jlstm.train import TrainConfig, fit

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MULTI_DEVICE_WORKER, port, str(pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for pid in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=150))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    losses = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        losses.append(float(out.strip().splitlines()[-1].split()[1]))
    assert losses[0] == losses[1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16, 1)).astype(np.float32)
    y = rng.normal(size=(512, 1)).astype(np.float32)
    import jlstm

    config = jlstm.ModelConfig(input_size=1, layer_sizes=(8,), output_size=1)
    one = fit(
        config, (x, y), (x[:256], y[:256]), TrainConfig(epochs=2, batch_size=256, patience=None)
    )
    np.testing.assert_allclose(losses[0], one.history[-1]["loss"], rtol=1e-5)


# -- the CLI: two `jlstm train` processes write one run --------------------------------------

CLI_FAST = ["--layers", "8", "--epochs", "3", "--batch-size", "8", "--quiet", "--no-plot"]


def _cli(argv, env, timeout=150):
    return subprocess.run(
        [sys.executable, "-m", "jlstm.cli", "train", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _two_processes(argv, env, timeout=150):
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "jlstm.cli", "train", *argv, "--devices", "1"),
                *("--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"),
                *("--process-id", str(pid)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for pid in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    return outputs


def _params(run):
    import jax

    from jlstm.checkpoint import load_checkpoint

    return [
        np.asarray(a) for a in jax.tree.leaves(load_checkpoint(run / "checkpoint").state.params)
    ]


def test_cli_two_processes_write_one_run_equal_to_one_process(tmp_path):
    import json

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    out = tmp_path / "two"
    outputs = _two_processes(["--out", str(out), *CLI_FAST], env)
    assert "wrote" in outputs[0][0]
    assert "process 1 of 2: nothing written" in outputs[1][0]
    single = tmp_path / "one"
    result = _cli(["--out", str(single), "--devices", "1", *CLI_FAST], env)
    assert result.returncode == 0, result.stderr[-3000:]

    files = sorted(os.listdir(out))
    assert files == sorted(os.listdir(single))  # one writer: no stray temp dirs, no second lock
    two, one = (json.loads((d / "metrics.json").read_text()) for d in (out, single))
    assert two["devices"]["process_count"] == 2 and two["devices"]["device_count"] == 2
    assert two["devices"]["mesh_devices"] == 2 and one["devices"]["mesh_devices"] == 1
    for metric, value in one["test"]["model"].items():
        assert abs(two["test"]["model"][metric] - value) <= 1e-4 * max(abs(value), 1.0), metric
    for a, b in zip(_params(out), _params(single), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)

    # --resume with the same process count: make the run one stopped at epoch 3 of 6 (the
    # settings live in config.json, outside the arrays' checksum) and let both continue.
    config_path = out / "checkpoint" / "config.json"
    config = json.loads(config_path.read_text())
    config["meta"]["settings"]["epochs"] = config["train"]["epochs"] = 6
    config["meta"]["finished"] = False
    config_path.write_text(json.dumps(config))
    _two_processes(["--out", str(out), "--resume", "--quiet", "--no-plot"], env)
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["epochs"] == 6
    assert len(json.loads((out / "history.json").read_text())) == 6
