"""The contestants of the benchmark: jlstm's modes and the peer libraries.

Every contestant builds, for one ``Case``, two zero-argument callables: ``forward``
(inference on the case's batch) and ``train`` (one full Adam training step: forward,
loss, gradients, update). Both return something ``jax.block_until_ready`` can wait on
(PyTorch and Keras return host values, already synchronous). JAX contestants also
report their compile times, measured with ``jit(...).lower(...).compile()``.

The models are the same everywhere:

* ``seed``: LSTM(64) -> LSTM(32) -> LSTM(16) -> Dense(1) on ``(B, T, 1)`` inputs, MSE
  on ``(B, 1)`` targets (the seed tutorial's Keras model). PyTorch's ``nn.LSTM`` needs
  equal sizes for ``num_layers > 1``, so it is three modules, as in Keras and Flax.
* ``layer``: one LSTM(H) on ``(B, T, D)`` returning its sequence, MSE on ``(B, T, H)``
  targets (DeepBench's recurrent layers).

Peers are imported lazily: a missing one is reported, not fatal.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark shape.

    Attributes:
        kind: ``"seed"`` (the 64-32-16 stack + Dense(1)) or ``"layer"`` (one LSTM layer).
        batch, steps: ``B``, ``T``.
        input_size: ``D``.
        layer_sizes: hidden sizes, bottom-up.
    """

    kind: str
    batch: int
    steps: int
    input_size: int
    layer_sizes: tuple[int, ...]

    @property
    def name(self) -> str:
        if self.kind == "seed":
            return f"seed B={self.batch} T={self.steps}"
        return f"layer H={self.layer_sizes[0]} D={self.input_size} B={self.batch} T={self.steps}"

    def forward_flops(self) -> float:
        """Matrix-product FLOPs of one forward pass: ``8 B T H (D + H)`` per layer."""
        flops, d = 0.0, self.input_size
        for h in self.layer_sizes:
            flops += 8.0 * self.batch * self.steps * h * (d + h)
            d = h
        return flops

    def train_flops(self) -> float:
        """A training step: the forward pass plus about twice that backward (3x)."""
        return 3.0 * self.forward_flops()

    def data(self, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(self.batch, self.steps, self.input_size)).astype(np.float32)
        if self.kind == "seed":
            y = rng.normal(size=(self.batch, 1)).astype(np.float32)
        else:
            y = rng.normal(size=(self.batch, self.steps, self.layer_sizes[-1])).astype(np.float32)
        return x, y


@dataclasses.dataclass
class Built:
    """A contestant ready to time on one case."""

    forward: Callable[[], object]
    train: Callable[[], object]
    compile_forward_s: float | None = None
    compile_train_s: float | None = None
    note: str = ""


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


# ----------------------------------------------------------------------------- jlstm


def build_jlstm(case: Case, implementation, learning_rate: float = 1e-3) -> Built:
    """jlstm with ``implementation`` (a mode name, 1, 2 or ``"auto"``)."""
    import jax
    import jax.numpy as jnp

    import jlstm

    x, y = case.data()
    x, y = jnp.asarray(x), jnp.asarray(y)
    if case.kind == "seed":
        config = jlstm.ModelConfig(
            input_size=case.input_size,
            layer_sizes=case.layer_sizes,
            output_size=1,
            implementation=implementation,
        )
        params = jlstm.init_params(jax.random.key(0), config)

        def predict(params, x):
            return jlstm.apply(params, x, config)
    else:
        (units,) = case.layer_sizes
        params = jlstm.init_cell_params(jax.random.key(0), case.input_size, units)

        def predict(params, x):
            return jlstm.lstm_layer(params, x, return_sequences=True, implementation=implementation)

    return _jax_built(predict, params, x, y, learning_rate)


