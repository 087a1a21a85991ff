"""Checkpoints: a directory with the config as JSON and every array in one ``.npz``.

Layout of a checkpoint directory::

    config.json   format/version, ModelConfig, TrainConfig, loop state (epoch,
                  early stopping, history), caller metadata (data source, scaler
                  settings), the manifest of arrays and the SHA-256 of arrays.npz
    arrays.npz    params/..., opt_state/..., best_params/..., train/step,
                  train/key (PRNG key data), plus caller arrays (scalers)

No pickle anywhere: arrays are loaded with ``allow_pickle=False`` into a
template built from the stored config, so a file whose names, shapes or dtypes
disagree with its config is refused with a ``CheckpointError`` naming the
difference. A checkpoint is written into a temporary sibling directory and
moved into place with ``os.replace``: a crash at any moment leaves either the
old checkpoint or the new one, never a mix (if it strikes between moving the
old one aside and the new one in, ``load_checkpoint`` finds the old one).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .model import ModelConfig, init_params
from .train import FitState, TrainConfig, TrainState, make_optimizer

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "arrays_to_tree",
    "load_checkpoint",
    "save_checkpoint",
    "tree_to_arrays",
]

FORMAT = "jlstm-checkpoint"
VERSION = 1
CONFIG_FILE = "config.json"
ARRAYS_FILE = "arrays.npz"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not match its config."""


class Checkpoint(NamedTuple):
    """A loaded checkpoint.

    Attributes:
        model_config: the ``ModelConfig``.
        train_config: the ``TrainConfig``.
        state: the ``FitState`` (params, optimizer state, step, key, epoch,
            early stopping, history), ready for ``fit(..., state=...)``.
        meta: the caller's JSON metadata (``extra_meta`` at save time).
        arrays: the caller's arrays (``extra_arrays`` at save time), ``name -> ndarray``.
    """

    model_config: ModelConfig
    train_config: TrainConfig
    state: FitState
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]


# -- pytrees <-> flat arrays ---------------------------------------------------------------


def _encode(array) -> tuple[np.ndarray, str]:
    """An array numpy can store without pickle, and the dtype name to restore it."""
    array = np.asarray(array)
    name = str(array.dtype)
    if array.dtype.kind not in "biuf":  # bfloat16 and other ml_dtypes: store the raw bits
        array = array.view(f"uint{8 * array.dtype.itemsize}")
    return array, name


def _decode(array: np.ndarray, dtype: str) -> np.ndarray:
    if str(array.dtype) == dtype:
        return array
    return array.view(jnp.dtype(dtype))


def tree_to_arrays(prefix: str, tree) -> dict[str, np.ndarray]:
    """Flatten a pytree to ``{prefix + keypath: ndarray}``, keypaths from ``keystr``."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def arrays_to_tree(prefix: str, arrays: dict[str, np.ndarray], template):
    """Rebuild a pytree shaped like ``template`` from ``tree_to_arrays`` output.

    ``template`` may hold arrays or ``jax.ShapeDtypeStruct``s.

    Raises:
        CheckpointError: a leaf is missing or has another shape or dtype.
    """
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, want in paths:
        name = prefix + jax.tree_util.keystr(path)
        if name not in arrays:
            raise CheckpointError(f"the checkpoint has no array {name!r} that its config needs")
        got = arrays[name]
        if got.shape != tuple(want.shape) or got.dtype != want.dtype:
            raise CheckpointError(
                f"array {name!r} is {got.dtype}{list(got.shape)} in the checkpoint but the "
                f"config needs {want.dtype}{list(want.shape)}"
            )
        leaves.append(jnp.asarray(got))
    return jax.tree_util.tree_unflatten(treedef, leaves)


# -- the directory on disk -------------------------------------------------------------------


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_dir_atomic(path: str, write) -> None:
    """Fill a temporary sibling of ``path`` with ``write(tmpdir)``, then move it to ``path``."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
        write(tmp)
        _fsync_dir(tmp)
        if os.path.exists(path):
            # os.replace cannot move a directory onto a non-empty one: move the old one aside.
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(path):
            os.replace(old, path)
            old = None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    path: str | os.PathLike,
    model_config: ModelConfig,
    train_config: TrainConfig,
    state: FitState,
    *,
    extra_meta: dict[str, Any] | None = None,
    extra_arrays: dict[str, np.ndarray] | None = None,
) -> None:
    """Write a checkpoint directory atomically (see the module docstring).

    Args:
        path: the checkpoint directory (replaced if it exists).
        model_config, train_config: the run's configs (stored as JSON).
        state: the ``FitState`` to store.
        extra_meta: JSON-able caller metadata (e.g. the data source and features).
        extra_arrays: caller arrays, ``name -> ndarray`` (e.g. fitted scalers).
    """
    path = os.fspath(path)
    train = state.train
    arrays = {
        **tree_to_arrays("params", train.params),
        **tree_to_arrays("opt_state", train.opt_state),
        **tree_to_arrays("best_params", state.best_params),
        "train/step": np.asarray(train.step),
        "train/key": np.asarray(jax.random.key_data(train.key)),
    }
    for name, value in (extra_arrays or {}).items():
        arrays[f"extra/{name}"] = np.asarray(value)
    stored, manifest = {}, {}
    for name, value in arrays.items():
        stored[name], dtype = _encode(value)
        manifest[name] = {"shape": list(value.shape), "dtype": dtype}
    buffer = io.BytesIO()
    np.savez(buffer, **stored)
    blob = buffer.getvalue()
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        "state": {
            "epoch": state.epoch,
            "best_loss": None if math.isinf(state.best_loss) else state.best_loss,
            "best_epoch": state.best_epoch,
            "bad_epochs": state.bad_epochs,
            "stopped": state.stopped,
            "key_impl": str(jax.random.key_impl(train.key)),
            "history": state.history,
        },
        "meta": extra_meta or {},
        "arrays": manifest,
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    text = json.dumps(config, indent=1, allow_nan=False)

    def write(tmp: str) -> None:
        _write_file(os.path.join(tmp, ARRAYS_FILE), blob)
        _write_file(os.path.join(tmp, CONFIG_FILE), text.encode("utf-8"))

    _write_dir_atomic(path, write)


