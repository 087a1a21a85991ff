"""Weight initializers: pure functions ``init(key, shape, dtype) -> Array``.

Each initializer is a small frozen dataclass (hashable, so it can sit in a
jit-static config, and serialisable as ``{"class_name", "config"}`` like
Keras) whose ``__call__`` takes an explicit PRNG key. Names resolve through
``get_initializer``, which also accepts instances, ``{"class_name": ...,
"config": ...}`` dicts (the Keras serialisation) and plain callables.

Definitions are Keras 3's (``keras.initializers``); fans of a 2-D ``(rows, cols)``
shape are ``fan_in = rows``, ``fan_out = cols``, of a 1-D ``(n,)`` shape both ``n``:

* ``glorot_uniform``: U(-l, l), ``l = sqrt(6 / (fan_in + fan_out))``.
* ``glorot_normal``: normal truncated at 2 sd, sd ``sqrt(2 / (fan_in + fan_out)) / 0.8796...``
  (the constant makes the *truncated* sd equal the target).
* ``lecun_uniform`` / ``lecun_normal``: as above with ``scale / fan_in``, scale 1.
* ``he_uniform`` / ``he_normal``: scale 2, ``fan_in``.
* ``orthogonal(gain)``: QR of a normal matrix with sign correction; a ``(H, 4H)``
  recurrent kernel gets orthonormal *rows* (``W @ W.T = gain**2 I``).
* ``identity(gain)``: ``gain * eye(rows, cols)`` (Keras 3). ``block_identity(gain)`` tiles
  an identity per gate across the ``4H`` columns, which is what Keras 2's LSTM did
  for a recurrent ``identity``.
* ``random_uniform`` U(-0.05, 0.05), ``random_normal`` N(0, 0.05), ``truncated_normal``
  N(0, 0.05) truncated at 2 sd; ``zeros``, ``ones``, ``constant(value)``.
* ``torch_lstm``: PyTorch's ``nn.LSTM`` default, U(-1/sqrt(H), 1/sqrt(H)) with ``H``
  read from the gate axis (last axis = ``4H``) unless given.

Random streams differ from Keras' (different key derivation), so values are
equal in distribution, not bit for bit; weights move between the two through
``jlstm.interop``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .registry import lookup, to_dict

InitializerFn = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]
InitializerSpec = str | InitializerFn | dict

__all__ = [
    "INITIALIZERS",
    "BlockIdentity",
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Identity",
    "Initializer",
    "InitializerSpec",
    "LecunNormal",
    "LecunUniform",
    "Ones",
    "Orthogonal",
    "RandomNormal",
    "RandomUniform",
    "TorchLSTM",
    "TruncatedNormal",
    "VarianceScaling",
    "Zeros",
    "compute_fans",
    "get_initializer",
    "initializer_to_dict",
]


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight shape, as Keras computes them."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class: subclasses are frozen dataclasses with a ``__call__(key, shape, dtype)``."""

    def __call__(self, key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32):
        raise NotImplementedError

    def get_config(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Zeros(Initializer):
    def __call__(self, key, shape, dtype=jnp.float32):
        del key
        return jnp.zeros(shape, dtype)


@dataclasses.dataclass(frozen=True)
class Ones(Initializer):
    def __call__(self, key, shape, dtype=jnp.float32):
        del key
        return jnp.ones(shape, dtype)


@dataclasses.dataclass(frozen=True)
class Constant(Initializer):
    value: float = 0.0

    def __call__(self, key, shape, dtype=jnp.float32):
        del key
        return jnp.full(shape, self.value, dtype)


@dataclasses.dataclass(frozen=True)
class RandomUniform(Initializer):
    minval: float = -0.05
    maxval: float = 0.05

    def __call__(self, key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, self.minval, self.maxval)


@dataclasses.dataclass(frozen=True)
class RandomNormal(Initializer):
    mean: float = 0.0
    stddev: float = 0.05

    def __call__(self, key, shape, dtype=jnp.float32):
        return self.mean + self.stddev * jax.random.normal(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class TruncatedNormal(Initializer):
    """Normal truncated at two standard deviations (before scaling), as Keras."""

    mean: float = 0.0
    stddev: float = 0.05

    def __call__(self, key, shape, dtype=jnp.float32):
        return self.mean + self.stddev * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


# sd of a standard normal truncated to [-2, 2]: dividing by it restores the target sd.
_TRUNCATED_SD = 0.87962566103423978


@dataclasses.dataclass(frozen=True)
class VarianceScaling(Initializer):
    scale: float = 1.0
    mode: str = "fan_in"
    distribution: str = "truncated_normal"

    def __post_init__(self):
        if self.scale <= 0:
            raise ValueError(f"VarianceScaling scale must be > 0, got {self.scale}")
        if self.mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode must be fan_in, fan_out or fan_avg, got {self.mode!r}")
        if self.distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                "distribution must be truncated_normal, untruncated_normal or uniform, "
                f"got {self.distribution!r}"
            )

    def __call__(self, key, shape, dtype=jnp.float32):
        fan_in, fan_out = compute_fans(tuple(shape))
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        var = self.scale / max(1.0, fan[self.mode])
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * var)
            return jax.random.uniform(key, shape, dtype, -limit, limit)
        if self.distribution == "untruncated_normal":
            return math.sqrt(var) * jax.random.normal(key, shape, dtype)
        sd = math.sqrt(var) / _TRUNCATED_SD
        return sd * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


