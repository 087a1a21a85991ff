"""Keras 3 import and export: the seed's model from a ``.keras`` file written by Keras,
``to_keras`` of jlstm models, round trips both ways, functional chains, and clear
errors for what jlstm does not have."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import jlstm
from jlstm import constraints as C
from jlstm import regularizers as R
from jlstm.interop.keras import load_keras, to_keras

from . import reference as ref
from .keras_helpers import APPLY, ATOL, MASK, np32, parity_bound, random_params, randomize

B, T = MASK.shape


def _seed_model(dropout: bool = False):
    """The seed tutorial's model, as its code builds it (Keras 3 spelling of the imports)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3 prefers an Input layer to input_shape=
        model = keras.Sequential()
        model.add(keras.layers.LSTM(64, return_sequences=True, input_shape=(None, 1)))
        model.add(keras.layers.LSTM(32, return_sequences=True))
        model.add(keras.layers.LSTM(16))
        if dropout:
            model.add(keras.layers.Dropout(0.2))
        model.add(keras.layers.Dense(1, activation="linear"))
    model.compile(loss="mse", optimizer="adam")
    return model


@pytest.fixture(scope="module")
def series():
    # (samples, steps=4, dim=1): four past values predict the next, as in the seed.
    return np.random.default_rng(0).normal(size=(8, 4, 1)).astype("float32")


def test_seed_keras_file_loads_and_predicts_identically(tmp_path, series):
    model = _seed_model()
    randomize(model, np.random.default_rng(1), scale=0.3)
    path = tmp_path / "seed.keras"
    model.save(path)
    config, params = load_keras(path)
    # It is exactly jlstm's default config: the seed model.
    assert config == jlstm.ModelConfig()
    want = model.predict(series, verbose=0)
    got = APPLY(params, jnp.asarray(series), config)
    ref.assert_within(np32(got), want, parity_bound(params, series), err_msg="seed model")


def test_seed_with_its_commented_dropout_layer(series):
    model = _seed_model(dropout=True)
    config, params = load_keras(model)
    assert config.output_dropout == (0.0, 0.0, 0.2)
    ref.assert_within(
        np32(APPLY(params, jnp.asarray(series), config)),
        model.predict(series, verbose=0),
        parity_bound(params, series),
        err_msg="seed model with dropout (inference)",
    )


RICH = jlstm.ModelConfig(
    input_size=2,
    layer_sizes=(5, 4, 3),
    output_size=2,
    return_sequences=True,
    head_activation="tanh",
    activation=("tanh", "softsign", "relu"),
    recurrent_activation=("hard_sigmoid", "sigmoid", "hard_sigmoid"),
    use_bias=(True, False, True),
    implementation=(1, "auto", "auto"),
    go_backwards=(False, True, False),
    # unroll=True where Keras' JAX unroll path agrees with its loop (zero initial state,
    # previous-output masking); see test_keras_unroll_quirk_is_not_copied.
    unroll=(True, False, False),
    zero_output_for_mask=(False, True, False),
    bidirectional=(False, False, "ave"),
    unit_forget_bias=(True, True, False),
    kernel_initializer=("glorot_uniform", "he_normal", jlstm.initializers.Orthogonal(0.5)),
    recurrent_regularizer=R.L2(0.01),
    bias_constraint=(C.NonNeg(), None, None),
    # A float32-exact factor: Keras' L1 stores its factor as a float32 tensor.
    activity_regularizer=(None, R.L1(0.125), None),
    dropout=0.1,
    recurrent_dropout=(0.0, 0.2, 0.0),
    output_dropout=(0.25, 0.0, 0.0),
    input_dropout=0.1,
    mask_value=0.0,
    head_kernel_constraint=C.MaxNorm(3.0),
)


