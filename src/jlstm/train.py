"""Training: one jitted step, shuffled minibatch epochs, validation and early stopping.

The step is one XLA program: forward, loss, gradient and the optax update
(plus the optional ``penalty`` and ``project`` hooks) together. Every batch
has the same shape (the last one of an epoch is padded with zero-weight rows),
so the step compiles once.

Determinism: the initial parameters come from ``jax.random.key(seed)``, the
order of the training windows in epoch ``e`` from ``numpy.random.default_rng((seed, e))``
and the dropout key of step ``s`` from ``fold_in(dropout_key, s)``. The whole
loop state is therefore ``FitState`` (parameters, optimizer state, step, keys,
epoch, early-stopping state): save it, load it in another process, and
``fit(..., state=...)`` continues bit for bit as if never interrupted.

    config = jlstm.ModelConfig(input_size=3, layer_sizes=(64, 32, 16), output_size=1)
    result = fit(config, (x_train, y_train), (x_val, y_val), TrainConfig(epochs=200))
    params = result.params    # the best validation weights
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .constraints import apply_constraints, has_constraints
from .model import ModelConfig, apply, init_params
from .regularizers import has_activity_regularizer, has_weight_regularizer, regularized_apply
from .types import Array, ModelParams

__all__ = [
    "FitState",
    "Progress",
    "TrainConfig",
    "TrainState",
    "fit",
    "history_to_csv",
    "init_fit_state",
    "make_eval_loss",
    "make_optimizer",
    "make_train_step",
    "write_text_atomic",
]

LOSSES = ("mse", "mae", "huber")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
# Validation and forecasts run in fixed-size chunks: one compile for any number of windows.
_EVAL_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (JSON-able, stored in every checkpoint).

    Attributes:
        epochs: maximum number of passes over the training windows.
        batch_size: windows per step.
        learning_rate: peak learning rate.
        optimizer: ``"adam"`` (default, optax defaults b1 0.9, b2 0.999, eps 1e-8),
            ``"adamw"``, ``"sgd"`` or ``"rmsprop"``.
        schedule: ``"constant"``, ``"cosine"`` (decay to 0 over all steps) or
            ``"warmup_cosine"`` (linear warm-up over ``warmup_epochs``, then cosine).
        warmup_epochs: warm-up length for ``warmup_cosine``.
        clip_norm: clip gradients to this global norm (``None``: no clipping).
        loss: ``"mse"`` (default), ``"mae"`` or ``"huber"`` (delta 1).
        patience: stop after this many epochs without a validation improvement
            (``None``: run all epochs).
        min_delta: an improvement must lower the validation loss by more than this.
        restore_best: end with the weights of the best validation epoch.
        seed: seeds the initial weights, the batch order and dropout.
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

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if not (_is_number(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.clip_norm is not None and not (_is_number(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be a positive number, got {self.clip_norm!r}")
        if self.patience is not None and (
            not isinstance(self.patience, int)
            or isinstance(self.patience, bool)
            or self.patience < 1
        ):
            raise ValueError(f"patience must be a positive integer, got {self.patience!r}")
        if not (_is_number(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("loss", LOSSES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; use one of {allowed}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**data)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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


def _pointwise_loss(name: str, err: Array) -> Array:
    if name == "mae":
        return jnp.abs(err)
    if name == "huber":
        return optax.huber_loss(err, delta=1.0)
    return err * err


def _row_losses(loss: str, pred: Array, y: Array) -> Array:
    """``(B,)`` mean pointwise loss of each window."""
    return jnp.mean(_pointwise_loss(loss, pred - y), axis=-1)


def _batch_loss(params, config: ModelConfig, loss: str, x, y, w, *, key, regularize: bool):
    """Training loss: weighted mean over the real rows (``w`` 1) of the per-window mean loss.

    With ``regularize``, the config's weight and activity regularizers are added
    (Keras' ``sum(model.losses)``).
    """
    if regularize:
        pred, penalty = regularized_apply(params, x, config, training=True, key=key)
    else:
        pred, penalty = apply(params, x, config, training=True, key=key), 0.0
    per_row = _row_losses(loss, pred, y)
    return jnp.sum(per_row * w) / jnp.maximum(jnp.sum(w), 1.0) + penalty


def make_train_step(
    config: ModelConfig,
    optimizer: optax.GradientTransformation,
    *,
    loss: str = "mse",
    penalty: Callable[[ModelParams], Array] | None = None,
    project: Callable[[ModelParams], ModelParams] | None = None,
):
    """The jitted training step ``(state, x, y, w) -> (state, loss)``.

    Args:
        config: the model's ``ModelConfig`` (static).
        optimizer: an optax transformation.
        loss: ``"mse"``, ``"mae"`` or ``"huber"``.
        penalty: optional ``params -> ()`` scalar added to the loss, differentiated
            with it, on top of the config's own regularizers.
        project: optional ``params -> params`` applied after the update, after the
            config's own constraints, inside the same jitted step.

    The config's Keras regularizers (kernel, recurrent, bias and activity, on every
    layer and the head) are part of the training loss and its constraints are
    applied after every update, as in Keras' ``fit``. Validation losses
    (``make_eval_loss``) are the data loss alone.

    The returned function takes ``x`` ``(B, T, D)``, ``y`` ``(B, O)`` and ``w`` ``(B,)``
    float32 row weights (0 for padding rows) and returns the new ``TrainState``
    and the ``()`` float32 loss of the batch (data loss plus penalty).
    """

    regularize = has_weight_regularizer(config) or has_activity_regularizer(config)
    constrain = has_constraints(config)

    def objective(params, x, y, w, key):
        value = _batch_loss(params, config, loss, x, y, w, key=key, regularize=regularize)
        if penalty is not None:
            value = value + penalty(params)
        return value

    @jax.jit
    def step(state: TrainState, x, y, w):
        key = jax.random.fold_in(state.key, state.step)
        value, grads = jax.value_and_grad(objective)(state.params, x, y, w, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if constrain:
            params = apply_constraints(params, config)
        if project is not None:
            params = project(params)
        return TrainState(params, opt_state, state.step + 1, state.key), value

    return step


def make_eval_loss(config: ModelConfig, *, loss: str = "mse"):
    """A jitted ``(params, x, y, w) -> (sum of per-row losses, sum of w)``, no dropout."""

    @jax.jit
    def evaluate(params, x, y, w):
        per_row = _row_losses(loss, apply(params, x, config), y)
        return jnp.sum(per_row * w), jnp.sum(w)

    return evaluate


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


class Progress:
    """A one-line progress bar on a stream (stderr by default), no dependencies.

    On a terminal it redraws one line; otherwise (a log file, CI) it prints a
    line about every tenth of the run. ``enabled=False`` silences it.
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(1, total // 10)
        self.width = 24

    def update(self, epoch: int, fields: dict[str, float], rate: float) -> None:
        """Show ``epoch`` (1-based) of ``total`` with loss ``fields`` and ``rate`` windows/s."""
        if not self.enabled:
            return
        done = epoch / self.total
        filled = int(self.width * done)
        bar = "#" * filled + "." * (self.width - filled)
        stats = "  ".join(f"{k} {v:.4g}" for k, v in fields.items() if v is not None)
        line = (
            f"epoch {epoch:>{len(str(self.total))}}/{self.total} [{bar}] {stats}  {rate:,.0f} win/s"
        )
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        elif epoch % self.every == 0 or epoch == self.total or epoch == 1:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, message: str | None = None) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\n")
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()


