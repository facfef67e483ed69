"""Two submissions graded in parallel cannot see each other, the grader's files or the outputs.

Two adversarial notebooks are graded at the same time (``--jobs 2``) through the command line. Each
writes a secret file wherever it can, then, for WINDOW seconds from its own start, searches for the other's
notebook and secret, for gradebooks and feedback files, and for the grader's private files (the
hidden cases): in ``/tmp``, ``/var/tmp``, ``/dev/shm``, the folders above its own, the test's folder
(a path it guessed), and through ``/proc`` (the working folder and root of every process it can
name). It also tries to lift the covers by unmounting them. It reports what it found in the message
of an error, which the feedback file lists, then loops until interrupted and kills its kernel (the
grader must still interrupt and diagnose a kernel in namespaces).

The two kernels start together (``--jobs 2``), so their search windows overlap unless one starts
WINDOW seconds after the other; the tests check that they did overlap. No outcome depends on how
fast the machine is: the loop that must time out never ends, and the cells that must not take a
few seconds against a cell limit of CELL_TIMEOUT.

Under isolation (``uid`` or ``namespace``: the grader is root on Linux), each finds nothing. The
control run (``--isolation none``) must find all of it, so these tests can fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labcore.grade import (
    _WRAPPER,
    SYSTEM_PATHS,
    _inside,
    _Isolation,
    _mount_plan,
    _resolve_isolation,
    main,
)

ROOT = Path(__file__).resolve().parents[1]
LAB = "00-function-approximation"
TOKEN = secrets.token_hex(4)  # in every name a probe looks for: nothing else on the machine matches
PEERS = (f"alice-{TOKEN}", f"bob-{TOKEN}")
CELL_TIMEOUT = 20
WINDOW = 15  # seconds each probe searches from its own start
ROUNDS = 12  # cells of search(2): more than enough to fill the window
#: What a probe may find; the control run without isolation must find every one of them.
EVERYTHING = {"peer-notebook", "peer-secret", "gradebook", "feedback", "grader-files"}

#: The adversary's first cell: write secrets everywhere, define the search.
SETUP = r"""
import ctypes
import os
import sys
import time

ME, PEER, GUESS, TOKEN = {me!r}, {peer!r}, {guess!r}, {token!r}
START = time.time()
UNTIL = START + {window!r}  # the peer, started at the same time, is searching too
targets = (".", "..", "../..", "../../..", os.environ.get("TMPDIR", "."), "/tmp", "/var/tmp",
           "/dev/shm", GUESS, GUESS + "/out", GUESS + "/out/feedback", GUESS + "/submissions")
for folder in targets:
    try:
        with open(os.path.join(folder, f"secret-{{ME}}"), "w") as handle:
            handle.write(ME)
    except OSError:
        pass


def kind(name):
    if name == f"secret-{{PEER}}":
        return "peer-secret"
    if name == PEER + ".ipynb":
        return "peer-notebook"
    if name == f"old-grades-{{TOKEN}}.csv":
        return "gradebook"
    if name == f"carol-{{TOKEN}}.md":
        return "feedback"
    if name == "cases.pt" or name.endswith((".spec.json", ".state.json", ".worker.log")):
        return "grader-files"
    return None


PYTHON = {{os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}}
HITS = set()
libc = ctypes.CDLL(None, use_errno=True)


def walk(root, budget=20_000, depth=6):
    top = root.rstrip("/").count("/")
    for path, dirs, files in os.walk(root):
        budget -= len(dirs) + len(files)
        if budget < 0:
            return
        HITS.update(k for k in map(kind, dirs + files) if k)
        dirs[:] = [
            d for d in dirs
            if os.path.realpath(os.path.join(path, d)) not in PYTHON
            and os.path.join(path, d).count("/") - top < depth
        ]


