"""Data parallelism: one jitted training step over a 1-D device mesh, on one or many hosts.

The mechanism is GSPMD, not ``pmap``: the batch is sharded on the mesh axis
``"data"``, the parameters and optimizer state are replicated, and the *unchanged*
training step ``(state, x, y, w) -> (state, loss)`` is compiled once with those
shardings. Each device runs the forward and backward pass for its rows, and XLA
inserts the all-reduce that sums the gradient contributions: the loss is
``sum(row_loss * w) / sum(w)`` over the global batch, so the result is the
single-device step's up to the order of float additions. The same code runs on
1..N CPU cores, GPUs or TPUs, and across processes under ``jax.distributed``::

    import jlstm.parallel as par
    par.use_devices()                    # CPU: one JAX device per usable core (before JAX starts)
    mesh = par.data_mesh()               # every device of every process, axis "data"
    step = par.data_parallel(jlstm.train.make_train_step(config, optimizer), mesh)
    state = par.replicate(state, mesh)
    state, loss = step(state, x, y, w)   # host arrays: this process's rows of the batch

Multi-host: every process calls ``initialize(...)`` first, then the same code;
each process passes *its own* rows of every global batch (``global_batch``), and
every process gets the same replicated state back.

Rows that pad a batch to a multiple of the device count carry weight 0
(``pad_batch``): they cost compute but change neither the loss nor the gradients.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .validation import check_int

__all__ = [
    "DATA_AXIS",
    "MIN_WORK_PER_DEVICE",
    "auto_mesh",
    "batch_sharding",
    "data_mesh",
    "data_parallel",
    "data_parallel_eval",
    "device_summary",
    "global_batch",
    "initialize",
    "local_copy",
    "local_slice",
    "pad_batch",
    "padded_batch_size",
    "place",
    "replicate",
    "replicated_sharding",
    "shard_batch",
    "usable_cores",
    "use_devices",
]

DATA_AXIS = "data"


# -- devices and processes ----------------------------------------------------------------


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def use_devices(n: int | None = None) -> int:
    """Expose ``n`` CPU cores as JAX CPU devices (default: every usable core).

    XLA:CPU runs an LSTM's small per-step kernels on one thread per device, so a
    default JAX process uses one core; with one device per core, ``data_parallel``
    (and the per-layer ``multicore`` mode) run one share of the batch per core.
    This sets ``jax_num_cpu_devices`` and must run before JAX initialises its
    backends (before the first array is created). Calling it again with the count
    already in effect is a no-op. GPU and TPU devices are not affected.

    Returns:
        the CPU device count in effect.

    Raises:
        ValueError: ``n < 1``.
        RuntimeError: JAX already started with a different CPU device count; the
            message says how to fix it.
    """
    if n is None:
        n = usable_cores()
    n = check_int("the device count", n)
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        current = len(jax.local_devices(backend="cpu"))
        if current == n:
            return n
        raise RuntimeError(
            f"JAX already started with {current} CPU device(s), so {n} cannot be exposed "
            "any more: call jlstm.parallel.use_devices() right after `import jax`, before "
            f"any JAX operation, or set JAX_NUM_CPU_DEVICES={n} in the environment"
        ) from None
    return n


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    timeout_s: int = 300,
) -> None:
    """Join a multi-process JAX job (``jax.distributed.initialize``), before any JAX work.

    With all three arguments ``None``, JAX detects the cluster from the environment
    it knows (SLURM, Open MPI, Kubernetes/GKE TPU, ``JAX_COORDINATOR_ADDRESS`` with
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``). Otherwise give all three. CPU
    processes exchange gradients through gloo (set here unless another CPU
    collectives implementation was chosen).

    Args:
        coordinator: ``"host:port"`` of process 0's coordination service.
        num_processes: processes in the job.
        process_id: this process's index, ``0 <= process_id < num_processes``.
        local_device_ids: the local devices this process uses (default: all).
        timeout_s: seconds to wait for every process to join before failing.

    Raises:
        ValueError: only some of the three arguments given, or inconsistent ones.
    """
    given = {
        "coordinator": coordinator,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    missing = [name for name, value in given.items() if value is None]
    if missing and len(missing) < len(given):
        raise ValueError(
            f"give coordinator, num_processes and process_id together (missing: "
            f"{', '.join(missing)}), or none of them to read the cluster's environment"
        )
    if not missing:
        if not isinstance(coordinator, str) or ":" not in coordinator:
            raise ValueError(f"coordinator must be 'host:port', got {coordinator!r}")
        num_processes = check_int("num_processes", num_processes)
        process_id = check_int("process_id", process_id, 0, num_processes - 1)
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=timeout_s,
    )


def device_summary() -> dict[str, Any]:
    """Where a run ran, for ``metrics.json``: platform, device kind and counts, process."""
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
    }


# -- meshes and placement -----------------------------------------------------------------

# Whole-step data parallelism on CPU pays once each device's share of a step (rows x
# time steps) hides the all-reduce and the threads' hand-offs. Measured with fit on the
# seed model, 2 cores, quiet machine (ms per step, one device -> whole step split):
# T=100: B=16 7.4 -> 10.2, B=32 14.7 -> 14.4, B=64 29 -> 21, B=128 58 -> 34, B=256
# 104 -> 66 (the per-layer multicore split: 70); T=4: B=64 1.2 -> 1.4, B=128 2.3 -> 2.5.
MIN_WORK_PER_DEVICE = 2048


def auto_mesh(
    batch_size: int, steps: int, *, ensemble: int | None = None, devices: int | None = None
) -> Mesh | None:
    """The mesh ``jlstm train`` trains on (``None``: one device), by a documented rule.

    * Several processes (``jax.distributed``): every device of every process.
    * ``devices`` given (``--devices N``): the first ``N`` devices (``N == 1``: none).
    * An ensemble of ``N`` members: the largest count of devices (at most ``devices``)
      that divides ``N`` (members are independent: splitting them costs nothing).
    * Otherwise every device, if each one's share of a step, ``batch_size / devices``
      rows of ``steps`` time steps, is at least ``MIN_WORK_PER_DEVICE`` (2048)
      row-steps; else one device (small steps run faster unsplit). The seed model at
      B = 256, T = 100 splits over 2 cores; the CLI's default B = 16 does not.
    """
    if jax.process_count() > 1:
        return data_mesh()
    limit = jax.device_count() if devices is None else devices
    if ensemble is not None and ensemble > 1:
        count = max(d for d in range(1, limit + 1) if ensemble % d == 0)
    elif devices is not None:
        count = devices
    else:
        count = limit if (batch_size // limit) * steps >= MIN_WORK_PER_DEVICE else 1
    return data_mesh(count) if count > 1 else None


def data_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with the axis ``"data"`` that batches are split on.

    Args:
        devices: ``None``: every device of every process (``jax.devices()``); an int
            ``n``: the first ``n`` of them (single process: the first ``n`` local
            devices); or the devices themselves.

    The axis is ``AxisType.Auto``: the step runs under jit with shardings and XLA
    partitions it (no explicit-sharding types are required of the model's code).
    """
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, int) and not isinstance(devices, bool):
        available = jax.devices()
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"asked for {devices} devices, {len(available)} exist "
                f"({available[0].platform}); on CPU expose more with "
                "jlstm.parallel.use_devices(n) before JAX starts"
            )
        devices = available[:devices]
    devices = list(devices)
    if not devices:
        raise ValueError("a mesh needs at least one device")
    return Mesh(np.array(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays split on their leading (row) axis over ``"data"``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays held whole on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put(x, sharding: NamedSharding):
    if _is_key(x):
        data = _put(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    # Another process holds part of the mesh: every process builds its own copies from
    # the (identical) host value.
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def place(tree, sharding: NamedSharding):
    """Every leaf of ``tree`` put with ``sharding``, in one process or across several.

    Each process passes the same (host or local) values; where the sharding spans
    other processes' devices, each process builds its own shards from its copy.
    Typed PRNG keys are supported; leaves already placed so are returned as they are.
    """
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def replicate(tree, mesh: Mesh):
    """Every leaf of ``tree`` held whole on every device (parameters, optimizer state).

    Works across processes: each process passes the same values (same seed), and
    typed PRNG keys are supported. Leaves already replicated on ``mesh`` are returned
    as they are.
    """
    sharding = replicated_sharding(mesh)
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def shard_batch(tree, mesh: Mesh):
    """Split every leaf's leading axis over ``"data"`` (one process: the whole batch).

    The leading axis must be a multiple of the device count (``pad_batch``). In a
    multi-process job use ``global_batch`` (each process holds only its rows).
    """
    sharding = batch_sharding(mesh)
    size = mesh.devices.size
    for leaf in jax.tree.leaves(tree):
        if np.shape(leaf)[0] % size:
            raise ValueError(
                f"a batch of {np.shape(leaf)[0]} rows does not split over {size} devices: "
                "pad it with jlstm.parallel.pad_batch"
            )
    return jax.device_put(tree, sharding)


def global_batch(local_tree, mesh: Mesh):
    """One global batch from each process's own rows (``make_array_from_process_local_data``).

    Process ``p`` passes its rows (the same count on every process, a multiple of its
    devices in ``mesh``); the global batch is the processes' rows in process order
    (in the order of ``mesh``'s devices). With one process it is ``shard_batch``.
    """
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree
    )


def padded_batch_size(batch_size: int, mesh: Mesh) -> int:
    """``batch_size`` rounded up to a multiple of the mesh's devices (extra rows: weight 0)."""
    size = mesh.devices.size
    return -(-batch_size // size) * size


def local_slice(rows: int, mesh: Mesh) -> slice:
    """The rows of a global batch of ``rows`` that this process feeds (``global_batch``).

    Every process holds the same data and draws the same batch indices (same seed);
    process ``p`` passes ``x[idx[local_slice(len(idx), mesh)]]``. ``rows`` must be a
    multiple of the mesh's devices (``padded_batch_size``). One process: every row.
    """
    size = mesh.devices.size
    if rows % size:
        raise ValueError(
            f"a global batch of {rows} rows does not split over {size} devices: "
            "use jlstm.parallel.padded_batch_size"
        )
    mine = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == jax.process_index()]
    if not mine or mine != list(range(mine[0], mine[0] + len(mine))):
        raise ValueError("this process's devices must be one contiguous block of the mesh")
    per_device = rows // size
    return slice(mine[0] * per_device, (mine[-1] + 1) * per_device)


def local_copy(tree):
    """This process's copy of a replicated pytree, on one local device.

    For work outside the sharded step: evaluation with an unsharded program,
    predictions, checkpoints (process 0 writes). Keys are supported.
    """

    def one(x):
        if _is_key(x):
            data = one(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        if isinstance(x, jax.Array) and not x.sharding.is_fully_addressable:
            if not x.sharding.is_fully_replicated:
                raise ValueError("local_copy needs replicated arrays (a sharded batch is not)")
            return x.addressable_data(0)
        return x

    return jax.tree.map(one, tree)


def pad_batch(x, y, w, multiple: int):
    """Pad rows to a multiple of ``multiple`` with weight-0 rows (zeros in ``x`` and ``y``).

    ``w`` is the ``(B,)`` per-row weight of the training step's loss
    ``sum(row_loss * w) / sum(w)``, so padded rows change neither the loss nor the
    gradients. ``w=None`` means every real row has weight 1. NumPy in, NumPy out.

    Returns:
        ``(x, y, w)`` with ``ceil(B / multiple) * multiple`` rows; ``w`` float32.
    """
    x, y = np.asarray(x), np.asarray(y)
    rows = len(x)
    w = np.ones(rows, np.float32) if w is None else np.asarray(w, np.float32)
    extra = -rows % multiple
    if not extra:
        return x, y, w

    def pad(a):
        return np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)])

    return pad(x), pad(y), pad(w)


