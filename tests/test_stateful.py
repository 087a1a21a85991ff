"""State in, state out: Keras' ``stateful=True`` over consecutive batches (against real
Keras 3), per-sample resets, chunked equals whole, and the jitted streaming step."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm
from jlstm.interop.keras import to_keras
from jlstm.stateful import apply_stateful

from . import reference as ref
from .conftest import count_traces
from .keras_helpers import APPLY, ATOL, MASK, np32, random_params

B, T, D = MASK.shape[0], MASK.shape[1], 2


def _bound(params, config, x, mask):
    """Derived float32 error bound of ``APPLY`` on a unidirectional sequence model."""
    layers = [tuple(None if a is None else np.asarray(a) for a in p) for p in params.layers]
    head = (np.asarray(params.head.kernel), params.head.bias, config.head_activation)
    _, bound, _ = ref.stack_bound(
        layers,
        x,
        mask,
        [layer.activation for layer in config.layers],
        [layer.recurrent_activation for layer in config.layers],
        head,
    )
    return bound


@pytest.fixture(scope="module")
def chunks():
    """Three consecutive chunks of a (B, 3T, D) series, masked with every pattern."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, 3 * T, D)).astype("float32")
    mask = np.concatenate([MASK, MASK[::-1], MASK[:, ::-1]], axis=1)
    return x, mask


@pytest.mark.parametrize(
    "bidirectional", [False, pytest.param("ave", marks=pytest.mark.slow)], ids=["uni", "bi-ave"]
)
def test_stateful_batches_match_keras(chunks, bidirectional):
    x, mask = chunks
    xm = np.where(mask[..., None], x, -9.0).astype("float32")
    config = jlstm.ModelConfig(
        input_size=D,
        layer_sizes=(4, 3),
        output_size=2,
        return_sequences=True,
        mask_value=-9.0,
        recurrent_activation=("sigmoid", "hard_sigmoid"),
        bidirectional=bidirectional,
    )
    params = random_params(config, 1)
    keras_model = to_keras(config, params, stateful=True, batch_size=B)
    model = jlstm.StatefulModel(params, config, batch_size=B)
    # Three chunks with carried states are one 3T-step computation: twice its derived bound
    # (each side is within it); the bidirectional model has no bound helper: ATOL, which is
    # above twice the unidirectional bound of these sizes.
    bound = ATOL / 2 + np.zeros((B, 3 * T, 2))
    if not bidirectional:
        bound = _bound(params, config, x, mask)
    for k in range(3):
        chunk = xm[:, k * T : (k + 1) * T]
        ref.assert_within(
            np32(model.predict_on_batch(chunk)),
            np32(keras_model(chunk)),
            2 * bound[:, k * T : (k + 1) * T],
            err_msg=f"chunk {k}",
        )
    # reset_states(): both start over, and agree again.
    for layer in keras_model.layers:  # Keras 3 resets per layer
        if getattr(layer, "stateful", False):
            layer.reset_states()
    model.reset_states()
    chunk = xm[:, :T]
    ref.assert_within(np32(model(chunk)), np32(keras_model(chunk)), 2 * bound[:, :T])


def test_chunked_equals_whole_with_masks(chunks):
    x, mask = chunks
    config = jlstm.ModelConfig(input_size=D, layer_sizes=(4, 3), return_sequences=True)
    params = random_params(config, 2)
    whole, whole_states = APPLY(
        params, jnp.asarray(x), config, mask=jnp.asarray(mask), return_state=True
    )
    model = jlstm.StatefulModel(params, config, batch_size=B)  # jitted apply_stateful
    outs = []
    for k in range(3):
        piece = slice(k * T, (k + 1) * T)
        outs.append(model(x[:, piece], mask=jnp.asarray(mask[:, piece])))
    states = model.states
    # Two float32 runs of one computation: each within the derived bound of the exact one.
    layers = [tuple(np.asarray(a) for a in p) for p in params.layers]
    _, bound, state_bounds = ref.stack_bound(layers, x, mask)
    ref.assert_within(np32(jnp.concatenate(outs, 1)), np32(whole), 2 * bound, err_msg="outputs")
    for (bh, bc), ours, theirs in zip(state_bounds, states, whole_states, strict=True):
        ref.assert_within(np32(ours.h), np32(theirs.h), 2 * bh, err_msg="h")
        ref.assert_within(np32(ours.c), np32(theirs.c), 2 * bc, err_msg="c")


