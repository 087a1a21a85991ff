"""Step masks: from sequence lengths, from a Keras ``Masking(mask_value)``, and
padding-aware reversal.

A step mask is ``(B..., T)`` boolean, ``True`` where the step is real. Every
layer in jlstm takes any pattern (right padding, left padding, holes): a masked
step keeps ``h`` and ``c`` and emits the previous output (or zeros with
``zero_output_for_mask``), exactly as Keras' LSTM does.

Reversal, and how it differs from Keras
---------------------------------------
Keras' ``go_backwards`` (and the backward half of ``Bidirectional``) reverses the
whole padded time axis, mask included. With a mask this is harmless for the final
state: the padding, now processed first, is skipped, so the final ``(h, c)`` is that
of the real steps read backwards. But the returned sequence (in processing order)
starts with the padding positions, and without a mask the padding (often zeros) is
processed as input before the real steps.

``reverse_padded`` reverses only the real steps of each sequence, leaving the padding
where it is (TensorFlow's ``reverse_sequence``; Flax ``RNN(reverse=True,
keep_order=True)`` does the equivalent). Running a forward layer on
``reverse_padded(x, lengths)`` and reversing its outputs the same way gives a
backward layer whose output at step ``t`` belongs to step ``t`` of the input, and it
never reads the padding even without a mask::

    xr = reverse_padded(x, lengths)
    yr = lstm_layer(params, xr, mask=sequence_mask(lengths, T), return_sequences=True)
    y_backward = reverse_padded(yr, lengths)       # aligned with x

With a mask, ``Bidirectional`` in Keras and in jlstm already aligns its backward
output this way (it flips the processing-order outputs back), so the two agree on
every real step.
"""

from __future__ import annotations

import jax.numpy as jnp

from .types import Array

__all__ = ["apply_masking", "masking_mask", "reverse_padded", "sequence_lengths", "sequence_mask"]


def sequence_mask(lengths: Array, steps: int, *, padding: str = "right") -> Array:
    """The step mask of padded sequences with the given lengths.

    Args:
        lengths: ``(B...,)`` integer number of real steps per sequence, ``0 <= L <= steps``.
        steps: ``T``, the padded length.
        padding: ``"right"`` (real steps first, the usual layout) or ``"left"`` (real
            steps last, e.g. Keras ``pad_sequences`` default ``padding="pre"``).

    Returns:
        ``(B..., T)`` bool mask.
    """
    if padding not in ("right", "left"):
        raise ValueError(f"padding must be 'right' or 'left', got {padding!r}")
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    t = jnp.arange(steps)
    if padding == "right":
        return t < lengths[..., None]
    return t >= (steps - lengths)[..., None]


def step_mask(mask: Array | None, seq_lengths: Array | None, steps: int) -> Array | None:
    """The step mask of a call that takes ``mask`` or ``seq_lengths`` (right padding)."""
    if seq_lengths is None:
        return mask
    if mask is not None:
        raise ValueError("pass either mask or seq_lengths, not both")
    return sequence_mask(seq_lengths, steps)


def sequence_lengths(mask: Array) -> Array:
    """``(B...,)`` int32 number of real steps in a ``(B..., T)`` mask."""
    return jnp.sum(jnp.asarray(mask, bool), axis=-1, dtype=jnp.int32)


def masking_mask(x: Array, mask_value: float = 0.0) -> Array:
    """The mask a Keras ``Masking(mask_value)`` layer computes: a step is real unless
    every feature equals ``mask_value``.

    Args:
        x: ``(B..., T, D)`` inputs.

    Returns:
        ``(B..., T)`` bool, ``any(x != mask_value, axis=-1)``.
    """
    return jnp.any(x != mask_value, axis=-1)


def apply_masking(x: Array, mask_value: float = 0.0) -> tuple[Array, Array]:
    """A Keras ``Masking`` layer: the mask, and ``x`` with masked steps set to 0.

    Args:
        x: ``(B..., T, D)``.

    Returns:
        ``(x_masked (B..., T, D) same dtype, mask (B..., T) bool)``.
    """
    mask = masking_mask(x, mask_value)
    return jnp.where(mask[..., None], x, jnp.zeros((), x.dtype)), mask


def reverse_padded(x: Array, lengths: Array, *, padding: str = "right") -> Array:
    """Reverse the real steps of each padded sequence, leaving the padding in place.

    For right padding and length ``L``: ``out[t] = x[L - 1 - t]`` for ``t < L`` and
    ``out[t] = x[t]`` otherwise; for left padding the real steps are the last ``L``
    and are reversed in place. Applying it twice gives ``x`` back. See the module
    docstring for how this differs from Keras' plain ``go_backwards`` reversal.

    Args:
        x: ``(B..., T, F)`` any trailing feature size.
        lengths: ``(B...,)`` integer real lengths.
        padding: ``"right"`` or ``"left"``.

    Returns:
        ``(B..., T, F)``, same dtype.
    """
    if padding not in ("right", "left"):
        raise ValueError(f"padding must be 'right' or 'left', got {padding!r}")
    steps = x.shape[-2]
    lengths = jnp.asarray(lengths)[..., None]
    if lengths.shape[:-1] != x.shape[:-2]:
        raise ValueError(
            f"lengths must have shape {x.shape[:-2]} (the batch), got {lengths.shape[:-1]}"
        )
    t = jnp.arange(steps)
    if padding == "right":
        idx = jnp.where(t < lengths, lengths - 1 - t, t)
    else:
        start = steps - lengths
        idx = jnp.where(t >= start, steps - 1 - t + start, t)
    return jnp.take_along_axis(x, idx[..., None], axis=-2)
