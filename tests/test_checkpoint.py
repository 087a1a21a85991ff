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


def test_recover_is_the_one_recovery_path(tmp_path, trained):
    """The crash window: old checkpoint aside, a partial new one beside it, none at `path`."""
    path = tmp_path / "checkpoint"
    assert ckpt_mod.recover(path) is False  # nothing there, nothing to recover
    _save(path, trained)
    assert ckpt_mod.recover(path) is True  # a whole checkpoint: nothing to do
    os.replace(path, tmp_path / ".checkpoint.old-k2j4")
    partial = tmp_path / ".checkpoint.tmp-9x7q"
    partial.mkdir()
    (partial / "arrays.npz").write_bytes(b"PK\x03\x04 half a zip")
    assert not os.path.exists(path)
    assert ckpt_mod.recover(path) is True
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]  # leftovers removed
    assert load_checkpoint(path).state.epoch == trained.epoch


def test_recover_never_restores_or_deletes_an_incomplete_copy(tmp_path, trained):
    path = tmp_path / "checkpoint"
    _save(path, trained)
    aside = tmp_path / ".checkpoint.old-k2j4"
    os.replace(path, aside)
    (aside / "arrays.npz").write_bytes(b"truncated")  # checksum no longer matches
    assert ckpt_mod.recover(path) is False
    assert not os.path.exists(path) and aside.is_dir()  # kept for a human to inspect
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(path)


def test_symlinked_checkpoint_directory_is_refused_before_any_write(tmp_path, trained):
    real = tmp_path / "elsewhere"
    _save(real, trained)
    before = {p: (real / p).read_bytes() for p in os.listdir(real)}
    link = tmp_path / "run" / "checkpoint"
    link.parent.mkdir()
    link.symlink_to(real)
    for call in (lambda: ckpt_mod.recover(link), lambda: _save(link, trained._replace(epoch=9))):
        with pytest.raises(CheckpointError, match=r"is a symbolic link.*remove the link"):
            call()
    assert link.is_symlink() and {p: (real / p).read_bytes() for p in os.listdir(real)} == before
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "run"]
    assert os.listdir(link.parent) == ["checkpoint"]
    # Reading through a link is harmless and allowed (never repaired, never written).
    assert load_checkpoint(link).state.epoch == trained.epoch


def _edit(path, edit, *, blob=None):
    """Rewrite config.json with ``edit(config)`` applied (and the checksum of ``blob``)."""
    config = json.loads((path / "config.json").read_text())
    edit(config)
    if blob is not None:
        (path / "arrays.npz").write_bytes(blob)
        config["sha256"] = hashlib.sha256(blob).hexdigest()
    (path / "config.json").write_text(json.dumps(config))


def _set(field, value):
    def edit(config):
        *parents, last = field.split(".")
        node = config
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return edit


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "LSTM", "'config.model' is 'LSTM'"),
        ("model.layer_sizes", "eight", "'config.model' is invalid"),
        ("model.input_size", KeyError, r"'params.layers\[0\].kernel' is float32"),
        ("train.epochs", "6", "'config.train' is invalid"),
        ("state", KeyError, "'config.state' is missing"),
        ("state.epoch", "3", "'config.state.epoch' is '3'"),
        ("state.epoch", -1, "'config.state.epoch' is -1"),
        ("state.best_loss", "low", "'config.state.best_loss'"),
        ("state.stopped", 1, "'config.state.stopped' is 1"),
        ("state.history", [[0.1]], r"'config.state.history\[0\]'"),
        ("state.key_impl", 7, "'config.state.key_impl'"),
        ("state.key_impl", "no_such_prng", "'config.state.key_impl'"),
        ("meta", ["x"], "'config.meta'"),
        ("arrays", KeyError, "'config.arrays' is missing"),
        ("arrays.train/step", "int", r"config.arrays\['train/step'\]"),
        ("arrays.train/step.dtype", "float99", r"config.arrays\['train/step'\].dtype"),
        ("arrays.train/step.dtype", 4, r"config.arrays\['train/step'\].dtype"),
        ("arrays.train/step.dtype", "float32", "'train/step' is int32"),
        ("arrays.train/step.shape", "()", r"config.arrays\['train/step'\].shape"),
        ("arrays.train/step.shape", [2], "'train/step' is int32"),
    ],
)
def test_hand_edited_configs_fail_naming_the_field(tmp_path, trained, field, value, message):
    path = tmp_path / "ckpt"
    _save(path, trained)

    def edit(config):
        if field.startswith("arrays.train/step"):  # the dotted name has a slash, not a dot
            entry = config["arrays"]
            rest = field[len("arrays.") :].split(".")
            if len(rest) == 1:
                entry[rest[0]] = value
            else:
                entry[rest[0]][rest[1]] = value
        else:
            _set(field, value)(config)

    _edit(path, edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_hand_crafted_arrays_with_a_recomputed_checksum_fail_clearly(tmp_path, trained):
    path = tmp_path / "ckpt"
    _save(path, trained)
    with np.load(path / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["train/step"] = np.zeros((2,), np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _edit(path, lambda c: None, blob=buffer.getvalue())
    with pytest.raises(CheckpointError, match="'train/step' is float32\\[2\\]"):
        load_checkpoint(path)


def test_require_checks_caller_meta_fields(tmp_path, trained):
    path = tmp_path / "ckpt"
    _save(path, trained, meta={"pipeline": {"features": {"steps": 4}}, "season": "12"})
    meta = load_checkpoint(path).meta
    assert ckpt_mod.require(meta, "pipeline.features", dict) == {"steps": 4}
    assert ckpt_mod.require(meta, "pipeline.features.steps", int) == 4
    with pytest.raises(CheckpointError, match=r"'meta\.season' is '12', expected an integer"):
        ckpt_mod.require(meta, "season", int)
    with pytest.raises(CheckpointError, match=r"'meta\.pipeline\.scaler' is missing"):
        ckpt_mod.require(meta, "pipeline.scaler", dict)
    with pytest.raises(CheckpointError, match=r"'meta\.pipeline\.features\.steps' is an integer, "):
        ckpt_mod.require(meta, "pipeline.features.steps.x", int)
    with pytest.raises(CheckpointError, match="expected a number or null"):
        ckpt_mod.require({"loss": float("nan")}, "loss", (float, type(None)))
    assert issubclass(CheckpointError, ValueError)


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
