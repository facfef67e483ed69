"""The student edition (``python -m labcore.release``): the course without its solutions.

One release of this repository's HEAD is written into a temporary folder, with a public URL and a
tag, and read back: no ``solutions/`` folder, no solution region's code in any file outside
``labcore/`` (found here by a simpler search than the module's own), no link to a solution, a toc
without the Solutions part, a Makefile whose test run names no solutions, badges that open the
public repository, and a test suite that pytest collects. The helpers are tested on small inputs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from labcore import assign, release

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = "https://github.com/example-course/course-student"
TAG = "v2099-test"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def commit() -> str:
    return _git("rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def tracked(commit) -> list[str]:
    return _git("ls-tree", "-r", "--name-only", commit).split()


@pytest.fixture(scope="module")
def student(tmp_path_factory, commit) -> Path:
    dest = tmp_path_factory.mktemp("release") / "course-student"
    result = release.release(ROOT, dest, tag=TAG, repository_url=PUBLIC, source_ref=commit)
    assert result.commit == commit and result.dest == dest
    return dest


def _released(student: Path) -> list[str]:
    return sorted(p.relative_to(student).as_posix() for p in student.rglob("*") if p.is_file())


def _regions(commit: str, tracked: list[str]) -> list[tuple[str, list[str]]]:
    """(where, stripped code lines) of every solution region at ``commit``: the lines between the
    markers, blank and comment-only lines left out."""
    regions = []
    for rel in (r for r in tracked if r.startswith("solutions/") and r.endswith(".ipynb")):
        nb = nbformat.reads(_git("show", f"{commit}:{rel}"), as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code" or BEGIN not in cell.source:
                continue
            for chunk in cell.source.split(BEGIN)[1:]:
                lines = [line.strip() for line in chunk.split(END)[0].splitlines()]
                lines = [line for line in lines if line and not line.startswith("#")]
                regions.append((f"{rel} {cell.get('id')}", lines))
    return regions


def _text(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None
    if path.suffix == ".ipynb":
        return "\n".join(cell.source for cell in nbformat.reads(text, as_version=4).cells)
    return text


# ------------------------------------------------------------------------------ the release
def test_no_solutions_and_only_committed_files(student, tracked):
    files = _released(student)
    assert not (student / "solutions").exists()
    assert not (student / "book" / "instructor-guide.md").exists()
    assert not [f for f in files if f.startswith(("tests/mistakes/", ".venv", "_build/"))]
    assert set(files) <= set(tracked), "a file that is not in the commit"
    # the course's package, chapters and labs are all there
    for folder in ("labcore/", "book/", "labs/"):
        assert {f for f in tracked if f.startswith(folder) and f != "book/instructor-guide.md"} <= (
            set(files)
        )


def test_no_file_outside_labcore_holds_solution_code(student, commit, tracked):
    regions = _regions(commit, tracked)
    assert len(regions) >= 7  # at least one exercise per lab
    leaks = []
    for path in student.rglob("*"):
        rel = path.relative_to(student).as_posix()
        text = _text(path) if path.is_file() and not rel.startswith("labcore/") else None
        if text is None:
            continue
        lines = [line.strip() for line in text.splitlines()]
        squeezed = "\n" + "\n".join(line for line in lines if line and line[0] != "#") + "\n"
        for where, code in regions:
            if "\n" + "\n".join(code) + "\n" in squeezed:
                leaks.append(f"{rel}: {where}")
    assert leaks == []


def test_labcore_is_the_course_package_unchanged(student, commit, tracked):
    """labcore holds reference implementations by design (every notebook imports it): it is the
    only place solution code may be, and it is exactly the commit's package."""
    package = [f for f in tracked if f.startswith("labcore/")]
    assert [f for f in _released(student) if f.startswith("labcore/")] == sorted(package)
    for rel in package[::7]:
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:{rel}"], capture_output=True, check=True
        ).stdout
        assert (student / rel).read_bytes() == shown, rel


def test_no_page_notebook_or_configuration_links_a_solution(student):
    link = re.compile(r"\]\(([^)\s]+)\)|href=\"([^\"]+)\"")
    checked = 0
    for path in student.rglob("*"):
        rel = path.relative_to(student).as_posix()
        if not path.is_file() or path.suffix not in {".md", ".ipynb", ".yml", ".yaml", ".toml"}:
            continue
        raw = path.read_text(encoding="utf-8")
        assert "solutions/" not in raw, f"{rel} names a path in solutions/"
        if path.suffix == ".toml":
            continue
        text = _text(path) or ""
        for match in link.finditer(text):
            target = (match.group(1) or match.group(2)).split("#")[0]
            if re.fullmatch(r"[\w./-]+\.\w+", target) and not re.match(r"[a-z]+:", target):
                # a relative link to a file must resolve
                assert (path.parent / target).exists(), f"{rel}: broken link {target}"
                checked += 1
    assert checked >= 7  # the landing page links every chapter


