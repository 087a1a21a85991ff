"""The README's example runs, its set-up commands are what CI runs, the public API is documented."""

import inspect
import pathlib
import re

import pytest

import jlstm

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


# A README line `<!-- slow -->` right above a ```python block puts it in the slow tier.
SLOW_MARKER = "<!-- slow -->"


def _python_blocks(text, *, slow):
    """The README's Python blocks of one tier: slow ones train a model or carry SLOW_MARKER."""
    found = re.findall(r"(<!-- slow -->\n)?```python\n(.*?)```", text, flags=re.S)
    return [block for marker, block in found if _is_slow(block, marker) == slow]


def _is_slow(block, marker):
    return bool(marker) or "fit(" in block or "run_training(" in block


def _run(block):
    exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})


def test_readme_python_examples_run():
    blocks = _python_blocks(README, slow=False)
    assert blocks, "the README must show a Python example"
    for block in blocks:
        _run(block)


def test_slow_marker_selects_the_block():
    text = f"a\n```python\nx = 1\n```\n{SLOW_MARKER}\n```python\ny = 2\n```\n"
    assert _python_blocks(text, slow=False) == ["x = 1\n"]
    assert _python_blocks(text, slow=True) == ["y = 2\n"]


@pytest.mark.slow
def test_readme_training_examples_run():
    blocks = _python_blocks(README, slow=True)
    assert blocks, "the README's forecasting example trains a model"
    for block in blocks:
        _run(block)


def test_readme_toml_example_is_a_valid_config(tmp_path):
    from jlstm.cli.options import read_toml
    from jlstm.experiment import Settings

    (block,) = re.findall(r"```toml\n(.*?)```", README, flags=re.S)
    path = tmp_path / "run.toml"
    path.write_text(block)
    settings = Settings.resolve(read_toml(str(path)))
    assert settings.data == str(tmp_path / "sales.csv") and settings.covariates == ("promo",)
    assert settings.horizon == 3 and settings.layers == (32, 16) and settings.epochs == 200


def test_readme_says_how_to_forecast_with_covariates():
    assert "predict -n N` refuses `N` larger than the horizon" in README


def test_ci_runs_the_readme_setup_commands():
    bash_blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    commands = [line.strip() for block in bash_blocks for line in block.splitlines()]
    setup = [c for c in commands if c.startswith("pip install -e")]
    assert len(setup) >= 2, "README must give the install-and-run and install-and-test commands"
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(c for c in setup if "[test]" in c)
    assert test_command in ci.splitlines(), f"{test_command!r} missing from .ci/run"
    train_command = next(c for c in setup if "jlstm train" in c or "[plot]" in c)
    # CI adds only an output folder to the user's command.
    assert any(line.startswith(train_command) for line in ci.splitlines()), train_command


def test_public_api_is_documented():
    missing = []
    for name in jlstm.__all__:
        obj = getattr(jlstm, name)
        if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismodule(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(name)
    assert not missing, f"public names without a docstring: {missing}"
    for fn in (jlstm.cell_step, jlstm.lstm_layer, jlstm.apply, jlstm.init_params):
        doc = fn.__doc__
        assert "(B..., " in doc or "4H" in doc, f"{fn.__name__} docstring lacks shapes"
