"""Scale-out benchmark: data parallelism over devices and processes, and ensembles.

Three tables, each configuration in its own subprocess (a process's device count is
fixed when JAX starts), all subprocesses alive together and timed in interleaved
rounds (the order shuffled per round, seeded), medians over the rounds' calls,
compile time reported apart:

* **compare** (2 CPU devices): the seed model's forward pass and training step with
  the batch split *per layer* (the ``multicore`` mode: a ``shard_map`` around each
  layer's recurrence) against the *whole step* sharded (``jlstm.parallel``: one jit,
  batch on the ``"data"`` axis, ``fused_jvp`` inside; for the forward pass also one
  ``shard_map`` around the whole model), and one device unsplit (``fused_jvp``).
* **scaling**: ``jlstm.parallel.data_parallel`` training steps on 1, 2 and 4 CPU
  devices in one process and on 2 processes on localhost (``jax.distributed``, gloo,
  one device each); kernels ``auto`` (what a user gets) and ``fused_jvp``.
* **ensemble**: N members in one vmapped step (``jlstm.ensemble``) against N
  single-model steps one after another, on one device, and with the members split
  over 2 devices; throughput in member-steps per second.

    python benchmarks/scaling.py --quick            # smoke sizes, minutes (5 on a loaded 2-core VM)
    python benchmarks/scaling.py                    # seed model B=256, T=100
    python benchmarks/scaling.py --out /tmp/scaling # writes /tmp/scaling.json and .md

Run it on a quiet machine: every configuration shares the same cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "@@"  # protocol lines start with this (gloo prints on stdout too)

SIZES = {
    "quick": dict(batch=64, steps=20, ens_batch=16, ens_steps=10, members=8, rounds=3, calls=2),
    "full": dict(batch=256, steps=100, ens_batch=32, ens_steps=30, members=8, rounds=5, calls=2),
}


# -- worker side ----------------------------------------------------------------------------


def _say(obj) -> None:
    print(MARK + json.dumps(obj), flush=True)


def _seed_config(impl: str):
    import jlstm

    return jlstm.ModelConfig(
        input_size=1, layer_sizes=(64, 32, 16), output_size=1, implementation=impl
    )


def _data(batch: int, steps: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, 1)).astype(np.float32)
    y = rng.normal(size=(batch, 1)).astype(np.float32)
    return x, y, np.ones(batch, np.float32)


def _compiled(fn, *args):
    """``fn`` lowered and compiled for ``args``; returns (zero-arg callable, seconds)."""
    start = time.perf_counter()
    exe = fn.lower(*args).compile()
    return (lambda: exe(*args)), time.perf_counter() - start


def _build_compare(spec: dict) -> dict:
    import jax
    import optax
    from jax.sharding import PartitionSpec as P

    import jlstm
    from jlstm import parallel
    from jlstm.train import init_fit_state, make_train_step

    mesh = parallel.data_mesh()
    x, y, w = _data(spec["batch"], spec["steps"])
    xs, ys, ws = parallel.shard_batch((x, y, w), mesh)
    opt = optax.adam(1e-3)
    out = {}
    for name, impl in (("single", "fused_jvp"), ("per_layer", "multicore")):
        config = _seed_config(impl)
        params = jlstm.init_params(jax.random.key(0), config)
        fwd = jax.jit(lambda p, x, c=config: jlstm.apply(p, x, c))
        out[f"forward/{name}"] = _compiled(fwd, params, x)
        state = init_fit_state(config, opt, 0).train
        out[f"train/{name}"] = _compiled(make_train_step(config, opt), state, x, y, w)
    config = _seed_config("fused_jvp")
    params = parallel.replicate(jlstm.init_params(jax.random.key(0), config), mesh)
    fwd = jax.jit(
        lambda p, x: jlstm.apply(p, x, config),
        in_shardings=(parallel.replicated_sharding(mesh), parallel.batch_sharding(mesh)),
    )
    out["forward/whole_step"] = _compiled(fwd, params, xs)
    whole_map = jax.jit(
        jax.shard_map(
            lambda p, x: jlstm.apply(p, x, config),
            mesh=mesh,
            in_specs=(P(), P("data")),
            out_specs=P("data"),
            check_vma=False,
        )
    )
    out["forward/whole_shard_map"] = _compiled(whole_map, params, xs)
    for name, impl in (("whole_step", "fused_jvp"), ("whole_step_auto", "auto")):
        config = _seed_config(impl)
        step = parallel.data_parallel(make_train_step(config, opt), mesh)
        state = parallel.replicate(init_fit_state(config, opt, 0).train, mesh)
        out[f"train/{name}"] = _compiled(step.jitted, state, xs, ys, ws)
    return out


def _build_scaling(spec: dict) -> dict:
    import optax

    from jlstm import parallel
    from jlstm.train import init_fit_state, make_train_step

    mesh = parallel.data_mesh()
    x, y, w = _data(spec["batch"], spec["steps"])
    rows = len(x) // spec["processes"]
    mine = slice(spec["process_id"] * rows, (spec["process_id"] + 1) * rows)
    batch = parallel.global_batch((x[mine], y[mine], w[mine]), mesh)
    opt = optax.adam(1e-3)
    out = {}
    for impl in ("auto", "fused_jvp"):
        config = _seed_config(impl)
        step = parallel.data_parallel(make_train_step(config, opt), mesh)
        state = parallel.replicate(init_fit_state(config, opt, 0).train, mesh)
        out[f"train/{impl}"] = _compiled(step.jitted, state, *batch)
    return out


def _build_ensemble(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jlstm import ensemble, parallel
    from jlstm.train import init_fit_state, make_train_step

    n = spec["members"]
    x, y, _ = _data(spec["batch"] * 4, spec["steps"])
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    seeds = ensemble.member_seeds(0, n)
    idx, w = next(ensemble.member_batches(len(x), spec["batch"], seeds, 0))
    config, opt = _seed_config("auto"), optax.adam(1e-3)
    step = make_train_step(config, opt)
    states = ensemble.init_ensemble(config, opt, seeds)
    out = {}
    mesh = parallel.data_mesh() if jax.device_count() > 1 else None
    vmapped = ensemble.ensemble_step(step, mesh=mesh)
    jitted = getattr(vmapped, "jitted", vmapped)
    if mesh is not None:  # placed as the wrapper places them (it checks and moves)
        states, idx, w = jax.device_put((states, idx, w), parallel.batch_sharding(mesh))
        x_dev, y_dev = parallel.replicate((x_dev, y_dev), mesh)
    run, seconds = _compiled(jitted, states, x_dev, y_dev, idx, w)
    out["ensemble/vmapped" + ("_split" if mesh is not None else "")] = (run, seconds)
    if mesh is None:
        singles = [init_fit_state(config, opt, s).train for s in seeds]
        batches = [(x[i], y[i], np.asarray(wi)) for i, wi in zip(idx, w, strict=True)]
        start = time.perf_counter()
        exe = step.lower(singles[0], *batches[0]).compile()
        seconds = time.perf_counter() - start

        def sequential():
            return [exe(s, *b) for s, b in zip(singles, batches, strict=True)]

        out["ensemble/sequential"] = (sequential, seconds)
    return out


def worker(spec: dict) -> None:
    from jlstm import parallel

    if spec.get("processes", 1) > 1:
        coordinator, count, pid = spec["coordinator"], spec["processes"], spec["process_id"]
        parallel.initialize(coordinator, count, pid, timeout_s=120)
    parallel.use_devices(spec["devices"])
    import jax

    builders = {"compare": _build_compare, "scaling": _build_scaling, "ensemble": _build_ensemble}
    built = builders[spec["kind"]](spec)
    for run, _ in built.values():
        jax.block_until_ready(run())
    _say(
        {
            "ready": {name: seconds for name, (_, seconds) in built.items()},
            "summary": parallel.device_summary(),
        }
    )
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        run = built[msg["name"]][0]
        times = []
        for _ in range(msg["calls"]):
            start = time.perf_counter()
            jax.block_until_ready(run())
            times.append(time.perf_counter() - start)
        _say({"seconds": times})


# -- driver side ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Group:
    """One configuration: one worker process, or several forming a jax.distributed job."""

    def __init__(self, label: str, spec: dict, processes: int = 1):
        self.label, self.spec, self.processes = label, spec, processes
        self.compile_s, self.summary, self.procs = None, None, []

    def start(self) -> None:
        """Start the worker(s) and wait until they have compiled (one group at a time,
        so compile times are not inflated by other groups compiling)."""
        spec, processes = self.spec, self.processes
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        env.pop("XLA_FLAGS", None)
        env.pop("JAX_NUM_CPU_DEVICES", None)
        src = str(HERE.parent / "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        coordinator = f"127.0.0.1:{_free_port()}"
        self.procs = []
        for pid in range(processes):
            worker_spec = {
                **spec,
                "processes": processes,
                "process_id": pid,
                "coordinator": coordinator,
            }
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", json.dumps(worker_spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        replies = [self._read(p) for p in self.procs]
        self.compile_s, self.summary = replies[0]["ready"], replies[0]["summary"]

    def _read(self, proc) -> dict:
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.label}: worker exited (code {proc.wait()})")
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])

    def ask(self, **msg) -> list[float]:
        for p in self.procs:
            p.stdin.write(json.dumps(msg) + "\n")
            p.stdin.flush()
        replies = [self._read(p) for p in self.procs]
        return replies[0]["seconds"]  # process 0's clock (every process waits for all)

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                p.stdin.flush()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def groups_for(sizes: dict) -> list[Group]:
    base = {"batch": sizes["batch"], "steps": sizes["steps"]}
    ens = {"batch": sizes["ens_batch"], "steps": sizes["ens_steps"], "members": sizes["members"]}
    groups = [Group("compare 2 devices", {**base, "kind": "compare", "devices": 2})]
    for devices in (1, 2, 4):
        groups.append(
            Group(f"scaling {devices} device(s)", {**base, "kind": "scaling", "devices": devices})
        )
    groups.append(
        Group(
            "scaling 2 processes x 1 device", {**base, "kind": "scaling", "devices": 1}, processes=2
        )
    )
    groups.append(Group("ensemble 1 device", {**ens, "kind": "ensemble", "devices": 1}))
    groups.append(Group("ensemble 2 devices", {**ens, "kind": "ensemble", "devices": 2}))
    return groups


def machine_info() -> dict:
    import jax

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_cores_usable": cores,
        "jax_version": jax.__version__,
        "loadavg_start": list(os.getloadavg()),
    }


def run(preset: str, log=print) -> dict:
    sizes = SIZES[preset]
    info = {**machine_info(), "preset": preset, "sizes": sizes}
    start = time.perf_counter()
    groups = groups_for(sizes)
    try:
        for g in groups:
            g.start()
            log(f"{g.label}: compiled {', '.join(f'{k} {v:.1f}s' for k, v in g.compile_s.items())}")
        pairs = [(g, name) for g in groups for name in g.compile_s]
        samples = {(g.label, name): [] for g, name in pairs}
        shuffle = random.Random(0).shuffle
        for r in range(sizes["rounds"]):
            shuffle(pairs)
            for g, name in pairs:
                samples[(g.label, name)].extend(g.ask(cmd="run", name=name, calls=sizes["calls"]))
            log(f"round {r + 1}/{sizes['rounds']} done")
    finally:
        for g in groups:
            g.close()
    rows = []
    for g in groups:
        for name, compile_s in g.compile_s.items():
            secs = samples[(g.label, name)]
            kind = g.spec["kind"]
            median = statistics.median(secs)
            windows = g.spec["batch"] * (g.spec.get("members", 1) if kind == "ensemble" else 1)
            rows.append(
                {
                    "table": kind,
                    "config": g.label,
                    "contestant": name,
                    "devices": g.summary["device_count"],
                    "processes": g.summary["process_count"],
                    "batch": g.spec["batch"],
                    "steps": g.spec["steps"],
                    "members": g.spec.get("members"),
                    "median_ms": median * 1e3,
                    "min_ms": min(secs) * 1e3,
                    "samples": len(secs),
                    "compile_s": compile_s,
                    "windows_per_s": windows / median,
                }
            )
    info["loadavg_end"] = list(os.getloadavg())
    info["wall_s"] = time.perf_counter() - start
    return {"machine": info, "rows": rows}


def markdown(result: dict) -> str:
    info, rows = result["machine"], result["rows"]
    lines = [
        f"# jlstm scaling ({info['preset']})",
        "",
        f"- date (UTC): {info['date_utc']}; wall time {info['wall_s']:.0f} s; "
        f"{info['cpu_cores_usable']} usable cores; jax {info['jax_version']}",
        f"- load average at start {info['loadavg_start']}, at end {info['loadavg_end']}",
        f"- sizes: {info['sizes']}",
        "",
        "Medians over interleaved rounds (ms); compile time apart. Seed model "
        "LSTM(64)->LSTM(32)->LSTM(16)->Dense(1).",
        "",
    ]
    titles = {
        "compare": "Per-layer split (multicore) vs whole-step sharding, 2 CPU devices",
        "scaling": "Data-parallel training step (jlstm.parallel) by devices and processes",
        "ensemble": "Ensembles: N members in one vmapped step vs N single steps",
    }
    for table, title in titles.items():
        lines += [
            f"## {title}",
            "",
            "| config | contestant | median ms | min ms | windows/s | compile s |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in rows:
            if r["table"] == table:
                lines.append(
                    f"| {r['config']} | {r['contestant']} | {r['median_ms']:.2f} | "
                    f"{r['min_ms']:.2f} | {r['windows_per_s']:,.0f} | {r['compile_s']:.1f} |"
                )
        lines.append("")
    lines.append(
        "Ensemble windows/s count member-windows (members x batch) per second; "
        "`ensemble/sequential` times N single-model steps back to back."
    )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes (minutes)")
    parser.add_argument(
        "--out",
        default=str(HERE / "results" / "scaling"),
        help="output path without suffix: writes OUT.json and OUT.md",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    result = run("quick" if args.quick else "full", log=lambda m: print(m, flush=True))
    out = Path(args.out)
    if out.suffix in (".json", ".md"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    out.with_suffix(".md").write_text(text)
    print(text)
    print(f"wrote {out}.json and {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
