"""Regularizers as loss terms and constraints after each update, against Keras 3: the
functions themselves, a model's ``sum(model.losses)``, one SGD training step, and the
optax wrappers."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import json

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest

import jlstm
from jlstm import constraints as C
from jlstm import optax_adapters as O
from jlstm import penalties as P
from jlstm import regularizers as R
from jlstm.interop.keras import to_keras

from . import reference as ref
from .keras_helpers import APPLY, np32

RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, 16)).astype("float32")
BIAS = RNG.normal(size=(16,)).astype("float32")


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (R.L1(0.1), keras.regularizers.L1(0.1)),
        (R.L2(0.2), keras.regularizers.L2(0.2)),
        (R.L1L2(0.1, 0.3), keras.regularizers.L1L2(0.1, 0.3)),
        (R.get_regularizer("l2"), keras.regularizers.get("l2")),
        (R.get_regularizer("l1l2"), keras.regularizers.get("l1l2")),
        (R.OrthogonalRegularizer(0.5), keras.regularizers.OrthogonalRegularizer(0.5)),
        (
            R.OrthogonalRegularizer(0.5, "columns"),
            keras.regularizers.OrthogonalRegularizer(0.5, "columns"),
        ),
    ],
    ids=["l1", "l2", "l1l2", "l2-name", "l1l2-name", "orth-rows", "orth-cols"],
)
def test_regularizers_match_keras(ours, theirs):
    # Keras applies regularizers to backend tensors (its NumPy path differs for columns).
    w = keras.ops.convert_to_tensor(W)
    if isinstance(ours, R.OrthogonalRegularizer):
        # Mean |cosine| of unit vectors of <= 16 entries: each cosine is off by at most
        # gamma_(16 + 4) (normalising included; its terms' |products| sum to <= 1), absolute.
        tol = {"atol": 2 * ours.factor * ref.sum_rtol(W.shape[1] + 4) / 2, "rtol": 0}
    else:
        # A sum of |w| or w^2 over the 48 weights, times the factor: 2 gamma_50 relative.
        tol = {"rtol": ref.sum_rtol(W.size + 2)}
    np.testing.assert_allclose(float(ours(jnp.asarray(W))), float(theirs(w)), **tol)
    spec = R.regularizer_to_dict(ours)
    assert R.get_regularizer(json.loads(json.dumps(spec))) == ours


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (C.MaxNorm(1.5), keras.constraints.MaxNorm(1.5)),
        (C.MaxNorm(1.0, axis=1), keras.constraints.MaxNorm(1.0, axis=1)),
        (C.MaxNorm(2.0, axis=(0, 1)), keras.constraints.MaxNorm(2.0, axis=[0, 1])),
        (C.NonNeg(), keras.constraints.NonNeg()),
        (C.UnitNorm(), keras.constraints.UnitNorm()),
        (C.UnitNorm(axis=1), keras.constraints.UnitNorm(axis=1)),
        (C.MinMaxNorm(0.5, 1.0, rate=0.7), keras.constraints.MinMaxNorm(0.5, 1.0, 0.7)),
        (C.get_constraint("max_norm"), keras.constraints.get("max_norm")),
    ],
    ids=["maxnorm", "maxnorm-ax1", "maxnorm-both", "nonneg", "unit", "unit-ax1", "minmax", "name"],
)
def test_constraints_match_keras(ours, theirs):
    arrays = (W, 0.1 * W) if getattr(ours, "axis", 0) != 0 else (W, BIAS, 0.1 * W)
    for w in arrays:  # kernel-like, bias-like, norms below the bounds
        # A norm over <= 48 entries, then a clip, a division and a product per element:
        # relative error <= gamma_(48 + 6) per side.
        np.testing.assert_allclose(
            np.asarray(ours(jnp.asarray(w))),
            np.asarray(theirs(keras.ops.convert_to_tensor(w))),
            rtol=ref.sum_rtol(W.size + 6),
            atol=0,
        )
    spec = C.constraint_to_dict(ours)
    assert C.get_constraint(json.loads(json.dumps(spec))) == ours


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="unknown regularizer"):
        R.get_regularizer("l3")
    with pytest.raises(ValueError, match="unknown constraint"):
        C.get_constraint("max_nrom")
    with pytest.raises(ValueError, match="factor"):
        R.L2(-1.0)
    with pytest.raises(TypeError, match="cannot serialise"):
        jlstm.ModelConfig(kernel_regularizer=lambda w: jnp.sum(w)).to_dict()


CONFIG = jlstm.ModelConfig(
    input_size=2,
    layer_sizes=(4, 3),
    output_size=2,
    bidirectional=("concat", False),
    kernel_regularizer=("l2", R.L1(0.02)),
    recurrent_regularizer=R.L1L2(0.01, 0.02),
    bias_regularizer=(None, {"class_name": "L2", "config": {"l2": 0.05}}),
    activity_regularizer=(R.L2(0.03), R.L1(0.04)),
    kernel_constraint=(C.MaxNorm(0.8), C.UnitNorm(axis=1)),
    recurrent_constraint=C.MinMaxNorm(0.2, 0.9, rate=0.5),
    bias_constraint=(C.NonNeg(), None),
    head_kernel_regularizer=R.L1(0.01),
    head_bias_regularizer=R.L2(0.1),
    head_activity_regularizer=R.L2(0.02),
    head_kernel_constraint=C.MaxNorm(0.5),
    head_bias_constraint=C.NonNeg(),
)


@pytest.fixture(scope="module")
def setup():
    params = jlstm.init_params(jax.random.key(0), CONFIG)
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.5, a.shape), a.dtype), params)
    x = rng.normal(size=(6, 5, 2)).astype("float32")
    y = rng.normal(size=(6, 2)).astype("float32")
    return params, x, y


def test_config_with_regularizers_and_constraints_is_hashable_and_json(setup):
    back = jlstm.ModelConfig.from_dict(json.loads(json.dumps(CONFIG.to_dict())))
    assert back == CONFIG and hash(back) == hash(CONFIG)
    assert P.has_weight_regularizer(CONFIG) and P.has_activity_regularizer(CONFIG)
    assert P.has_constraints(CONFIG) and not P.has_constraints(jlstm.ModelConfig())


def test_penalty_matches_keras_model_losses(setup):
    params, x, _ = setup
    model = to_keras(CONFIG, params)
    out = model(x)
    _, penalty = P.regularized_apply(params, jnp.asarray(x), CONFIG)
    # Sums of nonnegative penalty terms over every weight and activation: 2 gamma_n.
    n = sum(a.size for a in jax.tree.leaves(params)) + sum(int(np.size(v)) for v in model.losses)
    n += x.shape[0] * x.shape[1] * sum(CONFIG.layer_sizes) * 2  # activity terms, both halves
    np.testing.assert_allclose(float(penalty), float(sum(model.losses)), rtol=ref.sum_rtol(n))
    # The weight part alone: every Keras variable's regularizer on its value.
    weights_only = sum(
        float(v.regularizer(v.value)) for v in model.trainable_weights if v.regularizer
    )
    np.testing.assert_allclose(
        float(P.regularization_loss(params, CONFIG)), weights_only, rtol=ref.sum_rtol(n)
    )
    y = APPLY(params, jnp.asarray(x), CONFIG)
    # A bidirectional stack: no per-element bound helper; 1e-5 is about twice the per-layer
    # bound of such small layers (tests/reference.py lstm_layer_bound, H <= 4, T = 5).
    np.testing.assert_allclose(np32(y), np32(out), atol=1e-5)


def test_apply_constraints_matches_keras(setup):
    params, _, _ = setup
    model = to_keras(CONFIG, params)
    for v in model.trainable_weights:
        if v.constraint is not None:
            v.assign(v.constraint(v.value))
    projected = P.apply_constraints(params, CONFIG)
    back = to_keras(CONFIG, projected)
    for ours, theirs in zip(back.trainable_weights, model.trainable_weights, strict=True):
        # Norms over at most a kernel's entries, a clip, a division, a product (see above).
        n = int(np.size(ours.value)) + 6
        np.testing.assert_allclose(
            np32(ours.value), np32(theirs.value), rtol=ref.sum_rtol(n), atol=0
        )
    bare = jlstm.ModelConfig(
        input_size=2, layer_sizes=(4, 3), output_size=2, bidirectional=("concat", False)
    )
    assert P.apply_constraints(params, bare) is params  # nothing to project


def _loss(params, x, y):
    pred, penalty = P.regularized_apply(params, x, CONFIG)
    return jnp.mean((pred - y) ** 2) + penalty


@pytest.mark.slow
def test_one_sgd_step_matches_keras_training(setup):
    """Keras' train step: loss = mse + sum(model.losses); SGD; then each constraint."""
    params, x, y = setup
    model = to_keras(CONFIG, params)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    keras_loss = model.train_on_batch(x, y)
    loss, grads = jax.value_and_grad(_loss)(params, jnp.asarray(x), jnp.asarray(y))
    # The MSE and the penalties: sums of nonnegative terms (2 gamma_n, n the terms), on top
    # of forward outputs within ~1e-5 (see test_penalty_matches_keras_model_losses).
    np.testing.assert_allclose(float(loss), float(keras_loss), rtol=1e-5)
    stepped = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    stepped = P.apply_constraints(stepped, CONFIG)
    ours = to_keras(CONFIG, stepped)
    for a, b in zip(ours.trainable_weights, model.trainable_weights, strict=True):
        # w - 0.1 grad: gradients agree to ~1e-4 relative (a backward pass over the stack,
        # not bounded per element here), times the 0.1 step: 1e-5 absolute.
        np.testing.assert_allclose(np32(a.value), np32(b.value), atol=1e-5, err_msg=a.path)


