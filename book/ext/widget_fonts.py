"""Sphinx extension: serve the widget manager's fonts where it asks for them, for an offline site.

The vendored ``@jupyter-widgets/html-manager`` (``book/static/widgets/embed-amd.js``) loads its
Font Awesome fonts from ``@jupyter-widgets/html-manager/dist/<hash>.woff2`` relative to each page, not
relative to its own script, so every page with a widget would get 404s (one per font and style).
After the build this copies the vendored ``.woff2`` files to that path beside every folder of
pages. Registered in ``_config.yml`` under ``sphinx: local_extensions``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FONT_FOLDER = Path("@jupyter-widgets") / "html-manager" / "dist"


def copy_widget_fonts(app, exception) -> None:
    """Copy ``book/static/widgets/*.woff2`` beside every folder of HTML pages of the build."""
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    fonts = sorted((Path(app.srcdir) / "book" / "static" / "widgets").glob("*.woff2"))
    folders = {page.parent for page in out.rglob("*.html") if "_static" not in page.parts}
    for folder in sorted(folders):
        target = folder / FONT_FOLDER
        target.mkdir(parents=True, exist_ok=True)
        for font in fonts:
            shutil.copyfile(font, target / font.name)


def setup(app):
    app.connect("build-finished", copy_widget_fonts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
