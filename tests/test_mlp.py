"""Tests of labcore.mlp: activations, the MLP, backpropagation by hand, training, CKA and RSA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from labcore import seed_everything
from labcore.data import digits, regression_1d
from labcore.mlp import (
    ACTIVATION_DERIVATIVES,
    ACTIVATION_FUNCTIONS,
    ACTIVATIONS,
    MLP,
    History,
    Lambda,
    PolyNorm,
    PolyReLU,
    accuracy,
    activation_statistics,
    count_linear_pieces,
    evaluate,
    get_activation,
    init_weights_,
    linear_cka,
    manual_backward,
    manual_forward,
    rdm,
    relu_interpolant,
    rsa,
    simplex_interpolate,
    train,
)

ELEMENTWISE = sorted(ACTIVATION_FUNCTIONS)


def max_rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: the error relative to the tensor's scale."""
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


# ------------------------------------------------------------------------------------------------
# activations


def test_registry_lists_every_activation():
    assert set(ACTIVATIONS) == {
        "relu", "tanh", "sigmoid", "gelu", "silu", "identity", "polyrelu", "polynorm"
    }  # fmt: skip
    assert set(ACTIVATION_FUNCTIONS) == set(ACTIVATION_DERIVATIVES)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_formulas_match_torch_modules(name):
    z = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert torch.allclose(ACTIVATION_FUNCTIONS[name](z), get_activation(name)(z), atol=1e-12)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_formulas_match_autograd(name):
    z = (torch.linspace(-5, 5, 100, dtype=torch.float64) + 0.013).requires_grad_()  # avoids 0
    (grad,) = torch.autograd.grad(ACTIVATION_FUNCTIONS[name](z).sum(), z)
    assert max_rel_error(ACTIVATION_DERIVATIVES[name](z.detach()), grad) <= 1e-12


def test_polyrelu_at_initialisation_is_mean_of_relu_powers():
    act = PolyReLU().double()
    x = torch.randn(4, 9, dtype=torch.float64)
    r = torch.relu(x)
    assert torch.allclose(act(x), (r + r**2 + r**3) / 3)
    assert act.weight.shape == (3,) and act.bias.shape == (1,)


def test_polynorm_matches_reference_formula():
    act = PolyNorm().double()
    with torch.no_grad():
        act.weight.copy_(torch.tensor([0.2, -0.5, 1.5]))
        act.bias.fill_(0.3)
    x = torch.randn(5, 6, dtype=torch.float64)

    def norm(v):
        return v / torch.sqrt((v**2).mean(-1, keepdim=True) + 1e-6)

    want = 0.2 * norm(x) - 0.5 * norm(x**2) + 1.5 * norm(x**3) + 0.3
    assert torch.allclose(act(x), want, atol=1e-12)


@pytest.mark.parametrize("cls", [PolyReLU, PolyNorm])
def test_polynomial_activations_learn_their_coefficients(cls):
    act = cls(order=4)
    act(torch.randn(3, 8)).square().sum().backward()
    assert act.weight.grad.shape == (4,) and act.weight.grad.abs().sum() > 0
    assert act.bias.grad is not None


def test_get_activation_accepts_names_modules_classes_and_callables():
    assert isinstance(get_activation("ReLU"), nn.ReLU)
    shared = PolyReLU()
    copy = get_activation(shared)
    assert isinstance(copy, PolyReLU) and copy is not shared
    assert isinstance(get_activation(nn.Tanh), nn.Tanh)
    wrapped = get_activation(torch.sin)
    assert isinstance(wrapped, Lambda)
    assert torch.equal(wrapped(torch.ones(2)), torch.sin(torch.ones(2)))


def test_get_activation_rejects_unknown_names_listing_valid_ones():
    with pytest.raises(ValueError, match=r"activation must be one of .*'relu'.*got 'swish'"):
        get_activation("swish")
    with pytest.raises(TypeError, match="activation"):
        get_activation(3)


# ------------------------------------------------------------------------------------------------
# the MLP


@pytest.mark.parametrize("shape", [(1, 5), (7, 5), (2, 3, 5), (5,)])
def test_mlp_accepts_any_batch_and_leading_dimensions(shape):
    model = MLP([5, 8, 3])
    x = torch.randn(shape)
    out = model(x)
    assert out.shape == (*shape[:-1], 3)
    # batched equals unbatched
    assert torch.allclose(out.reshape(-1, 3), model(x.reshape(-1, 5)), atol=1e-6)


