"""Scale-out wiring: ``fit(mesh=...)``, ``fit(ensemble=...)``, their checkpoints and the CLI flags.

Tolerances as derived in ``test_parallel.py``: a mesh changes only the order of float
additions in the gradient, so parameters agree to ``K * lr * 1e-3`` after ``K`` Adam
steps; a vmapped member batches its products differently (the same bound).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jlstm import ModelConfig, parallel
from jlstm.checkpoint import load_checkpoint, save_checkpoint
from jlstm.cli import main
from jlstm.train import TrainConfig, ensemble_size, fit

WORKER = textwrap.dedent(
    """
    import jax, numpy as np, jlstm
    from jlstm import parallel, train
    from jlstm.train import TrainConfig, fit

    assert jax.device_count() == 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6, 1)).astype(np.float32)
    y = rng.normal(size=(50, 1)).astype(np.float32)
    config = jlstm.ModelConfig(input_size=1, layer_sizes=(8, 4), output_size=1)
    cfg = TrainConfig(epochs=3, batch_size=7, patience=None)   # 7 rows: padded to 8
    steps = 3 * 8                                              # 3 epochs of 8 batches
    tol = steps * cfg.learning_rate * 1e-3
    mesh = parallel.data_mesh()
    one = fit(config, (x, y), (x[:9], y[:9]), cfg)
    two = fit(config, (x, y), (x[:9], y[:9]), cfg, mesh=mesh)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(two.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=tol)
    np.testing.assert_allclose([h["loss"] for h in one.history],
                               [h["loss"] for h in two.history], rtol=1e-5)
    assert two.params.head.kernel.sharding.is_fully_addressable

    # The epoch program really splits the batch: one all-reduce family, no gathered
    # activations of the whole batch (all-gathers of the batch axis would show here).
    shape = train.TrainConfig(epochs=1, batch_size=7, patience=None)
    layout = train._Layout(8, None, mesh, parallel.replicated_sharding(mesh))
    _, run_epoch, _ = train._programs(config, shape, 8, 7, None, None, layout)
    optimizer = train.make_optimizer(shape, 8)
    state = parallel.replicate(train.init_fit_state(config, optimizer, 0).train, mesh)
    data = parallel.replicate((x, y, train.shuffle_key(0)), mesh)
    with jax.set_mesh(mesh):  # as fit traces it: the layers see a partitioned program
        text = run_epoch.jitted.lower(state, *data, 0).compile().as_text()
    assert "all-reduce" in text
    assert "all-gather" not in text  # no kernel merged (and so gathered) the batch axis

    # An ensemble over the mesh: members split, member 1 is the run with seed 1.
    ens = fit(config, (x, y), (x[:9], y[:9]), cfg, mesh=mesh, ensemble=4)
    seed1 = fit(config, (x, y), (x[:9], y[:9]), TrainConfig(epochs=3, batch_size=7,
                patience=None, seed=1))
    for a, b in zip(jax.tree.leaves(seed1.params), jax.tree.leaves(ens.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[1], rtol=0, atol=tol)

    assert parallel.auto_mesh(16, 100) is None               # 8 x 100 a device: one device
    assert parallel.auto_mesh(256, 100).size == 2            # the seed B = 256: both cores
    assert parallel.auto_mesh(128, 4) is None                # short windows: one device
    assert parallel.auto_mesh(16, 4, devices=2).size == 2    # --devices 2 asks for it
    assert parallel.auto_mesh(16, 4, ensemble=3) is None     # 3 members do not split on 2
    assert parallel.auto_mesh(16, 4, ensemble=8).size == 2
    print("ok")
    """
)


def test_fit_on_a_two_device_mesh_equals_one_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "2"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-c", WORKER], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "ok", out.stdout


CONFIG = ModelConfig(input_size=1, layer_sizes=(8,), output_size=1)
RNG = np.random.default_rng(1)
X = RNG.normal(size=(30, 5, 1)).astype(np.float32)
Y = RNG.normal(size=(30, 1)).astype(np.float32)
TINY = TrainConfig(epochs=4, batch_size=8, patience=None)


def _close(a, b, atol):
    for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=0, atol=atol)


def test_fit_ensemble_member_i_is_fit_with_seed_plus_i():
    ens = fit(CONFIG, (X, Y), (X[:6], Y[:6]), TINY, ensemble=3)
    assert ensemble_size(ens) == 3
    assert ens.params.head.kernel.shape == (3, 8, 1)
    tol = 4 * 4 * TINY.learning_rate * 1e-3
    for i in range(3):
        single = fit(CONFIG, (X, Y), (X[:6], Y[:6]), TrainConfig(**{**TINY.to_dict(), "seed": i}))
        # The last weights: the best epoch follows the members' mean validation loss.
        _close(single.train.params, jax.tree.map(lambda a, i=i: a[i], ens.train.params), tol)


def test_ensemble_checkpoint_round_trips_and_resumes(tmp_path):
    cfg = TrainConfig(**{**TINY.to_dict(), "epochs": 2})
    half = fit(CONFIG, (X, Y), None, cfg, ensemble=2)
    save_checkpoint(tmp_path / "ck", CONFIG, cfg, half)
    loaded = load_checkpoint(tmp_path / "ck")
    assert ensemble_size(loaded.state) == 2
    for a, b in zip(jax.tree.leaves(loaded.state), jax.tree.leaves(half), strict=True):
        if hasattr(a, "dtype") and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    whole = fit(CONFIG, (X, Y), None, TINY, ensemble=2)
    resumed = fit(CONFIG, (X, Y), None, TINY, ensemble=2, state=loaded.state)
    _close(whole.params, resumed.params, 0)  # bit for bit
    with pytest.raises(ValueError, match="ensemble size"):
        fit(CONFIG, (X, Y), None, TINY, state=loaded.state)


FAST = ["--layers", "8", "--epochs", "3", "--quiet", "--no-plot"]


def test_cli_ensemble_writes_mean_members_spread_and_predicts_spread(tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["train", "--out", str(out), "--ensemble", "3", *FAST]) == 0
    report = json.loads((out / "metrics.json").read_text())
    members = report["members"]
    assert members["seeds"] == [0, 1, 2] and len(members["test"]) == 3
    assert set(members["spread"]["test"]) == set(report["test"]["model"])
    assert report["devices"]["process_count"] == 1
    assert {"device_kind", "device_count"} <= set(report["devices"])
    capsys.readouterr()
    assert main(["predict", str(out), "-n", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "date,Passengers,Passengers_spread" and len(lines) == 4
    assert main(["evaluate", str(out)]) == 0
    ckpt = load_checkpoint(out / "checkpoint")
    assert ensemble_size(ckpt.state) == 3


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--devices", "0"], "--devices"),
        (["--ensemble", "0"], "--ensemble"),
        (["--coordinator", "127.0.0.1:1"], "go together"),
    ],
)
def test_cli_scale_flags_are_checked(tmp_path, capsys, argv, match):
    try:
        status = main(["train", "--out", str(tmp_path / "r"), *argv, *FAST])
    except SystemExit as exit:  # argparse's own check of the flag's text
        status = exit.code
    assert status == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_use_devices_is_documented_and_default_mesh_rule():
    assert "use_devices" in parallel.__all__ and "auto_mesh" in parallel.__all__
    assert parallel.MIN_WORK_PER_DEVICE == 2048
