import contextlib
import logging

import jax
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@contextlib.contextmanager
def count_traces():
    """Count traces of jitted functions by name, through public JAX: ``jax.log_compiles``
    logs "Finished tracing <name> ..." once per trace (never on a cache hit).

    Yields ``traces(name) -> int``, the traces of ``name`` so far inside the block.
    """
    messages = []

    class Handler(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Handler(logging.DEBUG)
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield lambda name: sum(m.startswith(f"Finished tracing {name} ") for m in messages)
    finally:
        logger.removeHandler(handler)
