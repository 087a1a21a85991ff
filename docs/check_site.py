"""Check the built documentation site in a real headless browser.

Usage: ``python docs/check_site.py [SITE_DIR]`` after ``mkdocs build --strict`` (SITE_DIR
defaults to ``site``). It serves the site on 127.0.0.1, opens every HTML page in Debian's
Chromium through Playwright and fails (exit status 1, one line per problem) when:

- a page does not load (HTTP status, no title, an empty article);
- the page logs a console error or throws an uncaught exception;
- the page requests anything outside the site (the site must work offline), or a request
  fails;
- an ``<a href>`` that points into the site names a file that does not exist, or a
  ``#fragment`` that no element of the target page has;
- the search box finds nothing for a word every page contains.

The browser is the system's (``--chromium``, default ``$CHROMIUM`` or /usr/bin/chromium):
Playwright's own browser downloads do not work on machines without internet access.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import pathlib
import sys
import threading
import urllib.parse

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Text the search must find (the home page's first word, in every page's header too).
SEARCH_WORD = "jlstm"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the base class prints every request
        pass


def serve(site: pathlib.Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``site`` on a free port of 127.0.0.1 in a daemon thread; returns (server, root URL)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def html_pages(site: pathlib.Path) -> list[str]:
    """Every HTML file of the site, as paths relative to it (``index.html`` first)."""
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    return sorted(pages, key=lambda p: p != "index.html")


def target_file(site: pathlib.Path, path: str) -> pathlib.Path:
    """The file a URL path names on a static server (a directory means its index.html)."""
    path = urllib.parse.unquote(path).lstrip("/")
    target = site / path
    if path == "" or path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target


def check(
    site: pathlib.Path, chromium: str, *, search: bool = True, timeout_ms: int = 30_000
) -> list[str]:
    """Every problem found on the site, one line each (empty: the site passes).

    ``search=False`` skips the search check (for a site without MkDocs' search).
    """
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    server, root = serve(site)
    origin = root.rstrip("/")
    ids: dict[str, set[str]] = {}  # page file (relative) -> its element ids
    links: list[tuple[str, str]] = []  # (page it is on, absolute href)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(timeout_ms)
            current = {"name": ""}

            def outside(route):
                problems.append(
                    f"{current['name']}: requests outside the site: {route.request.url}"
                )
                route.abort()

            context.route(lambda url: not url.startswith(origin), outside)
            page.on(
                "console",
                lambda msg: (
                    msg.type == "error"
                    and problems.append(f"{current['name']}: console error: {msg.text}")
                ),
            )
            page.on("pageerror", lambda err: problems.append(f"{current['name']}: uncaught: {err}"))
            page.on(
                "requestfailed",
                lambda req: (
                    req.url.startswith(origin)
                    and problems.append(
                        f"{current['name']}: request failed: {req.url} ({req.failure})"
                    )
                ),
            )
            page.on(
                "response",
                lambda resp: (
                    resp.url.startswith(origin)
                    and resp.status >= 400
                    and not current["name"].endswith("404.html")
                    and problems.append(f"{current['name']}: HTTP {resp.status} for {resp.url}")
                ),
            )
            for name in html_pages(site):
                current["name"] = name
                response = page.goto(root + name, wait_until="load")
                page.wait_for_load_state("networkidle")
                if response is None or response.status != 200:
                    problems.append(f"{name}: does not load (HTTP {response and response.status})")
                    continue
                if not page.title().strip():
                    problems.append(f"{name}: no title")
                if name != "404.html" and not page.inner_text("article").strip():
                    problems.append(f"{name}: empty article")
                ids[name] = set(
                    page.eval_on_selector_all(
                        "[id], a[name]", "els => els.map(e => e.id || e.getAttribute('name'))"
                    )
                )
                for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
                    links.append((name, href))
            if search:
                current["name"] = "search"
                problems.extend(check_search(page, root))
            browser.close()
    finally:
        server.shutdown()
    problems.extend(check_links(site, origin, ids, links))
    return problems


def check_links(site, origin, ids, links) -> list[str]:
    """Broken links among ``links``, (page, absolute href) pairs found on the pages.

    A link into the site must name an existing file, and its ``#fragment`` an element
    id of the target page (``ids``: page -> its ids). Links elsewhere are not fetched.
    """
    problems = []
    for name, href in links:
        if not href.startswith(origin + "/"):
            continue  # mailto:, or a page elsewhere: not fetched (no internet here)
        parsed = urllib.parse.urlsplit(href)
        target = target_file(site, parsed.path)
        if not target.is_file():
            problems.append(f"{name}: broken link {href} (no {target.relative_to(site)})")
            continue
        fragment = urllib.parse.unquote(parsed.fragment)
        if fragment and target.suffix == ".html":
            known = ids.get(target.relative_to(site).as_posix())
            if known is not None and fragment not in known:
                problems.append(f"{name}: broken link {href} (no #{fragment} on that page)")
    return problems


def check_search(page, root: str) -> list[str]:
    """Type a word every page has into the search box; a problem if nothing is found."""
    page.goto(root + "index.html", wait_until="load")
    page.keyboard.press("/")  # Material's shortcut: focus the search box
    page.keyboard.type(SEARCH_WORD)
    try:
        page.wait_for_selector(".md-search-result__item", timeout=15_000)
    except Exception:  # Playwright's TimeoutError
        return [f"search: no result for {SEARCH_WORD!r}"]
    return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", default="site", help="the built site (default: site)")
    parser.add_argument(
        "--chromium",
        default=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
        help="the Chromium executable (default: $CHROMIUM or /usr/bin/chromium)",
    )
    args = parser.parse_args(argv)
    site = pathlib.Path(args.site)
    if not (site / "index.html").is_file():
        print(f"check_site: {site}/index.html not found: run `mkdocs build --strict` first")
        return 2
    if not os.access(args.chromium, os.X_OK):
        print(f"check_site: no Chromium at {args.chromium}: `apt-get install chromium`")
        return 2
    problems = check(site, args.chromium)
    pages = len(html_pages(site))
    for line in problems:
        print(line)
    print(f"check_site: {pages} pages, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
