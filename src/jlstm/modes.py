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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from .activations import ActivationSpec
from .cell import cell_step
from .types import Array, CellParams, LSTMState

__all__ = [
    "Mode",
    "RecurrenceOptions",
    "get_mode",
    "list_modes",
    "register_mode",
    "resolve_mode",
]


@dataclasses.dataclass(frozen=True)
class RecurrenceOptions:
    """Static options of one layer's recurrence (hashable: safe as a jit static)."""

    activation: ActivationSpec = "tanh"
    recurrent_activation: ActivationSpec = "sigmoid"
    unroll: int | bool = 1
    zero_output_for_mask: bool = False


@dataclasses.dataclass(frozen=True)
class Mode:
    """A registered implementation mode.

    Attributes:
        name: registry name (what ``ModelConfig(implementation=...)`` takes).
        run: the kernel (signature in the module docstring).
        description: one line for ``list_modes`` and the benchmark tables.
        gate_masks: dropout draws one mask per gate (Keras implementation 1) instead of one.
        supports_mask / supports_dropout: whether the kernel handles step masks / dropout.
        supports_forward_ad: whether ``jax.jvp`` works through it (custom VJPs do not).
        platforms: the JAX platforms it runs on.
    """

    name: str
    run: Callable[..., tuple[Array, LSTMState]]
    description: str
    gate_masks: bool = False
    supports_mask: bool = True
    supports_dropout: bool = True
    supports_forward_ad: bool = True
    platforms: frozenset[str] = frozenset({"cpu", "gpu", "tpu"})

    def unsupported(self, *, mask: bool, dropout: bool, platform: str) -> str | None:
        """Why this mode cannot run a call with these features, or ``None`` if it can."""
        if mask and not self.supports_mask:
            return "masking"
        if dropout and not self.supports_dropout:
            return "dropout"
        if platform not in self.platforms:
            return f"platform {platform!r}"
        return None


_REGISTRY: dict[str, Mode] = {}
_ALIASES: dict[int | str, str] = {1: "keras1", 2: "keras2", "1": "keras1", "2": "keras2"}


def register_mode(mode: Mode, *, aliases: tuple[int | str, ...] = ()) -> Mode:
    """Add a mode to the registry (a name may be registered once)."""
    if mode.name in _REGISTRY:
        raise ValueError(f"implementation mode {mode.name!r} is already registered")
    _REGISTRY[mode.name] = mode
    for alias in aliases:
        _ALIASES[alias] = mode.name
    return mode


def list_modes(platform: str | None = None) -> list[str]:
    """Names of the registered modes, optionally only those that run on ``platform``."""
    return [n for n, m in _REGISTRY.items() if platform is None or platform in m.platforms]


def get_mode(implementation: int | str) -> Mode:
    """The registered ``Mode`` for a name or Keras number (1, 2)."""
    name = _ALIASES.get(implementation, implementation)
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown implementation {implementation!r}; use 1, 2, 'auto' or one of {list_modes()}"
        ) from None


def valid_implementation(implementation: int | str) -> bool:
    return implementation == "auto" or _ALIASES.get(implementation, implementation) in _REGISTRY


def resolve_mode(
    implementation: int | str,
    *,
    mask: bool = False,
    dropout: bool = False,
    platform: str | None = None,
) -> Mode:
    """The mode that will run a layer call.

    ``"auto"`` picks a mode by measured rules for the platform; a named mode
    that cannot run the call's features raises a ``ValueError`` naming them.
    """
    platform = platform or jax.default_backend()
    if implementation == "auto":
        return _REGISTRY["keras2"]
    mode = get_mode(implementation)
    reason = mode.unsupported(mask=mask, dropout=dropout, platform=platform)
    if reason:
        raise ValueError(
            f"implementation {mode.name!r} does not support {reason}; "
            "use implementation='auto', 1 or 2"
        )
    return mode


def _scan_cell(implementation: int):
    """A mode that scans ``cell_step`` over time: Keras' own formulation."""

    def run(
        params: CellParams,
        xs,
        state: LSTMState,
        *,
        mask,
        input_mask,
        recurrent_mask,
        options: RecurrenceOptions,
    ):
        def step(carry: LSTMState, inputs):
            x_t, m_t = inputs
            new, h = cell_step(
                params,
                carry,
                x_t,
                activation=options.activation,
                recurrent_activation=options.recurrent_activation,
                implementation=implementation,
                input_mask=input_mask,
                recurrent_mask=recurrent_mask,
            )
            if m_t is None:
                return new, h
            keep = m_t[..., None]
            # Keras: a masked step keeps the state and re-emits the previous output
            # (the previous h), or zeros with zero_output_for_mask.
            out = jnp.where(keep, h, 0 if options.zero_output_for_mask else carry.h)
            new = LSTMState(jnp.where(keep, new.h, carry.h), jnp.where(keep, new.c, carry.c))
            return new, out.astype(h.dtype)

        unroll = xs.shape[0] if options.unroll is True else max(int(options.unroll), 1)
        final, ys = lax.scan(step, state, (xs, mask), unroll=unroll)
        return ys, final

    return run


register_mode(
    Mode(
        "keras1",
        _scan_cell(1),
        "Keras implementation 1: lax.scan of the cell, four per-gate products per step",
        gate_masks=True,
    ),
)
register_mode(
    Mode(
        "keras2",
        _scan_cell(2),
        "Keras implementation 2: lax.scan of the cell, one fused product per step",
    ),
)