# -- the data-parallel step ---------------------------------------------------------------


def data_parallel(step: Callable, mesh: Mesh, *, donate_state: bool = False) -> Callable:
    """The training step ``(state, x, y, w) -> (state, loss)`` run data-parallel on ``mesh``.

    One jitted program: ``state`` (any pytree: ``TrainState``) replicated, ``x``,
    ``y``, ``w`` split on their leading axis over ``"data"``, outputs replicated. The
    gradient sum across devices is XLA's all-reduce. ``step`` is the library's step
    (``jlstm.train.make_train_step``), jitted or not.

    The returned function accepts:

    * ``state`` replicated on ``mesh`` (``replicate``; other placements are moved).
    * ``x``, ``y``, ``w`` as ``jax.Array`` s already sharded on ``mesh`` (``shard_batch``,
      ``global_batch``), or as host (NumPy) arrays holding *this process's rows*: one
      process, the whole batch; several, this process's share (``local_slice``;
      ``global_batch`` is applied). Host rows are padded with weight-0 rows to a multiple of this
      process's devices (``pad_batch``); ``w=None`` means all ones. Keep the batch size
      fixed (pad the last batch of an epoch) so the step compiles once.

    The step is traced under the mesh (``jax.set_mesh``), so nothing inside a layer
    re-partitions it: the per-layer ``multicore`` split steps aside and the kernels
    keep the sharded batch axis apart from the time axis (no all-gathers). This also
    makes several CPU devices per process work in a multi-process job.

    Args:
        step: ``(state, x, y, w) -> (state, loss)``.
        mesh: from ``data_mesh``.
        donate_state: let XLA reuse the input state's buffers for the output.
    """
    return _rows_parallel(step, mesh, outputs=2, donate_first=donate_state)


