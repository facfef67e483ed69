"""Time ``labcore.learning_dynamics`` against references, in one run, on one model and one input set.

1. ``empirical_ntk`` against the Jacobian-contraction recipe of the ``torch.func`` NTK tutorial
   (per-input Jacobians by ``vmap(jacrev(...))`` for both input sets, then one ``einsum`` per
   parameter tensor, summed; written here from the tutorial's description) and against a loop of
   per-sample ``torch.autograd.grad`` calls (goals: >= 1x the recipe, >= 10x the loop). Both a
   cross kernel (``x1 != x2``) and a kernel of one set with itself are timed; labcore computes the
   latter from one set of Jacobians, the recipe from two. ``--model chapter`` (default) is the
   width-512 ``TwoLayerReLU`` on 160 inputs of section 6.3; ``--model mlp`` a 16-256-256-K tanh MLP
   on 64 inputs, where the Gram products, which every method pays, dominate.
2. The chapter's grokking run (``train_modular_addition()`` with its defaults) on one CPU thread.

Every timed NTK is first checked against the loop. Run ``python benchmarks/learning_dynamics.py
[--threads T] [--repeats R] [--n N] [--outputs K]``; times are the best of ``R`` runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from labcore import get_device
from labcore.learning_dynamics import TwoLayerReLU, empirical_ntk, train_modular_addition


def tutorial_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """The tutorial's recipe: Jacobians of both sets, one einsum per parameter tensor, summed."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def single(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (x.unsqueeze(0),)).reshape(-1)  # (k,), k >= 1

    jac1 = vmap(jacrev(single), (None, 0))(params, x1)
    jac1 = [j.flatten(2) for j in jac1.values()]
    jac2 = vmap(jacrev(single), (None, 0))(params, x2)
    jac2 = [j.flatten(2) for j in jac2.values()]
    return torch.stack(
        [torch.einsum("Naf,Mbf->NMab", j1, j2) for j1, j2 in zip(jac1, jac2, strict=True)]
    ).sum(0)


def loop_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """One autograd call per input and output: the plain reference."""
    params = list(model.parameters())

    def jacobian(x: torch.Tensor) -> torch.Tensor:
        rows = []
        for xi in x:
            out = model(xi.unsqueeze(0)).reshape(-1)
            grads = [
                torch.cat([g.flatten() for g in torch.autograd.grad(o, params, retain_graph=True)])
                for o in out
            ]
            rows.append(torch.stack(grads))
        return torch.stack(rows)  # (n, k, P)

    return torch.einsum("akp,blp->abkl", jacobian(x1), jacobian(x2))


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=["chapter", "mlp"], default="chapter")
    parser.add_argument("--n", type=int, default=None, help="inputs per set (160 / 64)")
    parser.add_argument("--outputs", type=int, default=1, help="outputs of the mlp")
    parser.add_argument("--skip-grokking", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = get_device()
    torch.manual_seed(0)
    if args.model == "chapter":  # section 6.3: TwoLayerReLU(16, 512) on 160 inputs
        args.n, args.outputs = args.n or 160, 1
        model = TwoLayerReLU(16, 512, device=device)
        shape = "TwoLayerReLU 16-512-1"
    else:
        args.n = args.n or 64
        model = nn.Sequential(
            nn.Linear(16, 256),
            nn.Tanh(),
            nn.Linear(256, 256),
            nn.Tanh(),
            nn.Linear(256, args.outputs),
        ).to(device)
        shape = f"MLP 16-256-256-{args.outputs}"
    n_params = sum(p.numel() for p in model.parameters())
    x1 = torch.randn(args.n, 16, device=device)
    x2 = torch.randn(args.n, 16, device=device)
    print(
        f"device {device}, {args.threads} thread(s); {shape} ({n_params} parameters), "
        f"{args.n} inputs per set"
    )

    def ours_cross() -> torch.Tensor:
        k = empirical_ntk(model, x1, x2)
        return k if args.outputs > 1 else k[:, :, None, None]

    def ours_self() -> torch.Tensor:
        k = empirical_ntk(model, x1)
        return k if args.outputs > 1 else k[:, :, None, None]

    reference_cross = loop_ntk(model, x1, x2)
    reference_self = loop_ntk(model, x1, x1)
    for name, got, want in (
        ("labcore cross", ours_cross(), reference_cross),
        ("tutorial cross", tutorial_ntk(model, x1, x2), reference_cross),
        ("labcore self", ours_self(), reference_self),
    ):
        error = float((got - want).abs().max() / want.abs().max())
        assert error < 1e-4, f"{name} differs from the loop by {error:.2e}"

    rows = [
        (
            "cross kernel",
            ours_cross,
            lambda: tutorial_ntk(model, x1, x2),
            lambda: loop_ntk(model, x1, x2),
        ),
        (
            "self kernel",
            ours_self,
            lambda: tutorial_ntk(model, x1, x1),
            lambda: loop_ntk(model, x1, x1),
        ),
    ]
    print(
        f"{'kernel':14s} {'labcore':>9s} {'tutorial':>9s} {'loop':>9s} "
        f"{'tutorial/ours':>14s} {'loop/ours':>10s}"
    )
    for name, ours, tutorial, loop in rows:
        t_ours, t_tut, t_loop = (best_of(f, args.repeats) for f in (ours, tutorial, loop))
        print(
            f"{name:14s} {t_ours * 1e3:7.1f}ms {t_tut * 1e3:7.1f}ms {t_loop * 1e3:7.1f}ms "
            f"{t_tut / t_ours:13.2f}x {t_loop / t_ours:9.1f}x"
        )

    if not args.skip_grokking:
        torch.set_num_threads(1)
        start = time.perf_counter()
        _, history = train_modular_addition(progress=False)
        elapsed = time.perf_counter() - start
        general = next(
            s for s, a in zip(history["step"], history["test_acc"], strict=True) if a >= 0.95
        )
        print(
            f"grokking run (defaults, one thread): {elapsed:.1f} s for {history['step'][-1]} steps, "
            f"held-out 95% at step {general}, final {history['test_acc'][-1]:.3f}"
        )


if __name__ == "__main__":
    main()