def test_the_toc_lists_chapters_and_labs_but_no_solutions(student):
    toc = yaml.safe_load((student / "_toc.yml").read_text(encoding="utf-8"))
    course = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    captions = [part["caption"] for part in toc["parts"]]
    assert "Solutions" not in captions and "Solutions" in [p["caption"] for p in course["parts"]]

    def files(t: dict) -> list[str]:
        return [entry["file"] for part in t["parts"] for entry in part["chapters"]]

    expected = [f for f in files(course) if not f.startswith("solutions/")]
    expected.remove("book/instructor-guide")
    assert files(toc) == expected
    for name in files(toc):
        assert (student / f"{name}.ipynb").exists() or (student / f"{name}.md").exists()


def test_the_makefile_tests_no_solutions(student):
    makefile = (student / "Makefile").read_text(encoding="utf-8")
    assert "solutions" not in makefile and "book-student" not in makefile
    recipe = re.search(r"^test:.*\n\t(.*-m pytest (.*?))(?: -|\\\n)", makefile, re.M)
    assert recipe is not None, "no pytest line under test:"
    paths = recipe.group(2).split()
    assert "tests" in paths and "labs" in paths
    assert all((student / p).is_dir() for p in paths)
    # the course's own line tests the solutions, so the release did change it
    assert re.search(r"-m pytest [^\n]*\bsolutions\b", (ROOT / "Makefile").read_text())


def test_every_notebook_opens_and_installs_from_the_public_repository(student):
    config = assign.load_config(student)
    assert (config.repo_url, config.ref) == (PUBLIC, TAG)
    notebooks = sorted([*student.glob("book/*.ipynb"), *student.glob("labs/*.ipynb")])
    assert len(notebooks) >= 14
    for path in notebooks:
        rel = path.relative_to(student).as_posix()
        nb = nbformat.read(path, as_version=4)
        assert (
            f"{PUBLIC.removeprefix('https://github.com/')}/blob/{TAG}/{rel})" in nb.cells[0].source
        )
        setup = next(c for c in nb.cells if c.cell_type == "code")
        assert f"labcore @ git+{PUBLIC}@{TAG}" in setup.source
    assert assign.check(student) == []
    readme = (student / "README.md").read_text(encoding="utf-8")
    assert PUBLIC in readme and TAG in readme and "$" not in readme