def test_to_keras_predicts_identically_and_round_trips(tmp_path):
    params = random_params(RICH, 3)
    x = np.random.default_rng(4).normal(size=(B, T, 2)).astype("float32")
    x[~MASK] = 0.0
    model = to_keras(RICH, params)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Masking",
        "Dropout",
        "LSTM",
        "Dropout",
        "LSTM",
        "Bidirectional",
        "Dense",
    ]
    want = np32(APPLY(params, jnp.asarray(x), RICH))
    np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=ATOL, rtol=0)
    # jlstm -> Keras -> jlstm: the same config and exactly the same weights.
    back_config, back_params = load_keras(model)
    assert back_config == RICH
    for a, b in zip(jax.tree.leaves(back_params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # ... and through a .keras file written by Keras.
    path = tmp_path / "rich.keras"
    model.save(path)
    file_config, file_params = load_keras(path)
    # Keras' config omits `implementation` (constructor-only): a file comes back with
    # Keras' default, read as "auto". It never changes the outputs.
    assert file_config.implementation == "auto"
    assert dataclasses.replace(file_config, implementation=RICH.implementation) == RICH
    np.testing.assert_allclose(
        np32(APPLY(file_params, jnp.asarray(x), file_config)), want, atol=ATOL, rtol=0
    )


def test_functional_keras_model_round_trips():
    """Keras -> jlstm -> Keras on a functional chain with an Activation after the head."""
    inputs = keras.Input((None, 3))
    h = keras.layers.Masking(-1.0)(inputs)
    h = keras.layers.Dropout(0.1)(h)
    h = keras.layers.LSTM(
        4,
        return_sequences=True,
        kernel_regularizer="l2",
        recurrent_constraint=keras.constraints.UnitNorm(axis=1),
    )(h)
    h = keras.layers.Dropout(0.3)(h)
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.LSTM(3, go_backwards=True, use_bias=False)(h)
    h = keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L1L2(0.1, 0.2))(h)
    outputs = keras.layers.Activation("sigmoid")(h)
    model = keras.Model(inputs, outputs)
    randomize(model, np.random.default_rng(5))
    config, params = load_keras(model)
    assert config.head_activation == "sigmoid" and config.mask_value == -1.0
    assert config.input_dropout == pytest.approx(0.1)
    assert config.output_dropout[0] == pytest.approx(1 - 0.7 * 0.5)  # two Dropouts fold
    assert config.kernel_regularizer == (R.L2(0.01), None)
    assert config.recurrent_constraint == (C.UnitNorm(axis=1), None)
    assert config.head_kernel_regularizer == R.L1L2(0.1, 0.2)
    x = np.random.default_rng(6).normal(size=(B, T, 3)).astype("float32")
    x[~MASK] = -1.0
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(np32(APPLY(params, jnp.asarray(x), config)), want, atol=ATOL, rtol=0)
    again = to_keras(config, params)
    np.testing.assert_allclose(again.predict(x, verbose=0), want, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_dtype_policies():
    model = keras.Sequential(
        [
            keras.Input((None, 1)),
            keras.layers.LSTM(8, dtype="mixed_bfloat16"),
            keras.layers.Dense(1, dtype="mixed_bfloat16"),
        ]
    )
    config, params = load_keras(model)
    assert config.param_dtype == "float32" and config.compute_dtype == "bfloat16"
    assert params.layers[0].kernel.dtype == jnp.float32
    x = np.random.default_rng(7).normal(size=(4, 5, 1)).astype("float32")
    # bfloat16 compute. Not derived: the worst-case bound, parity_bound(params, x,
    # dtype=ml_dtypes.bfloat16), is ~1.4 here (u = 2^-8 through gamma_10 and 5 steps), above
    # the outputs themselves (~0.7), so it tests nothing; 3e-2 (~4 bfloat16 ulps of 1) is an
    # observed bar, kept until a bound for float32 accumulation of bfloat16 operands exists.
    np.testing.assert_allclose(
        np32(APPLY(params, jnp.asarray(x), config)), model.predict(x, verbose=0), atol=3e-2
    )
    assert to_keras(config, params).layers[0].dtype_policy.name == "mixed_bfloat16"


def _chain(*layers, inputs=(None, 2)):
    return keras.Sequential([keras.Input(inputs), *layers])


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: _chain(keras.layers.GRU(3), keras.layers.Dense(1)), r"'gru.*' \(GRU\)"),
        (
            lambda: _chain(keras.layers.Conv1D(3, 2), keras.layers.LSTM(3), keras.layers.Dense(1)),
            r"\(Conv1D\)",
        ),
        (
            lambda: _chain(
                keras.layers.Bidirectional(keras.layers.LSTM(3), merge_mode=None),
            ),
            "merge_mode=None",
        ),
        (
            lambda: _chain(keras.layers.LSTM(3, activation="leaky_relu"), keras.layers.Dense(1)),
            "leaky_relu",
        ),
        (lambda: _chain(keras.layers.LSTM(3)), "no Dense head"),
        (
            lambda: _chain(keras.layers.Dense(2), keras.layers.LSTM(3), keras.layers.Dense(1)),
            "Dense layer before any LSTM",
        ),
        (
            lambda: _chain(
                keras.layers.LSTM(3),
                keras.layers.Dropout(0.2, noise_shape=(None, 1)),
                keras.layers.Dense(1),
            ),
            "noise_shape",
        ),
        (
            lambda: _chain(keras.layers.LSTM(3), keras.layers.Dense(2), keras.layers.Dense(1)),
            "one Dense head",
        ),
    ],
    ids=[
        "gru",
        "conv",
        "merge-none",
        "activation",
        "no-head",
        "dense-first",
        "noise-shape",
        "two-dense",
    ],
)
def test_unsupported_models_name_the_layer(build, match):
    with pytest.raises(ValueError, match=match):
        load_keras(build())


def test_unsupported_functional_graphs_and_files(tmp_path):
    a, b = keras.Input((None, 2)), keras.Input((None, 2))
    two_inputs = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.LSTM(3)(a + b)))
    with pytest.raises(ValueError, match="2 inputs"):
        load_keras(two_inputs)
    inputs = keras.Input((None, 2))
    seq, _, _ = keras.layers.LSTM(3, return_state=True, return_sequences=True)(inputs)
    out = keras.layers.Dense(1)(keras.layers.LSTM(2)(seq))
    with pytest.raises(ValueError, match="return_state"):
        load_keras(keras.Model(inputs, out))
    with pytest.raises(FileNotFoundError, match="no Keras model file"):
        load_keras(tmp_path / "missing.keras")
    (tmp_path / "model.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        load_keras(tmp_path / "model.h5")
    (tmp_path / "model.tflite").write_bytes(b"")
    with pytest.raises(ValueError, match=r"reads Keras 3 '\.keras' and HDF5"):
        load_keras(tmp_path / "model.tflite")
    with pytest.raises(ValueError, match="no Keras 3 equivalent"):
        to_keras(
            jlstm.ModelConfig(activation="hard_sigmoid_keras2"),
            jlstm.init_params(
                jax.random.key(0), jlstm.ModelConfig(activation="hard_sigmoid_keras2")
            ),
        )


def test_stateful_keras_layers_load_as_ordinary_layers():
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(B, T, 2)),
            keras.layers.LSTM(3, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    config, params = load_keras(model)
    x = np.random.default_rng(8).normal(size=(B, T, 2)).astype("float32")
    stateful = jlstm.StatefulModel(params, config, batch_size=B)
    for _ in range(2):  # two consecutive batches: the state carries in both
        np.testing.assert_allclose(np32(stateful(x)), np32(model(x)), atol=ATOL, rtol=0)
