"""Isolation of each kernel: bubblewrap (``bwrap``), with limits from ``prlimit`` and ``setpriv``.

A kernel is started behind a command prefix (:func:`kernel_prefix`):

``prlimit`` (util-linux) sets its resource limits: address space (``--memory-mb``), file size, CPU
time, no core dumps and, under its own uid, a process count. ``bwrap`` then gives it

- its own mount namespace that shows only what its Python needs, read-only (the system folders,
  the interpreter, the packages a lab imports: :func:`kernel_paths`), plus its own two folders
  read-write; the other submissions, the grader's private files, the submissions' and outputs'
  folders are simply not there, and ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are private;
- its own PID namespace (it can see and signal only its own processes), IPC and UTS namespaces,
  and its own network namespace, with no interface but loopback, unless network is allowed;
- no capability, and death with its worker (``--die-with-parent``).

When the grader runs as root, ``setpriv`` (util-linux) inside the sandbox also drops the kernel to a
fresh unprivileged uid per submission (then the process-count limit applies). Otherwise ``bwrap``
makes an unprivileged user namespace.

Without ``bwrap`` (macOS, hosts that forbid namespaces) there is no isolation: the grader refuses to
run unless the instructor asks for ``--isolation none`` (:func:`resolve_sandbox`).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labcore.grading.inkernel import source

__all__ = [
    "ISOLATION_CHOICES",
    "KernelLimits",
    "Sandbox",
    "kernel_paths",
    "kernel_prefix",
    "kill_leftovers",
    "new_uid",
    "probe",
    "remove_tree",
    "resolve_sandbox",
]

ISOLATION_CHOICES = ("bwrap", "none", "auto")  # auto: the same as bwrap (kept for old scripts)
TOKEN_ENV = "LABCORE_GRADER_TOKEN"  #: marks every process a kernel starts (for the cleanup)
UID_RANGE = (200_000, 1_200_000)  # sandbox uids: far above real accounts
SCRATCH_BYTES = 64 * 2**20  # each private /tmp, /var/tmp and /dev/shm of a kernel
#: Shown read-only to every kernel: the system its Python runs on.
SYSTEM_PATHS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/sys")
#: Packages a kernel may import: their folders are shown to it, read-only.
KERNEL_PACKAGES = (
    "labcore", "torch", "numpy", "matplotlib", "ipykernel", "IPython", "jupyter_client",
    "jupyter_core", "zmq", "nbformat", "traitlets", "tornado",
)  # fmt: skip
#: What a kernel without isolation can do, told to the instructor who asks for it.
LOST = (
    "a submission's code can read the other submissions, the grader's hidden cases and the "
    "outputs, signal or kill other processes of the grader's user, and use the network"
)


@dataclass(frozen=True)
class Sandbox:
    """How the kernels of a run are isolated (see the module's docstring).

    Attributes:
        mode: ``bwrap`` or ``none``.
        own_uid: whether each kernel runs under its own unprivileged uid (the grader is root).
        network: whether kernels may use the network (their own network namespace otherwise).
        userns: whether bwrap makes a user namespace (always when the grader is not root; as
            root, where the machine forbids namespaces to root without one, as Docker does).
    """

    mode: str
    own_uid: bool = False
    network: bool = False
    userns: bool = False

    @property
    def label(self) -> str:
        """``bwrap+uid``, ``bwrap`` or ``none``: recorded with every grade."""
        if self.mode == "none":
            return "none"
        return "bwrap+uid" if self.own_uid else "bwrap"

    def describe(self) -> str:
        """One line for the log: what a kernel can and cannot reach."""
        if self.mode == "none":
            return f"kernels run as the grader's user, unisolated: {LOST}"
        who = "under its own unprivileged uid, " if self.own_uid else ""
        net = "with the network allowed" if self.network else "without network"
        return (
            f"each kernel runs {who}in bubblewrap namespaces of its own ({net}), seeing only its "
            "Python and its own folder: not the other submissions, the grader's files or the outputs"
        )


@dataclass(frozen=True)
class KernelLimits:
    """Resource limits of one kernel (``setrlimit``, inherited by all it starts)."""

    memory_bytes: int  #: RLIMIT_AS; 0 for none
    file_bytes: int  #: RLIMIT_FSIZE: the largest file it may write
    cpu_seconds: int  #: RLIMIT_CPU
    nproc: int | None = None  #: RLIMIT_NPROC (only under a uid of its own: root is exempt)

    def prefix(self) -> list[str]:
        """The ``prlimit`` command that sets them, or ``[]`` where ``prlimit`` is missing."""
        tool = shutil.which("prlimit")
        if tool is None:
            return []
        cmd = [tool, f"--fsize={self.file_bytes}", f"--cpu={self.cpu_seconds}", "--core=0"]
        if self.memory_bytes:
            cmd.append(f"--as={self.memory_bytes}")
        if self.nproc:
            cmd.append(f"--nproc={self.nproc}")
        return [*cmd, "--"]


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or inside it (both absolute and normalised)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _tops(paths: Iterable[str]) -> list[str]:
    """The paths that are not inside another one of them, sorted."""
    tops: list[str] = []
    for path in sorted(set(paths)):
        if not any(_inside(path, top) for top in tops):
            tops.append(path)
    return tops


def kernel_paths() -> list[str]:
    """The folders a kernel's Python must see: by name and by real path, outermost only.

    The interpreter's prefixes, ``sys.path`` (but ``sys.path[0]``, the grader's own folder) and
    the folders of :data:`KERNEL_PACKAGES` (editable installs included).
    """
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
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
    found = {os.path.realpath(p) for p in paths if os.path.isdir(p)}
    found |= {os.path.abspath(p) for p in paths if os.path.isdir(p)}
    return _tops(p for p in found if p != "/")


def kernel_prefix(
    sandbox: Sandbox,
    limits: KernelLimits,
    *,
    own: Sequence[Path],
    hide: Sequence[Path],
    workdir: Path,
    uid: int | None = None,
) -> list[str]:
    """The command line before a kernel's own: limits, then the sandbox.

    Args:
        sandbox: the run's isolation.
        limits: the kernel's resource limits.
        own: the kernel's own folders, shown read-write (its box and the folder of its channels).
        hide: folders it must not see even where they lie inside a folder it is shown (the other
            boxes, the grader's private folder, the submissions and the outputs).
        workdir: its working folder.
        uid: its own uid (with ``sandbox.own_uid``).
    """
    prefix = limits.prefix()
    if sandbox.mode == "none":
        return prefix
    cmd = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session"]
    # ipykernel exits when its parent's pid changes; in its PID namespace the parent is pid 1
    cmd += ["--unsetenv", "JPY_PARENT_PID"]
    cmd += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not sandbox.network:
        cmd.append("--unshare-net")
    if sandbox.userns or os.geteuid() != 0:
        cmd += ["--unshare-user", "--disable-userns"]
    shown = kernel_paths()
    made = {"/tmp", "/var/tmp", "/dev", "/dev/shm", "/proc"}  # bwrap's own mounts

    def parents(folder: str) -> list[str]:
        """Make the folders above ``folder`` that bwrap would make private (0700): 0755."""
        out = []
        for parent in reversed(Path(folder).parents):
            name = str(parent)
            if name != "/" and name not in made and not _shown(parent, shown):
                out += ["--perms", "0755", "--dir", name]
                made.add(name)
        return out

    for path in SYSTEM_PATHS:
        cmd += ["--ro-bind-try", path, path]
    cmd += ["--dev", "/dev", "--proc", "/proc"]
    for scratch in ("/tmp", "/var/tmp", "/dev/shm"):  # before the binds: a Python may live there
        cmd += ["--perms", "1777", "--size", str(SCRATCH_BYTES), "--tmpfs", scratch]
    for path in shown:
        if not any(_inside(path, system) for system in SYSTEM_PATHS):
            cmd += [*parents(path), "--ro-bind", path, path]
    for folder in _tops(os.path.realpath(p) for p in hide):
        if any(_inside(folder, path) for path in [*shown, *SYSTEM_PATHS]):
            cmd += ["--tmpfs", folder]  # else it is not there at all
    for folder in map(os.path.realpath, own):
        cmd += [*parents(folder), "--bind", folder, folder]
    cmd += ["--chdir", str(workdir), "--cap-drop", "ALL"]
    if sandbox.own_uid:
        if uid is None:
            raise ValueError("a sandbox with own_uid needs the kernel's uid")
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        cmd += ["--", shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}"]
        cmd += ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return [*prefix, *cmd, "--"]


def _shown(folder: Path, shown: Sequence[str]) -> bool:
    """Whether ``folder`` is inside a folder the kernel is shown (bwrap must not make it)."""
    return any(_inside(str(folder), path) for path in [*shown, *SYSTEM_PATHS])


def new_uid(used: set[int]) -> int:
    """A sandbox uid not in ``used`` (which it joins)."""
    while True:
        uid = UID_RANGE[0] + secrets.randbelow(UID_RANGE[1] - UID_RANGE[0])
        if uid not in used:
            used.add(uid)
            return uid


def probe(sandbox: Sandbox) -> str:
    """Whether kernels can run in ``sandbox`` here: ``""``, or what went wrong.

    A Python started as a kernel would be must find labcore, torch and ipykernel, must not see a
    file in a folder the grader hides, must hold no capability and (unless allowed) no network.
    """
    if sandbox.mode == "none":
        return ""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    if sandbox.own_uid and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    folder = Path(tempfile.mkdtemp(prefix="labcore-probe-")).resolve()
    try:
        secret, box = folder / "secret", folder / "box"
        secret.write_text("the grader's", encoding="utf-8")
        box.mkdir()
        uid = new_uid(set()) if sandbox.own_uid else None
        if uid is not None:
            os.chown(box, uid, uid)
        limits = KernelLimits(memory_bytes=0, file_bytes=2**20, cpu_seconds=60)
        cmd = kernel_prefix(sandbox, limits, own=[box], hide=[folder], workdir=box, uid=uid)
        cmd += [sys.executable, "-c", source("probe"), str(secret)]
        cmd += ["--network"] if sandbox.network else []
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    except (OSError, subprocess.SubprocessError) as err:
        return f"{type(err).__name__}: {err}"
    finally:
        remove_tree(folder)
    if result.returncode == 0:
        return ""
    return (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1][:300]


def resolve_sandbox(isolation: str = "bwrap", network: bool = False) -> Sandbox:
    """The isolation of a run, checked on this machine (see ``--isolation``).

    ``bwrap`` (and ``auto``) demand bubblewrap: each kernel under its own uid when the grader is
    root and may make namespaces, else in a user namespace of its own. ``none`` runs kernels
    unisolated, as the grader's user: only on the instructor's explicit request.

    Raises:
        ValueError: for an unknown choice, or ``bwrap`` on a machine where it does not work (the
            message names the protection lost and the flag that accepts losing it).
    """
    if isolation not in ISOLATION_CHOICES:
        raise ValueError(f"isolation must be one of {ISOLATION_CHOICES}, got {isolation!r}")
    if isolation == "none":
        return Sandbox("none", network=True)
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not sys.platform.startswith("linux"):
        problem = "not on Linux"
    else:  # as root: its own uid per kernel, else (root may not make namespaces) a user namespace
        choices = [Sandbox("bwrap", own_uid=True, network=network)] if root else []
        choices.append(Sandbox("bwrap", network=network, userns=True))
        for sandbox in choices:
            problem = probe(sandbox)
            if not problem:
                return sandbox
    raise ValueError(
        f"kernels cannot be isolated with bubblewrap here ({problem}). Without isolation, "
        f"{LOST}. Install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap), or pass "
        "--isolation none to grade unisolated anyway (trusted submissions only)"
    )


def kill_leftovers(token: str, uid: int | None) -> int:
    """SIGKILL every process of the sandbox ``uid``, or carrying ``token`` in its environment.

    Looks twice at least (a process may be between fork and exec) and until none is found.
    Returns how many processes were killed.
    """
    import psutil

    killed = 0
    for attempt in range(6):
        found = attempt == 0
        for process in psutil.process_iter(["pid", "uids"]):
            if process.pid == os.getpid():
                continue
            try:
                if uid is not None:
                    match = process.info["uids"] is not None and process.info["uids"].real == uid
                else:
                    match = process.environ().get(TOKEN_ENV) == token
                if match:
                    process.kill()
                    killed += 1
                    found = True
            except (psutil.Error, OSError):
                continue
        if not found:
            break
        time.sleep(0.1)
    return killed


def remove_tree(path: Path) -> None:
    """Remove a folder a student may have made hard to remove (read-only folders)."""

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
