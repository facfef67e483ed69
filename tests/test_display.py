"""labcore.display: matplotlib's animation player made accessible and offline."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.animation import FuncAnimation

from labcore.display import animation_html


@pytest.fixture
def animation():
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    (line,) = ax.plot([0, 1], [0, 1])
    movie = FuncAnimation(fig, lambda k: line.set_ydata([0, k]), frames=3)
    yield movie
    plt.close(fig)


def test_the_player_has_a_text_alternative_a_named_slider_and_no_cdn(animation):
    plain = animation.to_jshtml(default_mode="once")
    assert "https://" in plain and re.search(r"<img id=\"_anim_img\w+\">", plain)  # the defects
    player = animation_html(animation, 'Three frames of a line: "rising" & <steeper>')
    assert "https://" not in player and "http://" not in player
    (alt,) = re.findall(r"<img id=\"_anim_img\w+\" alt=\"([^\"]*)\">", player)
    assert alt == "Three frames of a line: &quot;rising&quot; &amp; &lt;steeper&gt;"
    assert len(re.findall(r"aria-label=\"Animation frame\" type=\"range\"", player)) == 1
    assert player.count("data:image/png;base64,") == plain.count("data:image/png;base64,") == 3
    assert player.count('aria-label="') == plain.count('aria-label="') + 1  # buttons keep theirs


@pytest.mark.parametrize("alt", ["", "   ", None])
def test_an_empty_description_is_an_error(animation, alt):
    with pytest.raises(ValueError, match="alt must describe"):
        animation_html(animation, alt)


def test_a_changed_matplotlib_template_is_an_error_not_a_silent_pass(animation, monkeypatch):
    monkeypatch.setattr(animation, "to_jshtml", lambda default_mode: "<div>no player</div>")
    with pytest.raises(ValueError, match="to_jshtml player changed"):
        animation_html(animation, "a line")
