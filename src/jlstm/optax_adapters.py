"""A ``ModelConfig``'s regularizers and constraints as optax transformations.

Two links for an ``optax.chain``, for users who keep their own loss and update::

    tx = optax.chain(add_regularization(config), optax.adam(1e-3), constrain(config))

``add_regularization`` goes first (it adds the penalty's gradient to the raw
gradients); ``constrain`` goes last (its updates land the parameters on the
projected values). ``jlstm.train`` does not use them: its step adds
``jlstm.penalties.regularization_loss`` to the loss and calls
``jlstm.penalties.apply_constraints`` after the update.
"""

from __future__ import annotations

import jax
import optax

from .model import ModelConfig
from .penalties import (
    apply_constraints,
    has_constraints,
    has_weight_regularizer,
    regularization_loss,
)

__all__ = ["add_regularization", "constrain"]


def add_regularization(config: ModelConfig) -> optax.GradientTransformation:
    """An optax ``GradientTransformation`` adding ``grad(regularization_loss)`` to the updates.

    Put it first in a chain, on raw gradients::

        tx = optax.chain(jlstm.optax_adapters.add_regularization(config), optax.adam(1e-3))

    which optimises ``loss + regularization_loss(params, config)`` without changing the
    loss function. Activity regularizers depend on the activations and cannot be
    added here: use ``jlstm.penalties.regularized_apply`` in the loss for them.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(
                "add_regularization needs params: call tx.update(grads, state, params)"
            )
        if not has_weight_regularizer(config):
            return updates, state
        grads = jax.grad(regularization_loss)(params, config)
        return jax.tree.map(lambda u, g: u + g.astype(u.dtype), updates, grads), state

    return optax.GradientTransformation(init, update)


def constrain(config: ModelConfig) -> optax.GradientTransformation:
    """An optax ``GradientTransformation`` that applies ``config``'s constraints.

    Put it last in a chain, after the optimizer::

        tx = optax.chain(optax.adam(1e-3), jlstm.optax_adapters.constrain(config))
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)   # now constrained

    It returns ``constraint(params + updates) - params``, so ``apply_updates`` lands on
    the constrained weights (up to one float rounding; ``apply_constraints`` after
    ``apply_updates`` is exact).
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("constrain needs params: call tx.update(grads, state, params)")
        if not has_constraints(config):
            return updates, state
        moved = jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates)
        projected = apply_constraints(moved, config)
        return jax.tree.map(
            lambda q, p, u: (q - p).astype(u.dtype), projected, params, updates
        ), state

    return optax.GradientTransformation(init, update)
