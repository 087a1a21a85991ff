"""The stacked model: config, init, apply, per-layer options, dtypes and mixed precision."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jlstm

from . import reference as ref

SEED = jlstm.ModelConfig(input_size=1, layer_sizes=(64, 32, 16), output_size=1)


def _keras_lstm_params(d, h):
    return 4 * h * (d + h + 1)


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
    h = x
    for p in params.layers:
        h, _, _ = ref.lstm_layer(p.kernel, p.recurrent_kernel, p.bias, h)
    want = np.tanh(h[:, -1] @ np.asarray(params.head.kernel, np.float64) + params.head.bias)
    assert y.shape == (4, 2) and y.dtype == jnp.float32
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


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
    np.testing.assert_allclose(y[:, -1], last, rtol=1e-6, atol=1e-7)
    # Feeding the final states back continues the sequence.
    y2 = jlstm.apply(
        params,
        x[:, 4:],
        config,
        initial_states=jlstm.apply(params, x[:, :4], config, return_state=True)[1],
    )
    np.testing.assert_allclose(y2, y[:, 4:], rtol=1e-5, atol=1e-6)


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
    np.testing.assert_allclose(
        jlstm.apply(params, jnp.asarray(x), config), want, rtol=1e-5, atol=1e-6
    )


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
    predict = jax.jit(jlstm.apply, static_argnames="config")
    params = jlstm.init_params(jax.random.key(0), SEED)
    x = jnp.asarray(rng.normal(size=(8, 4, 1)), jnp.float32)
    predict(params, x, SEED)
    size = predict._cache_size()
    predict(params, x + 1.0, jlstm.ModelConfig(input_size=1, layer_sizes=(64, 32, 16)))
    assert predict._cache_size() == size  # an equal config is the same static argument


def test_eager_calls_compile_once_and_equal_op_by_op(rng):
    config = jlstm.ModelConfig(input_size=2, layer_sizes=(5, 3), output_size=1)
    key = jax.random.key(3)
    x = jnp.asarray(rng.normal(size=(4, 6, 2)), jnp.float32)
    params = jlstm.init_params(key, config)
    y = jlstm.apply(params, x, config)
    # The same bodies run op by op, as un-jitted JAX code runs.
    params_ops = jlstm.model._init_params(key, config)
    y_ops = jlstm.model._apply(params_ops, x, config, None, None, None, False, False, None)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_ops), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(y, y_ops, rtol=1e-5, atol=1e-6)
    size = jlstm.model._apply_jit._cache_size()
    jlstm.apply(params, x + 1.0, jlstm.ModelConfig(input_size=2, layer_sizes=(5, 3)))
    assert jlstm.model._apply_jit._cache_size() == size


def test_float64_under_x64(rng):
    x = rng.normal(size=(2, 5, 1))
    with jax.enable_x64(True):
        config = jlstm.ModelConfig(layer_sizes=(4, 3), param_dtype="float64")
        params = jlstm.init_params(jax.random.key(0), config)
        assert all(a.dtype == jnp.float64 for a in jax.tree.leaves(params))
        y = jlstm.apply(params, jnp.asarray(x), config)
        assert y.dtype == jnp.float64
        h = x
        for p in params.layers:
            h, _, _ = ref.lstm_layer(p.kernel, p.recurrent_kernel, p.bias, h)
        want = h[:, -1] @ np.asarray(params.head.kernel) + np.asarray(params.head.bias)
        np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-13)
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
    # bfloat16 keeps 8 mantissa bits: agreement to a few 1e-2, not better.
    np.testing.assert_allclose(y16, y32, atol=3e-2)
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
        (jlstm.ModelConfig(layer_sizes=(8, 4, 2)), "2 LSTM layers"),
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