def look():
    for root in (GUESS, "../..", "/tmp", "/var/tmp", "/dev/shm"):
        walk(root)
    for pid in os.listdir("/proc"):
        for link in ("cwd", "cwd/..", "root" + GUESS, "root" + GUESS + "/submissions"):
            try:
                names = os.listdir(f"/proc/{{pid}}/{{link}}") if pid.isdigit() else []
            except OSError:
                continue
            HITS.update("proc:" + k for k in map(kind, names) if k)
    for cover in ("../..", GUESS + "/out"):  # never mount points outside a namespace
        if libc.umount2(os.path.abspath(cover).encode(), 2) == 0:
            HITS.add("umount")


def search(seconds):
    stop = min(time.time() + seconds, UNTIL)
    while time.time() < stop or time.time() - START < 0.5:
        look()
        time.sleep(0.3)
"""

#: The adversary's last probing cell: report what it found in an error message.
REPORT_CELL = r"""
with open("/proc/self/status") as handle:
    capeff = next(line.split()[1] for line in handle if line.startswith("CapEff"))
raise RuntimeError(
    f"isolation-probe start={START:.3f} end={time.time():.3f} uid={os.getuid()} "
    f"capeff={capeff} hits={','.join(sorted(HITS)) or '-'} end-of-probe"
)
"""

REPORT = re.compile(
    r"isolation-probe start=(?P<start>[\d.]+) end=(?P<end>[\d.]+) uid=(?P<uid>\d+) "
    r"capeff=(?P<capeff>[0-9a-f]+) hits=(?P<hits>\S+) end-of-probe"
)


def adversary(me: str, peer: str, guess: Path) -> nbformat.NotebookNode:
    """A notebook that looks for ``peer``, then loops until interrupted, then kills its kernel."""
    setup = SETUP.format(me=me, peer=peer, guess=str(guess), window=WINDOW, token=TOKEN)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(setup),
        # each cell searches for 2 s at most, until UNTIL
        *[nbformat.v4.new_code_cell("search(2)") for _ in range(ROUNDS)],
        nbformat.v4.new_code_cell(REPORT_CELL),
        # never ends (sleeping, not spinning: no CPU taken from the other tests)
        nbformat.v4.new_code_cell("while True:\n    time.sleep(0.1)"),
        nbformat.v4.new_code_cell("import os\nos.kill(os.getpid(), 9)"),
    ]
    return nb


def grade_adversaries(folder: Path, isolation: str) -> dict:
    """Grade the two adversaries at once with ``--isolation``; what each found, and the run."""
    (folder / "submissions").mkdir()
    (folder / "out" / "feedback").mkdir(parents=True)
    (folder / "tmp").mkdir()  # the grader's temporary folders go here
    # last term's outputs, in the folders this run writes to
    gradebook = folder / "out" / f"old-grades-{TOKEN}.csv"
    gradebook.write_text("submission,total\ncarol,12\n", encoding="utf-8")
    feedback = folder / "out" / "feedback" / f"carol-{TOKEN}.md"
    feedback.write_text("# carol: 12 / 12\n", encoding="utf-8")
    for me, peer in (PEERS, PEERS[::-1]):
        nbformat.write(adversary(me, peer, folder), folder / "submissions" / f"{me}.ipynb")
    cmd = [
        sys.executable, "-m", "labcore.grade", LAB,
        *[str(folder / "submissions" / f"{me}.ipynb") for me in PEERS],
        "--out", str(folder / "out" / "grades.csv"),
        "--feedback-dir", str(folder / "out" / "feedback"),
        "--jobs", "2", "--timeout", str(CELL_TIMEOUT), "--memory-mb", "2500",
        "--isolation", isolation,
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(folder / "tmp")}
    try:
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:  # unisolated probes leave secrets in the machine's shared folders
        for shared in ("/tmp", "/var/tmp", "/dev/shm"):
            for me in PEERS:
                Path(shared, f"secret-{me}").unlink(missing_ok=True)
    assert run.returncode == 0, run.stderr[-3000:]
    reports = {}
    for me in PEERS:
        feedback = (folder / "out" / "feedback" / f"{me}.md").read_text(encoding="utf-8")
        match = REPORT.search(feedback)
        assert match, f"{me}'s probe did not report:\n{feedback}"
        reports[me] = {
            "start": float(match["start"]),
            "end": float(match["end"]),
            "uid": int(match["uid"]),
            "capeff": int(match["capeff"], 16),
            "hits": set() if match["hits"] == "-" else set(match["hits"].split(",")),
            "feedback": feedback,
        }
    with open(folder / "out" / "grades.csv", encoding="utf-8") as handle:
        status = {line.split(",")[0]: line for line in handle.read().splitlines()[1:]}
    return {
        "reports": reports,
        "status": status,
        "stderr": run.stderr,
        "planted": sorted(str(p.relative_to(folder)) for p in folder.rglob(f"secret-*-{TOKEN}")),
    }


def available(mode: str) -> str:
    """The label of ``mode`` on this machine, or skip the test with the reason it is missing."""
    try:
        return _resolve_isolation(mode).label
    except ValueError as err:
        pytest.skip(f"no {mode} isolation here: {err}")


@pytest.mark.parametrize("mode", ["uid", "namespace"])
def test_parallel_submissions_see_nothing_of_each_other(mode, tmp_path):
    label = available(mode)
    run = grade_adversaries(tmp_path, mode)
    assert f"isolation {label}:" in run["stderr"]
    alice, bob = (run["reports"][me] for me in PEERS)
    assert max(alice["start"], bob["start"]) < min(alice["end"], bob["end"]), (
        f"the probes did not overlap: one started over {WINDOW} s after the other"
    )
    for me, report in run["reports"].items():
        assert report["hits"] == set(), f"{me} found {sorted(report['hits'])}"
        if mode == "uid":
            assert report["uid"] != 0
        else:
            assert report["uid"] == 0 and report["capeff"] == 0
        # the grader still interrupts an endless loop and sees how its kernel died
        assert f"timed out after {CELL_TIMEOUT} s and was interrupted" in run["status"][me]
        assert "the kernel was killed by SIGKILL" in run["status"][me]
    if mode == "uid":
        assert alice["uid"] != bob["uid"]
    assert run["planted"] == []  # nothing written outside their own temporary folders
    old = tmp_path / "out" / f"old-grades-{TOKEN}.csv"
    assert old.read_text(encoding="utf-8").endswith("carol,12\n")


def test_without_isolation_the_probes_find_everything(tmp_path):
    """The control: the same run with ``--isolation none`` finds what the tests above must not."""
    run = grade_adversaries(tmp_path, "none")
    for me, report in run["reports"].items():
        assert EVERYTHING <= report["hits"], f"{me} found only {sorted(report['hits'])}"
        assert "umount" not in report["hits"]
    assert run["planted"]  # and it could write into the submissions and outputs folders


# --------------------------------------------------------------------------- the parts, quickly
def test_unknown_or_unavailable_isolation_is_an_error(monkeypatch, tmp_path, capsys):
    with pytest.raises(ValueError, match="one of"):
        _resolve_isolation("chroot")
    assert _resolve_isolation("none") == _Isolation("none")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # an ordinary user cannot isolate kernels
    for mode in ("uid", "namespace"):
        with pytest.raises(ValueError, match="root"):
            _resolve_isolation(mode)
    assert _resolve_isolation("auto").label == "none"
    notebook = tmp_path / "a.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), notebook)
    with pytest.raises(SystemExit) as exit_info:
        main([LAB, str(notebook), "--isolation", "namespace", "--out", str(tmp_path / "g.csv")])
    assert (
        exit_info.value.code == 2 and "needs the grader to run as root" in capsys.readouterr().err
    )
    assert not (tmp_path / "g.csv").exists()


def test_mount_plan_hides_private_folders_and_never_the_system(tmp_path):
    boxes, outputs, submissions = (tmp_path / name for name in ("boxes", "out", "submissions"))
    for folder in (boxes, outputs, submissions):
        folder.mkdir()
    notebook = submissions / "alice.ipynb"
    notebook.write_text("{}", encoding="utf-8")
    protect = [notebook, outputs / "grades.csv", Path("/etc/hostname"), Path("/")]
    assert _mount_plan(_Isolation("uid", False), strict=[boxes], protect=protect) is None
    plan = _mount_plan(_Isolation("uid", True), strict=[boxes], protect=protect)
    hide = {path: kind for path, kind in plan["hide"]}
    assert hide[str(boxes.resolve())] == "strict"  # only a kernel's own folders come back there
    assert hide[str(submissions.resolve())] == hide[str(outputs.resolve())] == "cover"
    assert hide["/tmp"] == "scratch"
    for path in hide:  # the system the kernel runs on is never covered
        assert path != "/" and not any(s == path or _inside(s, path) for s in SYSTEM_PATHS)
    assert "/etc/hostname" in plan["files"]  # a protected file there is emptied instead
    assert (
        str(ROOT / "labcore") in plan["keep"] and os.path.realpath(sys.executable) in plan["keep"]
    )
    assert not plan["contain_root"] and "/dev" not in hide
    contained = _mount_plan(_Isolation("namespace", True), strict=[boxes], protect=protect)
    assert contained["contain_root"] and {path: kind for path, kind in contained["hide"]}["/dev"]


#: Run behind the wrapper: what the kernel is and sees, as JSON; then ends as argv[2] says.
INSPECT = r"""
import json, os, sys
with open("/proc/self/status") as handle:
    capeff = next(line.split()[1] for line in handle if line.startswith("CapEff"))
