"""The commands: each parses nothing and computes nothing itself, it calls
``jlstm.experiment`` and prints what came back."""

from __future__ import annotations

import argparse
import os
import sys

from .. import fileio, parallel
from ..checkpoint import CheckpointError
from ..data import DEFAULT_DATASET, list_datasets
from ..experiment import (
    Settings,
    checkpoint_path,
    evaluate_run,
    predict_run,
    run_directory,
    run_training,
    score_table,
    verdict,
    write_metrics,
)
from ..export import export_checkpoint, export_forecaster
from ..forecaster import Forecaster
from ..tasks import TEST_SEQUENCES, check_task, run_task
from .options import UsageError, given_settings

__all__ = ["datasets", "evaluate", "export", "predict", "task", "train"]


def _say(message: str) -> None:
    print(message, flush=True)


def _title(report, split: str) -> str:
    s = report["split"][split]
    return (
        f"{split}: {s['windows']} forecasts of {s['targets_from']}..{s['targets_to']} "
        f"({report['units']}; seasonal period {report['season']})"
    )


def _start_devices(args: argparse.Namespace) -> None:
    """Join the processes and expose the cores, before any JAX work (JAX's rule)."""
    distributed = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in distributed):
        if any(v is None for v in distributed):
            raise UsageError(
                "--coordinator, --num-processes and --process-id go together: give all three"
            )
        try:
            parallel.initialize(args.coordinator, args.num_processes, args.process_id)
        except ValueError as err:
            raise UsageError(str(err)) from None
    try:
        parallel.use_devices(args.devices)
    except RuntimeError as err:  # JAX already running (main() called in a live process)
        if args.devices is not None:
            raise UsageError(str(err)) from None


def train(args: argparse.Namespace) -> int:
    _start_devices(args)
    given = given_settings(args, note=lambda message: print(message, file=sys.stderr))
    settings = None if args.resume else Settings.resolve(given)
    result = run_training(
        settings,
        args.out,
        resume=args.resume,
        given=given if args.resume else None,
        progress=not args.quiet,
        plot=args.plot,
        log=_say,
        mesh="auto" if args.devices is None else args.devices,
    )
    season = result.experiment.season
    print(score_table(_title(result.report, "test"), result.scores["test"], season))
    print(verdict(result.scores["test"], season))
    for note in result.notes:
        print(note)
    if result.files:
        print(f"wrote {result.out}{os.sep}: {' '.join(result.files)}")
    if result.warning:
        print(result.warning, file=sys.stderr)
        if args.require_beat:
            print(
                "jlstm train: --require-beat: the model does not beat every baseline "
                f"(run kept in {result.out})",
                file=sys.stderr,
            )
            return 1
    return 0


def evaluate(args: argparse.Namespace) -> int:
    if args.out:
        fileio.check_writable(args.out)  # before the work, not after
    result = evaluate_run(args.run, data=args.data, dataset=args.dataset)
    for split in ("val", "test"):
        print(
            score_table(_title(result.report, split), result.scores[split], result.report["season"])
        )
    if result.warning:
        print(result.warning, file=sys.stderr)
    if args.out:
        path = os.path.join(args.out, "metrics.json")
        write_metrics(path, result.report)
        print(f"wrote {path}")
    return 0


