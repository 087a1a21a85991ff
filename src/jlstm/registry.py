"""Name look-up and JSON form for the library's registries of frozen dataclasses.

Initializers, regularizers and constraints are each a table ``name -> class``
(or factory) of small frozen dataclasses. A spec for one of them is a name
(``"glorot_uniform"``, or the class name ``"GlorotUniform"``), Keras'
``{"class_name", "config"}`` dict, an instance, or a plain callable; ``lookup``
resolves any of these to a hashable object, and ``to_dict`` writes the JSON form
that ``lookup`` reads back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["from_keras_config", "lookup", "to_dict"]


def from_keras_config(cls: type, config: dict | None):
    """``cls(**config)`` for the dataclass ``cls``, ignoring keys it has no field for
    (Keras' ``seed``, ``dtype``, ``name``)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (config or {}).items() if k in fields})


def _entry(
    kind: str, name: Any, table: Mapping[str, Callable], aliases: Mapping[str, str], hint: str
):
    """The table entry for ``name``: an alias, a class name, or a key in any case."""
    if isinstance(name, str):
        name = aliases.get(name, name)
        for entry in table.values():
            if isinstance(entry, type) and entry.__name__ == name:
                return entry
        entry = table.get(name.lower())
        if entry is not None:
            return entry
    raise ValueError(f"unknown {kind} {name!r}; use one of {sorted(table)}, {hint}")


def lookup(
    kind: str,
    spec: Any,
    table: Mapping[str, Callable],
    *,
    aliases: Mapping[str, str] | None = None,
    hint: str = "",
    optional: bool = False,
):
    """Resolve ``spec`` against ``table`` (``name -> class or zero-argument factory``).

    Args:
        kind: what the table holds, for messages (``"initializer"``).
        spec: a name (table key in any case, or class name), a ``{"class_name",
            "config"}`` dict (unknown config keys such as Keras' ``seed`` are
            ignored), an instance or any callable (returned as is), or ``None`` when
            ``optional``.
        aliases: other names (Keras' own class names) mapped to table keys.
        hint: the other accepted forms, appended to the unknown-name message.
        optional: whether ``None`` is allowed (and returned).

    Raises:
        ValueError: an unknown name, or a dict without ``class_name``; the message
            lists the known names.
        TypeError: any other kind of spec.
    """
    aliases = aliases or {}
    if spec is None and optional:
        return None
    if isinstance(spec, str):
        return _entry(kind, spec, table, aliases, hint)()
    if isinstance(spec, dict):
        if "class_name" not in spec:
            raise ValueError(f"a {kind} dict needs 'class_name', got keys {sorted(spec)}")
        cls = _entry(kind, spec["class_name"], table, aliases, hint)
        if not isinstance(cls, type):  # a preset such as "l1_l2": a name, not a class
            raise ValueError(f"{spec['class_name']!r} names a preset {kind}, not a class")
        return from_keras_config(cls, spec.get("config"))
    if callable(spec):
        return spec
    allowed = "a name, dict, callable" + (" or None" if optional else "")
    raise TypeError(f"{kind} must be {allowed}, got {type(spec).__name__}")


def to_dict(
    kind: str,
    obj: Any,
    table: Mapping[str, Callable],
    *,
    short: bool = False,
) -> str | dict | None:
    """The JSON form of a resolved spec: ``{"class_name": name, "config": {...}}``.

    ``name`` is the table key of ``type(obj)``; ``config`` is ``obj.get_config()``
    (its dataclass fields). With ``short``, an instance equal to its class's default
    is written as the bare name. ``None`` stays ``None``.

    Raises:
        TypeError: for an object not made from ``table`` (an arbitrary callable),
            which cannot be serialised.
    """
    if obj is None:
        return None
    for name, entry in table.items():
        if entry is type(obj):
            config = obj.get_config()
            if short and (not config or obj == entry()):
                return name
            return {"class_name": name, "config": config}
    raise TypeError(
        f"cannot serialise the {kind} {obj!r}: use a name or an instance from jlstm.{kind}s"
    )
