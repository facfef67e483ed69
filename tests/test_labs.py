"""Every lab runs top to bottom with exactly its tagged cells failing.

nbval (run by ``make test``) already fails on an untagged cell that errors; it does *not* fail when
a cell tagged ``raises-exception`` runs cleanly, which is what a leaked solution looks like. This
test closes that gap by executing each lab and comparing the failing cells with the tags.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from labcore.assign import RAISES_TAG, execute_notebook

LABS = sorted((Path(__file__).resolve().parents[1] / "labs").glob("*.ipynb"))


def test_there_are_labs():
    assert LABS, "labs/ is empty"


@pytest.mark.parametrize("path", LABS, ids=[p.stem for p in LABS])
def test_lab_fails_exactly_in_its_tagged_cells(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs for c in code), "labs are stored without outputs"
    # one thread: beside the other test worker, torch's threads only fight over the two cores
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    execute_notebook(nb, path.parent, allow_errors=True, env=one_thread)
    failing = {c.id for c in code if any(o.output_type == "error" for o in c.outputs)}
    tagged = {c.id for c in code if RAISES_TAG in c.metadata.get("tags", [])}
    assert tagged, "a lab without exercises"
    assert not failing - tagged, f"untagged cells failed: {sorted(failing - tagged)}"
    assert not tagged - failing, (
        f"cells tagged {RAISES_TAG!r} ran without error (a leaked solution?): "
        f"{sorted(tagged - failing)}"
    )
    exercise_errors = [
        o.ename
        for c in code
        if "nbgrader" in c.metadata
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert set(exercise_errors) <= {"NotImplementedError"}
