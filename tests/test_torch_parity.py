"""Parity with real PyTorch nn.LSTM on copied weights: outputs, final states and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jlstm
from jlstm.interop.pytorch import (
    from_torch,
    from_torch_linear,
    from_torch_lstm,
    to_torch,
    to_torch_linear,
    to_torch_lstm,
    to_torch_modules,
)

from . import reference as ref

torch.set_num_threads(1)
# Where no derived bound applies yet (gradients, bidirectional stacks; reference.py has no
# backward-pass or bidirectional bound): the float32 bar, absolute and relative.
# Forward outputs and states use the derived bound instead (_forward_bound).
TOL = 1e-5


def _forward_bound(layers, x):
    """Per-element bound on |jlstm - torch| for a unidirectional float32 stack: jlstm is within
    ``stack_bound`` of the exact result; torch adds its two biases separately, one more term
    in each gate sum (n + 1 <= 2n terms), so within twice that: 3x in all."""
    weights = [tuple(None if a is None else np.asarray(a, np.float64) for a in p) for p in layers]
    _, bound, states = ref.stack_bound(weights, np.asarray(x, np.float64))
    return 3 * bound, [(3 * dh, 3 * dc) for dh, dc in states]


def _random_case(seed):
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(1, 4))
    sizes = tuple(int(s) for s in rng.integers(1, 33, n_layers))
    return dict(
        input_size=int(rng.integers(1, 9)),
        sizes=sizes,
        batch=int(rng.integers(1, 9)),
        steps=int(rng.integers(1, 13)),
        seed=seed,
    )


CASES = [_random_case(s) for s in range(5)] + [
    dict(input_size=1, sizes=(64, 32, 16), batch=4, steps=4, seed=100)  # the seed model's stack
]


def _torch_stack(case):
    torch.manual_seed(case["seed"])
    modules, d = [], case["input_size"]
    for h in case["sizes"]:
        modules.append(torch.nn.LSTM(d, h, batch_first=True))
        d = h
    return modules


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: f"D{c['input_size']}-H{c['sizes']}-B{c['batch']}-T{c['steps']}"
)
def test_stack_outputs_states_and_gradients(case):
    modules = _torch_stack(case)
    rng = np.random.default_rng(case["seed"])
    x_np = rng.normal(size=(case["batch"], case["steps"], case["input_size"])).astype(np.float32)
    w_np = rng.normal(size=(case["batch"], case["steps"], case["sizes"][-1])).astype(np.float32)

    # PyTorch: forward, final states, gradient of a weighted sum w.r.t. inputs and weights.
    x_t = torch.tensor(x_np, requires_grad=True)
    h, finals_t = x_t, []
    for m in modules:
        h, (hn, cn) = m(h)
        finals_t.append((hn[0], cn[0]))
    loss_t = (h * torch.tensor(w_np)).sum() + (finals_t[0][1] ** 2).sum()
    loss_t.backward()

    layers = tuple(from_torch_lstm(m)[0] for m in modules)

    def forward(layers, x):
        h, finals = x, []
        for p in layers:
            h, state = jlstm.lstm_layer(p, h, return_sequences=True, return_state=True)
            finals.append(state)
        return h, finals

    def loss(layers, x):
        h, finals = forward(layers, x)
        return jnp.sum(h * w_np) + jnp.sum(finals[0].c ** 2)

    out, finals = jax.jit(forward)(layers, jnp.asarray(x_np))
    bound, state_bounds = _forward_bound(layers, x_np)
    ref.assert_within(out, h.detach().numpy(), bound, err_msg="outputs")
    for state, (hn, cn), (dh, dc) in zip(finals, finals_t, state_bounds, strict=True):
        ref.assert_within(state.h, hn.detach().numpy(), dh, err_msg="h")
        ref.assert_within(state.c, cn.detach().numpy(), dc, err_msg="c")

    g_layers, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(layers, jnp.asarray(x_np))
    np.testing.assert_allclose(g_x, x_t.grad.numpy(), atol=TOL, rtol=TOL)
    for g, m in zip(g_layers, modules, strict=True):
        np.testing.assert_allclose(g.kernel, m.weight_ih_l0.grad.numpy().T, atol=TOL, rtol=TOL)
        np.testing.assert_allclose(
            g.recurrent_kernel, m.weight_hh_l0.grad.numpy().T, atol=TOL, rtol=TOL
        )
        # The summed bias sees the same gradient as each of PyTorch's two biases.
        np.testing.assert_allclose(g.bias, m.bias_ih_l0.grad.numpy(), atol=TOL, rtol=TOL)
        np.testing.assert_allclose(g.bias, m.bias_hh_l0.grad.numpy(), atol=TOL, rtol=TOL)


def test_multilayer_module_and_initial_state():
    torch.manual_seed(7)
    module = torch.nn.LSTM(3, 6, num_layers=2, batch_first=True)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 9, 3)).astype(np.float32)
    h0 = rng.normal(size=(2, 5, 6)).astype(np.float32)
    c0 = rng.normal(size=(2, 5, 6)).astype(np.float32)
    with torch.no_grad():
        y_t, (hn, cn) = module(torch.tensor(x), (torch.tensor(h0), torch.tensor(c0)))
    layers = from_torch_lstm(module)
    assert len(layers) == 2
    config = jlstm.ModelConfig(
        input_size=3, layer_sizes=(6, 6), return_sequences=True, head_use_bias=False
    )
    params = jlstm.ModelParams(layers, jlstm.DenseParams(jnp.eye(6, 1), None))
    states = tuple(jlstm.LSTMState(jnp.asarray(h0[k]), jnp.asarray(c0[k])) for k in range(2))
    _, finals = jlstm.apply(
        params, jnp.asarray(x), config, initial_states=states, return_state=True
    )
    top = jlstm.lstm_layer(
        layers[1],
        jlstm.lstm_layer(layers[0], jnp.asarray(x), initial_state=states[0], return_sequences=True),
        initial_state=states[1],
        return_sequences=True,
    )
    # The derived bound, layer by layer from the initial states (3x: see _forward_bound).
    inputs, dx, bounds = np.asarray(x, np.float64), None, []
    for k, p in enumerate(layers):
        w = tuple(np.asarray(a, np.float64) for a in p)
        bounds.append(ref.lstm_layer_bound(*w, inputs, h0[k], c0[k], dx=dx))
        inputs, dx = ref.lstm_layer(*w, inputs, h0[k], c0[k])[0], bounds[-1][0]
    ref.assert_within(top, y_t.numpy(), 3 * bounds[1][0], err_msg="outputs")
    for k in range(2):
        ref.assert_within(finals[k].h, hn[k].numpy(), 3 * bounds[k][1], err_msg="h")
        ref.assert_within(finals[k].c, cn[k].numpy(), 3 * bounds[k][2], err_msg="c")


def test_export_to_torch_round_trip():
    cells = (
        jlstm.init_cell_params(jax.random.key(0), 4, 8, bias_initializer="random_normal"),
        jlstm.init_cell_params(jax.random.key(1), 8, 8, bias_initializer="random_normal"),
    )
    module = to_torch_lstm(cells)
    x = np.random.default_rng(1).normal(size=(3, 7, 4)).astype(np.float32)
    with torch.no_grad():
        y_t, _ = module(torch.tensor(x))
    y = jlstm.lstm_layer(
        cells[1],
        jlstm.lstm_layer(cells[0], jnp.asarray(x), return_sequences=True),
        return_sequences=True,
    )
    bound, _ = _forward_bound(cells, x)
    ref.assert_within(y, y_t.numpy(), bound, err_msg="outputs")
    back = from_torch_lstm(module)
    # A layout round trip: gates reordered, the bias in bias_ih and exact zeros in bias_hh,
    # summed back as b + 0: no arithmetic that rounds, so bit for bit.
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(cells), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="one hidden size"):
        to_torch_lstm((cells[0], jlstm.init_cell_params(jax.random.key(2), 8, 3)))


def test_unsupported_torch_features_are_named():
    with pytest.raises(ValueError, match="proj_size"):
        from_torch(torch.nn.LSTM(3, 6, proj_size=2))
    with pytest.raises(ValueError, match="GRU"):
        from_torch([torch.nn.GRU(3, 6)])
    cells = (
        jlstm.init_cell_params(jax.random.key(0), 3, 4),
        jlstm.init_cell_params(jax.random.key(1), 4, 2),
    )
    with pytest.raises(ValueError, match="to_torch_modules"):
        to_torch(cells)


@pytest.mark.parametrize("batch_first", [True, False])
def test_bidirectional_multilayer_module(batch_first):
    """nn.LSTM(num_layers=2, bidirectional=True) == jlstm concat-bidirectional stack."""
    torch.manual_seed(3)
    module = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=batch_first)
    linear = torch.nn.Linear(10, 2)
    x = np.random.default_rng(3).normal(size=(4, 6, 3)).astype(np.float32)
    with torch.no_grad():
        xt = torch.tensor(x if batch_first else x.transpose(1, 0, 2))
        y_t, _ = module(xt)
        y_t = linear(y_t if batch_first else y_t.transpose(0, 1)).numpy()
    layers = from_torch(module)
    assert all(isinstance(p, jlstm.BidirectionalParams) for p in layers)
    config = jlstm.ModelConfig(
        input_size=3, layer_sizes=(5, 5), output_size=2, bidirectional=True, return_sequences=True
    )
    params = jlstm.ModelParams(layers, from_torch_linear(linear))
    np.testing.assert_allclose(jlstm.apply(params, x, config), y_t, atol=TOL, rtol=TOL)
    back = to_torch(layers, batch_first=batch_first)
    for name, value in module.state_dict().items():
        if "bias" not in name:
            np.testing.assert_array_equal(back.state_dict()[name].numpy(), value.numpy())
    with torch.no_grad():
        y_back, _ = back(xt)
        y_orig, _ = module(xt)
    np.testing.assert_allclose(y_back.numpy(), y_orig.numpy(), atol=1e-6)


def test_seed_stack_as_modules_and_float64():
    """The seed's 64 -> 32 -> 16 -> Dense(1) as three modules and a Linear, in float64."""
    with jax.enable_x64(True):
        config = jlstm.ModelConfig(param_dtype="float64")
        params = jlstm.init_params(jax.random.key(0), config)
        params = jax.tree.map(lambda a: a + 0.1, params)  # nonzero biases
        modules = to_torch_modules(params.layers)
        linear = to_torch_linear(params.head)
        assert [m.hidden_size for m in modules] == [64, 32, 16]
        assert modules[0].weight_ih_l0.dtype == torch.float64
        x = np.random.default_rng(0).normal(size=(3, 5, 1))
        with torch.no_grad():
            h = torch.tensor(x)
            for m in modules:
                h, _ = m(h)
            y_t = linear(h[:, -1]).numpy()
        np.testing.assert_allclose(jlstm.apply(params, x, config), y_t, atol=1e-12, rtol=1e-12)
        layers = from_torch(modules)
        assert layers[0].kernel.dtype == jnp.float64
        for a, b in zip(jax.tree.leaves(layers), jax.tree.leaves(params.layers), strict=True):
            np.testing.assert_array_equal(a, b)


def test_bias_split_trains_twice_as_fast_in_torch():
    """What docs/interop.md states: both PyTorch biases get the gradient of their sum."""
    cell = jlstm.init_cell_params(jax.random.key(0), 2, 3, bias_initializer="random_normal")
    module = to_torch(cell)
    assert not module.bias_hh_l0.detach().any()
    x = torch.ones(1, 4, 2)
    module(x)[0].sum().backward()
    np.testing.assert_array_equal(module.bias_ih_l0.grad.numpy(), module.bias_hh_l0.grad.numpy())
