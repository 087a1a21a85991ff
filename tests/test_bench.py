"""benchmarks/bench.py's plumbing (no timing): where runs write, presets' help, no empty plot."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

bench = pytest.importorskip("bench")
report = pytest.importorskip("report")


def test_whole_presets_write_the_tracked_results_filtered_runs_write_scratch():
    assert bench.plan(bench.parse_args(["--quick"])).out == BENCH / "results"
    assert bench.plan(bench.parse_args([])).out == BENCH / "results"
    for filters in (["--cases", "B=256"], ["--peers", "none"], ["--modes", "auto"]):
        run = bench.plan(bench.parse_args(["--quick", *filters]))
        assert run.filtered and run.out == BENCH / "results" / "scratch", filters
    run = bench.plan(bench.parse_args(["--cases", "B=32", "--peers", "none", "--out", "/x"]))
    assert (
        run.out == Path("/x")
        and run.peers == []
        and [c.name for c in run.cases] == ["seed B=32 T=4"]
    )
    gitignore = (BENCH.parent / ".gitignore").read_text().splitlines()
    assert "benchmarks/results/scratch/" in gitignore


def test_dry_run_times_nothing_and_presets_have_help(capsys):
    assert bench.main(["--quick", "--cases", "B=32", "--peers", "none", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "results/scratch/quick.json/.md" in out and ".png" not in out
    assert all(bench.PRESET_HELP[name] for name in bench.PRESETS)


def test_no_plot_without_pytorch_ratios(tmp_path):
    rows = [{"case": "seed B=32 T=4", "contestant": "auto", "forward_vs_torch": None}]
    assert report.plot(rows, tmp_path / "x.png") is False
    assert not (tmp_path / "x.png").exists()