def predict(args: argparse.Namespace) -> int:
    if args.output:
        if os.path.isdir(args.output):
            raise UsageError(f"--output {args.output!r} is a directory; give a file name")
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(parent):
            raise UsageError(f"--output {args.output!r}: its directory does not exist")
        fileio.refuse_symlink(args.output, "--output")
        fileio.check_writable(parent)
    result = predict_run(args.run, args.n, data=args.data, dataset=args.dataset)
    if args.output:
        fileio.write_text_atomic(args.output, result.csv)
        print(f"wrote {args.n} forecasts to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(result.csv)
    return 0


def export(args: argparse.Namespace) -> int:
    output = args.output
    fmt = args.format or ("onnx" if output.lower().endswith(".onnx") else "jax")
    if args.platforms is not None and fmt != "jax":
        raise UsageError("--platforms applies to --format jax (an ONNX file is platform-free)")
    if os.path.isdir(output):
        raise UsageError(f"--output {output!r} is a directory; give a file name")
    if os.path.lexists(output) and not args.force:
        raise UsageError(f"--output {output!r} exists; add --force to replace it")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError(f"--output {output!r}: its directory does not exist")
    fileio.refuse_symlink(output, "--output")
    fileio.check_writable(parent)
    if not os.path.exists(args.run):
        raise CheckpointError(f"run directory {args.run!r} does not exist")
    platforms = tuple(args.platforms or ("cpu",))
    checkpoint_dir = checkpoint_path(args.run)
    try:
        if args.raw:
            options = {"platforms": platforms} if fmt == "jax" else {}
            config = export_checkpoint(
                checkpoint_dir, output, format=fmt, overwrite=args.force, **options
            )
            what = _raw_summary(config)
        else:
            forecaster = Forecaster.from_checkpoint(checkpoint_dir)
            export_forecaster(
                forecaster, output, format=fmt, platforms=platforms, overwrite=args.force
            )
            what = _forecaster_summary(forecaster, fmt)
    except FileExistsError:  # it appeared while the model was exported
        raise UsageError(f"--output {output!r} exists; add --force to replace it") from None
    except ValueError as err:  # something the format cannot express
        if isinstance(err, CheckpointError):
            raise
        raise UsageError(f"cannot export {args.run!r} as {fmt}: {err}") from None
    where = f"; runs on {', '.join(platforms)}" if fmt == "jax" else ""
    kind = "bare-model" if args.raw else "forecaster"
    print(f"wrote {output}: {fmt} {kind} export of {args.run} ({what}{where})")
    return 0


def _raw_summary(config) -> str:
    layers = " -> ".join(f"LSTM {h}" for h in config.layer_sizes)
    return (
        f"{layers} -> Dense({config.output_size}), input (batch, steps, {config.input_size}) "
        f"{config.param_dtype}, scaled units"
    )


def _forecaster_summary(forecaster: Forecaster, fmt: str) -> str:
    signature = forecaster.signature(date_dtype="int32" if fmt == "jax" else "int64")

    def shape(spec) -> str:
        return "(" + ", ".join(map(str, spec["shape"])) + ")"

    inputs = []
    for name, spec in signature["inputs"].items():
        text = f"{name} {shape(spec)}"
        if name == "dates":
            text += f" {spec['dtype']} {spec['encoding']}"
        inputs.append(text)
    outputs = ", ".join(f"{n} {shape(s)}" for n, s in signature["outputs"].items())
    steps = [t["name"] for t in signature["transforms"]]
    if forecaster.calendar is not None:
        steps.append("calendar " + ",".join(forecaster.calendar.names))
    members = f", mean of {forecaster.members} members" if forecaster.members else ""
    return (
        f"{' + '.join(inputs)} -> {outputs}, original units; "
        f"{', '.join(steps) or 'no transforms'}{members}"
    )


def task(args: argparse.Namespace) -> int:
    name = args.name.replace("-", "_")
    try:
        paper = check_task(name, args.length).paper
    except ValueError as err:
        raise UsageError(f"--length: {err}") from None
    with run_directory(args.out, resumable=False):
        report = run_task(name, args.length, args.out, seed=args.seed, budget_seconds=args.budget)
    test = report["test"]
    line = f"{args.name} T={args.length}: {test['wrong']}/{test['n']} test sequences wrong"
    if "baseline_loss" in report:
        line += f", loss {test['loss']:.4g} (memoryless baseline {report['baseline_loss']:.4g})"
    print(f"{line}; paper: {paper}")
    print(
        f"trained {report['steps']} steps ({report['sequences']} sequences) in "
        f"{report['train_seconds']} s, stopped by the {report['stopped_by'].replace('_', ' ')}"
    )
    print(f"wrote {args.out}{os.sep}: checkpoint metrics.json history.json")
    if report["success"]:
        return 0
    bar = (
        "a loss below the memoryless baseline"
        if "baseline_loss" in report
        else f"at most {3 * test['n'] // TEST_SEQUENCES} wrong"
    )
    hint = "; raise --budget" if report["stopped_by"] == "budget" else ""
    print(f"jlstm task: the success criterion ({bar}) was not met{hint}", file=sys.stderr)
    return 1


def datasets(args: argparse.Namespace) -> int:
    for info in list_datasets():
        mark = " (default)" if info.name == DEFAULT_DATASET else ""
        prep = ", ".join(
            f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in info.features.items()
        )
        print(
            f"{info.name}{mark}\n    {info.description}\n    season {info.season}"
            + (f"; defaults: {prep}" if prep else "")
        )
    print("Attribution and licences: jlstm/datasets/README.md")
    return 0
