"""Batch autograder: grade many lab submissions against hidden tests, safely, in one command.

Usage::

    python -m labcore.grade 00-function-approximation submissions/*.ipynb \\
        --out grades.csv --feedback-dir feedback --jobs 4

``<lab>`` is the lab's file stem in ``labs/``; its hidden tests and points are a rubric in
:mod:`labcore.rubrics`. The result is a CSV gradebook (``submission``, one column per exercise
``grade_id``, ``total``, ``max_total``, ``status``) and one Markdown feedback file per submission.

How a submission is graded (all of it on Linux):

1. The grader's main process gives every submission its own *worker process* (at most ``--jobs``
   at a time, forked from a multiprocessing server that has imported torch once) and its own fresh
   temporary directory, holding a copy of the notebook and nothing else; outputs are written by
   the main process only after every worker and kernel has ended.
2. The worker starts a fresh IPython kernel (nbclient) in that directory through a small launch
   wrapper that sets ``resource.setrlimit`` limits on the kernel before it starts: address space
   (``RLIMIT_AS`` = ``--memory-mb``), file size, CPU time and no core dumps. When the grader runs
   as root (a container), the wrapper also isolates the kernel (``--isolation``): ``uid`` drops it
   to a fresh unprivileged uid per submission, which cannot read other submissions' directories or
   the grader's files, nor signal other processes, and whose process count is limited; where the
   machine allows, the kernel also gets a private mount namespace in which the folder of all
   submissions' temporary directories (but its own), the grader's private folder, the submissions'
   and the outputs' folders and the grader's home are covered by empty tmpfs, and ``/tmp`` is
   private (:func:`_mount_plan`; this also lets the uid reach a Python installed under ``/root``).
   ``namespace`` keeps the kernel root but in such a mount namespace plus a PID namespace, on a
   read-only view of the filesystem, without any capability: for a Python an unprivileged uid
   cannot read.
3. The worker runs the student's code cells one by one with a per-cell time limit (``--timeout``)
   inside a total limit (``--total-timeout``); errors do not stop the run. A cell that times out
   is interrupted and grading goes on; a kernel that dies or ignores the interrupt ends the run.
   After a cell that raised, the worker drops IPython's references to the failed frames (their
   memory would stay allocated); printed output beyond 8 MB is dropped inside the kernel and none
   of it is kept by the grader.
4. Right after an exercise cell has run (its cell id, or nbgrader ``grade_id``, is the rubric's
   ``grade_id``), the worker writes each hidden input to a file and injects a few lines that call
   the student's function (by the name the lab defines) and save its *raw* result with
   ``torch.save``. The worker loads the result with ``torch.load(weights_only=True)`` (no
   arbitrary unpickling), checks a per-case nonce, and compares it with labcore's reference in
   its own process. Nothing the kernel prints or claims counts; points are saved exercise by
   exercise, so a later crash keeps the points already earned.
5. When the worker ends, the main process kills whatever the kernel left behind (its uid's
   processes, or every process carrying the submission's random token in its environment) and
   removes the temporary directory.

The grader also *flags* (never penalises) submissions that reference labcore's reference
implementation of a graded function (:func:`find_reference_use`, plus a run-time check of the
function's ``__module__``), because hidden tests cannot tell a student's correct function from
labcore's own.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import math
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import torch

from labcore.grading.records import CaseOutcome, ExerciseGrade, SubmissionGrade
from labcore.grading.report import points_text, write_csv, write_feedback
from labcore.rubrics import (
    RUBRICS,
    Exercise,
    HiddenCase,
    Opaque,
    Rubric,
    TensorResult,
    available_labs,
    load_rubric,
)

__all__ = [
    "CaseOutcome",
    "ExerciseGrade",
    "SubmissionGrade",
    "find_reference_use",
    "submission_names",
    "grade_submissions",
    "write_csv",
    "write_feedback",
    "main",
]

MAX_NOTEBOOK_BYTES = 20 * 2**20  # larger submissions are refused
MAX_RESULT_BYTES = 64 * 2**20  # a hidden case's result file
MAX_TENSOR_ELEMENTS = 4_000_000  # a returned tensor larger than this is not transported
KERNEL_FILE_BYTES = 256 * 2**20  # RLIMIT_FSIZE of the kernel: the largest file it may write
KERNEL_NPROC = 512  # RLIMIT_NPROC of a kernel running under its own uid (threads count)
OUTPUT_NOTE_BYTES = 2**20  # more printed output than this is reported in the status
KERNEL_OUTPUT_BYTES = 8 * 2**20  # printed text per stream beyond this is dropped in the kernel
PROBE_TIMEOUT_S = 20  # how long an interrupted kernel has to answer again (wide: a loaded machine)
WORKER_GRACE_S = 90  # a worker gets --total-timeout plus this before it is killed
TOKEN_ENV = "LABCORE_GRADER_TOKEN"
UID_RANGE = (200_000, 1_200_000)  # sandbox uids: far above real accounts
ISOLATION_CHOICES = ("auto", "uid", "namespace", "none")
SCRATCH_BYTES = 64 * 2**20  # each private /tmp, /var/tmp and /dev/shm of a kernel in a namespace
#: Never covered in a kernel's mount namespace: the system its Python runs on.
SYSTEM_PATHS = (
    "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/dev", "/proc", "/sys",
)  # fmt: skip
#: Device files a kernel that stays root keeps (its ``/dev`` holds nothing else).
KERNEL_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/shm")
#: Packages a kernel may import: their folders stay visible in its mount namespace.
KERNEL_PACKAGES = (
    "labcore", "torch", "numpy", "matplotlib", "ipykernel", "IPython", "jupyter_client",
    "jupyter_core", "zmq", "nbformat", "traitlets", "tornado",
)  # fmt: skip
MEMORY_ERRORS = ("MemoryError", "OutOfMemoryError")
MEMORY_TEXT = ("can't allocate memory", "cannot allocate memory", "bad_alloc", "out of memory")


# --------------------------------------------------------------------------- detector
def _parse_cell(source: Any) -> ast.Module | None:
    """Parse a code cell, treating IPython magics and shell escapes as ``pass``; None if invalid."""
    if isinstance(source, list):
        source = "".join(str(line) for line in source)
    if not isinstance(source, str):
        return None
    lines = [re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except (SyntaxError, ValueError):
        return None


_EXERCISE_HEADING = re.compile(r"^\s*#{1,6}\s*(Exercise\s+\d+\b.*?)\s*$", re.MULTILINE)


def _cell_labels(nb: Any) -> list[str]:
    """What a student can find: each code cell's position among all cells, with its exercise.

    ``"14, Exercise 3: one attention head"`` for the 14th cell of the notebook, counted from 1
    with the Markdown cells, under the nearest ``Exercise N...`` heading above it; just ``"14"``
    before the first exercise. One label per code cell, in order (never the hidden cell ids).
    """
    labels: list[str] = []
    title = ""
    for position, cell in enumerate(getattr(nb, "cells", []) or [], start=1):
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(line) for line in source)
        if cell.get("cell_type") == "markdown" and isinstance(source, str):
            headings = _EXERCISE_HEADING.findall(source)
            if headings:
                title = " ".join(headings[-1].replace("`", "'").split())[:80]
        elif _is_code(cell):
            labels.append(f"{position}, {title}" if title else str(position))
    return labels


def _is_code(cell: Any) -> bool:
    """Whether a notebook cell is a code cell (tolerating malformed cells)."""
    return isinstance(cell, dict) and cell.get("cell_type") == "code"


def _is_labcore(module: str) -> bool:
    """Whether a module name is labcore or one of its submodules."""
    return module == "labcore" or module.startswith("labcore.")


def _reference_findings(nb: Any, rubric: Rubric) -> list[tuple[str, str]]:
    """Find where a notebook's code refers to labcore's implementation of a graded function.

    Flags, per code cell: importing a graded function's name from a labcore module (or ``*``);
    an attribute access ``<labcore module>. ... .<graded name>`` (``fa.gaussian_nll``,
    ``checks.ref.gaussian_nll``) where the student's own answer is made (in that exercise's cell,
    in a ``def`` of that name, or assigned to that name) or where it is replaced (monkeypatching);
    and a string naming a graded function or a labcore module passed to ``getattr``,
    ``__import__`` or ``import_module`` (dynamic lookups). Using labcore's version of *another*
    exercise's function, as a later exercise may, or a string that merely equals a function's
    name (a dictionary key), is not flagged. A determined student can hide such a reference
    (``exec`` of an encoded string), so a clean result proves nothing; a hit is a reason to look,
    not proof of cheating.

    Returns:
        ``(cell label, finding)`` pairs, the label as :func:`_cell_labels` gives it.
    """
    graded = {e.function: e.grade_id for e in rubric.exercises}
    named = {e.function: f"exercise `{e.function}`" for e in rubric.exercises}
    aliases: set[str] = set()
    findings: list[tuple[str, str]] = []
    trees: list[tuple[str, Any, ast.Module]] = []
    cells = [c for c in getattr(nb, "cells", []) if _is_code(c)]
    labels = _cell_labels(nb)
    for index, cell in enumerate(cells):
        tree = _parse_cell(cell.get("source", ""))
        if tree is None:
            continue
        label = labels[index]
        trees.append((label, _nbgrader_id(cell), tree))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _is_labcore(alias.name):
                        aliases.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                if not _is_labcore(node.module or ""):
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        findings.append((label, f"all exercises: `from {node.module} import *`"))
                    elif alias.name in graded:
                        findings.append(
                            (
                                label,
                                f"{named[alias.name]}: imports `{alias.name}` from `{node.module}`",
                            )
                        )
                    else:
                        aliases.add(alias.asname or alias.name)
    for label, grade_id, tree in trees:
        for scope, name in _answer_scopes(tree, graded, grade_id):
            for node in ast.walk(scope):
                if isinstance(node, ast.Attribute) and node.attr == name:
                    root: ast.expr = node
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if isinstance(root, ast.Name) and root.id in aliases:
                        findings.append((label, f"{named[name]}: uses `{ast.unparse(node)}`"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in graded:
                root = node
                while isinstance(root, ast.Attribute):
                    root = root.value
                if (
                    isinstance(root, ast.Name)
                    and root.id in aliases
                    and isinstance(node.ctx, ast.Store | ast.Del)
                ):
                    findings.append((label, f"{named[node.attr]}: replaces `{ast.unparse(node)}`"))
            elif isinstance(node, ast.Call) and _is_dynamic_lookup(node.func):
                for arg in node.args:
                    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                        continue
                    if arg.value in graded:
                        findings.append(
                            (label, f"{named[arg.value]}: the string {arg.value!r} (getattr?)")
                        )
                    elif arg.value in rubric.reference_modules or _is_labcore(arg.value):
                        findings.append(
                            (label, f"all exercises: the string {arg.value!r} (dynamic import?)")
                        )
    return list(dict.fromkeys(findings))


def find_reference_use(nb: Any, rubric: Rubric) -> list[str]:
    """Where a notebook refers to labcore's reference implementation of a graded function.

    See :func:`_reference_findings`; one line per finding: ``"cell <label>, <exercise>: <what>"``.
    """
    return [f"cell {label}, {what}" for label, what in _reference_findings(nb, rubric)]


def _answer_scopes(tree: ast.Module, graded: dict[str, str], grade_id: Any):
    """``(node, name)`` pairs: the code that makes the student's answer for graded ``name``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in graded:
            yield node, node.name
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in graded:
                    yield node.value, target.id
    for name, exercise in graded.items():
        if grade_id is not None and exercise == grade_id:
            yield tree, name


