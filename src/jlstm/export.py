"""Deployable inference artifacts: a serialised ``jax.export`` program or an ONNX model.

``export_model(params, config, path, format=...)`` writes one file:

* ``"jax"``: exactly the bytes of ``jax.export.Exported.serialize()`` for
  ``x -> y`` (``jlstm.apply`` at inference), the parameters baked in as constants,
  so the file is the whole model. Batch and time length are symbolic. A process with
  only JAX (no jlstm) runs it::

      exported = jax.export.deserialize(open(path, "rb").read())
      y = exported.call(x)            # x (B, T, D) float32 -> y (B, O)

  With ``seq_lengths=True`` the program is ``(x, seq_lengths) -> y``, ``seq_lengths``
  ``(B,)`` int32 lengths of right-padded sequences.
* ``"onnx"``: ``jlstm.interop.onnx.to_onnx``'s model (standard ``LSTM`` operators).

Exported programs run the ``"hoisted"`` implementation: the same numerics as every
jlstm mode (tested to float32 rounding), plain ``lax.scan`` autodiff, and no Python
size tests, so batch and time stay symbolic. An inference artifact has no use for
the training kernels' custom VJPs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from .fileio import write_bytes_atomic
from .model import ModelConfig, apply
from .types import ModelParams

__all__ = ["EXPORT_FORMATS", "export_checkpoint", "export_jax", "export_model"]

EXPORT_FORMATS = ("jax", "onnx")
EXPORT_IMPLEMENTATION = "hoisted"


def export_jax(
    params: ModelParams,
    config: ModelConfig,
    *,
    platforms: Sequence[str] = ("cpu",),
    batch_size: int | None = None,
    steps: int | None = None,
    seq_lengths: bool = False,
):
    """``jax.export.Exported`` of the model's inference forward pass.

    Args:
        params: the ``ModelParams`` (become constants of the program).
        config: their ``ModelConfig``.
        platforms: lowering platforms, e.g. ``("cpu",)``, ``("cuda",)``,
            ``("cpu", "cuda", "tpu")`` (one program that runs on each).
        batch_size, steps: fixed sizes, or ``None`` (default) for symbolic ones.
        seq_lengths: also take ``(B,)`` int32 right-padding lengths.

    Returns:
        The ``Exported``; ``.serialize()`` gives the file's bytes.
    """
    import jax
    import jax.numpy as jnp
    from jax import export

    if isinstance(platforms, str):
        platforms = (platforms,)
    config = dataclasses.replace(config, implementation=EXPORT_IMPLEMENTATION)
    params = jax.tree.map(jnp.asarray, params)
    b, t = export.symbolic_shape("batch, steps")
    shape = (b if batch_size is None else batch_size, t if steps is None else steps)
    dtype = jnp.dtype(config.param_dtype)
    x_spec = jax.ShapeDtypeStruct((*shape, config.input_size), dtype)
    if seq_lengths:

        def forward(x, lengths):
            return apply(params, x, config, seq_lengths=lengths)

        specs = (x_spec, jax.ShapeDtypeStruct(shape[:1], jnp.int32))
    else:

        def forward(x):
            return apply(params, x, config)

        specs = (x_spec,)
    return export.export(jax.jit(forward), platforms=tuple(platforms))(*specs)


def _serialize(params, config, format: str, **options) -> bytes:
    if format == "jax":
        return bytes(export_jax(params, config, **options).serialize())
    if format == "onnx":
        from .interop.onnx import to_onnx

        if "platforms" in options:
            options.pop("platforms")  # an ONNX model is platform-free
        return to_onnx(config, params, **options).SerializeToString()
    raise ValueError(f"unknown export format {format!r}; use one of {EXPORT_FORMATS}")


def export_model(
    params: ModelParams,
    config: ModelConfig,
    path: str | os.PathLike,
    *,
    format: str = "jax",
    platforms: Sequence[str] = ("cpu",),
    seq_lengths: bool = False,
    overwrite: bool = True,
    **options,
) -> None:
    """Write the model as one inference file at ``path`` (atomically).

    Args:
        params, config: the model.
        path: the output file (conventionally ``.jax`` / ``.onnx``).
        format: ``"jax"`` (serialised ``jax.export``, see ``export_jax``) or
            ``"onnx"`` (see ``jlstm.interop.onnx.to_onnx``).
        platforms: for ``"jax"``: lowering platforms (``"cpu"``, ``"cuda"``,
            ``"tpu"``); ignored by ``"onnx"``.
        seq_lengths: the artifact takes a second input, ``(B,)`` int32 lengths of
            right-padded sequences.
        overwrite: replace an existing ``path``; ``False`` raises ``FileExistsError``
            instead, even if the file appears while the model is exported.
        **options: passed on (``batch_size``/``steps`` for jax, ``opset`` for onnx).

    Raises:
        ValueError: an unknown format, or a model option the format cannot express.
    """
    if format == "jax":
        options["platforms"] = platforms
    data = _serialize(params, config, format, seq_lengths=seq_lengths, **options)
    write_bytes_atomic(path, data, replace=overwrite)


def export_checkpoint(
    checkpoint_dir: str | os.PathLike,
    path: str | os.PathLike,
    *,
    format: str = "jax",
    **options,
) -> ModelConfig:
    """``export_model`` for the parameters stored in a ``jlstm.checkpoint`` directory.

    Returns:
        The checkpoint's ``ModelConfig`` (for the caller's message).
    """
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint_dir)
    export_model(ckpt.state.params, ckpt.model_config, path, format=format, **options)
    return ckpt.model_config
