"""Ensembles: N independently seeded models trained in one compiled step.

Member ``i`` of an ensemble is the run ``fit`` would make with seed ``seeds[i]``: its
own initial weights, its own batch order (``jlstm.train.epoch_order``,
as in ``fit``) and its own dropout key. The members' ``TrainState`` s are stacked on
a leading *member axis* and the library's training step is mapped over it with
``jax.vmap``: one XLA program, one dispatch per step for all members, and on a
device with spare width (GPU, several CPU devices) N models cost far less than N
runs. Nothing couples the members: each one's numbers are those of its own run up
to float rounding (vmap batches the matrix products differently).

    seeds = member_seeds(0, 8)
    states = init_ensemble(config, optimizer, seeds)        # leaves (8, ...)
    step = ensemble_step(make_train_step(config, optimizer))
    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)   # on device once
    for epoch in range(epochs):
        for idx, w in member_batches(len(x_train), batch_size, seeds, epoch):
            states, losses = step(states, x_dev, y_dev, idx, w)  # losses (8,)
    preds = ensemble_apply(states.params, x_test, config)   # (8, B, O)
    mean, spread = mean_and_spread(preds)

With a ``mesh`` (``jlstm.parallel.data_mesh``) the members are split across its
devices (no communication at all: members are independent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .model import ModelConfig, apply
from .parallel import DATA_AXIS, replicated_sharding
from .train import TrainState, epoch_order, init_fit_state, shuffle_key
from .types import Array

__all__ = [
    "ensemble_apply",
    "ensemble_eval",
    "ensemble_step",
    "init_ensemble",
    "mean_and_spread",
    "member",
    "member_batches",
    "member_seeds",
    "stack",
    "where_members",
]


def member_seeds(seed: int, n: int) -> tuple[int, ...]:
    """The seeds of an ``n``-member ensemble run with ``seed``: ``seed, seed + 1, ...``.

    So member ``i`` reproduces a single run with seed ``seed + i`` exactly.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"an ensemble needs a positive member count, got {n!r}")
    return tuple(seed + i for i in range(n))


def stack(trees: Sequence):
    """Stack pytrees of the same structure on a new leading member axis (keys too)."""
    if not trees:
        raise ValueError("nothing to stack")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def member(tree, i: int):
    """Member ``i`` of a stacked pytree (a ``TrainState``, params, predictions)."""
    return jax.tree.map(lambda leaf: leaf[i], tree)


def init_ensemble(
    config: ModelConfig, optimizer: optax.GradientTransformation, seeds: Sequence[int]
) -> TrainState:
    """The stacked ``TrainState`` of ``len(seeds)`` members, each ``init_fit_state(seed)``'s.

    Leaves gain a leading member axis: ``params`` leaves ``(N, ...)``, ``step`` ``(N,)``,
    ``key`` ``(N,)`` typed keys.
    """
    return stack([init_fit_state(config, optimizer, int(seed)).train for seed in seeds])


