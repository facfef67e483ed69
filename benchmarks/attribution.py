"""Time ``labcore.attribution`` against captum and against the bare model evaluations it needs.

One run, one model, one set of inputs (a ReLU MLP ``[16, 256, 256, 10]`` at its seeded random
initialisation, 32 Gaussian inputs, each explained for its predicted class, zero baseline):

1. integrated gradients (64 Gauss-Legendre steps) vs captum's ``IntegratedGradients`` (goal:
   faster at equal steps);
2. permutation sampling vs captum's ``ShapleyValueSampling`` with its defaults
   (``n_samples=25`` permutations, ``perturbations_per_eval=1``) at equal permutations (goal: 10x
   faster);
3. for both, the cost relative to the *bare* batched model evaluations the method needs, the
   floor any implementation pays: one forward and backward pass over all ``steps * batch`` path
   points for IG, one forward pass over all ``batch * (2 + n_permutations * (n - 1))`` coalition
   inputs for sampling (goal: within 2x);
4. exact Shapley values for 8..16 players (the 16 inputs in contiguous groups), on 4 samples;
5. DASP vs permutation sampling: relative L2 error against exact Shapley values (16 players) at
   equal wall-clock time and at an equal count of forward passes.

Run ``python benchmarks/attribution.py [--threads T] [--repeats R]``; times are the best of
``R`` runs, and every timed method is checked against its reference before it is timed.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from labcore import get_device, seed_everything
from labcore.attribution import (
    dasp,
    integrated_gradients,
    quadrature,
    shapley_exact,
    shapley_sampling,
)
from labcore.mlp import MLP

SIZES = [16, 256, 256, 10]
BATCH = 32
STEPS = 64
PERMUTATIONS = 25  # captum's default n_samples
EXACT_BATCH = 4


def _clock(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def best_times(
    fns: Sequence[Callable[[], object] | None], device: torch.device, repeats: int
) -> list[float | None]:
    """Best wall-clock time of each function over ``repeats`` rounds, after one warm-up call.

    The functions take turns within each round, in an order that rotates from round to round, so
    that a busy machine slows all of them alike. ``None`` entries are skipped.
    """
    live = [i for i, fn in enumerate(fns) if fn is not None]
    best: list[float | None] = [None] * len(fns)
    for i in live:
        fns[i]()
    for round_ in range(repeats):
        for i in live[round_ % len(live) :] + live[: round_ % len(live)]:
            elapsed = _clock(fns[i], device)
            best[i] = elapsed if best[i] is None else min(best[i], elapsed)
    return best


def relative_error(estimate: torch.Tensor, exact: torch.Tensor) -> float:
    return ((estimate - exact).norm() / exact.norm()).item()


def groups_of(n_groups: int, n_features: int, device: torch.device) -> torch.Tensor:
    """Feature mask putting ``n_features`` inputs into ``n_groups`` contiguous groups."""
    return (torch.arange(n_features, device=device) * n_groups) // n_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="MLP widths")
    parser.add_argument("--batch", type=int, default=BATCH, help="samples explained at once")
    args = parser.parse_args()
    sizes, batch, repeats = args.sizes, args.batch, args.repeats
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    from captum.attr import IntegratedGradients, ShapleyValueSampling

    device = get_device()
    seed_everything(0)
    model = MLP(sizes).to(device).eval()
    n = sizes[0]
    x = torch.randn(batch, n, device=device)
    baseline = torch.zeros_like(x)
    with torch.no_grad():
        target = model(x).argmax(1)
    rows: list[tuple[str, float, float | None, float]] = []  # task, ours, captum, bare

    # 1. Integrated gradients -------------------------------------------------------------------
    ig = IntegratedGradients(model)

    def ours_ig() -> torch.Tensor:
        return integrated_gradients(model, x, baseline, target, steps=STEPS)

    def captum_ig() -> torch.Tensor:
        return ig.attribute(x, baselines=baseline, target=target, n_steps=STEPS)

    assert torch.allclose(ours_ig(), captum_ig(), atol=1e-4)
    alphas, _ = quadrature("gausslegendre", STEPS, dtype=x.dtype, device=device)
    path = (baseline + alphas.view(-1, 1, 1) * (x - baseline)).reshape(-1, n)
    path_target = target.repeat(STEPS)

    def bare_ig() -> None:  # one forward and backward pass over every path point
        z = path.detach().requires_grad_(True)
        out = model(z).gather(1, path_target[:, None]).sum()
        torch.autograd.grad(out, z)

    t = best_times([ours_ig, captum_ig, bare_ig], device, repeats)
    rows.append((f"integrated gradients, {STEPS} Gauss-Legendre steps", t[0], t[1], t[2]))

    # 2. Permutation sampling --------------------------------------------------------------------
    svs = ShapleyValueSampling(model)
    n_inputs = batch * (2 + PERMUTATIONS * (n - 1))
    coalitions = torch.randn(n_inputs, n, device=device)
    coalition_target = target.repeat(n_inputs // batch)

    def ours_sampling() -> torch.Tensor:
        return shapley_sampling(model, x, baseline, target, n_permutations=PERMUTATIONS, seed=0)

    def captum_sampling() -> torch.Tensor:
        return svs.attribute(x, baselines=baseline, target=target, n_samples=PERMUTATIONS)

    def bare_sampling() -> None:  # one forward pass over as many inputs
        with torch.no_grad():
            model(coalitions).gather(1, coalition_target[:, None])

    with torch.no_grad():
        gap = (model(x) - model(baseline)).gather(1, target[:, None])[:, 0]
    assert torch.allclose(ours_sampling().sum(1), gap, atol=1e-4)  # exactly efficient
    t = best_times([ours_sampling, captum_sampling, bare_sampling], device, repeats)
    rows.append((f"Shapley sampling, {PERMUTATIONS} permutations", t[0], t[1], t[2]))

    # 3. Exact Shapley values for 8..16 players --------------------------------------------------
    xs, bs, ts = x[:EXACT_BATCH], baseline[:EXACT_BATCH], target[:EXACT_BATCH]
    exact = {}
    for players in (8, 10, 12, 14, 16):
        mask = groups_of(players, n, device)
        everything = torch.randn(2**players * EXACT_BATCH, n, device=device)
        everything_target = ts.repeat(2**players)

        def ours_exact(mask: torch.Tensor = mask) -> torch.Tensor:
            return shapley_exact(model, xs, bs, ts, feature_mask=mask)

        def bare_exact(z: torch.Tensor = everything, t: torch.Tensor = everything_target) -> None:
            with torch.no_grad():
                model(z).gather(1, t[:, None])

        exact[players] = ours_exact()
        t = best_times([ours_exact, None, bare_exact], device, repeats if players <= 12 else 3)
        name = f"exact Shapley, {players} players ({2**players} coalitions x {EXACT_BATCH})"
        rows.append((name, t[0], t[1], t[2]))

    # 4. DASP vs sampling ------------------------------------------------------------------------
    reference = exact[16]
    probe = 32
    t_dasp, t_probe = best_times(
        [
            lambda: dasp(model, xs, bs, ts),
            lambda: shapley_sampling(model, xs, bs, ts, n_permutations=probe, seed=0),
        ],
        device,
        repeats,
    )
    error_dasp = relative_error(dasp(model, xs, bs, ts), reference)
    equal_time = max(1, round(probe * t_dasp / t_probe))
    equal_passes = (4 * n * n - 2) // (n - 1)  # DASP: 2 n^2 probabilistic passes ~ 4 n^2 forwards

    def sampling_error(m: int) -> float:
        runs = [shapley_sampling(model, xs, bs, ts, n_permutations=m, seed=s) for s in range(5)]
        return sum(relative_error(r, reference) for r in runs) / len(runs)

    print(f"device: {device}, threads: {torch.get_num_threads()}, model {sizes}, batch {batch}")
    print()
    columns = ("labcore s", "captum s", "bare s", "captum/ours", "ours/bare")
    header = f"{'task':52s} " + " ".join(f"{c:>11s}" for c in columns)
    print(header)
    print("-" * len(header))
    for name, t_ours, t_captum, t_bare in rows:
        captum_cell = f"{t_captum:11.4f}" if t_captum is not None else f"{'-':>11s}"
        speedup = f"{t_captum / t_ours:10.1f}x" if t_captum is not None else f"{'-':>11s}"
        cells = f"{t_ours:11.4f} {captum_cell} {t_bare:11.4f} {speedup} {t_ours / t_bare:10.2f}x"
        print(f"{name:52s} {cells}")
    print()
    print(f"DASP vs permutation sampling, {n} players, {EXACT_BATCH} samples, vs exact Shapley:")
    print(f"  DASP ({t_dasp:.4f} s): relative L2 error {error_dasp:.4f}")
    for label, m in (("equal time", equal_time), ("equal forward passes", equal_passes)):
        print(f"  sampling, {label} ({m} permutations): relative L2 error {sampling_error(m):.4f}")


if __name__ == "__main__":
    main()
