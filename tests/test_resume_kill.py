"""A real training process is SIGKILLed mid-run, resumed, and ends bit-identical.

Three ``jlstm train`` processes on the built-in airline series: one uninterrupted,
one killed (SIGKILL, no chance to clean up) after some epochs have been
checkpointed, then the killed run resumed with ``--resume``. The final
checkpoint arrays (weights, best weights, Adam moments, step, PRNG key) and the
test metrics must be exactly equal.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow

EPOCHS = 150
KILL_AFTER = 20  # checkpointed epochs before the kill
ARGS = [
    "--layers", "16,8", "--epochs", str(EPOCHS), "--patience", "0", "--checkpoint-every", "1",
    "--seed", "5", "--quiet", "--no-plot",
]  # fmt: skip


def _jlstm(*argv):
    script = os.path.join(os.path.dirname(sys.executable), "jlstm")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "jlstm.cli"]
    return [*cmd, *argv]


def _epoch(run_dir) -> int:
    try:
        with open(os.path.join(run_dir, "checkpoint", "config.json")) as f:
            return json.load(f)["state"]["epoch"]
    except (OSError, ValueError, KeyError):
        return 0  # not written yet, or being swapped in right now


def _arrays(run_dir):
    with np.load(os.path.join(run_dir, "checkpoint", "arrays.npz"), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_jlstm("train", "--out", str(whole), *ARGS), check=True, timeout=300)

    proc = subprocess.Popen(_jlstm("train", "--out", str(killed), *ARGS))
    try:
        deadline = time.monotonic() + 240
        while _epoch(killed) < KILL_AFTER:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    at_kill = _epoch(killed)
    assert KILL_AFTER <= at_kill < EPOCHS, at_kill
    assert not (killed / "metrics.json").exists()  # the run really was cut short

    subprocess.run(
        _jlstm("train", "--out", str(killed), "--resume", "--quiet", "--no-plot"),
        check=True,
        timeout=300,
    )
    want, got = _arrays(whole), _arrays(killed)
    assert sorted(got) == sorted(want)
    for name in want:
        assert want[name].dtype == got[name].dtype, name
        assert np.array_equal(want[name], got[name]), f"{name} differs after resume"
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (whole, killed)]
    assert metrics[0]["test"] == metrics[1]["test"]
    history = [json.loads((run / "history.json").read_text()) for run in (whole, killed)]
    assert [h["loss"] for h in history[0]] == [h["loss"] for h in history[1]]
    assert len(history[1]) == EPOCHS
