"""Lab 3 (attribution methods): wrong answers a student might write, and other correct routes.

``MISTAKES[exercise]`` lists ``(name, function, hint)``: the check and the rubric must reject the
function, and the check's message must contain ``hint``. ``VALID[exercise]`` lists ``(name,
function)``: other correct implementations that both must accept. ``SOLUTIONS`` holds the lab's
own answers (the solution notebook's code). ``gradient_x_input`` may call the student's
``saliency``: :func:`mistakes.notebook` writes such entries beside a right or a wrong ``saliency``,
and the check and the rubric run them with labcore's ``saliency`` in its place.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import torch
from torch import nn

from mistakes import notebook

Tensor = torch.Tensor


# ============================================================================ the lab's helpers
def select(out, target):
    if target is None:
        return out.reshape(-1)
    if isinstance(target, int):
        return out[:, target]
    return out.gather(1, target.view(-1, 1)).squeeze(1)


def coalition_values(model, x, baseline, target, masks):
    batch, n = x.shape
    z = torch.where(masks.unsqueeze(1), x, baseline.expand_as(x))  # (n_masks, batch, n)
    tiled = target.repeat(len(masks)) if isinstance(target, torch.Tensor) else target
    with torch.no_grad():
        return select(model(z.reshape(-1, n)), tiled).view(len(masks), batch)


def all_coalitions(n, device=None):
    codes = torch.arange(2**n, device=device)
    return ((codes.unsqueeze(1) >> torch.arange(n, device=device)) & 1).bool()


# ============================================================================ the solutions
def saliency(model, x, target=None):
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(select(model(x), target).sum(), x)
    return grad.abs()


def gradient_x_input(model, x, target=None):
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(select(model(x), target).sum(), x)
    return x.detach() * grad


def integrated_gradients(model, x, baseline, target=None, steps=64):
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps  # (steps,)
    diff = x - baseline  # (batch, n_features)
    path = baseline + alphas.view(-1, 1, 1) * diff  # (steps, batch, n_features)
    batch, n = x.shape
    tiled = target.repeat(steps) if isinstance(target, torch.Tensor) else target
    points = path.reshape(steps * batch, n).detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(select(model(points), tiled).sum(), points)
    attributions = diff * grads.view(steps, batch, n).mean(0)
    with torch.no_grad():
        gain = select(model(x), target) - select(model(baseline.expand_as(x)), target)
    return attributions, attributions.sum(1) - gain


def shapley_exact(model, x, baseline, target=None):
    n = x.shape[1]
    masks = all_coalitions(n, x.device)  # (2^n, n)
    v = coalition_values(model, x, baseline, target, masks)  # (2^n, batch)
    codes = torch.arange(2**n, device=x.device)
    size = masks.sum(1)  # |S|
    weight = torch.tensor(
        [1 / (n * math.comb(n - 1, s)) for s in range(n)], dtype=x.dtype, device=x.device
    )
    phi = torch.zeros_like(x)
    for i in range(n):
        without = codes[~masks[:, i]]  # the coalitions S without i
        with_i = without | (1 << i)  # S u {i}
        phi[:, i] = (weight[size[without]].unsqueeze(1) * (v[with_i] - v[without])).sum(0)
    return phi


def shapley_permutations(model, x, baseline, perms, target=None):
    m, n = perms.shape
    rank = perms.argsort(1)  # rank[j, i]: position of feature i in permutation j
    sizes = torch.arange(n + 1, device=x.device)
    masks = (rank.unsqueeze(1) < sizes.view(1, -1, 1)).reshape(m * (n + 1), n)
    v = coalition_values(model, x, baseline, target, masks).view(m, n + 1, -1)
    marginal = v[:, 1:] - v[:, :-1]  # (m, n, batch): contribution of the k-th feature added
    by_feature = marginal.gather(1, rank.unsqueeze(2).expand_as(marginal))
    return by_feature.mean(0).T.to(x.dtype)


def relu_moments(mean, var):
    random = var > 0
    sigma = torch.where(random, var, torch.ones_like(var)).sqrt()
    r = mean / sigma
    cdf = torch.special.ndtr(r)
    pdf = torch.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
    first = mean * cdf + sigma * pdf
    second = (mean**2 + sigma**2) * cdf + mean * sigma * pdf
    mean_out = torch.where(random, first, mean.clamp_min(0))
    var_out = torch.where(random, (second - first**2).clamp_min(0), torch.zeros_like(var))
    return mean_out, var_out


def table_gaps(table, x):
    gxi = (table["gradient_x_input"].abs() - table["saliency"] * x.abs()).abs().max()
    ig = (table["integrated_gradients"].sum() - table["shapley"].sum()).abs()
    return {"gxi_vs_saliency": gxi.item(), "ig_vs_shapley": ig.item()}


def cascading_randomization(model, generator):
    models = [copy.deepcopy(model)]
    current = copy.deepcopy(model)
    for layer in reversed(current.layers):
        with torch.no_grad():
            s = layer.weight.std()
            for p in (layer.weight, layer.bias):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) * s)
        models.append(copy.deepcopy(current))
    return models


SOLUTIONS = {
    f.__name__: f
    for f in (
        saliency,
        gradient_x_input,
        integrated_gradients,
        shapley_exact,
        shapley_permutations,
        relu_moments,
        table_gaps,
        cascading_randomization,
    )
}


def _grad(model, x, target):
    z = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(select(model(z), target).sum(), z)
    return g


# ============================================================================ 1. saliency
def saliency_signed(model, x, target=None):
    return _grad(model, x, target)


def saliency_requires_grad_on_x(model, x, target=None):
    x.requires_grad_(True)  # the caller's tensor
    (grad,) = torch.autograd.grad(select(model(x), target).sum(), x)
    return grad.abs()


def saliency_backward_on_x(model, x, target=None):
    x.requires_grad_(True)
    select(model(x), target).sum().backward()
    return x.grad.abs()


def saliency_all_outputs(model, x, target=None):
    z = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(z).sum(), z)
    return grad.abs()


def saliency_times_x(model, x, target=None):
    return (x * _grad(model, x, target)).abs()


def saliency_mean_over_batch(model, x, target=None):
    z = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(select(model(z), target).mean(), z)
    return grad.abs()


def saliency_numpy(model, x, target=None):
    return _grad(model, x, target).abs().cpu().numpy()


def saliency_float32(model, x, target=None):
    return _grad(model, x, target).abs().float()


def saliency_backward_on_clone(model, x, target=None):
    z = x.detach().clone().requires_grad_(True)
    select(model(z), target).sum().backward()
    return z.grad.abs()


def saliency_loop(model, x, target=None):
    rows = []
    for b in range(x.shape[0]):
        t = target[b : b + 1] if isinstance(target, torch.Tensor) else target
        rows.append(_grad(model, x[b : b + 1], t)[0].abs())
    return torch.stack(rows)


def saliency_vjp(model, x, target=None):
    def f(z):
        return select(model(z), target)

    _, grad = torch.autograd.functional.vjp(
        f, x, torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    )
    return grad.abs()


# ============================================================================ 2. gradient x input
def gxi_abs(model, x, target=None):
    return (x * _grad(model, x, target)).abs()


def gxi_gradient_only(model, x, target=None):
    return _grad(model, x, target)


def gxi_requires_grad_on_x(model, x, target=None):
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(select(model(x), target).sum(), x)
    return x.detach() * grad


def gxi_all_outputs(model, x, target=None):
    z = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(z).sum(), z)
    return x * grad


def gxi_double(model, x, target=None):
    return x.double() * _grad(model, x, target).double()


def gxi_list(model, x, target=None):
    return (x * _grad(model, x, target)).tolist()


def gxi_backward(model, x, target=None):
    z = x.detach().clone().requires_grad_(True)
    select(model(z), target).sum().backward()
    return x * z.grad


def gxi_jacobian_rows(model, x, target=None):
    rows = []
    for b in range(x.shape[0]):
        t = target if not isinstance(target, torch.Tensor) else int(target[b])

        def f(z, t=t):
            out = model(z[None])[0]
            return out.reshape(()) if t is None else out[t]

        rows.append(torch.autograd.functional.jacobian(f, x[b]) * x[b])
    return torch.stack(rows)


def gxi_sign_times_saliency(model, x, target=None):
    z = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(select(model(z), target).sum(), z)
    return x.detach() * torch.sign(grad) * saliency(model, x, target)  # |gradient|: exercise 1


def gxi_grad_outputs(model, x, target=None):
    z = x.detach().requires_grad_(True)
    out = model(z)
    if target is None:
        weights = torch.ones_like(out)
    else:
        index = torch.as_tensor(target, device=x.device).expand(x.shape[0]).view(-1, 1)
        weights = torch.zeros_like(out).scatter(1, index, 1.0)
    (grad,) = torch.autograd.grad(out, z, grad_outputs=weights)
    return z.detach() * grad


# ============================================================================ 3. integrated gradients
def _ig_with(model, x, baseline, target, alphas, weights):
    diff = x - baseline
    total = torch.zeros_like(x)
    for a, w in zip(alphas.tolist(), weights.tolist(), strict=True):
        total = total + w * _grad(model, baseline + a * diff, target)
    attributions = diff * total
    with torch.no_grad():
        gain = select(model(x), target) - select(model(baseline.expand_as(x)), target)
    return attributions, attributions.sum(1) - gain


def ig_left(model, x, baseline, target=None, steps=64):
    a = torch.arange(steps, dtype=torch.float64) / steps
    return _ig_with(model, x, baseline, target, a, torch.full((steps,), 1 / steps))


def ig_right(model, x, baseline, target=None, steps=64):
    a = (torch.arange(steps, dtype=torch.float64) + 1) / steps
    return _ig_with(model, x, baseline, target, a, torch.full((steps,), 1 / steps))


def ig_linspace(model, x, baseline, target=None, steps=64):
    a = torch.linspace(0, 1, steps, dtype=torch.float64)
    return _ig_with(model, x, baseline, target, a, torch.full((steps,), 1 / steps))


def ig_no_diff(model, x, baseline, target=None, steps=64):
    attributions, _ = integrated_gradients(model, x, baseline, target, steps)
    return attributions / (x - baseline), integrated_gradients(model, x, baseline, target, steps)[1]


def ig_delta_reversed(model, x, baseline, target=None, steps=64):
    attributions, delta = integrated_gradients(model, x, baseline, target, steps)
    return attributions, -delta


def ig_delta_sum_only(model, x, baseline, target=None, steps=64):
    attributions, _ = integrated_gradients(model, x, baseline, target, steps)
    return attributions, attributions.sum(1)


def ig_summed_gradients(model, x, baseline, target=None, steps=64):
    attributions, _ = integrated_gradients(model, x, baseline, target, steps)
    total = attributions * steps
    with torch.no_grad():
        gain = select(model(x), target) - select(model(baseline.expand_as(x)), target)
    return total, total.sum(1) - gain


def ig_no_delta(model, x, baseline, target=None, steps=64):
    return integrated_gradients(model, x, baseline, target, steps)[0]


def ig_mutates_x(model, x, baseline, target=None, steps=64):
    result = integrated_gradients(model, x, baseline, target, steps)
    x.sub_(baseline)  # "centre" the input in place
    return result


def ig_loop_midpoints(model, x, baseline, target=None, steps=64):
    a = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    return _ig_with(model, x, baseline, target, a, torch.full((steps,), 1 / steps))


def ig_backward(model, x, baseline, target=None, steps=64):
    diff = x - baseline
    total = torch.zeros_like(x)
    for s in range(steps):
        z = (baseline + (s + 0.5) / steps * diff).detach().requires_grad_(True)
        select(model(z), target).sum().backward()
        total += z.grad
    attributions = diff * total / steps
    with torch.no_grad():
        gain = select(model(x), target) - select(model(baseline.expand_as(x)), target)
    model.zero_grad(set_to_none=True)
    return attributions, attributions.sum(1) - gain


def ig_batch_first(model, x, baseline, target=None, steps=64):
    batch, n = x.shape
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    base = baseline.expand_as(x)
    path = base[:, None] + alphas[None, :, None] * (x - base)[:, None]  # (batch, steps, n)
    tiled = target.repeat_interleave(steps) if isinstance(target, torch.Tensor) else target
    points = path.reshape(batch * steps, n).detach().requires_grad_(True)
    (grads,) = torch.autograd.grad(select(model(points), tiled).sum(), points)
    attributions = (x - base) * grads.view(batch, steps, n).mean(1)
    with torch.no_grad():
        gain = select(model(x), target) - select(model(base), target)
    return attributions, attributions.sum(1) - gain


# ============================================================================ 4. exact Shapley
def _shapley_weighted(model, x, baseline, target, weight):
    n = x.shape[1]
    masks = all_coalitions(n, x.device)
    v = coalition_values(model, x, baseline, target, masks)
    codes = torch.arange(2**n, device=x.device)
    size = masks.sum(1)
    phi = torch.zeros_like(x)
    for i in range(n):
        without = codes[~masks[:, i]]
        w = torch.tensor([weight(int(s), n) for s in size[without]], dtype=x.dtype)
        phi[:, i] = (w.unsqueeze(1) * (v[without | (1 << i)] - v[without])).sum(0)
    return phi


def shapley_banzhaf(model, x, baseline, target=None):
    return _shapley_weighted(model, x, baseline, target, lambda s, n: 1 / 2 ** (n - 1))


def shapley_size_plus_one(model, x, baseline, target=None):
    return _shapley_weighted(
        model,
        x,
        baseline,
        target,
        lambda s, n: 1 / (n * math.comb(n - 1, s + 1)) if s + 1 < n else 0.0,
    )


def shapley_reversed_mask(model, x, baseline, target=None):
    return shapley_exact(model, baseline.expand_as(x), x, target)


def shapley_transposed(model, x, baseline, target=None):
    return shapley_exact(model, x, baseline, target).T


def shapley_writes_into_x(model, x, baseline, target=None):
    phi = x  # reuses the input's storage
    result = shapley_exact(model, x.clone(), baseline, target)
    phi[:] = result
    return phi


def shapley_no_weights(model, x, baseline, target=None):
    return _shapley_weighted(model, x, baseline, target, lambda s, n: 1.0)


def shapley_factorials(model, x, baseline, target=None):
    return _shapley_weighted(
        model,
        x,
        baseline,
        target,
        lambda s, n: math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n),
    )


def shapley_all_permutations(model, x, baseline, target=None):
    n = x.shape[1]
    perms = torch.tensor(list(itertools.permutations(range(n))), device=x.device)
    return shapley_permutations(model, x, baseline, perms, target)


def shapley_subsets_loop(model, x, baseline, target=None):
    n = x.shape[1]
    phi = torch.zeros_like(x)
    base = baseline.expand_as(x)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for k in range(n):
            for subset in itertools.combinations(others, k):
                mask = torch.zeros(n, dtype=torch.bool, device=x.device)
                mask[list(subset)] = True
                with_i = mask.clone()
                with_i[i] = True
                with torch.no_grad():
                    gain = select(model(torch.where(with_i, x, base)), target) - select(
                        model(torch.where(mask, x, base)), target
                    )
                phi[:, i] += gain / (n * math.comb(n - 1, k))
    return phi


# ============================================================================ 5. permutations
def permutations_summed(model, x, baseline, perms, target=None):
    return shapley_permutations(model, x, baseline, perms, target) * perms.shape[0]


def permutations_as_ranks(model, x, baseline, perms, target=None):
    return shapley_permutations(model, x, baseline, perms.argsort(1), target)


def permutations_reversed_sign(model, x, baseline, perms, target=None):
    return -shapley_permutations(model, x, baseline, perms, target)


def permutations_first_only(model, x, baseline, perms, target=None):
    return shapley_permutations(model, x, baseline, perms[:1], target)


def permutations_swapped_roles(model, x, baseline, perms, target=None):
    return shapley_permutations(model, baseline.expand_as(x), x, perms, target)


def permutations_global_shuffle(model, x, baseline, perms, target=None):
    m, n = perms.shape
    own = torch.stack([torch.randperm(n) for _ in range(m)]).to(x.device)
    return shapley_permutations(model, x, baseline, own, target)


def permutations_sorts_in_place(model, x, baseline, perms, target=None):
    rank = perms.argsort(1)
    phi = shapley_permutations(model, x, baseline, perms, target)
    perms.copy_(rank)  # reuses perms' memory for the ranks
    return phi


def permutations_loop(model, x, baseline, perms, target=None):
    m, n = perms.shape
    base = baseline.expand_as(x)
    phi = torch.zeros_like(x)
    for j in range(m):
        z = base.clone()
        with torch.no_grad():
            previous = select(model(z), target)
            for feature in perms[j].tolist():
                z[:, feature] = x[:, feature]
                current = select(model(z), target)
                phi[:, feature] += current - previous
                previous = current
    return phi / m


def permutations_index_add(model, x, baseline, perms, target=None):
    m, n = perms.shape
    rank = perms.argsort(1)
    sizes = torch.arange(n + 1, device=x.device)
    masks = (rank.unsqueeze(1) < sizes.view(1, -1, 1)).reshape(-1, n)
    v = coalition_values(model, x, baseline, target, masks).view(m, n + 1, -1)
    marginal = v[:, 1:] - v[:, :-1]
    phi = torch.zeros_like(x)
    for j in range(m):
        phi[:, perms[j]] += marginal[j].T
    return phi / m


def permutations_scatter(model, x, baseline, perms, target=None):
    m, n = perms.shape
    rank = perms.argsort(1)
    sizes = torch.arange(n + 1, device=x.device)
    masks = (rank.unsqueeze(1) < sizes.view(1, -1, 1)).reshape(-1, n)
    v = coalition_values(model, x, baseline, target, masks).view(m, n + 1, -1)
    marginal = (v[:, 1:] - v[:, :-1]).permute(0, 2, 1)  # (m, batch, n) by position
    out = torch.zeros_like(marginal).scatter(2, perms.unsqueeze(1).expand_as(marginal), marginal)
    return out.mean(0)


# ============================================================================ 6. relu_moments
def _parts(mean, var):
    random = var > 0
    sigma = torch.where(random, var, torch.ones_like(var)).sqrt()
    r = mean / sigma
    cdf = torch.special.ndtr(r)
    pdf = torch.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
    first = mean * cdf + sigma * pdf
    second = (mean**2 + sigma**2) * cdf + mean * sigma * pdf
    return random, first, second


def moments_no_clamp(mean, var):
    random, first, second = _parts(mean, var)
    mean_out = torch.where(random, first, mean.clamp_min(0))
    return mean_out, torch.where(random, second - first**2, torch.zeros_like(var))


def moments_std_as_var(mean, var):
    return relu_moments(mean, var * var)


def moments_nan_at_zero(mean, var):
    sigma = var.sqrt()
    r = mean / sigma
    cdf, pdf = torch.special.ndtr(r), torch.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
    first = mean * cdf + sigma * pdf
    second = (mean**2 + var) * cdf + mean * sigma * pdf
    return first, (second - first**2).clamp_min(0)


def moments_point_mass_mean(mean, var):
    random, first, second = _parts(mean, var)
    return torch.where(random, first, mean), torch.where(
        random, (second - first**2).clamp_min(0), torch.zeros_like(var)
    )


def moments_second_moment(mean, var):
    random, first, second = _parts(mean, var)
    return torch.where(random, first, mean.clamp_min(0)), torch.where(
        random, second, mean.clamp_min(0) ** 2
    )


def moments_pdf_unnormalised(mean, var):
    random = var > 0
    sigma = torch.where(random, var, torch.ones_like(var)).sqrt()
    r = mean / sigma
    cdf, pdf = torch.special.ndtr(r), torch.exp(-0.5 * r * r)
    first = mean * cdf + sigma * pdf
    second = (mean**2 + sigma**2) * cdf + mean * sigma * pdf
    return torch.where(random, first, mean.clamp_min(0)), torch.where(
        random, (second - first**2).clamp_min(0), torch.zeros_like(var)
    )


def moments_in_place(mean, var):
    zero = var == 0
    var[zero] = 1.0  # avoid dividing by 0 ... in the caller's tensor
    mean_out, var_out = relu_moments(mean, var)
    return torch.where(zero, mean.clamp_min(0), mean_out), torch.where(zero, 0 * var_out, var_out)


def moments_distributions(mean, var):
    random = var > 0
    sigma = torch.where(random, var, torch.ones_like(var)).sqrt()
    r = mean / sigma
    normal = torch.distributions.Normal(torch.zeros_like(r), torch.ones_like(r))
    cdf, pdf = normal.cdf(r), normal.log_prob(r).exp()
    first = mean * cdf + sigma * pdf
    second = (mean**2 + sigma**2) * cdf + mean * sigma * pdf
    return torch.where(random, first, torch.relu(mean)), torch.where(
        random, torch.relu(second - first**2), torch.zeros_like(var)
    )


def moments_erf(mean, var):
    random = var > 0
    sigma = torch.where(random, var, torch.ones_like(var)).sqrt()
    r = mean / sigma
    cdf = 0.5 * (1 + torch.erf(r / math.sqrt(2)))
    pdf = torch.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
    first = mean * cdf + sigma * pdf
    var_out = ((mean**2 + var) * cdf + mean * sigma * pdf - first**2).clamp(min=0)
    return torch.where(random, first, mean.clamp_min(0)), torch.where(random, var_out, 0 * var)


def moments_float64_inside(mean, var):
    m, v = relu_moments(mean.double(), var.double())
    return m.to(mean.dtype), v.to(var.dtype)


# ============================================================================ 7. table_gaps
def gaps_tensors(table, x):
    gxi = (table["gradient_x_input"].abs() - table["saliency"] * x.abs()).abs().max()
    ig = (table["integrated_gradients"].sum() - table["shapley"].sum()).abs()
    return {"gxi_vs_saliency": gxi, "ig_vs_shapley": ig}


def gaps_signed_gxi(table, x):
    gxi = (table["gradient_x_input"] - table["saliency"] * x).abs().max()
    ig = (table["integrated_gradients"].sum() - table["shapley"].sum()).abs()
    return {"gxi_vs_saliency": gxi.item(), "ig_vs_shapley": ig.item()}


def gaps_sum_not_max(table, x):
    gxi = (table["gradient_x_input"].abs() - table["saliency"] * x.abs()).abs().sum()
    ig = (table["integrated_gradients"].sum() - table["shapley"].sum()).abs()
    return {"gxi_vs_saliency": gxi.item(), "ig_vs_shapley": ig.item()}


def gaps_no_abs_ig(table, x):
    gxi = (table["gradient_x_input"].abs() - table["saliency"] * x.abs()).abs().max()
    ig = table["integrated_gradients"].sum() - table["shapley"].sum()
    return {"gxi_vs_saliency": gxi.item(), "ig_vs_shapley": ig.item()}


def gaps_featurewise_ig(table, x):
    gxi = (table["gradient_x_input"].abs() - table["saliency"] * x.abs()).abs().max()
    ig = (table["integrated_gradients"] - table["shapley"]).abs().max()
    return {"gxi_vs_saliency": gxi.item(), "ig_vs_shapley": ig.item()}


def gaps_wrong_keys(table, x):
    gaps = table_gaps(table, x)
    return {"gxi": gaps["gxi_vs_saliency"], "ig": gaps["ig_vs_shapley"]}


def gaps_tuple(table, x):
    gaps = table_gaps(table, x)
    return gaps["gxi_vs_saliency"], gaps["ig_vs_shapley"]


def gaps_loop(table, x):
    gxi = 0.0
    for g, s, xi in zip(
        table["gradient_x_input"].tolist(), table["saliency"].tolist(), x.tolist(), strict=True
    ):
        gxi = max(gxi, abs(abs(g) - s * abs(xi)))
    ig = abs(sum(table["integrated_gradients"].tolist()) - sum(table["shapley"].tolist()))
    return {"gxi_vs_saliency": float(gxi), "ig_vs_shapley": float(ig)}


def gaps_numpy(table, x):
    t = {k: v.detach().cpu().numpy() for k, v in table.items()}
    xs = x.detach().cpu().numpy()
    gxi = np.max(np.abs(np.abs(t["gradient_x_input"]) - t["saliency"] * np.abs(xs)))
    ig = abs(t["integrated_gradients"].sum() - t["shapley"].sum())
    return {"gxi_vs_saliency": float(gxi), "ig_vs_shapley": float(ig)}


def gaps_amax(table, x):
    gxi = torch.amax(torch.abs(table["gradient_x_input"].abs() - table["saliency"] * x.abs()))
    ig = torch.abs(torch.sum(table["integrated_gradients"]) - torch.sum(table["shapley"]))
    return {"gxi_vs_saliency": float(gxi), "ig_vs_shapley": float(ig)}


# ============================================================================ 8. cascading randomisation
def _cascade(model, generator, *, bias=True, order=None, scale=True, cumulative=True):
    models = [copy.deepcopy(model)]
    current = copy.deepcopy(model)
    layers = list(reversed(range(len(current.layers)))) if order is None else order
    for index in layers:
        if not cumulative:
            current = copy.deepcopy(model)
        layer = current.layers[index]
        with torch.no_grad():
            s = layer.weight.std() if scale else 1.0
            params = (layer.weight, layer.bias) if bias else (layer.weight,)
            for p in params:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) * s)
        models.append(copy.deepcopy(current))
    return models


def cascade_biases_kept(model, generator):
    return _cascade(model, generator, bias=False)


def cascade_bottom_up(model, generator):
    return _cascade(model, generator, order=list(range(len(model.layers))))


def cascade_unit_std(model, generator):
    return _cascade(model, generator, scale=False)


def cascade_not_cumulative(model, generator):
    return _cascade(model, generator, cumulative=False)


def cascade_in_place(model, generator):
    models = [copy.deepcopy(model)]
    for layer in reversed(model.layers):
        with torch.no_grad():
            s = layer.weight.std()
            for p in (layer.weight, layer.bias):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * s)
        models.append(copy.deepcopy(model))
    return models


def cascade_reset_parameters(model, generator):
    models = [copy.deepcopy(model)]
    current = copy.deepcopy(model)
    for layer in reversed(current.layers):
        layer.reset_parameters()  # the global RNG, and PyTorch's init scale
        models.append(copy.deepcopy(current))
    return models


def cascade_missing_original(model, generator):
    return _cascade(model, generator)[1:]


def cascade_zero_bias(model, generator):
    models = _cascade(model, generator, bias=False)
    for k, stage in enumerate(models):
        for layer in list(stage.layers)[len(stage.layers) - k :]:
            with torch.no_grad():
                layer.bias.zero_()
    return models


def cascade_tuple(model, generator):
    return tuple(_cascade(model, generator))


def cascade_std_after_redraw(model, generator):
    models = [copy.deepcopy(model)]
    current = copy.deepcopy(model)
    for layer in reversed(current.layers):
        with torch.no_grad():
            for p in (layer.weight, layer.bias):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype))
            layer.weight.mul_(layer.weight.std())  # the std of the NEW weights: about 1
        models.append(copy.deepcopy(current))
    return models


def cascade_normal_(model, generator):
    models = [copy.deepcopy(model)]
    current = copy.deepcopy(model)
    for layer in reversed(current.layers):
        s = float(layer.weight.detach().std())
        with torch.no_grad():
            layer.weight.normal_(0.0, s, generator=generator)
            layer.bias.normal_(0.0, s, generator=generator)
        models.append(copy.deepcopy(current))
    return models


def cascade_new_parameters(model, generator):
    models = [copy.deepcopy(model)]
    for k in range(1, len(model.layers) + 1):
        stage = copy.deepcopy(models[-1])
        layer = stage.layers[len(stage.layers) - k]
        s = layer.weight.detach().std()
        w = torch.randn(layer.weight.shape, generator=generator, dtype=layer.weight.dtype) * s
        b = torch.randn(layer.bias.shape, generator=generator, dtype=layer.bias.dtype) * s
        layer.weight = nn.Parameter(w.to(layer.weight.device))
        layer.bias = nn.Parameter(b.to(layer.bias.device))
        models.append(stage)
    return models


def cascade_state_dict(model, generator):
    models = [copy.deepcopy(model)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for index in reversed(range(len(model.layers))):
        w = state[f"layers.{index}.weight"]
        s = w.std()
        for name in ("weight", "bias"):
            key = f"layers.{index}.{name}"
            noise = torch.randn(state[key].shape, generator=generator, dtype=w.dtype)
            state[key] = noise.to(w.device) * s
        stage = copy.deepcopy(model)
        stage.load_state_dict(state)
        models.append(stage)
    return models


# ============================================================================ the catalogue
MISTAKES = {
    "saliency": [
        ("signed gradient, no absolute value", saliency_signed, "signed gradient"),
        ("x.requires_grad_(True) on the caller's x", saliency_requires_grad_on_x,
         "requires_grad switched on"),
        (".backward() on the caller's x", saliency_backward_on_x, "requires_grad switched on"),
        ("gradient of the sum of every output", saliency_all_outputs, "sum of all outputs"),
        ("multiplied by x", saliency_times_x, "you multiplied by x"),
        ("gradient of the batch mean", saliency_mean_over_batch, "divided by the batch size"),
        ("a NumPy array returned", saliency_numpy, "should be a torch.Tensor"),
        ("cast to float32", saliency_float32, "should have dtype torch.float64"),
    ],
    "gradient_x_input": [
        ("absolute value taken", gxi_abs, "keep the sign"),
        ("the gradient alone", gxi_gradient_only, "multiply it by x"),
        ("x.requires_grad_(True) on the caller's x", gxi_requires_grad_on_x,
         "requires_grad switched on"),
        ("gradient of the sum of every output", gxi_all_outputs, "sum of all outputs"),
        ("computed in float64 always", gxi_double, "should have dtype torch.float32"),
        ("a list returned", gxi_list, "should be a torch.Tensor"),
    ],
    "integrated_gradients": [
        ("left Riemann nodes", ig_left, "left Riemann"),
        ("right Riemann nodes", ig_right, "right Riemann"),
        ("linspace nodes with both ends", ig_linspace, "both ends"),
        ("not multiplied by x - baseline", ig_no_diff, "multiply the averaged gradient"),
        ("gradients summed, not averaged", ig_summed_gradients, "average them"),
        ("delta with the reverse sign", ig_delta_reversed, "the sign of delta"),
        ("delta without the gain", ig_delta_sum_only, "delta subtracts the gain"),
        ("attributions alone, no delta", ig_no_delta, "expected a pair"),
        ("x changed in place", ig_mutates_x, "modified its input 'x'"),
    ],
    "shapley_exact": [
        ("Banzhaf weights 1 / 2^(n-1)", shapley_banzhaf, "Banzhaf"),
        ("weights of |S| + 1", shapley_size_plus_one, "|S| + 1"),
        ("coalition mask reversed", shapley_reversed_mask, "coalition is reversed"),
        ("result transposed", shapley_transposed, "should have shape"),
        ("results written into x", shapley_writes_into_x, "modified its input 'x'"),
        ("no weights at all", shapley_no_weights, "efficiency fails"),
    ],
    "shapley_permutations": [
        ("summed over permutations", permutations_summed, "average instead"),
        ("perms read as ranks", permutations_as_ranks, "as ranks"),
        ("marginal contribution reversed", permutations_reversed_sign, "wrong sign"),
        ("only the first permutation", permutations_first_only, "only the first permutation"),
        ("x and baseline swapped", permutations_swapped_roles, "swapped"),
        ("own permutations from the global RNG", permutations_global_shuffle,
         "global random state"),
        ("perms overwritten in place", permutations_sorts_in_place, "modified its input 'perms'"),
    ],
    "relu_moments": [
        ("variance not clamped at 0", moments_no_clamp, "clamp it at 0"),
        ("var used as the standard deviation", moments_std_as_var, "sigma = sqrt(var)"),
        ("division by sigma = 0", moments_nan_at_zero, "where var = 0"),
        ("point mass returns mean, not relu(mean)", moments_point_mass_mean, "relu(mean), not mean"),
        ("the second moment returned as the variance", moments_second_moment,
         "this is E[relu(z)^2]"),
        ("density without 1 / sqrt(2 pi)", moments_pdf_unnormalised, "standard normal density"),
        ("var clamped in place", moments_in_place, "modified its input 'var'"),
    ],
    "table_gaps": [
        ("tensors, not Python floats", gaps_tensors, "should be a Python float"),
        ("signed gradient x input compared", gaps_signed_gxi, "either sign"),
        ("sum over features, not max", gaps_sum_not_max, "LARGEST difference"),
        ("no absolute value on the IG gap", gaps_no_abs_ig, "absolute value"),
        ("IG and Shapley compared feature by feature", gaps_featurewise_ig, "SUMS"),
        ("wrong keys", gaps_wrong_keys, "expected a dict with keys"),
        ("a tuple returned", gaps_tuple, "expected a dict with keys"),
    ],
    "cascading_randomization": [
        ("biases left at their trained values", cascade_biases_kept,
         "biases were left at their trained values"),
        ("bottom-up order", cascade_bottom_up, "counting from the output"),
        ("N(0, 1) weights", cascade_unit_std, "standard deviation"),
        ("not cumulative", cascade_not_cumulative, "cumulative"),
        ("the original model randomised in place", cascade_in_place, "original model"),
        ("reset_parameters (global RNG)", cascade_reset_parameters, "global random state"),
        ("the unchanged copy missing", cascade_missing_original, "the unchanged copy first"),
        ("biases set to zero", cascade_zero_bias, "set to zero"),
        ("a tuple returned", cascade_tuple, "expected a list"),
        ("std of the new weights", cascade_std_after_redraw, "ORIGINAL weights"),
    ],
}  # fmt: skip

VALID = {
    "saliency": [
        (".backward() on a detached clone", saliency_backward_on_clone),
        ("a loop over samples", saliency_loop),
        ("autograd.functional.vjp", saliency_vjp),
    ],
    "gradient_x_input": [
        (".backward() on a detached clone", gxi_backward),
        ("autograd.functional.jacobian per sample", gxi_jacobian_rows),
        ("grad_outputs with a one-hot selection", gxi_grad_outputs),
        (
            "sign(gradient) times the student's saliency",
            notebook(globals(), "gradient_x_input", gradient_x_input=gxi_sign_times_saliency),
        ),
        (
            "sign(gradient) times a saliency that sets requires_grad on the caller's x (labcore's "
            "saliency is used in its place)",
            notebook(
                globals(),
                "gradient_x_input",
                gradient_x_input=gxi_sign_times_saliency,
                saliency=saliency_requires_grad_on_x,
            ),
        ),
        (
            "sign(gradient) times a signed saliency (labcore's saliency is used in its place)",
            notebook(
                globals(),
                "gradient_x_input",
                gradient_x_input=gxi_sign_times_saliency,
                saliency=saliency_signed,
            ),
        ),
    ],
    "integrated_gradients": [
        ("a loop over the midpoints", ig_loop_midpoints),
        (".backward() per step", ig_backward),
        ("a (batch, steps, n) layout", ig_batch_first),
    ],
    "shapley_exact": [
        ("factorial weights", shapley_factorials),
        ("all n! permutations", shapley_all_permutations),
        ("a loop over subsets", shapley_subsets_loop),
    ],
    "shapley_permutations": [
        ("a loop adding one feature at a time", permutations_loop),
        ("index-add by permutation", permutations_index_add),
        ("scatter by permutation", permutations_scatter),
    ],
    "relu_moments": [
        ("torch.distributions.Normal", moments_distributions),
        ("erf for Phi", moments_erf),
        ("float64 inside, cast back", moments_float64_inside),
    ],
    "table_gaps": [
        ("a Python loop", gaps_loop),
        ("NumPy", gaps_numpy),
        ("torch.amax and float()", gaps_amax),
    ],
    "cascading_randomization": [
        ("normal_ with the generator", cascade_normal_),
        ("new nn.Parameters", cascade_new_parameters),
        ("through the state dict", cascade_state_dict),
    ],
}