@dataclasses.dataclass(frozen=True)
class GlorotUniform(VarianceScaling):
    """Glorot (Xavier) uniform: scale 1, ``fan_avg``, uniform."""

    mode: str = "fan_avg"
    distribution: str = "uniform"


@dataclasses.dataclass(frozen=True)
class GlorotNormal(VarianceScaling):
    """Glorot (Xavier) normal: scale 1, ``fan_avg``, truncated normal."""

    mode: str = "fan_avg"


@dataclasses.dataclass(frozen=True)
class LecunUniform(VarianceScaling):
    """LeCun uniform: scale 1, ``fan_in``, uniform."""

    distribution: str = "uniform"


@dataclasses.dataclass(frozen=True)
class LecunNormal(VarianceScaling):
    """LeCun normal: scale 1, ``fan_in``, truncated normal."""


@dataclasses.dataclass(frozen=True)
class HeUniform(VarianceScaling):
    """He (Kaiming) uniform: scale 2, ``fan_in``, uniform."""

    scale: float = 2.0
    distribution: str = "uniform"


@dataclasses.dataclass(frozen=True)
class HeNormal(VarianceScaling):
    """He (Kaiming) normal: scale 2, ``fan_in``, truncated normal."""

    scale: float = 2.0


@dataclasses.dataclass(frozen=True)
class Orthogonal(Initializer):
    gain: float = 1.0

    def __call__(self, key, shape, dtype=jnp.float32):
        if len(shape) < 2:
            raise ValueError(f"orthogonal needs a shape of rank >= 2, got {tuple(shape)}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        # QR in float32 at least: bfloat16 has no QR kernel and loses orthogonality.
        work = jnp.promote_types(dtype, jnp.float32)
        a = jax.random.normal(key, (max(rows, cols), min(rows, cols)), work)
        q, r = jnp.linalg.qr(a)
        q = q * jnp.sign(jnp.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(dtype)


@dataclasses.dataclass(frozen=True)
class Identity(Initializer):
    gain: float = 1.0

    def __call__(self, key, shape, dtype=jnp.float32):
        del key
        if len(shape) != 2:
            raise ValueError(f"identity needs a 2-D shape, got {tuple(shape)}")
        return self.gain * jnp.eye(*shape, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class BlockIdentity(Initializer):
    """``gain * [I, I, ...]``: an identity per ``rows``-wide column block (Keras 2 LSTM)."""

    gain: float = 1.0

    def __call__(self, key, shape, dtype=jnp.float32):
        del key
        if len(shape) != 2 or shape[1] % shape[0]:
            raise ValueError(f"block_identity needs a (n, k*n) shape, got {tuple(shape)}")
        return self.gain * jnp.tile(jnp.eye(shape[0], dtype=dtype), (1, shape[1] // shape[0]))


@dataclasses.dataclass(frozen=True)
class TorchLSTM(Initializer):
    """PyTorch ``nn.LSTM`` default U(-1/sqrt(H), 1/sqrt(H)); ``H = shape[-1] // 4`` unless given."""

    hidden_size: int | None = None

    def __call__(self, key, shape, dtype=jnp.float32):
        hidden = self.hidden_size
        if hidden is None:
            if shape[-1] % 4:
                raise ValueError(
                    f"torch_lstm infers H from a last axis of 4H, got shape {tuple(shape)}; "
                    "pass TorchLSTM(hidden_size=H)"
                )
            hidden = shape[-1] // 4
        bound = 1.0 / math.sqrt(hidden)
        return jax.random.uniform(key, shape, dtype, -bound, bound)


INITIALIZERS: dict[str, type[Initializer]] = {
    "zeros": Zeros,
    "ones": Ones,
    "constant": Constant,
    "random_uniform": RandomUniform,
    "random_normal": RandomNormal,
    "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal,
    "he_uniform": HeUniform,
    "he_normal": HeNormal,
    "orthogonal": Orthogonal,
    "identity": Identity,
    "block_identity": BlockIdentity,
    "torch_lstm": TorchLSTM,
}
# Keras' own class names, so that a serialised Keras initializer resolves too.
_KERAS_ALIASES = {
    "IdentityInitializer": "identity",
    "OrthogonalInitializer": "orthogonal",
    "xavier_uniform": "glorot_uniform",
    "xavier_normal": "glorot_normal",
    "kaiming_uniform": "he_uniform",
    "kaiming_normal": "he_normal",
}


_HINT = "an instance from jlstm.initializers, or a callable (key, shape, dtype) -> array"


def get_initializer(spec: InitializerSpec) -> InitializerFn:
    """Resolve a name, ``{"class_name", "config"}`` dict, instance or callable.

    Unknown keys in a dict's ``config`` (Keras' ``seed``, ``dtype``) are ignored.
    """
    return lookup("initializer", spec, INITIALIZERS, aliases=_KERAS_ALIASES, hint=_HINT)


def initializer_to_dict(spec: InitializerSpec) -> str | dict:
    """JSON form of an initializer spec: the name for a default instance, else a dict.

    Raises:
        TypeError: for an arbitrary callable, which cannot be serialised.
    """
    if isinstance(spec, str):
        get_initializer(spec)  # an unknown name fails here, not when read back
        return spec
    return to_dict("initializer", get_initializer(spec), INITIALIZERS, short=True)
