"""Checks shared by every config and entry point, with the error texts they raise.

The lowest module of the library (it imports only NumPy): configs, layers, the
data layer and the train loop call these instead of writing their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sized

import numpy as np

__all__ = [
    "DROPOUT_NEEDS_KEY",
    "check_fields",
    "check_hashable",
    "check_int",
    "check_layer_count",
    "require_dropout_key",
]

# One text for every place that draws dropout noise (layer, stack, model).
DROPOUT_NEEDS_KEY = "dropout in training needs a PRNG key: pass key=jax.random.key(...)"


def check_int(
    name: str,
    value,
    minimum: int = 1,
    maximum: int | None = None,
    *,
    error: type[Exception] = ValueError,
) -> int:
    """``int(value)`` if it is an integer (not a bool) in ``[minimum, maximum]``.

    Args:
        name: what the value is, for the message (``"units"``, ``"--steps"``).
        minimum, maximum: inclusive bounds; ``maximum=None`` for none.
        error: the exception type to raise (the data layer raises ``DataError``).

    Raises:
        ``error``: naming ``name``, the bound and the value; with the default bounds
        the message is "``name`` must be a positive integer, got ...".
    """
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if minimum == 1 and maximum is None:
        if not is_int or value < 1:
            raise error(f"{name} must be a positive integer, got {value!r}")
        return int(value)
    if not is_int:
        raise error(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise error(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise error(f"{name} must be <= {maximum}, got {value!r}")
    return int(value)


def check_fields(cls: type, data: Mapping, *, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` if ``data`` has keys that are not fields of the dataclass ``cls``
    (a config's ``from_dict``: a misspelt key must not be dropped silently)."""
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise error(f"unknown {cls.__name__} fields {sorted(unknown)}")


def check_layer_count(layer_params: Sized, layer_configs: Sized, hint: str = "") -> None:
    """Raise a ``ValueError`` unless there is one parameter set per layer config."""
    if len(layer_params) != len(layer_configs):
        raise ValueError(
            f"{len(layer_params)} layer parameter sets for {len(layer_configs)} layer configs{hint}"
        )


def require_dropout_key(key) -> None:
    """Raise ``DROPOUT_NEEDS_KEY`` when dropout is active and ``key`` is ``None``."""
    if key is None:
        raise ValueError(DROPOUT_NEEDS_KEY)


def check_hashable(config) -> None:
    """Raise a ``TypeError`` naming the field that keeps a frozen config from hashing.

    A config is a static ``jit`` argument, so it must hash; ``ModelConfig`` and
    ``LayerConfig`` call this at construction, after resolving dict specs.
    """
    try:
        hash(config)
    except TypeError:
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            try:
                hash(value)
            except TypeError:
                raise TypeError(
                    f"{type(config).__name__}.{field.name} = {value!r} is not hashable, and "
                    "a config must be (it is a static jit argument): give a name, an instance "
                    "or a tuple instead of a list, dict or array"
                ) from None
        raise
