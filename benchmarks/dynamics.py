"""Benchmark the attention particle dynamics of ``labcore.dynamics`` (chapter 4).

1. Time per RK4 step of ``simulate(..., velocity=attention_velocity)`` for ``n_particles`` from
   256 to 8192 on ``S^2`` (``d = 3``, ``Q = K = V = I``, ``beta = 4``): four evaluations of the
   field, each ``O(n_particles^2 d)`` in two batched matmuls per block of queries.
2. The same step with a straightforward per-particle Python loop (for each ``i``: scores
   ``beta <x_i, x_j>``, softmax, weighted mean, projection). The loop is timed on the first
   ``min(n, --loop-particles)`` particles and extrapolated linearly to all ``n`` (each particle
   costs the same), and the table prints the ratio ``loop / labcore`` (higher = labcore faster).
3. The wall time of 2,000 particles x 1,000 RK4 steps (the issue asks for well under a minute on
   a CPU).

Each timing is the best of ``--repeats``. Run::

    python benchmarks/dynamics.py                      # all of it (about a minute on 2 cores)
    python benchmarks/dynamics.py --sizes 256 1024 --long-steps 100
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from labcore import get_device, seed_everything
from labcore.dynamics import attention_velocity, random_sphere, simulate


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best wall time and best process CPU time (seconds) of ``fn()``, after one warm-up.

    On a machine shared with other jobs the wall time includes waiting for a core; the CPU time
    (summed over this process's threads) does not, so with one thread it estimates the wall time
    on an idle machine.
    """
    fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def loop_velocity(x: torch.Tensor, beta: float, rows: int) -> torch.Tensor:
    """Per-particle loop for the first ``rows`` particles: the formula, one particle at a time."""
    out = torch.empty_like(x[:rows])
    for i in range(rows):
        w = torch.softmax(beta * (x @ x[i]), dim=0)  # (n,)
        y = w @ x  # (d,)
        out[i] = y - (x[i] @ y) * x[i]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--beta", type=float, default=4.0)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loop-particles", type=int, default=128)
    parser.add_argument("--long-particles", type=int, default=2000)
    parser.add_argument("--long-steps", type=int, default=1000)
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    dtype = getattr(torch, args.dtype)
    seed_everything(0)
    beta, dt = args.beta, 0.01
    print(f"device {device}, dtype {args.dtype}, threads {torch.get_num_threads()}, "
          f"beta {beta}, d = 3, Q = K = V = I")

    def field(x: torch.Tensor) -> torch.Tensor:
        return attention_velocity(x, beta)

    print("times per RK4 step in ms, wall / CPU (CPU: summed over threads)")
    print(f"{'n_particles':>11} | {'labcore':>17} | {'per-particle loop':>19} | "
          f"{'loop/labcore (cpu)':>18}")
    print("-" * 75)
    with torch.no_grad():
        for n in args.sizes:
            x0 = random_sphere(n, 3, seed=n, dtype=dtype, device=device)
            steps = max(1, min(20, 2**21 // (n * n) * 20))  # fewer steps for large n
            wall, cpu = best_time(
                lambda x0=x0, steps=steps: simulate(
                    x0, steps * dt, dt, field, record_every=steps, progress=False),
                args.repeats,
            )
            wall, cpu = wall / steps, cpu / steps
            rows = min(n, args.loop_particles)
            lw, lc = best_time(lambda x0=x0, rows=rows: loop_velocity(x0, beta, rows), 2)
            lw, lc = 4 * lw * n / rows, 4 * lc * n / rows  # 4 field evaluations per RK4 step
            print(f"{n:>11} | {wall * 1e3:>8.1f} / {cpu * 1e3:>6.1f} | "
                  f"{lw * 1e3:>9.1f} / {lc * 1e3:>7.1f} | {lc / cpu:>17.1f}x")

        n, steps = args.long_particles, args.long_steps
        x0 = random_sphere(n, 3, seed=1, dtype=dtype, device=device)
        sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        traj = simulate(x0, steps * dt, dt, field, record_every=100, progress=False)
        sync()
        elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    drift = (traj.norm(dim=-1) - 1).abs().max().item()
    print(f"\n{n} particles x {steps} RK4 steps: wall {elapsed:.1f} s, CPU {elapsed_cpu:.1f} s "
          f"({elapsed / steps * 1e3:.1f} ms per step; max | |x_i| - 1 | = {drift:.1e})")


if __name__ == "__main__":
    main()
