"""The long-time-lag tasks of the LSTM papers: generators, success criteria, training.

Three synthetic tasks, generated in JAX (``jax.random``) so that a training step
draws its own batch on the device, with no host round trip:

``"adding"``
    Hochreiter & Schmidhuber (1997), Experiment 4. Each step is a pair
    ``(value, marker)``, value ~ U[-1, 1]. The length ``L`` of each sequence is
    uniform in ``[T, T + T // 10]``. One of the first ten pairs is marked 1.0 (its
    value is ``X1``), one of the first ``T/2 - 1`` still unmarked pairs (position 0
    carries the start marker, so counting starts at 1) is marked 1.0 (``X2``); the
    first and the last pair are marked -1. When the first pair is the one drawn
    for ``X1`` it keeps its -1 marker and ``X1 := 0`` (as in the paper). Target at
    the last step: ``0.5 + (X1 + X2) / 4``. A sequence is correct iff the absolute
    error is below 0.04. Paper: at most 3 wrong of 2560 test sequences.
``"temporal_order"``
    Experiment 6a. Symbols ``a b c d B E X Y`` one-hot (8 inputs); ``B`` first, ``E``
    last, ``a..d`` elsewhere except ``X``/``Y`` at ``t1`` in ``[T/10, T/5]`` and ``t2`` in
    ``[T/2, T/2 + T/10]``; length in ``[T, T + T/10]`` (``T = 100``: the paper's 100..110,
    10..20, 50..60). Four sigmoid outputs, one-hot class ``XX, XY, YX, YY``; correct
    iff every output's absolute error is below 0.3.
``"copy"``
    Copy memory (Arjovsky, Shah & Bengio 2016). Ten symbols from ``1..8``, then
    ``T - 1`` blanks (0), the delimiter (9) and ten blanks; the target is blanks
    for ``T + 10`` steps, then the ten symbols. Softmax cross-entropy per step; the
    memoryless baseline (blanks, then a uniform guess over 8) scores
    ``10 ln 8 / (T + 20)``. A sequence is correct iff all ten recalled symbols are.

Variable-length batches are right-padded to ``T + T // 10`` and passed to
``jlstm.apply`` with ``seq_lengths``: padded steps keep the state, so the model's
final output is its output at each sequence's last real step.

The stopping criterion of the paper ("average training error below 0.01 and the
2000 most recent sequences processed correctly", judged online, before each
update) is applied to minibatches: training stops once the most recent
``ceil(2000 / batch_size)`` minibatches, each scored with the weights before its
update, have no wrong sequence and a mean loss below ``Task.stop_loss``. It is
checked every ``chunk_steps`` steps (one compiled program runs that many steps).

Example::

    report = run_task("adding", 30, "runs/adding30", seed=0, budget_seconds=60)
    report["test"]["wrong"], report["test"]["n"]     # e.g. 0, 2560
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from .checkpoint import save_checkpoint
from .fileio import write_text_atomic
from .model import ModelConfig, apply
from .train import FitState, TrainConfig, TrainState, init_fit_state, make_optimizer

__all__ = [
    "TASKS",
    "Batch",
    "Task",
    "TaskRun",
    "adding_batch",
    "check_task",
    "copy_batch",
    "evaluate_task",
    "get_task",
    "run_task",
    "task_config",
    "temporal_order_batch",
    "train_task",
]

TEST_SEQUENCES = 2560
RECENT_SEQUENCES = 2000


class Batch(NamedTuple):
    """A batch of task sequences.

    Attributes:
        x: ``(B, Lmax, D)`` float32 inputs, zeros after each sequence's end.
        y: ``(B, O)`` float32 targets (``(B, Lmax)`` int32 symbols for ``"copy"``).
        lengths: ``(B,)`` int32 real lengths.
    """

    x: Array
    y: Array
    lengths: Array


# -- generators ------------------------------------------------------------------------------


def _lengths(key: Array, batch: int, length: int) -> Array:
    return jax.random.randint(key, (batch,), length, length + length // 10 + 1)


def adding_batch(key: Array, batch: int, length: int) -> Batch:
    """Experiment 4 (module docstring).

    Returns a ``Batch``: ``x`` ``(B, T + T//10, 2)`` (value, marker), ``y`` ``(B, 1)``.
    """
    if length < 6:
        raise ValueError(f"the adding problem needs length >= 6, got {length}")
    k_len, k_val, k_1, k_2 = jax.random.split(key, 4)
    steps = length + length // 10
    lengths = _lengths(k_len, batch, length)
    values = jax.random.uniform(k_val, (batch, steps), minval=-1.0, maxval=1.0)
    p1 = jax.random.randint(k_1, (batch,), 0, 10)
    # X2: the r-th unmarked pair among positions 1, 2, ... (skipping p1), r < T/2 - 1.
    r = jax.random.randint(k_2, (batch,), 0, length // 2 - 1)
    p2 = 1 + r + ((p1 >= 1) & (1 + r >= p1))
    t = jnp.arange(steps)[None, :]
    marker = jnp.where((t == p1[:, None]) | (t == p2[:, None]), 1.0, 0.0)
    marker = jnp.where((t == 0) | (t == lengths[:, None] - 1), -1.0, marker)
    real = t < lengths[:, None]
    values = jnp.where(real, values, 0.0)
    marker = jnp.where(real, marker, 0.0)
    rows = jnp.arange(batch)
    x1 = jnp.where(p1 == 0, 0.0, values[rows, p1])
    x2 = values[rows, p2]
    y = (0.5 + (x1 + x2) / 4.0)[:, None]
    return Batch(jnp.stack([values, marker], axis=-1), y, lengths)


TEMPORAL_SYMBOLS = ("a", "b", "c", "d", "B", "E", "X", "Y")


def temporal_order_batch(key: Array, batch: int, length: int = 100) -> Batch:
    """Experiment 6a (module docstring): ``x`` ``(B, T + T//10, 8)`` one-hot, ``y`` ``(B, 4)``."""
    if length < 20:
        raise ValueError(f"the temporal order task needs length >= 20, got {length}")
    k_len, k_sym, k_t1, k_t2, k_c = jax.random.split(key, 5)
    steps = length + length // 10
    lengths = _lengths(k_len, batch, length)
    symbols = jax.random.randint(k_sym, (batch, steps), 0, 4)
    t1 = jax.random.randint(k_t1, (batch,), length // 10, length // 5 + 1)
    t2 = jax.random.randint(k_t2, (batch,), length // 2, length // 2 + length // 10 + 1)
    cls = jax.random.randint(k_c, (batch,), 0, 4)
    first, second = cls // 2, cls % 2  # 0 = X, 1 = Y
    t = jnp.arange(steps)[None, :]
    symbols = jnp.where(t == t1[:, None], 6 + first[:, None], symbols)
    symbols = jnp.where(t == t2[:, None], 6 + second[:, None], symbols)
    symbols = jnp.where(t == 0, 4, symbols)
    symbols = jnp.where(t == lengths[:, None] - 1, 5, symbols)
    x = jax.nn.one_hot(symbols, 8) * (t < lengths[:, None])[..., None]
    return Batch(x, jax.nn.one_hot(cls, 4), lengths)


def copy_batch(key: Array, batch: int, length: int) -> Batch:
    """Copy memory (module docstring).

    Returns a ``Batch``: ``x`` ``(B, T + 20, 10)`` one-hot, ``y`` ``(B, T + 20)`` int32.
    """
    if length < 1:
        raise ValueError(f"the copy task needs length >= 1, got {length}")
    steps = length + 20
    data = jax.random.randint(key, (batch, 10), 1, 9)
    blank = jnp.zeros((batch, steps), jnp.int32)
    inputs = blank.at[:, :10].set(data).at[:, length + 9].set(9)
    targets = blank.at[:, length + 10 :].set(data)
    lengths = jnp.full((batch,), steps, jnp.int32)
    return Batch(jax.nn.one_hot(inputs, 10), targets, lengths)


# -- tasks -----------------------------------------------------------------------------------


class Task(NamedTuple):
    """A task: its generator, loss and success criterion.

    Attributes:
        name: ``"adding"``, ``"temporal_order"`` or ``"copy"``.
        sample: ``(key, batch, length) -> Batch``.
        input_size, output_size: the model's ``D`` and ``O``.
        return_sequences: the head runs at every step (``"copy"``).
        head_activation: ``"linear"`` or ``"sigmoid"``.
        loss: ``(pred, batch) -> (B,)`` per-sequence training loss.
        wrong: ``(pred, batch) -> (B,)`` bool, the paper's criterion failed.
        stop_loss: ``T -> `` the training-loss threshold of the stopping criterion.
        paper: what the paper reports, for reports.
        learning_rate, forget_bias: ``train_task``'s defaults for the task (Adam's
            rate; the forget-gate bias at initialisation, see ``task_config``).
    """

    name: str
    sample: Callable[[Array, int, int], Batch]
    input_size: int
    output_size: int
    return_sequences: bool
    head_activation: str
    loss: Callable[[Array, Batch], Array]
    wrong: Callable[[Array, Batch], Array]
    stop_loss: Callable[[int], float]
    paper: str
    learning_rate: float
    forget_bias: float


def _mse(pred: Array, batch: Batch) -> Array:
    return jnp.mean((pred - batch.y) ** 2, axis=-1)


def _copy_loss(logits: Array, batch: Batch) -> Array:
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch.y), axis=-1)


def _copy_wrong(logits: Array, batch: Batch) -> Array:
    return jnp.any(jnp.argmax(logits[:, -10:], axis=-1) != batch.y[:, -10:], axis=-1)


def copy_baseline(length: int) -> float:
    """The memoryless cross-entropy ``10 ln 8 / (T + 20)`` of the copy task."""
    return 10 * math.log(8) / (length + 20)


TASKS: dict[str, Task] = {
    "adding": Task(
        "adding",
        adding_batch,
        2,
        1,
        False,
        "linear",
        _mse,
        lambda pred, b: jnp.abs(pred[:, 0] - b.y[:, 0]) >= 0.04,
        lambda length: 0.01,
        "Hochreiter & Schmidhuber 1997, Exp. 4: at most 3 wrong of 2560 (T = 100, 500, 1000)",
        1e-2,
        5.0,
    ),
    "temporal_order": Task(
        "temporal_order",
        temporal_order_batch,
        8,
        4,
        False,
        "sigmoid",
        _mse,
        lambda pred, b: jnp.any(jnp.abs(pred - b.y) >= 0.3, axis=-1),
        lambda length: 0.01,
        "Hochreiter & Schmidhuber 1997, Exp. 6a: correct iff every output error < 0.3 "
        "(success here: at most 3 wrong of 2560, Exp. 4's bar)",
        3e-3,
        5.0,
    ),
    "copy": Task(
        "copy",
        copy_batch,
        10,
        10,
        True,
        "linear",
        _copy_loss,
        _copy_wrong,
        lambda length: copy_baseline(length) / 10,
        "Arjovsky et al. 2016: LSTM stays near the memoryless baseline 10 ln 8 / (T + 20) "
        "at T >= 100",
        1e-2,
        1.0,
    ),
}


def get_task(name: str) -> Task:
    """The ``Task`` called ``name`` (``TASKS``)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; use one of {sorted(TASKS)}") from None


def check_task(name: str, length: int) -> Task:
    """The ``Task`` called ``name`` if ``length`` is a valid ``T`` for it, else ``ValueError``.

    The generator's own checks run, traced (``jax.eval_shape``): no sequence is drawn.
    """
    task = get_task(name)
    if not isinstance(length, int) or isinstance(length, bool):
        raise ValueError(f"length must be an integer, got {length!r}")
    jax.eval_shape(lambda key: task.sample(key, 1, length), jax.random.key(0))
    return task


def task_config(
    name: str, *, units: int = 32, forget_bias: float = 1.0, **overrides
) -> ModelConfig:
    """One LSTM layer of ``units`` and a dense head shaped for the task.

    ``forget_bias`` is the forget-gate bias at initialisation (Keras'
    ``unit_forget_bias`` with the value 1.0 is the default); ``overrides`` are more
    ``ModelConfig`` fields.
    """
    task = get_task(name)
    return ModelConfig(
        input_size=task.input_size,
        layer_sizes=(units,),
        output_size=task.output_size,
        return_sequences=task.return_sequences,
        head_activation=task.head_activation,
        unit_forget_bias=True,
        forget_bias=float(forget_bias),
        **overrides,
    )


# -- training --------------------------------------------------------------------------------


def _predict(params, config: ModelConfig, batch: Batch) -> Array:
    return apply(params, batch.x, config, seq_lengths=batch.lengths)


def _make_chunk(task: Task, config: ModelConfig, optimizer, batch: int, length: int, steps: int):
    """A jitted ``TrainState -> (TrainState, (losses (steps,), wrong (steps,)))``.

    Each step draws its batch from ``fold_in(state.key, state.step)`` and takes one
    optax update; ``steps`` of them run in one ``lax.scan`` inside one program.
    """

    def objective(params, data: Batch):
        pred = _predict(params, config, data)
        return jnp.mean(task.loss(pred, data)), pred

    def one_step(train: TrainState, _):
        data = task.sample(jax.random.fold_in(train.key, train.step), batch, length)
        (value, pred), grads = jax.value_and_grad(objective, has_aux=True)(train.params, data)
        updates, opt_state = optimizer.update(grads, train.opt_state, train.params)
        params = optax.apply_updates(train.params, updates)
        wrong = jnp.sum(task.wrong(pred, data))
        return TrainState(params, opt_state, train.step + 1, train.key), (value, wrong)

    @jax.jit
    def run(train: TrainState):
        return jax.lax.scan(one_step, train, None, length=steps)

    return run


def evaluate_task(
    name: str,
    params,
    config: ModelConfig,
    length: int,
    *,
    seed: int = 0,
    n: int = TEST_SEQUENCES,
) -> dict[str, Any]:
    """Score ``params`` on ``n`` fresh sequences (never seen in training).

    The test key is ``fold_in(key(seed), 1997)``, disjoint from the training
    stream of ``train_task`` (which splits ``key(seed)``).

    Returns:
        ``{"n", "wrong", "loss"}`` (``loss``: mean MSE, or cross-entropy for ``"copy"``).
    """
    task = get_task(name)
    data = task.sample(jax.random.fold_in(jax.random.key(seed), 1997), n, length)
    pred = _predict(params, config, data)
    return {
        "n": int(n),
        "wrong": int(jnp.sum(task.wrong(pred, data))),
        "loss": float(jnp.mean(task.loss(pred, data))),
    }


class TaskRun(NamedTuple):
    """The result of ``train_task``.

    Attributes:
        model_config, train_config: the run's configs (as stored in its checkpoint).
        state: the ``FitState``: one "epoch" is one chunk of ``chunk_steps`` steps;
            ``history`` has one dict per chunk (``epoch``, ``loss``, ``val_loss`` None,
            ``lr``, ``seconds``, ``wrong``, ``sequences``).
        report: the JSON-able summary (``run_task``'s return value).
    """

    model_config: ModelConfig
    train_config: TrainConfig
    state: FitState
    report: dict[str, Any]


def train_task(
    name: str,
    length: int,
    *,
    seed: int = 0,
    budget_seconds: float = 60.0,
    max_steps: int = 100_000,
    units: int = 32,
    batch_size: int = 32,
    learning_rate: float | None = None,
    forget_bias: float | None = None,
    clip_norm: float | None = 1.0,
    chunk_steps: int = 50,
    test_sequences: int = TEST_SEQUENCES,
    config: ModelConfig | None = None,
) -> TaskRun:
    """Train a one-layer jlstm model on a task until the paper's criterion or the budget.

    Args:
        name: a task of ``TASKS``.
        length: the task's ``T``.
        seed: seeds the weights, the training stream and the test set.
        budget_seconds: wall-clock budget (compilation included); checked between chunks.
        max_steps: at most this many optimizer steps (rounded up to whole chunks).
        units: the model's hidden units (``task_config``); ignored if ``config`` is given.
        batch_size, learning_rate, clip_norm: Adam on minibatches of fresh sequences;
            ``learning_rate=None`` is the task's default (``Task.learning_rate``).
        forget_bias: the forget-gate bias at initialisation; ``None`` is the task's
            default (``Task.forget_bias``: 5.0 for the two 1997 tasks, where Keras'
            1.0 sits on the constant-prediction plateau at T = 100).
        chunk_steps: steps per compiled chunk (the criterion is checked between chunks).
        test_sequences: size of the fresh test set (the paper's 2560).
        config: a ``ModelConfig`` to train instead of ``task_config(name, ...)``.

    Returns:
        A ``TaskRun``; ``report["test"]["wrong"]`` is the count on the fresh test set.
    """
    task = get_task(name)
    learning_rate = task.learning_rate if learning_rate is None else learning_rate
    forget_bias = task.forget_bias if forget_bias is None else forget_bias
    if config is None:
        config = task_config(name, units=units, forget_bias=forget_bias)
    chunk_steps = max(1, min(chunk_steps, max_steps))
    train_config = TrainConfig(
        epochs=max(1, -(-max_steps // chunk_steps)),
        batch_size=batch_size,
        learning_rate=learning_rate,
        optimizer="adam",
        clip_norm=clip_norm,
        patience=None,
        restore_best=False,
        seed=seed,
    )
    optimizer = make_optimizer(train_config, chunk_steps)
    state = init_fit_state(config, optimizer, seed)
    run = _make_chunk(task, config, optimizer, batch_size, length, chunk_steps)
    recent_steps = -(-RECENT_SEQUENCES // batch_size)
    stop_loss = task.stop_loss(length)

    started = time.perf_counter()
    train = state.train
    losses: list[np.ndarray] = []
    wrongs: list[np.ndarray] = []
    history = []
    stopped_by = "max_steps"
    chunk = 0
    while chunk < train_config.epochs:
        t0 = time.perf_counter()
        train, (loss, wrong) = run(train)
        loss, wrong = np.asarray(loss), np.asarray(wrong)
        chunk += 1
        losses.append(loss)
        wrongs.append(wrong)
        if not np.all(np.isfinite(loss)):
            raise FloatingPointError(f"the {name} loss became non-finite in chunk {chunk}")
        history.append(
            {
                "epoch": chunk,
                "loss": float(loss.mean()),
                "val_loss": None,
                "lr": float(learning_rate),
                "seconds": time.perf_counter() - t0,
                "wrong": int(wrong.sum()),
                "sequences": int(chunk_steps * batch_size),
            }
        )
        recent_loss = np.concatenate(losses)[-recent_steps:]
        recent_wrong = np.concatenate(wrongs)[-recent_steps:]
        if (
            len(recent_loss) >= recent_steps
            and recent_wrong.sum() == 0
            and recent_loss.mean() < stop_loss
        ):
            stopped_by = "criterion"
            break
        if time.perf_counter() - started > budget_seconds:
            stopped_by = "budget"
            break
    seconds = time.perf_counter() - started
    state = FitState(
        train, chunk, train.params, math.inf, 0, 0, stopped_by == "criterion", tuple(history)
    )
    test = evaluate_task(name, train.params, config, length, seed=seed, n=test_sequences)
    steps = int(train.step)
    report = {
        "task": name,
        "length": int(length),
        "seed": int(seed),
        "stopped_by": stopped_by,
        "steps": steps,
        "sequences": steps * batch_size,
        "train_seconds": round(seconds, 2),
        "recent_train_loss": float(recent_loss.mean()),
        "recent_train_wrong": int(recent_wrong.sum()),
        "recent_train_sequences": int(len(recent_wrong) * batch_size),
        "test": test,
        "paper": task.paper,
        "model": {"units": list(config.layer_sizes), "forget_bias": config.forget_bias},
    }
    if name == "adding":
        report["success"] = test["wrong"] <= 3 * test["n"] / TEST_SEQUENCES
    elif name == "temporal_order":
        report["success"] = test["wrong"] <= 3 * test["n"] / TEST_SEQUENCES
    else:
        report["baseline_loss"] = copy_baseline(length)
        report["success"] = test["loss"] < copy_baseline(length)
    return TaskRun(config, train_config, state, report)


def run_task(name: str, length: int, out_dir: str | os.PathLike, **kwargs) -> dict[str, Any]:
    """``train_task``, then write a run directory; returns the report.

    ``out_dir`` gets ``checkpoint/`` (``jlstm.checkpoint.save_checkpoint``; loads
    with ``load_checkpoint``, and ``jlstm.apply`` on its params takes the task's
    inputs in the paper's encoding and returns the paper's targets, no scaling),
    ``metrics.json`` (the report) and ``history.json`` (one row per chunk).
    ``kwargs`` are ``train_task``'s.
    """
    result = train_task(name, length, **kwargs)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    save_checkpoint(
        os.path.join(out_dir, "checkpoint"),
        result.model_config,
        result.train_config,
        result.state,
        extra_meta={"task": name, "length": int(length), "report": result.report},
    )
    write_text_atomic(os.path.join(out_dir, "metrics.json"), json.dumps(result.report, indent=1))
    write_text_atomic(
        os.path.join(out_dir, "history.json"), json.dumps(list(result.state.history), indent=1)
    )
    return result.report