def writable(folder):
    try:
        with open(os.path.join(folder, "w"), "w"):
            return True
    except OSError:
        return False
print(json.dumps({
    "uid": os.getuid(), "pid": os.getpid(), "capeff": capeff, "cwd": os.getcwd(),
    "secret": os.path.exists(sys.argv[1]), "own": writable("."), "tmp": writable("/tmp"),
    "repository": writable(sys.argv[3]), "boxes": os.listdir("..") if os.access("..", os.R_OK) else None,
}))
if sys.argv[2] == "kill":
    os.kill(os.getpid(), 9)
sys.exit(int(sys.argv[2]))
"""


@pytest.mark.parametrize("mode", ["uid", "namespace"])
def test_wrapper_isolates_one_kernel(mode, tmp_path):
    """The launch wrapper alone: limits, namespaces, uid or capabilities, and an honest exit."""
    available(mode)
    grader, boxes = tmp_path / "grader", tmp_path / "boxes"
    box, other = boxes / "box-1", boxes / "box-2"
    for folder in (grader, box, other):
        folder.mkdir(parents=True)
    secret = grader / "cases.pt"
    secret.write_text("expected answers", encoding="utf-8")
    uid = 345_678 if mode == "uid" else None
    if uid is not None:
        os.chown(box, uid, uid)
    plan = _mount_plan(_Isolation(mode, True), strict=[grader, boxes], protect=[])
    config = {
        "memory_bytes": 2**31, "file_bytes": 2**20, "cpu_seconds": 30, "nproc": 64, "uid": uid,
        "namespace": {**plan, "own": [str(box)]},
    }  # fmt: skip
    results = {}
    for end in ("0", "3", "kill"):
        cmd = [sys.executable, "-c", _WRAPPER, json.dumps(config), sys.executable, "-c", INSPECT]
        cmd += [str(secret), end, str(ROOT)]
        run = subprocess.run(cmd, cwd=box, capture_output=True, text=True, timeout=60)
        results[end] = run.returncode
        assert run.stdout, run.stderr
        seen = json.loads(run.stdout)
    assert results == {"0": 0, "3": 3, "kill": -9}  # as the grader reports a kernel's death
    assert not seen["secret"] and seen["own"] and seen["tmp"] and not seen["repository"]
    assert seen["cwd"] == str(box) and seen["boxes"] in (None, ["box-1"])
    if mode == "uid":
        assert seen["uid"] == uid
    else:  # root in its own PID namespace, without any capability
        assert seen["uid"] == 0 and seen["pid"] == 2 and int(seen["capeff"], 16) == 0
