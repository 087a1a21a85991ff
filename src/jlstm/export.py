"""Deployable inference artifacts: a ``jax.export`` program or an ONNX model.

Two kinds of artifact:

* **A forecaster** (``export_forecaster``; what ``jlstm export`` writes): a trained
  run's whole data pipeline and model (``jlstm.forecaster.Forecaster``): raw history
  in original units in, forecasts in original units out, with the log, scaler,
  delta, calendar features from integer dates, covariate scaling, the inverse
  transform, ensemble averaging and quantiles baked in.

  - ``"jax"``: a zip bundle (Python's ``zipfile``) of two members:
    ``exported.bin``, the bytes of ``jax.export.Exported.serialize()`` of
    ``f(history=..., [covariates=...], [dates=...]) -> {"forecast": ..., ["spread": ...]}``
    (keyword inputs; batch symbolic; dates int32), and ``signature.json``, the
    signature (``Forecaster.signature``). A process with only JAX runs it::

        with zipfile.ZipFile(path) as bundle:
            signature = json.loads(bundle.read("signature.json"))
            exported = jax.export.deserialize(bytearray(bundle.read("exported.bin")))
        forecast = exported.call(history=h, dates=d)["forecast"]

  - ``"onnx"``: ``jlstm.interop.onnx.forecaster_to_onnx``'s graph (inputs named as
    in the jax program, dates int64), the signature in ``metadata_props``.

* **The bare model** (``export_model``, ``export_checkpoint``; ``jlstm export --raw``):
  scaled inputs ``x (B, T, D)`` in, model outputs ``y (B, O)`` out.

  - ``"jax"``: exactly the bytes of ``jax.export.Exported.serialize()`` for
    ``x -> y`` (``jlstm.apply`` at inference), the parameters baked in as constants,
    so the file is the whole model. Batch and time length are symbolic::

        exported = jax.export.deserialize(open(path, "rb").read())
        y = exported.call(x)            # x (B, T, D) float32 -> y (B, O)

    With ``seq_lengths=True`` the program is ``(x, seq_lengths) -> y``, ``seq_lengths``
    ``(B,)`` int32 lengths of right-padded sequences.
  - ``"onnx"``: ``jlstm.interop.onnx.to_onnx``'s model (standard ``LSTM`` operators).

Exported programs run the ``"hoisted"`` implementation: the same numerics as every
jlstm mode (tested to float32 rounding), plain ``lax.scan`` autodiff, and no Python
size tests, so batch and time stay symbolic. An inference artifact has no use for
the training kernels' custom VJPs.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from collections.abc import Sequence
from typing import Any

from .fileio import write_bytes_atomic
from .forecaster import EXPORT_IMPLEMENTATION, Forecaster
from .model import ModelConfig, apply
from .types import ModelParams

__all__ = [
    "BUNDLE_PROGRAM",
    "BUNDLE_SIGNATURE",
    "EXPORT_FORMATS",
    "export_checkpoint",
    "export_forecaster",
    "export_forecaster_jax",
    "export_jax",
    "export_model",
    "forecaster_bytes",
    "read_forecaster",
]

EXPORT_FORMATS = ("jax", "onnx")
# The members of a jax forecaster bundle (a zip file).
BUNDLE_PROGRAM = "exported.bin"
BUNDLE_SIGNATURE = "signature.json"
# A fixed timestamp for the bundle's members: the same run exports the same bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


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

    Raises:
        ValueError: the checkpoint holds an ensemble (export its forecaster, which
            averages the members, with ``export_forecaster``).
    """
    from .checkpoint import load_checkpoint
    from .train import ensemble_size

    ckpt = load_checkpoint(checkpoint_dir)
    members = ensemble_size(ckpt.state)
    if members is not None:
        raise ValueError(
            f"the bare model is one network, and this run is an ensemble of {members} "
            "members: export its forecaster instead (`jlstm export` without --raw), which "
            "averages them"
        )
    export_model(ckpt.state.params, ckpt.model_config, path, format=format, **options)
    return ckpt.model_config


# -- forecasters: the pipeline and the model, original units in and out ---------------------