def test_mlp_keeps_float64():
    model = MLP([4, 6, 6, 2], activation="tanh").double()
    out = model(torch.randn(3, 4, dtype=torch.float64))
    assert out.dtype == torch.float64


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_runs_on_meta_tensors(activation):
    model = MLP([4, 6, 6, 2], activation=activation).to("meta")
    out = model(torch.empty(3, 4, device="meta"))
    assert out.device.type == "meta" and out.shape == (3, 2)


def test_mlp_structure_and_parameters_list():
    model = MLP([4, 6, 2], activation="gelu", bias=False)
    assert [type(m) for m in model.layers] == [nn.Linear, nn.Linear]
    assert len(model.activations) == 1 and isinstance(model.activations[0], nn.GELU)
    params = model.parameters_list()
    assert [tuple(W.shape) for W, _ in params] == [(6, 4), (2, 6)]
    assert all(b is None for _, b in params)
    assert params[0][0] is model.layers[0].weight
    assert model.activation_name == "gelu"


def test_mlp_layers_with_learnable_activation_get_their_own_parameters():
    model = MLP([3, 4, 4, 2], activation=PolyReLU())
    a, b = model.activations
    assert a.weight is not b.weight


def test_single_layer_mlp_is_affine():
    model = MLP([3, 2], activation="tanh")
    x = torch.randn(4, 3)
    layer = model.layers[0]
    assert torch.allclose(model(x), x @ layer.weight.T + layer.bias)


@pytest.mark.parametrize(
    ("sizes", "error", "match"),
    [
        ([5], ValueError, r"sizes must have at least 2 entries"),
        ([], ValueError, r"sizes must have at least 2 entries"),
        ([5, 0, 3], ValueError, r"sizes must be positive ints, got sizes\[1\] = 0"),
        ([5, -2], ValueError, r"sizes\[1\] = -2"),
        ([5, 2.5], TypeError, r"sizes\[1\] must be an int"),
        ("5, 3", TypeError, r"sizes must be a list of ints"),
    ],
)
def test_mlp_rejects_bad_sizes(sizes, error, match):
    with pytest.raises(error, match=match):
        MLP(sizes)


def test_mlp_rejects_wrong_input_width_naming_both_shapes():
    model = MLP([5, 4, 2])
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 5\), got \(7, 3\)"):
        model(torch.randn(7, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        model(np.zeros((2, 5)))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(2, 5, dtype=torch.int64))


def test_mlp_explains_dtype_mismatch():
    model = MLP([5, 4, 2])
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the MLP's parameters"):
        model(torch.randn(3, 5, dtype=torch.float64))


def test_forward_with_intermediates_agrees_with_forward():
    model = MLP([4, 6, 5, 3], activation="tanh")
    x = torch.randn(8, 4)
    out, zs, hs = model.forward_with_intermediates(x)
    assert torch.equal(out, model(x))
    assert [z.shape[-1] for z in zs] == [6, 5, 3] and [h.shape[-1] for h in hs] == [6, 5]
    assert torch.allclose(hs[0], torch.tanh(zs[0]))


# ------------------------------------------------------------------------------------------------
# backpropagation by hand


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", ELEMENTWISE)
def test_manual_backward_equals_autograd(depth, activation):
    sizes = [5, 7, 6, 4, 3][: depth + 1]
    model = MLP(sizes, activation=activation).double()
    x = torch.randn(9, sizes[0], dtype=torch.float64, requires_grad=True)
    out = model(x)
    grad_out = torch.randn_like(out)  # the loss is sum(out * grad_out)
    (out * grad_out).sum().backward()

    params = [(W.detach(), b.detach()) for W, b in model.parameters_list()]
    manual_out, cache = manual_forward(params, x.detach(), activation=activation)
    grads, grad_x = manual_backward(params, cache, grad_out, return_input_grad=True)

    assert max_rel_error(manual_out, out.detach()) <= 1e-12
    assert len(grads) == depth
    for (dW, db), layer in zip(grads, model.layers, strict=True):
        assert dW.shape == layer.weight.shape and db.shape == layer.bias.shape
        assert max_rel_error(dW, layer.weight.grad) <= 1e-6
        assert max_rel_error(db, layer.bias.grad) <= 1e-6
    assert max_rel_error(grad_x, x.grad) <= 1e-6


def test_manual_backward_without_bias_and_default_activation():
    model = MLP([3, 4, 2], activation="silu", bias=False).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    out = model(x)
    out.square().sum().backward()
    params = [(W.detach(), None) for W, _ in model.parameters_list()]
    manual_out, cache = manual_forward(params, x, activation="silu")
    grads = manual_backward(params, cache, 2 * manual_out)  # d/dout sum(out^2) = 2 out
    for (dW, db), layer in zip(grads, model.layers, strict=True):
        assert db is None
        assert max_rel_error(dW, layer.weight.grad) <= 1e-6


def test_manual_forward_and_backward_reject_bad_input():
    params = [(torch.randn(4, 3), torch.randn(4)), (torch.randn(2, 4), torch.randn(2))]
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\), got \(5, 4\)"):
        manual_forward(params, torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"activation must be one of"):
        manual_forward(params, torch.randn(5, 3), activation="polyrelu")
    bad = [(torch.randn(4, 3), None), (torch.randn(2, 5), None)]
    with pytest.raises(ValueError, match=r"params\[1\]\[0\] \(W_2\) must have shape \(\*, 4\)"):
        manual_forward(bad, torch.randn(5, 3))
    _, cache = manual_forward(params, torch.randn(5, 3), activation="tanh")
    with pytest.raises(ValueError, match=r"grad_out must have the output's shape \(5, 2\)"):
        manual_backward(params, cache, torch.randn(5, 3))
    with pytest.raises(ValueError, match="differs from 'tanh'"):
        manual_backward(params, cache, torch.randn(5, 2), activation="relu")


