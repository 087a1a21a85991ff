"""Initializer definitions (Keras 3): shapes, bounds, statistics, orthogonality, forget bias."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jlstm
from jlstm import initializers as I

KEY = jax.random.key(42)
SHAPE = (200, 400)  # fan_in 200, fan_out 400: large enough for tight statistics
# Statistical tolerances, for n = 80,000 draws with a fixed key (JAX's threefry draws are the
# same on every platform, so these hold everywhere once they hold): the sample variance of a
# uniform has relative sd sqrt((kurtosis - 1) / n) = sqrt(0.8 / n) = 0.0032, a normal's
# sample sd 1 / sqrt(2 n) = 0.0025; rel=0.03 is about 10 sd.


def _draw(spec, shape=SHAPE, dtype=jnp.float32):
    return np.asarray(I.get_initializer(spec)(KEY, shape, dtype), np.float64)


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("glorot_uniform", math.sqrt(6 / (200 + 400))),
        ("lecun_uniform", math.sqrt(3 / 200)),
        ("he_uniform", math.sqrt(6 / 200)),
        ("random_uniform", 0.05),
    ],
)
def test_uniform_bounds_and_variance(name, limit):
    w = _draw(name)
    assert w.shape == SHAPE
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit  # the whole interval is used
    # Var of U(-l, l) = l^2 / 3; 80k samples: relative sd of the estimate ~0.4%.
    assert w.var() == pytest.approx(limit**2 / 3, rel=0.03)
    assert abs(w.mean()) < 0.01 * limit


@pytest.mark.parametrize(
    ("name", "sd"),
    [
        ("glorot_normal", math.sqrt(2 / 600)),
        ("lecun_normal", math.sqrt(1 / 200)),
        ("he_normal", math.sqrt(2 / 200)),
        ("truncated_normal", 0.05),
    ],
)
def test_truncated_normals(name, sd):
    w = _draw(name)
    # Keras rescales variance-scaling normals so the *truncated* sd is the target;
    # TruncatedNormal(stddev) instead truncates N(0, stddev) at 2 sd.
    target = sd if name != "truncated_normal" else sd * 0.87962566103423978
    assert w.std() == pytest.approx(target, rel=0.03)
    bound = 2 * (sd / 0.87962566103423978 if name != "truncated_normal" else sd)
    assert np.abs(w).max() <= bound * (1 + 1e-6)


def test_random_normal():
    w = _draw("random_normal")
    assert w.std() == pytest.approx(0.05, rel=0.03)
    assert np.abs(w).max() > 0.15  # untruncated: 3 sd happens among 80k draws


@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (32, 32)])
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_orthogonal(shape, gain):
    w = _draw(I.Orthogonal(gain), shape)
    rows, cols = shape
    gram = w @ w.T if rows <= cols else w.T @ w
    # Householder QR in float32 is orthogonal to O(n u) (Higham, Thm 19.4) and the gram's own
    # float32 products add gamma_n |w||w|^T <= gamma_n gain^2 (unit-norm rows): n <= 64 gives
    # 64 u = 3.8e-6 each, so 1e-5 gain^2 holds with margin.
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(rows, cols)), atol=1e-5 * gain**2)


def test_orthogonal_recurrent_kernel_rows():
    cell = jlstm.init_cell_params(KEY, 3, 8)
    u = np.asarray(cell.recurrent_kernel, np.float64)  # (H, 4H): orthonormal rows
    np.testing.assert_allclose(u @ u.T, np.eye(8), atol=1e-5)  # as above, n = 32


def test_constants_and_identity():
    np.testing.assert_array_equal(_draw("zeros", (3, 4)), 0)
    np.testing.assert_array_equal(_draw("ones", (3, 4)), 1)
    np.testing.assert_array_equal(_draw(I.Constant(0.25), (3,)), 0.25)
    np.testing.assert_array_equal(_draw(I.Identity(2.0), (3, 5)), 2.0 * np.eye(3, 5))
    np.testing.assert_array_equal(_draw("block_identity", (3, 12)), np.tile(np.eye(3), (1, 4)))
    with pytest.raises(ValueError, match="2-D"):
        _draw("identity", (3,))


def test_torch_lstm_bounds():
    w = _draw("torch_lstm", (10, 4 * 25))  # H = 25
    assert np.abs(w).max() <= 1 / 5 and np.abs(w).max() > 0.19
    # 1,000 draws: the sample variance's relative sd is sqrt(0.8 / 1000) = 0.028: 3.5 sd.
    assert w.var() == pytest.approx((1 / 5) ** 2 / 3, rel=0.1)
    with pytest.raises(ValueError, match="hidden_size"):
        _draw("torch_lstm", (3, 7))


def test_layer_init_shapes_and_forget_bias():
    cell = jlstm.init_cell_params(KEY, 7, 8)
    assert cell.kernel.shape == (7, 32) and cell.recurrent_kernel.shape == (8, 32)
    assert cell.bias.shape == (32,)
    np.testing.assert_array_equal(cell.bias, np.r_[np.zeros(8), np.ones(8), np.zeros(16)])
    # Glorot over the fused (D, 4H) matrix, as Keras.
    assert np.abs(cell.kernel).max() <= math.sqrt(6 / (7 + 32))

    cell = jlstm.init_cell_params(KEY, 7, 8, forget_bias=5.0, bias_initializer=I.Constant(0.1))
    np.testing.assert_allclose(cell.bias, np.r_[np.full(8, 0.1), np.full(8, 5.0), np.full(16, 0.1)])

    cell = jlstm.init_cell_params(KEY, 7, 8, unit_forget_bias=False, bias_initializer="ones")
    np.testing.assert_array_equal(cell.bias, np.ones(32))
    assert jlstm.init_cell_params(KEY, 7, 8, use_bias=False).bias is None


def test_same_key_same_weights_other_key_other_weights():
    a = jlstm.init_cell_params(jax.random.key(3), 4, 6)
    b = jlstm.init_cell_params(jax.random.key(3), 4, 6)
    c = jlstm.init_cell_params(jax.random.key(4), 4, 6)
    np.testing.assert_array_equal(a.kernel, b.kernel)
    assert not np.array_equal(a.kernel, c.kernel)


def test_resolution_and_serialisation():
    assert I.get_initializer("GlorotUniform") == I.GlorotUniform()
    assert I.get_initializer({"class_name": "Orthogonal", "config": {"gain": 2.0, "seed": 1}}) == (
        I.Orthogonal(2.0)
    )
    assert I.initializer_to_dict(I.Orthogonal(2.0)) == {
        "class_name": "orthogonal",
        "config": {"gain": 2.0},
    }
    assert I.initializer_to_dict(I.HeNormal()) == "he_normal"
    with pytest.raises(ValueError, match="unknown initializer"):
        I.get_initializer("glorot")
    with pytest.raises(TypeError, match="cannot serialise"):
        I.initializer_to_dict(lambda k, s, d: jnp.zeros(s, d))
    with pytest.raises(ValueError, match="scale must be > 0"):
        I.VarianceScaling(scale=0.0)


def test_callable_initializer():
    cell = jlstm.init_cell_params(KEY, 2, 3, kernel_initializer=lambda k, s, d: jnp.full(s, 7.0, d))
    np.testing.assert_array_equal(cell.kernel, 7.0)
