"""Time ``labcore.attribution`` against captum and against the bare model evaluations it needs.

One run, one model, one set of inputs (by default a ReLU MLP ``[16, 256, 256, 10]`` at its seeded
random initialisation; ``--sizes 64 64 64 10`` gives the chapter's digits classifier's shape; 32
Gaussian inputs, each explained for its predicted class, zero baseline):

1. integrated gradients (64 Gauss-Legendre steps) vs captum's ``IntegratedGradients`` (goal:
   faster at equal steps), and exact integrated gradients (``integrated_gradients_exact``: one
   gradient per linear piece of the path) against the bare pass over the pieces' midpoints;
2. permutation sampling vs captum's ``ShapleyValueSampling`` with its defaults
   (``n_samples=25`` permutations, ``perturbations_per_eval=1``) at equal permutations (goal: 10x
   faster);
3. for both, the cost relative to the *bare* batched model evaluations the method needs, the
   floor any implementation pays: one forward and backward pass over all ``steps * batch`` path
   points for IG, forward passes over ``batch * (2 + n_permutations * (n - 1))`` inputs made in
   advance for sampling (goal: within 2x). The bare evaluations are timed twice, in one pass and
   in the blocks that labcore uses by default (on the CPU, blocks of at most 2048 inputs, which
   stay in cache: one pass over 12,000 inputs is up to twice as slow as the same inputs in
   blocks); the floor is the faster of the two, and ``ours/floor`` compares with it;
4. exact Shapley values for 8..16 players (the inputs in contiguous groups), on 4 samples;
5. DASP vs permutation sampling: relative L2 error against exact Shapley values (16 players) at
   equal wall-clock time and at an equal count of forward passes.

captum's sampling makes one forward pass of ``batch`` inputs per (permutation, player): its cost
over the floor is per-call overhead, which weighs more on a small model than on a wide one, so
``captum/ours`` depends on the model; ``captum/floor`` bounds what any implementation can reach.

Run ``python benchmarks/attribution.py [--threads T] [--repeats R] [--sizes ...] [--profile]``;
times are the best of ``R`` runs, and every timed method is checked against its reference before
it is timed. ``--profile`` also prints torch.profiler's table of ``shapley_sampling``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from labcore import get_device, seed_everything
from labcore.attribution import (
    _auto_batch_size,
    dasp,
    integrated_gradients,
    integrated_gradients_exact,
    path_kinks,
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


def bare_forward(
    model: torch.nn.Module, z: torch.Tensor, target: torch.Tensor, batch: int, blocked: bool
) -> Callable[[], None]:
    """One forward pass over the inputs ``z`` made in advance (``blocked=False``), or passes over
    the blocks labcore's Shapley functions use by default: ``batch_size // batch`` rows of
    ``batch`` samples, ``batch_size`` from ``_auto_batch_size``."""
    step = z.shape[0]
    if blocked:
        size = _auto_batch_size(None, z[0].numel(), z.device)
        step = max(1, size // batch) * batch if size >= batch else size

    def run() -> None:
        with torch.no_grad():
            for start in range(0, z.shape[0], step):
                model(z[start : start + step]).gather(1, target[start : start + step, None])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="MLP widths")
    parser.add_argument("--batch", type=int, default=BATCH, help="samples explained at once")
    parser.add_argument("--profile", action="store_true", help="profile shapley_sampling")
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
    # task, ours, captum, bare in one pass, bare in labcore's blocks
    rows: list[tuple[str, float, float | None, float, float | None]] = []

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
    rows.append((f"integrated gradients, {STEPS} Gauss-Legendre steps", t[0], t[1], t[2], None))

    def exact_ig() -> torch.Tensor:  # one gradient per linear piece of each sample's path
        return integrated_gradients_exact(model, x, baseline, target)

    kinks = path_kinks(model, x, baseline)  # (batch, K)
    pieces = int((kinks.diff(dim=1) > 0).sum(1).max())
    mids = (kinks[:, :-1] + kinks[:, 1:]) / 2
    exact_path = (baseline[:, None] + mids[..., None] * (x - baseline)[:, None]).reshape(-1, n)
    exact_target = target.repeat_interleave(mids.shape[1])

    def bare_exact() -> None:  # finding the kinks excluded: one pass over the segment midpoints
        z = exact_path.detach().requires_grad_(True)
        out = model(z).gather(1, exact_target[:, None]).sum()
        torch.autograd.grad(out, z)

    t = best_times([exact_ig, bare_exact], device, repeats)
    rows.append((f"exact IG (at most {pieces} pieces per path)", t[0], None, t[1], None))

    # 2. Permutation sampling --------------------------------------------------------------------
    svs = ShapleyValueSampling(model)
    n_inputs = batch * (2 + PERMUTATIONS * (n - 1))
    coalitions = torch.randn(n_inputs, n, device=device)
    coalition_target = target.repeat(n_inputs // batch)

    def ours_sampling() -> torch.Tensor:
        return shapley_sampling(model, x, baseline, target, n_permutations=PERMUTATIONS, seed=0)

    def captum_sampling() -> torch.Tensor:
        return svs.attribute(x, baselines=baseline, target=target, n_samples=PERMUTATIONS)

    with torch.no_grad():
        gap = (model(x) - model(baseline)).gather(1, target[:, None])[:, 0]
    assert torch.allclose(ours_sampling().sum(1), gap, atol=1e-4)  # exactly efficient
    t = best_times(
        [
            ours_sampling,
            captum_sampling,
            bare_forward(model, coalitions, coalition_target, batch, blocked=False),
            bare_forward(model, coalitions, coalition_target, batch, blocked=True),
        ],
        device,
        repeats,
    )
    rows.append((f"Shapley sampling, {PERMUTATIONS} permutations", t[0], t[1], t[2], t[3]))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            for _ in range(5):
                ours_sampling()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    # 3. Exact Shapley values for 8..16 players --------------------------------------------------
    xs, bs, ts = x[:EXACT_BATCH], baseline[:EXACT_BATCH], target[:EXACT_BATCH]
    exact, masks = {}, {}
    for players in (8, 10, 12, 14, 16):
        mask = masks[players] = groups_of(players, n, device)
        everything = torch.randn(2**players * EXACT_BATCH, n, device=device)
        everything_target = ts.repeat(2**players)

        def ours_exact(mask: torch.Tensor = mask) -> torch.Tensor:
            return shapley_exact(model, xs, bs, ts, feature_mask=mask)

        exact[players] = ours_exact()
        t = best_times(
            [
                ours_exact,
                None,
                bare_forward(model, everything, everything_target, EXACT_BATCH, blocked=False),
                bare_forward(model, everything, everything_target, EXACT_BATCH, blocked=True),
            ],
            device,
            repeats if players <= 12 else 3,
        )
        name = f"exact Shapley, {players} players ({2**players} coalitions x {EXACT_BATCH})"
        rows.append((name, t[0], t[1], t[2], t[3]))

    # 4. DASP vs sampling ------------------------------------------------------------------------
    players, mask, reference = 16, masks[16], exact[16]
    probe = 32
    t_dasp, t_probe = best_times(
        [
            lambda: dasp(model, xs, bs, ts, feature_mask=mask),
            lambda: shapley_sampling(
                model, xs, bs, ts, n_permutations=probe, seed=0, feature_mask=mask
            ),
        ],
        device,
        repeats,
    )
    error_dasp = relative_error(dasp(model, xs, bs, ts, feature_mask=mask), reference)
    equal_time = max(1, round(probe * t_dasp / t_probe))
    # DASP: 2 p^2 probabilistic passes ~ 4 p^2 forwards; sampling: 2 + m (p - 1) per sample
    equal_passes = (4 * players * players - 2) // (players - 1)

    def sampling_error(m: int) -> float:
        runs = [
            shapley_sampling(model, xs, bs, ts, n_permutations=m, seed=s, feature_mask=mask)
            for s in range(5)
        ]
        return sum(relative_error(r, reference) for r in runs) / len(runs)

    print(f"device: {device}, threads: {torch.get_num_threads()}, model {sizes}, batch {batch}")
    print()
    columns = ("labcore s", "captum s", "bare 1 pass", "bare blocks", "captum/ours", "ours/floor")
    header = f"{'task':52s} " + " ".join(f"{c:>11s}" for c in columns)
    print(header)
    print("-" * len(header))
    for name, t_ours, t_captum, t_bare, t_blocks in rows:
        floor = t_bare if t_blocks is None else min(t_bare, t_blocks)
        cells = [
            f"{t_ours:11.4f}",
            f"{t_captum:11.4f}" if t_captum is not None else f"{'-':>11s}",
            f"{t_bare:11.4f}",
            f"{t_blocks:11.4f}" if t_blocks is not None else f"{'-':>11s}",
            f"{t_captum / t_ours:10.1f}x" if t_captum is not None else f"{'-':>11s}",
            f"{t_ours / floor:10.2f}x",
        ]
        print(f"{name:52s} " + " ".join(cells))
        if t_captum is not None:
            print(f"{'':52s} {'captum/floor':>59s} {t_captum / floor:10.1f}x")
    print()
    print(
        f"DASP vs permutation sampling, {players} players, {EXACT_BATCH} samples, vs exact Shapley:"
    )
    print(f"  DASP ({t_dasp:.4f} s): relative L2 error {error_dasp:.4f}")
    for label, m in (("equal time", equal_time), ("equal forward passes", equal_passes)):
        print(f"  sampling, {label} ({m} permutations): relative L2 error {sampling_error(m):.4f}")


if __name__ == "__main__":
    main()
