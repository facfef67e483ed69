"""The exercise checks of lab 1 (labcore.checks.mlp): they accept right answers, reject typical
mistakes with a message that names the cause, and let an unfinished exercise's error through."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from labcore import mlp
from labcore.checks import CheckFailed
from labcore.checks import mlp as checks


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models train fastest on one thread; on a busy machine two threads can be 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ reference answers
def layer_forward(x, W, b, activation):
    z = x @ W.T
    return activation(z + b if b is not None else z)


def mlp_forward(params, x, activation):
    for l, (W, b) in enumerate(params):
        x = layer_forward(x, W, b, activation if l < len(params) - 1 else (lambda z: z))
    return x


def mlp_backward(params, x, grad_out, activation):
    _, cache = mlp.manual_forward(params, x, activation)
    return mlp.manual_backward(params, cache, grad_out)


def relu_interpolant_params(knots_x, knots_y):
    net = mlp.relu_interpolant(knots_x, knots_y)
    return (
        net.layers[0].weight.detach(),
        net.layers[0].bias.detach(),
        net.layers[1].weight.detach(),
        net.layers[1].bias.detach(),
    )


def train_classifier(model, X, y, epochs=30, batch_size=32, lr=3e-3, seed=0):
    history = mlp.train(
        model, (X, y), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=False
    )
    return history.epoch_loss()


def geometry_experiment(activation, X, y, *, width=100, steps=200, seed=0):
    torch.manual_seed(seed)
    n_classes = int(y.max()) + 1
    model = mlp.MLP([X.shape[1], width, n_classes], activation).to(X.device)
    mlp.train(model, (X, y), steps=steps, lr=1e-2, batch_size=len(X), seed=seed, progress=False)
    with torch.no_grad():
        H = model.forward_with_intermediates(X)[2][0]
    Y = F.one_hot(y, n_classes).to(X.dtype)
    return model, {
        "input": mlp.linear_cka(H, X).item(),
        "target": mlp.linear_cka(H, Y).item(),
    }


CHECKS_AND_ANSWERS = [
    (checks.check_layer_forward, layer_forward),
    (checks.check_mlp_forward, mlp_forward),
    (checks.check_mlp_backward, mlp_backward),
    (checks.check_relu_interpolant_params, relu_interpolant_params),
    (checks.check_linear_cka, mlp.linear_cka),
    (checks.check_geometry_experiment, geometry_experiment),
    (checks.check_train_classifier, train_classifier),
]


def test_checks_accept_the_reference_answers(capsys):
    for check, answer in CHECKS_AND_ANSWERS:
        check(answer)
    out = capsys.readouterr().out
    assert out.count("\u2714") == len(CHECKS_AND_ANSWERS), out
    assert "test accuracy 0.9" in out


def test_every_check_leaves_the_global_rng_and_default_dtype_alone():
    """Each check, run with the solution notebook's answer (``tests/mistakes/lab1.py``), leaves the
    caller's global RNG state and default dtype as they were. geometry_experiment seeds the global
    RNG by its statement: its check restores the state."""
    from mistakes import lab1

    for function, answer in lab1.SOLUTIONS.items():
        state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
        getattr(checks, f"check_{function}")(answer)
        assert torch.equal(state, torch.random.get_rng_state()), function
        assert torch.get_default_dtype() == dtype, function


# ------------------------------------------------------------------ typical mistakes
def _backward_sigma_prime_at_a(params, x, grad_out, activation):
    """Takes sigma' at a = sigma(z) instead of at z: right for the last layer only."""
    _, cache = mlp.manual_forward(params, x, activation)
    sigma, sigma_prime = (
        mlp.ACTIVATION_FUNCTIONS[activation],
        mlp.ACTIVATION_DERIVATIVES[activation],
    )
    grads, delta = [], grad_out
    for l in range(len(params) - 1, -1, -1):
        W, b = params[l]
        grads.append((delta.T @ cache.a[l], delta.sum(0)))
        delta = delta @ W
        if l > 0:
            delta = delta * sigma_prime(sigma(cache.z[l - 1]))
    return grads[::-1]


def _backward_with_autograd(params, x, grad_out, activation):
    leaves = [(W.clone().requires_grad_(), b.clone().requires_grad_()) for W, b in params]
    out, _ = mlp.manual_forward(leaves, x, activation)
    (out * grad_out).sum().backward()
    return [(W.grad, b.grad) for W, b in leaves]


def _interpolant_without_left_unit(knots_x, knots_y):
    W1, b1, W2, b2 = relu_interpolant_params(knots_x, knots_y)
    keep = torch.ones(W1.shape[0], dtype=torch.bool)
    keep[1] = False  # the unit -s_0 ReLU(x_0 - x) that continues the first slope to the left
    return W1[keep], b1[keep], W2[:, keep], b2