def test_manual_pass_runs_on_meta():
    params = [(torch.empty(4, 3, device="meta"), torch.empty(4, device="meta"))]
    params.append((torch.empty(2, 4, device="meta"), torch.empty(2, device="meta")))
    out, cache = manual_forward(params, torch.empty(5, 3, device="meta"), activation="gelu")
    grads, grad_x = manual_backward(params, cache, torch.empty(5, 2, device="meta"),
                                    return_input_grad=True)  # fmt: skip
    assert out.device.type == "meta" and grad_x.shape == (5, 3)
    assert all(dW.device.type == "meta" for dW, _ in grads)


# ------------------------------------------------------------------------------------------------
# initialisation and the ReLU interpolant


def test_init_weights_gives_the_scheme_standard_deviation():
    model = MLP([400, 300, 200])
    init_weights_(model, "he", seed=0)
    assert model.layers[0].weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert model.layers[0].bias.abs().max() == 0
    init_weights_(model, "xavier", seed=0)
    assert model.layers[1].weight.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.02)
    init_weights_(model, "normal", std=0.5, gain=2.0)
    assert model.layers[1].weight.std().item() == pytest.approx(1.0, rel=0.02)
    with pytest.raises(ValueError, match="scheme must be one of"):
        init_weights_(model, "orthogonal")


