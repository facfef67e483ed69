"""The lab generator: stubs, dependency tagging, headers from _config.yml, and the up-to-date check."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from labcore import assign


def _notebook(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for index, (kind, source) in enumerate(cells):
        make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        nb.cells.append(make(source, id=f"c{index}"))
    return nb


SOLUTION = '''def square(x):
    """Return x squared."""
    ### BEGIN SOLUTION
    y = x * x
    return y
    ### END SOLUTION'''


def test_stub_replaces_each_region_and_keeps_indentation():
    source, regions = assign.stub_solution(SOLUTION)
    assert regions == 1
    assert "x * x" not in source and "BEGIN SOLUTION" not in source
    assert source.splitlines()[-1] == "    raise NotImplementedError()"
    assert source.splitlines()[-2] == "    # YOUR CODE HERE"


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1", "never closed"),
        ("### END SOLUTION", "without"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "nested"),
    ],
)
def test_stub_rejects_unbalanced_markers(source, message):
    with pytest.raises(ValueError, match=message):
        assign.stub_solution(source)


def test_dependency_tagging_follows_names_through_later_definitions():
    cells = [
        "import torch\nx = torch.ones(3)",  # 0 independent
        "def square(x):\n    raise NotImplementedError()",  # 1 exercise, stub inside a def
        "check(square)",  # 2 calls it: raises
        "def cube(x):\n    return square(x) * x",  # 3 defines only: fine, but tainted
        "y = cube(2)",  # 4 calls a tainted function
        "z = y + 1",  # 5 reads a variable never assigned
        "w = x + 1\nprint(w)",  # 6 independent
        "%matplotlib inline\nraise NotImplementedError()",  # 7 exercise at top level
        "def later():\n    return z",  # 8 defines only
    ]
    exercise = [False, True, False, False, False, False, False, True, False]
    flags = assign.cells_expected_to_raise(cells, exercise)
    assert flags == [False, False, True, False, True, True, False, True, False]


def test_make_lab_strips_outputs_tags_raising_cells_and_adds_nbgrader_metadata():
    solution = _notebook(
        ("markdown", "# Lab 9: Squares (solutions)"),
        ("code", "import math"),
        ("code", SOLUTION),
        ("code", "print(square(3))"),
        ("code", "print(math.pi)"),
    )
    solution.cells[3].outputs = [nbformat.v4.new_output("stream", text="9\n")]
    solution.cells[3].execution_count = 3
    lab = assign.make_lab(solution)
    assert lab.cells[0].source == "# Lab 9: Squares"
    assert "x * x" not in nbformat.writes(lab)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None
        for c in lab.cells
        if c.cell_type == "code"
    )
    tags = [c.metadata.get("tags", []) for c in lab.cells]
    assert tags == [[], [], [], ["raises-exception"], []]
    assert lab.cells[2].metadata["nbgrader"]["solution"] is True
    assert lab.cells[2].metadata["nbgrader"]["grade_id"] == "c2"
    assert solution.cells[3].outputs, "the solution notebook itself must not change"


def test_make_lab_requires_an_exercise():
    with pytest.raises(ValueError, match="no exercise"):
        assign.make_lab(_notebook(("code", "x = 1")))


def test_headers_come_from_the_config():
    config = assign.CourseConfig("https://github.com/someone/course", "v1.0")
    nb = _notebook(("markdown", "# Title"), ("code", "x = 1"))
    assign.sync_header(nb, config, "labs/07-topic.ipynb")
    assert nb.cells[0].id == "colab-badge"
    assert (
        "https://colab.research.google.com/github/someone/course/blob/v1.0/labs/07-topic.ipynb"
        in nb.cells[0].source
    )
    assert nb.cells[2].id == "setup"
    assert "labcore @ git+https://github.com/someone/course@v1.0" in nb.cells[2].source
    once = nbformat.writes(nb)
    assign.sync_header(nb, config, "labs/07-topic.ipynb")
    assert nbformat.writes(nb) == once, "syncing twice must change nothing"


@pytest.mark.parametrize("url", ["http://github.com/a/b", "https://gitlab.com/a/b", "github.com/a"])
def test_config_rejects_other_urls(url):
    with pytest.raises(ValueError, match="repository.url"):
        assign.CourseConfig(url, "main")


def test_repository_notebooks_agree_with_config_and_solutions(root):
    problems = assign.check(root)
    assert not problems, "\n".join(problems) + f"\nfix: {assign.FIX_COMMAND}"


def test_every_notebook_header_uses_the_configured_url(root):
    config = assign.load_config(root)
    for path in sorted(root.glob("*/*.ipynb")):
        if path.parent.name not in assign.NOTEBOOK_DIRS:
            continue
        nb = nbformat.read(path, as_version=4)
        rel = path.relative_to(root).as_posix()
        assert nb.cells[0].source == assign.badge_cell_source(config, rel), rel
        setup = next(c for c in nb.cells if c.cell_type == "code")
        assert setup.source == assign.setup_cell_source(config), rel


@pytest.fixture
def copy_of_repo(root, tmp_path) -> Path:
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(root / name, tmp_path / name)
    for folder in assign.NOTEBOOK_DIRS:
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("static"))
    return tmp_path


def _first_exercise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.cell_type == "code" and assign.BEGIN in c.source)


def test_editing_a_solution_without_regenerating_fails_the_check(copy_of_repo, capsys):
    path = sorted((copy_of_repo / "solutions").glob("*.ipynb"))[0]
    nb = nbformat.read(path, as_version=4)
    _first_exercise(nb).source += "\n# an edit"
    nbformat.write(nb, path)
    assert assign.main(["--check", "--root", str(copy_of_repo)]) == 1
    err = capsys.readouterr().err
    assert f"labs/{path.name} is out of date" in err and "make labs" in err
    assert assign.main(["--root", str(copy_of_repo)]) == 0
    assert assign.main(["--check", "--root", str(copy_of_repo)]) == 0


def test_a_leaked_solution_in_a_lab_fails_the_check(copy_of_repo, capsys):
    path = sorted((copy_of_repo / "labs").glob("*.ipynb"))[0]
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "raise NotImplementedError()" in c.source)
    cell.source = cell.source.replace("raise NotImplementedError()", "pass")
    nbformat.write(nb, path)
    assert assign.main(["--check", "--root", str(copy_of_repo)]) == 1
    assert "out of date" in capsys.readouterr().err


def test_imports_in_an_exercise_cell_are_not_tainted():
    cells = [
        "import math\ndef f(x: math.inf):\n    raise NotImplementedError()",
        "print(math.pi)",
        "print(f(1))",
        "a = 1\nraise NotImplementedError()\nb = 2",
        "print(a)",
        "print(b)",
    ]
    flags = assign.cells_expected_to_raise(cells, [True, False, False, True, False, False])
    assert flags == [False, False, True, True, False, True]


def test_locally_rebound_names_do_not_count_as_reads_of_tainted_names():
    cells = [
        "def model(x):\n    raise NotImplementedError()",  # exercise: `model` is tainted
        "for model in ['a', 'b']:\n    print(model)",  # the loop rebinds it
        "names = [model for model in range(3)]",  # so does a comprehension
        "def show(model):\n    return model\nshow(1)",  # and a parameter
        "def use():\n    return model(1)\nuse()",  # a real call of the stub
    ]
    flags = assign.cells_expected_to_raise(cells, [True, False, False, False, False])
    assert flags == [False, False, False, False, True]


def test_objects_filled_by_a_raising_statement_count_as_tainted():
    cells = [
        "def f(x):\n    raise NotImplementedError()",
        "results = {}\nrows = []\nfor k in range(3):\n    results[k] = f(k)\n    rows.append(k)",
        "print(results[0])",
        "print(rows[0])",
        "import math\nprint(math.pi)",
    ]
    flags = assign.cells_expected_to_raise(cells, [True, False, False, False, False])
    assert flags == [False, True, True, True, False]


# --------------------------------------------------------------------------- figures' text alternatives
def _figure_cell(source: str = "plt.plot(x)") -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})]
    return cell


def test_plain_text_reads_inline_tex_aloud():
    assert (
        assign.plain_text(r"from $\rho_0 \propto 1 + 0.6\cos\theta$ at $t \approx 12$, **bold**")
        == "from rho_0 proportional to 1 + 0.6 cos theta at t about 12, bold"
    )
    assert assign.plain_text(r"$\operatorname{ReLU}(w^{(1)}_j x)$ and [a link](x.html)") == (
        "ReLU(w^(1)_j x) and a link"
    )


def test_figures_get_their_caption_or_their_written_alt_and_the_rest_are_reported():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        _figure_cell(),
        nbformat.v4.new_markdown_cell(r"**Figure 2.3.** Loss for $\beta = 2$. Then more."),
        _figure_cell(),
        nbformat.v4.new_markdown_cell("*Figure 5.1. Italic captions count too.*"),
        _figure_cell(),  # a hand-written alternative wins over the caption after it
        nbformat.v4.new_markdown_cell("**Figure 9.9.** Not this one."),
        _figure_cell(),  # neither
        nbformat.v4.new_markdown_cell("Some prose, no caption."),
        nbformat.v4.new_code_cell("print(1)"),  # no image: left alone
    ]
    nb.cells[4].metadata["alt"] = "  A purpose-written\n description. "
    missing = assign.sync_figure_alts(nb, "x.ipynb")
    alts = [c.metadata.get("mystnb", {}).get("image", {}).get("alt") for c in nb.cells]
    assert alts[0] == "Figure 2.3: Loss for beta = 2."
    assert alts[2] == "Figure 5.1: Italic captions count too."
    assert alts[4] == "A purpose-written description."
    assert alts[6] is None and alts[8] is None and "mystnb" not in nb.cells[8].metadata
    assert missing == [f"x.ipynb: cell {nb.cells[6].id}"]


def test_check_and_write_fail_on_a_figure_without_a_text_alternative(copy_of_repo, capsys):
    assert assign.check(copy_of_repo) == []
    path = copy_of_repo / "book" / "00-function-approximation.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(_figure_cell())
    nbformat.write(nb, path)
    assert assign.main(["--check", "--root", str(copy_of_repo)]) == 1
    assert assign.main(["--root", str(copy_of_repo)]) == 1
    err = capsys.readouterr().err
    assert f"book/{path.name}: cell {nb.cells[-1].id} draws a figure with neither a caption" in err


def _presents_only(cell: nbformat.NotebookNode) -> bool:
    """A widget or an animation: code that only presents (see README, 'prose first')."""
    return cell.cell_type == "code" and (
        "ipywidgets" in cell.source or "animation_html(" in cell.source
    )


def test_chapter_pages_fold_presentation_code_and_labs_fold_nothing(root):
    folded = 0
    for path in sorted((root / "book").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if _presents_only(cell):
                assert "hide-input" in cell.metadata.get("tags", []), f"{path.name}: {cell.id}"
            folded += "hide-input" in cell.metadata.get("tags", [])
    assert folded >= 10
    for folder in ("labs", "solutions"):
        for path in sorted((root / folder).glob("*.ipynb")):
            for cell in nbformat.read(path, as_version=4).cells:
                assert "hide-input" not in cell.metadata.get("tags", []), f"{path}: {cell.id}"
