"""One GPU session in one command: every mode's correctness on the GPU, then the timings.

    python benchmarks/gpu.py --out DIR        # on a CUDA machine (about 8 minutes)
    python benchmarks/gpu.py --out DIR --check-only   # correctness only; runs on a CPU too

1. **Correctness** (``DIR/gpu_check.json``, ``.md``, written before any timing). For the
   seed model (LSTM 64 -> 32 -> 16 -> Dense(1), B=32, T=30) and one H=512 layer (B=16,
   T=25), every registered mode that runs on the platform (``cudnn`` included) is
   compared with the float64 NumPy reference of ``tests/reference.py``:

   * the forward pass, under ``jax.default_matmul_precision("highest")`` (full float32
     products), against the derived first-order bound of ``reference.stack_bound``:
     ``err/bound <= 1`` passes;
   * the forward pass at XLA's default precision, reported against the same float32
     bound (on NVIDIA GPUs XLA may run float32 products in TF32, 10 mantissa bits, which
     the float32 bound does not cover: the ratio says whether it did);
   * the gradient of ``mean(y**2)`` with respect to every parameter, at full float32
     precision, against float64 JAX autodiff of the plain-scan ``keras2`` mode on the CPU:
     the relative error of the whole gradient (``||g - g64|| / ||g64||``). No backward
     bound is derived yet (``tests/reference.py`` has none), so this is reported, with
     ``1e-4`` as a stated screening threshold, not a proof.

2. **Timings**: the ``--gpu`` preset of ``bench.py`` (jlstm modes, PyTorch/cuDNN in its
   own process, Flax, Keras when installed), case by case; ``DIR/gpu.json`` and
   ``DIR/gpu.md`` are rewritten after every case, so a run cut short keeps what it timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

GRAD_SCREEN = 1e-4


def _reference_modules():
    import reference  # tests/reference.py: float64 NumPy LSTM and the error bounds

    return reference


def _cases():
    import numpy as np

    rng = np.random.default_rng(0)
    seed_x = rng.normal(size=(32, 30, 1)).astype(np.float32)
    layer_x = rng.normal(size=(16, 25, 512)).astype(np.float32)
    return {"seed B=32 T=30": ("seed", seed_x), "layer H=512 B=16 T=25": ("layer", layer_x)}


def _model(kind: str, mode: str, dtype: str = "float32"):
    import jlstm

    if kind == "seed":
        return jlstm.ModelConfig(
            input_size=1,
            layer_sizes=(64, 32, 16),
            output_size=1,
            implementation=mode,
            param_dtype=dtype,
        )
    return jlstm.ModelConfig(
        input_size=512,
        layer_sizes=(512,),
        output_size=512,
        implementation=mode,
        param_dtype=dtype,
        return_sequences=True,
    )


def check(out: Path, log) -> list[dict]:
    """Every mode on the default device against the float64 references."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jlstm

    jax.config.update("jax_enable_x64", True)
    reference = _reference_modules()
    cpu = jax.devices("cpu")[0]
    platform = jax.default_backend()
    modes = ["auto", *jlstm.list_modes()]
    rows = []
    for case, (kind, x) in _cases().items():
        config32 = _model(kind, "auto")
        params = jlstm.init_params(jax.random.key(0), config32)
        host = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        layers = [(p.kernel, p.recurrent_kernel, p.bias) for p in host.layers]
        head = (host.head.kernel, host.head.bias, "linear")
        want, bound, _ = reference.stack_bound(layers, x, head=head)
        if kind == "seed":
            want, bound = want[:, -1], bound[:, -1]

        # The gradient reference: float64 autodiff of the plain scan, on the CPU.
        config64 = _model(kind, "keras2", "float64")
        with jax.default_device(cpu):
            p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), host)
            x64 = jnp.asarray(x, jnp.float64)
            g64 = jax.grad(lambda p, x64=x64, c=config64: jnp.mean(jlstm.apply(p, x64, c) ** 2))(
                p64
            )
        g64_flat = np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(g64)])

        for mode in modes:
            if mode == "multicore" and platform != "cpu":
                continue
            row = {"case": case, "mode": mode, "platform": platform}
            try:
                config = _model(kind, mode)
                xd = jnp.asarray(x)
                with jax.default_matmul_precision("highest"):
                    y = np.asarray(jlstm.apply(params, xd, config), np.float64)
                row["forward_err_over_bound"] = float(np.max(np.abs(y - want) / (bound + 1e-45)))
                row["forward_max_abs_err"] = float(np.max(np.abs(y - want)))
                y_default = np.asarray(jlstm.apply(params, xd, config), np.float64)
                row["default_precision_err_over_bound"] = float(
                    np.max(np.abs(y_default - want) / (bound + 1e-45))
                )
                row["default_precision_max_abs_err"] = float(np.max(np.abs(y_default - want)))

                def loss(p, config=config, xd=xd):
                    return jnp.mean(jlstm.apply(p, xd, config) ** 2)

                with jax.default_matmul_precision("highest"):
                    g = jax.grad(loss)(params)
                g_flat = np.concatenate(
                    [np.ravel(np.asarray(a, np.float64)) for a in jax.tree.leaves(g)]
                )
                row["grad_rel_err"] = float(
                    np.linalg.norm(g_flat - g64_flat) / np.linalg.norm(g64_flat)
                )
                row["passed"] = bool(
                    row["forward_err_over_bound"] <= 1.0 and row["grad_rel_err"] <= GRAD_SCREEN
                )
            except Exception as error:  # report and go on: one mode must not hide the others
                row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
                row["passed"] = False
                traceback.print_exc()
            log(json.dumps(row))
            rows.append(row)
            _write_check(out, rows)
    return rows