def data_parallel_eval(evaluate: Callable, mesh: Mesh) -> Callable:
    """An evaluation ``(params, x, y, w) -> (loss_sum, weight_sum)`` with the rows split.

    ``jlstm.train.make_eval_loss``'s function, compiled like ``data_parallel``'s step:
    ``params`` replicated, the rows over ``"data"``, the two sums replicated (XLA adds
    the devices' partial sums). Host arrays are this process's rows, padded with
    weight-0 rows, which add nothing to either sum.
    """
    return _rows_parallel(evaluate, mesh, outputs=2, donate_first=False)


def _rows_parallel(fn: Callable, mesh: Mesh, *, outputs: int, donate_first: bool) -> Callable:
    """``fn(tree, x, y, w)`` jitted with ``tree`` replicated, rows sharded, outputs replicated."""
    replicated = replicated_sharding(mesh)
    rows = batch_sharding(mesh)
    local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    compiled = jax.jit(
        fn,
        in_shardings=(replicated, rows, rows, rows),
        out_shardings=(replicated,) * outputs,
        donate_argnums=(0,) if donate_first else (),
    )

    def run(tree, x, y, w=None):
        if not isinstance(x, jax.Array):
            x, y, w = pad_batch(x, y, w, local)
            x, y, w = global_batch((x, y, w), mesh)
        elif w is None:
            ones = np.ones(x.shape[0], np.float32)
            w = jax.make_array_from_callback(ones.shape, rows, lambda index: ones[index])
        with jax.set_mesh(mesh):  # a partitioned program: the layers do not split it again
            return compiled(replicate(tree, mesh), x, y, w)

    run.jitted = compiled
    return run