def _train_one_step(model, X, y, epochs=30, batch_size=32, lr=3e-3, seed=0):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for _ in range(2):
        loss = F.cross_entropy(model(X[:8]), y[:8])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _uncentred_cka(X, Y):
    return (Y.T @ X).square().sum() / ((X.T @ X).norm() * (Y.T @ Y).norm())


def _centring_in_place(X, Y):
    X -= X.mean(0)
    return mlp.linear_cka(X, Y)


def _geometry_untrained(activation, X, y, *, width=100, steps=200, seed=0):
    torch.manual_seed(seed)
    model = mlp.MLP([X.shape[1], width, 2], activation)
    H = model.forward_with_intermediates(X)[2][0].detach()
    return model, {"input": mlp.linear_cka(H, X).item(), "target": 0.5}


def _geometry_output_layer(activation, X, y, *, width=100, steps=200, seed=0):
    model, _ = geometry_experiment(activation, X, y, width=width, steps=steps, seed=seed)
    with torch.no_grad():
        out = model(X)
    Y = F.one_hot(y, 2).to(X.dtype)
    return model, {"input": mlp.linear_cka(out, X).item(), "target": mlp.linear_cka(out, Y).item()}


@pytest.mark.parametrize(
    "check, wrong, message",
    [
        (checks.check_layer_forward, lambda x, W, b, act: act(x @ W + b), "multiplies by W\\^T"),
        (
            checks.check_layer_forward,
            lambda x, W, b, act: act(x @ (W if W.shape[0] == W.shape[1] else W.T) + b),
            "instead of W\\^T",
        ),
        (checks.check_layer_forward, lambda x, W, b, act: x @ W.T + b, "apply the activation"),
        (checks.check_layer_forward, lambda x, W, b, act: act(x @ W.T + b), "b may be None"),
        (
            checks.check_layer_forward,
            lambda x, W, b, act: act(x.mul_(1) @ W.T + b).double(),
            "expected dtype torch.float32",
        ),
        (
            checks.check_mlp_forward,
            lambda params, x, act: act(mlp_forward(params, x, act)),
            "no activation after the last layer",
        ),
        (checks.check_mlp_backward, _backward_sigma_prime_at_a, "not at a = sigma\\(z\\)"),
        (checks.check_mlp_backward, _backward_with_autograd, "autograd is switched off"),
        (
            checks.check_mlp_backward,
            lambda p, x, g, a: [(gw.T, gb) for gw, gb in mlp_backward(p, x, g, a)],
            "has the shape of W_l",
        ),
        (
            checks.check_mlp_backward,
            lambda p, x, g, a: [(gw, gb[None]) for gw, gb in mlp_backward(p, x, g, a)],
            "sum of delta_l over the batch",
        ),
        (checks.check_relu_interpolant_params, _interpolant_without_left_unit, "left of x_0"),
        (
            checks.check_relu_interpolant_params,
            lambda kx, ky: tuple(t.float() for t in relu_interpolant_params(kx, ky)),
            "knots' dtype",
        ),
        (
            checks.check_train_classifier,
            _train_one_step,
            "mean cross-entropy of the initial logits",
        ),
        (checks.check_train_classifier, lambda model, X, y, **kw: [1.0, 0.5], "initial logits"),
        (checks.check_linear_cka, _uncentred_cka, "centre each feature first"),
        (checks.check_linear_cka, _centring_in_place, "modified its input 'X' in place"),
        (checks.check_geometry_experiment, _geometry_untrained, "expected 100%"),
        (checks.check_geometry_experiment, _geometry_output_layer, "hidden layer"),
        (checks.check_layer_forward, lambda *args: 1 / 0, "raised ZeroDivisionError"),
    ],
)
def test_checks_reject_typical_mistakes_with_a_precise_message(check, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check(wrong)


def test_the_training_check_enforces_its_time_limit():
    with pytest.raises(CheckFailed, match="more than 0 s"):
        checks.check_train_classifier(train_classifier, time_limit=1e-9)


def test_failures_show_the_input_and_never_the_solution():
    with pytest.raises(CheckFailed) as info:
        checks.check_mlp_forward(
            lambda params, x, act: torch.zeros(x.shape[0], params[-1][0].shape[0])
        )
    message = str(info.value)
    assert message.startswith("[one layer") and "expected:" in message and "got:" in message
    assert "def " not in message and "return" not in message


def test_an_unfinished_exercise_raises_not_implemented_error():
    def stub(*args, **kwargs):
        raise NotImplementedError()

    for check, _ in CHECKS_AND_ANSWERS:
        with pytest.raises(NotImplementedError):
            check(stub)


def test_the_backward_check_holds_gradients_to_a_relative_error_of_1e_6():
    def slightly_off(params, x, grad_out, activation):
        return [(gw * (1 + 1e-5), gb) for gw, gb in mlp_backward(params, x, grad_out, activation)]

    with pytest.raises(CheckFailed, match="max relative error 1e-05 > 1e-06"):
        checks.check_mlp_backward(slightly_off)
