"""Lab 6 (learning dynamics): wrong answers a student might write, and other correct routes.

``MISTAKES[exercise]`` lists ``(name, function, hint)``: the check and the rubric must reject the
function, and the check's message must contain ``hint``. ``VALID[exercise]`` lists ``(name,
function)``: other correct implementations that both must accept. ``SOLUTIONS`` holds the lab's
own answers (the solution notebook's code).
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.func import functional_call, jacrev, vmap

Tensor = torch.Tensor


# ============================================================================ the solutions
def input_output_modes(x, y):
    sigma_yx = y.mT @ x / x.shape[0]  # (n_out, n_in)
    u, s, vh = torch.linalg.svd(sigma_yx, full_matrices=False)  # s descending
    return u, s, vh.mT  # (n_out, r), (r,), (n_in, r)


def two_layer_gradient_step(w1, w2, sigma_yx, lr):
    error = sigma_yx - w2 @ w1  # (n_out, n_in), at the old weights
    grad_w1 = -w2.mT @ error  # (hidden, n_in)
    grad_w2 = -error @ w1.mT  # (n_out, hidden)
    return w1 - lr * grad_w1, w2 - lr * grad_w2


def mode_strength(t, s, a0):
    decay = torch.exp(-2 * s * t)  # in (0, 1]: never overflows
    return s / (1 - decay + decay * s / a0)


def ntk_by_loop(model, x1, x2):
    params = [p for p in model.parameters() if p.requires_grad]

    def jacobian(x):  # (n, n_params): one row per input
        rows = []
        for xi in x:
            grads = torch.autograd.grad(model(xi[None]).sum(), params)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        return torch.stack(rows)

    return jacobian(x1) @ jacobian(x2).mT  # (n1, n2)


def arccos_ntk(x1, x2):
    d = x1.shape[1]
    z1 = torch.cat([x1 / math.sqrt(d), torch.ones_like(x1[:, :1])], dim=1)  # (n1, d + 1)
    z2 = torch.cat([x2 / math.sqrt(d), torch.ones_like(x2[:, :1])], dim=1)  # (n2, d + 1)
    dot = z1 @ z2.mT  # (n1, n2)
    norms = z1.norm(dim=1)[:, None] * z2.norm(dim=1)[None, :]
    cos = (dot / norms).clamp(-1, 1)
    phi = torch.arccos(cos)
    readout = norms * (torch.sin(phi) + (math.pi - phi) * cos) / (2 * math.pi)
    hidden = dot * (math.pi - phi) / (2 * math.pi)
    return readout + hidden


def kernel_predict(k_train, k_test_train, y, f0_train, f0_test, t):
    lam, q = torch.linalg.eigh(k_train)  # k_train = q diag(lam) q^T
    lam = lam.clamp_min(0)
    safe = torch.where(lam > 0, lam, torch.ones_like(lam))
    gain = torch.where(lam > 0, -torch.expm1(-lam * t) / safe, torch.full_like(lam, t))
    residual = q.mT @ (y - f0_train)  # (n,)
    return f0_test + k_test_train @ q @ (gain * residual)  # (m,)


def alignment(k, y):
    return (y @ k @ y) / (k.norm() * y.square().sum())


def modular_split(p, train_frac, seed):
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(p * p, generator=generator)
    n_train = round(train_frac * p * p)
    return order[:n_train], order[n_train:]


SOLUTIONS = {
    f.__name__: f
    for f in (
        input_output_modes,
        two_layer_gradient_step,
        mode_strength,
        ntk_by_loop,
        arccos_ntk,
        kernel_predict,
        alignment,
        modular_split,
    )
}


# ============================================================================ 1. input_output_modes
def modes_no_mean(x, y):
    u, s, vh = torch.linalg.svd(y.mT @ x, full_matrices=False)
    return u, s, vh.mT


def modes_ascending(x, y):
    u, s, vh = torch.linalg.svd(y.mT @ x / x.shape[0], full_matrices=False)
    return u.flip(1), s.flip(0), vh.mT.flip(1)


def modes_vh(x, y):
    return torch.linalg.svd(y.mT @ x / x.shape[0], full_matrices=False)


def modes_transposed_sigma(x, y):
    u, s, vh = torch.linalg.svd(x.mT @ y / x.shape[0], full_matrices=False)
    return u, s, vh.mT


def modes_full_matrices(x, y):
    u, s, vh = torch.linalg.svd(y.mT @ x / x.shape[0])
    return u, s, vh.mT


def modes_independent_eigh(x, y):
    sigma = y.mT @ x / x.shape[0]
    lam_u, u = torch.linalg.eigh(sigma @ sigma.mT)
    lam_v, v = torch.linalg.eigh(sigma.mT @ sigma)
    r = min(sigma.shape)
    s = lam_u.flip(0)[:r].clamp_min(0).sqrt()
    return u.flip(1)[:, :r], s, -v.flip(1)[:, :r]  # each side's signs chosen on its own


def modes_float32(x, y):
    u, s, vh = torch.linalg.svd((y.mT @ x / x.shape[0]).float(), full_matrices=False)
    return u, s, vh.mT


def modes_centres_in_place(x, y):
    x -= x.mean(0)  # centring the caller's data
    y -= y.mean(0)
    u, s, vh = torch.linalg.svd(y.mT @ x / x.shape[0], full_matrices=False)
    return u, s, vh.mT


def modes_numpy(x, y):
    sigma = (y.mT @ x / x.shape[0]).numpy()
    u, s, vh = np.linalg.svd(sigma, full_matrices=False)
    return u, s, vh.T


def modes_valid_torch_svd(x, y):
    u, s, v = torch.svd(torch.einsum("po,pi->oi", y, x) / x.shape[0])  # V itself, reduced
    return u, s, v


def modes_valid_eigh(x, y):
    sigma = y.mT @ x / x.shape[0]  # (n_out, n_in)
    if sigma.shape[0] <= sigma.shape[1]:
        lam, u = torch.linalg.eigh(sigma @ sigma.mT)  # ascending
        u, s = u.flip(1), lam.flip(0).clamp_min(0).sqrt()
        return u, s, sigma.mT @ u / s
    lam, v = torch.linalg.eigh(sigma.mT @ sigma)
    v, s = v.flip(1), lam.flip(0).clamp_min(0).sqrt()
    return sigma @ v / s, s, v


def modes_valid_flipped_signs(x, y):
    u, s, vh = torch.linalg.svd(y.mT @ x / len(x), full_matrices=False)
    return -u, s, -vh.mT  # both signs of a pair flipped: the same modes


def modes_numpy_roundtrip(x, y):
    sigma = (y.mT @ x / x.shape[0]).detach()
    u, s, vh = np.linalg.svd(sigma.cpu().numpy(), full_matrices=False)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (u, s, vh.T))  # on the CPU


def modes_valid_sign_convention(x, y):
    u, s, vh = torch.linalg.svd(torch.einsum("po,pi->oi", y, x) / x.shape[0], full_matrices=False)
    sign = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))  # (1, r): largest entry > 0
    return u * sign, s, vh.mT * sign


# ============================================================================ 2. gradient step
def step_sequential(w1, w2, sigma_yx, lr):
    w1_new = w1 + lr * w2.mT @ (sigma_yx - w2 @ w1)
    w2_new = w2 + lr * (sigma_yx - w2 @ w1_new) @ w1_new.mT  # uses the new w1
    return w1_new, w2_new


def step_sign(w1, w2, sigma_yx, lr):
    error = sigma_yx - w2 @ w1
    return w1 - lr * w2.mT @ error, w2 - lr * error @ w1.mT


def step_missing_transpose(w1, w2, sigma_yx, lr):
    error = sigma_yx - w2 @ w1
    return w1 + lr * w2.mT @ error, w2 + lr * error @ w1  # W1^T forgotten


def step_factor_two(w1, w2, sigma_yx, lr):
    error = sigma_yx - w2 @ w1
    return w1 + 2 * lr * w2.mT @ error, w2 + 2 * lr * error @ w1.mT


def step_in_place(w1, w2, sigma_yx, lr):
    error = sigma_yx - w2 @ w1
    g1, g2 = w2.mT @ error, error @ w1.mT
    w1 += lr * g1
    w2 += lr * g2
    return w1, w2


def step_float32(w1, w2, sigma_yx, lr):
    error = (sigma_yx - w2 @ w1).float()
    return (w1 + lr * w2.mT @ error).float(), (w2 + lr * error @ w1.mT).float()


def step_autograd(w1, w2, sigma_yx, lr):
    a, b = w1.clone().requires_grad_(True), w2.clone().requires_grad_(True)
    loss = 0.5 * (sigma_yx - b @ a).square().sum()
    g1, g2 = torch.autograd.grad(loss, (a, b))
    return w1 - lr * g1, w2 - lr * g2


def step_valid_einsum(w1, w2, sigma_yx, lr):
    error = sigma_yx - torch.einsum("oh,hi->oi", w2, w1)
    return (
        w1 + lr * torch.einsum("oh,oi->hi", w2, error),
        w2 + lr * torch.einsum("oi,hi->oh", error, w1),
    )


def step_valid_addmm(w1, w2, sigma_yx, lr):
    error = torch.addmm(sigma_yx, w2, w1, alpha=-1)
    return torch.addmm(w1, w2.T, error, alpha=lr), torch.addmm(w2, error, w1.T, alpha=lr)


def step_valid_gradients_first(w1, w2, sigma_yx, lr):
    grads = [-w2.T @ (sigma_yx - w2 @ w1), -(sigma_yx - w2 @ w1) @ w1.T]
    return tuple(w - lr * g for w, g in zip((w1, w2), grads, strict=True))


def step_valid_clone_then_in_place(w1, w2, sigma_yx, lr):
    error = sigma_yx - w2 @ w1
    a, b = w1.clone(), w2.clone()
    a.add_(w2.T @ error, alpha=lr)
    b.add_(error @ w1.T, alpha=lr)
    return a, b


# ============================================================================ 3. mode strength
def strength_naive(t, s, a0):
    grow = torch.exp(2 * s * t)
    return s * grow / (grow - 1 + s / a0)


def strength_no_two(t, s, a0):
    decay = torch.exp(-s * t)
    return s / (1 - decay + decay * s / a0)


def strength_depth_one(t, s, a0):
    return s - (s - a0) * torch.exp(-t)


def strength_swapped(t, s, a0):
    decay = torch.exp(-2 * s * t)
    return s / (1 - decay + decay * a0 / s)


def strength_python_loop(t, s, a0):
    values = [
        s / (1 - math.exp(-2 * s * v) + math.exp(-2 * s * v) * s / a0) for v in t.flatten().tolist()
    ]
    return torch.tensor(values).reshape(t.shape)  # float32 on the CPU


def strength_float64(t, s, a0):
    decay = torch.exp(-2 * torch.tensor(s, dtype=torch.float64) * t.double())
    return s / (1 - decay + decay * s / a0)


def strength_cpu_buffer(t, s, a0):
    out = torch.empty(t.shape, dtype=t.dtype)  # on the CPU, whatever t's device
    out[...] = s / (1 - torch.exp(-2 * s * t) + torch.exp(-2 * s * t) * s / a0)
    return out


def strength_valid_sigmoid(t, s, a0):
    return s * torch.sigmoid(2 * s * t + math.log(a0 / (s - a0)))


def strength_valid_rearranged(t, s, a0):
    return s / (1 + (s / a0 - 1) * torch.exp(-2 * s * t))


def strength_valid_clamped_exponent(t, s, a0):
    grow = torch.exp((2 * s * t).clamp(max=50.0))  # e^{100}: 1 - a0/s is lost below it
    naive = s * grow / (grow - 1 + s / a0)
    return torch.where(
        2 * s * t > 50.0, torch.full_like(t, s) * (1 - (s / a0 - 1) * torch.exp(-2 * s * t)), naive
    )


# ============================================================================ 4. NTK by a loop
def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def ntk_batch_sum(model, x1, x2):
    g1 = torch.autograd.grad(model(x1).sum(), _params(model))
    g2 = torch.autograd.grad(model(x2).sum(), _params(model))
    value = sum((a * b).sum() for a, b in zip(g1, g2, strict=True))
    return value * torch.ones(x1.shape[0], x2.shape[0], dtype=x1.dtype, device=x1.device)


def ntk_backward_accumulates(model, x1, x2):
    def rows(x):
        out = []
        for xi in x:
            model(xi[None]).sum().backward()  # .grad accumulates over the loop
            out.append(torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()]))
        return torch.stack(out)

    return rows(x1) @ rows(x2).mT


def ntk_backward_zeroed(model, x1, x2):
    def rows(x):
        out = []
        for xi in x:
            model.zero_grad()
            model(xi[None]).sum().backward()
            out.append(torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()]))
        return torch.stack(out)

    return rows(x1) @ rows(x2).mT  # right values, but .grad is left set


def ntk_weights_only(model, x1, x2):
    def rows(x):
        return torch.stack(
            [torch.autograd.grad(model(xi[None]).sum(), model.weight)[0].reshape(-1) for xi in x]
        )

    return rows(x1) @ rows(x2).mT


def ntk_cpu_float32_buffer(model, x1, x2):
    kernel = torch.zeros(x1.shape[0], x2.shape[0])  # float32 on the CPU
    for i, a in enumerate(x1):
        ga = torch.autograd.grad(model(a[None]).sum(), _params(model))
        for j, b in enumerate(x2):
            gb = torch.autograd.grad(model(b[None]).sum(), _params(model))
            kernel[i, j] = sum((u * v).sum() for u, v in zip(ga, gb, strict=True))
    return kernel


def ntk_cpu_buffer(model, x1, x2):
    kernel = torch.zeros(x1.shape[0], x2.shape[0], dtype=x1.dtype)  # the device is forgotten
    for i, a in enumerate(x1):
        ga = torch.autograd.grad(model(a[None]).sum(), _params(model))
        for j, b in enumerate(x2):
            gb = torch.autograd.grad(model(b[None]).sum(), _params(model))
            kernel[i, j] = sum((u * v).sum() for u, v in zip(ga, gb, strict=True))
    return kernel


def ntk_input_gradients(model, x1, x2):
    def rows(x):
        out = []
        for xi in x:
            xi = xi[None].clone().requires_grad_(True)
            out.append(torch.autograd.grad(model(xi).sum(), xi)[0].reshape(-1))
        return torch.stack(out)

    return rows(x1) @ rows(x2).mT


def ntk_x1_only(model, x1, x2):
    return ntk_by_loop(model, x1, x1)


def ntk_valid_func(model, x1, x2):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, xi):
        return functional_call(model, p, (xi[None],)).sum()

    def flat(x):
        jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)
        return torch.cat([j.reshape(x.shape[0], -1) for j in jac.values()], dim=1)

    return flat(x1) @ flat(x2).mT


def ntk_valid_double_loop(model, x1, x2):
    params = _params(model)
    grads1 = [torch.autograd.grad(model(a[None]).sum(), params) for a in x1]
    grads2 = [torch.autograd.grad(model(b[None]).sum(), params) for b in x2]
    rows = [
        torch.stack([sum((u * v).sum() for u, v in zip(ga, gb, strict=True)) for gb in grads2])
        for ga in grads1
    ]
    return torch.stack(rows)


def ntk_valid_backward_restored(model, x1, x2):
    saved = [p.grad for p in model.parameters()]

    def rows(x):
        out = []
        for xi in x:
            for p in model.parameters():
                p.grad = None
            model(xi[None]).sum().backward()
            out.append(torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()]))
        return torch.stack(out)

    kernel = rows(x1) @ rows(x2).mT
    for p, g in zip(model.parameters(), saved, strict=True):
        p.grad = g
    return kernel


# ============================================================================ 5. arc-cosine NTK
def _augment(x, scale=True, bias=True):
    d = x.shape[1]
    z = x / math.sqrt(d) if scale else x
    return torch.cat([z, torch.ones_like(x[:, :1])], dim=1) if bias else z


def _arccos(z1, z2, clamp=True, terms=(True, True), norm=2 * math.pi):
    dot = z1 @ z2.mT
    norms = z1.norm(dim=1)[:, None] * z2.norm(dim=1)[None, :]
    cos = dot / norms
    if clamp:
        cos = cos.clamp(-1, 1)
    phi = torch.arccos(cos)
    readout = norms * (torch.sin(phi) + (math.pi - phi) * cos) / norm
    hidden = dot * (math.pi - phi) / norm
    return terms[0] * readout + terms[1] * hidden


def arccos_no_clamp(x1, x2):
    return _arccos(_augment(x1), _augment(x2), clamp=False)


def arccos_no_bias(x1, x2):
    return _arccos(_augment(x1, bias=False), _augment(x2, bias=False))


def arccos_no_scale(x1, x2):
    return _arccos(_augment(x1, scale=False), _augment(x2, scale=False))


def arccos_readout_only(x1, x2):
    return _arccos(_augment(x1), _augment(x2), terms=(True, False))


def arccos_hidden_only(x1, x2):
    return _arccos(_augment(x1), _augment(x2), terms=(False, True))


def arccos_one_over_pi(x1, x2):
    return _arccos(_augment(x1), _augment(x2), norm=math.pi)


def arccos_cpu_ones(x1, x2):
    d = x1.shape[1]
    z1 = torch.cat([x1 / math.sqrt(d), torch.ones(x1.shape[0], 1, dtype=x1.dtype)], dim=1)
    z2 = torch.cat([x2 / math.sqrt(d), torch.ones(x2.shape[0], 1, dtype=x2.dtype)], dim=1)
    return _arccos(z1, z2)


def arccos_valid_atan2(x1, x2):
    z1, z2 = _augment(x1), _augment(x2)
    dot = z1 @ z2.mT
    n1, n2 = z1.norm(dim=1)[:, None], z2.norm(dim=1)[None, :]
    sin_norms = ((n1 * n2).square() - dot.square()).clamp_min(0).sqrt()  # ||z|| ||z'|| sin phi
    phi = torch.atan2(sin_norms, dot)
    return (sin_norms + (math.pi - phi) * dot) / (2 * math.pi) + dot * (math.pi - phi) / (
        2 * math.pi
    )


def arccos_valid_normalize(x1, x2):
    z1, z2 = _augment(x1), _augment(x2)
    cos = torch.einsum(
        "ik,jk->ij",
        torch.nn.functional.normalize(z1, dim=1),
        torch.nn.functional.normalize(z2, dim=1),
    )
    phi = torch.arccos(cos.clamp(-1.0, 1.0))
    norms = torch.outer(z1.norm(dim=1), z2.norm(dim=1))
    return (norms * torch.sin(phi) + 2 * (math.pi - phi) * norms * cos) / (2 * math.pi)


def arccos_valid_where(x1, x2):
    z1, z2 = _augment(x1), _augment(x2)
    dot = z1 @ z2.mT
    norms = z1.norm(dim=1)[:, None] * z2.norm(dim=1)[None, :]
    cos = torch.where(dot / norms > 1, torch.ones_like(dot), dot / norms)
    cos = torch.where(cos < -1, -torch.ones_like(cos), cos)
    phi = torch.arccos(cos)
    return (
        norms * (torch.sin(phi) + (math.pi - phi) * cos) / (2 * math.pi)
        + dot * (1 - phi / math.pi) / 2
    )


# ============================================================================ 6. kernel prediction
def predict_elementwise_exp(k_train, k_test_train, y, f0_train, f0_test, t):
    residual = y - f0_train
    return f0_test + k_test_train @ torch.linalg.pinv(k_train) @ (
        residual - torch.exp(-k_train * t) @ residual
    )


def predict_no_f0(k_train, k_test_train, y, f0_train, f0_test, t):
    lam, q = torch.linalg.eigh(k_train)
    lam = lam.clamp_min(0)
    gain = torch.where(lam > 0, -torch.expm1(-lam * t) / torch.where(lam > 0, lam, 1.0), t)
    return k_test_train @ q @ (gain * (q.mT @ y))


def predict_no_f0_test(k_train, k_test_train, y, f0_train, f0_test, t):
    return kernel_predict(k_train, k_test_train, y, f0_train, f0_test, t) - f0_test


def predict_solve(k_train, k_test_train, y, f0_train, f0_test, t):
    n = k_train.shape[0]
    eye = torch.eye(n, dtype=k_train.dtype, device=k_train.device)
    decay = torch.linalg.matrix_exp(-k_train * t)
    return f0_test + k_test_train @ torch.linalg.solve(k_train, (eye - decay) @ (y - f0_train))


def predict_no_time(k_train, k_test_train, y, f0_train, f0_test, t):
    return kernel_predict(k_train, k_test_train, y, f0_train, f0_test, 1.0)


def predict_cpu_eye(k_train, k_test_train, y, f0_train, f0_test, t):
    eye = torch.eye(k_train.shape[0], dtype=k_train.dtype)  # the device is forgotten
    decay = torch.linalg.matrix_exp(-k_train * t)
    return f0_test + k_test_train @ torch.linalg.pinv(k_train) @ ((eye - decay) @ (y - f0_train))


def predict_float64(k_train, k_test_train, y, f0_train, f0_test, t):
    args = (a.double() for a in (k_train, k_test_train, y, f0_train, f0_test))
    return kernel_predict(*args, t)


def predict_valid_matrix_exp_pinv(k_train, k_test_train, y, f0_train, f0_test, t):
    eye = torch.eye(k_train.shape[0], dtype=k_train.dtype, device=k_train.device)
    decay = torch.linalg.matrix_exp(-t * k_train)
    return f0_test + k_test_train @ torch.linalg.pinv(k_train, hermitian=True) @ (eye - decay) @ (
        y - f0_train
    )


def predict_valid_lstsq(k_train, k_test_train, y, f0_train, f0_test, t):
    lam, q = torch.linalg.eigh(k_train)
    moved = q @ (-torch.expm1(-lam.clamp_min(0) * t) * (q.mT @ (y - f0_train)))  # (I - e^{-Kt}) r
    coef = torch.linalg.lstsq(k_train, moved[:, None], driver="gelsd").solution[:, 0]
    return f0_test + k_test_train @ coef


def predict_valid_eig_loop(k_train, k_test_train, y, f0_train, f0_test, t):
    lam, q = torch.linalg.eigh(k_train)
    out = f0_test.clone()
    residual = y - f0_train
    for i in range(lam.shape[0]):
        weight = t if lam[i] <= 1e-12 * lam[-1] else (1 - torch.exp(-lam[i] * t)) / lam[i]
        out = out + weight * (q[:, i] @ residual) * (k_test_train @ q[:, i])
    return out


# ============================================================================ 7. alignment
def alignment_norm_not_squared(k, y):
    return (y @ k @ y) / (k.norm() * y.norm())


def alignment_trace(k, y):
    return (y @ k @ y) / (torch.trace(k) * y.square().sum())


def alignment_unnormalised(k, y):
    return y @ k @ y


def alignment_item(k, y):
    return ((y @ k @ y) / (k.norm() * y.square().sum())).item()


def alignment_centred(k, y):
    yc = y - y.mean()
    return (yc @ k @ yc) / (k.norm() * yc.square().sum())


def alignment_float64(k, y):
    k, y = k.double(), y.double()
    return (y @ k @ y) / (k.norm() * y.square().sum())


def alignment_valid_outer(k, y):
    target = torch.outer(y, y)
    return (k * target).sum() / (torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(target))


def alignment_valid_einsum(k, y):
    return torch.einsum("i,ij,j->", y, k, y) / (k.pow(2).sum().sqrt() * (y @ y))


def alignment_valid_cosine(k, y):
    return torch.nn.functional.cosine_similarity(
        k.reshape(-1), torch.outer(y, y).reshape(-1), dim=0
    )


# ============================================================================ 8. the split
def split_global_rng(p, train_frac, seed):
    torch.manual_seed(seed)
    order = torch.randperm(p * p)
    n_train = round(train_frac * p * p)
    return order[:n_train], order[n_train:]


def split_truncates(p, train_frac, seed):
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = int(train_frac * p * p)
    return order[:n_train], order[n_train:]


def split_no_shuffle(p, train_frac, seed):
    order = torch.arange(p * p)
    n_train = round(train_frac * p * p)
    return order[:n_train], order[n_train:]


def split_with_replacement(p, train_frac, seed):
    g = torch.Generator().manual_seed(seed)
    n_train = round(train_frac * p * p)
    return torch.randint(0, p * p, (n_train,), generator=g), torch.randint(
        0, p * p, (p * p - n_train,), generator=g
    )


def split_unseeded_generator(p, train_frac, seed):
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(random.getrandbits(32)))
    n_train = round(train_frac * p * p)
    return order[:n_train], order[n_train:]


def split_lists(p, train_frac, seed):
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed)).tolist()
    n_train = round(train_frac * p * p)
    return order[:n_train], order[n_train:]


def split_ignores_seed(p, train_frac, seed):
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(0))
    n_train = round(train_frac * p * p)
    return order[:n_train], order[n_train:]


def split_int32(p, train_frac, seed):
    order = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed), dtype=torch.int32)
    n_train = round(train_frac * p * p)
    return order[:n_train], order[n_train:]


def split_valid_argsort(p, train_frac, seed):
    keys = torch.rand(p * p, generator=torch.Generator().manual_seed(seed))
    order = keys.argsort()
    n_train = round(train_frac * p * p)
    return order[:n_train], order[n_train:]


def split_valid_numpy(p, train_frac, seed):
    order = torch.from_numpy(np.random.default_rng(seed).permutation(p * p)).long()
    n_train = round(train_frac * p * p)
    return order[:n_train].sort().values, order[n_train:].sort().values


def split_valid_python_random(p, train_frac, seed):
    n_train = round(train_frac * p * p)
    chosen = sorted(random.Random(seed).sample(range(p * p), n_train))
    mask = torch.zeros(p * p, dtype=torch.bool)
    mask[chosen] = True
    return torch.nonzero(mask).flatten(), torch.nonzero(~mask).flatten()


# ============================================================================ the catalogue
MISTAKES = {
    "input_output_modes": [
        ("Sigma_yx not divided by P", modes_no_mean, "divide y^T x by P"),
        ("singular values in ascending order", modes_ascending, "descending order"),
        ("returns Vh (V^T) instead of V", modes_vh, "V^T"),
        ("x^T y instead of y^T x", modes_transposed_sigma, "shape"),
        ("full_matrices=True", modes_full_matrices, "full_matrices=False"),
        (
            "U and V from separate eigendecompositions (signs do not match)",
            modes_independent_eigh,
            "go together",
        ),
        ("returns float32 for float64 input", modes_float32, "dtype"),
        ("centres x and y in place", modes_centres_in_place, "modified its input"),
        ("returns NumPy arrays", modes_numpy, "torch.Tensor"),
        ("SVD through NumPy, results left on the CPU", modes_numpy_roundtrip, "meta"),
    ],
    "two_layer_gradient_step": [
        ("sequential update (w2 from the new w1)", step_sequential, "simultaneous update"),
        ("sign error (ascends the loss)", step_sign, "sign error"),
        ("missing transpose of W1 in dL/dW2", step_missing_transpose, "shape error"),
        ("factor 2 in the gradient", step_factor_two, "factor 2"),
        ("modifies w1 and w2 in place", step_in_place, "modified its input"),
        ("returns float32", step_float32, "dtype"),
        ("uses autograd (forbidden: runs under no_grad)", step_autograd, "autograd switched off"),
    ],
    "mode_strength": [
        ("naive e^{2st}: inf / inf = NaN for large t", strength_naive, "overflows"),
        ("exponent s t instead of 2 s t", strength_no_two, "2 s t"),
        ("depth-1 formula", strength_depth_one, "depth-1"),
        ("s/a0 and a0/s swapped", strength_swapped, "not a0/s"),
        ("Python loop with math.exp (float32, CPU)", strength_python_loop, "dtype"),
        ("computes in float64 (float32 input)", strength_float64, "dtype"),
        ("output buffer created on the CPU", strength_cpu_buffer, "meta"),
    ],
    "ntk_by_loop": [
        (
            "gradient of the batch sum (one gradient for all samples)",
            ntk_batch_sum,
            "one gradient per sample",
        ),
        (".backward() accumulating into .grad", ntk_backward_accumulates, ".grad"),
        (".backward() with zero_grad, .grad left set", ntk_backward_zeroed, ".grad"),
        ("first-layer weights only", ntk_weights_only, "a parameter is missing"),
        ("float32 CPU buffer (torch.zeros(n1, n2))", ntk_cpu_float32_buffer, "dtype"),
        ("buffer on the CPU (device forgotten)", ntk_cpu_buffer, "meta"),
        ("gradients with respect to the inputs", ntk_input_gradients, "not the inputs x"),
        ("ignores x2 (kernel of x1 with itself)", ntk_x1_only, "shape"),
    ],
    "arccos_ntk": [
        ("no clamp: NaN on the diagonal", arccos_no_clamp, "clamp cos"),
        ("no bias coordinate in z", arccos_no_bias, "bias coordinate"),
        ("no 1/sqrt(d) scaling", arccos_no_scale, "sqrt(d)"),
        ("readout term only", arccos_readout_only, "AND the hidden layer"),
        ("hidden-layer term only", arccos_hidden_only, "AND the readout"),
        ("1/pi instead of 1/(2 pi)", arccos_one_over_pi, "1 / (2 pi)"),
        ("ones created on the CPU", arccos_cpu_ones, "meta"),
    ],
    "kernel_predict": [
        (
            "elementwise exp instead of the matrix exponential",
            predict_elementwise_exp,
            "matrix exponential",
        ),
        ("forgets f0 entirely", predict_no_f0, "starts at f0"),
        ("forgets f0_test", predict_no_f0_test, "add f0_test"),
        ("solves with a singular kernel", predict_solve, "singular"),
        ("ignores t", predict_no_time, "e^{-Theta t}"),
        ("identity created on the CPU", predict_cpu_eye, "meta"),
        ("computes in float64 (float32 input)", predict_float64, "dtype"),
    ],
    "alignment": [
        ("divides by ||y|| instead of ||y||^2", alignment_norm_not_squared, "squared norm"),
        ("trace instead of the Frobenius norm", alignment_trace, "not the trace"),
        ("no normalisation", alignment_unnormalised, "cosine"),
        ("returns a Python float (.item())", alignment_item, "0-d torch.Tensor"),
        ("centres y", alignment_centred, "centred alignment"),
        ("computes in float64 (float32 input)", alignment_float64, "dtype"),
    ],
    "modular_split": [
        ("torch.manual_seed: global RNG", split_global_rng, "global random state"),
        ("int() truncates n_train", split_truncates, "round"),
        ("no shuffle", split_no_shuffle, "contiguous block"),
        ("indices drawn with replacement", split_with_replacement, "exactly once"),
        ("generator not seeded with seed", split_unseeded_generator, "same seed gave different"),
        ("returns Python lists", split_lists, "torch.Tensor"),
        ("seed ignored (always 0)", split_ignores_seed, "seed + 1 gave the same split"),
        ("int32 indices", split_int32, "int64"),
    ],
}

VALID = {
    "input_output_modes": [
        ("torch.svd (returns V) with einsum", modes_valid_torch_svd),
        ("eigh of the smaller Gram matrix, V = Sigma^T U / s", modes_valid_eigh),
        ("both signs of every pair flipped", modes_valid_flipped_signs),
        ("a sign convention (largest entry of u_a positive)", modes_valid_sign_convention),
    ],
    "two_layer_gradient_step": [
        ("einsum", step_valid_einsum),
        ("torch.addmm", step_valid_addmm),
        ("gradients first, then a loop", step_valid_gradients_first),
        ("in-place on clones", step_valid_clone_then_in_place),
    ],
    "mode_strength": [
        ("logistic form s sigmoid(2 s t + logit(a0 / s))", strength_valid_sigmoid),
        ("s / (1 + (s/a0 - 1) e^{-2st})", strength_valid_rearranged),
        (
            "naive form with a clamped exponent and its large-t limit",
            strength_valid_clamped_exponent,
        ),
    ],
    "ntk_by_loop": [
        ("torch.func vmap(jacrev)", ntk_valid_func),
        ("double loop over pairs", ntk_valid_double_loop),
        (".backward() with .grad restored", ntk_valid_backward_restored),
    ],
    "arccos_ntk": [
        ("atan2 for the angle (no clamp needed)", arccos_valid_atan2),
        ("F.normalize and einsum", arccos_valid_normalize),
        ("torch.where instead of clamp", arccos_valid_where),
    ],
    "kernel_predict": [
        ("matrix_exp and the pseudo-inverse", predict_valid_matrix_exp_pinv),
        ("least squares (gelsd)", predict_valid_lstsq),
        ("a loop over eigenpairs", predict_valid_eig_loop),
    ],
    "alignment": [
        ("outer product and matrix norms", alignment_valid_outer),
        ("einsum", alignment_valid_einsum),
        ("cosine similarity of the flattened matrices", alignment_valid_cosine),
    ],
    "modular_split": [
        ("argsort of seeded uniform keys", split_valid_argsort),
        ("NumPy default_rng permutation, sorted halves", split_valid_numpy),
        ("random.Random(seed).sample and a mask", split_valid_python_random),
    ],
}
