"""Notebook output that every reader can use: accessible, offline HTML for figures in motion.

matplotlib's ``Animation.to_jshtml`` writes a player whose frame has no text alternative, whose
frame slider has no name, and which loads Font Awesome 4 from a CDN for its button icons. The
course site must pass WCAG 2.1 AA and work offline, so :func:`animation_html` repairs the three: it
gives the frame ``alt`` text, names the slider, and drops the CDN stylesheet (the site's theme ships
Font Awesome 6, which still knows the player's ``fa fa-play``-style icon names; every button keeps
its ``aria-label`` either way).
"""

from __future__ import annotations

import html
import re

__all__ = ["animation_html"]

_CDN_STYLESHEET = re.compile(r"<link\s+rel=\"stylesheet\"\s+href=\"https?://[^\"]+\"\s*/?>\s*")
_FRAME = re.compile(r"<img id=\"(_anim_img[0-9a-f]+)\"\s*>")
_SLIDER = re.compile(r"<input id=\"(_anim_slider[0-9a-f]+)\" type=\"range\"")


def animation_html(animation, alt: str, *, default_mode: str = "once") -> str:
    """The HTML player of a matplotlib animation, with a text alternative and no CDN request.

    Args:
        animation: a ``matplotlib.animation.Animation`` (e.g. ``FuncAnimation``).
        alt: what the animation shows, for readers who cannot see it (the frame's ``alt`` text).
        default_mode: ``"once"``, ``"loop"`` or ``"reflect"``, as in ``to_jshtml``.

    Returns:
        HTML for ``IPython.display.HTML``: the frame ``<img>`` carries ``alt``, the frame slider is
        named "Animation frame", and no stylesheet is loaded from another host.

    Raises:
        ValueError: ``alt`` is empty, or matplotlib's player no longer has the expected frame and
            slider (a new matplotlib release changed its template).
    """
    if not isinstance(alt, str) or not alt.strip():
        raise ValueError(f"alt must describe the animation in words, got {alt!r}")
    player = animation.to_jshtml(default_mode=default_mode)
    if not (_FRAME.search(player) and _SLIDER.search(player)):
        raise ValueError(
            "matplotlib's to_jshtml player changed: no frame <img> or range slider to label"
        )
    player = _CDN_STYLESHEET.sub("", player)
    player = _FRAME.sub(
        lambda m: f'<img id="{m[1]}" alt="{html.escape(alt.strip(), quote=True)}">', player
    )
    return _SLIDER.sub(
        lambda m: f'<input id="{m[1]}" aria-label="Animation frame" type="range"', player
    )
