"""Keras ``{"class_name", "config"}`` dicts to jlstm's dataclass instances."""

from __future__ import annotations

import dataclasses


def from_keras_config(cls: type, config: dict | None):
    """``cls(**config)`` for the dataclass ``cls``, ignoring keys it has no field for
    (Keras' ``seed``, ``dtype``, ``name``)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (config or {}).items() if k in fields})
