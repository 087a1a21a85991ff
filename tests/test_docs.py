"""The docs cannot rot.

The Python examples of the README and of every page under docs/ run; the `jlstm` command
lines they show parse; the README's set-up commands are what CI runs; the architecture
page's table of layers is the import graph of src/jlstm and its file tree is the tree;
the public API is documented; the site's browser check catches what it must.
"""

import ast
import contextlib
import importlib.util
import inspect
import io
import pathlib
import re
import shlex
import shutil
import sys

import pytest

import jlstm

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PACKAGE = ROOT / "src" / "jlstm"
# The README and every Markdown page of the site, by their path in the repository.
PAGES = {"README.md": README} | {
    path.relative_to(ROOT).as_posix(): path.read_text() for path in sorted(DOCS.rglob("*.md"))
}

# A line `<!-- slow -->` right above a ```python block puts it in the slow tier.
SLOW_MARKER = "<!-- slow -->"
# Blocks that train a model are slow whether marked or not.
TRAINS = ("fit(", "run_training(", "run_task(", 'main(["train"')


def _python_blocks(text, *, slow):
    """A page's Python blocks of one tier: slow ones train a model or carry SLOW_MARKER."""
    found = re.findall(r"(<!-- slow -->\n)?```python\n(.*?)```", text, flags=re.S)
    return [block for marker, block in found if _is_slow(block, marker) == slow]


def _is_slow(block, marker):
    return bool(marker) or any(call in block for call in TRAINS)


def _examples(*, slow):
    return [
        pytest.param(page, block, id=f"{page}-{number}")
        for page, text in PAGES.items()
        for number, block in enumerate(_python_blocks(text, slow=slow))
    ]


def _run(page, block):
    # Each block runs on its own, as a reader would paste it: write every example whole.
    exec(compile(block, page, "exec"), {"__name__": "docs_example"})


def test_slow_marker_selects_the_block():
    text = f"a\n```python\nx = 1\n```\n{SLOW_MARKER}\n```python\ny = 2\n```\n"
    assert _python_blocks(text, slow=False) == ["x = 1\n"]
    assert _python_blocks(text, slow=True) == ["y = 2\n"]
    assert _python_blocks("```python\nstate = fit(c, d)\n```\n", slow=True) == [
        "state = fit(c, d)\n"
    ]


def test_the_readme_and_the_pages_show_python_examples():
    assert _python_blocks(README, slow=False), "the README must show a Python example"
    for page in ("getting-started.md", "forecasting.md", "functional-api.md", "interop.md"):
        text = PAGES[f"docs/{page}"]
        assert _python_blocks(text, slow=False) + _python_blocks(text, slow=True), page


@pytest.mark.parametrize(("page", "block"), _examples(slow=False))
def test_docs_python_example_runs(page, block):
    _run(page, block)


@pytest.mark.slow
@pytest.mark.parametrize(("page", "block"), _examples(slow=True))
def test_docs_training_example_runs(page, block):
    _run(page, block)


# -- the command lines the docs show ---------------------------------------------------------

# Flags and commands that the docs describe and other branches are adding now. A command
# line that uses one is checked once the parser knows it; until then it is skipped.
PENDING = ("--id-column", "--quantiles", "backtest", "--folds")


def _command_lines():
    """Every `jlstm ...` command in the bash blocks of the README and the pages."""
    found = []
    for page, text in PAGES.items():
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                line = re.sub(r"\s#.*$", "", line).strip().rstrip("&").strip()
                for part in line.split("&&"):
                    part = re.sub(r"\[[^\]]*\]", "", part).strip()  # `[--seed S]`: optional
                    if part.startswith("jlstm ") and "--help" not in part:
                        found.append(pytest.param(part, id=f"{page}: {part}"))
    return found


def _parse(argv):
    """(exit status or None, stderr) of parsing ``argv`` with the `jlstm` parser."""
    from jlstm.cli import build_parser

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            return exit_.code, stderr.getvalue()
    return None, stderr.getvalue()


@pytest.mark.parametrize("command", _command_lines())
def test_docs_command_line_parses(command):
    argv = shlex.split(command)[1:]
    status, message = _parse(argv)
    if status is not None and any(name in argv for name in PENDING):
        unknown = re.search(r"unrecognized arguments: (.*?) \(|invalid choice: '(\w+)'", message)
        if unknown and any(name in (unknown[1] or unknown[2] or "") for name in PENDING):
            pytest.skip(f"a flag another branch is adding: {message.strip()}")
    assert status is None, f"`{command}` does not parse: {message.strip()}"


def test_command_line_check_fails_on_a_wrong_flag():
    assert _parse(["train", "--epochz", "3"])[0] == 2
    assert _parse(["train", "--epochs", "3", "--out", "runs/x"]) == (None, "")


