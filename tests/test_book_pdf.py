"""The printed course (``make pdf``; ``make test`` builds it first): whole, navigable, math typeset.

``labcore.book_pdf`` prints Sphinx's single-page build with headless Chromium. Read back with pypdf,
the PDF must hold the whole book (pages in proportion to the text of the single page), name every
chapter in its outline, and show no raw TeX (MathJax typeset every formula before printing).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PDF = ROOT / "_build" / "pdf" / "course.pdf"
SINGLE_PAGE = ROOT / "_build" / "singlehtml" / "book" / "intro.html"
#: A printed A4 page of this book holds at most this many characters of its text.
MAX_CHARS_PER_PAGE = 4000
RAW_TEX = re.compile(r"\$\$|\\\(|\\\[|\\(frac|begin|end|sum|mathbb|operatorname|left|right)\b")


class _Text(HTMLParser):
    """The visible text of an HTML page (scripts and styles left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def _outline_titles(outline) -> list[str]:
    titles = []
    for item in outline:
        titles += _outline_titles(item) if isinstance(item, list) else [item.title]
    return titles


@pytest.fixture(scope="module")
def pdf():
    from pypdf import PdfReader

    if not PDF.is_file():
        pytest.fail("the PDF is not built: run `make pdf` (make test builds it first)")
    return PdfReader(PDF)


def test_the_pdf_holds_the_whole_book(pdf):
    parser = _Text()
    parser.feed(SINGLE_PAGE.read_text(encoding="utf-8"))
    html_chars = len(" ".join("".join(parser.parts).split()))
    assert html_chars > 300_000  # the single page holds every chapter, lab and solution
    assert len(pdf.pages) >= html_chars / MAX_CHARS_PER_PAGE


def test_every_chapter_is_in_the_outline(pdf):
    titles = [" ".join(t.split()) for t in _outline_titles(pdf.outline)]
    for path in sorted((ROOT / "book").glob("0*.ipynb")):
        heading = next(
            line.lstrip("# ").strip()
            for cell in nbformat.read(path, as_version=4).cells
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
            if line.startswith("# ")
        )
        squeezed = heading.replace(" ", "")
        assert any(squeezed in t.replace(" ", "") for t in titles), f"{heading!r} not in outline"
    assert any("Bibliography" in t for t in titles)
    if (ROOT / "book" / "instructor-guide.md").is_file():  # not in the student edition
        assert any("Instructor" in t for t in titles)


def test_no_raw_tex_is_printed(pdf):
    for number, page in enumerate(pdf.pages, start=1):
        text = page.extract_text() or ""
        match = RAW_TEX.search(text)
        assert match is None, f"page {number} shows raw TeX: ...{text[match.start() - 40 :][:100]}"
