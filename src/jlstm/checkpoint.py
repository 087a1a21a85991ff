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
difference. Every field of ``config.json`` is checked on load, so a hand-edited
file (even one with a recomputed checksum) fails with a ``CheckpointError`` that
names the field, never a ``TypeError`` or ``KeyError``; ``require`` does the same
for the caller's own ``meta`` fields.

A checkpoint is written into a temporary sibling directory and swapped in
(``fileio.write_dir_atomic``): a crash at any moment leaves either the old
checkpoint or the new one, never a mix. If it strikes between moving the old
one aside and the new one in, ``recover`` (which ``load_checkpoint`` calls)
moves the old one back: the one recovery path, for resuming and evaluating
alike. A checkpoint path that is a symbolic link is refused for writing and
recovery (jlstm never writes through a link).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import fileio
from .model import ModelConfig, init_params
from .train import FitState, TrainConfig, TrainState, ensemble_size, make_optimizer

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "arrays_to_tree",
    "is_complete",
    "load_checkpoint",
    "recover",
    "require",
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
            early stopping, history), ready for ``fit(..., state=...)``; an ensemble's
            (``config.json`` ``state.members``) has stacked ``train`` and ``best_params``
            leaves, for ``fit(..., state=..., ensemble=members)``.
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


def _stored_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype ``_encode`` stores an array of ``dtype`` as."""
    return dtype if dtype.kind in "biuf" else np.dtype(f"uint{8 * dtype.itemsize}")


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


def _write_file(path: str, data: bytes) -> None:
    # ``path`` is inside a fresh private directory from ``mkdtemp``: no link can be there.
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _refuse_link(path: str) -> None:
    if os.path.islink(path):
        raise CheckpointError(
            f"the checkpoint directory {path!r} is a symbolic link (to "
            f"{os.readlink(path)!r}); jlstm replaces checkpoints by renaming, which would "
            "replace the link, not what it points to: move the real directory to that path "
            "(or point --out at the real run directory) and remove the link"
        )


def _verified_blob(path: str) -> bytes | None:
    """``arrays.npz``'s bytes if ``config.json`` names their SHA-256, else ``None``."""
    try:
        with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
            digest = json.load(f).get("sha256")
        with open(os.path.join(path, ARRAYS_FILE), "rb") as f:
            blob = f.read()
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return blob if hashlib.sha256(blob).hexdigest() == digest else None


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a whole checkpoint: ``config.json`` (JSON) and ``arrays.npz``
    whose SHA-256 matches the one ``config.json`` records. Reads, never writes."""
    return _verified_blob(os.fspath(path)) is not None


def recover(path: str | os.PathLike) -> bool:
    """Finish a checkpoint write that a crash interrupted; the one recovery path.

    ``save_checkpoint`` moves the old checkpoint to ``.NAME.old-*`` and then the new one
    from ``.NAME.tmp-*`` to ``path``. If ``path`` is missing, the newest complete aside copy
    is moved back (``is_complete``); leftovers are removed once ``path`` is complete. Call it
    before resuming or evaluating a run; ``load_checkpoint`` calls it too.

    Returns:
        True iff a complete checkpoint is at ``path`` afterwards.

    Raises:
        CheckpointError: ``path`` is a symbolic link (named, with the fix).
    """
    path = os.path.abspath(os.fspath(path))
    _refuse_link(path)
    return fileio.recover_dir(path, complete=is_complete)


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

    Raises:
        CheckpointError: ``path`` is a symbolic link.
        OSError: the write failed; the previous checkpoint, if any, is untouched.
    """
    path = os.path.abspath(os.fspath(path))
    _refuse_link(path)
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
            "members": ensemble_size(state),
        },
        "meta": extra_meta or {},
        "arrays": manifest,
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    text = json.dumps(config, indent=1, allow_nan=False)

    def fill(tmp: str) -> None:
        _write_file(os.path.join(tmp, ARRAYS_FILE), blob)
        _write_file(os.path.join(tmp, CONFIG_FILE), text.encode("utf-8"))

    fileio.write_dir_atomic(path, fill)


# -- validation of what was read ---------------------------------------------------------------

