"""Print the course as one PDF, offline: Sphinx's single-page build rendered by headless Chromium.

``make pdf`` builds the whole book into one HTML page (``jupyter-book build . --builder
singlehtml``: landing page, chapters, labs, solutions, instructor guide, bibliography), then

    python -m labcore.book_pdf _build/singlehtml _build/pdf/course.pdf

serves that folder on 127.0.0.1, opens it in Debian's Chromium through Playwright (no other host is
reachable: the vendored MathJax typesets the math), waits until every equation is rendered, and
prints the page with Chromium's own PDF writer: A4, with a document outline from the headings and
a tagged (accessible) PDF. The figures are the PNGs of the stored outputs; widgets print as their
static state, code cells that the site folds stay folded.
"""

from __future__ import annotations

import argparse
import functools
import re
import shutil
import sys
import threading
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: Debian's Chromium and the flags it needs here (no sandbox as root, no network but localhost).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 600_000  # a guard against a hang; a loaded machine needs a minute or two


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves a folder without logging every request (the site test uses it too)."""

    def log_message(self, *args: object) -> None:
        pass


def _entry(site: Path) -> str:
    """The page to print, at the top of ``site``.

    Jupyter Book's ``index.html`` only redirects to the root document (``book/intro.html``), whose
    links (``_static/...``, ``_images/...``) the single-page builder writes relative to the top
    folder: a copy there, ``print.html``, finds its styles, scripts and figures.
    """
    index = (site / "index.html").read_text(encoding="utf-8")
    match = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', index)
    if match is None:
        return "index.html"
    shutil.copyfile(site / match.group(1), site / "print.html")
    return "print.html"


def print_pdf(site: Path, pdf: Path, chromium: str = CHROMIUM) -> int:
    """Print ``site/index.html`` (a single-page build) to ``pdf``; return the number of equations.

    Raises:
        ValueError: ``site`` has no ``index.html``, or a formula failed to typeset.
        FileNotFoundError: ``chromium`` is missing.
    """
    from playwright.sync_api import sync_playwright

    if not (site / "index.html").is_file():
        raise ValueError(f"{site} has no index.html: build it with --builder singlehtml first")
    if not Path(chromium).is_file():
        raise FileNotFoundError(f"{chromium} is missing (Debian: apt-get install chromium)")
    handler = functools.partial(QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
            )
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.route(
                "**/*",
                lambda route: (
                    route.continue_()
                    if route.request.url.startswith((origin, "data:"))
                    else route.abort()
                ),
            )
            page.goto(f"{origin}/{_entry(site)}", wait_until="networkidle")
            page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
            page.evaluate("MathJax.startup.promise")
            if page.locator("mjx-merror").count():
                raise ValueError("a formula failed to typeset: the PDF would show raw TeX")
            equations = page.locator("mjx-container").count()
            page.emulate_media(media="print")
            pdf.parent.mkdir(parents=True, exist_ok=True)
            page.pdf(
                path=str(pdf),
                format="A4",
                margin={"top": "18mm", "bottom": "18mm", "left": "16mm", "right": "16mm"},
                print_background=True,
                outline=True,
                tagged=True,
            )
            browser.close()
    finally:
        server.shutdown()
    return equations


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m labcore.book_pdf", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("site", type=Path, help="the single-page build (its index.html)")
    parser.add_argument("pdf", type=Path, help="the PDF to write")
    args = parser.parse_args(argv)
    try:
        equations = print_pdf(args.site, args.pdf)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = args.pdf.stat().st_size / 2**20
    print(f"wrote {args.pdf} ({size:.1f} MB, {equations} formulas typeset)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