def member_batches(
    n: int, batch_size: int, seeds: Sequence[int], epoch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per-member batch indices of one epoch, each member in its own shuffled order.

    Member ``i`` visits the rows in ``train.epoch_order(shuffle_key(seeds[i]), epoch, n)``
    order (the order ``fit`` with seed ``seeds[i]`` uses), in batches of
    ``min(batch_size, n)`` rows; the last batch is padded with weight-0 rows (repeats
    of its first row), as ``fit`` does.

    Yields:
        ``idx`` ``(N, B)`` int32 row indices and ``w`` ``(N, B)`` float32 row weights.
    """
    batch = min(batch_size, n)
    keys = jnp.stack([shuffle_key(int(s)) for s in seeds])
    orders = np.asarray(jax.vmap(epoch_order, (0, None, None))(keys, epoch, n))
    for start in range(0, n, batch):
        idx = orders[:, start : start + batch]
        real = idx.shape[1]
        w = np.zeros((len(seeds), batch), np.float32)
        w[:, :real] = 1.0
        if real < batch:
            idx = np.concatenate([idx, np.repeat(idx[:, :1], batch - real, axis=1)], axis=1)
        yield idx.astype(np.int32), w


def _member_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def ensemble_step(step: Callable, *, mesh: Mesh | None = None) -> Callable:
    """Map a training step over the member axis: one jitted program for all members.

    Args:
        step: the library's step ``(state, x, y, w) -> (state, loss)``
            (``jlstm.train.make_train_step``; jitted or not: vmap traces through it).
        mesh: optional; split the members over its ``"data"`` axis (the member count
            must be a multiple of its size; one process). The data stay replicated.

    Returns:
        A jitted ``(states, x, y, idx, w) -> (states, losses)``: ``states`` a stacked
        ``TrainState`` (``init_ensemble``); ``x`` ``(n, T, D)`` and ``y`` ``(n, O)`` the
        whole training set, shared by all members (put it on the device once);
        ``idx`` ``(N, B)`` int row indices and ``w`` ``(N, B)`` row weights of each
        member's batch (``member_batches``); ``losses`` ``(N,)``. The rows are gathered
        on the device, inside the step.
    """

    def one(state, x, y, idx, w):
        return step(state, jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0), w)

    mapped = jax.vmap(one, in_axes=(0, None, None, 0, 0))
    if mesh is None:
        return jax.jit(mapped)
    members, whole = _member_sharding(mesh), replicated_sharding(mesh)
    compiled = jax.jit(
        mapped,
        in_shardings=(members, whole, whole, members, members),
        out_shardings=(members, members),
    )

    def run(states, x, y, idx, w):
        count, size = len(w), mesh.devices.size
        if count % size:
            raise ValueError(
                f"{count} members do not split over {size} devices: use a multiple of "
                f"{size} members, or no mesh"
            )
        # Placed before the call: a state still on one device (``init_ensemble``) would
        # otherwise be traced apart from the sharded states the step returns.
        states, idx, w = jax.device_put((states, idx, w), members)
        x, y = jax.device_put((x, y), whole)
        return compiled(states, x, y, idx, w)

    run.jitted = compiled
    return run


def ensemble_eval(evaluate: Callable) -> Callable:
    """Map ``evaluate(params, x, y, w) -> (loss_sum, weight_sum)`` over stacked params.

    ``jlstm.train.make_eval_loss``'s function becomes
    ``(params (N, ...), x, y, w) -> ((N,), (N,))``: every member on the same rows.
    """
    return jax.jit(jax.vmap(evaluate, in_axes=(0, None, None, None)))


def ensemble_apply(params, x: Array, config: ModelConfig, **kwargs) -> Array:
    """Every member's ``jlstm.apply(params_i, x, config, **kwargs)``: ``(N, *y.shape)``."""
    return jax.vmap(lambda p: apply(p, x, config, **kwargs))(params)


def mean_and_spread(predictions: Array, *, ddof: int = 1) -> tuple[Array, Array]:
    """The ensemble forecast and its spread across members.

    Args:
        predictions: ``(N, ...)`` member predictions (``ensemble_apply``), e.g.
            ``(N, B, O)`` or ``(N, horizon, K)``.
        ddof: delta degrees of freedom of the spread. The default 1 is the sample
            standard deviation: the members are a sample of the models the training
            procedure produces, and ``sqrt(sum((p - mean)^2) / (N - 1))`` estimates
            that distribution's standard deviation without bias in the variance.
            Use ``ddof=0`` for the members' own population standard deviation.

    Returns:
        ``(mean, spread)``, each ``predictions.shape[1:]``; the spread is per output
        and per step. With one member the spread is 0 (not NaN).
    """
    predictions = jnp.asarray(predictions)
    count = predictions.shape[0]
    mean = jnp.mean(predictions, axis=0)
    if count <= ddof:
        return mean, jnp.zeros_like(mean)
    return mean, jnp.std(predictions, axis=0, ddof=ddof)


def where_members(mask: Array, new, old):
    """Per member, ``new`` where ``mask`` ``(N,)`` is true, else ``old`` (pytrees).

    For per-member bookkeeping in a vectorised loop: keep each member's best
    validation weights (``where_members(improved, states.params, best_params)``).
    """
    mask = jnp.asarray(mask)

    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, new, old)