def test_optax_wrappers(setup):
    params, _, _ = setup
    rng = np.random.default_rng(2)
    grads = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype), params)
    tx = optax.chain(O.add_regularization(CONFIG), optax.sgd(0.1), O.constrain(CONFIG))

    @jax.jit
    def with_optax(params, grads):
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates)

    @jax.jit
    def by_hand(params, grads):
        # The gradient of the weight penalty added, SGD, then the projection.
        penalty = jax.grad(P.regularization_loss)(params, CONFIG)
        stepped = jax.tree.map(lambda p, g, r: p - 0.1 * (g + r), params, grads, penalty)
        return P.apply_constraints(stepped, CONFIG), penalty

    got = with_optax(params, grads)
    want, penalty = by_hand(params, grads)
    leaves = [jax.tree.leaves(t) for t in (got, want, params, grads, penalty)]
    for a, b, p, g, r in zip(*leaves, strict=True):
        # The same float ops, possibly fused differently by XLA (an FMA in one program and
        # not the other): the sum p - 0.1 (g + r) and the projection (a norm over <= one
        # kernel's entries, a division, a product) round differently at most by
        # gamma_(n + 8) of the size of what was summed.
        size = np.abs(np.asarray(p)) + 0.1 * (np.abs(np.asarray(g)) + np.abs(np.asarray(r)))
        bound = ref.sum_rtol(np.size(p) + 8) * size
        ref.assert_within(np.asarray(a), np.asarray(b), bound, err_msg="optax chain")
    # The penalty gradient is not zero (L1 on the head kernel: 0.01 * sign(w)).
    np.testing.assert_allclose(
        # 0.01 * sign(w) in float32: one rounding of 0.01.
        np.asarray(penalty.head.kernel),
        0.01 * np.sign(np.asarray(params.head.kernel)),
        rtol=ref.unit_roundoff(np.float32),
        atol=0,
    )
    with pytest.raises(ValueError, match="needs params"):
        O.constrain(CONFIG).update(grads, optax.EmptyState())
