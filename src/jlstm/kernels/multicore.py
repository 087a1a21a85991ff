"""Batch-parallel recurrence over local CPU devices.

XLA:CPU runs a loop's small per-step products and elementwise kernels on one thread
(only large matrix products use the intra-op pool, and independent operations inside
a loop body are not run concurrently), so a latency-bound LSTM uses one core however
many there are. JAX can expose the cores as separate CPU devices::

    import jax
    jax.config.update("jax_num_cpu_devices", 2)   # before any JAX operation
    # or: JAX_NUM_CPU_DEVICES=2 python train.py, or jlstm.modes.use_cpu_devices()

and this kernel then runs another kernel under ``jax.shard_map`` with the batch split
across them: each device runs the recurrence for its share of the sequences on its
own thread. Sequences are independent, so the outputs are those of the inner kernel
exactly; the weight gradients are the per-device sums added together (float
rounding aside). With one device, a batch the devices do not divide, or in a
program the user partitioned (``shard_map``, a mesh context, explicitly sharded
inputs), it runs the inner kernel unchanged.
"""

from __future__ import annotations

import os

import jax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from ..types import CellParams, LSTMState
from .common import explicitly_sharded

__all__ = ["already_partitioned", "batch_devices", "use_cpu_devices", "wrap"]

_AXIS = "jlstm_batch"


def use_cpu_devices(count: int | None = None) -> int:
    """Expose ``count`` CPU cores as JAX devices (default: the cores this process may use).

    Must run before any JAX operation (JAX's own rule for ``jax_num_cpu_devices``).
    Only CPU work is affected: arrays live on the first device unless placed.

    Returns:
        the device count requested.

    Raises:
        RuntimeError: when JAX has already started its backends (JAX's message says so).
    """
    if count is None:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        count = count or os.cpu_count() or 1
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    jax.config.update("jax_num_cpu_devices", int(count))
    return int(count)


def batch_devices(batch, *, platform: str = "cpu") -> list:
    """The local devices a batch of ``batch`` sequences is split over (``[]``: do not split).

    Uses every local device of ``platform`` when there are at least two, they divide
    the batch (a symbolic ``jax.export`` batch is never split), and the caller has not
    set a mesh of its own (``jax.set_mesh`` / ``jax.sharding.use_mesh``, or inside a
    ``shard_map``): a program the user partitioned is never re-partitioned.
    """
    if platform != "cpu" or not isinstance(batch, int):
        return []
    try:
        devices = jax.local_devices(backend="cpu")
    except RuntimeError:
        return []
    if len(devices) < 2 or batch % len(devices):
        return []
    if not jax.sharding.get_abstract_mesh().empty:
        return []
    return devices


def already_partitioned(*arrays) -> bool:
    """Whether the call runs in a program the user partitioned: inside a mesh context
    or ``shard_map``, or on arrays whose type carries an explicit sharding."""
    if not jax.sharding.get_abstract_mesh().empty:
        return True
    return any(explicitly_sharded(a) for a in jax.tree.leaves(arrays))


def wrap(inner):
    """A mode ``run`` that splits the batch of ``inner`` (a mode ``run``) over CPU devices."""

    def run(params: CellParams, xs, state: LSTMState, *, mask, input_mask, recurrent_mask, options):
        def local(params, xs, state, mask, input_mask, recurrent_mask):
            return inner(
                params,
                xs,
                state,
                mask=mask,
                input_mask=input_mask,
                recurrent_mask=recurrent_mask,
                options=options,
            )

        batch_shape = xs.shape[1:-1]
        devices = []
        if len(batch_shape) == 1 and not already_partitioned(xs, state):
            devices = batch_devices(batch_shape[0])
        if not devices:
            return local(params, xs, state, mask, input_mask, recurrent_mask)
        mesh = Mesh(devices, (_AXIS,))
        rows = P(_AXIS)  # (B, ...) arrays split on their first axis
        steps_rows = P(None, _AXIS)  # (T, B, ...) arrays split on their second axis
        sharded = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), steps_rows, rows, steps_rows, rows, rows),
            out_specs=(steps_rows, rows),
            check_vma=False,
        )
        return sharded(params, xs, LSTMState(*state), mask, input_mask, recurrent_mask)

    return run
