"""Run as a script in a fresh sandbox (``python -c <source> SECRET``): does the sandbox work?

It must be able to read what a kernel needs (labcore, torch, ipykernel, nbformat), must not see
``SECRET`` (a file in a folder the grader hid), must hold no capability, and must not reach the
network unless it is allowed (``--network`` given). Exits 0 if all holds, else with the reason.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys


def check(secret: str, network: bool) -> str:
    """The first thing wrong with this sandbox, or ``""``."""
    for name in ("labcore", "torch", "ipykernel", "nbformat"):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            return f"{name} cannot be imported"
        with open(spec.origin, "rb"):
            pass
    if os.path.exists(secret):
        return "the grader's files are visible"
    with open("/proc/self/status", encoding="utf-8") as handle:
        if "CapEff:\t0000000000000000" not in handle.read():
            return "capabilities left"
    if not network:
        interfaces = [name for _, name in socket.if_nameindex() if name != "lo"]
        if interfaces:
            return f"network interfaces visible: {', '.join(interfaces)}"
    return ""


if __name__ == "__main__":
    problem = check(sys.argv[1], "--network" in sys.argv[2:])
    sys.exit(problem or 0)