_NAMES = {dict: "an object", list: "a list", str: "a string", bool: "true or false"}


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = []
    for t in types:
        if t is int:
            names.append("an integer")
        elif t is float:
            names.append("a number")
        elif t is type(None):
            names.append("null")
        else:
            names.append(_NAMES.get(t, t.__name__))
    return " or ".join(names)


def _is(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    for t in types:
        if t is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        elif t is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, t)
        if ok:
            return True
    return False


def require(tree: dict[str, Any], field: str, types, *, where: str = "meta"):
    """The value at dotted ``field`` of a loaded checkpoint's JSON, checked to be ``types``.

    For the caller's metadata: ``require(ckpt.meta, "pipeline.features", dict)``. ``int``
    means an integer (not a bool), ``float`` a finite number (integers included).

    Raises:
        CheckpointError: naming ``where.field``, if a part is missing or has another type.

    Example::

        season = require(ckpt.meta, "season", int)
    """
    value: Any = tree
    done = where
    for part in field.split("."):
        if not isinstance(value, dict):
            raise CheckpointError(
                f"checkpoint field {done!r} is {_type_name(type(value))}, expected an object "
                f"holding {part!r}; the checkpoint was edited or written by another program"
            )
        done = f"{done}.{part}"
        if part not in value:
            raise CheckpointError(
                f"checkpoint field {done!r} is missing; the checkpoint was edited or written "
                "by another program"
            )
        value = value[part]
    if not _is(value, types):
        raise CheckpointError(
            f"checkpoint field {done!r} is {value!r}, expected {_type_name(types)}; the "
            "checkpoint was edited or written by another program"
        )
    return value


def _count(tree, field: str, where: str = "config") -> int:
    value = require(tree, field, int, where=where)
    if value < 0:
        raise CheckpointError(f"checkpoint field '{where}.{field}' is {value}, expected >= 0")
    return value


def _check_config(config: dict[str, Any]) -> None:
    """Every field of ``config.json`` that jlstm reads, type-checked (names the field)."""
    for name in ("model", "train", "state", "meta", "arrays"):
        require(config, name, dict, where="config")
    require(config, "sha256", str, where="config")
    for name in ("epoch", "best_epoch", "bad_epochs"):
        _count(config, f"state.{name}")
    require(config, "state.best_loss", (float, type(None)), where="config")
    require(config, "state.stopped", bool, where="config")
    require(config, "state.key_impl", str, where="config")
    if config["state"].get("members") is not None:
        members = require(config, "state.members", int, where="config")
        if members < 1:
            raise CheckpointError(
                f"checkpoint field 'config.state.members' is {members}, expected >= 1"
            )
    history = require(config, "state.history", list, where="config")
    for i, row in enumerate(history):
        if not isinstance(row, dict) or not all(
            isinstance(k, str) and _is(v, (float, type(None))) for k, v in row.items()
        ):
            raise CheckpointError(
                f"checkpoint field 'config.state.history[{i}]' is {row!r}, expected an object "
                "of numbers"
            )
    for name, entry in config["arrays"].items():
        field = f"config.arrays[{name!r}]"
        if not isinstance(entry, dict):
            raise CheckpointError(f"checkpoint field {field} is {entry!r}, expected an object")
        shape, dtype = entry.get("shape"), entry.get("dtype")
        if not isinstance(shape, list) or not all(_is(d, int) and d >= 0 for d in shape):
            raise CheckpointError(
                f"checkpoint field {field}.shape is {shape!r}, expected a list of sizes"
            )
        try:
            if not isinstance(dtype, str):
                raise TypeError
            np.dtype(jnp.dtype(dtype))
        except (TypeError, ValueError):
            raise CheckpointError(
                f"checkpoint field {field}.dtype is {dtype!r}, expected a dtype name such as "
                "'float32'"
            ) from None


