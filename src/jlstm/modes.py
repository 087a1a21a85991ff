"""Implementation modes: interchangeable kernels that run one layer over time.

Every mode computes the same function (``jlstm.cell`` equations over a sequence,
with Keras masking and dropout semantics) and differs only in how the work is
laid out for the hardware. The registry is shared by the layer code, the
conformance tests (``tests/test_modes.py`` proves each mode equal to a float64
reference in values and gradients) and the benchmark harness (which times
exactly the registered modes), so a mode that is benchmarked is a mode that is
tested.

A mode's ``run`` has the signature::

    run(params, xs, state, *, mask, input_mask, recurrent_mask, options)
        -> (ys, final_state)

with ``xs`` time-major ``(T, B..., D)``, ``mask`` ``(T, B...)`` bool or ``None``,
dropout masks as in ``cell_step`` (already drawn), ``options`` a
``RecurrenceOptions``, and ``ys`` ``(T, B..., H)``.

The modes (``list_modes()``; kernels in ``jlstm.kernels``):

=============  ==========================================================  ===========
name           what it does                                                forward AD
=============  ==========================================================  ===========
``keras1``     Keras implementation 1: scan of the cell, four per-gate      yes
               products per step (one dropout mask per gate)
``keras2``     Keras implementation 2: scan of the cell, one fused          yes
               product per step
``hoisted``    ``x @ W + b`` for all steps as one product, then Keras'      yes
               step; any activation
``fused``      one ``tanh`` over the whole gate array (exact rewrite of     yes
               the sigmoid gates), plain autodiff
``fused_jvp``  ``fused`` forward + custom JVP whose transpose is a          yes
               recurrence-only backward pass (weight gradients as
               whole-chunk products): fast reverse mode and forward mode
``fused_vjp``  ``fused`` forward + custom VJP with that backward pass       no
               written by hand (reverse mode only)
``multicore``  ``fused_jvp`` with the batch split over local CPU devices    yes
               (``use_cpu_devices``); CPU only
``cudnn``      cuDNN through ``jax.experimental.rnn``; GPU, float32, no     no
               masks; no ``vmap``, no higher-order derivatives; opt-in
=============  ==========================================================  ===========

``"auto"`` (the default) picks one per call with ``choose_mode``, from rules
measured by ``benchmarks/bench.py`` (see that function and ``benchmarks/README.md``),
and only among modes that work under every transform: ``jit``, ``grad``, ``vjp``,
``jvp``, ``jacfwd``, ``jacrev``, ``hessian``, ``linearize``, ``vmap``,
``jax.checkpoint``, ``shard_map`` and sharded inputs (``tests/test_transforms.py``).
``fused_vjp`` and ``cudnn`` are custom VJPs: forward mode through them fails, so
they are only run when named.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .activations import ActivationSpec
from .kernels import common, cudnn, fused, fused_jvp, fused_vjp, hoisted, multicore, scan
from .kernels.multicore import use_cpu_devices
from .types import Array, CellParams, LSTMState

__all__ = [
    "Mode",
    "RecurrenceOptions",
    "auto_mode_name",
    "choose_mode",
    "get_mode",
    "input_platform",
    "list_modes",
    "register_mode",
    "resolve_mode",
    "use_cpu_devices",
]


@dataclasses.dataclass(frozen=True)
class RecurrenceOptions:
    """Static options of one layer's recurrence (hashable: safe as a jit static)."""

    activation: ActivationSpec = "tanh"
    recurrent_activation: ActivationSpec = "sigmoid"
    unroll: int | bool = 1
    zero_output_for_mask: bool = False

    def scan_unroll(self, steps: int) -> int:
        """The ``lax.scan`` unroll factor for ``steps`` steps (``unroll=True``: all of them)."""
        return steps if self.unroll is True else max(int(self.unroll), 1)


@dataclasses.dataclass(frozen=True)
class Mode:
    """A registered implementation mode.

    Attributes:
        name: registry name (what ``ModelConfig(implementation=...)`` takes).
        run: the kernel (signature in the module docstring).
        gate_masks: dropout draws one mask per gate (Keras implementation 1) instead of one.
        supports_mask / supports_recurrent_dropout: whether the kernel handles step masks /
            recurrent dropout (every mode handles input dropout).
        supports_forward_ad: whether ``jax.jvp`` works through it (custom VJPs do not).
        standard_only: computes only the standard LSTM (``activation="tanh"``,
            ``recurrent_activation="sigmoid"``).
        dtypes: the floating dtypes it runs (``None``: any).
        platforms: the JAX platforms it runs on.
    """

    name: str
    run: Callable[..., tuple[Array, LSTMState]]
    gate_masks: bool = False
    supports_mask: bool = True
    supports_recurrent_dropout: bool = True
    supports_forward_ad: bool = True
    standard_only: bool = False
    dtypes: frozenset[str] | None = None
    platforms: frozenset[str] = frozenset({"cpu", "gpu", "tpu"})

    def unsupported(
        self,
        *,
        platform: str,
        mask: bool = False,
        recurrent_dropout: bool = False,
        standard: bool = True,
        dtype: str | None = None,
    ) -> str | None:
        """Why this mode cannot run a call with these features, or ``None`` if it can."""
        if mask and not self.supports_mask:
            return "masking"
        if recurrent_dropout and not self.supports_recurrent_dropout:
            return "recurrent dropout"
        if platform not in self.platforms:
            return f"platform {platform!r}"
        if not standard and self.standard_only:
            return "activations other than tanh/sigmoid"
        if dtype is not None and self.dtypes is not None and dtype not in self.dtypes:
            return f"dtype {dtype}"
        return None


