"""Stateful and streaming inference: state in, state out.

Keras' ``stateful=True`` keeps each layer's final ``(h, c)`` in variables and uses
them as the initial state of the next batch (sample ``i`` continues sample ``i``);
``reset_states()`` zeroes them. In jlstm the state is a value you pass and get back:

* ``init_states(config, batch_shape)``: zero states for every layer.
* ``apply_stateful(params, x, states, config, reset=...)``: run a batch from
  ``states`` and return ``(y, new_states)``; ``reset`` ``(B...,)`` zeroes the state of
  chosen samples first (a per-sample ``reset_states``, e.g. where a new series starts).
* ``stream_step(params, states, x_t, config)``: one time step ``(B..., D)`` through the
  whole model, for online prediction.
* ``StatefulModel``: the Keras pattern as an object: it holds ``params`` and the state
  and jit-compiles ``apply_stateful`` and ``stream_step`` once per shape, so
  ``model.predict_on_batch(x)`` over consecutive batches and ``model.step(x_t)`` over
  consecutive steps carry the state between calls.

Splitting a sequence into consecutive chunks and carrying the state gives the same
outputs and final state as running it whole (tested), with or without masks.
Bidirectional and ``go_backwards`` layers carry state chunk by chunk as Keras'
stateful layers do (each chunk read backwards); they cannot stream one step at a
time, and ``stream_step`` refuses them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .bidirectional import BidirectionalState
from .cell import zero_state
from .model import ModelConfig, apply
from .types import Array, ModelParams

__all__ = [
    "StatefulModel",
    "apply_stateful",
    "init_states",
    "reset_states",
    "stream_step",
]


def init_states(config: ModelConfig, batch_shape: tuple[int, ...] | int, dtype=None) -> tuple:
    """Zero states for every layer of ``config``.

    Args:
        config: the model's ``ModelConfig``.
        batch_shape: ``(B...,)`` (an int means ``(B,)``).
        dtype: defaults to the model's compute dtype.

    Returns:
        A tuple with, per layer, ``LSTMState(h, c)`` (``BidirectionalState`` for a
        bidirectional layer), ``h`` and ``c`` each ``(B..., H_k)``.
    """
    if isinstance(batch_shape, int):
        batch_shape = (batch_shape,)
    dtype = jnp.dtype(dtype or config.compute_dtype or config.param_dtype)
    states = []
    for cfg in config.layers:
        state = zero_state(tuple(batch_shape), cfg.units, dtype)
        states.append(BidirectionalState(state, state) if cfg.bidirectional else state)
    return tuple(states)


def reset_states(states: tuple, reset: Array | None = None) -> tuple:
    """Zero the states of the samples where ``reset`` is true (all when ``None``).

    Args:
        states: per-layer states as ``init_states`` returns them, ``(B..., H_k)`` leaves.
        reset: ``(B...,)`` bool, or ``None`` to reset every sample (Keras'
            ``reset_states()``).

    Returns:
        States of the same structure, shapes and dtypes.
    """
    if reset is None:
        return jax.tree.map(jnp.zeros_like, states)
    reset = jnp.asarray(reset, bool)

    def one(leaf):
        if leaf.shape[:-1] != reset.shape:
            raise ValueError(
                f"reset must have the states' batch shape {leaf.shape[:-1]}, got {reset.shape}"
            )
        return jnp.where(reset[..., None], jnp.zeros((), leaf.dtype), leaf)

    return jax.tree.map(one, states)


def apply_stateful(
    params: ModelParams,
    x: Array,
    states: tuple,
    config: ModelConfig,
    *,
    reset: Array | None = None,
    mask: Array | None = None,
    seq_lengths: Array | None = None,
    training: bool = False,
    key: Array | None = None,
) -> tuple[Array, tuple]:
    """Run one batch from ``states`` and return the states to continue from.

    The Keras ``stateful=True`` step: batch ``n + 1`` starts where batch ``n`` ended,
    sample by sample. Pure and jit-friendly (``config`` and ``training`` static).

    Args:
        params: ``ModelParams``.
        x: ``(B..., T, D)``.
        states: per-layer states (``init_states`` or a previous call's).
        config: the ``ModelConfig``.
        reset: optional ``(B...,)`` bool: samples whose state is zeroed before this batch.
        mask, seq_lengths, training, key: as ``jlstm.apply``.

    Returns:
        ``(y, new_states)``: ``y`` as ``jlstm.apply`` returns it, ``new_states`` like
        ``states``.
    """
    if len(states) != len(config.layers):
        raise ValueError(f"{len(states)} layer states for {len(config.layers)} layers")
    if reset is not None:
        states = reset_states(states, reset)
    return apply(
        params,
        x,
        config,
        mask=mask,
        seq_lengths=seq_lengths,
        initial_states=states,
        return_state=True,
        training=training,
        key=key,
    )


def _check_streamable(config: ModelConfig) -> None:
    for idx, cfg in enumerate(config.layers):
        if cfg.bidirectional or cfg.go_backwards:
            raise ValueError(
                f"layer {idx} reads the sequence backwards (bidirectional or go_backwards): "
                "it needs the whole sequence and cannot stream step by step; use "
                "apply_stateful on whole chunks instead"
            )


def stream_step(
    params: ModelParams,
    states: tuple,
    x_t: Array,
    config: ModelConfig,
    *,
    mask_t: Array | None = None,
) -> tuple[Array, tuple]:
    """Advance the whole model by one time step (inference).

    The output at step ``t`` equals ``jlstm.apply`` on the sequence up to ``t``
    (with ``return_sequences``: its step ``t``). A masked step (``mask_t`` false, or
    all features equal to ``config.mask_value``) keeps the state and emits the
    previous output, as in a full-sequence call.

    Args:
        params: ``ModelParams``.
        states: per-layer states.
        x_t: ``(B..., D)`` inputs at this step.
        config: the ``ModelConfig`` (no bidirectional or ``go_backwards`` layers).
        mask_t: optional ``(B...,)`` bool.

    Returns:
        ``(y_t, new_states)``, ``y_t`` ``(B..., O)``.
    """
    _check_streamable(config)
    x_t = jnp.asarray(x_t)
    if x_t.ndim == 1:  # one unbatched sequence: apply takes (batch..., steps, features)
        add = functools.partial(jax.tree.map, lambda a: a[None])
        mask_1 = None if mask_t is None else jnp.asarray(mask_t)[None]
        states_1 = None if states is None else tuple(None if s is None else add(s) for s in states)
        y, new_states = stream_step(params, states_1, x_t[None], config, mask_t=mask_1)
        return y[0], jax.tree.map(lambda a: a[0], new_states)
    mask = None if mask_t is None else jnp.asarray(mask_t, bool)[..., None]
    y, new_states = apply(
        params, x_t[..., None, :], config, mask=mask, initial_states=states, return_state=True
    )
    if config.return_sequences:
        y = y[..., 0, :]
    return y, new_states


_apply_stateful_jit = jax.jit(apply_stateful, static_argnames=("config", "training"))
_stream_step_jit = jax.jit(stream_step, static_argnames=("config",))


class StatefulModel:
    """A model that keeps its state between calls: Keras' ``stateful=True``, and a
    streaming one-step predictor.

    Example::

        model = StatefulModel(params, config, batch_size=8)
        for chunk in chunks:                 # (8, T_chunk, D) consecutive pieces
            y = model.predict_on_batch(chunk)
        model.reset_states()
        for x_t in steps:                    # (8, D) one step at a time
            y_t = model.step(x_t)

    Both calls are jit-compiled (once per input shape) and read and write the same
    state, ``model.states``. Like Keras, the batch size is fixed.
    """

    def __init__(self, params: ModelParams, config: ModelConfig, batch_size: int | tuple[int, ...]):
        self.params = params
        self.config = config
        self.batch_shape = (batch_size,) if isinstance(batch_size, int) else tuple(batch_size)
        self.states = init_states(config, self.batch_shape)

    def _check_batch(self, x: Array, trailing: int) -> None:
        if x.shape[: x.ndim - trailing] != self.batch_shape:
            raise ValueError(
                f"a stateful model's batch shape is fixed at {self.batch_shape}, got input "
                f"of shape {x.shape}; make a new StatefulModel for another batch size"
            )

    def predict_on_batch(
        self,
        x: Array,
        *,
        mask: Array | None = None,
        reset: Array | None = None,
        training: bool = False,
        key: Array | None = None,
    ) -> Array:
        """Run ``x`` ``(B..., T, D)`` from the held state and keep the final state.

        Returns ``y`` as ``jlstm.apply``; ``reset`` ``(B...,)`` zeroes chosen samples first.
        """
        x = jnp.asarray(x)
        self._check_batch(x, 2)
        y, self.states = _apply_stateful_jit(
            self.params,
            x,
            self.states,
            self.config,
            reset=reset,
            mask=mask,
            training=training,
            key=key,
        )
        return y

    __call__ = predict_on_batch

    def step(self, x_t: Array, *, mask_t: Array | None = None) -> Array:
        """One streaming step: ``x_t`` ``(B..., D)`` -> ``y_t`` ``(B..., O)``, state carried."""
        x_t = jnp.asarray(x_t)
        self._check_batch(x_t, 1)
        y, self.states = _stream_step_jit(self.params, self.states, x_t, self.config, mask_t=mask_t)
        return y

    def reset_states(self, samples: Array | None = None) -> None:
        """Zero the state of every sample, or of those where ``samples`` ``(B...,)`` is true."""
        self.states = reset_states(self.states, samples)
