"""Benchmark the attention particle dynamics of ``labcore.dynamics`` (chapter 4).

The system: ``n`` particles on ``S^2`` (``d = 3``), ``Q = K = V = I``, ``beta = 4``, fixed-step RK4
with renormalisation (``simulate(x0, t_max, dt, velocity)``), float32 and float64. Every timing
runs the same ``simulate`` loop; only the velocity field differs:

* **labcore**: ``attention_velocity(x, beta)`` as shipped (for large problems its fast path:
  shift bound folded into the score matmul, ``exp2``, and half the scores by symmetry).
* **previous**: labcore's implementation before the fast path (still its exact path, used for
  small problems, autograd and as the fallback), with the block size it had then (2**17
  scores).
* **dense**: the straightforward implementation, one ``(n, n)`` matrix,
  ``P_perp(softmax(beta x x^T) x)`` with ``torch.softmax`` (faster here than ``exp`` / ``sum``).

1. Time per RK4 step for each ``n`` in ``--sizes`` and the ratios ``previous / labcore`` and
   ``dense / labcore`` (higher = labcore faster) of wall and of CPU times, all measured in the
   same run.
2. The issue's goal: ``--long-particles`` (2000) particles x ``--long-steps`` (1000) RK4 steps,
   timed in full for labcore; ``previous`` and ``dense`` are timed on ``--ratio-steps`` steps of
   the same system (best of ``--ratio-repeats``), interleaved with as many labcore steps, and
   their 1000-step times are extrapolated with that (wall-time) ratio. On a shared machine the
   full run can be slowed by other jobs; the best short labcore run, scaled to 1000 steps,
   estimates it without them. The previous implementation was measured at 65.4 s for this run
   (float32, 2 threads, on a loaded machine).

Profile of one velocity evaluation at n = 2000 (float32, one thread; ``--profile``): labcore
4.5 ms, 51% matmuls (scores ``[k, 1, -a] [b2 k, -a, 1]^T`` and the two products with the values),
29% ``exp2`` over half the scores, the rest small ops; previous 9.2 ms, 47% ``exp``, 29% matmuls,
16% ``amax`` and the shift; dense 14.7 ms, 68% matmuls, 31% ``softmax``.

Each timing in 1. is the best of ``--repeats`` after one warm-up, as wall time and as process CPU time
(summed over threads): on a machine shared with other jobs the wall time includes waiting for a
core. ``--profile`` prints a ``torch.profiler`` table of one velocity evaluation at
``--long-particles``. Run::

    python benchmarks/dynamics.py                       # all of it (about 2 minutes on 2 cores)
    python benchmarks/dynamics.py --sizes 256 1024 --dtypes float32 --long-steps 100
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

from labcore import get_device, seed_everything
from labcore.dynamics import (
    _attention_field_exact,
    attention_velocity,
    project_tangent,
    random_sphere,
    simulate,
)

Field = Callable[[torch.Tensor], torch.Tensor]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall time and process CPU time (seconds) of one call of ``fn``."""
    sync()
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - start, time.process_time() - start_cpu


