"""Keras HDF5 files read without Keras: Keras 2.2 / tf.keras 2.x full models (written
here with h5py in exactly their layout), weights-only files, Keras 3 ``.weights.h5``;
checked against an independent float64 NumPy Keras 2 forward pass."""

import json

import h5py
import numpy as np
import pytest

import jlstm
from jlstm.interop.keras import load_keras

from . import reference as ref

TOL = 1e-5

GLOROT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None},
}
ORTHO = {"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None}}
ZEROS = {"class_name": "Zeros", "config": {}}


def _lstm_config(name, units, *, tf=False, **overrides):
    """An LSTM layer config as Keras 2.2.4 (``tf=False``) or tf.keras 2.x writes it."""
    cfg = {
        "name": name,
        "trainable": True,
        "dtype": "float32",
        "return_sequences": False,
        "return_state": False,
        "go_backwards": False,
        "stateful": False,
        "unroll": False,
        "units": units,
        "activation": "tanh",
        "recurrent_activation": "sigmoid" if tf else "hard_sigmoid",
        "use_bias": True,
        "kernel_initializer": GLOROT,
        "recurrent_initializer": ORTHO,
        "bias_initializer": ZEROS,
        "unit_forget_bias": True,
        "kernel_regularizer": None,
        "recurrent_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "recurrent_constraint": None,
        "bias_constraint": None,
        "dropout": 0.0,
        "recurrent_dropout": 0.0,
        "implementation": 2 if tf else 1,
    }
    if tf:
        cfg["time_major"] = False
    cfg.update(overrides)
    return {"class_name": "LSTM", "config": cfg}


def _dense_config(name, units, activation="linear"):
    return {
        "class_name": "Dense",
        "config": {
            "name": name,
            "trainable": True,
            "dtype": "float32",
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": GLOROT,
            "bias_initializer": ZEROS,
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "activity_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
        },
    }


def _write_weights_group(group, layers, version):
    """Keras 2's ``save_weights_to_hdf5_group``: ``layers`` is [(name, [(weight_name,
    array)])]; a weight name ``a/b:0`` becomes nested groups, as h5py makes them."""
    group.attrs["layer_names"] = [name.encode("utf8") for name, _ in layers]
    group.attrs["backend"] = b"tensorflow"
    group.attrs["keras_version"] = version.encode("utf8")
    for name, weights in layers:
        g = group.create_group(name)
        g.attrs["weight_names"] = [w.encode("utf8") for w, _ in weights]
        for w, value in weights:
            dset = g.create_dataset(w, value.shape, dtype=value.dtype)
            dset[...] = value


def write_keras2_h5(path, model_config, layers, *, version="2.2.4"):
    """A full-model HDF5 file as Keras 2.x ``save_model`` writes it (``hdf5_format.py``):
    root attributes, then ``model_weights``."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = version.encode("utf8")
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(model_config).encode("utf8")
        f.attrs["training_config"] = json.dumps(
            {"loss": "mse", "metrics": [], "optimizer_config": {"class_name": "Adam"}}
        ).encode("utf8")
        _write_weights_group(f.create_group("model_weights"), layers, version)


def _cell_weights(rng, d, h, scale=0.5):
    return [
        rng.normal(scale=scale, size=(d, 4 * h)).astype(np.float32),
        rng.normal(scale=scale, size=(h, 4 * h)).astype(np.float32),
        rng.normal(scale=scale, size=(4 * h,)).astype(np.float32),
    ]


def _numpy_lstm(weights, x, ract, *, go_backwards=False, sequences=True):
    ys, h, _ = ref.lstm_layer(*weights, x, go_backwards=go_backwards, ract=ract)
    return ys if sequences else h


def _seed_case(rng, *, tf, version):
    """The seed tutorial's model (64 -> 32 -> 16 -> Dense(1)), Keras 2.2 or tf.keras style."""
    sizes, d = (64, 32, 16), 1
    names = ["lstm", "lstm_1", "lstm_2"] if tf else ["lstm_1", "lstm_2", "lstm_3"]
    layers_cfg, weights, layer_weights = [], [], []
    for k, (name, h) in enumerate(zip(names, sizes, strict=True)):
        extra = {"return_sequences": k < 2}
        if k == 0 and not tf:
            extra["batch_input_shape"] = [None, None, 1]
        layers_cfg.append(_lstm_config(name, h, tf=tf, **extra))
        w = _cell_weights(rng, d, h, scale=0.3)
        weights.append(w)
        prefix = f"{name}/lstm_cell{'_' + str(k) if k else ''}/" if tf else f"{name}/"
        parts = ("kernel:0", "recurrent_kernel:0", "bias:0")
        layer_weights.append((name, [(prefix + p, a) for p, a in zip(parts, w, strict=True)]))
        d = h
    dense_name = "dense" if tf else "dense_1"
    head = [rng.normal(size=(16, 1)).astype(np.float32), rng.normal(size=(1,)).astype(np.float32)]
    layers_cfg.append(_dense_config(dense_name, 1))
    layer_weights.append(
        (dense_name, [(f"{dense_name}/kernel:0", head[0]), (f"{dense_name}/bias:0", head[1])])
    )
    if tf:
        input_layer = {
            "class_name": "InputLayer",
            "config": {
                "batch_input_shape": [None, None, 1],
                "dtype": "float32",
                "sparse": False,
                "ragged": False,
                "name": "lstm_input",
            },
        }
        layers_cfg.insert(0, input_layer)
    model_config = {
        "class_name": "Sequential",
        "config": {"name": "sequential", "layers": layers_cfg},
    }
    ract = "sigmoid" if tf else "hard_sigmoid_keras2"

    def predict(x):
        h = x
        for k, w in enumerate(weights):
            h = _numpy_lstm(w, h, ract, sequences=k < 2)
        return h @ head[0] + head[1]

    return model_config, layer_weights, predict


@pytest.mark.parametrize(
    "tf, version", [(False, "2.2.4"), (True, "2.4.0"), (True, "2.15.0")], ids=str
)
def test_seed_model_full_h5(tmp_path, rng, tf, version):
    model_config, layer_weights, predict = _seed_case(rng, tf=tf, version=version)
    path = tmp_path / "model.h5"
    write_keras2_h5(path, model_config, layer_weights, version=version)
    config, params = load_keras(path)
    assert config.layer_sizes == (64, 32, 16) and config.input_size == 1
    assert config.recurrent_activation == ("sigmoid" if tf else "hard_sigmoid_keras2")
    x = rng.normal(size=(4, 6, 1)).astype(np.float32)
    np.testing.assert_allclose(jlstm.apply(params, x, config), predict(x), atol=TOL, rtol=TOL)


def test_keras3_version_keeps_keras3_hard_sigmoid(tmp_path, rng):
    model_config, layer_weights, _ = _seed_case(rng, tf=False, version="3.1.0")
    write_keras2_h5(tmp_path / "m.h5", model_config, layer_weights, version="3.1.0")
    config, _ = load_keras(tmp_path / "m.h5")
    assert config.recurrent_activation == "hard_sigmoid"


def test_keras21_list_config_bidirectional_dropout_activation(tmp_path, rng):
    """Keras <= 2.1 stored a Sequential config as a bare list; Bidirectional weights are
    the forward then the backward layer's."""
    fw, bw = _cell_weights(rng, 3, 4), _cell_weights(rng, 3, 4)
    top = _cell_weights(rng, 8, 2)
    head = [rng.normal(size=(2, 2)).astype(np.float32), rng.normal(size=(2,)).astype(np.float32)]
    inner = _lstm_config("lstm_1", 4, return_sequences=True)
    layers_cfg = [
        {
            "class_name": "Bidirectional",
            "config": {
                "name": "bidirectional_1",
                "trainable": True,
                "batch_input_shape": [None, 5, 3],
                "dtype": "float32",
                "layer": inner,
                "merge_mode": "concat",
            },
        },
        {
            "class_name": "Dropout",
            "config": {"name": "dropout_1", "rate": 0.25, "noise_shape": None},
        },
        _lstm_config("lstm_2", 2, activation="relu"),
        _dense_config("dense_1", 2),
        {"class_name": "Activation", "config": {"name": "activation_1", "activation": "tanh"}},
    ]
    names = ("kernel:0", "recurrent_kernel:0", "bias:0")
    bi = [(f"bidirectional_1/forward_lstm_1/{n}", a) for n, a in zip(names, fw, strict=True)]
    bi += [(f"bidirectional_1/backward_lstm_1/{n}", a) for n, a in zip(names, bw, strict=True)]
    layer_weights = [
        ("bidirectional_1", bi),
        ("dropout_1", []),
        ("lstm_2", [(f"lstm_2/{n}", a) for n, a in zip(names, top, strict=True)]),
        ("dense_1", [("dense_1/kernel:0", head[0]), ("dense_1/bias:0", head[1])]),
        ("activation_1", []),
    ]
    model_config = {"class_name": "Sequential", "config": layers_cfg}
    write_keras2_h5(tmp_path / "m.h5", model_config, layer_weights, version="2.1.6")
    config, params = load_keras(tmp_path / "m.h5")
    assert config.bidirectional == ("concat", False) and config.output_dropout == (0.25, 0.0)
    assert config.head_activation == "tanh"
    x = rng.normal(size=(3, 5, 3)).astype(np.float32)
    ract = "hard_sigmoid_keras2"
    forward = _numpy_lstm(fw, x, ract)
    backward = _numpy_lstm(bw, x, ract, go_backwards=True)[:, ::-1]
    h, _, _ = ref.lstm_layer(*top, np.concatenate([forward, backward], -1), act="relu", ract=ract)
    want = np.tanh(h[:, -1] @ head[0] + head[1])
    np.testing.assert_allclose(jlstm.apply(params, x, config), want, atol=TOL, rtol=TOL)


def test_weights_only_h5_needs_config(tmp_path, rng):
    _, layer_weights, predict = _seed_case(rng, tf=True, version="2.15.0")
    with h5py.File(tmp_path / "w.h5", "w") as f:
        _write_weights_group(f, layer_weights, "2.15.0")
    with pytest.raises(ValueError, match="pass config"):
        load_keras(tmp_path / "w.h5")
    config = jlstm.ModelConfig()  # the seed model
    loaded, params = load_keras(tmp_path / "w.h5", config=config)
    assert loaded is config
    x = rng.normal(size=(2, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(jlstm.apply(params, x, config), predict(x), atol=TOL, rtol=TOL)


def test_keras3_weights_h5(tmp_path, rng):
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("keras")
    import jax

    from jlstm.interop.keras import to_keras

    config = jlstm.ModelConfig(
        input_size=2,
        layer_sizes=(3, 4, 2),
        bidirectional=(False, "sum", False),
        mask_value=0.0,
        output_dropout=(0.1, 0.0, 0.0),
    )
    params = jlstm.init_params(jax.random.key(3), config)
    model = to_keras(config, params)
    model.save_weights(tmp_path / "m.weights.h5")
    with pytest.raises(ValueError, match="config"):
        load_keras(tmp_path / "m.weights.h5")
    _, loaded = load_keras(tmp_path / "m.weights.h5", config=config)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unsupported_layer_is_named(tmp_path, rng):
    model_config, layer_weights, _ = _seed_case(rng, tf=False, version="2.2.4")
    model_config["config"]["layers"].insert(1, {"class_name": "GRU", "config": {"name": "gru_1"}})
    write_keras2_h5(tmp_path / "m.h5", model_config, layer_weights)
    with pytest.raises(ValueError, match=r"'gru_1'.*GRU"):
        load_keras(tmp_path / "m.h5")


def test_tf_keras_functional_model(tmp_path, rng):
    """tf.keras 2.x saves a functional chain as class "Functional" with inbound_nodes."""
    model_config, layer_weights, predict = _seed_case(rng, tf=True, version="2.11.0")
    layers = model_config["config"]["layers"]
    previous = None
    for layer in layers:
        layer["name"] = layer["config"]["name"]
        layer["inbound_nodes"] = [] if previous is None else [[[previous, 0, 0, {}]]]
        previous = layer["name"]
    functional = {
        "class_name": "Functional",
        "config": {
            "name": "model",
            "layers": layers,
            "input_layers": [[layers[0]["name"], 0, 0]],
            "output_layers": [[previous, 0, 0]],
        },
    }
    write_keras2_h5(tmp_path / "f.h5", functional, layer_weights, version="2.11.0")
    config, params = load_keras(tmp_path / "f.h5")
    x = rng.normal(size=(2, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(jlstm.apply(params, x, config), predict(x), atol=TOL, rtol=TOL)
    layers[2]["inbound_nodes"] = [[[layers[0]["name"], 0, 0, {}]]]  # skips a layer
    write_keras2_h5(tmp_path / "g.h5", functional, layer_weights, version="2.11.0")
    with pytest.raises(ValueError, match="single chains"):
        load_keras(tmp_path / "g.h5")


def test_keras2_masking_model(tmp_path, rng):
    """Masking(batch_input_shape=...) first, as Keras 2.2 writes it; any mask pattern."""
    cell = _cell_weights(rng, 2, 3)
    head = [rng.normal(size=(3, 1)).astype(np.float32), rng.normal(size=(1,)).astype(np.float32)]
    masking = {
        "class_name": "Masking",
        "config": {
            "name": "masking_1",
            "trainable": True,
            "batch_input_shape": [None, None, 2],
            "dtype": "float32",
            "mask_value": 0.0,
        },
    }
    layers_cfg = [masking, _lstm_config("lstm_1", 3), _dense_config("dense_1", 1)]
    names = ("kernel:0", "recurrent_kernel:0", "bias:0")
    layer_weights = [
        ("masking_1", []),
        ("lstm_1", [(f"lstm_1/{n}", a) for n, a in zip(names, cell, strict=True)]),
        ("dense_1", [("dense_1/kernel:0", head[0]), ("dense_1/bias:0", head[1])]),
    ]
    model_config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers_cfg}}
    write_keras2_h5(tmp_path / "m.h5", model_config, layer_weights)
    config, params = load_keras(tmp_path / "m.h5")
    assert config.mask_value == 0.0
    x = rng.normal(size=(3, 6, 2)).astype(np.float32)
    x[0, 4:] = 0.0  # right padding
    x[1, 1] = 0.0  # a hole
    mask = np.any(x != 0.0, axis=-1)
    _, h, _ = ref.lstm_layer(*cell, x, mask=mask, ract="hard_sigmoid_keras2")
    want = h @ head[0] + head[1]
    np.testing.assert_allclose(jlstm.apply(params, x, config), want, atol=TOL, rtol=TOL)