def test_docs_show_command_lines():
    commands = [p.values[0] for p in _command_lines()]
    assert any(c.startswith("jlstm train --data") for c in commands)
    assert any(c.startswith("jlstm predict") for c in commands)


# -- what the README and the forecasting page promise ----------------------------------------


def test_forecasting_toml_example_is_a_valid_config(tmp_path):
    from jlstm.cli.options import read_toml
    from jlstm.experiment import Settings

    (block,) = re.findall(r"```toml\n(.*?)```", PAGES["docs/forecasting.md"], flags=re.S)
    path = tmp_path / "run.toml"
    path.write_text(block)
    settings = Settings.resolve(read_toml(str(path)))
    assert settings.data == str(tmp_path / "sales.csv") and settings.covariates == ("promo",)
    assert settings.horizon == 3 and settings.layers == (32, 16) and settings.epochs == 200


def test_docs_say_how_to_forecast_with_covariates():
    for text in (README, PAGES["docs/forecasting.md"]):
        assert "predict -n N` refuses `N` larger than the horizon" in text


def test_readme_forecast_your_own_csv_comes_first():
    headings = re.findall(r"^## (.*)$", README, flags=re.M)
    assert headings[:2] == ["Set-up (fresh machine, Python 3.11+)", "Forecast your own CSV"]
    section = README.split("## Forecast your own CSV")[1].split("\n## ")[0]
    for topic in ("**Dates.**", "**Transforms.**", "**Horizon", "**Intervals.**"):
        assert topic in section, topic
    for topic in ("**Many series.**", "**Export.**"):
        assert topic in section, topic


def test_readme_stays_short_and_links_resolve():
    assert len(README.splitlines()) < 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to a missing {target}"


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


# -- the architecture page is the tree -------------------------------------------------------

ARCHITECTURE = PAGES["docs/architecture.md"]


def _modules():
    """Every module of src/jlstm by its dotted name below jlstm (a package: its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:  # the package's own __init__ is the front door, not a layer
            found[".".join(parts)] = path
    return found


def _layers():
    """Module (or folder/) -> (level, layer name), from the page's table of layers."""
    table = ARCHITECTURE.split("<!-- layers:")[1].split("\n\n")[0]
    levels = {}
    for row in re.findall(r"^\| (\d+) \| ([^|]+) \| ([^|]+) \|", table, flags=re.M):
        level, name, modules = int(row[0]), row[1].strip(), row[2]
        for module in re.findall(r"`([\w/]+)`", modules):
            assert module not in levels, f"{module} is in two rows"
            levels[module] = (level, name)
    return levels


def _level_of(module, layers):
    top = module.split(".")[0]
    return layers.get(module.replace(".", "/")) or layers.get(top + "/")


def _imports(module, path):
    """The jlstm modules that ``module`` imports (inside functions too), with the names."""
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package else module.split(".")[:-1]
    modules = _modules()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").startswith("jlstm."):
                target = node.module[len("jlstm.") :]
            else:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}" if target else alias.name
                found.append((full if full in modules else target, alias.name))
        elif isinstance(node, ast.Import):
            found += [(a.name[len("jlstm.") :], None) for a in node.names if a.name[:6] == "jlstm."]
    return [(target, name) for target, name in found if target in modules and target != module]


def test_architecture_table_names_every_module_once():
    layers = _layers()
    modules = _modules()
    unplaced = [m for m in modules if _level_of(m, layers) is None]
    assert not unplaced, f"modules missing from docs/architecture.md's table: {unplaced}"
    for entry in layers:
        if entry.endswith("/"):
            assert (PACKAGE / entry).is_dir(), f"the table names a missing folder {entry}"
        else:
            assert entry.replace("/", ".") in modules, f"the table names a missing module {entry}"


def test_no_module_imports_a_higher_layer_or_private_names():
    layers = _layers()
    problems = set()
    for module, path in _modules().items():
        level, name = _level_of(module, layers)
        is_package = path.name == "__init__.py"
        for target, imported in _imports(module, path):
            if is_package and target.startswith(module + "."):
                continue  # a package re-exporting its own modules is not layering
            target_level, target_name = _level_of(target, layers)
            if target_level > level:
                problems.add(f"{module} ({name}) imports {target} ({target_name})")
            if imported and imported.startswith("_") and not imported.startswith("__"):
                if not target.startswith(module + "."):
                    problems.add(f"{module} imports the private {target}.{imported}")
    assert not problems, "upward or private imports (fix the code or the page):\n" + "\n".join(
        sorted(problems)
    )