def _locate(path: str) -> str:
    if os.path.isdir(path):
        return path
    # A crash between moving the old checkpoint aside and the new one in.
    parent = os.path.dirname(os.path.abspath(path))
    aside = sorted(
        glob.glob(os.path.join(parent, f".{os.path.basename(os.path.abspath(path))}.old-*")),
        key=os.path.getmtime,
    )
    aside = [p for p in aside if os.path.isfile(os.path.join(p, CONFIG_FILE))]
    if aside:
        return aside[-1]
    raise CheckpointError(f"no checkpoint at {path!r} (expected a directory with {CONFIG_FILE})")


def load_checkpoint(
    path: str | os.PathLike, *, optimizer: optax.GradientTransformation | None = None
) -> Checkpoint:
    """Load and verify a checkpoint directory written by ``save_checkpoint``.

    Args:
        path: the checkpoint directory.
        optimizer: the optax transformation whose state was saved; ``None`` builds
            it from the stored ``TrainConfig`` (only its state's structure matters).

    Raises:
        CheckpointError: missing or corrupt files, a checksum mismatch, an unknown
            format, or arrays that do not match the stored config.
    """
    path = _locate(os.fspath(path))
    config_path = os.path.join(path, CONFIG_FILE)
    arrays_path = os.path.join(path, ARRAYS_FILE)
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path!r} is not a checkpoint: it has no {CONFIG_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_path!r} is corrupt (not valid JSON: {err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path!r} is not a jlstm checkpoint config")
    if config.get("version") != VERSION:
        raise CheckpointError(
            f"{path!r} has checkpoint format version {config.get('version')!r}; this jlstm "
            f"reads version {VERSION}"
        )
    try:
        with open(arrays_path, "rb") as f:
            blob = f.read()
    except OSError as err:
        raise CheckpointError(
            f"{path!r} is incomplete: cannot read {ARRAYS_FILE} ({err})"
        ) from None
    if hashlib.sha256(blob).hexdigest() != config.get("sha256"):
        raise CheckpointError(
            f"{arrays_path!r} is corrupt: its checksum does not match {CONFIG_FILE}"
        )
    try:
        model_config = ModelConfig.from_dict(config["model"])
        train_config = TrainConfig.from_dict(config["train"])
        saved = config["state"]
        manifest = config["arrays"]

        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            stored = {name: npz[name] for name in npz.files}
    except (KeyError, TypeError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path!r} is corrupt or from another version: {err}") from None
    if set(stored) != set(manifest):
        raise CheckpointError(f"{path!r}: the arrays in {ARRAYS_FILE} do not match the manifest")
    arrays = {name: _decode(stored[name], manifest[name]["dtype"]) for name in stored}

    if optimizer is None:
        optimizer = make_optimizer(train_config, 1)
    params_template = jax.eval_shape(lambda k: init_params(k, model_config), jax.random.key(0))
    opt_template = jax.eval_shape(optimizer.init, params_template)
    params = arrays_to_tree("params", arrays, params_template)
    best = arrays_to_tree("best_params", arrays, params_template)
    opt_state = arrays_to_tree("opt_state", arrays, opt_template)
    try:
        key = jax.random.wrap_key_data(arrays["train/key"], impl=saved["key_impl"])
        step = jnp.asarray(arrays["train/step"], jnp.int32)
        best_loss = saved["best_loss"]
        state = FitState(
            TrainState(params, opt_state, step, key),
            int(saved["epoch"]),
            best,
            math.inf if best_loss is None else float(best_loss),
            int(saved["best_epoch"]),
            int(saved["bad_epochs"]),
            bool(saved["stopped"]),
            tuple(saved["history"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path!r} has an invalid training state: {err}") from None
    extra = {k[len("extra/") :]: v for k, v in arrays.items() if k.startswith("extra/")}
    return Checkpoint(model_config, train_config, state, config.get("meta", {}), extra)