def _is_dynamic_lookup(func: ast.expr) -> bool:
    """``getattr``, ``setattr``, ``__import__``, ``importlib.import_module`` and the like."""
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in {"getattr", "setattr", "hasattr", "__import__", "import_module"}


def _lab_notebook(lab: str) -> Path | None:
    """``labs/<lab>.ipynb`` of the course repository (from the cwd, else beside labcore)."""
    candidates = [Path.cwd(), Path(__file__).resolve().parents[1]]
    for start in candidates:
        for folder in (start, *start.parents):
            path = folder / "labs" / f"{lab}.ipynb"
            if path.is_file():
                return path
    return None


def _baseline_findings(lab: str, rubric: Rubric) -> list[str]:
    """What the detector finds in the untouched lab (legitimate uses, subtracted later), without
    the cells' positions, which a student's added cells would shift."""
    path = _lab_notebook(lab)
    if path is None:
        return []
    return [what for _, what in _reference_findings(nbformat.read(path, as_version=4), rubric)]


# --------------------------------------------------------------------------- kernel side
#: Launch wrapper (``python -c``): set resource limits, maybe isolate the kernel in namespaces of
#: its own and drop it to the sandbox uid, then exec the kernel. Limits are inherited by everything
#: the kernel starts. Its configuration (``argv[1]``, JSON) may have a ``namespace`` plan (see
#: :func:`_mount_plan`): the kernel then gets a private mount namespace in which the folders of
#: ``hide`` are covered by empty tmpfs, with only ``own`` (its own folders) and, except under a
#: ``strict`` cover, ``keep`` (what its Python needs) bound back at their places; ``scratch`` covers
#: are private and writable. With ``contain_root`` (kernels that stay root), it also gets a PID
#: namespace with its own ``/proc`` (a tiny init reaps and reports the kernel's end), a read-only
#: view of every mount but its own folders, and no capabilities at all.
_WRAPPER = r"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
ns = cfg.get("namespace")


def limit(name, value):
    kind = getattr(resource, name, None)
    if kind is None or value is None:
        return
    soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


if cfg["memory_bytes"]:
    limit("RLIMIT_AS", cfg["memory_bytes"])
