"""Tables, target checks and the plot of a benchmark run (``bench.py`` calls these)."""

from __future__ import annotations

from pathlib import Path

# The case that carries issue 5's CPU targets against PyTorch (see ``check_targets``).
SEED_TARGET_CASE = "seed B=256 T=100"


def _by_case(rows):
    cases = {}
    for row in rows:
        cases.setdefault(row["case"], {})[row["contestant"]] = row
    return cases


def _f(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def check_targets(rows, preset: str) -> list[tuple[bool, str]]:
    """The issue's targets, evaluated on this run's medians: ``(passed, sentence)``."""
    checks = []
    cases = _by_case(rows)
    gpu = any("cuda" in (r.get("note") or "") for r in rows) or preset == "gpu"
    for name, by in cases.items():
        auto, k2 = by.get("auto"), by.get("keras2")
        if auto and k2:
            for metric in ("forward_ms", "train_ms"):
                ok = auto[metric] <= k2[metric]
                checks.append(
                    (
                        ok,
                        f"{name}: auto ({auto['resolved_mode']}) {metric[:-3]} "
                        f"{auto[metric]:.2f} ms vs implementation 2 {k2[metric]:.2f} ms",
                    )
                )
    if gpu:
        for name, by in cases.items():
            auto, cudnn, flax = by.get("auto"), by.get("cudnn"), by.get("flax")
            if name.startswith("seed") and auto and cudnn:
                same = auto["resolved_mode"] == "cudnn"  # the same program, timed twice
                checks.append(
                    (
                        same or auto["train_ms"] <= cudnn["train_ms"],
                        f"{name}: auto ({auto['resolved_mode']}) train {auto['train_ms']:.2f} ms "
                        f"vs cuDNN {cudnn['train_ms']:.2f} ms (target: at least as fast)",
                    )
                )
            if name.startswith("seed") and auto and flax:
                checks.append(
                    (
                        auto["train_ms"] < flax["train_ms"],
                        f"{name}: auto train {auto['train_ms']:.2f} ms vs Flax "
                        f"{flax['train_ms']:.2f} ms (target: ahead)",
                    )
                )
        return checks
    for name, by in cases.items():
        auto = by.get("auto")
        if not auto or auto.get("train_vs_torch") is None:
            continue
        if name == SEED_TARGET_CASE:
            checks.append(
                (
                    auto["train_vs_torch"] >= 1.5,
                    f"{name}: training {auto['train_vs_torch']:.2f}x PyTorch (target >= 1.5x)",
                )
            )
            checks.append(
                (
                    auto["forward_vs_torch"] >= 1.2,
                    f"{name}: forward {auto['forward_vs_torch']:.2f}x PyTorch (target >= 1.2x)",
                )
            )
            checks.append(
                (
                    auto["compile_train_s"] < 10.0,
                    f"{name}: training-step compile {auto['compile_train_s']:.1f} s "
                    "(target < 10 s)",
                )
            )
        target = "on par" if name.startswith("layer") else "not slower"
        for metric in ("forward", "train"):
            ratio = auto[f"{metric}_vs_torch"]
            checks.append(
                (
                    ratio >= 1.0,
                    f"{name}: {metric} {ratio:.2f}x PyTorch (target: {target}, >= 1.0x)",
                )
            )
    return checks


def markdown(rows, info: dict, checks) -> str:
    """The run as Markdown: machine, headline ratios, target checks, all rows."""
    lines = [f"# jlstm benchmark --{info.get('preset', '?')}", ""]
    versions = ", ".join(
        f"{n} {info.get(f'{n}_version')}"
        for n in ("jlstm", "jax", "jaxlib", "torch", "flax", "keras", "optax", "numpy")
    )
    lines += [
        f"- date (UTC): {info['date_utc']}; wall time {info.get('wall_s', 0):.0f} s",
        f"- machine: {info['cpu']}, {info['cpu_cores_usable']} usable cores; {info['platform']}",
        f"- JAX {info['jax_backend']} devices: {', '.join(info['jax_devices'])}; "
        f"PyTorch threads: {info['torch_threads']}; XLA_FLAGS: `{info['xla_flags']}`",
        f"- load average (1, 5, 15 min) at start {info['loadavg_start']}, "
        f"at end {info.get('loadavg_end')}",
        f"- versions: {versions}; Python {info['python']}",
        "",
        "Times are medians over interleaved repeats (milliseconds); ratios are "
        "PyTorch's time over the contestant's (> 1: faster than PyTorch). "
        "`auto` is jlstm's default; the mode it ran is in brackets.",
        "",
        "## Headline: jlstm (auto) vs PyTorch",
        "",
        "| case | jlstm fwd | PyTorch fwd | fwd ratio | jlstm train | PyTorch train "
        "| train ratio | jlstm compile (train) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cases = _by_case(rows)
    for name, by in cases.items():
        auto, torch = by.get("auto"), by.get("torch")
        if not auto:
            continue
        lines.append(
            f"| {name} [{auto['resolved_mode']}] | {_f(auto['forward_ms'])} | "
            f"{_f(torch and torch['forward_ms'])} | {_f(auto['forward_vs_torch'])}x | "
            f"{_f(auto['train_ms'])} | {_f(torch and torch['train_ms'])} | "
            f"{_f(auto['train_vs_torch'])}x | {_f(auto['compile_train_s'], 1)} s |"
        )
    if checks:
        lines += ["", "## Targets", ""]
        for ok, sentence in checks:
            lines.append(f"- {'PASS' if ok else 'MISS'}: {sentence}")
    lines += ["", "## Every contestant", ""]
    for name, by in cases.items():
        floor = next(iter(by.values()))["floor_forward_ms"]
        lines += [
            f"### {name}",
            "",
            f"Floor (chained `(B,H)@(H,4H)` products, forward): {floor:.2f} ms.",
            "",
            "| contestant | fwd ms (min) | train ms (min) | fwd x PyTorch | train x PyTorch "
            "| compile fwd / train s | GFLOP/s fwd / train | floor fraction fwd / train |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for contestant, r in by.items():
            label = contestant + (f" [{r['resolved_mode']}]" if r["resolved_mode"] else "")
            lines.append(
                f"| {label} | {_f(r['forward_ms'])} ({_f(r['forward_min_ms'])}) | "
                f"{_f(r['train_ms'])} ({_f(r['train_min_ms'])}) | "
                f"{_f(r['forward_vs_torch'])} | {_f(r['train_vs_torch'])} | "
                f"{_f(r['compile_forward_s'], 1)} / {_f(r['compile_train_s'], 1)} | "
                f"{_f(r['forward_gflops'], 1)} / {_f(r['train_gflops'], 1)} | "
                f"{_f(r['floor_fraction_forward'])} / {_f(r['floor_fraction_train'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(rows, path: Path, title: str = "") -> bool:
    """Grouped bars of each contestant's speed ratio vs PyTorch, forward and training.

    Returns False, writing nothing, when no row has a ratio (a run without PyTorch): an
    empty chart would only mislead.
    """
    ratios = ("forward_vs_torch", "train_vs_torch")
    if not any(row.get(metric) for row in rows for metric in ratios):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = _by_case(rows)
    names = list(cases)
    contestants = [c for c in dict.fromkeys(r["contestant"] for r in rows) if c != "torch"]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(names)), 8), sharex=True)
    width = 0.8 / max(len(contestants), 1)
    for ax, metric in zip(axes, ("forward_vs_torch", "train_vs_torch"), strict=True):
        for k, contestant in enumerate(contestants):
            values = [(cases[n].get(contestant) or {}).get(metric) or 0.0 for n in names]
            xs = [i + (k - (len(contestants) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, values, width, label=contestant)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"{metric.split('_')[0]}: PyTorch time / time")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(len(contestants), 4), fontsize=8)
    axes[1].set_xticks(range(len(names)))
    axes[1].set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    # Rendered to memory and written atomically: a crash never leaves half a PNG.
    import io

    from jlstm.fileio import write_bytes_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return True
