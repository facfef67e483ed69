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

Each also tries the network: a TCP server that this test runs on the machine's loopback.

Under isolation (``bwrap``: bubblewrap namespaces, and the kernel's own uid when the grader is root),
each finds nothing. The control run (``--isolation none``) must find all of it, so these tests can
fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from labcore.grade import main
from labcore.grading import sandbox as sandbox_module
from labcore.grading.sandbox import KernelLimits, Sandbox, kernel_prefix, resolve_sandbox

ROOT = Path(__file__).resolve().parents[1]
LAB = "00-function-approximation"
TOKEN = secrets.token_hex(4)  # in every name a probe looks for: nothing else on the machine matches
PEERS = (f"alice-{TOKEN}", f"bob-{TOKEN}")
CELL_TIMEOUT = 20
WINDOW = 15  # seconds each probe searches from its own start
ROUNDS = 12  # cells of search(2): more than enough to fill the window
#: What a probe may find; the control run without isolation must find every one of them.
EVERYTHING = {"peer-notebook", "peer-secret", "gradebook", "feedback", "grader-files", "network"}

#: The adversary's first cell: write secrets everywhere, define the search.
SETUP = r"""
import ctypes
import os
import sys
import time

ME, PEER, GUESS, TOKEN, PORT = {me!r}, {peer!r}, {guess!r}, {token!r}, {port!r}
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


def network():
    import socket
    try:
        with socket.create_connection(("127.0.0.1", PORT), timeout=2) as connection:
            if connection.recv(16) == TOKEN.encode():
                HITS.add("network")
    except OSError:
        pass


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


def adversary(me: str, peer: str, guess: Path, port: int) -> nbformat.NotebookNode:
    """A notebook that looks for ``peer``, then loops until interrupted, then kills its kernel."""
    setup = SETUP.format(me=me, peer=peer, guess=str(guess), window=WINDOW, token=TOKEN, port=port)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(setup),
        nbformat.v4.new_code_cell("network()"),
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
    server = socket.create_server(("127.0.0.1", 0))  # answers every connection with the token
    server.settimeout(0.5)
    serving = threading.Event()
    serving.set()

    def serve() -> None:
        while serving.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            with connection:
                connection.sendall(TOKEN.encode())

    threading.Thread(target=serve, daemon=True).start()
    port = server.getsockname()[1]
    for me, peer in (PEERS, PEERS[::-1]):
        nbformat.write(adversary(me, peer, folder, port), folder / "submissions" / f"{me}.ipynb")
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
        serving.clear()
        server.close()
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


def available() -> Sandbox:
    """The bubblewrap sandbox of this machine, or skip the test with the reason it is missing."""
    try:
        return resolve_sandbox("bwrap")
    except ValueError as err:
        pytest.skip(f"no bubblewrap isolation here: {err}")


@pytest.fixture(scope="module")
def adversary_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The isolated run and the control run, at the same time (their probes mostly sleep)."""
    modes = ["bwrap", "none"]
    try:
        resolve_sandbox("bwrap")
    except ValueError:
        modes.remove("bwrap")
    folders = {mode: tmp_path_factory.mktemp(f"adversaries-{mode}") for mode in modes}
    with ThreadPoolExecutor(len(modes)) as pool:
        runs = {mode: pool.submit(grade_adversaries, folders[mode], mode) for mode in modes}
        return {mode: (folders[mode], run.result()) for mode, run in runs.items()}


def test_parallel_submissions_see_nothing_of_each_other(adversary_runs):
    sandbox = available()
    label = sandbox.label
    tmp_path, run = adversary_runs["bwrap"]
    assert f"isolation {label}:" in run["stderr"]
    alice, bob = (run["reports"][me] for me in PEERS)
    assert max(alice["start"], bob["start"]) < min(alice["end"], bob["end"]), (
        f"the probes did not overlap: one started over {WINDOW} s after the other"
    )
    for me, report in run["reports"].items():
        assert report["hits"] == set(), f"{me} found {sorted(report['hits'])}"
        assert report["capeff"] == 0
        if sandbox.own_uid:
            assert report["uid"] != 0
        # the grader still interrupts an endless loop and sees how its kernel died
        assert f"timed out after {CELL_TIMEOUT} s and was interrupted" in run["status"][me]
        assert "the kernel was killed by SIGKILL" in run["status"][me]
    if sandbox.own_uid:
        assert alice["uid"] != bob["uid"]
    assert run["planted"] == []  # nothing written outside their own temporary folders
    old = tmp_path / "out" / f"old-grades-{TOKEN}.csv"
    assert old.read_text(encoding="utf-8").endswith("carol,12\n")


def test_without_isolation_the_probes_find_everything(adversary_runs):
    """The control: the same run with ``--isolation none`` finds what the tests above must not."""
    _, run = adversary_runs["none"]
    for me, report in run["reports"].items():
        assert EVERYTHING <= report["hits"], f"{me} found only {sorted(report['hits'])}"
        assert "umount" not in report["hits"]
    assert run["planted"]  # and it could write into the submissions and outputs folders


# --------------------------------------------------------------------------- the parts, quickly
def test_missing_bubblewrap_is_an_error_that_names_the_protection_lost(
    monkeypatch, tmp_path, capsys
):
    with pytest.raises(ValueError, match="one of"):
        resolve_sandbox("chroot")
    assert resolve_sandbox("none") == Sandbox("none", network=True)
    real_which = shutil.which
    monkeypatch.setattr(
        sandbox_module.shutil, "which", lambda name: None if name == "bwrap" else real_which(name)
    )
    for mode in ("bwrap", "auto"):
        with pytest.raises(ValueError, match="bubblewrap.*not installed.*--isolation none"):
            resolve_sandbox(mode)
    notebook = tmp_path / "a.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), notebook)
    with pytest.raises(SystemExit) as exit_info:
        main([LAB, str(notebook), "--out", str(tmp_path / "g.csv")])  # bwrap is the default
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "read the other submissions" in error and "--isolation none" in error
    assert not (tmp_path / "g.csv").exists()


def test_kernel_prefix_shows_only_what_the_kernel_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # the argv of a grader run as root
    shown = sandbox_module.kernel_paths()
    labcore_dir = str(ROOT / "labcore")
    assert any(labcore_dir == p or labcore_dir.startswith(p + "/") for p in shown)
    inside = Path(labcore_dir) / "private-boxes"  # a folder to hide inside a shown one
    box = tmp_path / "boxes" / "box-1"
    limits = KernelLimits(memory_bytes=2**30, file_bytes=2**20, cpu_seconds=30, nproc=64)
    argv = kernel_prefix(
        Sandbox("bwrap", own_uid=True), limits, own=[box], hide=[inside, tmp_path / "out"],
        workdir=box, uid=345_678,
    )  # fmt: skip
    text = " ".join(argv)
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert f"--ro-bind {shown[0]} {shown[0]}" in text  # the kernel's Python, read-only
    assert f"--bind {box} {box}" in text and "--reuid=345678" in text  # its own folder, own uid
    assert f"--tmpfs {inside}" in text  # hidden although inside a shown folder
    # the private /tmp comes before the binds: a Python environment under /tmp stays visible
    assert text.index("--tmpfs /tmp") < text.index(f"--ro-bind {shown[0]} {shown[0]}")
    assert str(tmp_path / "out") not in text  # elsewhere: simply never shown
    assert "--as=1073741824" in text and "--nproc=64" in text
    open_net = kernel_prefix(
        Sandbox("bwrap", network=True), limits, own=[box], hide=[], workdir=box
    )
    assert "--unshare-net" not in open_net and "setpriv" not in " ".join(open_net)
    assert "bwrap" not in " ".join(
        kernel_prefix(Sandbox("none"), limits, own=[], hide=[], workdir=box)
    )


#: Run in the sandbox: what the kernel is and sees, as JSON; then ends as argv[2] says.
INSPECT = r"""
import json, os, socket, sys
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
    "interfaces": [name for _, name in socket.if_nameindex()],
}))
if sys.argv[2] == "kill":
    os.kill(os.getpid(), 9)
sys.exit(int(sys.argv[2]))
"""


def test_sandbox_isolates_one_kernel(tmp_path):
    """The sandbox alone: limits, namespaces, uid, capabilities, network, and an honest exit."""
    sandbox = available()
    grader, boxes = tmp_path / "grader", tmp_path / "boxes"
    box, other = boxes / "box-1", boxes / "box-2"
    for folder in (grader, box, other):
        folder.mkdir(parents=True)
    os.chmod(box, 0o711)
    secret = grader / "cases.pt"
    secret.write_text("expected answers", encoding="utf-8")
    uid = 345_678 if sandbox.own_uid else None
    if uid is not None:
        os.chown(box, uid, uid)
    limits = KernelLimits(memory_bytes=2**31, file_bytes=2**20, cpu_seconds=30, nproc=64)
    prefix = kernel_prefix(sandbox, limits, own=[box], hide=[grader, boxes], workdir=box, uid=uid)
    results = {}
    for end in ("0", "3", "kill"):
        cmd = [*prefix, sys.executable, "-c", INSPECT, str(secret), end, str(ROOT)]
        run = subprocess.run(cmd, cwd="/", capture_output=True, text=True, timeout=60)
        results[end] = run.returncode
        assert run.stdout, run.stderr
        seen = json.loads(run.stdout)
    assert results == {"0": 0, "3": 3, "kill": 128 + 9}  # bwrap's report of a SIGKILL
    assert not seen["secret"] and seen["own"] and seen["tmp"] and not seen["repository"]
    assert seen["cwd"] == str(box) and seen["boxes"] in (None, ["box-1"])
    assert seen["interfaces"] in ([], ["lo"])  # no network but its own loopback
    assert int(seen["capeff"], 16) == 0 and seen["pid"] == 2  # its own PID namespace
    if uid is not None:
        assert seen["uid"] == uid


def test_root_that_may_not_make_namespaces_falls_back_to_a_user_namespace(monkeypatch):
    """Docker's default: bwrap run by root cannot make namespaces, but a user namespace can."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        sandbox_module, "probe", lambda sandbox: "" if sandbox.userns else "Operation not permitted"
    )
    chosen = resolve_sandbox("bwrap")
    assert chosen.userns and not chosen.own_uid and chosen.label == "bwrap"
    limits = KernelLimits(memory_bytes=0, file_bytes=2**20, cpu_seconds=30)
    assert "--unshare-user" in kernel_prefix(chosen, limits, own=[], hide=[], workdir=Path("/"))
    monkeypatch.setattr(sandbox_module, "probe", lambda sandbox: "Operation not permitted")
    with pytest.raises(ValueError, match="Operation not permitted.*--isolation none"):
        resolve_sandbox("bwrap")