def _batches(n: int, batch_size: int, order: np.ndarray):
    """Index and weight arrays of equal-size batches; the last is padded with weight 0."""
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        real = len(idx)
        if real < batch_size:
            idx = np.concatenate([idx, np.full(batch_size - real, idx[0])])
        w = np.zeros(batch_size, np.float32)
        w[:real] = 1.0
        yield idx, w, real


def _chunks(n: int):
    """``_batches`` of rows ``0 .. n - 1`` in order, at most ``_EVAL_CHUNK`` rows each."""
    return _batches(n, min(_EVAL_CHUNK, max(n, 1)), np.arange(n))


def _evaluate(eval_fn, params, x: np.ndarray, y: np.ndarray) -> float:
    """Mean loss over every row of ``(x, y)`` in padded fixed-size chunks."""
    total = count = 0.0
    for idx, w, _ in _chunks(len(x)):
        s, c = eval_fn(params, x[idx], y[idx], w)
        total += float(s)
        count += float(c)
    return total / count


def fit(
    config: ModelConfig,
    train_data: tuple[np.ndarray, np.ndarray],
    val_data: tuple[np.ndarray, np.ndarray] | None,
    cfg: TrainConfig,
    *,
    state: FitState | None = None,
    penalty: Callable[[ModelParams], Array] | None = None,
    project: Callable[[ModelParams], ModelParams] | None = None,
    on_epoch_end: Callable[[FitState], None] | None = None,
    progress: Progress | bool = True,
) -> FitState:
    """Train ``config`` on windows, validating every epoch, with early stopping.

    Args:
        config: the model.
        train_data: ``(x, y)``: ``x`` ``(N, T, D)`` and ``y`` ``(N, O)`` (or
            ``(N, horizon, K)``, flattened to ``O = horizon * K``) float32 windows.
        val_data: the same for validation, or ``None`` (then the training loss is
            monitored instead).
        cfg: the ``TrainConfig``.
        state: a ``FitState`` to continue from (a loaded checkpoint); ``None``
            starts from ``init_fit_state(config, ..., cfg.seed)``.
        penalty, project: hooks passed to ``make_train_step``.
        on_epoch_end: called with the ``FitState`` after every epoch (checkpointing).
        progress: a ``Progress``, or whether to show one on stderr.

    Returns:
        The final ``FitState``; ``.params`` are the best validation weights
        (``restore_best``) or the last ones.
    """
    x_train, y_train = _flat(train_data, config, "train")
    if len(x_train) == 0:
        raise ValueError("no training windows: the training split is shorter than one window")
    if val_data is not None:
        val_data = _flat(val_data, config, "validation")
        if len(val_data[0]) == 0:
            val_data = None
    steps_per_epoch = -(-len(x_train) // cfg.batch_size)
    # Fields that do not change the compiled step are normalised so that runs differing
    # only in them (another seed, another patience) share one compiled program.
    shape = dataclasses.replace(
        cfg,
        seed=0,
        patience=None,
        min_delta=0.0,
        restore_best=True,
        epochs=cfg.epochs if cfg.schedule != "constant" else 1,
    )
    optimizer, step_fn, eval_fn = _programs(config, shape, steps_per_epoch, penalty, project)
    lr_at = learning_rate_schedule(cfg, steps_per_epoch)
    if state is None:
        state = init_fit_state(config, optimizer, cfg.seed)
    if not isinstance(progress, Progress):
        progress = Progress(cfg.epochs, enabled=bool(progress))
    batch = min(cfg.batch_size, len(x_train))

    train, epoch, best_params, best_loss, best_epoch, bad, stopped, history = state
    history = list(history)
    while epoch < cfg.epochs and not stopped:
        started = time.perf_counter()
        order = np.random.default_rng((cfg.seed, epoch)).permutation(len(x_train))
        losses = []
        for idx, w, real in _batches(len(x_train), batch, order):
            train, value = step_fn(train, x_train[idx], y_train[idx], w)
            losses.append((value, real))
        train_loss = sum(float(v) * r for v, r in losses) / len(x_train)
        monitored = train_loss
        val_loss = None
        if val_data is not None:
            val_loss = _evaluate(eval_fn, train.params, *val_data)
            monitored = val_loss
        epoch += 1
        if not math.isfinite(monitored):
            raise FloatingPointError(
                f"the loss became {monitored} at epoch {epoch}: lower the learning rate "
                "or set a gradient clip norm"
            )
        if monitored < best_loss - cfg.min_delta:
            best_params, best_loss, best_epoch, bad = train.params, monitored, epoch, 0
        else:
            bad += 1
        stopped = cfg.patience is not None and bad >= cfg.patience
        seconds = time.perf_counter() - started
        history.append(
            {
                "epoch": epoch,
                "loss": train_loss,
                "val_loss": val_loss,
                "lr": float(lr_at(int(train.step) - 1)),
                "seconds": seconds,
            }
        )
        # A snapshot: callers may keep states (checkpoints), so the history is copied.
        state = FitState(
            train, epoch, best_params, best_loss, best_epoch, bad, stopped, tuple(history)
        )
        fields = {"loss": train_loss, "val_loss": val_loss, "best": best_loss}
        progress.update(epoch, fields, len(x_train) / max(seconds, 1e-9))
        if on_epoch_end is not None:
            on_epoch_end(state)
    if not cfg.restore_best:
        state = state._replace(best_params=state.train.params, best_epoch=0)
    why = "early stop" if state.stopped else "done"
    progress.close(
        f"{why} after {state.epoch} epochs; best val_loss {state.best_loss:.4g} at epoch "
        f"{state.best_epoch}"
        if val_data is not None and state.best_epoch
        else None
    )
    return state


@functools.lru_cache(maxsize=8)
def _programs(config: ModelConfig, cfg: TrainConfig, steps_per_epoch: int, penalty, project):
    """The optimizer and the jitted train and eval functions of a run (cached)."""
    optimizer = make_optimizer(cfg, steps_per_epoch)
    step_fn = make_train_step(config, optimizer, loss=cfg.loss, penalty=penalty, project=project)
    return optimizer, step_fn, make_eval_loss(config, loss=cfg.loss)


def _flat(data, config: ModelConfig, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = data
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32).reshape(len(y), -1)
    if x.ndim != 3 or x.shape[-1] != config.input_size:
        raise ValueError(
            f"{name} inputs must be (N, steps, {config.input_size}) for this model, got {x.shape}"
        )
    if y.shape != (len(x), config.output_size):
        raise ValueError(
            f"{name} targets must hold {config.output_size} values per window, got {y.shape}"
        )
    return x, y


# -- history files ------------------------------------------------------------------------


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def history_to_csv(history: list[dict[str, float]]) -> str:
    """The history as CSV text (header ``epoch,loss,val_loss,lr,seconds``)."""
    out = io.StringIO()
    fields = ["epoch", "loss", "val_loss", "lr", "seconds"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})
    return out.getvalue()


def save_history(history: list[dict[str, float]], directory: str | os.PathLike) -> None:
    """Write ``history.json`` and ``history.csv`` into ``directory``, each atomically."""
    write_text_atomic(os.path.join(directory, "history.json"), json.dumps(history, indent=1))
    write_text_atomic(os.path.join(directory, "history.csv"), history_to_csv(history))