_REGISTRY: dict[str, Mode] = {}
_ALIASES: dict[int | str, str] = {1: "keras1", 2: "keras2", "1": "keras1", "2": "keras2"}


def register_mode(mode: Mode, *, aliases: tuple[int | str, ...] = ()) -> Mode:
    """Add a mode to the registry (a name may be registered once)."""
    if mode.name in _REGISTRY or mode.name == "auto":
        raise ValueError(f"implementation mode {mode.name!r} is already registered")
    _REGISTRY[mode.name] = mode
    for alias in aliases:
        _ALIASES[alias] = mode.name
    return mode


def list_modes(platform: str | None = None) -> list[str]:
    """Names of the registered modes, optionally only those that run on ``platform``."""
    return [n for n, m in _REGISTRY.items() if platform is None or platform in m.platforms]


def get_mode(implementation: int | str) -> Mode:
    """The registered ``Mode`` for a name or Keras number (1, 2); ``"auto"`` included."""
    if implementation == "auto":
        return AUTO
    name = _ALIASES.get(implementation, implementation)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown implementation {implementation!r}; use 1, 2, 'auto' or one of {list_modes()}"
        ) from None


def resolve_mode(
    implementation: int | str,
    *,
    mask: bool = False,
    platform: str | None = None,
) -> Mode:
    """The mode that will run a layer call.

    ``"auto"`` returns a mode that picks a concrete one per call (``choose_mode``),
    when shapes, dtype and activations are known; a named mode that cannot run the
    call's features raises a ``ValueError`` naming them.
    """
    if implementation == "auto":
        return AUTO
    mode = get_mode(implementation)
    reason = mode.unsupported(platform=platform or jax.default_backend(), mask=mask)
    if reason:
        raise ValueError(
            f"implementation {mode.name!r} does not support {reason}; "
            "use implementation='auto', 1 or 2"
        )
    return mode


# The multicore mode pays once every device has enough work for its threads' start and
# join to vanish behind it, and while the products stay latency-bound (measured: the
# seed model at B = 256 and 1024, T >= 30 gains 1.2x to 1.8x with two devices; at
# B = 32, or at T = 4, it loses up to 4x; a H = 512 layer at B = 16 loses 1.3x).
# benchmarks/README.md.
MULTICORE_MIN_BATCH = 64
MULTICORE_MIN_STEPS = 16
MULTICORE_MAX_UNITS = 256


def choose_mode(
    *,
    platform: str,
    standard: bool,
    dtype: str,
    mask: bool,
    recurrent_dropout: bool,
    steps: int,
    batch: int,
    input_size: int,
    units: int,
    cpu_devices: int = 1,
) -> str:
    """The mode ``"auto"`` runs for a call with these static facts.

    Every mode it picks works under every JAX transform (``jvp``, ``grad``, ``vmap``,
    ``hessian``, ``shard_map``, shardings, ``jax.export``). Rules (measured with
    ``benchmarks/bench.py`` on XLA:CPU, see ``benchmarks/README.md``):

    * standard activations: ``fused_jvp`` (the fused-gate kernel whose custom JVP
      transposes into a recurrence-only backward pass); on CPU ``multicore`` instead
      when several CPU devices are exposed, divide the batch into shares of at least
      ``MULTICORE_MIN_BATCH`` sequences, ``T >= MULTICORE_MIN_STEPS`` and ``H <=
      MULTICORE_MAX_UNITS``.
    * other activations: ``hoisted`` when ``D >= H / 2`` (the hoisted product then
      saves more than its ``(T, B, 4H)`` buffer costs), else ``keras2``.
    * ``cudnn`` is never chosen: it is opt-in (``implementation="cudnn"``) until a GPU
      conformance and speed run is recorded (``bench.py --gpu``); it also lacks batching
      and higher-order derivatives (``jax.experimental.rnn``).
    * a symbolic ``steps`` (``jax.export``) runs ``keras2``, one plain scan.

    Args:
        platform: ``"cpu"``, ``"gpu"``, ...
        standard: activations are ``tanh`` / ``sigmoid``.
        dtype: compute dtype name.
        mask / recurrent_dropout: the call has a step mask / recurrent dropout.
        steps, batch, input_size, units: ``T``, flattened ``B``, ``D``, ``H`` (``T``
            and ``B`` may be symbolic ``jax.export`` dimensions).
        cpu_devices: CPU devices the batch may be split over (``multicore``; 1: none).
    """
    del dtype, mask, recurrent_dropout  # every kernel auto picks handles them
    if not isinstance(steps, int):
        return "keras2"
    if not standard:
        return "hoisted" if 2 * input_size >= units else "keras2"
    if platform == "cpu" and cpu_devices > 1 and isinstance(batch, int):
        per_device, rest = divmod(batch, cpu_devices)
        if not rest and per_device >= MULTICORE_MIN_BATCH:
            if units <= MULTICORE_MAX_UNITS and steps >= MULTICORE_MIN_STEPS:
                return "multicore"
    return "fused_jvp"


