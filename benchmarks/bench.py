"""Benchmark harness: jlstm's implementation modes against PyTorch, Flax and Keras.

Times, for every case (shape) and contestant, the forward pass and a full Adam
training step, separately from compilation (reported on its own), as medians over
repeats with ``jax.block_until_ready``. All contestants of a case run side by side
in one process, interleaved round-robin, so machine load hits them alike; forward
passes and training steps are timed in separate phases (a training step's memory
traffic slows the call that follows it).

    python benchmarks/bench.py --quick    # the CI/README set, < 5 minutes on 2 cores
    python benchmarks/bench.py --full     # every shape and mode (tens of minutes)
    python benchmarks/bench.py --gpu      # sized for one 10-minute GPU run

Writes ``<out>/<preset>.json`` (rows + machine, versions, date, load), ``<preset>.md``
(tables of times and ratios) and ``<preset>.png`` (speed ratios vs PyTorch; none
without PyTorch rows). A whole preset writes to ``benchmarks/results/`` (the tracked
numbers); a filtered or exploratory run (``--cases``, ``--modes``, ``--peers``,
``--cpu-devices``) writes to ``benchmarks/results/scratch/`` (ignored by git) unless
``--out`` says otherwise. ``--dry-run`` prints the plan and exits. See
``benchmarks/README.md`` for what the columns mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

# Keras picks its backend at import; the CPU devices must exist before JAX starts.
os.environ.setdefault("KERAS_BACKEND", "jax")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from jlstm.fileio import write_text_atomic
from peers import Built, Case, build_flax, build_floor, build_jlstm, build_keras
from report import check_targets, markdown, plot


def seed(batch: int, steps: int) -> Case:
    return Case("seed", batch, steps, 1, (64, 32, 16))


def layer(units: int, batch: int, steps: int) -> Case:
    return Case("layer", batch, steps, units, (units,))


PRESETS = {
    "quick": dict(
        cases=[seed(32, 4), seed(256, 30), seed(256, 100), seed(1024, 30), layer(512, 16, 25)],
        modes=["auto", "keras2", "fused_vjp"],
        peers=["torch", "flax", "keras"],
        budget_s=4.0,
        min_rounds=5,
        calls=2,
    ),
    "full": dict(
        cases=[seed(b, t) for b in (32, 256, 1024) for t in (4, 30, 100)]
        + [layer(h, b, t) for h in (512, 1024) for t in (25, 100) for b in (16, 64)],
        modes=["auto", "keras1", "keras2", "hoisted", "fused", "fused_vjp", "multicore"],
        peers=["torch", "flax", "keras"],
        budget_s=6.0,
        min_rounds=3,
        calls=1,
    ),
    "gpu": dict(
        cases=[
            seed(256, 30),
            *(seed(b, 100) for b in (32, 256, 1024)),
            layer(512, 64, 100),
            layer(1024, 16, 25),
            layer(1024, 64, 100),
        ],
        modes=["auto", "cudnn", "fused_vjp", "keras2"],
        peers=["flax", "keras", "torch"],
        budget_s=2.0,
        min_rounds=3,
        calls=2,
    ),
}


PRESET_HELP = {
    "quick": "the CI/README set: 5 seed/layer shapes, modes auto/keras2/fused_vjp, all "
    "peers (< 5 minutes on 2 cores; the default)",
    "full": "every shape (17) and every CPU mode, all peers (about 30 minutes on 2 cores)",
    "gpu": "sized for one 10-minute run on a CUDA machine, with the cudnn mode",
}
RESULTS = Path(__file__).resolve().parent / "results"
SCRATCH = RESULTS / "scratch"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a run will time and where it writes (``--dry-run`` prints it)."""

    preset_name: str
    cases: list
    modes: list[str]
    peers: list[str]
    out: Path
    filtered: bool


def plan(args: argparse.Namespace) -> Plan:
    """Resolve the preset and the filters; filtered runs never write the tracked results."""
    preset_name = args.preset or "quick"
    preset = PRESETS[preset_name]
    modes = args.modes.split(",") if args.modes else preset["modes"]
    peers = preset["peers"] if args.peers is None else [p for p in args.peers.split(",") if p]
    peers = [p for p in peers if p != "none"]
    cases = preset["cases"]
    if args.cases:
        keys = args.cases.split(",")
        cases = [c for c in cases if any(k in c.name for k in keys)]
    filtered = any(v is not None for v in (args.cases, args.modes, args.peers, args.cpu_devices))
    out = Path(args.out) if args.out else (SCRATCH if filtered else RESULTS)
    return Plan(preset_name, cases, modes, peers, out, filtered)