def test_per_sample_reset(chunks):
    x, _ = chunks
    config = jlstm.ModelConfig(input_size=D, layer_sizes=(4,), return_sequences=True)
    params = random_params(config, 3)
    first, second = jnp.asarray(x[:, :T]), jnp.asarray(x[:, T : 2 * T])
    _, states = apply_stateful(params, first, jlstm.init_states(config, B), config)
    reset = jnp.array([True, False, True, False, False])
    y, _ = apply_stateful(params, second, states, config, reset=reset)
    fresh = APPLY(params, second, config)  # from zero state
    carried = APPLY(params, second, config, initial_states=states)
    np.testing.assert_array_equal(np32(y)[np.asarray(reset)], np32(fresh)[np.asarray(reset)])
    np.testing.assert_array_equal(np32(y)[~np.asarray(reset)], np32(carried)[~np.asarray(reset)])
    zeroed = jlstm.reset_states(states, reset)
    assert np.all(np32(zeroed[0].h)[np.asarray(reset)] == 0)
    np.testing.assert_array_equal(np32(zeroed[0].c)[1], np32(states[0].c)[1])
    with pytest.raises(ValueError, match="batch shape"):
        jlstm.reset_states(states, jnp.array([True, False]))


def test_streaming_step_matches_the_full_sequence(chunks):
    x, mask = chunks
    x, mask = x[:, :T], mask[:, :T]
    config = jlstm.ModelConfig(
        input_size=D, layer_sizes=(4, 3), output_size=2, return_sequences=True
    )
    params = random_params(config, 4)
    full = np32(APPLY(params, jnp.asarray(x), config, mask=jnp.asarray(mask)))
    model = jlstm.StatefulModel(params, config, batch_size=B)
    with count_traces() as traces:
        steps = [np32(model.step(x[:, t], mask_t=mask[:, t])) for t in range(T)]
    bound = _bound(params, config, x, mask)
    ref.assert_within(np.stack(steps, 1), full, 2 * bound, err_msg="streamed")
    assert traces("stream_step") == 1  # traced once for all steps
    # Without return_sequences, step t's output is the model's output on the prefix.
    last_only = jlstm.ModelConfig(input_size=D, layer_sizes=(4, 3), output_size=2)
    states = jlstm.init_states(last_only, B)
    for t in range(3):
        y_t, states = jlstm.stream_step(params, states, jnp.asarray(x[:, t]), last_only)
    prefix = APPLY(params, jnp.asarray(x[:, :3]), last_only)
    ref.assert_within(np32(y_t), np32(prefix), 2 * _bound(params, last_only, x[:, :3], None)[:, -1])


def test_streaming_refuses_backward_layers_and_checks_batch():
    config = jlstm.ModelConfig(input_size=D, layer_sizes=(4,), bidirectional=True)
    params = jlstm.init_params(jax.random.key(0), config)
    with pytest.raises(ValueError, match="cannot stream"):
        jlstm.stream_step(params, jlstm.init_states(config, 2), jnp.ones((2, D)), config)
    config = jlstm.ModelConfig(input_size=D, layer_sizes=(4,))
    model = jlstm.StatefulModel(jlstm.init_params(jax.random.key(0), config), config, 2)
    with pytest.raises(ValueError, match="batch shape is fixed"):
        model.predict_on_batch(jnp.ones((3, T, D)))