def test_layer_check_sees_an_upward_import(tmp_path):
    # The check reads relative imports the way Python does: `from ..model import x` in
    # jlstm/data/windows.py is jlstm.model, which sits above the data layer.
    path = tmp_path / "windows.py"
    path.write_text("def f():\n    from ..model import apply\n")
    assert ("model", "apply") in _imports("data.windows", path)


def test_architecture_file_tree_is_the_tree():
    tree = ARCHITECTURE.split("```\nsrc/jlstm/")[1].split("```")[0]
    listed, folder = set(), []
    for line in tree.splitlines():
        match = re.match(r"^( *)([\w.]+\.py|\w+/)(\s|$)", line)
        if not match:
            continue  # a description's second line
        depth, name = len(match[1]) // 2 - 1, match[2]
        if depth < 0:
            break  # tests/, benchmarks/: outside the package
        folder = folder[:depth]
        if name.endswith("/"):
            folder.append(name.rstrip("/"))
        else:
            listed.add("/".join([*folder, name]))
    actual = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}
    missing = {name for name in actual - listed if not name.endswith("__init__.py")}
    assert not missing, f"files missing from docs/architecture.md's tree: {sorted(missing)}"
    assert listed <= actual, f"the page's tree names missing files: {sorted(listed - actual)}"


def test_architecture_page_states_the_chain():
    chain = "cell -> layer (scan) -> stack -> model -> train -> experiment -> CLI"
    assert chain in ARCHITECTURE
    layers = _layers()
    levels = [layers[m][0] for m in ("cell", "layer", "stack", "model", "train", "experiment/")]
    assert levels == sorted(levels) and levels[-1] < layers["cli/"][0]


# -- the site checker ------------------------------------------------------------------------


def _site_checker():
    spec = importlib.util.spec_from_file_location("check_site", DOCS / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_site"] = module
    spec.loader.exec_module(module)
    return module


def test_site_checker_maps_urls_to_files(tmp_path):
    check_site = _site_checker()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text("<title>a</title>")
    (tmp_path / "index.html").write_text("<title>home</title>")
    assert check_site.target_file(tmp_path, "/a/") == tmp_path / "a" / "index.html"
    assert check_site.target_file(tmp_path, "/a") == tmp_path / "a" / "index.html"
    assert check_site.target_file(tmp_path, "/") == tmp_path / "index.html"
    assert check_site.html_pages(tmp_path) == ["index.html", "a/index.html"]


def test_site_checker_finds_broken_links_and_anchors(tmp_path):
    check_site = _site_checker()
    (tmp_path / "index.html").write_text("<title>home</title>")
    (tmp_path / "b.html").write_text("<title>b</title>")
    origin = "http://127.0.0.1:1"
    ids = {"index.html": {"top"}, "b.html": {"part"}}
    links = [
        ("index.html", f"{origin}/b.html#part"),
        ("index.html", f"{origin}/b.html#gone"),
        ("index.html", f"{origin}/missing/"),
        ("index.html", "https://example.org/elsewhere"),
    ]
    problems = check_site.check_links(tmp_path, origin, ids, links)
    assert len(problems) == 2
    assert "no #gone" in problems[0] and "missing/index.html" in problems[1]


def _chromium():
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if importlib.util.find_spec("playwright") is None or not pathlib.Path(path).exists():
        pytest.skip("the browser check needs playwright and Chromium (the docs extra, apt)")
    return path


def test_site_checker_fails_a_bad_site_in_a_real_browser(tmp_path):
    chromium = _chromium()
    check_site = _site_checker()
    page = "<!doctype html><html><head><title>{}</title></head><body><article>{}</article>"
    (tmp_path / "index.html").write_text(
        page.format("home", '<a href="good.html">good</a> <a href="nowhere.html">bad</a>')
    )
    (tmp_path / "good.html").write_text(page.format("good", "fine"))
    (tmp_path / "noisy.html").write_text(
        page.format("noisy", "text<script>console.error('broken widget')</script>")
    )
    (tmp_path / "outside.html").write_text(
        page.format("outside", 'text<script src="https://cdn.example.org/x.js"></script>')
    )
    (tmp_path / "throws.html").write_text(
        page.format("throws", "text<script>undefinedFunction()</script>")
    )
    (tmp_path / "empty.html").write_text(page.format("empty", ""))
    problems = check_site.check(tmp_path, chromium, search=False)
    text = "\n".join(problems)
    assert "noisy.html: console error: broken widget" in text
    assert "outside.html: requests outside the site: https://cdn.example.org/x.js" in text
    assert "throws.html: uncaught" in text
    assert "empty.html: empty article" in text
    assert "index.html: broken link" in text and "nowhere.html" in text
    pages = {problem.split(":")[0] for problem in problems}
    assert pages == {"index.html", "noisy.html", "outside.html", "throws.html", "empty.html"}
