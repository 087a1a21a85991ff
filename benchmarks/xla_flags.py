"""Time a H=512 layer and the seed model under the XLA_FLAGS in the environment.

Prints one JSON line of medians (ms); see benchmarks/README.md ("XLA:CPU library flags,
tried"). Run once per setting, each in a fresh process:

    XLA_FLAGS="--xla_cpu_use_onednn=true" python benchmarks/xla_flags.py

The contestants, floor and round-robin timing are the harness's own (``peers.py``,
``bench.py``), on one CPU device (JAX's default).
"""

import json
import os
import statistics

from bench import _local, layer, seed, time_phase
from peers import build_floor, build_jlstm


def main():
    rows = {}
    for case, modes in (
        (layer(512, 16, 25), ("fused_vjp", "keras2")),
        (seed(256, 100), ("fused_vjp",)),
    ):
        built = {mode: build_jlstm(case, mode) for mode in modes}
        bursts = {f"{case.name} {m} fwd": _local(b.forward) for m, b in built.items()}
        bursts |= {f"{case.name} {m} train": _local(b.train) for m, b in built.items()}
        if case.kind == "layer":
            bursts[f"{case.name} floor (chained products)"] = _local(build_floor(case))
        for burst in bursts.values():
            burst(1)  # warm up
        samples = time_phase(bursts, budget_s=5.0, min_rounds=7)
        rows |= {name: round(statistics.median(s) * 1e3, 2) for name, s in samples.items()}
    print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), **rows}))


if __name__ == "__main__":
    main()