def best_times(
    fns: dict[str, Callable[[], object]], repeats: int
) -> dict[str, tuple[float, float]]:
    """Best wall and best CPU time of each function, after one warm-up each.

    The functions run interleaved (one call of each per round), so that a burst of load from
    other jobs hits them alike and their ratios stay meaningful.
    """
    for fn in fns.values():
        fn()
    best = {name: (math.inf, math.inf) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = timed(fn)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def dense_velocity(x: torch.Tensor, beta: float) -> torch.Tensor:
    """The straightforward field: ``P_perp_{x_i}(sum_j softmax_j(beta <x_i, x_j>) x_j)``.

    One ``(..., n, n)`` score matrix: ``O(n^2)`` memory.
    """
    y = torch.softmax(beta * x @ x.mT, dim=-1) @ x  # (..., n, d)
    return y - (x * y).sum(-1, keepdim=True) * x


def previous_velocity(x: torch.Tensor, beta: float) -> torch.Tensor:
    """labcore's previous implementation: the exact path with blocks of 2**17 scores."""
    n = x.shape[-2]
    chunk = min(n, max(32, 2**17 // (math.prod(x.shape[:-2]) * n)))
    return project_tangent(x, _attention_field_exact(x, beta, None, None, None, None, chunk))


def fields(beta: float) -> dict[str, Field]:
    return {
        "labcore": lambda x: attention_velocity(x, beta),
        "previous": lambda x: previous_velocity(x, beta),
        "dense": lambda x: dense_velocity(x, beta),
    }


def run(x0: torch.Tensor, steps: int, dt: float, field: Field) -> torch.Tensor:
    return simulate(x0, steps * dt, dt, field, record_every=max(1, steps // 10), progress=False)


def profile_one_evaluation(n: int, beta: float, dtype: torch.dtype, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity, profile

    x = random_sphere(n, 3, seed=1, dtype=dtype, device=device)
    for name, field in fields(beta).items():
        for _ in range(3):
            field(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                field(x)
        print(f"\ntorch.profiler, {name}, n = {n}, {dtype}: 10 velocity evaluations")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--beta", type=float, default=4.0)
    parser.add_argument(
        "--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"]
    )
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long-particles", type=int, default=2000)
    parser.add_argument("--long-steps", type=int, default=1000)
    parser.add_argument("--ratio-steps", type=int, default=5)
    parser.add_argument("--ratio-repeats", type=int, default=7)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a torch.profiler table of one evaluation of each field",
    )
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    seed_everything(0)
    beta, dt = args.beta, 0.01
    print(
        f"device {device}, threads {torch.get_num_threads()}, beta {beta}, d = 3, "
        f"Q = K = V = I, RK4 with renormalisation, dt = {dt}"
    )
    if args.profile:
        for name in args.dtypes:
            profile_one_evaluation(args.long_particles, beta, getattr(torch, name), device)

    with torch.no_grad():
        print(
            "\n1. time per RK4 step (4 field evaluations), ms: wall / CPU (CPU summed over "
            "threads); ratios: wall, CPU"
        )
        print(
            f"{'dtype':>7} {'n':>5} | {'labcore':>15} | {'previous':>15} | {'dense':>17} | "
            f"{'previous/labcore':>17} | {'dense/labcore':>15} | {'ns/pair/eval':>12}"
        )
        print("-" * 123)
        for name in args.dtypes:
            dtype = getattr(torch, name)
            for n in args.sizes:
                x0 = random_sphere(n, 3, seed=n, dtype=dtype, device=device)
                steps = max(2, min(20, 2**22 // (n * n)))  # fewer steps for large n
                best = best_times(
                    {
                        k: (lambda f=f, x0=x0, steps=steps: run(x0, steps, dt, f))
                        for k, f in fields(beta).items()
                    },
                    args.repeats,
                )
                ms = {k: (w / steps * 1e3, c / steps * 1e3) for k, (w, c) in best.items()}
                lab, prev, dense = ms["labcore"], ms["previous"], ms["dense"]
                per_pair = lab[0] * 1e6 / (4 * n * n)  # ns per particle pair per evaluation
                print(
                    f"{name:>7} {n:>5} | {lab[0]:>6.2f} / {lab[1]:>6.2f} | "
                    f"{prev[0]:>6.2f} / {prev[1]:>6.2f} | {dense[0]:>7.2f} / {dense[1]:>7.2f} | "
                    f"{prev[0] / lab[0]:>7.2f}x {prev[1] / lab[1]:>7.2f}x | "
                    f"{dense[0] / lab[0]:>6.2f}x {dense[1] / lab[1]:>6.2f}x | {per_pair:>12.2f}"
                )

        n, steps = args.long_particles, args.long_steps
        print(f"\n2. {n} particles x {steps} RK4 steps (the issue's goal: well under a minute)")
        for name in args.dtypes:
            dtype = getattr(torch, name)
            x0 = random_sphere(n, 3, seed=1, dtype=dtype, device=device)
            traj: list[torch.Tensor] = []
            wall, cpu = timed(
                lambda x0=x0, traj=traj: traj.append(
                    simulate(
                        x0,
                        steps * dt,
                        dt,
                        fields(beta)["labcore"],
                        record_every=100,
                        progress=False,
                    )
                )
            )
            drift = (traj[0].norm(dim=-1) - 1).abs().max().item()
            k = args.ratio_steps
            short = best_times(
                {
                    key: (lambda f=f, x0=x0, k=k: run(x0, k, dt, f))
                    for key, f in fields(beta).items()
                },
                args.ratio_repeats,
            )
            print(
                f"  {name}: labcore wall {wall:.1f} s, CPU {cpu:.1f} s; "
                f"{wall / steps * 1e3:.2f} ms per step, "
                f"{wall / steps / (4 * n * n) * 1e9:.2f} ns per particle pair per evaluation; "
                f"max | |x_i| - 1 | = {drift:.1e}"
            )
            print(
                f"       labcore: {steps / k:g} x the best of {args.ratio_repeats} {k}-step runs = "
                f"{short['labcore'][0] * steps / k:.1f} s (the full run without other load)"
            )
            for key in ("previous", "dense"):
                ratio = short[key][0] / short["labcore"][0]
                print(
                    f"      {key:>8}: {ratio:.2f}x the labcore wall time on {k} steps "
                    f"(CPU {short[key][1] / short['labcore'][1]:.2f}x) -> about "
                    f"{ratio * wall:.0f} s for {steps} steps"
                )


if __name__ == "__main__":
    main()
