"""Lab 5 (transcoders and circuits): realistic wrong answers and valid alternatives per exercise.

Written as a student who read only the statement would. ``MISTAKES[exercise]`` lists ``(name,
function, hint)``: the hint is a substring that the check's failure message must contain.
``VALID[exercise]`` lists ``(name, function)``. Exercises with two functions (``transcoder_loss`` and
``normalize_decoder_rows``, ``fvu`` and ``l0``, ``spliced_logits`` and ``loss_recovered``) and the
loss, which calls ``transcoder_forward``, are written as in a notebook: :func:`notebook` binds each
entry's functions into one namespace (the entry's ``__globals__``), the solutions filling the rest,
so that the rubric finds the companion function where it finds it in a student's kernel.
"""

from __future__ import annotations

import types
from collections.abc import Callable

import torch
import torch.nn.functional as F

from labcore import transcoder as T


# ------------------------------------------------------------------------------------ solutions
def mlp_io(model, tokens, layer):
    names = [f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return cache[names[0]].flatten(0, 1), cache[names[1]].flatten(0, 1)


def transcoder_forward(x, W_enc, b_enc, W_dec, b_dec):
    f = torch.relu(x @ W_enc + b_enc)
    return f @ W_dec + b_dec, f


def transcoder_loss(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    return ((y - y_hat).pow(2).sum(-1) + l1_coeff * f.abs().sum(-1)).mean()


def normalize_decoder_rows(W_dec):
    return W_dec / W_dec.norm(dim=1, keepdim=True)


def fvu(y_hat, y):
    y = y.reshape(-1, y.shape[-1])
    y_hat = y_hat.reshape(y.shape)
    return (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum()


def l0(f):
    return (f != 0).sum(-1).float().mean()


def penalty(f, kind):
    if kind == "l1":
        return f.abs().sum(-1).mean()
    if kind == "l2":
        return f.pow(2).sum(-1).mean()
    raise ValueError(f'kind must be "l1" or "l2", got {kind!r}')


def spliced_logits(model, transcoder, layer, tokens):
    stored = {}

    def save_input(x, hook):
        stored["x"] = x

    def replace_output(y, hook):
        return transcoder(stored.pop("x"))[0]

    hooks = [
        (f"blocks.{layer}.ln2.hook_normalized", save_input),
        (f"blocks.{layer}.hook_mlp_out", replace_output),
    ]
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def loss_recovered(original, ablated, spliced):
    return (ablated - spliced) / (ablated - original)


def animacy_correlation(features, animate):
    a = animate.to(features.dtype)
    fc = features - features.mean(0)
    ac = a - a.mean()
    cov = (fc * ac[:, None]).sum(0)
    norms = fc.pow(2).sum(0).sqrt() * ac.pow(2).sum().sqrt()
    return torch.where(norms > 0, cov / norms, torch.zeros_like(cov))


def ablate_features(model, transcoder, layer, tokens, positions, features):
    batch = torch.arange(tokens.shape[0], device=tokens.device)

    def edit(f):
        f = f.clone()
        picked = f[batch, positions]
        picked[:, features] = 0.0
        f[batch, positions] = picked
        return f

    hooks = T.splice_hooks(transcoder, layer, edit=edit, keep_error=True)
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


_SOLUTION_FUNCTIONS = {
    fn.__name__: fn
    for fn in (mlp_io, transcoder_forward, transcoder_loss, normalize_decoder_rows, fvu, l0,
               penalty, spliced_logits, loss_recovered, animacy_correlation, ablate_features)
}  # fmt: skip


def notebook(main: str, **functions: Callable) -> Callable:
    """``functions`` (and the solutions for the other names) defined in one fresh namespace, as in
    a notebook; returns the function named ``main`` (whose ``__globals__`` is that namespace)."""
    namespace: dict = {
        k: v for k, v in globals().items() if k.startswith("_") or k in ("torch", "F", "T")
    }
    namespace["__name__"] = "notebook"
    for name, fn in {**_SOLUTION_FUNCTIONS, **functions}.items():
        namespace[name] = types.FunctionType(
            fn.__code__, namespace, name, fn.__defaults__, fn.__closure__
        )
    return namespace[main]


#: the exercise (the rubric's function name) -> the solution, bound in its own namespace
SOLUTIONS = {
    name: notebook(name)
    for name in ("mlp_io", "transcoder_forward", "transcoder_loss", "fvu", "penalty",
                 "spliced_logits", "animacy_correlation", "ablate_features")
}  # fmt: skip


# ------------------------------------------------------------------------------------ 1: mlp_io
def _cached(model, tokens, name):
    _, cache = model.run_with_cache(tokens, names_filter=[name])
    return cache[name]


def _io_resid_mid(model, tokens, layer):
    x = _cached(model, tokens, f"blocks.{layer}.hook_resid_mid")
    return x.flatten(0, 1), _cached(model, tokens, f"blocks.{layer}.hook_mlp_out").flatten(0, 1)


def _io_not_flat(model, tokens, layer):
    x = _cached(model, tokens, f"blocks.{layer}.ln2.hook_normalized")
    return x, _cached(model, tokens, f"blocks.{layer}.hook_mlp_out")


def _io_swapped(model, tokens, layer):
    x, y = _SOLUTION_FUNCTIONS["mlp_io"](model, tokens, layer)
    return y, x


def _io_layer_zero(model, tokens, layer):
    return _SOLUTION_FUNCTIONS["mlp_io"](model, tokens, 0)


def _io_ln1(model, tokens, layer):
    x = _cached(model, tokens, f"blocks.{layer}.ln1.hook_normalized")
    return x.flatten(0, 1), _cached(model, tokens, f"blocks.{layer}.hook_mlp_out").flatten(0, 1)


def _io_resid_post(model, tokens, layer):
    x = _cached(model, tokens, f"blocks.{layer}.ln2.hook_normalized")
    y = _cached(model, tokens, f"blocks.{layer}.hook_resid_post")
    return x.flatten(0, 1), y.flatten(0, 1)


def _io_hook_post(model, tokens, layer):
    x = _cached(model, tokens, f"blocks.{layer}.ln2.hook_normalized")
    y = _cached(model, tokens, f"blocks.{layer}.mlp.hook_post")
    return x.flatten(0, 1), y.flatten(0, 1)


def _io_reshape(model, tokens, layer):
    _, cache = model.run_with_cache(tokens)  # every hook cached, then reshape
    d = model.config.d_model
    x = cache[f"blocks.{layer}.ln2.hook_normalized"].reshape(-1, d)
    return x, cache[f"blocks.{layer}.hook_mlp_out"].reshape(-1, d)


def _io_hooks(model, tokens, layer):
    stored = {}
    hooks = [
        (f"blocks.{layer}.ln2.hook_normalized", lambda x, hook: stored.__setitem__("x", x)),
        (f"blocks.{layer}.hook_mlp_out", lambda y, hook: stored.__setitem__("y", y)),
    ]
    model.run_with_hooks(tokens, fwd_hooks=hooks)
    return stored["x"].flatten(0, 1), stored["y"].flatten(0, 1)


def _io_two_runs(model, tokens, layer):
    x = _cached(model, tokens, f"blocks.{layer}.ln2.hook_normalized")
    y = _cached(model, tokens, f"blocks.{layer}.hook_mlp_out")
    return x.view(-1, x.shape[-1]).clone(), y.contiguous().view(-1, y.shape[-1])


# ------------------------------------------------------------------------------------ 2: forward
def _fw_no_relu(x, W_enc, b_enc, W_dec, b_dec):
    f = x @ W_enc + b_enc
    return f @ W_dec + b_dec, f


def _fw_cpu_zeros(x, W_enc, b_enc, W_dec, b_dec):
    zeros = torch.zeros(W_enc.shape[1], dtype=x.dtype)  # created on the CPU
    f = torch.maximum(x @ W_enc + b_enc, zeros)
    return f @ W_dec + b_dec, f


def _fw_no_b_enc(x, W_enc, b_enc, W_dec, b_dec):
    f = torch.relu(x @ W_enc)
    return f @ W_dec + b_dec, f


def _fw_no_b_dec(x, W_enc, b_enc, W_dec, b_dec):
    f = torch.relu(x @ W_enc + b_enc)
    return f @ W_dec, f


def _fw_swapped(x, W_enc, b_enc, W_dec, b_dec):
    f = torch.relu(x @ W_enc + b_enc)
    return f, f @ W_dec + b_dec


def _fw_relu_out(x, W_enc, b_enc, W_dec, b_dec):
    f = torch.relu(x @ W_enc + b_enc)
    return torch.relu(f @ W_dec + b_dec), f


def _fw_decode_pre(x, W_enc, b_enc, W_dec, b_dec):
    pre = x @ W_enc + b_enc
    return pre @ W_dec + b_dec, torch.relu(pre)


def _fw_inplace(x, W_enc, b_enc, W_dec, b_dec):
    f = torch.relu(x @ W_enc + b_enc)
    b_dec += f.sum() * 0  # an accidental in-place update of an argument
    b_dec.add_(1.0)
    return f @ W_dec + b_dec - 1.0, f


def _fw_einsum(x, W_enc, b_enc, W_dec, b_dec):
    f = torch.einsum("...i,ih->...h", x, W_enc).add(b_enc).clamp(min=0)
    return torch.einsum("...h,ho->...o", f, W_dec) + b_dec, f


def _fw_linear(x, W_enc, b_enc, W_dec, b_dec):
    f = F.relu(F.linear(x, W_enc.T, b_enc))
    return F.linear(f, W_dec.T, b_dec), f


def _fw_where(x, W_enc, b_enc, W_dec, b_dec):
    pre = torch.matmul(x, W_enc) + b_enc
    f = torch.where(pre > 0, pre, torch.zeros_like(pre))
    return b_dec + torch.matmul(f, W_dec), f


# ------------------------------------------------------------------------------------ 3: loss
def _loss_mse(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    return F.mse_loss(y_hat, y) + l1_coeff * f.abs().sum(-1).mean()


def _loss_l2(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    return ((y - y_hat).pow(2).sum(-1) + l1_coeff * f.pow(2).sum(-1)).mean()


def _loss_sum(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    return ((y - y_hat).pow(2).sum(-1) + l1_coeff * f.abs().sum(-1)).sum()


def _loss_no_coeff(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    return ((y - y_hat).pow(2).sum(-1) + f.abs().sum(-1)).mean()


def _loss_item(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    return torch.tensor(((y - y_hat).pow(2).sum(-1) + l1_coeff * f.abs().sum(-1)).mean().item())


def _loss_penalty_total(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    return (y - y_hat).pow(2).sum(-1).mean() + l1_coeff * f.abs().sum()


def _loss_inplace(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    err = y.sub_(y_hat.detach())  # the residual computed in place, in the caller's y
    return ((err - (y_hat - y_hat.detach())).pow(2).sum(-1) + l1_coeff * f.abs().sum(-1)).mean()


def _rows_columns(W_dec):
    return W_dec / W_dec.norm(dim=0, keepdim=True)


def _rows_inplace(W_dec):
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    return W_dec


def _loss_own_forward(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    return (y - y_hat).pow(2).sum(-1).mean() + l1_coeff * f.abs().sum(-1).mean()


def _loss_inline(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    f = F.relu(x @ W_enc + b_enc)
    err = y - (f @ W_dec + b_dec)
    return torch.einsum("nd,nd->", err, err) / x.shape[0] + l1_coeff * f.sum() / x.shape[0]


def _loss_norms(x, y, W_enc, b_enc, W_dec, b_dec, l1_coeff):
    y_hat, f = transcoder_forward(x, W_enc, b_enc, W_dec, b_dec)
    per_token = torch.linalg.vector_norm(y - y_hat, dim=-1) ** 2 + l1_coeff * f.norm(p=1, dim=-1)
    return per_token.mean()


def _rows_normalize(W_dec):
    return F.normalize(W_dec, dim=1)


def _rows_rsqrt(W_dec):
    return W_dec * W_dec.pow(2).sum(-1, keepdim=True).rsqrt()


def _forward_no_b_dec_companion(x, W_enc, b_enc, W_dec, b_dec):  # a wrong exercise 2
    f = torch.relu(x @ W_enc + b_enc)
    return f @ W_dec, f


# ------------------------------------------------------------------------------------ 4: metrics
def _fvu_uncentred(y_hat, y):
    return (y - y_hat).pow(2).sum() / y.pow(2).sum()


def _fvu_scalar_mean(y_hat, y):
    return (y - y_hat).pow(2).sum() / (y - y.mean()).pow(2).sum()


def _fvu_per_dim(y_hat, y):
    y = y.reshape(-1, y.shape[-1])
    y_hat = y_hat.reshape(y.shape)
    return ((y - y_hat).pow(2).sum(0) / (y - y.mean(0)).pow(2).sum(0)).mean()


def _fvu_explained(y_hat, y):
    return 1 - _SOLUTION_FUNCTIONS["fvu"](y_hat, y)


def _fvu_first_axis(y_hat, y):
    return (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum()


def _fvu_item(y_hat, y):
    y2 = y.reshape(-1, y.shape[-1])
    return ((y2 - y_hat.reshape(y2.shape)).pow(2).sum() / (y2 - y2.mean(0)).pow(2).sum()).item()


def _l0_int(f):
    return (f != 0).sum(-1).double().mean().round().long()


def _l0_fraction(f):
    return (f != 0).float().mean()


def _l0_total(f):
    return (f != 0).sum().float()


def _l0_item(f):
    return (f != 0).sum(-1).float().mean().item()


def _fvu_var(y_hat, y):
    d = y.shape[-1]
    y, y_hat = y.reshape(-1, d), y_hat.reshape(-1, d)
    return F.mse_loss(y_hat, y, reduction="sum") / (y.var(0, unbiased=False).sum() * y.shape[0])


def _fvu_loop(y_hat, y):
    d = y.shape[-1]
    y, y_hat = y.reshape(-1, d), y_hat.reshape(-1, d)
    mean = y.mean(0)
    num = sum(((y[t] - y_hat[t]) ** 2).sum() for t in range(y.shape[0]))
    den = sum(((y[t] - mean) ** 2).sum() for t in range(y.shape[0]))
    return num / den


def _fvu_flatten(y_hat, y):
    y, y_hat = y.flatten(0, -2), y_hat.flatten(0, -2)
    return torch.sum((y - y_hat) ** 2) / torch.sum((y - y.mean(dim=0, keepdim=True)) ** 2)


def _l0_gt(f):
    return (f > 0).to(f.dtype).sum(-1).mean()


def _l0_count(f):
    return torch.count_nonzero(f, dim=-1).double().mean()


# ------------------------------------------------------------------------------------ 5: penalty
def _pen_no_abs(f, kind):
    if kind == "l1":
        return f.sum(-1).mean()
    if kind == "l2":
        return f.pow(2).sum(-1).mean()
    raise ValueError(kind)


def _pen_norm(f, kind):
    if kind == "l1":
        return f.abs().sum(-1).mean()
    if kind == "l2":
        return f.norm(dim=-1).mean()
    raise ValueError(kind)


def _pen_sum(f, kind):
    if kind == "l1":
        return f.abs().sum()
    if kind == "l2":
        return f.pow(2).sum()
    raise ValueError(kind)


def _pen_mean_all(f, kind):
    if kind == "l1":
        return f.abs().mean()
    if kind == "l2":
        return f.pow(2).mean()
    raise ValueError(kind)


def _pen_no_error(f, kind):
    if kind == "l1":
        return f.abs().sum(-1).mean()
    return f.pow(2).sum(-1).mean()


def _pen_item(f, kind):
    if kind == "l1":
        return torch.tensor(f.abs().sum(-1).mean().item())
    if kind == "l2":
        return torch.tensor(f.pow(2).sum(-1).mean().item())
    raise ValueError(kind)


def _pen_swapped(f, kind):
    if kind == "l2":
        return f.abs().sum(-1).mean()
    if kind == "l1":
        return f.pow(2).sum(-1).mean()
    raise ValueError(kind)


def _pen_norms(f, kind):
    if kind not in ("l1", "l2"):
        raise ValueError(f"unknown kind {kind}")
    p = 1 if kind == "l1" else 2
    return (torch.linalg.vector_norm(f, ord=p, dim=-1) ** p).mean()


def _pen_flat(f, kind):
    flat = f.reshape(-1, f.shape[-1])
    match kind:
        case "l1":
            return torch.sum(torch.abs(flat)) / flat.shape[0]
        case "l2":
            return torch.sum(flat * flat) / flat.shape[0]
    raise ValueError("kind must be l1 or l2")


def _pen_dict(f, kind):
    per_entry = {"l1": torch.abs, "l2": torch.square}
    if kind not in per_entry:
        raise ValueError(kind)
    return per_entry[kind](f).sum(dim=-1).mean()


# ------------------------------------------------------------------------------------ 6: splice
def _splice_run(model, transcoder, layer, tokens, read, write, combine):
    stored = {}

    def save_input(x, hook):
        stored["x"] = x

    def replace_output(y, hook):
        return combine(y, transcoder(stored.pop("x"))[0])

    return model.run_with_hooks(tokens, fwd_hooks=[(read, save_input), (write, replace_output)])


def _sp_no_return(model, transcoder, layer, tokens):
    stored = {}

    def save_input(x, hook):
        stored["x"] = x

    def replace_output(y, hook):
        stored["y_hat"] = transcoder(stored.pop("x"))[0]  # stored, not returned

    hooks = [
        (f"blocks.{layer}.ln2.hook_normalized", save_input),
        (f"blocks.{layer}.hook_mlp_out", replace_output),
    ]
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def _sp_resid_mid(model, transcoder, layer, tokens):
    return _splice_run(model, transcoder, layer, tokens, f"blocks.{layer}.hook_resid_mid",
                       f"blocks.{layer}.hook_mlp_out", lambda y, y_hat: y_hat)  # fmt: skip


def _sp_added(model, transcoder, layer, tokens):
    return _splice_run(model, transcoder, layer, tokens, f"blocks.{layer}.ln2.hook_normalized",
                       f"blocks.{layer}.hook_mlp_out", lambda y, y_hat: y + y_hat)  # fmt: skip


def _sp_layer_zero(model, transcoder, layer, tokens):
    return _splice_run(model, transcoder, 0, tokens, "blocks.0.ln2.hook_normalized",
                       "blocks.0.hook_mlp_out", lambda y, y_hat: y_hat)  # fmt: skip


def _sp_tuple(model, transcoder, layer, tokens):
    stored = {}

    def save_input(x, hook):
        stored["x"] = x

    def replace_output(y, hook):
        return transcoder(stored.pop("x"))  # the pair (y_hat, f)

    hooks = [
        (f"blocks.{layer}.ln2.hook_normalized", save_input),
        (f"blocks.{layer}.hook_mlp_out", replace_output),
    ]
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def _ratio_lost(original, ablated, spliced):
    return (spliced - original) / (ablated - original)


def _ratio_no_original(original, ablated, spliced):
    return (ablated - spliced) / ablated


def _sp_one_hook(model, transcoder, layer, tokens):
    _, cache = model.run_with_cache(tokens, names_filter=[f"blocks.{layer}.ln2.hook_normalized"])
    y_hat = transcoder(cache[f"blocks.{layer}.ln2.hook_normalized"])[0]
    return model.run_with_hooks(
        tokens, fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", lambda y, hook: y_hat)]
    )


def _sp_encode_decode(model, transcoder, layer, tokens):
    box = []

    def save_input(x, hook):
        box.append(transcoder.decode(transcoder.encode(x)))
        return None

    def replace_output(y, hook):
        return box[-1]

    hooks = [
        (f"blocks.{layer}.ln2.hook_normalized", save_input),
        (f"blocks.{layer}.hook_mlp_out", replace_output),
    ]
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def _sp_context(model, transcoder, layer, tokens):
    stored = {}

    def save_input(x, hook):
        stored["x"] = x

    def replace_output(y, hook):
        y_hat, _ = transcoder(stored["x"])
        return y_hat

    with model.hooks([(f"blocks.{layer}.ln2.hook_normalized", save_input),
                      (f"blocks.{layer}.hook_mlp_out", replace_output)]):  # fmt: skip
        return model(tokens)


def _ratio_tensor(original, ablated, spliced):
    gap = torch.as_tensor(ablated) - torch.as_tensor(original)
    return float((torch.as_tensor(ablated) - torch.as_tensor(spliced)) / gap)


# ------------------------------------------------------------------------------------ 7: correlation
def _corr_nan(features, animate):
    a = animate.to(features.dtype)
    fc, ac = features - features.mean(0), a - a.mean()
    return (fc * ac[:, None]).sum(0) / (fc.pow(2).sum(0).sqrt() * ac.pow(2).sum().sqrt())


def _corr_cpu_zeros(features, animate):
    a = animate.to(features.dtype)
    fc, ac = features - features.mean(0), a - a.mean()
    cov, norms = (fc * ac[:, None]).sum(0), fc.pow(2).sum(0).sqrt() * ac.pow(2).sum().sqrt()
    zero = torch.zeros(features.shape[1], dtype=features.dtype)  # created on the CPU
    return torch.where(norms > 0, cov / norms, zero)


def _corr_flipped(features, animate):
    return _SOLUTION_FUNCTIONS["animacy_correlation"](features, ~animate)


def _corr_cov(features, animate):
    a = animate.to(features.dtype)
    fc, ac = features - features.mean(0), a - a.mean()
    return (fc * ac[:, None]).mean(0)


def _corr_mixed_norms(features, animate):
    a = animate.to(features.dtype)
    fc, ac = features - features.mean(0), a - a.mean()
    cov = (fc * ac[:, None]).mean(0)  # 1/n
    std = features.std(0) * a.std()  # 1/(n-1)
    return torch.where(std > 0, cov / std, torch.zeros_like(cov))


def _corr_uncentred(features, animate):
    a = animate.to(features.dtype)
    norms = features.pow(2).sum(0).sqrt() * a.pow(2).sum().sqrt()
    cov = (features * a[:, None]).sum(0)
    return torch.where(norms > 0, cov / norms, torch.zeros_like(cov))


def _corr_wrong_axis(features, animate):
    a = animate.to(features.dtype)
    fc = features - features.mean(1, keepdim=True)
    cov = (fc * (a - a.mean())[:, None]).sum(1)
    norms = fc.pow(2).sum(1).sqrt() * (a - a.mean()).pow(2).sum().sqrt()
    return torch.where(norms > 0, cov / norms, torch.zeros_like(cov))


def _corr_corrcoef(features, animate):
    a = animate.to(features.dtype)
    r = torch.corrcoef(torch.cat([features.T, a[None]]))[:-1, -1]
    return torch.nan_to_num(r, nan=0.0)


def _corr_std(features, animate):
    a = animate.to(features.dtype)
    fz = features - features.mean(0)
    az = a - a.mean()
    sf, sa = features.std(0, unbiased=False), a.std(unbiased=False)
    r = (fz * az[:, None]).mean(0) / (sf * sa)
    return torch.where(sf > 0, r, torch.zeros_like(r))


def _corr_loop(features, animate):
    a = animate.to(features.dtype)
    out = torch.zeros(features.shape[1], dtype=features.dtype, device=features.device)
    for j in range(features.shape[1]):
        col = features[:, j] - features[:, j].mean()
        den = col.norm() * (a - a.mean()).norm()
        if den > 0:
            out[j] = (col * (a - a.mean())).sum() / den
    return out


# ------------------------------------------------------------------------------------ 8: ablation
def _ablate_with(edit_for, keep_error=True):
    def run(model, transcoder, layer, tokens, positions, features):
        hooks = T.splice_hooks(transcoder, layer, edit=edit_for(tokens, positions, features),
                               keep_error=keep_error)  # fmt: skip
        return model.run_with_hooks(tokens, fwd_hooks=hooks)

    return run


def _edit_right(tokens, positions, features):
    batch = torch.arange(tokens.shape[0], device=tokens.device)

    def edit(f):
        f = f.clone()
        picked = f[batch, positions]
        picked[:, features] = 0.0
        f[batch, positions] = picked
        return f

    return edit


def _edit_cpu_mask(tokens, positions, features):
    def edit(f):
        keep = torch.ones(f.shape, dtype=f.dtype)  # created on the CPU
        keep[torch.arange(f.shape[0]), positions.cpu()] = torch.where(
            torch.isin(torch.arange(f.shape[-1]), torch.tensor(features, dtype=torch.long)),
            0.0,
            1.0,
        )
        return f * keep

    return edit


def _edit_everywhere(tokens, positions, features):
    def edit(f):
        f = f.clone()
        f[..., features] = 0.0
        return f

    return edit


def _edit_cross(tokens, positions, features):
    def edit(f):
        f = f.clone()
        for j in features:
            f[:, positions, j] = 0.0
        return f

    return edit


def _edit_last(tokens, positions, features):
    def edit(f):
        f = f.clone()
        f[:, -1, features] = 0.0
        return f

    return edit


def _edit_chained(tokens, positions, features):
    batch = torch.arange(tokens.shape[0], device=tokens.device)

    def edit(f):
        f = f.clone()
        f[batch, positions][:, features] = 0.0  # edits a copy: nothing changes
        return f

    return edit


def _edit_loop(tokens, positions, features):
    def edit(f):
        f = f.clone()
        for b in range(f.shape[0]):
            for j in features:
                f[b, positions[b], j] = 0.0
        return f

    return edit


def _edit_mask(tokens, positions, features):
    def edit(f):
        batch, pos, d_hidden = f.shape
        at = torch.arange(pos, device=f.device)[None, :] == positions[:, None]  # (batch, pos)
        chosen = torch.zeros(d_hidden, dtype=torch.bool, device=f.device)
        chosen[list(features)] = True
        return f.masked_fill(at[..., None] & chosen, 0.0)

    return edit


def _ablate_own_hooks(model, transcoder, layer, tokens, positions, features):
    batch = torch.arange(tokens.shape[0], device=tokens.device)
    stored = {}

    def save_input(x, hook):
        stored["x"] = x

    def replace_output(y, hook):
        f = transcoder.encode(stored.pop("x"))
        edited = f.clone()
        index = torch.as_tensor(features, dtype=torch.long, device=f.device)
        edited[batch[:, None], positions[:, None], index] = 0.0
        return y + transcoder.decode(edited) - transcoder.decode(f)

    hooks = [
        (f"blocks.{layer}.ln2.hook_normalized", save_input),
        (f"blocks.{layer}.hook_mlp_out", replace_output),
    ]
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def _ablate_mutates_positions(model, transcoder, layer, tokens, positions, features):
    positions -= 0  # harmless, then an in-place clamp that changes a caller's tensor
    positions.clamp_(max=tokens.shape[1] - 2)
    return _SOLUTION_FUNCTIONS["ablate_features"](
        model, transcoder, layer, tokens, positions, features
    )


# ------------------------------------------------------------------------------------ catalogue
MISTAKES = {
    "mlp_io": [
        ("the residual stream (hook_resid_mid) instead of the LayerNorm's output",
         notebook("mlp_io", mlp_io=_io_resid_mid), "normalised"),
        ("(batch, pos, d_model) not flattened", notebook("mlp_io", mlp_io=_io_not_flat),
         "flatten batch and position"),
        ("(targets, inputs) in the wrong order", notebook("mlp_io", mlp_io=_io_swapped),
         "come first"),
        ("layer 0 hard-coded", notebook("mlp_io", mlp_io=_io_layer_zero), "layer argument"),
        ("the attention's LayerNorm ln1", notebook("mlp_io", mlp_io=_io_ln1), "ln1"),
        ("hook_resid_post as the target", notebook("mlp_io", mlp_io=_io_resid_post),
         "hook_resid_post"),
        ("the MLP's neurons mlp.hook_post as the target", notebook("mlp_io", mlp_io=_io_hook_post),
         "neurons inside the MLP"),
    ],
    "transcoder_forward": [
        ("no ReLU", notebook("transcoder_forward", transcoder_forward=_fw_no_relu), "ReLU"),
        ("b_enc forgotten", notebook("transcoder_forward", transcoder_forward=_fw_no_b_enc),
         "encoder bias"),
        ("b_dec forgotten", notebook("transcoder_forward", transcoder_forward=_fw_no_b_dec),
         "decoder bias"),
        ("(f, y_hat) in the wrong order",
         notebook("transcoder_forward", transcoder_forward=_fw_swapped), "in this order"),
        ("a ReLU on the output", notebook("transcoder_forward", transcoder_forward=_fw_relu_out),
         "linear in f"),
        ("the pre-activations decoded",
         notebook("transcoder_forward", transcoder_forward=_fw_decode_pre), "pre-activations"),
        ("b_dec modified in place", notebook("transcoder_forward", transcoder_forward=_fw_inplace),
         "b_dec"),
        ("ReLU as a maximum with zeros created on the CPU",
         notebook("transcoder_forward", transcoder_forward=_fw_cpu_zeros), "'meta' device"),
    ],
    "transcoder_loss": [
        ("F.mse_loss (averages over d_out too)",
         notebook("transcoder_loss", transcoder_loss=_loss_mse), "F.mse_loss"),
        ("an L2 penalty", notebook("transcoder_loss", transcoder_loss=_loss_l2), "L1"),
        ("summed over tokens", notebook("transcoder_loss", transcoder_loss=_loss_sum),
         "not a sum over the batch"),
        ("l1_coeff forgotten", notebook("transcoder_loss", transcoder_loss=_loss_no_coeff),
         "l1_coeff"),
        ("a tensor rebuilt from .item() (no gradient)",
         notebook("transcoder_loss", transcoder_loss=_loss_item), "require gradients"),
        ("the penalty summed over the batch",
         notebook("transcoder_loss", transcoder_loss=_loss_penalty_total),
         "average the penalty over tokens"),
        ("the residual computed in place in y", notebook("transcoder_loss",
                                                       transcoder_loss=_loss_inplace),
         "modified its input 'y'"),
        ("normalize_decoder_rows normalises columns",
         notebook("transcoder_loss", normalize_decoder_rows=_rows_columns), "dim=1"),
        ("normalize_decoder_rows divides W_dec in place",
         notebook("transcoder_loss", normalize_decoder_rows=_rows_inplace), "W_dec"),
    ],
    "fvu": [
        ("the denominator not centred", notebook("fvu", fvu=_fvu_uncentred), "centre y"),
        ("the mean of all entries instead of the mean vector",
         notebook("fvu", fvu=_fvu_scalar_mean), "mean output vector"),
        ("one ratio per dimension, averaged", notebook("fvu", fvu=_fvu_per_dim), "one ratio"),
        ("1 - FVU (the explained fraction)", notebook("fvu", fvu=_fvu_explained), "unexplained"),
        ("the mean over the first axis only of a 3-D y", notebook("fvu", fvu=_fvu_first_axis),
         "all leading axes"),
        ("a Python float from .item()", notebook("fvu", fvu=_fvu_item), "0-d"),
        ("L0 as an integer tensor", notebook("fvu", l0=_l0_int), "float"),
        ("L0 as the fraction of active entries", notebook("fvu", l0=_l0_fraction),
         "sum over the last axis"),
        ("L0 as the total count", notebook("fvu", l0=_l0_total), "not the total"),
        ("L0 as a Python float from .item()", notebook("fvu", l0=_l0_item), "0-d"),
    ],
    "penalty": [
        ("L1 without the absolute value", notebook("penalty", penalty=_pen_no_abs),
         "absolute values"),
        ("L2 as the Euclidean norm", notebook("penalty", penalty=_pen_norm), "sum of squares"),
        ("summed over tokens", notebook("penalty", penalty=_pen_sum), "average over the tokens"),
        ("averaged over every entry", notebook("penalty", penalty=_pen_mean_all),
         "not a mean over all entries"),
        ("no ValueError for an unknown kind", notebook("penalty", penalty=_pen_no_error),
         "ValueError"),
        ("a tensor rebuilt from .item() (no gradient)", notebook("penalty", penalty=_pen_item),
         "require gradients"),
        ("l1 and l2 swapped", notebook("penalty", penalty=_pen_swapped), "swapped"),
    ],
    "spliced_logits": [
        ("the hook assigns y_hat instead of returning it",
         notebook("spliced_logits", spliced_logits=_sp_no_return), "*return*"),
        ("the transcoder reads hook_resid_mid",
         notebook("spliced_logits", spliced_logits=_sp_resid_mid), "hook_resid_mid"),
        ("y_hat added to the MLP's output",
         notebook("spliced_logits", spliced_logits=_sp_added), "do not add"),
        ("layer 0 hard-coded", notebook("spliced_logits", spliced_logits=_sp_layer_zero),
         "argument `layer`"),
        ("the hook returns the pair (y_hat, f)",
         notebook("spliced_logits", spliced_logits=_sp_tuple), "(y_hat, f)"),
        ("loss_recovered gives the fraction lost",
         notebook("spliced_logits", loss_recovered=_ratio_lost), "fraction *lost*"),
        ("loss_recovered ignores the original loss",
         notebook("spliced_logits", loss_recovered=_ratio_no_original), "L_original"),
    ],
    "animacy_correlation": [
        ("nan for constant features", notebook("animacy_correlation",
                                               animacy_correlation=_corr_nan), "zero variance"),
        ("correlated with the wrong label",
         notebook("animacy_correlation", animacy_correlation=_corr_flipped), "flipped"),
        ("the covariance, not divided by the standard deviations",
         notebook("animacy_correlation", animacy_correlation=_corr_cov), "standard deviations"),
        ("1/n covariance over 1/(n-1) standard deviations",
         notebook("animacy_correlation", animacy_correlation=_corr_mixed_norms),
         "same normalisation"),
        ("variables not centred",
         notebook("animacy_correlation", animacy_correlation=_corr_uncentred), "centre both"),
        ("one correlation per prompt (the wrong axis)",
         notebook("animacy_correlation", animacy_correlation=_corr_wrong_axis),
         "one correlation per feature"),
        ("zeros for constant features created on the CPU",
         notebook("animacy_correlation", animacy_correlation=_corr_cpu_zeros), "'meta' device"),
    ],
    "ablate_features": [
        ("the error term dropped",
         notebook("ablate_features", ablate_features=_ablate_with(_edit_right, keep_error=False)),
         "error term"),
        ("features zeroed at every position",
         notebook("ablate_features", ablate_features=_ablate_with(_edit_everywhere)),
         "not at every position"),
        ("f[:, positions] (every prompt with every position)",
         notebook("ablate_features", ablate_features=_ablate_with(_edit_cross)),
         "pairs every prompt with every position"),
        ("the last position for every prompt",
         notebook("ablate_features", ablate_features=_ablate_with(_edit_last)), "positions[b]"),
        ("chained indexing edits a copy",
         notebook("ablate_features", ablate_features=_ablate_with(_edit_chained)),
         "the clean logits"),
        ("positions clamped in place", notebook("ablate_features",
                                                ablate_features=_ablate_mutates_positions),
         "positions"),
        ("a mask of ones created on the CPU",
         notebook("ablate_features", ablate_features=_ablate_with(_edit_cpu_mask)),
         "'meta' device"),
    ],
}  # fmt: skip

VALID = {
    "mlp_io": [
        ("every hook cached, reshape(-1, d_model)", notebook("mlp_io", mlp_io=_io_reshape)),
        ("two hooks with run_with_hooks", notebook("mlp_io", mlp_io=_io_hooks)),
        ("two cached runs, view", notebook("mlp_io", mlp_io=_io_two_runs)),
    ],
    "transcoder_forward": [
        ("einsum and clamp", notebook("transcoder_forward", transcoder_forward=_fw_einsum)),
        ("F.linear", notebook("transcoder_forward", transcoder_forward=_fw_linear)),
        ("torch.where", notebook("transcoder_forward", transcoder_forward=_fw_where)),
    ],
    "transcoder_loss": [
        ("two means", notebook("transcoder_loss", transcoder_loss=_loss_own_forward)),
        ("inline forward, einsum", notebook("transcoder_loss", transcoder_loss=_loss_inline,
                                            normalize_decoder_rows=_rows_normalize)),
        ("vector norms, rsqrt rows", notebook("transcoder_loss", transcoder_loss=_loss_norms,
                                              normalize_decoder_rows=_rows_rsqrt)),
        ("graded on its own: the student's transcoder_forward is wrong (exercise 2 loses the "
         "points, not this one)", notebook("transcoder_loss",
                                           transcoder_forward=_forward_no_b_dec_companion)),
    ],
    "fvu": [
        ("mse_loss over var", notebook("fvu", fvu=_fvu_var, l0=_l0_gt)),
        ("loops over tokens", notebook("fvu", fvu=_fvu_loop, l0=_l0_count)),
        ("flatten(0, -2), keepdim", notebook("fvu", fvu=_fvu_flatten)),
    ],
    "penalty": [
        ("vector norms to the power p", notebook("penalty", penalty=_pen_norms)),
        ("match on a flattened f", notebook("penalty", penalty=_pen_flat)),
        ("a dict of elementwise functions", notebook("penalty", penalty=_pen_dict)),
    ],
    "spliced_logits": [
        ("y_hat from a cached run, one hook", notebook("spliced_logits",
                                                      spliced_logits=_sp_one_hook)),
        ("encode then decode", notebook("spliced_logits", spliced_logits=_sp_encode_decode,
                                        loss_recovered=_ratio_tensor)),
        ("the model.hooks context manager", notebook("spliced_logits",
                                                      spliced_logits=_sp_context)),
    ],
    "animacy_correlation": [
        ("torch.corrcoef and nan_to_num",
         notebook("animacy_correlation", animacy_correlation=_corr_corrcoef)),
        ("standardised by std(unbiased=False)",
         notebook("animacy_correlation", animacy_correlation=_corr_std)),
        ("a loop over the features", notebook("animacy_correlation",
                                              animacy_correlation=_corr_loop)),
    ],
    "ablate_features": [
        ("a loop over the prompts", notebook("ablate_features",
                                             ablate_features=_ablate_with(_edit_loop))),
        ("a boolean mask and masked_fill", notebook("ablate_features",
                                                    ablate_features=_ablate_with(_edit_mask))),
        ("hooks written by hand with encode/decode",
         notebook("ablate_features", ablate_features=_ablate_own_hooks)),
    ],
}  # fmt: skip
