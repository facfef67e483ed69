"""Time ``labcore.mlp.train`` against a plain ``nn.Sequential`` and a hand-written loop.

Both train the same network (same initial weights) on the same digits split, with the same number
of steps, batch size, optimizer, learning rate and shuffling seed, so they do the same arithmetic;
the script checks that their loss curves agree and prints the best-of-``--repeats`` times and the
ratio (goal: at most 1.1). The two loops alternate (and swap order every round) so that a busy
machine slows both alike. Run ``python benchmarks/mlp.py [--steps N] [--repeats R] [--threads T]``;
the default of one thread is the fastest and least noisy for matrices this small on a CPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from labcore import get_device, seed_everything
from labcore.data import digits
from labcore.mlp import MLP, train


def make_models(sizes: list[int], device: torch.device) -> tuple[MLP, nn.Sequential]:
    """A labcore MLP and an nn.Sequential with identical weights."""
    seed_everything(0)
    mlp = MLP(sizes, activation="relu").to(device)
    modules: list[nn.Module] = []
    for i, layer in enumerate(mlp.layers):
        linear = nn.Linear(layer.in_features, layer.out_features).to(device)
        linear.load_state_dict(layer.state_dict())
        modules.append(linear)
        if i < len(mlp.layers) - 1:
            modules.append(nn.ReLU())
    return mlp, nn.Sequential(*modules)


def hand_written_loop(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> list[float]:
    """The loop one writes by hand: shuffle each epoch, slice, forward, backward, step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = X.shape[0]
    losses = []
    pos = n
    model.train()
    for _ in range(steps):
        if pos >= n:
            perm = torch.randperm(n, generator=generator).to(X.device)
            Xp, yp = X[perm], y[perm]
            pos = 0
        xb, yb = Xp[pos : pos + batch_size], yp[pos : pos + batch_size]
        pos += batch_size
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def labcore_loop(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, **settings: float
) -> list[float]:
    """The same training through ``labcore.mlp.train``."""
    return train(model, (X, y), progress=False, **settings).train_loss


def timed(fn: Callable[[], list[float]], device: torch.device) -> tuple[float, list[float]]:
    """Run ``fn`` once; return its wall-clock time (after the device finished) and its losses."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    losses = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = get_device()
    X_train, y_train, _, _ = digits(device=device)
    sizes = [64, 128, 10]
    settings = dict(steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=0)
    print(
        f"digits: {X_train.shape[0]} training samples, MLP {sizes}, Adam, {args.steps} steps of "
        f"{args.batch_size}, device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    times: dict[str, list[float]] = {"labcore": [], "plain": []}
    for repeat in range(args.repeats + 1):  # round 0 warms up and is not counted
        mlp, sequential = make_models(sizes, device)
        runs = {
            "labcore": partial(labcore_loop, mlp, X_train, y_train, **settings),
            "plain": partial(hand_written_loop, sequential, X_train, y_train, **settings),
        }
        order = ["labcore", "plain"] if repeat % 2 == 0 else ["plain", "labcore"]
        results = {name: timed(runs[name], device) for name in order}
        if repeat == 0:
            pairs = zip(results["labcore"][1], results["plain"][1], strict=True)
            diff = max(abs(a - b) for a, b in pairs)
            print(f"max |loss difference| between the two loops: {diff:.2e}")
            continue
        for name, (seconds, _) in results.items():
            times[name].append(seconds)

    best_labcore, best_plain = min(times["labcore"]), min(times["plain"])
    print(f"labcore.mlp.train        best of {args.repeats}: {best_labcore:.3f} s")
    print(f"nn.Sequential + loop     best of {args.repeats}: {best_plain:.3f} s")
    print(f"ratio labcore / plain: {best_labcore / best_plain:.3f} (goal <= 1.1)")


if __name__ == "__main__":
    main()
