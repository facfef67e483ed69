"""Lab 0 (learning as function approximation): wrong answers a student might write, and other
correct routes.

``MISTAKES[exercise]`` lists ``(name, function, hint)``: the check and the rubric must reject the
function, and the check's message must contain ``hint``. ``VALID[exercise]`` lists ``(name,
function)``: other correct implementations that both must accept. ``SOLUTIONS`` holds the lab's
own answers (the solution notebook's code).
"""

from __future__ import annotations

import copy
import math

import torch

Tensor = torch.Tensor
LOG_2PI = math.log(2 * math.pi)


# ============================================================================ the solutions
def polynomial_features(x, degree):
    powers = torch.arange(degree + 1, device=x.device, dtype=x.dtype)
    return x.reshape(-1, 1) ** powers


def train_regressor(model, x, y, steps, lr):
    inputs, targets = x.reshape(-1, 1), y.reshape(-1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((model(inputs) - targets) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def gaussian_nll(x, mean, std):
    mean = torch.as_tensor(mean, dtype=x.dtype)
    std = torch.as_tensor(std, dtype=x.dtype)
    return torch.log(std) + 0.5 * math.log(2 * math.pi) + ((x - mean) ** 2).mean() / (2 * std**2)


def gaussian_mle(x):
    mean = x.mean()
    return mean, ((x - mean) ** 2).mean().sqrt()


def mixture_nll(x, logits, means, log_stds):
    z = (x.unsqueeze(-1) - means) / log_stds.exp()
    log_normal = -0.5 * z**2 - log_stds - 0.5 * math.log(2 * math.pi)
    return -torch.logsumexp(torch.log_softmax(logits, dim=-1) + log_normal, dim=-1).mean()


SOLUTIONS = {
    f.__name__: f
    for f in (polynomial_features, train_regressor, gaussian_nll, gaussian_mle, mixture_nll)
}


# ============================================================================ 1. polynomial_features
def poly_from_one(x, degree):
    return x.reshape(-1, 1) ** torch.arange(1, degree + 2, dtype=x.dtype, device=x.device)


def poly_missing_last(x, degree):
    return x.reshape(-1, 1) ** torch.arange(degree, dtype=x.dtype, device=x.device)


def poly_float64(x, degree):
    return x.reshape(-1, 1).double() ** torch.arange(degree + 1, dtype=torch.float64)


def poly_cpu_powers(x, degree):
    return x.reshape(-1, 1) ** torch.arange(degree + 1)  # powers created on the CPU


def poly_unsqueeze_in_place(x, degree):
    if x.dim() == 1:
        x.unsqueeze_(1)
    return x ** torch.arange(degree + 1, dtype=x.dtype, device=x.device)


def poly_numpy(x, degree):
    import numpy as np

    return np.vander(x.reshape(-1).numpy(), degree + 1, increasing=True)


def poly_transposed(x, degree):
    powers = torch.arange(degree + 1, dtype=x.dtype, device=x.device)
    return x.reshape(1, -1) ** powers.reshape(-1, 1)


def poly_no_reshape(x, degree):
    return x[..., None] ** torch.arange(degree + 1, dtype=x.dtype, device=x.device)


def poly_decreasing(x, degree):
    powers = torch.arange(degree, -1, -1, dtype=x.dtype, device=x.device)
    return x.reshape(-1, 1) ** powers


# ---- valid alternatives
def poly_vander(x, degree):
    return torch.vander(x.reshape(-1), N=degree + 1, increasing=True)


def poly_stack_loop(x, degree):
    flat = x.reshape(-1)
    return torch.stack([flat**k for k in range(degree + 1)], dim=1)  # a loop over powers


def poly_cumprod(x, degree):
    flat = x.reshape(-1, 1)
    ones = torch.ones_like(flat)
    if degree == 0:
        return ones
    return torch.cat([ones, torch.cumprod(flat.expand(-1, degree), dim=1)], dim=1)


# ============================================================================ 2. train_regressor
def _loop(model, x, y, steps, lr, *, zero=True, opt=torch.optim.Adam, reduce="mean", after=False):
    inputs, targets = x.reshape(-1, 1), y.reshape(-1, 1)
    optimizer = opt(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        if zero:
            optimizer.zero_grad()
        error = (model(inputs) - targets) ** 2
        loss = error.sum() if reduce == "sum" else error.mean()
        loss.backward()
        optimizer.step()
        if after:
            with torch.no_grad():
                loss = ((model(inputs) - targets) ** 2).mean()
        losses.append(loss.item())
    return losses


def train_no_zero_grad(model, x, y, steps, lr):
    return _loop(model, x, y, steps, lr, zero=False)


def train_sgd(model, x, y, steps, lr):
    return _loop(model, x, y, steps, lr, opt=torch.optim.SGD)


def train_loss_after_step(model, x, y, steps, lr):
    return _loop(model, x, y, steps, lr, after=True)


def train_sum(model, x, y, steps, lr):
    return _loop(model, x, y, steps, lr, reduce="sum")


def train_broadcast(model, x, y, steps, lr):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((model(x.reshape(-1, 1)) - y) ** 2).mean()  # (batch, 1) - (batch,)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_tensor_losses(model, x, y, steps, lr):
    inputs, targets = x.reshape(-1, 1), y.reshape(-1, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((model(inputs) - targets) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss)
    return losses


def train_copy(model, x, y, steps, lr):
    return _loop(copy.deepcopy(model), x, y, steps, lr)


def train_seeds_global_rng(model, x, y, steps, lr):
    torch.manual_seed(0)  # "for reproducibility"
    return _loop(model, x, y, steps, lr)


def train_unsqueeze_in_place(model, x, y, steps, lr):
    x.unsqueeze_(1)
    y.unsqueeze_(1)
    return _loop(model, x, y, steps, lr)


def train_extra_final_loss(model, x, y, steps, lr):
    losses = _loop(model, x, y, steps, lr)
    with torch.no_grad():
        losses.append(((model(x.reshape(-1, 1)) - y.reshape(-1, 1)) ** 2).mean().item())
    return losses


# ---- valid alternatives
def train_mse_loss(model, x, y, steps, lr):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x[:, None]), y[:, None])
        model.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses


def train_set_to_none_after(model, x, y, steps, lr):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = (model(x.unsqueeze(1)) - y.unsqueeze(1)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # zeroed after the step instead of before
        losses.append(loss.detach().item())
    return losses


def train_autograd_grad(model, x, y, steps, lr):
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = ((model(x.reshape(-1, 1)) - y.reshape(-1, 1)) ** 2).mean()
        for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
            p.grad = g
        optimizer.step()
        losses.append(loss.item())
    return losses


# ============================================================================ 3. gaussian_nll
def _tensors(x, mean, std):
    return torch.as_tensor(mean, dtype=x.dtype), torch.as_tensor(std, dtype=x.dtype)


def nll_log_variance(x, mean, std):
    mean, std = _tensors(x, mean, std)
    return torch.log(std**2) + 0.5 * LOG_2PI + ((x - mean) ** 2).mean() / (2 * std**2)


def nll_no_constant(x, mean, std):
    mean, std = _tensors(x, mean, std)
    return torch.log(std) + ((x - mean) ** 2).mean() / (2 * std**2)


def nll_divides_by_std(x, mean, std):
    mean, std = _tensors(x, mean, std)
    return torch.log(std) + 0.5 * LOG_2PI + ((x - mean) ** 2).mean() / (2 * std)


def nll_sum(x, mean, std):
    mean, std = _tensors(x, mean, std)
    return (torch.log(std) + 0.5 * LOG_2PI + (x - mean) ** 2 / (2 * std**2)).sum()


def nll_item(x, mean, std):
    mean, std = _tensors(x, mean, std)
    return (torch.log(std) + 0.5 * LOG_2PI + ((x - mean) ** 2).mean() / (2 * std**2)).item()


def nll_float_parameters(x, mean, std):
    mean, std = torch.tensor(float(mean), dtype=x.dtype), torch.tensor(float(std), dtype=x.dtype)
    return torch.log(std) + 0.5 * LOG_2PI + ((x - mean) ** 2).mean() / (2 * std**2)


def nll_centres_in_place(x, mean, std):
    mean, std = _tensors(x, mean, std)
    x -= mean.detach()
    return torch.log(std) + 0.5 * LOG_2PI + (x**2).mean() / (2 * std**2)


def nll_log_likelihood(x, mean, std):
    mean, std = _tensors(x, mean, std)
    return -(torch.log(std) + 0.5 * LOG_2PI + ((x - mean) ** 2).mean() / (2 * std**2))


# ---- valid alternatives
def nll_distributions(x, mean, std):
    mean, std = _tensors(x, mean, std)
    return -torch.distributions.Normal(mean, std).log_prob(x).mean()


def nll_gaussian_nll_loss(x, mean, std):
    mean, std = _tensors(x, mean, std)
    variance = (std**2).expand_as(x)
    loss = torch.nn.functional.gaussian_nll_loss(mean.expand_as(x), x, variance, full=True)
    return loss


def nll_z_scores(x, mean, std):
    z = (x - mean) / std
    log_std = torch.log(torch.as_tensor(std, dtype=x.dtype))
    return log_std + 0.5 * LOG_2PI + 0.5 * (z * z).mean()


# ============================================================================ 4. gaussian_mle
def mle_unbiased(x):
    return x.mean(), x.std()


def mle_variance(x):
    mean = x.mean()
    return mean, ((x - mean) ** 2).mean()


def mle_swapped(x):
    mean = x.mean()
    return ((x - mean) ** 2).mean().sqrt(), mean


def mle_floats(x):
    mean = x.mean()
    return mean.item(), ((x - mean) ** 2).mean().sqrt().item()


def mle_uncentred(x):
    return x.mean(), (x**2).mean().sqrt()


def mle_centres_in_place(x):
    mean = x.mean()
    x.sub_(mean)
    return mean, (x**2).mean().sqrt()


def mle_float64(x):
    x = x.double()
    mean = x.mean()
    return mean, ((x - mean) ** 2).mean().sqrt()


# ---- valid alternatives
def mle_std_mean(x):
    std, mean = torch.std_mean(x, correction=0)
    return mean, std


def mle_var_unbiased_false(x):
    return x.mean(), x.var(unbiased=False).sqrt()


def mle_sums(x):
    n = x.shape[0]
    mean = x.sum() / n
    return mean, torch.sqrt(((x - mean) ** 2).sum() / n)


# ============================================================================ 5. mixture_nll
def mix_naive(x, logits, means, log_stds):
    weights, stds = torch.softmax(logits, dim=-1), log_stds.exp()
    z = (x.unsqueeze(-1) - means) / stds
    density = weights * torch.exp(-0.5 * z**2) / (stds * math.sqrt(2 * math.pi))
    return -density.sum(-1).log().mean()


def mix_logits_as_log_weights(x, logits, means, log_stds):
    z = (x.unsqueeze(-1) - means) / log_stds.exp()
    return -torch.logsumexp(logits - 0.5 * z**2 - log_stds - 0.5 * LOG_2PI, dim=-1).mean()


def mix_log_stds_as_stds(x, logits, means, log_stds):
    z = (x.unsqueeze(-1) - means) / log_stds
    log_w = torch.log_softmax(logits, dim=-1)
    return -torch.logsumexp(log_w - 0.5 * z**2 - log_stds.log() - 0.5 * LOG_2PI, dim=-1).mean()


def mix_no_normaliser(x, logits, means, log_stds):
    z = (x.unsqueeze(-1) - means) / log_stds.exp()
    log_w = torch.log_softmax(logits, dim=-1)
    return -torch.logsumexp(log_w - 0.5 * z**2 - 0.5 * LOG_2PI, dim=-1).mean()


def mix_sum(x, logits, means, log_stds):
    z = (x.unsqueeze(-1) - means) / log_stds.exp()
    log_w = torch.log_softmax(logits, dim=-1)
    return -torch.logsumexp(log_w - 0.5 * z**2 - log_stds - 0.5 * LOG_2PI, dim=-1).sum()


def mix_wrong_dim(x, logits, means, log_stds):
    z = (x.unsqueeze(-1) - means) / log_stds.exp()
    log_w = torch.log_softmax(logits, dim=-1)
    return -torch.logsumexp(log_w - 0.5 * z**2 - log_stds - 0.5 * LOG_2PI, dim=0).mean()


def mix_no_constant(x, logits, means, log_stds):
    z = (x.unsqueeze(-1) - means) / log_stds.exp()
    log_w = torch.log_softmax(logits, dim=-1)
    return -torch.logsumexp(log_w - 0.5 * z**2 - log_stds, dim=-1).mean()


def mix_exp_in_place(x, logits, means, log_stds):
    stds = log_stds.exp_()
    z = (x.unsqueeze(-1) - means) / stds
    log_w = torch.log_softmax(logits, dim=-1)
    return -torch.logsumexp(log_w - 0.5 * z**2 - stds.log() - 0.5 * LOG_2PI, dim=-1).mean()


# ---- valid alternatives
def mix_distributions(x, logits, means, log_stds):
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits),
        torch.distributions.Normal(means, log_stds.exp()),
    )
    return -mixture.log_prob(x).mean()


def mix_logits_minus_logsumexp(x, logits, means, log_stds):
    log_w = logits - torch.logsumexp(logits, dim=0)
    log_p = torch.distributions.Normal(means, log_stds.exp()).log_prob(x[:, None])
    return -torch.logsumexp(log_w + log_p, dim=1).mean()


def mix_manual_max_shift(x, logits, means, log_stds):
    z = (x[:, None] - means) / torch.exp(log_stds)
    terms = torch.log_softmax(logits, dim=0) - 0.5 * z**2 - log_stds - 0.5 * LOG_2PI
    top = terms.max(dim=1, keepdim=True).values
    return -(top.squeeze(1) + torch.log(torch.exp(terms - top).sum(dim=1))).mean()


MISTAKES = {
    "polynomial_features": [
        ("powers 1 .. degree + 1 (no column of ones)", poly_from_one, "not x**(k + 1)"),
        ("powers 0 .. degree - 1 (off by one)", poly_missing_last, "degree + 1 columns"),
        ("returns float64 for float32 input", poly_float64, "should have dtype"),
        ("powers created on the CPU (ignores x's device)", poly_cpu_powers, "'meta' device"),
        ("unsqueezes x in place", poly_unsqueeze_in_place, "modified its input"),
        ("returns a NumPy array", poly_numpy, "torch.Tensor"),
        ("one row per power (transposed)", poly_transposed, "one row per sample"),
        ("x[..., None] without flattening a column input", poly_no_reshape, "reshape x"),
        ("decreasing powers", poly_decreasing, "increase from left to right"),
    ],
    "train_regressor": [
        ("forgets zero_grad (gradients accumulate)", train_no_zero_grad, "zero_grad"),
        ("SGD instead of Adam", train_sgd, "not SGD"),
        ("records the loss after the update", train_loss_after_step, "before optimizer.step()"),
        ("sum of squared errors instead of the mean", train_sum, "not their sum"),
        ("y not reshaped: (batch, 1) - (batch,) broadcasts", train_broadcast, "(batch, batch)"),
        ("appends loss tensors, not floats", train_tensor_losses, "loss.item()"),
        ("trains a deep copy of the model", train_copy, "model passed in"),
        ("torch.manual_seed inside the function", train_seeds_global_rng, "global random state"),
        ("unsqueezes x and y in place", train_unsqueeze_in_place, "modified its input"),
        ("appends the final loss too (steps + 1)", train_extra_final_loss, "list of"),
    ],
    "gaussian_nll": [
        ("log sigma^2 instead of log sigma", nll_log_variance, "not log s^2"),
        ("drops log(2 pi)/2", nll_no_constant, "log(2 pi)/2"),
        ("divides by 2 sigma instead of 2 sigma^2", nll_divides_by_std, "not 2 s"),
        ("sums over the samples", nll_sum, "do not sum"),
        ("returns .item()", nll_item, "no .item()"),
        ("float(mean): no gradient path", nll_float_parameters, "does not require grad"),
        ("centres x in place", nll_centres_in_place, "modified its input"),
        ("the log-likelihood (sign)", nll_log_likelihood, "minus sign"),
    ],
    "gaussian_mle": [
        ("torch.std (n - 1)", mle_unbiased, "n - 1"),
        ("the variance instead of the std", mle_variance, "square root"),
        ("returns (std, mean)", mle_swapped, "in this order"),
        ("returns Python floats", mle_floats, "no .item()"),
        ("root mean square, not centred", mle_uncentred, "subtract the mean"),
        ("centres x in place", mle_centres_in_place, "modified its input"),
        ("computes in float64", mle_float64, "should have dtype"),
    ],
    "mixture_nll": [
        ("log of a sum of densities (underflows)", mix_naive, "logsumexp"),
        ("logits used as log weights", mix_logits_as_log_weights, "log_softmax(logits)"),
        ("log_stds used as standard deviations", mix_log_stds_as_stds, "log of the standard"),
        ("drops -log sigma_k", mix_no_normaliser, "-log sigma_k"),
        ("sums over the samples", mix_sum, "do not sum"),
        ("logsumexp over the samples (dim 0)", mix_wrong_dim, "over the components"),
        ("drops -log(2 pi)/2", mix_no_constant, "-log(2 pi)/2"),
        ("log_stds.exp_() in place", mix_exp_in_place, "modified its input"),
    ],
}

VALID = {
    "polynomial_features": [
        ("torch.vander(increasing=True)", poly_vander),
        ("a loop over the powers, stacked", poly_stack_loop),
        ("cumulative products", poly_cumprod),
    ],
    "train_regressor": [
        ("F.mse_loss, model.zero_grad(), float(loss)", train_mse_loss),
        ("zero_grad(set_to_none=True) after the step", train_set_to_none_after),
        ("torch.autograd.grad written into .grad", train_autograd_grad),
    ],
    "gaussian_nll": [
        ("torch.distributions.Normal.log_prob", nll_distributions),
        ("F.gaussian_nll_loss(full=True)", nll_gaussian_nll_loss),
        ("through z-scores", nll_z_scores),
    ],
    "gaussian_mle": [
        ("torch.std_mean(correction=0)", mle_std_mean),
        ("var(unbiased=False).sqrt()", mle_var_unbiased_false),
        ("sums divided by n", mle_sums),
    ],
    "mixture_nll": [
        ("torch.distributions.MixtureSameFamily", mix_distributions),
        ("logits - logsumexp(logits) with Normal.log_prob", mix_logits_minus_logsumexp),
        ("logsumexp by hand with the max shift", mix_manual_max_shift),
    ],
}