def machine_info(torch_threads: int | None) -> dict:
    """Where and with what the numbers were taken."""
    import jax

    info = {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_cores_usable": _cores(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "torch_threads": torch_threads,
        "loadavg_start": list(os.getloadavg()),
    }
    for name in ("jax", "jaxlib", "numpy", "optax", "flax", "keras", "torch", "jlstm"):
        try:
            module = __import__(name)
            info[f"{name}_version"] = getattr(module, "__version__", "?")
        except Exception as error:  # a missing peer is reported, not fatal
            info[f"{name}_version"] = f"unavailable ({type(error).__name__})"
    if jax.default_backend() == "gpu":
        info["gpu"] = [d.device_kind for d in jax.devices()]
    return info


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _block(value):
    import jax

    return jax.block_until_ready(value)


def _local(fn):
    """A burst runner for an in-process contestant: ``calls`` timed calls."""

    def burst(calls: int) -> list[float]:
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            _block(fn())
            seconds.append(time.perf_counter() - start)
        return seconds

    return burst


class TorchWorker:
    """PyTorch in a subprocess (``torch_worker.py``): see that module for why."""

    def __init__(self, threads: int, *, require_cuda: bool = False):
        import subprocess

        self.require_cuda = require_cuda
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve().parent / "torch_worker.py"),
                str(threads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def build(self, case: Case) -> str:
        case = dataclasses.asdict(case)
        return self.ask(cmd="build", case=case, require_cuda=self.require_cuda)["note"]

    def burst(self, phase: str):
        return lambda calls: self.ask(cmd="run", phase=phase, calls=calls)["seconds"]

    def close(self):
        try:
            self.ask(cmd="quit")
        except Exception:  # already gone
            pass
        self.proc.wait(timeout=30)


def time_phase(bursts: dict, budget_s: float, min_rounds: int, calls: int = 2) -> dict:
    """Round-robin timing: each round runs every contestant ``calls`` times in a row.

    The order within a round is shuffled (seeded: reproducible) so that no contestant
    always follows the same neighbour: the call after another framework's, or after a
    memory-heavy one, runs slower. Stops after ``min_rounds`` rounds once ``budget_s``
    has passed (at most 200 rounds). Returns the per-call seconds of each contestant.
    """
    samples = {name: [] for name in bursts}
    order = list(bursts)
    shuffle = random.Random(0).shuffle
    start, rounds = time.perf_counter(), 0
    while rounds < 200 and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        shuffle(order)
        for name in order:
            samples[name].extend(bursts[name](calls))
        rounds += 1
    return samples


def auto_modes(case: Case) -> str:
    """What ``"auto"`` runs for the case's layers (``jlstm.modes.auto_mode_name`` on the
    time-major inputs each layer gets): one name, or ``/``-joined when layers differ."""
    from jlstm.modes import auto_mode_name

    inputs = (case.input_size, *case.layer_sizes[:-1])
    names = [
        auto_mode_name((case.steps, case.batch, features), "float32", units)
        for features, units in zip(inputs, case.layer_sizes, strict=True)
    ]
    return names[0] if len(set(names)) == 1 else "/".join(names)


def run_case(case: Case, contestants: list[str], preset: dict, log, torch_worker) -> list[dict]:
    builders = {"flax": build_flax, "keras": build_keras}
    built, rows = {}, []
    fwd_bursts, train_bursts = {}, {}
    for name in contestants:
        try:
            if name == "torch":
                if torch_worker is None:
                    raise RuntimeError("PyTorch is not installed")
                note = torch_worker.build(case)
                built[name] = Built(forward=None, train=None, note=note)
                fwd_bursts[name] = torch_worker.burst("forward")
                train_bursts[name] = torch_worker.burst("train")
                continue
            b = builders[name](case) if name in builders else build_jlstm(case, name)
            _block(b.forward())
            _block(b.train())
            built[name] = b
            fwd_bursts[name] = _local(b.forward)
            train_bursts[name] = _local(b.train)
        except Exception as error:  # report, go on with the others
            log(f"  {name}: skipped ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    floor = build_floor(case)
    _block(floor())
    load_before = os.getloadavg()[0]
    timing = (preset["budget_s"], preset["min_rounds"], preset["calls"])
    fwd = time_phase({**fwd_bursts, "floor": _local(floor)}, *timing)
    train = time_phase(train_bursts, *timing)
    floor_ms = statistics.median(fwd.pop("floor")) * 1e3
    auto_mode = auto_modes(case)
    torch_fwd = statistics.median(fwd["torch"]) * 1e3 if "torch" in fwd else None
    torch_train = statistics.median(train["torch"]) * 1e3 if "torch" in train else None
    for name, b in built.items():
        f_ms = statistics.median(fwd[name]) * 1e3
        t_ms = statistics.median(train[name]) * 1e3
        rows.append(
            {
                "case": case.name,
                "kind": case.kind,
                "batch": case.batch,
                "steps": case.steps,
                "input_size": case.input_size,
                "layer_sizes": list(case.layer_sizes),
                "contestant": name,
                "resolved_mode": auto_mode if name == "auto" else None,
                "note": b.note,
                "forward_ms": f_ms,
                "forward_min_ms": min(fwd[name]) * 1e3,
                "train_ms": t_ms,
                "train_min_ms": min(train[name]) * 1e3,
                "samples_forward": len(fwd[name]),
                "samples_train": len(train[name]),
                "compile_forward_s": b.compile_forward_s,
                "compile_train_s": b.compile_train_s,
                "forward_gflops": case.forward_flops() / (f_ms * 1e-3) / 1e9,
                "train_gflops": case.train_flops() / (t_ms * 1e-3) / 1e9,
                "forward_vs_torch": torch_fwd / f_ms if torch_fwd else None,
                "train_vs_torch": torch_train / t_ms if torch_train else None,
                "floor_forward_ms": floor_ms,
                "floor_fraction_forward": floor_ms / f_ms,
                "floor_fraction_train": 2.0 * floor_ms / t_ms,
                "loadavg_1min": [load_before, os.getloadavg()[0]],
            }
        )
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    for name in PRESETS:
        which.add_argument(
            f"--{name}", action="store_const", const=name, dest="preset", help=PRESET_HELP[name]
        )
    parser.add_argument(
        "--out",
        help="directory for <preset>.json/.md/.png (default: benchmarks/results/ for a whole "
        "preset, benchmarks/results/scratch/ for a filtered run)",
    )
    parser.add_argument("--modes", help="comma-separated jlstm modes (default: the preset's)")
    parser.add_argument("--peers", help="comma-separated peers: torch,flax,keras or none")
    parser.add_argument("--cases", help="only cases whose name contains one of these (comma)")
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="CPU devices JAX exposes (default: one per usable core, which enables the "
        "'multicore' mode; 1 is JAX's default)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the cases, contestants and output; time nothing",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    run = plan(args)
    preset_name, preset, cases = run.preset_name, PRESETS[run.preset_name], run.cases
    modes, peers, out = run.modes, run.peers, run.out
    if args.dry_run:
        print(
            f"--{preset_name}{' (filtered)' if run.filtered else ''}: cases "
            f"{[c.name for c in cases]}, contestants {[*modes, *peers]}, writes {out}/"
            f"{preset_name}.json/.md" + (".png" if "torch" in peers else "")
        )
        return 0
    if not cases:
        print(f"--cases {args.cases!r} matches none of the --{preset_name} cases")
        return 2

    import jax

    cores = _cores()
    if preset_name != "gpu":
        devices = args.cpu_devices if args.cpu_devices is not None else cores
        jax.config.update("jax_num_cpu_devices", devices)
    torch_threads, torch_worker = None, None
    if "torch" in peers:
        try:
            torch_worker = TorchWorker(cores, require_cuda=preset_name == "gpu")
            torch_threads = cores
        except OSError as error:
            print(f"PyTorch worker did not start: {error}")
    info = machine_info(torch_threads)
    info["preset"] = preset_name

    def log(message):
        print(message, flush=True)

    log(
        f"jlstm benchmark --{preset_name}: {info['cpu']}, {info['cpu_cores_usable']} cores, "
        f"JAX devices {info['jax_devices']}, torch threads {torch_threads}, "
        f"load {info['loadavg_start']}"
    )
    rows, start = [], time.perf_counter()
    for case in cases:
        t0 = time.perf_counter()
        log(f"{case.name} ...")
        rows.extend(run_case(case, [*modes, *peers], preset, log, torch_worker))
        log(f"  done in {time.perf_counter() - t0:.0f} s")
    if torch_worker is not None:
        torch_worker.close()
    info["loadavg_end"] = list(os.getloadavg())
    info["wall_s"] = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / f"{preset_name}.json", json.dumps({"machine": info, "rows": rows}, indent=1)
    )
    checks = check_targets(rows, preset_name)
    text = markdown(rows, info, checks)
    write_text_atomic(out / f"{preset_name}.md", text)
    written = [".json", ".md"]
    try:
        if plot(rows, out / f"{preset_name}.png", title=f"jlstm --{preset_name}: {info['cpu']}"):
            written.append(".png")
        else:
            log("no PyTorch rows (the ratios are against PyTorch): no plot")
    except ImportError:
        log("matplotlib not installed: no plot (pip install -e '.[bench]')")
    log(text)
    log(f"wrote {out / preset_name}{'/'.join(written)} in {info['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
