"""The stacked model: config, init, apply, per-layer options, dtypes and mixed precision."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jlstm

from . import reference as ref
from .conftest import count_traces

SEED = jlstm.ModelConfig(input_size=1, layer_sizes=(64, 32, 16), output_size=1)


def _keras_lstm_params(d, h):
    return 4 * h * (d + h + 1)


def _stack_bound(params, x, head_act="linear", dtype=np.float32):
    """Per-step float64 outputs of a unidirectional stack with a per-step head, and the
    derived bound on a ``dtype`` run's error (``reference.stack_bound``), computed on the
    values a ``dtype`` run sees (params and inputs rounded to ``dtype``)."""

    def seen(a):
        return None if a is None else np.asarray(jnp.asarray(a, dtype), np.float64)

    layers = [tuple(seen(a) for a in p) for p in params.layers]
    head = (seen(params.head.kernel), seen(params.head.bias), head_act)
    y, bound, _ = ref.stack_bound(layers, seen(x), head=head, dtype=dtype)
    return y, bound


def test_seed_model_shapes_and_parameter_count():
    params = jlstm.init_params(jax.random.key(0), SEED)
    shapes = [(p.kernel.shape, p.recurrent_kernel.shape, p.bias.shape) for p in params.layers]
    assert shapes == [
        ((1, 256), (64, 256), (256,)),
        ((64, 128), (32, 128), (128,)),
        ((32, 64), (16, 64), (64,)),
    ]
    assert params.head.kernel.shape == (16, 1) and params.head.bias.shape == (1,)
    # Keras' model.summary() of the seed model: 16896 + 12416 + 3136 + 17.
    want = _keras_lstm_params(1, 64) + _keras_lstm_params(64, 32) + _keras_lstm_params(32, 16) + 17
    assert jlstm.param_count(params) == want == 32465


def test_apply_matches_reference_stack(rng):
    config = jlstm.ModelConfig(
        input_size=2, layer_sizes=(5, 4, 3), output_size=2, head_activation="tanh"
    )
    params = jlstm.init_params(jax.random.key(1), config)
    x = rng.normal(size=(4, 6, 2)).astype(np.float32)
    y = jlstm.apply(params, jnp.asarray(x), config)
    want, bound = _stack_bound(params, x, "tanh")
    assert y.shape == (4, 2) and y.dtype == jnp.float32
    # float32 vs the float64 stack: the derived bound at the last step.
    ref.assert_within(y, want[:, -1], bound[:, -1], err_msg="apply vs float64 stack")


def test_return_sequences_head_and_states(rng):
    config = jlstm.ModelConfig(
        input_size=1, layer_sizes=(6, 5), output_size=3, return_sequences=True
    )
    params = jlstm.init_params(jax.random.key(2), config)
    x = jnp.asarray(rng.normal(size=(2, 7, 1)), jnp.float32)
    y, states = jlstm.apply(params, x, config, return_state=True)
    assert y.shape == (2, 7, 3)
    assert [s.h.shape for s in states] == [(2, 6), (2, 5)]
    last = jlstm.apply(
        params, x, jlstm.ModelConfig(input_size=1, layer_sizes=(6, 5), output_size=3)
    )
    _, bound = _stack_bound(params, x)
    # Two float32 runs of the same stack (head on every step vs the last): twice the bound.
    ref.assert_within(y[:, -1], last, 2 * bound[:, -1], err_msg="sequence head vs last")
    # Feeding the final states back continues the sequence.
    y2 = jlstm.apply(
        params,
        x[:, 4:],
        config,
        initial_states=jlstm.apply(params, x[:, :4], config, return_state=True)[1],
    )
    # In exact arithmetic the same function; each float32 run rounds the same
    # operations, so each is within the full run's bound of float64: twice it.
    ref.assert_within(y2, y[:, 4:], 2 * bound[:, 4:], err_msg="continued from states")


def test_per_layer_options(rng):
    config = jlstm.ModelConfig(
        input_size=3,
        layer_sizes=(4, 5),
        activation=("relu", "tanh"),
        recurrent_activation="hard_sigmoid",
        use_bias=(False, True),
        implementation=(1, 2),
        go_backwards=(True, False),
    )
    assert [c.activation for c in config.layers] == ["relu", "tanh"]
    assert [c.input_size for c in config.layers] == [3, 4]
    params = jlstm.init_params(jax.random.key(3), config)
    assert params.layers[0].bias is None and params.layers[1].bias is not None
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    p0, p1 = params.layers
    h0, _, _ = ref.lstm_layer(
        p0.kernel, p0.recurrent_kernel, None, x, act="relu", ract="hard_sigmoid", go_backwards=True
    )
    h1, _, _ = ref.lstm_layer(p1.kernel, p1.recurrent_kernel, p1.bias, h0, ract="hard_sigmoid")
    want = h1[:, -1] @ np.asarray(params.head.kernel, np.float64) + params.head.bias
    # float32 vs float64: each layer's derived bound (processing order, as the reference
    # returns it), the first layer's carried into the second, then the head's.
    b0, _, _ = ref.lstm_layer_bound(
        p0.kernel, p0.recurrent_kernel, None, x, go_backwards=True, act="relu",
        ract="hard_sigmoid",
    )  # fmt: skip
    b1, _, _ = ref.lstm_layer_bound(
        p1.kernel, p1.recurrent_kernel, p1.bias, h0, ract="hard_sigmoid", dx=b0
    )
    _, bound = ref.dense_bound(params.head.kernel, params.head.bias, h1[:, -1], b1[:, -1])
    ref.assert_within(jlstm.apply(params, jnp.asarray(x), config), want, bound, err_msg="options")


def test_config_validation_messages():
    with pytest.raises(ValueError, match="2 per-layer values but there are 3 layers"):
        jlstm.ModelConfig(activation=("tanh", "relu"))
    with pytest.raises(ValueError, match="unknown activation 'tanhh'"):
        jlstm.ModelConfig(recurrent_activation="tanhh")
    with pytest.raises(ValueError, match="units must be a positive integer"):
        jlstm.ModelConfig(layer_sizes=(8, 0))
    with pytest.raises(ValueError, match="at least one LSTM layer"):
        jlstm.ModelConfig(layer_sizes=())
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        jlstm.ModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match="unknown implementation"):
        jlstm.ModelConfig(implementation=7)
    with pytest.raises(ValueError, match="not a dtype name"):
        jlstm.ModelConfig(param_dtype="float33")
    with pytest.raises(ValueError, match="input_size is 1"):
        jlstm.apply(jlstm.init_params(jax.random.key(0), SEED), jnp.ones((2, 4, 3)), SEED)


def test_config_is_hashable_and_json_round_trips():
    config = jlstm.ModelConfig(
        layer_sizes=[8, 4],
        activation=("relu", "tanh"),
        kernel_initializer=jlstm.initializers.Orthogonal(2.0),
        recurrent_initializer="identity",
        dropout=0.1,
    )
    assert config.layer_sizes == (8, 4)
    text = json.dumps(config.to_dict())
    back = jlstm.ModelConfig.from_dict(json.loads(text))
    assert back.layers == config.layers and back.layer_sizes == config.layer_sizes
    assert hash(back) == hash(jlstm.ModelConfig.from_dict(json.loads(text)))
    with pytest.raises(TypeError, match="cannot serialise the activation"):
        jlstm.ModelConfig(activation=lambda v: v).to_dict()
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        jlstm.ModelConfig.from_dict({"layer_size": [3]})


def test_jit_does_not_recompile(rng):
    def predict(params, x, config):
        return jlstm.apply(params, x, config)

    predict = jax.jit(predict, static_argnames="config")
    params = jlstm.init_params(jax.random.key(0), SEED)
    x = jnp.asarray(rng.normal(size=(8, 4, 1)), jnp.float32)
    with count_traces() as traces:
        predict(params, x, SEED)
        predict(params, x + 1.0, jlstm.ModelConfig(input_size=1, layer_sizes=(64, 32, 16)))
    assert traces("predict") == 1  # an equal config is the same static argument


def test_entry_points_jit_with_the_config_static_and_trace_once(rng):
    traces = []

    def head(v):  # a Python side effect: runs once per trace, never in compiled calls
        traces.append(v.shape)
        return v

    config = jlstm.ModelConfig(input_size=2, layer_sizes=(5, 3), head_activation=head)
    key = jax.random.key(3)
    x = jnp.asarray(rng.normal(size=(4, 6, 2)), jnp.float32)
    params = jlstm.init_params(key, config)
    y = jlstm.apply(params, x, config)
    jlstm.apply(params, x + 1.0, config)
    jlstm.apply(params, x, dataclasses.replace(config))  # equal config, same static argument
    assert len(traces) == 1
    jlstm.penalties.regularized_apply(params, x, config)
    jlstm.penalties.regularized_apply(params, x + 1.0, config)
    assert len(traces) == 2
    # The same bodies run op by op, as un-jitted JAX code runs.
    with jax.disable_jit():
        params_ops = jlstm.init_params(key, config)
        y_ops = jlstm.apply(params, x, config)
    # Glorot kernels are one scaled uniform draw (an ulp apart at most if fused
    # differently); the orthogonal recurrent kernel is the QR of the same normal draw,
    # whose Q moves by O(n u kappa) with n <= 20 rows and kappa ~ 3 for a 20 x 5
    # Gaussian: atol = 3 * 4 * 20 u covers both.
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_ops), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=3 * 4 * 20 * ref.unit_roundoff(np.float32))
    # Two float32 runs of one stack, each within stack_bound of float64: 2x the bound.
    _, bound, _ = ref.stack_bound(
        [tuple(p) for p in params.layers], x, head=(*params.head, "linear")
    )
    ref.assert_within(y, y_ops, 2 * bound[:, -1], err_msg="jit vs op by op")


def test_configs_with_dict_specs_are_hashable():
    spec = {"class_name": "Orthogonal", "config": {"gain": 2.0, "seed": None}}
    layer = jlstm.LayerConfig(units=3, input_size=2, kernel_initializer=spec)
    assert layer.kernel_initializer == jlstm.initializers.Orthogonal(2.0)
    assert hash(layer) == hash(jlstm.LayerConfig(units=3, input_size=2, kernel_initializer=spec))
    model = jlstm.ModelConfig(kernel_initializer=spec, head_kernel_initializer=spec)
    assert hash(model) == hash(jlstm.ModelConfig.from_dict(model.to_dict()))
    with pytest.raises(TypeError, match=r"LayerConfig.forget_bias = .* is not hashable"):
        jlstm.ModelConfig(forget_bias=np.ones(1))


def test_float64_under_x64(rng):
    x = rng.normal(size=(2, 5, 1))
    with jax.enable_x64(True):
        config = jlstm.ModelConfig(layer_sizes=(4, 3), param_dtype="float64")
        params = jlstm.init_params(jax.random.key(0), config)
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(params))
        y = jlstm.apply(params, jnp.asarray(x), config)
        assert y.dtype == jnp.float64
        # float64 vs the float64 reference (its own rounding included): the derived bound.
        want, bound = _stack_bound(params, x, dtype=np.float64)
        ref.assert_within(y, want[:, -1], bound[:, -1], err_msg="float64")
    with jax.enable_x64(False), pytest.raises(ValueError, match="jax_enable_x64"):
        jlstm.init_params(jax.random.key(0), config)


def test_bfloat16_mixed_precision_forward_and_training(rng):
    base = dict(input_size=1, layer_sizes=(16, 8), output_size=1)
    f32 = jlstm.ModelConfig(**base)
    mixed = jlstm.ModelConfig(**base, compute_dtype="bfloat16")
    params = jlstm.init_params(jax.random.key(0), f32)
    t = np.linspace(0, 8 * np.pi, 400)
    series = np.sin(t).astype(np.float32)
    x = jnp.asarray(np.stack([series[i : i + 10] for i in range(300)])[..., None])
    target = jnp.asarray(series[10:310, None])

    y32 = jlstm.apply(params, x, f32)
    y16 = jlstm.apply(params, x, mixed)
    assert y16.dtype == jnp.float32  # outputs come back in the parameter dtype
    # Each run within its derived bound of the float64 stack on the values it sees
    # (bfloat16 rounds params and inputs first; u = 2^-9), on 32 windows to keep the
    # bound's cost small.
    for y, dtype in ((y32, np.float32), (y16, jnp.bfloat16)):
        want, bound = _stack_bound(params, x[:32], dtype=dtype)
        ref.assert_within(y[:32], want[:, -1], bound[:, -1], err_msg=f"{dtype.__name__}")
    assert not np.array_equal(y16, y32)  # it really computed in bfloat16

    opt = optax.adam(1e-2)

    @jax.jit
    def step(p, s):
        loss, grads = jax.value_and_grad(
            lambda q: jnp.mean((jlstm.apply(q, x, mixed) - target) ** 2)
        )(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss, grads

    state = opt.init(params)
    losses = []
    for _ in range(40):
        params, state, loss, grads = step(params, state)
        losses.append(float(loss))
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert losses[-1] < 0.5 * losses[0]


def test_apply_rejects_params_made_for_another_config():
    """Each used to return a result silently (the shapes happened to broadcast or fit)."""
    x = jnp.ones((2, 5, 1))
    small = jlstm.ModelConfig(layer_sizes=(8, 4))
    params = jlstm.init_params(jax.random.key(0), small)
    cases = [
        (jlstm.ModelConfig(layer_sizes=(16, 4)), "layer 0.*kernel"),
        (jlstm.ModelConfig(layer_sizes=(8, 4), output_size=3), "head kernel"),
        (jlstm.ModelConfig(layer_sizes=(8, 4), use_bias=False), "use_bias=False"),
        (jlstm.ModelConfig(layer_sizes=(8, 4, 2)), "2 layer parameter sets for 3"),
        (jlstm.ModelConfig(layer_sizes=(8, 4), head_use_bias=False), "head bias"),
    ]
    for config, match in cases:
        with pytest.raises(ValueError, match=match):
            jlstm.apply(params, x, config)
    wide = jlstm.ModelConfig(input_size=3, layer_sizes=(8, 4))
    with pytest.raises(ValueError, match=r"layer 0.*input size 3"):
        jlstm.apply(params, jnp.ones((2, 5, 3)), wide)


@pytest.mark.parametrize(
    "shape", [(), (5,), (5, 1), (2, 0, 1)], ids=["rank0", "rank1", "rank2", "no-steps"]
)
def test_apply_names_the_expected_input_shape(shape):
    """Rank 0 gave an IndexError, T = 0 a TypeError, rank 1 and 2 were read as features."""
    config = jlstm.ModelConfig(layer_sizes=(4,))
    params = jlstm.init_params(jax.random.key(0), config)
    with pytest.raises(ValueError, match=r"\(batch\.\.\., steps, features\)"):
        jlstm.apply(params, jnp.ones(shape), config)