def export_forecaster_jax(
    forecaster: Forecaster, *, platforms: Sequence[str] = ("cpu",), batch_size: int | None = None
):
    """``jax.export.Exported`` of ``forecaster``'s program (keyword inputs, dict outputs).

    Args:
        forecaster: the ``jlstm.forecaster.Forecaster``.
        platforms: lowering platforms, e.g. ``("cpu",)`` or ``("cpu", "cuda", "tpu")``.
        batch_size: a fixed batch, or ``None`` (default) for a symbolic one.

    Returns:
        The ``Exported``: ``exported.call(history=..., ...)`` -> ``{"forecast": ...}``;
        inputs in the model's float dtype, ``dates`` and ``series`` int32.
    """
    import jax
    import jax.numpy as jnp
    from jax import export

    if isinstance(platforms, str):
        platforms = (platforms,)
    batch = export.symbolic_shape("batch")[0] if batch_size is None else batch_size
    floats = jnp.dtype(forecaster.config.param_dtype)
    signature = forecaster.signature(date_dtype="int32")
    specs = {}
    for name, spec in signature["inputs"].items():
        shape = tuple(batch if d == "batch" else d for d in spec["shape"])
        dtype = floats if spec["dtype"] == forecaster.config.param_dtype else jnp.int32
        specs[name] = jax.ShapeDtypeStruct(shape, dtype)
    params = jax.tree.map(jnp.asarray, forecaster.params)
    forecaster = dataclasses.replace(forecaster, params=params)

    def forecast(**inputs):
        return forecaster(**inputs)

    return export.export(jax.jit(forecast), platforms=tuple(platforms))(**specs)


def _zip_member(bundle: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    bundle.writestr(info, data)


def forecaster_bytes(
    forecaster: Forecaster, *, format: str = "jax", platforms: Sequence[str] = ("cpu",)
) -> bytes:
    """The bytes of ``forecaster``'s artifact in ``format`` (see the module docstring).

    Raises:
        ValueError: an unknown format, or a transform or model option the format cannot
            express (the message names it and the format that can).
    """
    if format == "jax":
        exported = export_forecaster_jax(forecaster, platforms=platforms)
        signature = forecaster.signature(date_dtype="int32")
        signature["platforms"] = list(exported.platforms)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            _zip_member(bundle, BUNDLE_SIGNATURE, json.dumps(signature, indent=1).encode())
            _zip_member(bundle, BUNDLE_PROGRAM, bytes(exported.serialize()))
        return buffer.getvalue()
    if format == "onnx":
        from .interop.onnx import forecaster_to_onnx

        return forecaster_to_onnx(forecaster).SerializeToString()
    raise ValueError(f"unknown export format {format!r}; use one of {EXPORT_FORMATS}")


def export_forecaster(
    forecaster: Forecaster,
    path: str | os.PathLike,
    *,
    format: str = "jax",
    platforms: Sequence[str] = ("cpu",),
    overwrite: bool = True,
) -> None:
    """Write ``forecaster`` (pipeline and model, original units) as one file, atomically.

    Args:
        forecaster: ``jlstm.forecaster.Forecaster`` (e.g. ``Forecaster.from_checkpoint``).
        path: the output file (conventionally ``.jax`` / ``.onnx``).
        format: ``"jax"`` (a zip bundle: ``exported.bin`` + ``signature.json``) or
            ``"onnx"``.
        platforms: for ``"jax"``: lowering platforms; ignored by ``"onnx"``.
        overwrite: replace an existing ``path``; ``False`` raises ``FileExistsError``.

    Raises:
        ValueError: an unknown format, or something the format cannot express.
    """
    data = forecaster_bytes(forecaster, format=format, platforms=platforms)
    write_bytes_atomic(path, data, replace=overwrite)


def read_forecaster(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """``(exported, signature)`` of a jax forecaster bundle written by ``export_forecaster``.

    Needs only JAX and the standard library (the module docstring shows the same
    three lines for a process without jlstm).

    Raises:
        ValueError: ``path`` is not a forecaster bundle (e.g. a bare ``export_model``
            file, which ``jax.export.deserialize`` reads directly).
    """
    from jax import export

    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{os.fspath(path)!r} is not a jlstm forecaster bundle (a zip file); a bare model "
            "file is read with jax.export.deserialize"
        )
    with zipfile.ZipFile(path) as bundle:
        names = set(bundle.namelist())
        if not {BUNDLE_PROGRAM, BUNDLE_SIGNATURE} <= names:
            raise ValueError(
                f"{os.fspath(path)!r} lacks {BUNDLE_PROGRAM} or {BUNDLE_SIGNATURE}: not a "
                "jlstm forecaster bundle"
            )
        signature = json.loads(bundle.read(BUNDLE_SIGNATURE))
        exported = export.deserialize(bytearray(bundle.read(BUNDLE_PROGRAM)))
    return exported, signature
