"""MkDocs hooks: pages that live elsewhere in the repository, and an offline site.

The notebooks, the benchmark write-ups and the datasets' README stay where the code and
the tests use them; this hook adds them to the site instead of copying them into docs/,
so there is one copy of each. The benchmark files keep their repository paths
(``benchmarks/README.md`` links ``results/quick.md``), so their own relative links
resolve on the site too.

A repository page that the navigation does not list (say a new
``benchmarks/results/*.md``) is still built and can be linked to; the strict build's
check that every page is in the navigation applies to docs/ itself.

Rendered notebooks would load MathJax and Mermaid from a CDN; the notebooks use neither
and the site must work offline (the browser check fails on any outside request), so
those script tags are dropped.
"""

from __future__ import annotations

import pathlib
import re

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Repository files shown on the site at the same path.
SAME_PATH = ("notebooks/*.ipynb", "benchmarks/README.md", "benchmarks/results/*.md")
# Images those pages show.
ASSETS = ("benchmarks/results/*.png",)
# Repository files shown at another path: site path -> repository path.
MOVED = {"datasets.md": "src/jlstm/datasets/README.md"}

_OUTSIDE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>", re.I)


def outside_files() -> dict[str, pathlib.Path]:
    """Site path -> repository file, for every file this hook adds."""
    found = {}
    for pattern in (*SAME_PATH, *ASSETS):
        for path in sorted(ROOT.glob(pattern)):
            found[path.relative_to(ROOT).as_posix()] = path
    for site_path, repo_path in MOVED.items():
        found[site_path] = ROOT / repo_path
    return found


# Before mkdocs-jupyter's on_files, which turns .ipynb files into pages.
@event_priority(100)
def on_files(files: Files, config) -> Files:
    in_nav = set(_nav_paths(config.nav))
    for site_path, path in outside_files().items():
        if files.get_file_from_path(site_path) is not None:
            raise ValueError(f"docs/{site_path} would hide {path}: remove one of them")
        listed = site_path in in_nav or not site_path.endswith((".md", ".ipynb"))
        inclusion = InclusionLevel.UNDEFINED if listed else InclusionLevel.NOT_IN_NAV
        if path.relative_to(ROOT).as_posix() == site_path:
            # A plain File (mkdocs-jupyter wraps these; it cannot wrap generated ones).
            files.append(
                File(
                    site_path,
                    src_dir=str(ROOT),
                    dest_dir=config.site_dir,
                    use_directory_urls=config.use_directory_urls,
                    inclusion=inclusion,
                )
            )
        else:
            files.append(
                File.generated(config, site_path, abs_src_path=str(path), inclusion=inclusion)
            )
    return files


def _nav_paths(nav):
    """Every file path the ``nav`` setting names."""
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from _nav_paths(value)
    elif isinstance(nav, list):
        for item in nav:
            yield from _nav_paths(item)


def on_post_page(output: str, page, config) -> str:
    if page.file.src_uri.endswith(".ipynb"):
        output = _OUTSIDE_SCRIPT.sub("", output)
    return output
