"""A real-browser test of the built site (``make book`` first; ``make test`` does).

The site is served on 127.0.0.1 and opened in Debian's headless Chromium driven by Playwright. Every
request to another host is blocked, so the test also proves that the site works offline: math is
rendered by the vendored MathJax, not a CDN. Every page is checked for accessibility (WCAG 2.1 AA)
with axe-core, the engine of the browsers' own accessibility tools, installed from npm by ``make``.
"""

from __future__ import annotations

import functools
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from labcore.assign import load_config
from labcore.book_pdf import CHROMIUM, CHROMIUM_FLAGS, QuietHandler

pytestmark = pytest.mark.browser

CHAPTERS = sorted(
    path.stem for path in (Path(__file__).resolve().parents[1] / "book").glob("*.ipynb")
)

ROOT = Path(__file__).resolve().parents[1]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
#: The rules of WCAG 2.0 and 2.1, levels A and AA, as axe-core tags them.
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
#: A text alternative that is a file name or a path (what Sphinx writes when it has nothing else).
FILE_NAME = re.compile(r"^\S*\.(png|jpe?g|gif|svg|webp)$|^\.\./|^_images/", re.IGNORECASE)


def _toc_files(root: Path) -> list[str]:
    """Every document of _toc.yml (root, chapters, sections), as paths without suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


@pytest.fixture(scope="module")
def site(root):
    html = root / "_build" / "html"
    if not (html / "index.html").is_file():
        pytest.fail("the site is not built: run `make book` (make test builds it first)")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=html))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser, site):
    context = browser.new_context()
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(site) or route.request.url.startswith("data:")
            else route.abort()
        ),
    )
    # a guard against a hang, wide enough for a loaded machine: no outcome depends on speed
    context.set_default_timeout(120_000)
    page = context.new_page()
    yield page
    context.close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as response:  # 127.0.0.1 only
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_landing_page_states_aims_audience_and_chapters(page, site):
    response = page.goto(f"{site}/index.html", wait_until="networkidle")
    assert response is not None and response.ok
    assert "Signals, Structures, and Systems" in page.title()
    text = page.inner_text("article")
    for heading in ("What this course is about", "Who it is for", "Prerequisites", "Chapter map"):
        assert heading in text


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_math_renders_offline(page, site, chapter):
    page.goto(f"{site}/book/{chapter}.html", wait_until="networkidle")
    page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
    page.evaluate("MathJax.startup.promise")
    assert page.locator("mjx-container").count() > 20
    assert page.locator("mjx-merror").count() == 0
    assert (
        page.locator("span.math, div.math").filter(has_not=page.locator("mjx-container")).count()
        == 0
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_figures_and_widget_render(page, site, chapter):
    page.goto(f"{site}/book/{chapter}.html", wait_until="networkidle")
    images = page.locator("article img")
    local = [
        i
        for i in range(images.count())
        if images.nth(i).get_attribute("src").startswith("../_images")
    ]
    assert len(local) >= 3, "the chapter's figures are missing"
    for index in local:
        assert images.nth(index).evaluate("img => img.complete && img.naturalWidth > 0")
    page.wait_for_selector(".widget-slider, .jupyter-widgets")


def test_every_toc_page_loads_with_no_broken_internal_link_or_image(page, site, root):
    pages = [f"{site}/{name}.html" for name in _toc_files(root)]
    checked: dict[str, int] = {}
    for url in pages:
        response = page.goto(url, wait_until="domcontentloaded")
        assert response is not None and response.ok, f"{url} did not load"
        targets = page.eval_on_selector_all(
            "a[href], img[src]", "els => els.map(e => e.href || e.src)"
        )
        for target in targets:
            target = urllib.parse.urldefrag(target).url
            if not target.startswith(site) or target in checked:
                continue
            checked[target] = _status(target)
        broken = {t: s for t, s in checked.items() if s != 200}
        assert not broken, f"broken internal links or images on {url}: {broken}"
    assert len(checked) > len(pages)


@pytest.mark.parametrize(
    "page_name",
    [
        "labs/00-function-approximation",
        "solutions/00-function-approximation",
        "book/00-function-approximation",
    ],
)
def test_colab_button_points_at_the_notebook(page, site, root, page_name):
    config = load_config(root)
    page.goto(f"{site}/{page_name}.html", wait_until="domcontentloaded")
    hrefs = page.eval_on_selector_all(
        "a[href*='colab.research.google.com/github']", "els => els.map(e => e.href)"
    )
    expected = config.colab_url(f"{page_name}.ipynb")
    assert hrefs, f"no Colab link on {page_name}"
    assert set(hrefs) == {expected}, f"Colab links {set(hrefs)} differ from {expected}"


TOC_PAGES = _toc_files(ROOT)
#: True once every region the theme can scroll is keyboard-focusable (axe: scrollable-region-focusable).
SCROLLABLES_FOCUSABLE = """() => Array.from(document.querySelectorAll(
    "pre, .cell_output > .output, .jp-RenderedHTMLCommon, .pst-scrollable-table-container"))
    .every(e => e.tabIndex === 0 || (e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight))"""


@pytest.mark.parametrize("name", TOC_PAGES)
def test_page_is_accessible_with_text_alternatives_and_no_failed_request(page, site, name):
    """axe-core finds no serious or critical WCAG 2.1 A/AA violation; every image has real alt
    text (or is marked decorative); no request to the site fails."""
    if not AXE.is_file():
        pytest.fail(f"{AXE.relative_to(ROOT)} is missing: `make test` installs it (npm ci)")
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith(site) else None)
    page.on(
        "response",
        lambda r: (
            failed.append(f"{r.url} ({r.status})")
            if r.url.startswith(site) and r.status >= 400
            else None
        ),
    )
    page.goto(f"{site}/{name}.html", wait_until="networkidle")
    # The theme makes every scrollable code block and output focusable (tabindex 0), debounced
    # after each change of the page (widgets, fonts, MathJax): wait for that state, not for time.
    page.wait_for_function(SCROLLABLES_FOCUSABLE)
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        """async (tags) => (await axe.run(document, {runOnly: {type: "tag", values: tags}}))
            .violations.filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => `${v.id} (${v.impact}): ${v.nodes.length} x, e.g. ${v.nodes[0].html}`)""",
        WCAG_AA,
    )
    assert violations == [], f"{name}: " + "\n".join(violations)
    images = page.eval_on_selector_all(
        "img",
        """imgs => imgs.map(i => ({src: i.getAttribute("src") || "", alt: i.getAttribute("alt"),
            decorative: i.getAttribute("role") === "presentation" || i.ariaHidden === "true"}))""",
    )
    for image in images:
        if image["decorative"]:
            continue
        alt = (image["alt"] or "").strip()
        assert alt, f"{name}: an image without a text alternative: {image['src'][:80]}"
        assert not FILE_NAME.search(alt) and alt != image["src"], (
            f"{name}: alt is a file name: {alt}"
        )
    assert failed == [], f"{name}: failed requests: {failed}"


MATH_PAGES = [name for name in TOC_PAGES if name.startswith(("book/0", "solutions/", "labs/"))]


@pytest.mark.parametrize("width", [1280, 768])
def test_display_math_fits_its_column(browser, site, width):
    """No display equation is wider than its column, on a laptop (1280 px) or a tablet (768 px)."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(120_000)
    page = context.new_page()
    overflowing, equations = [], 0
    for name in MATH_PAGES:
        page.goto(f"{site}/{name}.html", wait_until="networkidle")
        if page.locator("span.math, div.math").count() == 0:
            continue
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("MathJax.startup.promise")
        assert page.locator("mjx-merror").count() == 0, f"{name}: a TeX error"
        widths = page.eval_on_selector_all(
            'mjx-container[display="true"]',
            """containers => containers.map(c => ({
                width: c.querySelector("mjx-math").getBoundingClientRect().width,
                column: c.parentElement.getBoundingClientRect().width,
                tex: (MathJax.startup.document.getMathItemsWithin(c)[0] || {math: ""}).math}))""",
        )
        equations += len(widths)
        overflowing += [
            f"{name}: {w['width'] - w['column']:.0f} px too wide: {w['tex'].strip()[:80]}"
            for w in widths
            if w["width"] > w["column"] + 0.5
        ]
    context.close()
    assert equations > 100  # the measurement ran
    assert overflowing == [], "\n".join(overflowing)
