"""Training: the config, the optimizer, one jitted step, and ``fit`` (epochs, early stopping).

The step is one XLA program: forward, loss, gradient and the optax update
(plus the optional ``penalty`` and ``project`` hooks) together, as a pure
function ``step(state, batch) -> (state, loss)`` of a ``TrainState`` and a
``Batch`` of device arrays. ``fit`` keeps the data on the device: each epoch is
one jitted program that draws the epoch's permutation from the fit key, gathers
the batches on the device and runs ``step`` over them with ``lax.scan``; the
host sees one transfer per epoch (the epoch's losses and the validation loss).
Every batch has the same shape (the last one of an epoch is padded with
zero-weight rows), so the step compiles once per run.

Determinism: the initial parameters come from ``jax.random.key(seed)``, the
order of the training windows in epoch ``e`` from ``fold_in(shuffle_key(seed), e)``
and the dropout key of step ``s`` from ``fold_in(dropout_key, s)``. The whole
loop state is therefore ``FitState`` (parameters, optimizer state, step, keys,
epoch, early-stopping state): save it, load it in another process, and
``fit(..., state=...)`` continues bit for bit as if never interrupted.

Evaluation (validation losses here, forecasts in ``jlstm.forecast``) runs in
a fixed set of bucket sizes, ``EVAL_BUCKETS`` (powers of two up to 1024), rows
padded with weight 0: one compile per bucket, not one per number of windows.

    config = jlstm.ModelConfig(input_size=3, layer_sizes=(64, 32, 16), output_size=1)
    result = fit(config, (x_train, y_train), (x_val, y_val), TrainConfig(epochs=200))
    params = result.params    # the best validation weights
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import parallel
from .model import ModelConfig, apply, init_params
from .optim import OPTIMIZERS as KERAS_OPTIMIZERS
from .penalties import (
    apply_constraints,
    has_activity_regularizer,
    has_constraints,
    has_weight_regularizer,
    regularized_apply,
)
from .types import Array, ModelParams
from .validation import check_fields, check_int

__all__ = [
    "EVAL_BUCKETS",
    "Batch",
    "FitState",
    "TrainConfig",
    "TrainState",
    "ensemble_size",
    "epoch_order",
    "eval_buckets",
    "fit",
    "init_ensemble_state",
    "init_fit_state",
    "learning_rate_schedule",
    "make_eval_loss",
    "make_optimizer",
    "make_step",
    "make_train_step",
    "pad_rows",
    "shuffle_key",
]

LOSSES = ("mse", "mae", "huber")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", *sorted(KERAS_OPTIMIZERS))
SCHEDULES = ("constant", "cosine", "warmup_cosine")
# Evaluation chunk sizes: a padded chunk of the next power of two, at most 1024 rows.
EVAL_BUCKETS = tuple(2**k for k in range(11))
# Bounds that keep step counts inside int32 and seeds inside a PRNG seed (int64).
MAX_EPOCHS = 1_000_000
MAX_BATCH = 1 << 20
MAX_SEED = 2**63 - 1


def check_number(name: str, value, *, positive: bool = True) -> float:
    """``value`` if it is a finite (positive, or non-negative) real number."""
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not ok or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'>' if positive else '>='} 0, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (JSON-able, stored in every checkpoint).

    Attributes:
        epochs: maximum number of passes over the training windows (<= 1,000,000).
        batch_size: windows per step.
        learning_rate: peak learning rate.
        optimizer: ``"adam"`` (default, optax defaults b1 0.9, b2 0.999, eps 1e-8),
            ``"adamw"``, ``"sgd"``, ``"rmsprop"``, or Keras 3's formulas step for step,
            ``"keras_adam"``, ``"keras_rmsprop"``, ``"keras_sgd"`` (``jlstm.optim``).
        schedule: ``"constant"``, ``"cosine"`` (decay to 0 over all steps) or
            ``"warmup_cosine"`` (linear warm-up over ``warmup_epochs``, then cosine).
        warmup_epochs: warm-up length for ``warmup_cosine``.
        clip_norm: clip gradients to this global norm (``None``: no clipping).
        loss: ``"mse"`` (default), ``"mae"`` or ``"huber"`` (delta 1).
        patience: stop after this many epochs without a validation improvement
            (``None``: run all epochs).
        min_delta: an improvement must lower the validation loss by more than this.
        restore_best: end with the weights of the best validation epoch.
        seed: seeds the initial weights, the batch order and dropout (``0 .. 2**63 - 1``).
        shuffle: visit the training windows in a new random order every epoch; ``False``
            visits them in order, the last batch partial, as Keras ``fit(shuffle=False)``.
    """

    epochs: int = 300
    batch_size: int = 16
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "constant"
    warmup_epochs: int = 0
    clip_norm: float | None = None
    loss: str = "mse"
    patience: int | None = 50
    min_delta: float = 0.0
    restore_best: bool = True
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self):
        check_int("epochs", self.epochs, 1, MAX_EPOCHS)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("warmup_epochs", self.warmup_epochs, 0, MAX_EPOCHS)
        check_number("learning_rate", self.learning_rate)
        if self.clip_norm is not None:
            check_number("clip_norm", self.clip_norm)
        if self.patience is not None:
            check_int("patience", self.patience, 1, MAX_EPOCHS)
        check_number("min_delta", self.min_delta, positive=False)
        if not isinstance(self.restore_best, bool):
            raise ValueError(f"restore_best must be true or false, got {self.restore_best!r}")
        if not isinstance(self.shuffle, bool):
            raise ValueError(f"shuffle must be true or false, got {self.shuffle!r}")
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("loss", LOSSES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"unknown {name} {getattr(self, name)!r}; use one of {', '.join(allowed)}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        check_fields(cls, data)
        return cls(**data)


def learning_rate_schedule(cfg: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of the step count."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(cfg.learning_rate, total)
    if cfg.schedule == "warmup_cosine":
        warmup = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
        return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, total)
    return optax.constant_schedule(cfg.learning_rate)


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optax transformation ``cfg`` describes: optional clipping, then the optimizer."""
    lr = learning_rate_schedule(cfg, steps_per_epoch)
    opt = {
        "adam": optax.adam,
        "adamw": optax.adamw,
        "sgd": optax.sgd,
        "rmsprop": optax.rmsprop,
        **KERAS_OPTIMIZERS,
    }[cfg.optimizer](lr)
    if cfg.clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt


class TrainState(NamedTuple):
    """What the jitted step carries from one step to the next (a pytree).

    Attributes:
        params: ``ModelParams``.
        opt_state: the optax state for ``params``.
        step: ``()`` int32, steps taken so far.
        key: typed PRNG key for dropout; step ``s`` uses ``fold_in(key, s)``.
    """

    params: ModelParams
    opt_state: optax.OptState
    step: Array
    key: Array


class Batch(NamedTuple):
    """One training batch on the device (the unit a data-parallel mesh shards).

    Attributes:
        x: ``(B, T, D)`` inputs, the model's ``param_dtype``.
        y: ``(B, O)`` targets, same dtype.
        w: ``(B,)`` row weights, same dtype: 1 for real rows, 0 for padding.
    """

    x: Array
    y: Array
    w: Array


def _pointwise_loss(name: str, err: Array) -> Array:
    if name == "mae":
        return jnp.abs(err)
    if name == "huber":
        return optax.huber_loss(err, delta=1.0)
    return err * err


def _row_losses(loss: str, pred: Array, y: Array) -> Array:
    """``(B,)`` mean pointwise loss of each window."""
    return jnp.mean(_pointwise_loss(loss, pred - y), axis=-1)


def make_step(
    config: ModelConfig,
    optimizer: optax.GradientTransformation,
    *,
    loss: str = "mse",
    penalty: Callable[[ModelParams], Array] | None = None,
    project: Callable[[ModelParams], ModelParams] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Array]]:
    """The pure (unjitted) training step ``(state, batch) -> (state, loss)``.

    Args:
        config: the model's ``ModelConfig`` (static).
        optimizer: an optax transformation.
        loss: ``"mse"``, ``"mae"`` or ``"huber"``.
        penalty: optional ``params -> ()`` scalar added to the loss, differentiated
            with it, on top of the config's own regularizers.
        project: optional ``params -> params`` applied after the update, after the
            config's own constraints.

    The config's Keras regularizers (kernel, recurrent, bias and activity, on every
    layer and the head) are part of the training loss and its constraints are
    applied after every update, as in Keras' ``fit``. The loss is the ``w``-weighted
    mean of the per-window losses (padding rows change nothing), plus penalties;
    it is a ``()`` scalar of the model's ``param_dtype``.
    """
    regularize = has_weight_regularizer(config) or has_activity_regularizer(config)
    constrain = has_constraints(config)
    dtype = jnp.dtype(config.param_dtype)

    def objective(params, batch: Batch, key):
        if regularize:
            pred, extra = regularized_apply(params, batch.x, config, training=True, key=key)
        else:
            pred, extra = apply(params, batch.x, config, training=True, key=key), 0.0
        per_row = _row_losses(loss, pred, batch.y)
        value = jnp.sum(per_row * batch.w) / jnp.maximum(jnp.sum(batch.w), 1.0)
        value = value + jnp.asarray(extra, dtype)
        if penalty is not None:
            value = value + jnp.asarray(penalty(params), dtype)
        return value

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Array]:
        key = jax.random.fold_in(state.key, state.step)
        value, grads = jax.value_and_grad(objective)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if constrain:
            params = apply_constraints(params, config)
        if project is not None:
            params = project(params)
        return TrainState(params, opt_state, state.step + 1, state.key), value

    return step


def make_train_step(
    config: ModelConfig,
    optimizer: optax.GradientTransformation,
    *,
    loss: str = "mse",
    penalty: Callable[[ModelParams], Array] | None = None,
    project: Callable[[ModelParams], ModelParams] | None = None,
    donate: bool = False,
):
    """``make_step``, jitted: ``step(state, batch) -> (state, loss)``.

    ``batch`` is a ``Batch`` or an ``(x, y, w)`` tuple; ``step(state, x, y, w)`` works
    too. With ``donate=True`` the ``state`` passed in is consumed (its buffers are
    reused for the result, as ``fit``'s epoch program does); keep the returned one.
    """
    step = make_step(config, optimizer, loss=loss, penalty=penalty, project=project)

    def train_step(state: TrainState, *batch) -> tuple[TrainState, Array]:
        return step(state, Batch(*(batch[0] if len(batch) == 1 else batch)))

    return jax.jit(train_step, donate_argnums=0 if donate else ())


def make_eval_loss(config: ModelConfig, *, loss: str = "mse"):
    """A jitted ``(params, batch) -> (sum of w-weighted per-row losses, sum of w)``, no dropout.

    ``batch`` is a ``Batch`` or an ``(x, y, w)`` tuple; ``evaluate(params, x, y, w)`` works too.
    """

    @jax.jit
    def evaluate(params, *batch):
        x, y, w = batch[0] if len(batch) == 1 else batch
        per_row = _row_losses(loss, apply(params, x, config), y)
        return jnp.sum(per_row * w), jnp.sum(w)

    return evaluate


def eval_buckets(n: int) -> Iterator[tuple[int, int, int]]:
    """Chunks ``(start, stop, size)`` covering rows ``0 .. n - 1`` for evaluation.

    Every ``size`` is one of ``EVAL_BUCKETS`` (the next power of two of the rows left,
    at most 1024); rows ``stop .. start + size - 1`` are padding for the caller to add
    (``pad_rows``) and drop, so any ``n`` compiles at most ``len(EVAL_BUCKETS)`` programs.
    """
    start = 0
    largest = EVAL_BUCKETS[-1]
    while start < n:
        left = n - start
        size = largest if left >= largest else 1 << (left - 1).bit_length()
        stop = start + min(left, size)
        yield start, stop, size
        start = stop


def pad_rows(a, size: int):
    """``a`` padded along axis 0 to ``size`` rows with copies of its first row.

    NumPy in, NumPy out (no device program); a JAX array is padded on the device.
    """
    xp = np if isinstance(a, np.ndarray) else jnp
    if len(a) == size:
        return a
    return xp.concatenate([a, xp.broadcast_to(a[:1], (size - len(a), *a.shape[1:]))])


class FitState(NamedTuple):
    """The whole state of a training run between epochs (what a checkpoint holds).

    Attributes:
        train: the ``TrainState`` after the last completed epoch.
        epoch: epochs completed.
        best_params: weights of the best validation epoch so far.
        best_loss: that epoch's validation loss (``inf`` before the first).
        best_epoch: its number (1-based; 0 before the first).
        bad_epochs: epochs since the last improvement.
        stopped: early stopping has fired.
        history: one dict per completed epoch: ``epoch``, ``loss``, ``val_loss``,
            ``lr``, ``seconds`` (wall time of the epoch).
    """

    train: TrainState
    epoch: int
    best_params: ModelParams
    best_loss: float
    best_epoch: int
    bad_epochs: int
    stopped: bool
    history: tuple[dict[str, float], ...]

    @property
    def params(self) -> ModelParams:
        """The weights a finished run ends with: the best ones if there was validation."""
        return self.best_params if self.best_epoch > 0 else self.train.params


def init_fit_state(
    config: ModelConfig, optimizer: optax.GradientTransformation, seed: int
) -> FitState:
    """The state before the first epoch: weights from ``jax.random.key(seed)``."""
    init_key, dropout_key = jax.random.split(jax.random.key(seed))
    params = init_params(init_key, config)
    train = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32), dropout_key)
    return FitState(train, 0, params, math.inf, 0, 0, False, ())


def init_ensemble_state(
    config: ModelConfig, optimizer: optax.GradientTransformation, seed: int, members: int
) -> FitState:
    """The state before the first epoch of an ensemble of ``members`` (``fit(ensemble=...)``).

    Member ``i`` is ``init_fit_state(config, optimizer, seed + i)``; the ``train`` and
    ``best_params`` leaves are stacked on a leading member axis (``step`` ``(N,)``,
    ``key`` ``(N,)`` typed keys). The loop fields stay scalars: an ensemble stops early
    on its members' mean validation loss.
    """
    states = [init_fit_state(config, optimizer, seed + i).train for i in range(members)]
    train = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    return FitState(train, 0, train.params, math.inf, 0, 0, False, ())


def ensemble_size(state: FitState) -> int | None:
    """The member count of an ensemble's ``FitState`` (``None``: a single model)."""
    step = jnp.shape(state.train.step)
    return step[0] if step else None


def shuffle_key(seed: int) -> Array:
    """The key of the batch order: epoch ``e`` uses ``permutation(fold_in(key, e), N)``."""
    return jax.random.fold_in(jax.random.key(seed), 0x5EED)


def epoch_order(order_key: Array, epoch, n: int) -> Array:
    """``(n,)`` int32: the order ``fit`` visits the training windows in epoch ``epoch``.

    ``order_key`` is ``shuffle_key(seed)``; jittable and vmappable (an ensemble of seeds
    reproduces each member's ``fit`` with ``vmap(epoch_order, (0, None, None))``).
    """
    return jax.random.permutation(jax.random.fold_in(order_key, epoch), n)


@jax.jit
def _copy(tree):
    """A device copy of a pytree, one program (buffers that donation will not consume)."""
    return jax.tree.map(jnp.copy, tree)


def _print_epoch(state: FitState) -> None:
    last = state.history[-1]
    val = "" if last["val_loss"] is None else f"  val_loss {last['val_loss']:.4g}"
    print(f"epoch {state.epoch}  loss {last['loss']:.4g}{val}", file=sys.stderr, flush=True)


def fit(
    config: ModelConfig,
    train_data: tuple[Array, Array],
    val_data: tuple[Array, Array] | None,
    cfg: TrainConfig,
    *,
    state: FitState | None = None,
    penalty: Callable[[ModelParams], Array] | None = None,
    project: Callable[[ModelParams], ModelParams] | None = None,
    on_epoch_end: Callable[[FitState], None] | None = None,
    progress: Callable[[FitState], None] | bool = False,
    mesh: jax.sharding.Mesh | None = None,
    ensemble: int | None = None,
) -> FitState:
    """Train ``config`` on windows, validating every epoch, with early stopping.

    Args:
        config: the model.
        train_data: ``(x, y)``: ``x`` ``(N, T, D)`` and ``y`` ``(N, O)`` (or
            ``(N, horizon, K)``, flattened to ``O = horizon * K``) windows, NumPy or
            device arrays; they are moved to the device once, in the model's
            ``param_dtype`` (float64 models train in float64).
        val_data: the same for validation, or ``None`` (then the training loss is
            monitored instead).
        cfg: the ``TrainConfig``.
        state: a ``FitState`` to continue from (a loaded checkpoint); ``None``
            starts from ``init_fit_state(config, ..., cfg.seed)``.
        penalty, project: hooks passed to ``make_step``.
        on_epoch_end: called with the ``FitState`` after every epoch (checkpointing);
            the states it receives stay valid (``fit`` copies the train state on the
            device before donating it to the next epoch).
        progress: called with the ``FitState`` after every epoch (e.g.
            ``jlstm.experiment.Progress``); ``True`` prints one line per epoch to
            stderr; ``False`` (default) nothing.
        mesh: data parallelism (``jlstm.parallel.data_mesh``): every batch is split
            over the mesh's ``"data"`` axis (padded with weight-0 rows to a multiple of
            its devices), the train state is replicated, and XLA all-reduces the
            gradients inside the epoch program. Every process of a ``jax.distributed``
            job calls ``fit`` with the same data and seed; each gathers its devices'
            rows of every global batch from its copy of the windows, and all get the
            same losses (so early stopping agrees). The result is the one-device run's
            to float tolerance. The states ``fit`` returns and passes to the callbacks
            hold this process's local copies (``jlstm.parallel.local_copy``).
        ensemble: train this many members at once (``jax.vmap`` of the epoch program):
            member ``i`` is the run with seed ``cfg.seed + i`` (its own initial
            weights, batch order and dropout) and the state's ``train`` and
            ``best_params`` leaves gain a leading member axis
            (``init_ensemble_state``). The history records the members' mean losses,
            early stopping and the best epoch follow the mean validation loss. With a
            ``mesh`` the members are split over its devices when they divide the member
            count (one process), else every device runs every member.

    Returns:
        The final ``FitState``; ``.params`` are the best validation weights
        (``restore_best``) or the last ones.

    Raises:
        FloatingPointError: the monitored loss is not finite.
    """
    # Under float64 without jax_enable_x64 JAX holds float32: ask it which dtype it will use.
    dtype = jnp.zeros((), config.param_dtype).dtype
    members = None if ensemble is None else check_int("ensemble", ensemble, 1, 4096)
    if state is not None and ensemble_size(state) != members:
        raise ValueError(
            f"the state holds {ensemble_size(state) or 'a single model'} member(s) but "
            f"ensemble={ensemble!r}: continue a run with its own ensemble size"
        )
    x_train, y_train = _to_host(train_data, config, "train", dtype)
    n = len(x_train)
    if n == 0:
        raise ValueError("no training windows: the training split is shorter than one window")
    whole = state_sharding = None
    if mesh is not None:
        whole = parallel.replicated_sharding(mesh)
        state_sharding = whole
        if members is not None and members % mesh.devices.size == 0 and whole.is_fully_addressable:
            state_sharding = parallel.batch_sharding(mesh)  # members split, no communication
    # Once, for the whole run.
    x_train, y_train = _put((x_train, y_train), whole)
    val_chunks = None
    if val_data is not None:
        x_val, y_val = _to_host(val_data, config, "validation", dtype)
        if len(x_val):
            val_chunks = _eval_chunks(x_val, y_val, whole)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = -(-n // batch)
    split = mesh is not None and members is None
    rows = parallel.padded_batch_size(batch, mesh) if split else batch
    # Fields that do not change the compiled programs are normalised so that runs differing
    # only in them (another seed, another patience) share them.
    shape = dataclasses.replace(
        cfg,
        seed=0,
        patience=None,
        min_delta=0.0,
        restore_best=True,
        epochs=cfg.epochs if cfg.schedule != "constant" else 1,
    )
    layout = None
    if (rows, members, state_sharding) != (batch, None, None):
        layout = _Layout(rows, members, mesh if split else None, state_sharding)
    # A one-device run passes no layout: its cached programs are the ones callers look up.
    args = (config, shape, steps_per_epoch, batch, penalty, project)
    optimizer, run_epoch, eval_fn = _programs(*args, *([layout] if layout else []))
    if state is None:
        if members is None:
            state = init_fit_state(config, optimizer, cfg.seed)
        else:
            state = init_ensemble_state(config, optimizer, cfg.seed, members)
    if progress is True:
        progress = _print_epoch
    if members is None:
        order_key = shuffle_key(cfg.seed)
    else:
        order_key = jnp.stack([shuffle_key(cfg.seed + i) for i in range(members)])
    order_key = _put(order_key, state_sharding)
    first = state.epoch

    train, epoch, best_params, best_loss, best_epoch, bad, stopped, history = state
    train = _put(train, state_sharding)
    history = list(history)
    while epoch < cfg.epochs and not stopped:
        started = time.perf_counter()
        if on_epoch_end is not None or epoch == first:
            train = _copy(train)  # the caller's snapshots (and the input state) stay valid
        train, loss_sum, lr = run_epoch(train, x_train, y_train, order_key, epoch)
        val_sum = val_count = None
        if val_chunks is not None:
            parts = [eval_fn(train.params, chunk) for chunk in val_chunks]
            val_sum = sum(p[0] for p in parts)
            val_count = sum(p[1] for p in parts)
        # One transfer per epoch (the values are replicated: this process's copy).
        loss_sum, lr, val_sum, val_count = jax.device_get(
            parallel.local_copy((loss_sum, lr, val_sum, val_count))
        )
        train_loss = float(np.mean(loss_sum)) / n
        val_loss = None if val_sum is None else float(np.mean(val_sum / val_count))
        monitored = train_loss if val_loss is None else val_loss
        epoch += 1
        if not math.isfinite(monitored):
            raise FloatingPointError(
                f"the loss became {monitored} at epoch {epoch}: lower the learning rate "
                "or set a gradient clip norm"
            )
        if monitored < best_loss - cfg.min_delta:
            best = parallel.local_copy(_copy(train.params))
            best_params, best_loss, best_epoch, bad = best, monitored, epoch, 0
        else:
            bad += 1
        stopped = cfg.patience is not None and bad >= cfg.patience
        history.append(
            {
                "epoch": epoch,
                "loss": train_loss,
                "val_loss": val_loss,
                "lr": float(np.ravel(lr)[0]),
                "seconds": time.perf_counter() - started,
            }
        )
        # A snapshot: callers may keep states (checkpoints), so the history is copied.
        state = FitState(
            parallel.local_copy(train),
            epoch,
            best_params,
            best_loss,
            best_epoch,
            bad,
            stopped,
            tuple(history),
        )
        if progress:
            progress(state)
        if on_epoch_end is not None:
            on_epoch_end(state)
    if not cfg.restore_best:
        state = state._replace(best_params=state.train.params, best_epoch=0)
    return state


def _put(tree, sharding):
    """``tree`` on the default device (``sharding`` ``None``) or placed with ``sharding``."""
    if sharding is None:
        return jax.device_put(tree)
    return parallel.place(tree, sharding)


def _eval_chunks(x: np.ndarray, y: np.ndarray, sharding=None) -> list[Batch]:
    """The validation windows as padded ``Batch``es of ``EVAL_BUCKETS`` sizes, on the device."""
    chunks = []
    for start, stop, size in eval_buckets(len(x)):
        w = (np.arange(size) < stop - start).astype(x.dtype)
        chunk = Batch(pad_rows(x[start:stop], size), pad_rows(y[start:stop], size), w)
        chunks.append(_put(chunk, sharding))
    return chunks


class _Layout(NamedTuple):
    """How a run is spread: ``rows`` per step (``batch`` real ones, the rest weight 0, a
    multiple of ``mesh``'s devices), ``members`` of an ensemble, the ``mesh`` each batch
    is split over (``None``: not split) and the train state's sharding."""

    rows: int
    members: int | None
    mesh: Any
    state_sharding: Any


@functools.lru_cache(maxsize=8)
def _programs(
    config: ModelConfig,
    cfg: TrainConfig,
    steps_per_epoch: int,
    batch: int,
    penalty,
    project,
    layout: _Layout | None = None,
):
    """The optimizer and the jitted epoch and eval functions of a run (cached).

    ``layout`` ``None``: one device, one model. Otherwise every gathered batch is padded
    to ``layout.rows`` and, with a mesh, constrained to be split over its ``"data"``
    axis; with ``members`` the epoch and the evaluation are vmapped over the stacked
    states.
    """
    rows, members, mesh, state_sharding = layout or _Layout(batch, None, None, None)
    optimizer = make_optimizer(cfg, steps_per_epoch)
    step = make_step(config, optimizer, loss=cfg.loss, penalty=penalty, project=project)
    lr_at = learning_rate_schedule(cfg, steps_per_epoch)
    dtype = jnp.dtype(config.param_dtype)
    split = None if mesh is None else parallel.batch_sharding(mesh)

    def one_epoch(state: TrainState, x, y, order_key, epoch):
        """One epoch: shuffle on the device, gather equal batches, scan the step over them."""
        n = x.shape[0]
        total = steps_per_epoch * batch
        # Keras' fit(shuffle=False): the windows in order, the last batch partial.
        order = epoch_order(order_key, epoch, n) if cfg.shuffle else jnp.arange(n)
        # The last batch is padded with row 0 at weight 0; so is every batch to `rows`.
        idx = jnp.zeros((total,), order.dtype).at[:n].set(order).reshape(steps_per_epoch, batch)
        w = (jnp.arange(total) < n).astype(dtype).reshape(steps_per_epoch, batch)
        if rows > batch:
            idx = jnp.pad(idx, ((0, 0), (0, rows - batch)))
            w = jnp.pad(w, ((0, 0), (0, rows - batch)))

        def body(state, i):
            chunk = Batch(x[idx[i]], y[idx[i]], w[i])
            if split is not None:
                chunk = jax.lax.with_sharding_constraint(chunk, split)
            return step(state, chunk)

        state, losses = jax.lax.scan(body, state, jnp.arange(steps_per_epoch))
        real = jnp.sum(w, axis=1)
        return state, jnp.sum(losses * real), lr_at(state.step - 1)

    evaluate = make_eval_loss(config, loss=cfg.loss)
    if members is not None:
        one_epoch = jax.vmap(one_epoch, in_axes=(0, None, None, 0, None))
        evaluate = jax.jit(jax.vmap(evaluate, in_axes=(0, None)))
    if state_sharding is None:
        run_epoch = jax.jit(one_epoch, donate_argnums=0)
    else:
        whole = parallel.replicated_sharding(state_sharding.mesh)
        run_epoch = jax.jit(
            one_epoch,
            donate_argnums=0,
            out_shardings=(
                state_sharding,
                state_sharding if members else whole,
                state_sharding if members else whole,
            ),
        )
        # Traced under the mesh (training and evaluation): the layers see a partitioned
        # program, so the per-layer ``multicore`` split steps aside and no kernel merges
        # the sharded batch axis.
        run_epoch = _under_mesh(run_epoch, state_sharding.mesh)
        evaluate = _under_mesh(evaluate, state_sharding.mesh)
    return optimizer, run_epoch, evaluate


def _under_mesh(jitted, mesh):
    """``jitted`` called inside ``jax.set_mesh(mesh)``; ``.jitted`` is the jitted function."""

    def run(*args):
        with jax.set_mesh(mesh):
            return jitted(*args)

    run.jitted = jitted
    return run


def _to_host(data, config: ModelConfig, name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as NumPy arrays of ``dtype``, ``y`` flattened to ``(N, O)``, shapes checked."""
    x, y = data
    x = np.asarray(x, dtype)
    y = np.asarray(y, dtype).reshape(len(y), -1)
    if x.ndim != 3 or x.shape[-1] != config.input_size:
        raise ValueError(
            f"{name} inputs must be (N, steps, {config.input_size}) for this model, got {x.shape}"
        )
    if y.shape != (len(x), config.output_size):
        raise ValueError(
            f"{name} targets must hold {config.output_size} values per window, got {y.shape}"
        )
    return x, y