def _write_check(out: Path, rows: list[dict]) -> None:
    import jax

    info = _versions()
    (out / "gpu_check.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    lines = [
        "# jlstm GPU correctness check",
        "",
        f"{info.get('device_kind')} ({jax.default_backend()}), jax {info['jax']}, "
        f"jaxlib {info['jaxlib']}, python {info['python']}, {info['date_utc']}",
        "",
        "forward: max |err| / derived float32 bound at `highest` precision (<= 1 passes) "
        "and at XLA's default precision (TF32 may exceed it); gradient: relative error "
        f"against float64 autodiff on the CPU (screening threshold {GRAD_SCREEN:g}).",
        "",
        "| case | mode | forward err/bound (highest) | max abs err (highest) "
        "| err/bound (default precision) | max abs err (default) | gradient rel. err | passed |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['mode']} | error: {r['error']} | | | | | no |")
            continue
        lines.append(
            f"| {r['case']} | {r['mode']} | {r['forward_err_over_bound']:.3g} "
            f"| {r['forward_max_abs_err']:.2e} | {r['default_precision_err_over_bound']:.3g} "
            f"| {r['default_precision_max_abs_err']:.2e} | {r['grad_rel_err']:.2e} "
            f"| {'yes' if r['passed'] else 'NO'} |"
        )
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def _versions() -> dict:
    import datetime
    import platform

    import jax
    import jaxlib

    devices = jax.devices()
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
    }


def timings(out: Path, log) -> None:
    """The ``--gpu`` preset case by case, the results rewritten after each case."""
    import bench
    from report import check_targets, markdown

    preset = bench.PRESETS["gpu"]
    contestants = [*preset["modes"], *preset["peers"]]
    worker, threads = None, None
    try:
        worker = bench.TorchWorker(bench._cores(), require_cuda=True)
        threads = bench._cores()
    except OSError as error:
        log(f"PyTorch worker did not start: {error}")
    info = bench.machine_info(threads)
    info["preset"] = "gpu"
    rows, start = [], time.perf_counter()
    for case in preset["cases"]:
        t0 = time.perf_counter()
        log(f"{case.name} ...")
        rows.extend(bench.run_case(case, contestants, preset, log, worker))
        log(f"  done in {time.perf_counter() - t0:.0f} s")
        info["wall_s"] = time.perf_counter() - start
        info["loadavg_end"] = list(os.getloadavg())
        (out / "gpu.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
        (out / "gpu.md").write_text(markdown(rows, info, check_targets(rows, "gpu")))
    if worker is not None:
        worker.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for the results")
    parser.add_argument("--check-only", action="store_true", help="correctness only")
    parser.add_argument(
        "--timings-only", action="store_true", help="timings only (internal: a fresh process)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(message):
        print(message, flush=True)

    if args.timings_only:
        timings(out, log)
        return 0
    t0 = time.perf_counter()
    rows = check(out, log)
    log(
        f"correctness: {sum(r['passed'] for r in rows)}/{len(rows)} passed "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    if args.check_only:
        return 0
    # The timings run in a fresh process: the check enabled float64, which must not
    # change what the timed programs are.
    return subprocess.call([sys.executable, __file__, "--out", str(out), "--timings-only"])


if __name__ == "__main__":
    sys.exit(main())
