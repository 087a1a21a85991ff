"""PyTorch in its own process, driven by ``bench.py`` over stdin/stdout (JSON lines).

PyTorch's OpenMP threads and XLA's thread pools in one process slow each other down
by orders of magnitude on a small machine (measured: a 16 ms PyTorch forward pass took
960 ms next to JAX). So PyTorch runs here, in a second process that sleeps on its
pipe while JAX is timed, and ``bench.py`` interleaves its bursts with the JAX
contestants' round by round, as for the others.

Commands (one JSON object per line), each answered by one JSON line:

* ``{"cmd": "build", "case": {...Case fields...}, "require_cuda": bool}`` -> ``{"note": ...}``
* ``{"cmd": "run", "phase": "forward" | "train", "calls": n}`` -> ``{"seconds": [...]}``
* ``{"cmd": "quit"}``
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import Case, build_torch


def main() -> int:
    import torch

    threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
    torch.set_num_threads(threads)
    built = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                return 0
            if msg["cmd"] == "build":
                case = msg["case"]
                if msg.get("require_cuda") and not torch.cuda.is_available():
                    raise RuntimeError(f"PyTorch {torch.__version__} has no CUDA device here")
                built = build_torch(Case(**{**case, "layer_sizes": tuple(case["layer_sizes"])}))
                built.forward()
                built.train()
                reply = {"note": built.note, "threads": torch.get_num_threads()}
            elif msg["cmd"] == "run":
                fn = built.forward if msg["phase"] == "forward" else built.train
                seconds = []
                for _ in range(msg["calls"]):
                    start = time.perf_counter()
                    fn()
                    seconds.append(time.perf_counter() - start)
                reply = {"seconds": seconds}
            else:
                reply = {"error": f"unknown command {msg['cmd']!r}"}
        except Exception as error:  # reported to the harness, which skips PyTorch
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
