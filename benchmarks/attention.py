"""Benchmark labcore's attention and GPT against the reference libraries, in one run.

1. ``labcore.attention.scaled_dot_product_attention`` (the formula written out, materialising the
   ``(batch, n_heads, pos, pos)`` weights) against the fused
   ``torch.nn.functional.scaled_dot_product_attention``; printed as a time ratio
   ``labcore / torch`` (lower is better, 1.0 = as fast).
2. ``labcore.transformer.GPT`` forward against ``transformers.GPT2LMHeadModel`` forward on the same
   (randomly initialised) weights; printed as tokens/s and the ratio ``labcore / Hugging Face``
   (higher is better; the goal is >= 1.0 on CPU).

Each measurement is the best of ``--repeats`` timings of ``--number`` calls, the two contenders
interleaved so that both see the same machine load. Run::

    python benchmarks/attention.py                 # GPT-2 small shape (124M parameters)
    python benchmarks/attention.py --model tiny    # a 2-layer model, seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from labcore import get_device, seed_everything
from labcore.attention import causal_mask, scaled_dot_product_attention
from labcore.transformer import GPT

MODELS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
    "tiny": dict(n_layer=2, n_head=4, n_embd=128, vocab_size=1000, n_positions=128),
}


def best_times(fns: dict[str, Callable[[], object]], number: int, repeats: int) -> dict[str, float]:
    """Best time per call (seconds) of each function, interleaving the contenders."""
    for fn in fns.values():  # warm up
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / number)
    return best


@torch.no_grad()
def bench_attention(args: argparse.Namespace, device: torch.device) -> None:
    g = torch.Generator(device=device).manual_seed(0)
    shape = (args.batch, 12, args.pos, 64)  # (batch, n_heads, pos, d_head)
    q, k, v = (torch.randn(shape, generator=g, device=device) for _ in range(3))
    mask = causal_mask(args.pos, device=device)
    for label, ours, theirs in [
        (
            "no mask",
            lambda: scaled_dot_product_attention(q, k, v),
            lambda: F.scaled_dot_product_attention(q, k, v),
        ),
        (
            "causal ",
            lambda: scaled_dot_product_attention(q, k, v, mask),
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        ),
    ]:
        t = best_times({"labcore": ours, "torch": theirs}, args.number, args.repeats)
        print(
            f"attention {label} {tuple(shape)}: labcore {t['labcore'] * 1e3:8.2f} ms, "
            f"torch {t['torch'] * 1e3:8.2f} ms, time ratio labcore/torch = "
            f"{t['labcore'] / t['torch']:.2f}x"
        )


@torch.no_grad()
def bench_gpt(args: argparse.Namespace, device: torch.device) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    seed_everything(0)
    config = GPT2Config(
        **MODELS[args.model],
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    hf = GPT2LMHeadModel(config).to(device).eval()
    ours = GPT.from_hf(hf).eval()
    pos = min(args.pos, config.n_positions)
    tokens = torch.randint(0, config.vocab_size, (args.batch, pos), device=device)
    diff = (ours(tokens) - hf(tokens).logits).abs().max().item()
    t = best_times(
        {"labcore": lambda: ours(tokens), "hf": lambda: hf(tokens).logits},
        args.number,
        args.repeats,
    )
    n = tokens.numel()
    print(
        f"GPT forward ({args.model}, attn_implementation={config._attn_implementation}, "
        f"tokens {tuple(tokens.shape)}, max |logit diff| {diff:.1e}):\n"
        f"  labcore {n / t['labcore']:10.0f} tokens/s, Hugging Face {n / t['hf']:10.0f} tokens/s, "
        f"ratio labcore/HF = {t['hf'] / t['labcore']:.2f}x (goal >= 1.0x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="gpt2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--pos", type=int, default=128)
    parser.add_argument("--number", type=int, default=1, help="calls per timing")
    parser.add_argument("--repeats", type=int, default=5, help="timings; the best is kept")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: best)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    bench_attention(args, device)
    bench_gpt(args, device)


if __name__ == "__main__":
    main()
