"""One kernel of one submission: started in its sandbox, driven cell by cell, stopped for good.

The kernel is an ordinary ``ipykernel`` described by a kernel spec that the grader writes for each
submission (:func:`write_kernel_spec`). The spec names :class:`SandboxProvisioner`, a jupyter_client
kernel provisioner (registered under ``jupyter_client.kernel_provisioners`` in ``pyproject.toml``)
that starts the kernel behind the sandbox's command prefix (:mod:`labcore.grading.sandbox`). The
kernel talks to the grader over Unix sockets (ZeroMQ's ``ipc`` transport) in a folder both can
reach, so it needs no network; interrupts travel as messages on the control channel.

:class:`KernelSession` wraps jupyter_client's kernel manager and nbclient's ``NotebookClient``
(public APIs only) and turns each execution into a :class:`~labcore.grading.records.CellOutcome`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Integer, List, Unicode

from labcore.grading.records import CellOutcome

__all__ = ["KernelSession", "SandboxProvisioner", "kernel_env", "write_kernel_spec"]

KERNEL_NAME = "labcore-grader"
PROVISIONER = "labcore-sandbox"  #: its entry point's name (pyproject.toml)
PROBE_TIMEOUT_S = 20  # how long an interrupted kernel has to answer again (wide: a loaded machine)


class SandboxProvisioner(LocalProvisioner):  # type: ignore[misc]
    """A local provisioner that starts the kernel behind a command prefix (limits and sandbox).

    Configured from the kernel spec's ``metadata.kernel_provisioner.config``: ``prefix`` is put
    before the kernel's command line; ``uid``, if set, is given the connection file (a kernel under
    its own uid must read it).
    """

    prefix = List(Unicode(), default_value=[], config=True, help="commands before the kernel's")
    uid = Integer(None, allow_none=True, config=True, help="the kernel's own uid, if any")

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        """Launch ``prefix + cmd`` as the local provisioner would launch ``cmd``."""
        if self.uid is not None and self.parent is not None:
            os.chown(self.parent.connection_file, self.uid, self.uid)
        return await super().launch_kernel([*self.prefix, *cmd], **kwargs)


def write_kernel_spec(folder: Path, prefix: list[str], uid: int | None = None) -> Path:
    """Write the kernel spec of one submission's kernel into ``folder/<KERNEL_NAME>/``.

    The kernel is this interpreter's ``ipykernel``; fd-level output goes to the kernel's log
    (``RLIMIT_FSIZE`` caps it), not to IOPub. Returns the spec's folder.
    """
    spec = {
        "argv": [
            sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
            "--IPKernelApp.capture_fd_output=False",
        ],
        "display_name": "Python 3 (labcore grader)",
        "language": "python",
        "interrupt_mode": "message",
    }  # fmt: skip
    config = {"prefix": prefix, "uid": uid}
    spec["metadata"] = {"kernel_provisioner": {"provisioner_name": PROVISIONER, "config": config}}
    where = folder / KERNEL_NAME
    where.mkdir(parents=True, exist_ok=True)
    (where / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return where


def kernel_env(box: Path, token: str, token_name: str) -> dict[str, str]:
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
        token_name: token,
    }
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _grading_client(km: Any, timeout: int, startup_timeout: int) -> Any:
    """An nbclient ``NotebookClient`` that keeps no outputs: only errors and the output size."""
    from nbclient import NotebookClient

    class GradingClient(NotebookClient):  # type: ignore[misc]
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


class KernelStartError(RuntimeError):
    """The kernel could not be started (the message says why)."""


class KernelSession:
    """One sandboxed kernel: :meth:`start`, :meth:`execute` code, :meth:`stop`.

    Args:
        channels: a folder for the connection file and the kernel's Unix sockets (the kernel
            must be able to write there).
        specs: a folder for the kernel spec.
        prefix: the command line before the kernel's (see :func:`labcore.grading.sandbox.kernel_prefix`).
        timeout: default seconds per execution.
        startup_timeout: seconds the kernel has to start and answer.
        uid: the kernel's own uid, if it has one.
    """

    def __init__(
        self,
        channels: Path,
        specs: Path,
        prefix: list[str],
        timeout: int,
        startup_timeout: int,
        uid: int | None = None,
    ) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager

        write_kernel_spec(specs, prefix, uid)
        self.wrapped = bool(prefix)  # bwrap reports a child killed by signal N as 128 + N
        self.km = AsyncKernelManager(
            kernel_name=KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]),
            connection_file=str(channels / "kernel.json"),
            transport="ipc",
            ip=str(channels / "ipc"),
        )
        self.client = _grading_client(self.km, timeout=timeout, startup_timeout=startup_timeout)
        self.pid: int | None = None

    @property
    def errors(self) -> list[tuple[str, str]]:
        """``(ename, evalue)`` of the errors of the last execution."""
        return list(self.client.errors)

    @property
    def output_bytes(self) -> int:
        """How much printed output all executions produced (none of it is kept)."""
        return int(self.client.output_bytes)

    def start(self, env: dict[str, str], cwd: Path, log: Any) -> None:
        """Start the kernel in ``cwd`` with ``env``; its own output goes to the file ``log``.

        Raises:
            KernelStartError: if it does not start and answer in time.
        """
        try:
            self.client.start_new_kernel(env=env, cwd=str(cwd), stdout=log, stderr=log)
            self.client.start_new_kernel_client()
        except Exception as err:
            raise KernelStartError(
                f"the kernel could not start ({type(err).__name__}: {err})"
            ) from err
        self.pid = getattr(self.km.provisioner, "pid", None)

    def execute(self, source: str, timeout: float, store_history: bool) -> CellOutcome:
        """Run ``source`` in the kernel within ``timeout`` seconds; interrupt it if it overruns."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        client = self.client
        cell = nbformat.v4.new_code_cell(source)
        client.nb.cells = [cell]
        client.timeout = max(1, math.ceil(timeout))
        client.errors = []
        try:
            client.execute_cell(cell, 0, store_history=store_history)
        except CellTimeoutError:
            return CellOutcome.TIMEOUT if self._recover() else CellOutcome.STUCK
        except DeadKernelError:
            return CellOutcome.DEAD
        except Exception:  # a broken channel is a dead kernel for us
            traceback.print_exc()
            return CellOutcome.DEAD
        return CellOutcome.ERROR if client.errors else CellOutcome.OK

    def _recover(self) -> bool:
        """Interrupt the kernel after a timeout; whether it answers again.

        nbclient abandons its IOPub reader on a timeout, which leaves that channel unreliable (every
        later cell would wait ``iopub_timeout`` for its output), so the client's channels are
        replaced; connecting them waits for the kernel to answer a ``kernel_info`` request.
        """
        from nbclient.util import run_sync

        client = self.client
        try:
            run_sync(self.km.interrupt_kernel)()
            if client.kc is not None:
                client.kc.stop_channels()
            client.kc = None
            client.startup_timeout = PROBE_TIMEOUT_S
            client.start_new_kernel_client()
            return True
        except Exception:  # no answer in time: the kernel is lost
            return False

    def death(self) -> str:
        """Why the kernel died: its exit code or the signal that killed it."""
        process = getattr(self.km.provisioner, "process", None)
        code = process.poll() if process is not None else None
        if code is None:
            return "the kernel stopped responding"
        if self.wrapped and 128 < code < 128 + 65:
            code = -(code - 128)
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the kernel was killed by {name}"
        return f"the kernel exited with code {code}"

    def stop(self) -> None:
        """Close the channels, kill the kernel and whatever it started (its process tree)."""
        import psutil
        from nbclient.util import run_sync

        tree: list[psutil.Process] = []
        if self.pid is not None:
            try:
                root = psutil.Process(self.pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
        try:
            if self.client.kc is not None:
                self.client.kc.stop_channels()
            if self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=True)
        except Exception:  # the kernel may be long gone
            pass
        for process in tree:
            try:
                process.kill()
            except psutil.Error:
                pass