def test_pytest_collects_the_student_tests(student):
    """The test run of the release's Makefile collects without an error (nothing imports what was
    left out), and the tests that need the solutions are not there."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        + ["tests", "book", "labs", "--nbval", "--nbval-current-env"],
        cwd=student,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    collected = {line.split("::")[0] for line in run.stdout.splitlines() if "::" in line}
    assert {"tests/test_core.py", "tests/test_labs.py", "labs/01-mlp.ipynb"} <= collected
    assert not {"tests/test_release.py", "tests/test_grade.py"} & collected


def test_verify_finds_planted_solutions(student, tmp_path, commit):
    copy = tmp_path / "copy"
    shutil.copytree(student, copy)
    contents = {
        rel: subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:{rel}"], capture_output=True, check=True
        ).stdout
        for rel in ("solutions/01-mlp.ipynb",)
    }
    regions = release.solution_regions(contents)
    longest = max(regions, key=lambda r: len(r.key))
    (copy / "book" / "notes.md").write_text(f"```python\n{longest.code}\n```\n", encoding="utf-8")
    (copy / "book" / "intro.md").write_text("[answers](../solutions/01-mlp.ipynb)\n")
    (copy / "solutions").mkdir()
    problems = release.verify(copy, regions)
    assert any(p.startswith("book/notes.md holds the code of solutions/01-mlp") for p in problems)
    assert "book/intro.md names a path in solutions/" in problems
    assert "solutions/ exists" in problems


def test_a_non_empty_folder_or_the_course_itself_is_refused(tmp_path):
    (tmp_path / "old.txt").write_text("last term\n")
    with pytest.raises(ValueError, match="not empty: pass --replace"):
        release.release(ROOT, tmp_path)
    with pytest.raises(ValueError, match="holds the course"):
        release.release(ROOT, ROOT.parent)


# ------------------------------------------------------------------------------ the helpers
def test_a_reformatted_copy_of_a_solution_is_found():
    region = release.SolutionRegion(
        "solutions/x.ipynb",
        "ex-a",
        "    total = (x * w).sum(-1)  # (batch,)\n\n    return total + b",
    )
    copy = (
        "def f(x, w, b):\n    total = (x*w).sum(\n        -1\n    )\n    return total + b  # done\n"
    )
    other = "def f(x, w, b):\n    total = (x * w).sum(-1)\n    return total - b\n"
    leaks = release.find_leaks({"copy.py": copy.encode(), "other.py": other.encode()}, [region])
    assert list(leaks) == ["copy.py"]


def test_left_out_follows_solution_code_paths_and_imports():
    region = release.SolutionRegion("solutions/a.ipynb", "ex", "return torch.tril(x).sum(-1) * 2")
    files = {
        "solutions/a.ipynb": b"{}",
        "labcore/ref.py": b"def f(x):\n    return torch.tril(x).sum(-1) * 2\n",
        "tests/answers/__init__.py": b"",
        "tests/answers/lab.py": b"def f(x):\n    return torch.tril(x).sum(-1) * 2\n",
        "tests/answers/helper.py": b"X = 1\n",
        "tests/test_uses_answers.py": b"def test():\n    from answers import lab\n",
        "tests/test_reads.py": b"from pathlib import Path\nP = Path('x') / 'solutions'\n",
        "tests/test_reads_nb.py": b"P = f'solutions/{1}.ipynb'\n",
        "tests/test_unit.py": b"import labcore\nPAGES = ['solutions/', 'labs/']\n",
        "book/page.md": b"# a page\n",
    }
    dropped, leaks = release.left_out(files, [region])
    assert leaks == {}
    assert set(dropped) == {
        "solutions/a.ipynb",
        "tests/answers/__init__.py",
        "tests/answers/lab.py",
        "tests/answers/helper.py",
        "tests/test_uses_answers.py",
        "tests/test_reads.py",
        "tests/test_reads_nb.py",
    }
    files["book/page.md"] = b"```\nreturn torch.tril(x).sum(-1) * 2\n```\n"
    assert list(release.left_out(files, [region])[1]) == ["book/page.md"]


def test_build_files_lose_their_solutions_or_the_release_stops():
    makefile = (
        ".PHONY: book book-student test\n"
        'help:\n\t@echo "make execute   re-execute book/ and solutions/ notebooks"\n'
        '\t@echo "make book-student  the site"\n\n'
        "# the students' site\nbook-student: x\n\tbuild student\n\n"
        "test:\n\tpytest tests book solutions labs -n 2 \\\n\t  --nbval book solutions\n"
    )
    out = release.edit_build_file("Makefile", makefile)
    assert out == (
        ".PHONY: book test\n"
        'help:\n\t@echo "make execute   re-execute book/ notebooks"\n\n'
        "test:\n\tpytest tests book labs -n 2 \\\n\t  --nbval book\n"
    )
    with pytest.raises(ValueError, match="still name the solutions"):
        release.edit_build_file(".ci/run", 'echo "grading the solutions"\n')


def test_instructor_only_passages_and_solution_pages_go():
    text = "A lab<!-- instructor-only -->, and its solution<!-- end instructor-only -->.\n"
    assert release.strip_instructor_only(text) == "A lab.\n"
    with pytest.raises(ValueError, match="do not pair up"):
        release.strip_instructor_only("<!-- instructor-only --> open", "intro.md")
    source = 'PAGES = [\n    "labs/a",\n    "solutions/a",\n]\nPREFIX = ("book/", "solutions/")\n'
    assert release.drop_solution_cases(source) == (
        'PAGES = [\n    "labs/a",\n]\nPREFIX = ("book/", "solutions/")\n'
    )


def test_set_repository_keeps_comments_and_checks_values():
    config = "title: x\nrepository:\n  url: https://github.com/a/b\n  # the ref\n  branch: main\n"
    out = release.set_repository(config, "https://github.com/c/d", "v1")
    assert (
        out == "title: x\nrepository:\n  url: https://github.com/c/d\n  # the ref\n  branch: v1\n"
    )
    with pytest.raises(ValueError, match="repository.url"):
        release.set_repository(config, "https://gitlab.com/c/d", None)


def test_student_toc_drops_missing_documents_and_empty_parts():
    toc = {
        "root": "book/intro",
        "parts": [
            {"caption": "Labs", "chapters": [{"file": "labs/a"}]},
            {"caption": "Solutions", "chapters": [{"file": "solutions/a"}]},
        ],
    }
    released = {"book/intro.md", "labs/a.ipynb"}
    assert release.student_toc(toc, released)["parts"] == [toc["parts"][0]]
    with pytest.raises(ValueError, match="root"):
        release.student_toc(toc, {"labs/a.ipynb"})
