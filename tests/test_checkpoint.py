"""jlstm.checkpoint: exact round trip, atomic replacement, clear errors, exact resume via disk."""

import hashlib
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm
from jlstm import checkpoint as ckpt_mod
from jlstm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from jlstm.train import TrainConfig, fit, init_fit_state, make_optimizer

# The same model and data shapes as tests/test_train.py: one compiled step for both files.
CONFIG = jlstm.ModelConfig(input_size=2, layer_sizes=(8,), output_size=1, dropout=0.2)
TINY = TrainConfig(epochs=6, batch_size=16, learning_rate=1e-2, patience=None)


def _data(n, seed):
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, (n, 1)) + 0.3 * np.arange(4)
    x = np.stack([np.sin(phase), np.cos(phase)], -1).astype(np.float32)
    return x, np.sin(phase[:, -1:] + 0.3).astype(np.float32)


TRAIN, VAL = _data(40, 0), _data(12, 1)


def _raw(tree):
    def leaf(a):
        return jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a

    return [np.asarray(leaf(a)) for a in jax.tree.leaves(tree)]


def _same(a, b):
    ra, rb = _raw(a), _raw(b)
    assert len(ra) == len(rb)
    for u, v in zip(ra, rb, strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v)


@pytest.fixture(scope="module")
def trained():
    return fit(CONFIG, TRAIN, VAL, TrainConfig(**{**TINY.to_dict(), "epochs": 2}), progress=False)


def _save(path, state, **kw):
    save_checkpoint(
        path,
        CONFIG,
        TINY,
        state,
        extra_meta=kw.get("meta", {"source": "test"}),
        extra_arrays=kw.get("arrays", {"scaler/shift": np.array([1.5, -2.0])}),
    )


def test_round_trip_is_exact(tmp_path, trained):
    path = tmp_path / "ckpt"
    _save(path, trained)
    loaded = load_checkpoint(path)
    assert loaded.model_config == CONFIG and loaded.train_config == TINY
    _same(loaded.state.train, trained.train)
    _same(loaded.state.best_params, trained.best_params)
    for field in ("epoch", "best_loss", "best_epoch", "bad_epochs", "stopped", "history"):
        assert getattr(loaded.state, field) == getattr(trained, field), field
    assert loaded.meta == {"source": "test"}
    np.testing.assert_array_equal(loaded.arrays["scaler/shift"], [1.5, -2.0])
    assert sorted(os.listdir(path)) == ["arrays.npz", "config.json"]
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        assert "params.layers[0].kernel" in npz.files and "train/key" in npz.files


def test_bfloat16_params_round_trip(tmp_path):
    config = jlstm.ModelConfig(input_size=2, layer_sizes=(4,), param_dtype="bfloat16")
    state = init_fit_state(config, make_optimizer(TINY, 1), 3)
    save_checkpoint(tmp_path / "bf16", config, TINY, state)
    loaded = load_checkpoint(tmp_path / "bf16")
    assert loaded.state.train.params.head.kernel.dtype == jnp.bfloat16
    _same(loaded.state.train, state.train)


def test_replacing_is_atomic_and_leaves_no_temporaries(tmp_path, trained, monkeypatch):
    path = tmp_path / "ckpt"
    _save(path, trained)
    first = (path / "arrays.npz").read_bytes()
    # A crash while writing the new checkpoint: the old one stays, whole and loadable.
    real = ckpt_mod._write_file

    def crash(target, data):
        if target.endswith("config.json"):
            raise OSError("disk full")
        real(target, data)

    monkeypatch.setattr(ckpt_mod, "_write_file", crash)
    state = trained._replace(epoch=99)
    with pytest.raises(OSError, match="disk full"):
        _save(path, state)
    monkeypatch.undo()
    assert (path / "arrays.npz").read_bytes() == first
    assert load_checkpoint(path).state.epoch == trained.epoch
    assert os.listdir(tmp_path) == ["ckpt"]
    _save(path, state)
    assert load_checkpoint(path).state.epoch == 99
    assert os.listdir(tmp_path) == ["ckpt"]


def test_crash_between_the_two_renames_finds_the_old_checkpoint(tmp_path, trained):
    path = tmp_path / "ckpt"
    _save(path, trained)
    os.replace(path, tmp_path / ".ckpt.old-abc123")  # the moment before the new one lands
    assert load_checkpoint(path).state.epoch == trained.epoch


def test_corrupt_and_missing_checkpoints_are_refused_clearly(tmp_path, trained):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing")
    path = tmp_path / "ckpt"
    _save(path, trained)
    blob = bytearray((path / "arrays.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (path / "arrays.npz").write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt: its checksum"):
        load_checkpoint(path)
    (path / "arrays.npz").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(path)
    (path / "config.json").write_text('{"format": "jlstm-checkpoint", "vers')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    (path / "config.json").write_text('{"format": "jlstm-checkpoint", "version": 7}')
    with pytest.raises(CheckpointError, match="format version 7"):
        load_checkpoint(path)


def test_mismatched_config_is_refused(tmp_path, trained):
    path = tmp_path / "ckpt"
    _save(path, trained)
    config = json.loads((path / "config.json").read_text())
    config["model"]["layer_sizes"] = [16]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'params.layers\[0\].kernel' is float32\[2, 32\]"):
        load_checkpoint(path)


def test_object_arrays_are_never_unpickled(tmp_path, trained):
    path = tmp_path / "ckpt"
    _save(path, trained)
    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([{"a": 1}], dtype=object))
    blob = buffer.getvalue()
    (path / "arrays.npz").write_bytes(blob)
    config = json.loads((path / "config.json").read_text())
    config["sha256"] = hashlib.sha256(blob).hexdigest()
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="corrupt or from another version"):
        load_checkpoint(path)


def test_resume_through_disk_is_bit_identical(tmp_path):
    whole = fit(CONFIG, TRAIN, VAL, TINY, progress=False)

    def save_at_3(state):
        if state.epoch == 3:
            _save(tmp_path / "mid", state)

    fit(CONFIG, TRAIN, VAL, TINY, on_epoch_end=save_at_3, progress=False)
    loaded = load_checkpoint(tmp_path / "mid")
    assert loaded.state.epoch == 3
    resumed = fit(CONFIG, TRAIN, VAL, loaded.train_config, state=loaded.state, progress=False)
    _same(resumed.train, whole.train)
    _same(resumed.params, whole.params)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in whole.history]