def _configs(config: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    out = []
    for field, cls in (("model", ModelConfig), ("train", TrainConfig)):
        try:
            out.append(cls.from_dict(config[field]))
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as err:
            raise CheckpointError(f"checkpoint field 'config.{field}' is invalid: {err}") from None
    return out[0], out[1]


def load_checkpoint(
    path: str | os.PathLike, *, optimizer: optax.GradientTransformation | None = None
) -> Checkpoint:
    """Load and verify a checkpoint directory written by ``save_checkpoint``.

    Calls ``recover`` first (a crash in the middle of a save is finished here), unless
    ``path`` is a symbolic link: a linked checkpoint can be read but is never repaired.

    Args:
        path: the checkpoint directory.
        optimizer: the optax transformation whose state was saved; ``None`` builds
            it from the stored ``TrainConfig`` (only its state's structure matters).

    Raises:
        CheckpointError: missing or corrupt files, a checksum mismatch, an unknown
            format, a field of the wrong type (named), or arrays that do not match the
            stored config.
    """
    path = os.fspath(path)
    if not os.path.islink(path):
        recover(path)
    if not os.path.isdir(path):
        raise CheckpointError(
            f"no checkpoint at {path!r} (expected a directory with {CONFIG_FILE})"
        )
    config_path = os.path.join(path, CONFIG_FILE)
    arrays_path = os.path.join(path, ARRAYS_FILE)
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path!r} is not a checkpoint: it has no {CONFIG_FILE}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{config_path!r} is corrupt (not valid JSON: {err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path!r} is not a jlstm checkpoint config")
    if config.get("version") != VERSION or isinstance(config.get("version"), bool):
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
    _check_config(config)
    model_config, train_config = _configs(config)
    saved, manifest = config["state"], config["arrays"]
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            stored = {name: npz[name] for name in npz.files}
    except (KeyError, TypeError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path!r} is corrupt or from another version: {err}") from None
    if set(stored) != set(manifest):
        raise CheckpointError(f"{path!r}: the arrays in {ARRAYS_FILE} do not match the manifest")
    arrays = {}
    for name, array in stored.items():
        want = np.dtype(jnp.dtype(manifest[name]["dtype"]))
        if array.dtype != _stored_dtype(want) or list(array.shape) != manifest[name]["shape"]:
            raise CheckpointError(
                f"checkpoint array {name!r} is {array.dtype}{list(array.shape)} in "
                f"{ARRAYS_FILE} but the manifest says {want}{manifest[name]['shape']}"
            )
        arrays[name] = array if array.dtype == want else array.view(want)

    if optimizer is None:
        optimizer = make_optimizer(train_config, 1)
    params_template = jax.eval_shape(lambda k: init_params(k, model_config), jax.random.key(0))
    opt_template = jax.eval_shape(optimizer.init, params_template)
    members = saved.get("members")
    if members is not None:  # an ensemble: every leaf stacked on a member axis

        def stacked(s):
            return jax.ShapeDtypeStruct((members, *s.shape), s.dtype)

        params_template, opt_template = jax.tree.map(stacked, (params_template, opt_template))
    params = arrays_to_tree("params", arrays, params_template)
    best = arrays_to_tree("best_params", arrays, params_template)
    opt_state = arrays_to_tree("opt_state", arrays, opt_template)
    for name in ("train/key", "train/step"):
        if name not in arrays:
            raise CheckpointError(f"the checkpoint has no array {name!r}")
    step_shape = () if members is None else (members,)
    if arrays["train/step"].shape != step_shape or arrays["train/step"].dtype.kind not in "iu":
        raise CheckpointError(
            f"checkpoint array 'train/step' must be integers of shape {step_shape}"
        )
    try:
        key = jax.random.wrap_key_data(arrays["train/key"], impl=saved["key_impl"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint field 'config.state.key_impl' ({saved['key_impl']!r}) or array "
            f"'train/key' is invalid: {err}"
        ) from None
    step = jnp.asarray(arrays["train/step"], jnp.int32)
    best_loss = saved["best_loss"]
    state = FitState(
        TrainState(params, opt_state, step, key),
        saved["epoch"],
        best,
        math.inf if best_loss is None else float(best_loss),
        saved["best_epoch"],
        saved["bad_epochs"],
        saved["stopped"],
        tuple(saved["history"]),
    )
    extra = {k[len("extra/") :]: v for k, v in arrays.items() if k.startswith("extra/")}
    return Checkpoint(model_config, train_config, state, config["meta"], extra)
