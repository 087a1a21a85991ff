"""Time a H=512 layer and the seed model under the XLA_FLAGS in the environment.

Prints one JSON line of medians (ms); see benchmarks/README.md ("XLA:CPU library flags,
tried"). Run once per setting, each in a fresh process:

    XLA_FLAGS="--xla_cpu_use_onednn=true" python benchmarks/xla_flags.py
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jlstm
from jlstm.types import CellParams


def median_ms(f, *args, repeats=15):
    jax.block_until_ready(f(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def train_step(loss):
    opt = optax.adam(1e-3)

    @jax.jit
    def step(params, state, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    return step, opt.init


def layer_rows(rng, mode, h=512, b=16, t=25):
    params = CellParams(
        jnp.asarray(rng.normal(size=(h, 4 * h)) * 0.03, jnp.float32),
        jnp.asarray(rng.normal(size=(h, 4 * h)) * 0.03, jnp.float32),
        jnp.zeros((4 * h,), jnp.float32),
    )
    x = jnp.asarray(rng.normal(size=(b, t, h)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(b, t, h)), jnp.float32)

    def forward(p, x):
        return jlstm.lstm_layer(p, x, return_sequences=True, implementation=mode)

    step, init = train_step(lambda p, x, y: jnp.mean((forward(p, x) - y) ** 2))
    return {
        f"layer512 {mode} fwd": median_ms(jax.jit(forward), params, x),
        f"layer512 {mode} train": median_ms(step, params, init(params), x, y),
    }


def chain_floor(rng, h=512, b=16, t=25):
    u = jnp.asarray(rng.normal(size=(h, 4 * h)) * 0.03, jnp.float32)

    @jax.jit
    def chain(h0):
        return jax.lax.scan(lambda s, _: (jnp.tanh((s @ u)[:, :h]), None), h0, None, length=t)[0]

    return {"chain 25 (16,512)@(512,2048)": median_ms(chain, jnp.ones((b, h), jnp.float32))}


def seed_rows(rng, mode="fused_vjp"):
    config = jlstm.ModelConfig(
        input_size=1, layer_sizes=(64, 32, 16), output_size=1, implementation=mode
    )
    params = jlstm.init_params(jax.random.key(0), config)
    x = jnp.asarray(rng.normal(size=(256, 100, 1)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(256, 1)), jnp.float32)
    step, init = train_step(lambda p, x, y: jnp.mean((jlstm.apply(p, x, config) - y) ** 2))
    forward = jax.jit(lambda p, x: jlstm.apply(p, x, config))
    return {
        f"seed B256 T100 train {mode}": median_ms(step, params, init(params), x, y, repeats=7),
        f"seed B256 T100 fwd {mode}": median_ms(forward, params, x, repeats=7),
    }


def main():
    rng = np.random.default_rng(0)
    rows = {}
    for mode in ("fused_vjp", "keras2"):
        rows.update(layer_rows(rng, mode))
    rows.update(chain_floor(rng))
    rows.update(seed_rows(rng))
    rounded = {k: round(v, 2) for k, v in rows.items()}
    print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), **rounded}))


if __name__ == "__main__":
    main()
