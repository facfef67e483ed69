"""The exercise checks of lab 3 (labcore.checks.attribution): they accept right answers, reject
typical mistakes with a message that names the cause, let an unfinished exercise's error through,
leave the global random state alone and run in well under a second each."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from work import TorchWork

from labcore import attribution, probabilistic
from labcore.checks import CheckFailed
from labcore.checks import attribution as checks


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models run fastest on one thread; on a busy machine two threads can be much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ answers as a student writes them
def select(out, target):
    if target is None:
        return out.reshape(-1)
    if isinstance(target, int):
        return out[:, target]
    return out.gather(1, target.view(-1, 1)).squeeze(1)


def gradient(model, x, target):
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(select(model(x), target).sum(), x)
    return grad


def saliency(model, x, target=None):
    return gradient(model, x, target).abs()


def gradient_x_input(model, x, target=None):
    return x * gradient(model, x, target)


def integrated_gradients(model, x, baseline, target=None, steps=64):
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    diff = x - baseline
    path = baseline + alphas.view(-1, 1, 1) * diff  # (steps, batch, n_features)
    batch = x.shape[0]
    tiled = target.repeat(steps) if isinstance(target, torch.Tensor) else target
    grads = gradient(model, path.reshape(steps * batch, -1), tiled).view(steps, batch, -1)
    attributions = diff * grads.mean(0)
    with torch.no_grad():
        gain = select(model(x), target) - select(model(baseline.expand_as(x)), target)
    return attributions, attributions.sum(1) - gain


def coalition_values(model, x, baseline, target, masks):
    batch, n = x.shape
    z = torch.where(masks.unsqueeze(1), x, baseline.expand_as(x))  # (n_masks, batch, n)
    tiled = target.repeat(len(masks)) if isinstance(target, torch.Tensor) else target
    with torch.no_grad():
        return select(model(z.reshape(-1, n)), tiled).view(len(masks), batch)


def shapley_exact(model, x, baseline, target=None):
    n = x.shape[1]
    codes = torch.arange(2**n, device=x.device)
    masks = ((codes.unsqueeze(1) >> torch.arange(n, device=x.device)) & 1).bool()  # (2^n, n)
    v = coalition_values(model, x, baseline, target, masks)  # (2^n, batch)
    size = masks.sum(1)
    phi = torch.zeros_like(x)
    for i in range(n):
        without = ~masks[:, i]
        s = size[without]
        weight = torch.tensor(
            [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in s.tolist()],
            dtype=x.dtype,
            device=x.device,
        )
        with_i = codes[without] | (1 << i)
        phi[:, i] = (weight.unsqueeze(1) * (v[with_i] - v[without])).sum(0)
    return phi


def shapley_permutations(model, x, baseline, perms, target=None):
    m, n = perms.shape
    rank = perms.argsort(1)
    sizes = torch.arange(n + 1, device=x.device)
    masks = (rank.unsqueeze(1) < sizes.view(1, -1, 1)).reshape(-1, n)  # (m (n + 1), n)
    v = coalition_values(model, x, baseline, target, masks).view(m, n + 1, -1)
    marginal = v[:, 1:] - v[:, :-1]  # (m, n, batch): contribution of perms[j, k]
    phi = torch.zeros_like(x)
    for j in range(m):
        phi[:, perms[j]] += marginal[j].T
    return phi / m


def relu_moments(mean, var):
    return probabilistic.relu_moments(mean, var)


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
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                p.copy_(noise.to(p.device) * s)
        models.append(copy.deepcopy(current))
    return models


ANSWERS = {
    "check_saliency": saliency,
    "check_gradient_x_input": gradient_x_input,
    "check_integrated_gradients": integrated_gradients,
    "check_shapley_exact": shapley_exact,
    "check_shapley_permutations": shapley_permutations,
    "check_relu_moments": relu_moments,
    "check_table_gaps": table_gaps,
    "check_cascading_randomization": cascading_randomization,
}


def test_every_check_has_an_answer_here():
    assert set(ANSWERS) == {name for name in checks.__all__ if name.startswith("check_")}


def test_every_check_leaves_rng_default_dtype_and_device_alone():
    """Every check, run with a right answer, leaves the global RNG state, the default dtype and
    the default device as they were (the checks draw from local generators only)."""
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    device = torch.get_default_device()
    for name, answer in ANSWERS.items():
        getattr(checks, name)(answer)
        assert torch.equal(torch.random.get_rng_state(), state), name
        assert torch.get_default_dtype() == dtype, name
        assert torch.get_default_device() == device, name


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_checks_accept_right_answers_with_little_work_and_the_random_state_untouched(name, capsys):
    state = torch.random.get_rng_state()
    with TorchWork() as work:
        getattr(checks, name)(ANSWERS[name])
    assert torch.equal(torch.random.get_rng_state(), state), "a check changed the global RNG"
    out = capsys.readouterr().out
    assert out.count("\u2714") == 1 and out.startswith("\u2714 " + name.removeprefix("check_"))
    work.assert_within(name)


def test_the_library_functions_pass_the_checks_too(capsys):
    checks.check_saliency(lambda m, x, t=None: attribution.saliency(m, x, t))
    checks.check_gradient_x_input(lambda m, x, t=None: attribution.gradient_x_input(m, x, t))
    checks.check_integrated_gradients(
        lambda m, x, b, t=None, steps=64: attribution.integrated_gradients(
            m, x, b, t, steps=steps, method="riemann_middle", return_delta=True
        )
    )
    checks.check_shapley_exact(lambda m, x, b, t=None: attribution.shapley_exact(m, x, b, t))
    assert capsys.readouterr().out.count("\u2714") == 4


# ------------------------------------------------------------------ typical mistakes
def signed_saliency(model, x, target=None):
    return gradient(model, x, target)


def saliency_of_all_outputs(model, x, target=None):
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    return grad.abs()


def abs_gradient_x_input(model, x, target=None):
    return (x * gradient(model, x, target)).abs()


def saliency_in_float32(model, x, target=None):
    return saliency(model, x, target).float()


def left_riemann_ig(model, x, baseline, target=None, steps=64):
    alphas = torch.arange(steps, dtype=x.dtype, device=x.device) / steps
    diff = x - baseline
    path = baseline + alphas.view(-1, 1, 1) * diff
    batch = x.shape[0]
    tiled = target.repeat(steps) if isinstance(target, torch.Tensor) else target
    grads = gradient(model, path.reshape(steps * batch, -1), tiled).view(steps, batch, -1)
    attributions = diff * grads.mean(0)
    return attributions, integrated_gradients(model, x, baseline, target, steps)[1]


def ig_without_delta(model, x, baseline, target=None, steps=64):
    return integrated_gradients(model, x, baseline, target, steps)[0]


def ig_with_wrong_delta(model, x, baseline, target=None, steps=64):
    attributions, _ = integrated_gradients(model, x, baseline, target, steps)
    return attributions, attributions.sum(1)


def ig_modifying_x(model, x, baseline, target=None, steps=64):
    result = integrated_gradients(model, x, baseline, target, steps)
    x.add_(1.0)
    return result


def shapley_with_uniform_weights(model, x, baseline, target=None):
    n = x.shape[1]
    codes = torch.arange(2**n, device=x.device)
    masks = ((codes.unsqueeze(1) >> torch.arange(n, device=x.device)) & 1).bool()
    v = coalition_values(model, x, baseline, target, masks)
    phi = torch.zeros_like(x)
    for i in range(n):
        without = ~masks[:, i]
        with_i = codes[without] | (1 << i)
        phi[:, i] = (v[with_i] - v[without]).mean(0)
    return phi


def permutations_summed(model, x, baseline, perms, target=None):
    return shapley_permutations(model, x, baseline, perms, target) * perms.shape[0]


def permutations_as_ranks(model, x, baseline, perms, target=None):
    return shapley_permutations(model, x, baseline, perms.argsort(1), target)


def relu_moments_with_std(mean, var):
    return probabilistic.relu_moments(mean, var * var)


def relu_moments_nan_at_zero_variance(mean, var):
    sigma = var.sqrt()
    r = mean / sigma
    cdf, pdf = torch.special.ndtr(r), torch.exp(-0.5 * r * r) / math.sqrt(2 * math.pi)
    m1 = mean * cdf + sigma * pdf
    m2 = (mean**2 + var) * cdf + mean * sigma * pdf
    return m1, (m2 - m1**2).clamp_min(0)


def table_gaps_signed(table, x):
    gxi = (table["gradient_x_input"] - table["saliency"] * x).abs().max()
    ig = (table["integrated_gradients"].sum() - table["shapley"].sum()).abs()
    return {"gxi_vs_saliency": gxi.item(), "ig_vs_shapley": ig.item()}


def table_gaps_wrong_keys(table, x):
    return {"gxi": 0.0, "ig": 0.0}


def randomize_in_place(model, generator):
    models = [copy.deepcopy(model)]
    for layer in reversed(model.layers):
        with torch.no_grad():
            layer.weight.normal_(0, float(layer.weight.std()), generator=generator)
        models.append(copy.deepcopy(model))
    return models


def randomize_bottom_up(model, generator):
    models = [copy.deepcopy(model)]
    current = copy.deepcopy(model)
    for layer in current.layers:
        with torch.no_grad():
            s = layer.weight.std()
            for p in (layer.weight, layer.bias):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) * s)
        models.append(copy.deepcopy(current))
    return models


def randomize_with_global_rng(model, generator):
    models = [copy.deepcopy(model)]
    current = copy.deepcopy(model)
    for layer in reversed(current.layers):
        with torch.no_grad():
            s = layer.weight.std()
            for p in (layer.weight, layer.bias):
                p.copy_(torch.randn_like(p) * s)
        models.append(copy.deepcopy(current))
    return models


def randomize_unit_variance(model, generator):
    models = [copy.deepcopy(model)]
    current = copy.deepcopy(model)
    for layer in reversed(current.layers):
        with torch.no_grad():
            for p in (layer.weight, layer.bias):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device))
        models.append(copy.deepcopy(current))
    return models


@pytest.mark.parametrize(
    "check, wrong, message",
    [
        (checks.check_saliency, signed_saliency, "signed gradient"),
        (checks.check_saliency, saliency_of_all_outputs, "selected output"),
        (checks.check_saliency, saliency_in_float32, "should have dtype torch.float64"),
        (checks.check_gradient_x_input, abs_gradient_x_input, "keep the sign"),
        (checks.check_gradient_x_input, saliency, "values differ"),
        (checks.check_integrated_gradients, left_riemann_ig, "left Riemann"),
        (checks.check_integrated_gradients, ig_without_delta, "expected a pair"),
        (checks.check_integrated_gradients, ig_with_wrong_delta, "delta subtracts the gain"),
        (checks.check_integrated_gradients, ig_modifying_x, "modified its input 'x'"),
        (checks.check_shapley_exact, shapley_with_uniform_weights, "efficiency fails"),
        (checks.check_shapley_permutations, permutations_summed, "average instead"),
        (checks.check_shapley_permutations, permutations_as_ranks, "as ranks"),
        (checks.check_relu_moments, relu_moments_with_std, "sigma = sqrt"),
        (checks.check_relu_moments, relu_moments_nan_at_zero_variance, "where var = 0"),
        (checks.check_table_gaps, table_gaps_signed, "either sign"),
        (checks.check_table_gaps, table_gaps_wrong_keys, "expected a dict with keys"),
        (checks.check_cascading_randomization, randomize_in_place, "original model"),
        (checks.check_cascading_randomization, randomize_bottom_up, "counting from the output"),
        (checks.check_cascading_randomization, randomize_with_global_rng, "global random state"),
        (checks.check_cascading_randomization, randomize_unit_variance, "standard deviation"),
        (checks.check_shapley_exact, lambda *a: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_checks_reject_typical_mistakes_with_a_precise_message(check, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check(wrong)


@pytest.mark.parametrize("name", sorted(ANSWERS))
def test_an_unfinished_exercise_raises_not_implemented_error(name):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        getattr(checks, name)(stub)
