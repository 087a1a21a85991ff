"""Every notebook in notebooks/ is stored without outputs and runs top to bottom."""

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
# Each notebook must run on 2 CPU cores in at most 3 minutes (they aim at about one).
BUDGET_SECONDS = 180


def test_there_are_notebooks():
    assert len(PATHS) >= 5, PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    # Plain JSON: this check needs no Jupyter package, so it runs everywhere.
    book = json.loads(path.read_text(encoding="utf-8"))
    for number, cell in enumerate(book["cells"]):
        if cell["cell_type"] != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name} cell {number} has outputs: strip them"
        assert cell.get("execution_count") is None, (
            f"{path.name} cell {number} has an execution count: strip it"
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebook_runs_from_a_clean_kernel(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    # Only looked up, not imported: importing Keras here would pick its default backend.
    if path.name.startswith("05") and importlib.util.find_spec("keras") is None:
        pytest.skip("the Keras notebook needs keras")
    book = nbformat.read(path, as_version=4)
    # The kernel imports this checkout's jlstm even when it is not installed.
    src = str(Path(__file__).resolve().parent.parent / "src")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = src + (os.pathsep + env_path if env_path else "")
    try:
        client = nbclient.NotebookClient(
            book,
            timeout=BUDGET_SECONDS,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOKS)}},
        )
        started = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - started
    finally:
        os.environ["PYTHONPATH"] = env_path
        if not env_path:
            del os.environ["PYTHONPATH"]
    print(f"{path.name}: {seconds:.1f} s", file=sys.stderr)
    assert seconds < BUDGET_SECONDS