def input_platform(x) -> str:
    """The platform of the device(s) ``x`` lives on; ``jax.default_backend()`` when
    that is not known (a tracer inside ``jit``, or a NumPy array)."""
    if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
        try:
            return next(iter(x.devices())).platform
        except Exception:
            pass
    return jax.default_backend()


def auto_mode_name(
    shape: tuple[int, ...],
    dtype,
    units: int,
    *,
    activation: ActivationSpec = "tanh",
    recurrent_activation: ActivationSpec = "sigmoid",
    mask: bool = False,
    recurrent_dropout: bool = False,
    platform: str | None = None,
    cpu_devices: int | None = None,
) -> str:
    """The mode ``"auto"`` runs for one layer call (``choose_mode`` on the call's facts).

    Args:
        shape: the time-major inputs' shape ``(T, B..., D)`` as the mode receives them.
        dtype: their dtype.
        units: ``H``.
        activation / recurrent_activation: the layer's activations.
        mask / recurrent_dropout: the call has a step mask / recurrent dropout.
        platform: JAX platform; ``None``: ``jax.default_backend()``.
        cpu_devices: CPU devices ``multicore`` would split the batch over; ``None``:
            ``len(multicore.batch_devices(B))``.
    """
    platform = platform or jax.default_backend()
    batch = math.prod(shape[1:-1])
    if cpu_devices is None:
        cpu_devices = 1
        if platform == "cpu" and len(shape) == 3:
            cpu_devices = max(len(multicore.batch_devices(batch)), 1)
    return choose_mode(
        platform=platform,
        standard=common.is_standard(activation, recurrent_activation),
        dtype=jnp.dtype(dtype).name,
        mask=mask,
        recurrent_dropout=recurrent_dropout,
        steps=shape[0],
        batch=batch,
        input_size=shape[-1],
        units=units,
        cpu_devices=cpu_devices,
    )


def _auto_run(
    params: CellParams, xs, state: LSTMState, *, mask, input_mask, recurrent_mask, options
):
    """``"auto"``: dispatch to ``choose_mode``'s pick for this call (at trace time)."""
    cpu_devices = None
    if len(xs.shape) == 3 and multicore.already_partitioned(xs, state):
        cpu_devices = 1  # the caller partitioned the program: never re-shard it
    name = auto_mode_name(
        xs.shape,
        xs.dtype,
        params.recurrent_kernel.shape[0],
        activation=options.activation,
        recurrent_activation=options.recurrent_activation,
        mask=mask is not None,
        recurrent_dropout=recurrent_mask is not None,
        platform=input_platform(xs),
        cpu_devices=cpu_devices,
    )
    return _REGISTRY[name].run(
        params,
        xs,
        state,
        mask=mask,
        input_mask=input_mask,
        recurrent_mask=recurrent_mask,
        options=options,
    )


AUTO = Mode("auto", _auto_run)


register_mode(
    Mode(
        "keras1",
        scan.scan_cell(1),
        gate_masks=True,
    ),
)
register_mode(
    Mode(
        "keras2",
        scan.scan_cell(2),
    ),
)
register_mode(
    Mode(
        "hoisted",
        hoisted.run,
    ),
)
register_mode(
    Mode(
        "fused",
        fused.run,
        standard_only=True,
    ),
)
register_mode(
    Mode(
        "fused_jvp",
        fused_jvp.run,
        standard_only=True,
    ),
)
register_mode(
    Mode(
        "fused_vjp",
        fused_vjp.run,
        supports_forward_ad=False,
        standard_only=True,
    ),
)
register_mode(
    Mode(
        "multicore",
        multicore.wrap(fused_jvp.run),
        standard_only=True,
        platforms=frozenset({"cpu"}),
    ),
)
register_mode(
    Mode(
        "cudnn",
        cudnn.run,
        supports_mask=False,
        supports_recurrent_dropout=False,
        supports_forward_ad=False,
        standard_only=True,
        dtypes=frozenset({"float32"}),
        platforms=frozenset({"gpu"}),
    ),
)