def test_init_weights_is_reproducible_by_seed():
    a, b = MLP([5, 6, 2]), MLP([5, 6, 2])
    init_weights_(a, "he", seed=3)
    init_weights_(b, "he", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_he_initialisation_keeps_relu_activations_stable_across_depth():
    depth, width = 12, 256
    x = torch.randn(512, width)
    he = init_weights_(MLP([width] * (depth + 1), activation="relu"), "he", seed=0)
    small = init_weights_(MLP([width] * (depth + 1), activation="relu"), "normal", std=0.02)
    stats_he = activation_statistics(he, x)
    stats_small = activation_statistics(small, x)
    assert stats_he["pre_std"].shape == (depth,)
    ratio = stats_he["pre_std"][-1] / stats_he["pre_std"][0]
    assert 0.3 < ratio < 3  # stays of order one over 12 layers
    assert stats_small["pre_std"][-1] < 1e-6 * stats_small["pre_std"][0]  # vanishes


def test_relu_interpolant_matches_np_interp():
    g = np.random.default_rng(0)
    kx = np.sort(g.uniform(-3, 3, size=12))
    ky = g.normal(size=12)
    model = relu_interpolant(kx, ky, dtype=torch.float64)
    assert model.sizes == (1, 12, 1)
    t = np.linspace(kx[0], kx[-1], 2001)
    got = model(torch.as_tensor(t)[:, None]).detach().numpy()[:, 0]
    np.testing.assert_allclose(got, np.interp(t, kx, ky), atol=1e-6, rtol=0)


def test_relu_interpolant_extends_linearly_and_accepts_tensors():
    kx = torch.tensor([0.0, 1.0, 3.0])
    ky = torch.tensor([1.0, 3.0, 2.0])
    model = relu_interpolant(kx, ky)
    assert model.layers[0].weight.dtype == torch.float32
    x = torch.tensor([[-2.0], [5.0]])
    want = torch.tensor([[1.0 - 2 * 2.0], [2.0 - 0.5 * 2.0]])  # slopes 2 on the left, -1/2 right
    assert torch.allclose(model(x), want, atol=1e-5)


def test_relu_interpolant_rejects_bad_knots():
    with pytest.raises(ValueError, match="strictly increasing"):
        relu_interpolant([0.0, 2.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="same shape"):
        relu_interpolant([0.0, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 knots"):
        relu_interpolant([0.0], [1.0])


# ------------------------------------------------------------------------------------------------
# training


@pytest.fixture
def one_thread():
    """Matrices this small train fastest on one CPU thread, and stay fast on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_reaches_95_percent_on_digits_in_ten_epochs(one_thread):
    X_train, y_train, X_test, y_test = digits()
    seed_everything(0)
    model = MLP([64, 128, 10])
    history = train(
        model, (X_train, y_train), epochs=10, lr=1e-2, eval_data=(X_test, y_test),
        progress=False, seed=0,
    )  # fmt: skip
    test_accuracy = accuracy(model, X_test, y_test)
    assert test_accuracy >= 0.95
    assert history.eval_accuracy[-1] == pytest.approx(test_accuracy)
    assert not model.training
    steps_per_epoch = math.ceil(X_train.shape[0] / 64)
    assert history.steps_per_epoch == steps_per_epoch
    assert len(history.train_loss) == 10 * steps_per_epoch
    assert history.eval_step == [steps_per_epoch * (e + 1) for e in range(10)]
    assert len(history.epoch_loss()) == 10
    assert history.epoch_loss()[-1] < history.epoch_loss()[0] / 5


def test_train_mse_regression_fits_a_sine(one_thread):
    x, y = regression_1d(256, "sin", noise=0.05, seed=0)
    x_test, y_test = regression_1d(256, "sin", noise=0.0, seed=1)
    model = MLP([1, 32, 32, 1], activation="tanh")
    history = train(
        model, (x, y), loss="mse", steps=300, lr=1e-2, batch_size=64,
        eval_data=(x_test, y_test), eval_every=100, progress=False, seed=0,
    )  # fmt: skip
    assert history.eval_step == [100, 200, 300]
    assert history.eval_accuracy == []
    assert history.eval_loss[-1] < 0.01  # noise-free targets: the fit error alone
    assert evaluate(model, x_test, y_test, loss="mse")["loss"] == pytest.approx(
        history.eval_loss[-1]
    )


def test_train_is_reproducible_by_seed():
    X, y = digits().X_train[:300], digits().y_train[:300]

    def run(seed):
        seed_everything(1)
        model = MLP([64, 16, 10])
        return train(model, (X, y), steps=30, batch_size=32, seed=seed, progress=False)

    first, second, other = run(0), run(0), run(1)
    assert first == second  # History ignores the wall-clock time in ==
    assert first.train_loss != other.train_loss


def test_train_accepts_tensor_dataset_sgd_and_callable_loss():
    X, y = torch.randn(100, 4), torch.randint(0, 3, (100,))
    model = MLP([4, 8, 3])
    history = train(
        model, torch.utils.data.TensorDataset(X, y), loss=nn.CrossEntropyLoss(), epochs=2,
        batch_size=30, optimizer="sgd", momentum=0.9, lr=0.1, eval_data=(X, y), progress=False,
    )  # fmt: skip
    assert len(history.train_loss) == 8  # 4 mini-batches (30, 30, 30, 10) per epoch
    assert len(history.eval_accuracy) == 2


def test_cross_entropy_accepts_sequences_and_probabilities():
    class Bigram(nn.Module):  # logits (batch, pos, d_vocab) from token ids (batch, pos)
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(7, 7)

        def forward(self, tokens):
            return self.table(tokens)

    tokens = torch.randint(0, 7, (20, 5))
    targets = tokens.roll(-1, dims=1)
    model = Bigram()
    history = train(model, (tokens, targets), steps=4, eval_data=(tokens, targets), progress=False)
    want = nn.functional.cross_entropy(model(tokens).reshape(-1, 7), targets.reshape(-1))
    assert history.eval_loss[-1] == pytest.approx(want.item(), rel=1e-5)
    want_acc = (model(tokens).argmax(-1) == targets).double().mean().item()
    assert history.eval_accuracy[-1] == pytest.approx(want_acc)

    X, P = torch.randn(10, 4), torch.softmax(torch.randn(10, 3), -1)  # soft labels
    mlp = MLP([4, 3])
    want = nn.functional.cross_entropy(mlp(X), P).item()
    assert evaluate(mlp, X, P)["loss"] == pytest.approx(want, rel=1e-6)
    assert "accuracy" not in evaluate(mlp, X, P)


def test_train_moves_data_to_the_models_dtype():
    model = MLP([4, 3]).double()
    X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    history = train(model, (X, y), steps=3, progress=False)
    assert len(history.train_loss) == 3


def test_train_shows_a_progress_bar_only_when_asked(capsys):
    X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    train(MLP([4, 3]), (X, y), steps=3, progress=False)
    assert capsys.readouterr().err == ""
    train(MLP([4, 3]), (X, y), steps=3, progress=True)
    assert "train" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 5, "epochs": 1}, ValueError, "exactly one of steps and epochs"),
        ({}, ValueError, "exactly one of steps and epochs"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"steps": 5, "loss": "hinge"}, ValueError, "loss must be one of"),
        ({"steps": 5, "optimizer": "rmsprop"}, ValueError, "optimizer must be one of"),
        ({"steps": 5, "lr": -1.0}, ValueError, "lr must be > 0"),
        ({"steps": 5, "batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ],
)
def test_train_rejects_bad_arguments(kwargs, error, match):
    X, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    with pytest.raises(error, match=match):
        train(MLP([4, 3]), (X, y), progress=False, **kwargs)


def test_train_rejects_mismatched_data_and_targets():
    model = MLP([4, 1])
    with pytest.raises(ValueError, match=r"same number of samples, got X \(20, 4\) and y \(19,\)"):
        train(model, (torch.randn(20, 4), torch.randn(19)), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"loss='mse' needs .* output \(20, 1\) and y \(20,\)"):
        train(
            model, (torch.randn(20, 4), torch.randn(20)), loss="mse", steps=1, batch_size=20,
            progress=False,
        )  # fmt: skip
    with pytest.raises(TypeError, match="train_data must be a pair"):
        train(model, torch.randn(20, 4), steps=1, progress=False)


def test_evaluate_and_accuracy_on_a_known_model():
    model = MLP([3, 3], activation="identity")
    with torch.no_grad():
        model.layers[0].weight.copy_(10 * torch.eye(3))
        model.layers[0].bias.zero_()
    X = torch.eye(3).repeat(4, 1)  # (12, 3): one-hot inputs
    y = torch.arange(3).repeat(4)
    assert accuracy(model, X, y, batch_size=5) == 1.0
    assert accuracy(model, X, (y + 1) % 3) == 0.0
    metrics = evaluate(model, X, y, batch_size=5)
    want = torch.nn.functional.cross_entropy(model(X), y).item()
    assert metrics["loss"] == pytest.approx(want, rel=1e-6)
    assert model.training  # evaluate restores the mode it found


def test_history_epoch_loss():
    h = History(train_loss=[4.0, 2.0, 1.0, 3.0, 5.0], steps_per_epoch=2)
    assert h.epoch_loss() == [3.0, 2.0, 5.0]


# ------------------------------------------------------------------------------------------------
# representational geometry


def random_orthogonal(n: int, dtype=torch.float64) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=dtype))
    return q


def test_linear_cka_properties():
    X = torch.randn(50, 10, dtype=torch.float64)
    Y = X @ torch.randn(10, 6, dtype=torch.float64) + 0.5 * torch.randn(50, 6, dtype=torch.float64)
    assert linear_cka(X, X).item() == pytest.approx(1.0, abs=1e-12)
    c = linear_cka(X, Y).item()
    assert 0.0 < c < 1.0
    assert linear_cka(Y, X).item() == pytest.approx(c, abs=1e-12)  # symmetric
    Q = random_orthogonal(10)
    assert linear_cka(X @ Q, Y).item() == pytest.approx(c, abs=1e-12)  # orthogonal invariance
    assert linear_cka(3.7 * X, Y).item() == pytest.approx(c, abs=1e-12)  # isotropic scaling
    assert linear_cka(X + 2.0, Y).item() == pytest.approx(c, abs=1e-12)  # translation
    # not invariant to anisotropic scaling
    D = torch.diag(torch.logspace(-2, 2, 10, dtype=torch.float64))
    assert abs(linear_cka(X @ D, Y).item() - c) > 1e-3


def test_linear_cka_matches_the_hsic_formula_with_gram_matrices():
    X = torch.randn(30, 7, dtype=torch.float64)
    Y = torch.randn(30, 4, dtype=torch.float64)
    H = torch.eye(30, dtype=torch.float64) - 1.0 / 30

    def hsic(K, L):
        return torch.trace(K @ H @ L @ H)

    K, L = X @ X.T, Y @ Y.T
    want = hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L))
    assert linear_cka(X, Y).item() == pytest.approx(want.item(), rel=1e-10)


def test_linear_cka_batched_equals_unbatched_and_runs_on_meta():
    X = torch.randn(3, 20, 5)
    Y = torch.randn(3, 20, 4)
    batched = linear_cka(X, Y)
    assert batched.shape == (3,)
    for i in range(3):
        assert batched[i].item() == pytest.approx(linear_cka(X[i], Y[i]).item(), rel=1e-5)
    meta = linear_cka(torch.empty(2, 20, 5, device="meta"), torch.empty(2, 20, 4, device="meta"))
    assert meta.device.type == "meta" and meta.shape == (2,)
    with pytest.raises(ValueError, match=r"got X \(20, 5\) and Y \(19, 4\)"):
        linear_cka(torch.randn(20, 5), torch.randn(19, 4))


@pytest.mark.parametrize("metric", ["correlation", "cosine", "euclidean"])
def test_rdm_matches_scipy(metric):
    from scipy.spatial.distance import pdist, squareform

    X = torch.randn(15, 6, dtype=torch.float64)
    want = squareform(pdist(X.numpy(), metric=metric))
    np.testing.assert_allclose(rdm(X, metric).numpy(), want, atol=1e-12)


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_rsa_matches_scipy_with_ties(method):
    from scipy.spatial.distance import pdist
    from scipy.stats import pearsonr, spearmanr

    labels = torch.arange(20) % 4
    targets = torch.nn.functional.one_hot(labels).double()  # an RDM with many ties
    hidden = targets @ torch.randn(4, 8, dtype=torch.float64) + torch.randn(20, 8).double()
    dx, dy = pdist(hidden.numpy(), "correlation"), pdist(targets.numpy(), "correlation")
    want = (spearmanr if method == "spearman" else pearsonr)(dx, dy)[0]
    assert rsa(hidden, targets, method=method).item() == pytest.approx(want, abs=1e-10)


def test_rsa_properties():
    X = torch.randn(25, 6, dtype=torch.float64)
    assert rsa(X, X).item() == pytest.approx(1.0)
    Y = torch.randn(25, 3, dtype=torch.float64)
    Q = random_orthogonal(6)
    r = rsa(X, Y, metric="euclidean")
    assert rsa(2.5 * X @ Q, Y, metric="euclidean").item() == pytest.approx(r.item(), abs=1e-12)
    assert rsa(Y, X, metric="euclidean").item() == pytest.approx(r.item(), abs=1e-12)
    batched = rsa(torch.stack([X, 2 * X]), torch.stack([Y, Y]))
    assert batched.shape == (2,)
    assert torch.allclose(batched, rsa(X, Y).expand(2))
    with pytest.raises(ValueError, match="method must be one of"):
        rsa(X, Y, method="kendall")
    with pytest.raises(ValueError, match="at least 3 samples"):
        rsa(X[:2], Y[:2])


# ------------------------------------------------------------------------------------------------
# Counting linear pieces, interpolating on a grid of [0, 1]^d
# ------------------------------------------------------------------------------------------------


def test_count_linear_pieces_of_a_relu_network_with_kinks_on_the_grid():
    kinks = torch.tensor([-1.5, -0.25, 0.5, 2.0], dtype=torch.float64)
    knots = torch.cat([kinks[:1] - 1, kinks, kinks[-1:] + 1])
    values = torch.tensor([0.0, 1.0, -1.0, 2.0, 0.5, 0.5], dtype=torch.float64)
    net = relu_interpolant(knots, values)
    x = torch.linspace(-4, 4, 801, dtype=torch.float64)  # step 0.01: contains every knot
    with torch.no_grad():
        y = net(x[:, None]).squeeze(1)
    assert count_linear_pieces(x, y) == len(kinks) + 1  # K pieces have K - 1 kinks
    assert count_linear_pieces(x, 3 * x - 1) == 1


def test_count_linear_pieces_of_the_sawtooth_is_two_to_the_depth():
    x = torch.linspace(0, 1, 2**10 + 1, dtype=torch.float64)
    y = x
    for depth in range(1, 9):
        y = 2 * torch.relu(y) - 4 * torch.relu(y - 0.5)  # the tent map
        assert count_linear_pieces(x, y) == 2**depth


def test_count_linear_pieces_rejects_bad_input():
    x = torch.linspace(0, 1, 5)
    with pytest.raises(ValueError, match="strictly increasing"):
        count_linear_pieces(x.flip(0), x)
    with pytest.raises(ValueError, match="same shape"):
        count_linear_pieces(x, x[:3])
    with pytest.raises(TypeError, match="floating"):
        count_linear_pieces(torch.arange(5), x)


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_simplex_interpolate_is_exact_on_affine_functions_and_at_grid_points(d):
    gen = torch.Generator().manual_seed(d)
    a = torch.randn(d, generator=gen, dtype=torch.float64)
    points = torch.rand(500, d, generator=gen, dtype=torch.float64)

    def affine(p):
        return p @ a + 0.5

    assert torch.allclose(simplex_interpolate(affine, 5, points), affine(points), atol=1e-12)
    grid_points = torch.randint(0, 7, (200, d), generator=gen).double() / 6

    def smooth(p):
        return torch.cos(3 * p).prod(1)

    assert torch.allclose(simplex_interpolate(smooth, 6, grid_points), smooth(grid_points))


def test_simplex_interpolate_in_one_dimension_is_np_interp():
    x = torch.rand(300, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = np.linspace(0, 1, 9)
    got = simplex_interpolate(lambda p: torch.sin(5 * p[:, 0]), 8, x)
    assert np.allclose(got.numpy(), np.interp(x[:, 0].numpy(), grid, np.sin(5 * grid)))


def test_simplex_interpolate_is_continuous_and_converges_at_rate_h_squared():
    gen = torch.Generator().manual_seed(1)
    points = torch.rand(4000, 2, generator=gen, dtype=torch.float64)

    def smooth(p):
        return torch.cos(3 * p).prod(1)

    errors = [
        (simplex_interpolate(smooth, m, points) - smooth(points)).abs().max() for m in (8, 16, 32)
    ]
    for coarse, fine in zip(errors[:-1], errors[1:], strict=True):
        assert 3.5 < coarse / fine < 4.5  # halving h divides the error by about 4
    # continuity across a cell face and a simplex face: nearby points give nearby values
    p = torch.tensor(
        [[0.5 - 1e-9, 0.3], [0.5 + 1e-9, 0.3], [0.3, 0.3 - 1e-9], [0.3, 0.3 + 1e-9]],
        dtype=torch.float64,
    )
    values = simplex_interpolate(smooth, 4, p)
    assert abs(values[0] - values[1]) < 1e-7 and abs(values[2] - values[3]) < 1e-7


def test_simplex_interpolate_keeps_dtype_and_runs_on_meta():
    points = torch.rand(10, 3)
    out = simplex_interpolate(lambda p: p.sum(1), 4, points)
    assert out.dtype == torch.float32 and out.shape == (10,)
    meta = simplex_interpolate(lambda p: p.sum(1), 4, torch.empty(10, 3, device="meta"))
    assert meta.device.type == "meta" and meta.shape == (10,)


def test_simplex_interpolate_rejects_bad_input():
    with pytest.raises(ValueError, match="points must lie"):
        simplex_interpolate(lambda p: p.sum(1), 4, torch.full((3, 2), 1.5))
    with pytest.raises(ValueError, match="m"):
        simplex_interpolate(lambda p: p.sum(1), 0, torch.rand(3, 2))
    with pytest.raises(ValueError, match=r"\(n,\) values"):
        simplex_interpolate(lambda p: p, 4, torch.rand(3, 2))
    with pytest.raises(ValueError, match="dimensions"):
        simplex_interpolate(lambda p: p.sum(1), 4, torch.rand(3))
