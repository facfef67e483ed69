"""Transcoders on the tiny model: throughput, the acceptance measurement, and L1 against L2.

Three parts, each printed as a small table (``--parts`` picks some; all by default):

- ``throughput``: the cost split between collecting the MLP's inputs and outputs with hooks
  (``collect_mlp_io``: tokens/s) and training (``train_transcoder``: tokens/s, one token = one row of
  a mini-batch), best of ``--repeats``; and the ratio of ``train_transcoder`` to a bare hand-written
  loop doing the same arithmetic without the bookkeeping (history, dead-feature tracking).
- ``measure``: the shipped transcoders (``load_tiny_transcoder``) on the 1000 held-out prompts:
  FVU, L0, dead features, and the loss on the answer after "it =" with the model as is, with the
  MLP zero-ablated and with the transcoder spliced in, and the CE loss recovered.
- ``penalty``: the sparsity-fidelity curve over lambda for the L1 penalty and for the seed
  presentation's sum of squares (L2) on the MLP of layer ``--layer``, L0 at matched FVU, and
  whether thresholding the L2 transcoder's small activations after training closes the gap.

Run ``python benchmarks/transcoder.py [--parts throughput,measure,penalty] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from labcore import get_device
from labcore.data.coref import evaluation_set
from labcore.models import load
from labcore.transcoder import (
    Transcoder,
    collect_mlp_io,
    evaluate_transcoder,
    fvu,
    l0,
    l0_at_fvu,
    load_tiny_transcoder,
    sweep_penalty,
    tiny_coref_data,
    train_transcoder,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    d_hidden: int,
    *,
    l1_coeff: float,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> Transcoder:
    """The loop one writes by hand: same initialisation, batches, loss, step and renormalisation."""
    generator = torch.Generator().manual_seed(seed)
    tc = Transcoder(inputs.shape[1], d_hidden, targets.shape[1])
    tc.reset_parameters(generator)
    tc.to(inputs.device)
    with torch.no_grad():
        tc.b_dec.copy_(targets.mean(0))
    opt = torch.optim.Adam(tc.parameters(), lr=lr)
    n, pos = inputs.shape[0], inputs.shape[0]
    for _ in range(steps):
        if pos + batch_size > n:
            perm = torch.randperm(n, generator=generator).to(inputs.device)
            pos = 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        x, y = inputs[idx], targets[idx]
        f = torch.relu(x @ tc.W_enc + tc.b_enc)
        loss = (y - (f @ tc.W_dec + tc.b_dec)).pow(2).sum(-1).mean() + l1_coeff * f.sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tc.normalize_decoder_()
    return tc


def throughput(model, tokenizer, device, args) -> None:
    tokens, lengths = tiny_coref_data(args.sentences, seed=200, tokenizer=tokenizer)
    tokens, lengths = tokens.to(device), lengths.to(device)
    collect, train, bare = [], [], []
    for repeat in range(args.repeats + 1):  # round 0 warms up
        sync(device)
        start = time.perf_counter()
        inputs, targets = collect_mlp_io(model, tokens, args.layer, lengths=lengths)
        sync(device)
        t_collect = time.perf_counter() - start
        settings = dict(l1_coeff=2.0, steps=args.steps, lr=1e-3, batch_size=512, seed=0)
        runs = {
            "train": partial(train_transcoder, inputs, targets, 512, progress=False, **settings),
            "bare": partial(bare_loop, inputs, targets, 512, **settings),
        }
        times = {}
        for name in ["train", "bare"] if repeat % 2 == 0 else ["bare", "train"]:
            sync(device)
            start = time.perf_counter()
            runs[name]()
            sync(device)
            times[name] = time.perf_counter() - start
        if repeat:
            collect.append(t_collect)
            train.append(times["train"])
            bare.append(times["bare"])
    n_tokens, trained = inputs.shape[0], args.steps * 512
    c, t, b = min(collect), min(train), min(bare)
    print(f"\n## throughput (layer {args.layer}, best of {args.repeats})")
    print(
        f"collect_mlp_io: {args.sentences} sentences, {n_tokens} tokens in {c:.2f} s "
        f"-> {n_tokens / c:,.0f} tokens/s"
    )
    print(
        f"train_transcoder: {args.steps} steps x 512 tokens (d_hidden 512) in {t:.2f} s "
        f"-> {trained / t:,.0f} tokens/s"
    )
    print(f"bare hand-written loop: {b:.2f} s -> ratio train_transcoder / bare = {t / b:.3f}")
    share = c / (c + t * 4000 / args.steps)
    print(
        f"cost split for the shipped recipe (4000 steps): collecting {100 * share:.0f}%, "
        f"training {100 - 100 * share:.0f}%"
    )


def measure(model, tokenizer, device) -> None:
    eval_set = evaluation_set("held_out", 1000, seed=1, tokenizer=tokenizer, device=device)
    print("\n## shipped transcoders on 1000 held-out prompts (loss: the answer after 'it =')")
    print(
        "layer d_hidden lambda   FVU    L0   dead  FVU@=  L0@=  L_orig  L_ablated  L_spliced"
        "  recovered"
    )
    for layer in (0, 1):
        tc, record = load_tiny_transcoder(layer, device=device)
        m = evaluate_transcoder(
            model,
            tc,
            layer,
            eval_set.tokens,
            positions=eval_set.lengths - 1,
            targets=eval_set.answer,
            lengths=eval_set.lengths,
        )
        print(
            f"{layer:5d} {tc.d_hidden:8d} {record['recipe']['l1_coeff']:6.1f} {m['fvu']:6.4f} "
            f"{m['l0']:5.1f} {m['dead_fraction']:6.3f} {m['fvu_at_positions']:6.4f} "
            f"{m['l0_at_positions']:5.1f} {m['loss_original']:7.4f} {m['loss_zero_ablated']:10.4f} "
            f"{m['loss_spliced']:10.4f} {m['ce_loss_recovered']:10.4f}"
        )


def penalty(model, tokenizer, device, args) -> None:
    tokens, lengths = tiny_coref_data(args.sentences, seed=200, tokenizer=tokenizer)
    inputs, targets = collect_mlp_io(model, tokens.to(device), args.layer, lengths=lengths)
    eval_set = evaluation_set("held_out", 1000, seed=1, tokenizer=tokenizer, device=device)
    x_eval, y_eval = collect_mlp_io(model, eval_set.tokens, args.layer, lengths=eval_set.lengths)
    grids = {"l1": [0.3, 1.0, 2.0, 3.0, 10.0], "l2": [0.3, 1.0, 3.0, 10.0, 30.0]}
    curves = {}
    print(
        f"\n## L1 against L2 (sum of squares), layer {args.layer}, d_hidden 512, "
        f"{args.sweep_steps} steps, held-out tokens"
    )
    print("penalty  lambda     FVU      L0    dead")
    for name, grid in grids.items():
        curves[name] = sweep_penalty(
            inputs,
            targets,
            512,
            grid,
            eval_inputs=x_eval,
            eval_targets=y_eval,
            penalty=name,
            steps=args.sweep_steps,
            lr=1e-3,
            batch_size=512,
            seed=0,
            progress=False,
        )
        for row in curves[name]:
            print(
                f"{name:7s} {row['l1_coeff']:7.1f} {row['fvu']:7.4f} {row['l0']:7.1f} "
                f"{row['dead_fraction']:7.3f}"
            )
    print("matched FVU   L0 (L1)   L0 (L2)   ratio")
    for target in (0.01, 0.02, 0.05):
        a, b = l0_at_fvu(curves["l1"], target), l0_at_fvu(curves["l2"], target)
        print(f"{target:11.2f} {a:9.1f} {b:9.1f} {b / a:7.1f}")

    # Can the small activations that L2 leaves be thresholded away after training?
    print("after training, zeroing activations below tau (same held-out tokens)")
    print("penalty  lambda    tau     FVU      L0")
    for name, coeff in (("l1", 1.0), ("l2", 3.0)):
        tc, _ = train_transcoder(
            inputs,
            targets,
            512,
            l1_coeff=coeff,
            penalty=name,
            steps=args.sweep_steps,
            lr=1e-3,
            batch_size=512,
            seed=0,
            progress=False,
        )
        with torch.no_grad():
            f = tc.encode(x_eval)
            for tau in (0.0, 0.03, 0.1, 0.3):
                kept = torch.where(f > tau, f, torch.zeros_like(f))
                print(
                    f"{name:7s} {coeff:7.1f} {tau:6.2f} {fvu(tc.decode(kept), y_eval).item():7.4f} "
                    f"{l0(kept).item():7.1f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="throughput,measure,penalty")
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=1000, help="training steps to time")
    parser.add_argument("--sweep-steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = get_device()
    model, tokenizer = load("tiny-coref", device=device)
    print(
        f"tiny-coref, device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    parts = args.parts.split(",")
    if "throughput" in parts:
        throughput(model, tokenizer, device, args)
    if "measure" in parts:
        measure(model, tokenizer, device)
    if "penalty" in parts:
        penalty(model, tokenizer, device, args)


if __name__ == "__main__":
    main()