limit("RLIMIT_CORE", 0)
limit("RLIMIT_FSIZE", cfg["file_bytes"])
limit("RLIMIT_CPU", cfg["cpu_seconds"])
if ns:
    import ctypes, signal, stat

    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
    MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
    contain = bool(ns.get("contain_root"))

    def check(result, what):
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, what + ": " + os.strerror(err))

    def mount(source, target, fstype, flags, data=None):
        args = [None if s is None else s.encode() for s in (source, target, fstype, data)]
        check(libc.mount(args[0], args[1], args[2], ulong(flags), args[3]), "mount " + target)

    def prctl(option, value):
        check(libc.prctl(ctypes.c_int(option), ulong(value), ulong(0), ulong(0), ulong(0)), "prctl")

    def read_only(path, on, recursive):  # mount_setattr(2), MOUNT_ATTR_RDONLY
        attr = (ctypes.c_uint64 * 4)(1 if on else 0, 0 if on else 1, 0, 0)
        flags = ctypes.c_uint(0x8000 if recursive else 0)  # AT_RECURSIVE
        call = libc.syscall(ctypes.c_long(442), ctypes.c_int(-100), path.encode(), flags,
                            ctypes.byref(attr), ctypes.c_size_t(32))
        check(call, "mount_setattr " + path)

    def inside(path, folder):
        return path.startswith(folder.rstrip("/") + "/")

    def tops(paths):
        out = []
        for path in sorted(set(paths)):
            if os.path.lexists(path) and not any(path == o or inside(path, o) for o in out):
                out.append(path)
        return out

    scratch = []

    def cover(folder, kind):
        if os.path.islink(folder) or not os.path.isdir(folder):
            return
        wanted = ns["own"] + (ns["keep"] if kind != "strict" else [])
        back = tops(p for p in wanted if inside(p, folder))
        back = [(p, os.open(p, os.O_PATH | os.O_CLOEXEC)) for p in back]
        mode, size = ("1777", ns["scratch_bytes"]) if kind == "scratch" else ("0711", 2**20)
        mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode},size={size}")
        for path, fd in back:
            os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.mkdir(path, 0o711)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            os.close(fd)
        if kind == "scratch":
            scratch.append(folder)
        else:
            mount(None, folder, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)

    cwd = os.getcwd()
    flags = 0x20000 | 0x8000000 | (0x20000000 if contain else 0)  # CLONE_NEWNS, NEWIPC, NEWPID
    check(libc.unshare(ctypes.c_int(flags)), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if contain:
        # Interrupts reach the kernel through its process group; these two processes ignore them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.environ.pop("JPY_PARENT_PID", None)  # the kernel's parent is the namespace's init
        report, report_w = os.pipe()
        init = os.fork()
        if init:  # end as the kernel ended, for the grader's diagnosis
            os.close(report_w)
            status = os.waitpid(init, 0)[1]
            text = os.read(report, 32)
            status = int(text) if text else status
            if os.WIFSIGNALED(status):
                if os.WTERMSIG(status) not in (signal.SIGKILL, signal.SIGSTOP):
                    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
                os.kill(os.getpid(), os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
        os.close(report)
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the namespace dies with the wrapper
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for folder, kind in sorted(ns["hide"], key=lambda item: item[0].count("/")):
        cover(folder, kind)
    for path in ns["files"]:
        if os.path.isfile(path) and not os.path.islink(path):
            mount("/dev/null", path, None, MS_BIND)
    if contain:
        read_only("/", True, True)
        for path in ns["own"] + scratch:
            if os.path.isdir(path):
                read_only(path, False, False)
    os.chdir(cwd)  # through the new mounts: the old working folder is beneath a cover
    if contain:
        kernel = os.fork()
        if kernel:
            while True:
                pid, status = os.wait()
                if pid == kernel:
                    break
            os.write(report_w, str(status).encode())
            os._exit(0)
        os.close(report_w)
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            last = int(handle.read())
        for cap in range(last + 1):
            prctl(24, cap)  # PR_CAPBSET_DROP: an exec cannot give root its capabilities back
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        check(libc.capset(ctypes.byref(header), ctypes.byref((ctypes.c_uint32 * 6)())), "capset")
        prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.umask(0o077)
if cfg["uid"] is not None:
    limit("RLIMIT_NPROC", cfg["nproc"])
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
    os.umask(0o077)
os.execv(sys.argv[2], sys.argv[2:])
"""

#: Kernel side of one hidden case, run with ``exec`` in a fresh namespace (so that names the
#: student shadowed do not matter) that holds ``__labcore_ns`` (the student's namespace) and the
#: constants NONCE, IN_PATH, OUT_PATH, NAME and CALL_SOURCE. It only calls the function and saves
#: the raw result; it never decides anything.
_HARNESS = r"""
import torch as _torch


def _object(value, text=""):
    kind = type(value)
    return {"__object__": f"{kind.__module__}.{kind.__qualname__}", "repr": text}


def _clean(value, depth=0):
    if depth > 8:
        return _object(value, "nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value[:2000])
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(value, _torch.Tensor):
        if value.numel() > MAX_ELEMENTS:
            return _object(value, f"a tensor of shape {tuple(value.shape)}, too large")
        data = value.detach()
        if data.layout != _torch.strided:
            data = data.to_dense()
        data = data.to("cpu").clone().contiguous().as_subclass(_torch.Tensor)
        if name in ("torch.Tensor", "torch.nn.parameter.Parameter"):
            name = "torch.Tensor"
        return {
            "__tensor__": data,
            "requires_grad": bool(value.requires_grad),
            "device": str(value.device),
            "type": name,
        }
    if name == "numpy.ndarray" and value.dtype.kind in "biuf" and value.size <= MAX_ELEMENTS:
        return {"__tensor__": _torch.as_tensor(value.copy()), "requires_grad": False,
                "device": "cpu", "type": name}
    if isinstance(value, list | tuple) and len(value) <= 100_000:
        items = [_clean(item, depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict) and len(value) <= 1000:
        return {"__dict__": [[str(k)[:200], _clean(v, depth + 1)] for k, v in value.items()]}
    return _object(value)


def _error(err):
    try:
        text = str(err)
    except Exception:
        text = ""
    return f"{type(err).__name__}: {text}"[:600] if text else type(err).__name__


def _run():
    record = {"nonce": NONCE, "status": "error", "error": "", "module": "",
              "value": None, "extra": None}
    try:
        spec = _torch.load(IN_PATH, weights_only=True)
        fn = __labcore_ns.get(NAME)
        if fn is None:
            record["status"] = "missing"
        elif not callable(fn):
            record["status"] = "not-callable"
            record["error"] = type(fn).__name__
        else:
            record["module"] = str(getattr(fn, "__module__", None) or "")[:200]
            namespace = {}
            exec(CALL_SOURCE, namespace)
            value, extra = namespace["call"](fn, spec)
            try:
                record["value"] = _clean(value)
                record["extra"] = _clean(extra)
                record["status"] = "ok"
            except Exception as err:
                record["error"] = "the grader could not read the result: " + _error(err)
    except NotImplementedError:
        record["status"] = "not-implemented"
    except (Exception, SystemExit) as err:
        record["error"] = _error(err)
    with open(OUT_PATH, "wb") as handle:
        _torch.save(record, handle)


_run()
"""


#: IPython startup file of every kernel: printed text beyond a budget is dropped at once, and is
#: not copied into IPython's in-memory output history, so that a flood of prints cannot exhaust the
#: kernel's memory limit.
_OUTPUT_CAP = r"""
import sys as _sys


class _LabcoreCappedStream:
    def __init__(self, stream, budget):
        self._stream, self._left, self._told = stream, budget, False

    def write(self, text):
        if self._left <= 0:
            if not self._told:
                self._told = True
                self._stream.write("\n[grader: output limit reached, the rest is dropped]\n")
            return len(text)
        kept = text[: self._left]
        self._left -= len(kept)
        self._stream.write(kept)
        return len(text)

    def __setattr__(self, name, value):
        if name != "write":  # IPython 9 patches write to keep every printed byte in memory
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        return getattr(self._stream, name)


_sys.stdout = _LabcoreCappedStream(_sys.stdout, BUDGET)
_sys.stderr = _LabcoreCappedStream(_sys.stderr, BUDGET)
del _sys
"""


def _harness_cell(nonce: str, in_path: Path, out_path: Path, exercise: Exercise) -> str:
    """The code injected into the kernel for one hidden case (one line)."""
    source = (
        f"NONCE = {nonce!r}\nIN_PATH = {str(in_path)!r}\nOUT_PATH = {str(out_path)!r}\n"
        f"NAME = {exercise.function!r}\nCALL_SOURCE = {exercise.call_source!r}\n"
        f"MAX_ELEMENTS = {MAX_TENSOR_ELEMENTS}\n" + _HARNESS
    )
    return f'exec({source!r}, {{"__labcore_ns": globals()}})'


def _decode(value: Any, depth: int = 0) -> Any:
    """Turn a record loaded with ``weights_only=True`` into plain values, TensorResult, Opaque."""
    if depth > 10:
        return Opaque("nested value")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.Tensor):
        return TensorResult(value.detach())
    if isinstance(value, list | tuple):
        items = [_decode(v, depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        if isinstance(value.get("__tensor__"), torch.Tensor):
            return TensorResult(
                tensor=value["__tensor__"].detach(),
                requires_grad=bool(value.get("requires_grad")),
                device=str(value.get("device", "cpu")),
                type_name=str(value.get("type", "torch.Tensor")),
            )
        if isinstance(value.get("__dict__"), list):
            out: dict[str, Any] = {}
            for item in value["__dict__"]:
                if isinstance(item, list | tuple) and len(item) == 2:
                    out[str(item[0])] = _decode(item[1], depth + 1)
            return out
        if "__object__" in value:
            return Opaque(str(value["__object__"])[:200], str(value.get("repr", ""))[:200])
    return Opaque(type(value).__name__)


def _read_record(path: Path, nonce: str) -> dict[str, Any] | None:
    """Load a kernel's result file safely: no symlinks, a size cap, weights-only unpickling."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or not 0 < info.st_size <= MAX_RESULT_BYTES:
            return None
        data = handle.read(MAX_RESULT_BYTES + 1)
    try:
        record = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception:  # anything unreadable is simply no result
        return None
    if not isinstance(record, dict) or record.get("nonce") != nonce:
        return None
    return record


def _save_cases(rubric: Rubric, seed: int, path: Path) -> None:
    """Build every hidden case once (reference results included) and save them for the workers."""
    cases = {
        e.grade_id: [
            {"name": c.name, "inputs": c.inputs, "expected": c.expected} for c in e.make_cases(seed)
        ]
        for e in rubric.exercises
    }
    torch.save(cases, path)


def _load_cases(path: Path) -> dict[str, list[HiddenCase]]:
    """Inverse of :func:`_save_cases` (weights-only: tensors, numbers, strings, containers)."""
    data = torch.load(path, weights_only=True, map_location="cpu")
    return {
        grade_id: [HiddenCase(c["name"], c["inputs"], c["expected"]) for c in cases]
        for grade_id, cases in data.items()
    }


# --------------------------------------------------------------------------- the worker
def _kernel_manager(connection_file: Path, wrapper_config: dict[str, Any]) -> Any:
    """An nbclient-compatible kernel manager that starts ``ipykernel`` through :data:`_WRAPPER`."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class SandboxKernelManager(AsyncKernelManager):
        """Starts the kernel through the launch wrapper, readable by the sandbox uid."""

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            """The kernel's command line, behind the launch wrapper."""
            # fd-level output goes to the kernel's log (RLIMIT_FSIZE caps it), not to IOPub
            cmd = [
                *super().format_kernel_cmd(extra_arguments),
                "--IPKernelApp.capture_fd_output=False",
            ]
            uid = wrapper_config["uid"]
            if uid is not None:
                os.chown(self.connection_file, uid, uid)
            return [sys.executable, "-c", _WRAPPER, json.dumps(wrapper_config), *cmd]

    km = SandboxKernelManager(kernel_name="python3", connection_file=str(connection_file))
    km._kernel_spec = KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="Python 3 (labcore grader)",
        language="python",
        interrupt_mode="signal",
    )
    return km


def _grading_client(km: Any, timeout: int, startup_timeout: int) -> Any:
    """An nbclient ``NotebookClient`` that keeps no outputs: only errors and the output size."""
    from nbclient import NotebookClient

    class GradingClient(NotebookClient):
        """Executes cells; keeps no outputs, only their total size (errors come from replies)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.errors: list[tuple[str, str]] = []
            self.output_bytes = 0

        def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int) -> None:
            """Count the size of an output message and drop it."""
            content = msg.get("content") or {}
            text = content.get("text", "")
            data = content.get("data") or {}
            self.output_bytes += len(text) if isinstance(text, str) else 0
            self.output_bytes += sum(len(v) for v in data.values() if isinstance(v, str))
            return None

    def on_executed(cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        """Record the error of a cell from its execute reply."""
        # errors come from the execute reply, which IOPub floods cannot delay or drop
        content = (execute_reply or {}).get("content") or {}
        if content.get("status") == "error":
            client.errors.append(
                (str(content.get("ename", "Error"))[:100], str(content.get("evalue", ""))[:300])
            )

    client = GradingClient(
        nbformat.v4.new_notebook(),
        km=km,
        timeout=timeout,
        startup_timeout=startup_timeout,
        allow_errors=True,
        record_timing=False,
        iopub_timeout=2,
        shutdown_kernel="immediate",
        on_cell_executed=on_executed,
    )
    return client


def _kernel_env(box: Path, token: str) -> dict[str, str]:
    """The kernel's environment: nothing secret from the grader's, a private HOME and TMPDIR."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(box),
        "TMPDIR": str(box / "tmp"),
        "IPYTHONDIR": str(box / ".ipython"),
        "MPLCONFIGDIR": str(box / ".matplotlib"),
        "XDG_CACHE_HOME": str(box / ".cache"),
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "LABCORE_DEVICE": "cpu",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        TOKEN_ENV: token,
    }
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _defines(source: str, name: str) -> bool:
    """Whether a cell defines ``name`` at its top level (``def name`` or ``name = ...``)."""
    tree = _parse_cell(source)
    if tree is None:
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
    return False


def _nbgrader_id(cell: Any) -> Any:
    """The nbgrader ``grade_id`` of a cell, or None."""
    metadata = cell.get("metadata")
    nbgrader = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None


def _exercise_cells(cells: Sequence[Any], rubric: Rubric) -> dict[str, int]:
    """The code cell after which each exercise is tested (absent: test after the last cell).

    The last cell whose nbgrader ``grade_id`` is the exercise's, else whose id is, else that
    defines the function at its top level (for students who rebuilt a cell in Colab).
    """
    where: dict[str, int] = {}
    for exercise in rubric.exercises:
        rules: list[Callable[[Any], bool]] = [
            lambda c, e=exercise: _nbgrader_id(c) == e.grade_id,
            lambda c, e=exercise: c.get("id") == e.grade_id,
            lambda c, e=exercise: _defines(c.get("source", ""), e.function),
        ]
        for rule in rules:
            matches = [i for i, cell in enumerate(cells) if rule(cell)]
            if matches:
                where[exercise.grade_id] = matches[-1]
                break
    return where


def _exercise_title(label: str) -> str:
    """``"Exercise 3: one attention head, cell 14"`` from a cell label of :func:`_cell_labels`."""
    position, _, title = label.partition(", ")
    return f"{title}, cell {position}" if title else f"cell {position}"


@contextlib.contextmanager
def _socket_safe_tempdir() -> Iterator[None]:
    """Let multiprocessing's forkserver bind its Unix socket even under a long ``TMPDIR``.

    The forkserver listens on a socket in a ``pymp-*`` folder of the temporary folder, and a Unix
    socket's path holds at most 107 bytes: a deep ``TMPDIR`` fails with "AF_UNIX path too long".
    When it is deeper than 60 characters, ``/tmp`` (or the system's default) serves for that folder.
    """
    current = tempfile.gettempdir()
    if len(current) <= 60 or not os.path.isdir("/tmp"):
        yield
        return
    tempfile.tempdir = "/tmp"
    try:
        yield
    finally:
        tempfile.tempdir = current


class _Stop(Exception):
    """Grading of a submission cannot go on (the reason is the message)."""


class _Worker:
    """Grades one submission; runs in its own process (see :func:`_worker_main`)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.rubric = load_rubric(spec["lab"])
        self.grade = SubmissionGrade.empty(spec["name"], spec["path"], self.rubric)
        self.start = time.monotonic()
        self.deadline = self.start + float(spec["total_timeout"])
        self.state_path = Path(spec["state"])
        self.box = Path(spec["box"])
        self.hdir = Path(spec["hdir"])
        self.uid: int | None = spec["uid"]
        self.client: Any = None
        self.kernel_log: Any = None
        self.stopped = ""
        self._cases: dict[str, list[HiddenCase]] | None = None

    # ------------------------------------------------------------------ bookkeeping
    def cases(self) -> dict[str, list[HiddenCase]]:
        """The hidden cases, computed once by the main process (see :func:`_save_cases`)."""
        if self._cases is None:
            if self.spec.get("cases"):
                self._cases = _load_cases(Path(self.spec["cases"]))
            else:
                seed = int(self.spec["seed"])
                self._cases = {e.grade_id: list(e.make_cases(seed)) for e in self.rubric.exercises}
        return self._cases

    def remaining(self) -> float:
        """Seconds left of the submission's total time limit."""
        return self.deadline - time.monotonic()

    def save(self) -> None:
        """Write the grade so far for the main process (atomically: a kill never leaves half a file)."""
        self.grade.seconds = round(time.monotonic() - self.start, 2)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(self.grade.to_json(), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def note(self, text: str) -> None:
        """Add a note to the status, once."""
        if text not in self.grade.notes:
            self.grade.notes.append(text)

    # ------------------------------------------------------------------ the run
    def run(self) -> None:
        """Grade the submission: read it, run it, test each exercise, summarise."""
        nb = self._read_notebook()
        if nb is not None:
            self._run_notebook(nb)
        self._summarise()

    def _run_notebook(self, nb: Any) -> None:
        """Flag reference use, then run the cells in a kernel, testing each exercise after its cell."""
        baseline = set(self.spec.get("baseline", []))
        self.grade.flags = [
            f"cell {label}, {what}"
            for label, what in _reference_findings(nb, self.rubric)
            if what not in baseline
        ]
        self.save()
        cells = [c for c in nb.cells if _is_code(c)]
        labels = _cell_labels(nb)
        where = _exercise_cells(cells, self.rubric)
        after: dict[int, list[str]] = {}
        for grade_id, index in where.items():
            after.setdefault(index, []).append(grade_id)
            self.grade.exercise(grade_id).title = _exercise_title(labels[index])
        self._prepare_box()
        try:
            self._start_kernel()
            for index, cell in enumerate(cells):
                source = cell.get("source", "")
                if isinstance(source, list):
                    source = "".join(str(line) for line in source)
                self._run_student_cell(source, labels[index])
                for grade_id in after.get(index, []):
                    self._grade_exercise(grade_id)
            for exercise in self.rubric.exercises:
                if not self.grade.exercise(exercise.grade_id).graded:
                    self._grade_exercise(exercise.grade_id)
        except _Stop as stop:
            self.stopped = str(stop)
            self.note(self.stopped)
        finally:
            self._stop_kernel()

    def _read_notebook(self) -> Any:
        """The submission as a notebook, or None (noted in the status) if it cannot be read."""
        path = Path(self.spec["path"])
        try:
            size = path.stat().st_size
            if size > MAX_NOTEBOOK_BYTES:
                raise ValueError(
                    f"{size / 2**20:.0f} MB, more than {MAX_NOTEBOOK_BYTES // 2**20} MB"
                )
            nb = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
            if not isinstance(getattr(nb, "cells", None), list):
                raise ValueError("no list of cells")
            return nb
        except Exception as err:  # any unreadable file is a status, not a crash
            self.stopped = "unreadable notebook"
            self.note(f"unreadable notebook: {type(err).__name__}: {str(err)[:200]}")
            return None

    def _prepare_box(self) -> None:
        """Copy the notebook into the working folder and install the output cap."""
        work = self.box / "work"
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(self.spec["path"]).name) or "submission.ipynb"
        startup = self.box / ".ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True)
        (startup / "00-labcore-grader.py").write_text(
            _OUTPUT_CAP.replace("BUDGET", str(KERNEL_OUTPUT_BYTES)), encoding="utf-8"
        )
        shutil.copyfile(self.spec["path"], work / name)
        if self.uid is not None:
            for path in (work / name, *startup.parents[:3], startup, *startup.iterdir()):
                if self.box in path.parents:
                    os.chown(path, self.uid, self.uid)

    def _start_kernel(self) -> None:
        """Start the kernel through the launch wrapper, in the working folder, with a clean environment."""
        wrapper_config = {
            "memory_bytes": int(self.spec["memory_mb"]) * 2**20 if self.spec["memory_mb"] else 0,
            "file_bytes": KERNEL_FILE_BYTES,
            "cpu_seconds": int(self.spec["total_timeout"]) + 60,
            "nproc": KERNEL_NPROC,
            "uid": self.uid,
            "namespace": self.spec.get("namespace"),
        }
        km = _kernel_manager(self.hdir / "kernel.json", wrapper_config)
        self.client = _grading_client(
            km,
            timeout=int(self.spec["cell_timeout"]),
            startup_timeout=max(10, min(60, int(self.remaining()))),
        )
        self.kernel_log = open(self.spec["kernel_log"], "ab")  # closed in _stop_kernel
        try:
            self.client.start_new_kernel(
                env=_kernel_env(self.box, self.spec["token"]),
                cwd=str(self.box / "work"),
                stdout=self.kernel_log,
                stderr=self.kernel_log,
            )
            self.client.start_new_kernel_client()
        except Exception as err:  # reported as the submission's status
            raise _Stop(f"the kernel could not start ({type(err).__name__}: {err})") from err

    def _stop_kernel(self) -> None:
        """Shut the kernel down and kill its process group."""
        client = self.client
        if client is None:
            return
        km = client.km
        pgid = getattr(getattr(km, "provisioner", None), "pgid", None) if km else None
        try:
            client._cleanup_kernel()
        except Exception:  # the kernel may be long gone
            pass
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        if self.kernel_log is not None:
            self.kernel_log.close()

    def _death(self) -> str:
        """Why the kernel died: its exit code or the signal that killed it."""
        km = self.client.km if self.client is not None else None
        process = getattr(getattr(km, "provisioner", None), "process", None)
        code = process.poll() if process is not None else None
        if code is None:
            return "the kernel stopped responding"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the kernel was killed by {name}"
        return f"the kernel exited with code {code}"

    def _execute(self, source: str, timeout: float, store_history: bool) -> str:
        """Run code in the kernel: ``ok``, ``error``, ``timeout`` (interrupted), ``dead``, ``stuck``."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        client = self.client
        cell = nbformat.v4.new_code_cell(source)
        client.nb.cells = [cell]
        client.timeout = max(1, math.ceil(timeout))
        client.errors = []
        try:
            client.execute_cell(cell, 0, store_history=store_history)
        except CellTimeoutError:
            return "timeout" if self._recover() else "stuck"
        except DeadKernelError:
            return "dead"
        except Exception:  # a broken channel is a dead kernel for us
            traceback.print_exc()
            return "dead"
        return "error" if client.errors else "ok"

    def _recover(self) -> bool:
        """Interrupt the kernel after a timeout; whether it answers again.

        nbclient abandons its IOPub reader on a timeout, which leaves that channel unreliable (every
        later cell would wait ``iopub_timeout`` for its output), so the client's channels are
        replaced; connecting them waits for the kernel to answer a ``kernel_info`` request.
        """
        from nbclient.util import run_sync

        client = self.client
        try:
            run_sync(client.km.interrupt_kernel)()
            if client.kc is not None:
                client.kc.stop_channels()
            client.kc = None
            client.startup_timeout = PROBE_TIMEOUT_S
            client.start_new_kernel_client()
            return True
        except Exception:  # no answer in time: the kernel is lost
            return False

    def _run_student_cell(self, source: Any, label: str) -> None:
        """Run one of the student's cells; record errors; raise _Stop when grading cannot go on."""
        if not isinstance(source, str) or not source.strip():
            return
        remaining = self.remaining()
        if remaining <= 0:
            raise _Stop(
                f"total time limit of {self.spec['total_timeout']:g} s reached before cell {label}"
            )
        timeout = min(float(self.spec["cell_timeout"]), remaining)
        outcome = self._execute(source, timeout, store_history=True)
        errors = list(self.client.errors)
        if errors and outcome == "error":
            self._execute(_FORGET_TRACEBACK, PROBE_TIMEOUT_S, store_history=False)
        for ename, evalue in errors:
            self.grade.cell_errors.append(
                f"{label} raised {ename}" + (f": {evalue}" if evalue else "")
            )
            if ename in MEMORY_ERRORS or any(t in evalue.lower() for t in MEMORY_TEXT):
                self.note(f"memory limit ({self.spec['memory_mb']} MB) reached in cell {label}")
            if ename == "SystemExit":
                self.note(f"cell {label} called sys.exit() (ignored; grading went on)")
        over_total = remaining < float(self.spec["cell_timeout"])
        if outcome == "timeout":
            if over_total:
                raise _Stop(
                    f"total time limit of {self.spec['total_timeout']:g} s reached in cell {label}"
                )
            self.note(f"cell {label} timed out after {timeout:.0f} s and was interrupted")
        elif outcome == "stuck":
            raise _Stop(
                f"cell {label} timed out after {timeout:.0f} s and the kernel did not respond "
                "to an interrupt"
            )
        elif outcome == "dead":
            raise _Stop(f"{self._death()} in cell {label}")

    # ------------------------------------------------------------------ hidden tests
    def _grade_exercise(self, grade_id: str) -> None:
        """Run the exercise's hidden cases in the kernel and score them here; save the grade."""
        exercise = self.rubric.exercise(grade_id)
        grade = self.grade.exercise(grade_id)
        grade.graded = True
        cases = self.cases()[grade_id]
        outcomes: list[CaseOutcome] = []
        skip = ""
        try:
            for case in cases:
                if skip:
                    outcomes.append(CaseOutcome(case.name, False, skip))
                    continue
                outcome = self._run_case(exercise, case)
                outcomes.append(outcome)
                if outcome.message.startswith("timed out"):
                    skip = "not run: an earlier hidden case timed out"
        except _Stop as stop:
            reason = str(stop)
            outcomes += [
                CaseOutcome(c.name, False, f"not run: {reason}") for c in cases[len(outcomes) :]
            ]
            self._finish_exercise(grade, exercise, outcomes)
            raise
        self._finish_exercise(grade, exercise, outcomes)

    def _finish_exercise(
        self, grade: ExerciseGrade, exercise: Exercise, outcomes: list[CaseOutcome]
    ) -> None:
        """Record the outcomes of an exercise's cases, its points and summary; save."""
        passed = sum(o.passed for o in outcomes)
        grade.cases = outcomes
        grade.points = round(exercise.points * passed / len(outcomes), 2) if outcomes else 0.0
        unimplemented = outcomes and all(o.message == _NOT_IMPLEMENTED for o in outcomes)
        if unimplemented:
            grade.summary = "not implemented"
        elif passed == len(outcomes):
            grade.summary = f"all {len(outcomes)} hidden cases passed"
        else:
            grade.summary = f"{passed} of {len(outcomes)} hidden cases passed"
        self.save()

    def _name(self, exercise: Exercise) -> str:
        """How messages name an exercise: its title and cell, else its function."""
        title = self.grade.exercise(exercise.grade_id).title
        return f"{title} (`{exercise.function}`)" if title else f"`{exercise.function}`"

    def _run_case(self, exercise: Exercise, case: HiddenCase) -> CaseOutcome:
        """Send one hidden input to the kernel, call the function there, load and score the result."""
        remaining = self.remaining()
        if remaining <= 0:
            raise _Stop(f"total time limit of {self.spec['total_timeout']:g} s reached")
        nonce = secrets.token_hex(12)
        in_path = self.hdir / f"{nonce}.in.pt"
        out_path = self.hdir / f"{nonce}.out.pt"
        with open(in_path, "wb") as handle:
            torch.save(case.inputs, handle)
        os.chmod(in_path, 0o644)
        os.close(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        if self.uid is not None:
            os.chown(out_path, self.uid, self.uid)
        timeout = min(exercise.case_timeout, remaining)
        try:
            outcome = self._execute(
                _harness_cell(nonce, in_path, out_path, exercise), timeout, store_history=False
            )
            record = _read_record(out_path, nonce) if outcome in ("ok", "error") else None
            errors = list(self.client.errors)
        finally:
            for path in (in_path, out_path):
                path.unlink(missing_ok=True)
        if outcome == "dead":
            raise _Stop(f"{self._death()} during a hidden test of {self._name(exercise)}")
        if outcome == "stuck":
            raise _Stop(
                f"a hidden test of {self._name(exercise)} timed out and the kernel did not respond "
                "to an interrupt"
            )
        if outcome == "timeout":
            if timeout < exercise.case_timeout:
                raise _Stop(f"total time limit of {self.spec['total_timeout']:g} s reached")
            return CaseOutcome(
                case.name, False, f"timed out after {timeout:.0f} s (an endless loop?)"
            )
        if record is None and errors:
            ename, evalue = errors[0]
            return CaseOutcome(
                case.name,
                False,
                f"no result came back from `{exercise.function}`: the kernel raised {ename} "
                f"{evalue[:200]}".rstrip(),
            )
        return self._score(exercise, case, record)

    def _score(
        self, exercise: Exercise, case: HiddenCase, record: dict[str, Any] | None
    ) -> CaseOutcome:
        """Turn the kernel's record of one case into an outcome, comparing in this process."""
        name = exercise.function
        if record is None:
            return CaseOutcome(
                case.name, False, f"no result came back from `{name}` (did it exit the kernel?)"
            )
        module = str(record.get("module") or "")
        if _is_labcore(module):
            flag = f"at run time, {self._name(exercise)}: `{name}` is labcore's own (`{module}`)"
            if flag not in self.grade.flags:
                self.grade.flags.append(flag)
        status = record.get("status")
        error = str(record.get("error") or "")[:600]
        if status == "missing":
            return CaseOutcome(
                case.name, False, f"`{name}` is not defined after its exercise cell has run"
            )
        if status == "not-callable":
            return CaseOutcome(case.name, False, f"`{name}` is a {error}, not a function")
        if status == "not-implemented":
            return CaseOutcome(case.name, False, _NOT_IMPLEMENTED)
        if status != "ok":
            return CaseOutcome(case.name, False, f"your function raised {error or 'an error'}")
        value = _decode(record.get("value"))
        extra = _decode(record.get("extra"))
        try:
            message = exercise.score(case, value, extra if isinstance(extra, dict) else {})
        except Exception as err:  # an unexpected value type is a failed case
            message = f"the grader could not compare your result ({type(err).__name__}: {err})"
        return CaseOutcome(case.name, message is None, message or "")

    def _summarise(self) -> None:
        """Summarise the run in the status notes and mark the grade finished."""
        for exercise in self.grade.exercises:
            if not exercise.graded and self.stopped:
                exercise.summary = f"not graded: {self.stopped}"
        if self.grade.cell_errors:
            shown = ", ".join(
                "cell {} ({})".format(label, rest.split(":")[0])
                for label, _, rest in (e.partition(" raised ") for e in self.grade.cell_errors[:3])
            )
            more = ", ..." if len(self.grade.cell_errors) > 3 else ""
            self.note(f"{len(self.grade.cell_errors)} cell(s) raised errors: {shown}{more}")
        missing = [
            f"`{e.function}`" for e in self.grade.exercises if e.summary == "not implemented"
        ]
        if missing:
            self.note(f"not implemented: {', '.join(missing)}")
        if self.client is not None and self.client.output_bytes > OUTPUT_NOTE_BYTES:
            megabytes = self.client.output_bytes / 2**20
            self.note(f"{megabytes:.1f} MB of printed output ignored")
        self.grade.finished = True
        self.save()


_NOT_IMPLEMENTED = "not implemented (the function raises NotImplementedError)"
#: Run after a student's cell raised: IPython keeps the exception (sys.last_*, the shell, its
#: traceback formatter, the last execution result), and with it the failed frames' locals -- a list
#: that filled the memory, say. Dropping them gives later exercises their memory back.
_FORGET_SOURCE = """
import gc, sys, types
for name in ("last_type", "last_value", "last_traceback", "last_exc"):
    setattr(sys, name, None)
try:
    from IPython import get_ipython
    shell = get_ipython()
    shell._last_traceback = None
    for holder in (shell.InteractiveTB, getattr(shell, "SyntaxTB", None)):
        for key, value in list(vars(holder).items()):
            if isinstance(value, types.TracebackType):
                setattr(holder, key, None)
    result = getattr(shell, "last_execution_result", None)
    if result is not None:
        result.error_in_exec = None
except Exception:
    pass
gc.collect()
"""
_FORGET_TRACEBACK = f"exec({_FORGET_SOURCE!r}, {{}})"


def _worker_main(spec_path: str) -> int:
    """Entry point of a worker process: grade the submission described by a JSON spec file."""
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    worker = _Worker(spec)
    try:
        worker.run()
    except BaseException as err:  # always leave a state for the main process
        traceback.print_exc()
        worker.note(f"grader error: {type(err).__name__}: {str(err)[:200]}")
        worker.save()
        return 1
    return 0


def _worker_entry(spec_path: str, log_path: str) -> None:
    """Body of a worker process: its output goes to a log, its exit code says if it failed."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.exit(_worker_main(spec_path))


# --------------------------------------------------------------------------- the main process
def submission_names(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the file stems, with parent folders added only where stems collide.

    ``alice.ipynb, bob.ipynb -> alice, bob``; ``alice/lab.ipynb, bob/lab.ipynb -> alice/lab,
    bob/lab``. The same file given twice gets ``#2`` appended.
    """
    resolved = [p.resolve().with_suffix("").parts for p in paths]
    parts = list(dict.fromkeys(resolved))  # the same file twice is named once, then numbered
    depth = [1] * len(parts)
    while True:
        names = ["/".join(p[-k:]) for p, k in zip(parts, depth, strict=True)]
        clashes = {name for name in names if names.count(name) > 1}
        for i, name in enumerate(names):
            if name in clashes:
                depth[i] += 1
        if not clashes:
            break
    short = dict(zip(parts, names, strict=True))
    seen: dict[tuple[str, ...], int] = {}
    unique = []
    for key in resolved:
        seen[key] = seen.get(key, 0) + 1
        unique.append(short[key] if seen[key] == 1 else f"{short[key]}#{seen[key]}")
    return unique


@dataclass(frozen=True)
class _Isolation:
    """How kernels are kept apart from each other and from the grader (``--isolation``).

    Attributes:
        mode: ``uid`` (each kernel under its own unprivileged uid), ``namespace`` (kernels stay
            root, without any capability, in their own mount and PID namespaces, on a read-only
            view of the filesystem) or ``none`` (kernels run as the grader's user).
        mounts: whether each kernel has a private mount namespace that hides the other
            submissions, the grader's files and the outputs (always with ``namespace``; with
            ``uid`` where the machine allows it).
    """

    mode: str
    mounts: bool = False

    @property
    def label(self) -> str:
        """``uid+namespace``, ``uid``, ``namespace`` or ``none``: recorded with every grade."""
        return "uid+namespace" if self.mode == "uid" and self.mounts else self.mode

    def describe(self) -> str:
        """One line for the log: what a kernel can and cannot reach."""
        if self.mode == "uid" and self.mounts:
            return (
                "each kernel runs under its own unprivileged uid, in its own mount namespace that "
                "hides the other submissions, the grader's files and the outputs"
            )
        if self.mode == "uid":
            return (
                "each kernel runs under its own unprivileged uid (no mount namespace: it can read "
                "the machine's world-readable files)"
            )
        if self.mode == "namespace":
            return (
                "each kernel runs as root without capabilities, in its own mount and PID "
                "namespaces, on a read-only view of the filesystem that hides the other "
                "submissions, the grader's files and the outputs"
            )
        return "kernels run as the grader's user, unisolated"


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is strictly inside ``folder`` (both absolute and normalised)."""
    return path.startswith(folder.rstrip("/") + "/")


def _kernel_paths() -> list[str]:
    """What a kernel's Python must still see in its mount namespace, by name and by real path.

    The interpreter, its prefixes, its ``sys.path`` (but ``sys.path[0]``, the grader's own folder)
    and the folders of the packages a lab imports (editable installs included), plus the devices
    of :data:`KERNEL_DEVICES`.
    """
    import importlib.util

    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, sys.executable]
    paths += [p for p in sys.path[1:] if p]
    for name in KERNEL_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        paths += list(spec.submodule_search_locations or [])
        if spec.origin and os.path.isabs(spec.origin):
            paths.append(os.path.dirname(spec.origin))
    found = {os.path.realpath(p) for p in paths if os.path.exists(p)}
    found |= {os.path.abspath(p) for p in paths if os.path.exists(p)}
    return sorted(found | set(KERNEL_DEVICES))


def _mount_plan(
    isolation: _Isolation, strict: Sequence[Path], protect: Sequence[Path]
) -> dict[str, Any] | None:
    """The mount namespace of every kernel of a run (each adds its own folders as ``own``).

    Covered by an empty tmpfs (see :data:`_WRAPPER`): ``strict`` folders (the folder of all
    submissions' temporary folders and the grader's private folder), where only a kernel's own
    folders are bound back; the folders of the ``protect`` paths (submissions, outputs), the
    grader's home and ``/run``, and the folders on the way to the Python environment that an
    unprivileged uid could not traverse (``/root``), where what the kernel's Python needs
    (:func:`_kernel_paths`) is bound back; ``/tmp``, ``/var/tmp`` and ``/dev/shm``, which become
    private and writable. A kernel that stays root also gets a ``/dev`` of
    :data:`KERNEL_DEVICES` only. System folders (:data:`SYSTEM_PATHS`) and ``/`` are never
    covered: a protected file there is replaced by an empty one instead (``files``).

    Returns:
        The plan (JSON-ready), or None without a mount namespace.
    """
    if not isolation.mounts:
        return None
    import pwd

    keep = _kernel_paths()
    rank = {"cover": 0, "scratch": 1, "strict": 2}
    hide: dict[str, str] = {}

    def add(path: str | Path, kind: str, system: bool = False) -> None:
        """Cover the folder ``path`` (the strongest kind wins)."""
        path = os.path.realpath(path)
        if not os.path.isdir(path):
            return
        if not system and any(s == path or _inside(s, path) for s in ("/", *SYSTEM_PATHS)):
            return
        if rank[kind] > rank.get(hide.get(path, ""), -1):
            hide[path] = kind

    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        add(folder, "scratch")
    homes = {os.path.expanduser("~")}
    try:
        homes.add(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        pass
    for folder in ("/run", *homes):
        add(folder, "cover")
    for path in keep:
        for folder in Path(path).parents:
            try:
                if not os.stat(folder).st_mode & stat.S_IXOTH:
                    add(folder, "cover")
            except OSError:
                continue
    files: list[str] = []
    for path in protect:
        path = Path(path).absolute()
        if path.is_dir():
            add(path, "cover")
        else:
            add(path.parent, "cover")
            files.append(os.path.realpath(path))
    for folder in strict:
        add(folder, "strict", system=True)
    if isolation.mode == "namespace":
        add("/dev", "cover", system=True)
    return {
        "hide": sorted([path, kind] for path, kind in hide.items()),
        "keep": keep,
        "own": [],
        "files": sorted(set(files)),
        "contain_root": isolation.mode == "namespace",
        "scratch_bytes": SCRATCH_BYTES,
    }


#: Run behind the launch wrapper by :func:`_probe`: what a kernel needs can be read, what the
#: grader hid cannot, and a kernel that stays root has no capability.
_PROBE = r"""
import importlib.util, os, sys
for name in ("labcore", "torch", "ipykernel", "nbformat"):
    open(importlib.util.find_spec(name).origin, "rb").close()
if os.path.exists(sys.argv[1]):
    sys.exit("the grader's files are visible")
if sys.argv[2] == "namespace":
    with open("/proc/self/status") as handle:
        if "CapEff:\t0000000000000000" not in handle.read():
            sys.exit("capabilities left")
"""


def _probe(isolation: _Isolation) -> bool:
    """Whether kernels can run isolated so: a Python behind the wrapper finds labcore, torch and
    ipykernel, and cannot see a file in a folder that the plan hides."""
    folder = Path(tempfile.mkdtemp(prefix="labcore-probe-")).resolve()
    try:
        secret = folder / "secret"
        secret.write_text("the grader's", encoding="utf-8")
        uid = UID_RANGE[0] + secrets.randbelow(UID_RANGE[1] - UID_RANGE[0])
        config = {
            "memory_bytes": 0,
            "file_bytes": None,
            "cpu_seconds": 60,
            "nproc": None,
            "uid": uid if isolation.mode == "uid" else None,
            "namespace": _mount_plan(isolation, strict=[folder], protect=[]),
        }
        cmd = [sys.executable, "-c", _WRAPPER, json.dumps(config)]
        cmd += [sys.executable, "-c", _PROBE, str(secret), isolation.mode]
        result = subprocess.run(cmd, capture_output=True, timeout=60, cwd="/", check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        _remove_tree(folder)
    return result.returncode == 0


def _resolve_isolation(isolation: str) -> _Isolation:
    """The strongest isolation available for ``isolation`` (see ``--isolation``).

    ``auto``: an unprivileged uid per kernel (in a mount namespace where possible), else root
    kernels contained by namespaces, else none (with a warning); ``uid`` and ``namespace`` demand
    their mode; ``none`` asks for nothing. Only root can isolate kernels.

    Raises:
        ValueError: for an unknown choice, or a mode that this machine cannot provide.
    """
    if isolation not in ISOLATION_CHOICES:
        raise ValueError(f"isolation must be one of {ISOLATION_CHOICES}, got {isolation!r}")
    if isolation == "none":
        return _Isolation("none")
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not sys.platform.startswith("linux"):
        if isolation != "auto":
            raise ValueError(
                f"--isolation {isolation} needs the grader to run as root on Linux "
                "(e.g. in a container)"
            )
        return _Isolation("none")
    if isolation in ("auto", "uid"):
        for mounts in (True, False):
            if _probe(_Isolation("uid", mounts)):
                return _Isolation("uid", mounts)
        if isolation == "uid":
            raise ValueError(
                "--isolation uid: a kernel under an unprivileged uid cannot read the Python "
                "environment (make the virtual environment and the repository world-readable)"
            )
    if _probe(_Isolation("namespace", True)):
        return _Isolation("namespace", True)
    if isolation == "namespace":
        raise ValueError(
            "--isolation namespace: a kernel cannot be started in mount and PID namespaces of "
            "its own (the grader needs CAP_SYS_ADMIN and Linux 5.12 or later; in Docker, for "
            "example, --cap-add SYS_ADMIN --security-opt seccomp=unconfined)"
        )
    return _Isolation("none")


def _kill_sandbox_processes(token: str, uid: int | None) -> None:
    """SIGKILL every process of the sandbox uid, or carrying ``token`` in its environment."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    needle = f"{TOKEN_ENV}={token}".encode()
    for attempt in range(6):
        found = attempt == 0  # always look twice: a process may be between fork and exec
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if uid is not None:
                    status = (entry / "status").read_text()
                    line = next(x for x in status.splitlines() if x.startswith("Uid:"))
                    match = int(line.split()[1]) == uid
                else:
                    match = needle in (entry / "environ").read_bytes()
                if match:
                    os.kill(int(entry.name), signal.SIGKILL)
                    found = True
            except (OSError, StopIteration, ValueError):
                continue
        if not found:
            return
        time.sleep(0.1)


def _remove_tree(path: Path) -> None:
    """Remove a directory a student may have made hard to remove (read-only folders)."""

    def fix(function: Any, name: str, _info: Any) -> None:
        """Make the folder writable and retry once."""
        try:
            os.chmod(os.path.dirname(name), 0o700)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, 0o700)
            function(name)
        except OSError:
            pass

    if path.exists() or path.is_symlink():
        shutil.rmtree(path, onerror=fix)


@dataclass
class _Options:
    """The settings of one grading run, shared by its workers."""

    lab: str
    cell_timeout: float
    total_timeout: float
    memory_mb: int
    seed: int
    use_uid: bool
    baseline: list[str]
    private: Path
    boxes: Path
    isolation: str = "none"
    namespace: dict[str, Any] | None = None


class _Pool:
    """Runs one worker process per submission, at most ``jobs`` at a time."""

    def __init__(self, options: _Options, rubric: Rubric) -> None:
        self.options = options
        self.rubric = rubric
        self.lock = threading.Lock()
        self.live: dict[int, tuple[Any, str, int | None]] = {}
        self.uids: set[int] = set()
        # Workers are forked from a server that has imported torch, nbclient and the rubrics once
        # (not this module: a worker re-imports it as the main module when run with -m).
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(
            ["torch", "nbformat", "nbclient", "jupyter_client.manager", *RUBRICS.values()]
        )

    def _new_uid(self) -> int | None:
        """A sandbox uid not yet used in this run, or None when kernels run as the grader's user."""
        if not self.options.use_uid:
            return None
        with self.lock:
            while True:
                uid = UID_RANGE[0] + secrets.randbelow(UID_RANGE[1] - UID_RANGE[0])
                if uid not in self.uids:
                    self.uids.add(uid)
                    return uid

    def grade(self, index: int, name: str, path: Path) -> SubmissionGrade:
        """Grade one submission in its own worker process; never raises."""
        try:
            return self._grade(index, name, path)
        except Exception as err:  # one failure must not stop the others
            traceback.print_exc()
            grade = SubmissionGrade.empty(name, str(path), self.rubric)
            grade.notes.append(f"grader error: {type(err).__name__}: {str(err)[:200]}")
            return grade

    def _grade(self, index: int, name: str, path: Path) -> SubmissionGrade:
        """Prepare the submission's folders, run its worker, clean up after it, collect its grade."""
        options = self.options
        token = secrets.token_hex(16)
        uid = self._new_uid()
        box = Path(tempfile.mkdtemp(prefix="box-", dir=options.boxes))
        hdir = Path(f"{box}-grader")
        hdir.mkdir(mode=0o711)
        os.chmod(hdir, 0o711 if uid is not None else 0o700)
        for sub in ("work", "tmp"):
            (box / sub).mkdir(mode=0o700)
        if uid is not None:
            for folder in (box, box / "work", box / "tmp"):
                os.chown(folder, uid, uid)
        state = options.private / f"{index}.state.json"
        spec = {
            "lab": options.lab,
            "name": name,
            "path": str(path.resolve()),
            "state": str(state),
            "box": str(box),
            "hdir": str(hdir),
            "uid": uid,
            "token": token,
            "cell_timeout": options.cell_timeout,
            "total_timeout": options.total_timeout,
            "memory_mb": options.memory_mb,
            "seed": options.seed,
            "baseline": options.baseline,
            "kernel_log": str(options.private / f"{index}.kernel.log"),
            "cases": str(options.private / "cases.pt"),
            "namespace": (
                {**options.namespace, "own": [str(box), str(hdir)]} if options.namespace else None
            ),
        }
        spec_path = options.private / f"{index}.spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        log_path = options.private / f"{index}.worker.log"
        limit = options.total_timeout + WORKER_GRACE_S
        worker = self.context.Process(
            target=_worker_entry, args=(str(spec_path), str(log_path)), name=f"grade-{index}"
        )
        with _socket_safe_tempdir():
            worker.start()
        with self.lock:
            self.live[index] = (worker, token, uid)
        try:
            worker.join(timeout=limit)
            killed = worker.is_alive()
            if killed:
                worker.kill()
                worker.join()
        finally:
            with self.lock:
                self.live.pop(index, None)
        _kill_sandbox_processes(token, uid)
        grade = self._collect(name, path, state, log_path, worker.exitcode or 0, killed, limit)
        grade.isolation = options.isolation
        for folder in (box, hdir):
            _remove_tree(folder)
        return grade

    def _collect(
        self, name: str, path: Path, state: Path, log: Path, code: int, killed: bool, limit: float
    ) -> SubmissionGrade:
        """The grade the worker saved (or an empty one), with a note if the worker failed."""
        try:
            grade = SubmissionGrade.from_json(state.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError, KeyError):
            grade = SubmissionGrade.empty(name, str(path), self.rubric)
        if killed:
            grade.notes.append(f"the grader stopped this submission after {limit:g} s")
        elif not grade.finished:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
            detail = f": {tail[0][:200]}" if tail else ""
            grade.notes.append(f"grader worker failed (exit code {code}){detail}")
        for exercise in grade.exercises:
            if not exercise.graded and (killed or not grade.finished):
                exercise.summary = "not graded: the grader's worker did not finish"
        return grade

    def kill_all(self) -> None:
        """Kill every running worker and what its kernel left behind (on errors and Ctrl-C)."""
        with self.lock:
            live = list(self.live.values())
        for worker, token, uid in live:
            worker.kill()
            _kill_sandbox_processes(token, uid)


def grade_submissions(
    lab: str,
    submissions: Sequence[Path | str],
    *,
    jobs: int = 1,
    cell_timeout: float = 60.0,
    total_timeout: float = 300.0,
    memory_mb: int = 4096,
    seed: int = 0,
    isolation: str = "auto",
    progress: Callable[[int, int, SubmissionGrade], None] | None = None,
    protect: Sequence[Path | str] = (),
) -> list[SubmissionGrade]:
    """Grade notebooks of ``lab``; one fresh kernel per submission, ``jobs`` at a time.

    Args:
        lab: the lab's file stem in ``labs/`` (it must have a rubric in :mod:`labcore.rubrics`).
        submissions: notebook paths, graded independently; the result keeps their order.
        jobs: number of worker processes.
        cell_timeout: seconds a student's cell may run before it is interrupted.
        total_timeout: seconds for a whole submission (kernel start, cells, hidden tests).
        memory_mb: address-space limit of each kernel (``RLIMIT_AS``); 0 for none.
        seed: seed of the hidden inputs.
        isolation: ``auto`` (the strongest available: ``uid``, else ``namespace``, else none,
            with a warning), ``uid`` (each kernel under its own unprivileged uid, in a mount
            namespace of its own where the machine allows it), ``namespace`` (kernels stay root
            without capabilities, in mount and PID namespaces of their own, on a read-only view
            of the filesystem) or ``none`` (kernels run as the grader's user). Only root can
            isolate; the mode used is logged and recorded in each grade's ``isolation``.
        progress: called as ``progress(done, n, grade)`` after each submission.
        protect: more files or folders that kernels in a mount namespace must not see (the
            command line gives the CSV and the feedback folder); a file's whole folder is hidden.
            The submissions' folders always are.

    Raises:
        ValueError: for an unknown lab, bad limits, or an isolation this machine cannot provide.
    """
    rubric = load_rubric(lab)
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if cell_timeout <= 0 or total_timeout <= 0:
        raise ValueError(
            f"timeouts must be positive, got cell {cell_timeout} and total {total_timeout}"
        )
    if memory_mb < 0:
        raise ValueError(f"memory_mb must be >= 0, got {memory_mb}")
    paths = [Path(p) for p in submissions]
    names = submission_names(paths)
    resolved = _resolve_isolation(isolation)
    if resolved.mode == "none" and isolation == "auto":
        print(
            "labcore.grade: warning: kernels run as the grader's user, unisolated (only a grader "
            "run as root, e.g. in a container, can isolate them; see the instructor guide)",
            file=sys.stderr,
        )
    else:
        print(f"labcore.grade: isolation {resolved.label}: {resolved.describe()}", file=sys.stderr)
    baseline = _baseline_findings(lab, rubric)
    private = Path(tempfile.mkdtemp(prefix="labcore-grade-")).resolve()
    boxes = Path(tempfile.mkdtemp(prefix="labcore-sandboxes-")).resolve()
    # Kernels may enter their own box but not list the folder of boxes (and, under their own uid,
    # nothing the grader owns); in a mount namespace they see only their own box there.
    os.chmod(boxes, 0o311)
    pool: _Pool | None = None
    grades: list[SubmissionGrade | None] = [None] * len(paths)
    done = 0
    try:
        options = _Options(
            lab=lab,
            cell_timeout=float(cell_timeout),
            total_timeout=float(total_timeout),
            memory_mb=int(memory_mb),
            seed=int(seed),
            use_uid=resolved.mode == "uid",
            baseline=baseline,
            private=private,
            boxes=boxes,
            isolation=resolved.label,
            namespace=_mount_plan(
                resolved, strict=[boxes, private], protect=[*paths, *map(Path, protect)]
            ),
        )
        pool = _Pool(options, rubric)
        _save_cases(rubric, int(seed), private / "cases.pt")
        with ThreadPoolExecutor(max_workers=jobs) as executor:
            futures = {
                executor.submit(pool.grade, i, name, path): i
                for i, (name, path) in enumerate(zip(names, paths, strict=True))
            }
            for future in as_completed(list(futures)):
                index = futures[future]
                grades[index] = future.result()
                done += 1
                if progress is not None:
                    progress(done, len(paths), grades[index])
    finally:
        if pool is not None:
            pool.kill_all()
        os.chmod(boxes, 0o700)
        _remove_tree(boxes)
        _remove_tree(private)
    return [g for g in grades if g is not None]


def _expand(paths: Iterable[Path]) -> list[Path]:
    """Notebook files, with folders replaced by the notebooks they contain (sorted)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            out.append(path)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: grade submissions, write the CSV and the feedback files."""
    parser = argparse.ArgumentParser(
        prog="python -m labcore.grade",
        description="Grade lab submissions against hidden tests, one sandboxed kernel each.",
    )
    parser.add_argument("lab", help=f"the lab's file stem in labs/ ({', '.join(available_labs())})")
    parser.add_argument("submissions", nargs="+", type=Path, help="notebooks or folders of them")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the CSV gradebook")
    parser.add_argument(
        "--feedback-dir",
        type=Path,
        default=None,
        help="feedback files (default: feedback/ beside --out)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per cell (60)")
    parser.add_argument(
        "--total-timeout", type=float, default=300.0, help="seconds per submission (300)"
    )
    parser.add_argument(
        "--memory-mb", type=int, default=4096, help="address-space limit per kernel (4096; 0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the hidden inputs (0)")
    parser.add_argument(
        "--isolation",
        choices=ISOLATION_CHOICES,
        default="auto",
        help="uid: own unprivileged uid per kernel (and own mount namespace where possible); "
        "namespace: root kernels without capabilities in own mount and PID namespaces; "
        "auto: the first of these available (both need root), else none; none: never",
    )
    args = parser.parse_args(argv)
    if args.lab not in available_labs():
        parser.error(f"no rubric for lab {args.lab!r}; labs: {', '.join(available_labs())}")
    paths = _expand(args.submissions)
    if not paths:
        parser.error("no notebook to grade")
    rubric = load_rubric(args.lab)
    feedback_dir = args.feedback_dir or args.out.parent / "feedback"

    def report(done: int, total: int, grade: SubmissionGrade) -> None:
        """One progress line per graded submission."""
        print(
            f"[{done}/{total}] {grade.submission}: {points_text(grade.total)}/{points_text(grade.max_total)}"
            f" in {grade.seconds:.0f} s ({grade.status})",
            file=sys.stderr,
        )

    try:
        grades = grade_submissions(
            args.lab,
            paths,
            jobs=args.jobs,
            cell_timeout=args.timeout,
            total_timeout=args.total_timeout,
            memory_mb=args.memory_mb,
            seed=args.seed,
            isolation=args.isolation,
            progress=report,
            protect=[args.out, feedback_dir],
        )
    except ValueError as err:
        parser.error(str(err))
    write_csv(grades, rubric, args.out)
    for grade in grades:
        write_feedback(grade, feedback_dir)
    print(f"wrote {args.out} and {len(grades)} feedback files in {feedback_dir}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