def _jax_built(predict, params, x, y, learning_rate: float) -> Built:
    """A JAX contestant from ``predict(params, x)``: MSE, Adam, one ``jax.jit`` each.

    Compile times are ``jit(...).lower(...).compile()``. The same step is timed
    repeatedly from the same state (an update's cost does not depend on the values),
    so no donation or state threading is needed.
    """
    import jax
    import jax.numpy as jnp
    import optax

    opt = optax.adam(learning_rate)

    def loss(params, x, y):
        return jnp.mean((predict(params, x) - y) ** 2)

    def step(params, opt_state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = opt.init(params)
    fwd, t_fwd = _timed(lambda: jax.jit(predict).lower(params, x).compile())
    train, t_train = _timed(lambda: jax.jit(step).lower(params, opt_state, x, y).compile())
    return Built(
        forward=lambda: fwd(params, x),
        train=lambda: train(params, opt_state, x, y),
        compile_forward_s=t_fwd,
        compile_train_s=t_train,
    )


# ----------------------------------------------------------------------------- PyTorch


def build_torch(case: Case, learning_rate: float = 1e-3) -> Built:
    """PyTorch ``nn.LSTM`` (oneDNN on CPU, cuDNN on CUDA), Adam."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a).to(device) for a in case.data())
    sizes = (case.input_size, *case.layer_sizes)
    lstms = torch.nn.ModuleList(
        torch.nn.LSTM(d, h, batch_first=True) for d, h in itertools.pairwise(sizes)
    )
    head = torch.nn.Linear(case.layer_sizes[-1], 1) if case.kind == "seed" else None
    modules = torch.nn.ModuleList([*lstms, *([head] if head is not None else [])]).to(device)

    def predict(x):
        for lstm in lstms:
            x, _ = lstm(x)
        return head(x[:, -1]) if head is not None else x

    opt = torch.optim.Adam(modules.parameters(), lr=learning_rate)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.inference_mode():
            out = predict(x)
        sync()
        return out

    def train():
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((predict(x) - y) ** 2)
        loss.backward()
        opt.step()
        sync()
        return loss

    return Built(forward, train, note=f"torch {torch.__version__} on {device}")


# ----------------------------------------------------------------------------- Flax


def build_flax(case: Case, learning_rate: float = 1e-3) -> Built:
    """Flax nnx ``OptimizedLSTMCell`` under ``nnx.RNN``, Adam, as one ``jax.jit``.

    The module is split into a graph definition and its parameters once, and the
    step is a plain ``jax.jit`` over the parameters, so the time is Flax's computation,
    not ``nnx.jit``'s per-call graph traversal.
    """
    import jax.numpy as jnp
    from flax import nnx

    x, y = (jnp.asarray(a) for a in case.data())
    sizes = (case.input_size, *case.layer_sizes)
    seed = case.kind == "seed"

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.rnns = nnx.List(
                [
                    nnx.RNN(nnx.OptimizedLSTMCell(d, h, rngs=rngs), rngs=False)
                    for d, h in itertools.pairwise(sizes)
                ]
            )
            self.head = nnx.Linear(sizes[-1], 1, rngs=rngs) if seed else None

        def __call__(self, x):
            for rnn, h in zip(self.rnns, sizes[1:], strict=True):
                zeros = jnp.zeros((x.shape[0], h), x.dtype)
                x = rnn(x, initial_carry=(zeros, zeros))  # carry (c, h): no RNG needed
            return self.head(x[:, -1]) if seed else x

    graphdef, state, rest = nnx.split(Model(nnx.Rngs(0)), nnx.Param, ...)

    def predict(state, x):
        return nnx.merge(graphdef, state, rest)(x)

    return _jax_built(predict, state, x, y, learning_rate)


# ----------------------------------------------------------------------------- Keras


def build_keras(case: Case, learning_rate: float = 1e-3) -> Built:
    """Keras 3 on the JAX backend: ``predict_on_batch`` and ``train_on_batch``.

    ``KERAS_BACKEND=jax`` must be set before Keras is first imported (``bench.py``
    does it). The first call of each (trace and compile) is reported as compile time.
    """
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()!r}, not jax")
    keras.utils.set_random_seed(0)
    x, y = case.data()
    layers = [keras.Input((case.steps, case.input_size))]
    for k, h in enumerate(case.layer_sizes):
        last = k == len(case.layer_sizes) - 1
        layers.append(keras.layers.LSTM(h, return_sequences=case.kind != "seed" or not last))
    if case.kind == "seed":
        layers.append(keras.layers.Dense(1))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    _, t_fwd = _timed(lambda: model.predict_on_batch(x))
    _, t_train = _timed(lambda: model.train_on_batch(x, y))
    return Built(
        forward=lambda: model.predict_on_batch(x),
        train=lambda: model.train_on_batch(x, y),
        compile_forward_s=t_fwd,
        compile_train_s=t_train,
        note=f"keras {keras.__version__}",
    )


# ----------------------------------------------------------------------------- floor


def build_floor(case: Case):
    """The measured floor: ``T`` chained ``(B, H) @ (H, 4H)`` products per layer.

    Returns a zero-argument callable running them (one ``jax.jit``). The products
    of a recurrence are serial, so no LSTM on this device can beat this chain; the
    step's only other work is a ``tanh`` of one ``(B, H)`` block, which keeps XLA
    from simplifying the chain away.
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    def chain(u, h0):
        units = u.shape[0]

        def step(h, _):
            z = h @ u
            return jnp.tanh(z[:, :units] + z[:, 3 * units :]), None

        return lax.scan(step, h0, None, length=case.steps)[0]

    rng = np.random.default_rng(0)
    args = []
    for h in case.layer_sizes:
        u = jnp.asarray(rng.normal(size=(h, 4 * h)).astype(np.float32) / np.sqrt(h))
        args.append((u, jnp.zeros((case.batch, h), jnp.float32)))

    def all_layers(args):
        return [chain(u, h0) for u, h0 in args]

    fn = jax.jit(all_layers).lower(args).compile()
    return lambda: fn(args)
