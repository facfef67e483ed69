"""Lab 1 (multilayer perceptrons): wrong answers a student might write, and other correct routes.

``MISTAKES[exercise]`` lists ``(name, function, hint)``: the check and the rubric must reject the
function, and the check's message must contain ``hint``. ``VALID[exercise]`` lists ``(name,
function)``: other correct implementations that both must accept. ``SOLUTIONS`` holds the lab's
own answers (the solution notebook's code). The ``mlp_forward`` entries call ``layer_forward`` from
this module's namespace, which the check and the rubric replace by the reference while they run.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from labcore import mlp

Tensor = torch.Tensor


# ============================================================================ the solutions
def layer_forward(x, W, b, activation):
    z = x @ W.T  # (batch, d_out)
    if b is not None:
        z = z + b
    return activation(z)


def mlp_forward(params, x, activation):
    for W, b in params[:-1]:
        x = layer_forward(x, W, b, activation)
    W, b = params[-1]
    return layer_forward(x, W, b, lambda z: z)


def mlp_backward(params, x, grad_out, activation):
    sigma = mlp.ACTIVATION_FUNCTIONS[activation]
    sigma_prime = mlp.ACTIVATION_DERIVATIVES[activation]
    inputs, zs, a = [], [], x
    for l, (W, b) in enumerate(params):
        inputs.append(a)  # a_{l-1}
        zs.append(a @ W.T + b)  # z_l
        a = sigma(zs[-1]) if l < len(params) - 1 else zs[-1]
    grads, delta = [], grad_out  # delta_L
    for l in range(len(params) - 1, -1, -1):
        W, _ = params[l]
        grads.append((delta.T @ inputs[l], delta.sum(0)))
        if l > 0:
            delta = (delta @ W) * sigma_prime(zs[l - 1])
    return grads[::-1]


def relu_interpolant_params(knots_x, knots_y):
    slopes = (knots_y[1:] - knots_y[:-1]) / (knots_x[1:] - knots_x[:-1])  # (K,)
    W1 = torch.ones(len(knots_x), 1, dtype=knots_x.dtype, device=knots_x.device)
    W1[1] = -1.0
    b1 = torch.cat([-knots_x[:1], knots_x[:1], -knots_x[1:-1]])  # (K + 1,)
    W2 = torch.cat([slopes[:1], -slopes[:1], slopes[1:] - slopes[:-1]])[None, :]  # (1, K + 1)
    return W1, b1, W2, knots_y[:1].clone()


def _train(model, X, y, epochs, batch_size, lr, seed, *, softmax=False, global_rng=False,
           zero_grad=True, item=True, per_step=False, fixed_lr=None, normalise=False,
           zero_after=False):  # fmt: skip
    """The solution's loop, with switches for the catalogued mistakes."""
    if normalise:  # standardise the inputs in place
        X -= X.mean(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=fixed_lr or lr)
    g = torch.Generator().manual_seed(seed)
    if global_rng:
        torch.manual_seed(seed)
    n = X.shape[0]
    epoch_losses, step_losses = [], []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n) if global_rng else torch.randperm(n, generator=g)
        order = order.to(X.device)
        total, steps = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            logits = model(X[idx])
            loss = F.cross_entropy(torch.softmax(logits, -1) if softmax else logits, y[idx])
            if zero_grad and not zero_after:
                optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if zero_after:
                model.zero_grad(set_to_none=True)
            value = loss.item() if item else loss
            total += value
            step_losses.append(value)
            steps += 1
        epoch_losses.append(total / steps)
    return step_losses if per_step else epoch_losses


def train_classifier(model, X, y, epochs=30, batch_size=32, lr=3e-3, seed=0):
    return _train(model, X, y, epochs, batch_size, lr, seed)


def linear_cka(X, Y):
    Xc = X - X.mean(0, keepdim=True)
    Yc = Y - Y.mean(0, keepdim=True)
    return (Yc.T @ Xc).square().sum() / ((Xc.T @ Xc).norm() * (Yc.T @ Yc).norm())


def _geometry(activation, X, y, width, steps, seed, *, untrained_scores=False, output=False,
              item=True, act=None, keys=("input", "target"), float64=False):  # fmt: skip
    """The solution, with switches for the catalogued mistakes."""
    torch.manual_seed(seed)
    n_classes = int(y.max()) + 1
    model = mlp.MLP([X.shape[1], width, n_classes], act or activation).to(X.device)

    def hidden():
        with torch.no_grad():
            _, _, hiddens = model.forward_with_intermediates(X)
            return model(X) if output else hiddens[0]

    H0 = hidden()
    mlp.train(model, (X, y), steps=steps, lr=1e-2, batch_size=len(X), seed=seed, progress=False)
    H = H0 if untrained_scores else hidden()
    Y = F.one_hot(y, n_classes).to(X.dtype)
    if float64:  # the same scores, computed in double precision
        H, X, Y = H.double(), X.double(), Y.double()
    scores = [linear_cka(H, X), linear_cka(H, Y)]
    return model, {k: (s.item() if item else s) for k, s in zip(keys, scores, strict=True)}


def geometry_experiment(activation, X, y, width=100, steps=200, seed=0):
    return _geometry(activation, X, y, width, steps, seed)


SOLUTIONS = {
    "layer_forward": layer_forward,
    "mlp_forward": mlp_forward,
    "mlp_backward": mlp_backward,
    "relu_interpolant_params": relu_interpolant_params,
    "train_classifier": train_classifier,
    "linear_cka": linear_cka,
    "geometry_experiment": geometry_experiment,
}


# ============================================================================ 1: one layer
def _layer_w_not_transposed(x, W, b, activation):
    z = x @ W
    return activation(z if b is None else z + b)


def _layer_no_activation(x, W, b, activation):
    z = x @ W.T
    return z if b is None else z + b


def _layer_bias_always(x, W, b, activation):
    return activation(x @ W.T + b)


def _layer_cpu_zero_bias(x, W, b, activation):
    bias = torch.zeros(W.shape[0], dtype=x.dtype) if b is None else b  # on the CPU
    return activation(x @ W.T + bias)


def _layer_float32(x, W, b, activation):
    z = (x @ W.T).float()
    return activation(z if b is None else z + b.float())


def _layer_bias_as_column(x, W, b, activation):
    z = x @ W.T
    return activation(z if b is None else z + b[:, None])


def _layer_activation_before_bias(x, W, b, activation):
    z = activation(x @ W.T)
    return z if b is None else z + b


def _layer_linear(x, W, b, activation):
    return activation(F.linear(x, W, b))


def _layer_addmm(x, W, b, activation):
    if b is None:
        return activation(x @ W.T)
    return activation(torch.addmm(b, x, W.T))


def _layer_einsum(x, W, b, activation):
    z = torch.einsum("bi,oi->bo", x, W)
    return activation(z if b is None else z + b)


def _layer_transpose_product(x, W, b, activation):
    z = (W @ x.T).T
    if b is not None:
        z = z + b[None, :]
    return activation(z)


# ============================================================================ 2: composition
def _forward_activation_on_output(params, x, activation):
    for W, b in params:
        x = layer_forward(x, W, b, activation)
    return x


def _forward_drops_last_layer(params, x, activation):
    for W, b in params[:-1]:
        x = layer_forward(x, W, b, activation)
    return x


def _forward_input_every_layer(params, x, activation):
    out = x
    for W, b in params[:-1]:
        out = layer_forward(x, W, b, activation)  # always from x, not from the previous layer
    W, b = params[-1]
    return layer_forward(out, W, b, lambda z: z)


def _forward_float32(params, x, activation):
    return mlp_forward(params, x, activation).float()


def _forward_no_activation(params, x, activation):
    for W, b in params:
        x = layer_forward(x, W, b, lambda z: z)
    return x


def _forward_activation_on_input(params, x, activation):
    x = activation(x)
    for W, b in params[:-1]:
        x = layer_forward(x, W, b, activation)
    W, b = params[-1]
    return layer_forward(x, W, b, lambda z: z)


def _forward_enumerate(params, x, activation):
    last = len(params) - 1
    for l, (W, b) in enumerate(params):
        x = layer_forward(x, W, b, activation if l < last else (lambda z: z))
    return x


def _forward_reduce(params, x, activation):
    hidden = functools.reduce(lambda a, p: layer_forward(a, p[0], p[1], activation), params[:-1], x)
    return F.linear(hidden, *params[-1])


def _forward_recursive(params, x, activation):
    if len(params) == 1:
        return x @ params[0][0].T + params[0][1]
    return _forward_recursive(params[1:], layer_forward(x, *params[0], activation), activation)


# ============================================================================ 3: backpropagation
def _backward_cpu_accumulators(params, x, grad_out, activation):
    grads = _backward(params, x, grad_out, activation)
    return [(dW, torch.zeros(db.shape, dtype=db.dtype) + db) for dW, db in grads]  # CPU zeros


def _backward(params, x, grad_out, activation, *, prime_at_a=False, prime_on_last=False,
              transposed_dw=False, mean_db=False, w_transposed_down=False):  # fmt: skip
    sigma = mlp.ACTIVATION_FUNCTIONS[activation]
    sigma_prime = mlp.ACTIVATION_DERIVATIVES[activation]
    inputs, zs, a = [], [], x
    for l, (W, b) in enumerate(params):
        inputs.append(a)
        zs.append(a @ W.T + b)
        a = sigma(zs[-1]) if l < len(params) - 1 else zs[-1]
    delta = grad_out * sigma_prime(zs[-1]) if prime_on_last else grad_out
    grads = []
    for l in range(len(params) - 1, -1, -1):
        W, _ = params[l]
        dW = inputs[l].T @ delta if transposed_dw else delta.T @ inputs[l]
        grads.append((dW, delta.mean(0) if mean_db else delta.sum(0)))
        if l > 0:
            z = sigma(zs[l - 1]) if prime_at_a else zs[l - 1]
            delta = (delta @ (W.T if w_transposed_down else W)) * sigma_prime(z)
    return grads[::-1]


def _backward_by_autograd(params, x, grad_out, activation):
    leaves = [(W.clone().requires_grad_(), b.clone().requires_grad_()) for W, b in params]
    out = mlp_forward(leaves, x, mlp.ACTIVATION_FUNCTIONS[activation])
    flat = [t for pair in leaves for t in pair]
    grads = torch.autograd.grad(out, flat, grad_outputs=grad_out)
    return [(grads[2 * l], grads[2 * l + 1]) for l in range(len(params))]


def _backward_einsum(params, x, grad_out, activation):
    sigma = mlp.ACTIVATION_FUNCTIONS[activation]
    sigma_prime = mlp.ACTIVATION_DERIVATIVES[activation]
    inputs, zs, a = [], [], x
    for l, (W, b) in enumerate(params):
        inputs.append(a)
        zs.append(torch.einsum("bi,oi->bo", a, W) + b)
        a = sigma(zs[-1]) if l < len(params) - 1 else zs[-1]
    delta, grads = grad_out, [None] * len(params)
    for l in reversed(range(len(params))):
        grads[l] = (torch.einsum("bo,bi->oi", delta, inputs[l]), delta.sum(0))
        if l:
            delta = torch.einsum("bo,oi->bi", delta, params[l][0]) * sigma_prime(zs[l - 1])
    return grads


def _backward_per_sample(params, x, grad_out, activation):
    """A loop over the samples, summing outer products (slow but right)."""
    total = None
    for i in range(x.shape[0]):
        pairs = mlp_backward(params, x[i : i + 1], grad_out[i : i + 1], activation)
        if total is None:
            total = [[dW.clone(), db.clone()] for dW, db in pairs]
        else:
            for acc, (dW, db) in zip(total, pairs, strict=True):
                acc[0] += dW
                acc[1] += db
    return [tuple(pair) for pair in total]


def _backward_derivatives_first(params, x, grad_out, activation):
    """sigma'(z_l) stored during the forward pass instead of z_l."""
    sigma = mlp.ACTIVATION_FUNCTIONS[activation]
    sigma_prime = mlp.ACTIVATION_DERIVATIVES[activation]
    a, inputs, primes = x, [], []
    for W, b in params[:-1]:
        inputs.append(a)
        z = F.linear(a, W, b)
        primes.append(sigma_prime(z))
        a = sigma(z)
    inputs.append(a)
    delta, grads = grad_out, []
    for l in range(len(params) - 1, -1, -1):
        grads.insert(0, (delta.mT @ inputs[l], delta.sum(dim=0)))
        if l > 0:
            delta = delta @ params[l][0] * primes[l - 1]
    return grads


# ============================================================================ 4: interpolant
def _interpolant_parts(knots_x, knots_y):
    slopes = (knots_y[1:] - knots_y[:-1]) / (knots_x[1:] - knots_x[:-1])
    return slopes, torch.cat([slopes[:1], slopes[1:] - slopes[:-1]])


def _interp_no_left_unit(knots_x, knots_y):
    _, changes = _interpolant_parts(knots_x, knots_y)
    W1 = torch.ones(len(knots_x) - 1, 1, dtype=knots_x.dtype)
    return W1, -knots_x[:-1].clone(), changes[None, :], knots_y[:1].clone()


def _interp_slopes_not_changes(knots_x, knots_y):
    W1, b1, W2, b2 = relu_interpolant_params(knots_x, knots_y)
    slopes, _ = _interpolant_parts(knots_x, knots_y)
    return W1, b1, torch.cat([slopes[:1], -slopes[:1], slopes[1:]])[None, :], b2


def _interp_no_offset(knots_x, knots_y):
    W1, b1, W2, _ = relu_interpolant_params(knots_x, knots_y)
    return W1, b1, W2, torch.zeros(1, dtype=knots_x.dtype)


def _interp_cpu_weights(knots_x, knots_y):
    W1, b1, W2, b2 = relu_interpolant_params(knots_x, knots_y)
    W1 = torch.ones(len(knots_x), 1, dtype=knots_x.dtype)  # created on the CPU
    W1[1] = -1.0
    return W1, b1, W2, b2


def _interp_float32(knots_x, knots_y):
    return tuple(t.float() for t in relu_interpolant_params(knots_x, knots_y))


def _interp_flat_shapes(knots_x, knots_y):
    W1, b1, W2, b2 = relu_interpolant_params(knots_x, knots_y)
    return W1[:, 0], b1, W2[0], b2


def _interp_loop(knots_x, knots_y):
    K = len(knots_x) - 1
    rows_w, rows_b, outs = [], [], []
    slope = lambda k: (knots_y[k + 1] - knots_y[k]) / (knots_x[k + 1] - knots_x[k])  # noqa: E731
    rows_w += [1.0, -1.0]
    rows_b += [-knots_x[0], knots_x[0]]
    outs += [slope(0), -slope(0)]
    for k in range(1, K):
        rows_w.append(1.0)
        rows_b.append(-knots_x[k])
        outs.append(slope(k) - slope(k - 1))
    like = {"dtype": knots_x.dtype, "device": knots_x.device}
    W1 = torch.tensor(rows_w, **like)[:, None]
    b1 = torch.stack([torch.as_tensor(v, **like) for v in rows_b])
    W2 = torch.stack([torch.as_tensor(v, **like) for v in outs])[None, :]
    return W1, b1, W2, knots_y[:1].clone()


def _interp_extra_zero_unit(knots_x, knots_y):
    W1, b1, W2, b2 = relu_interpolant_params(knots_x, knots_y)
    one = torch.ones(1, 1, dtype=W1.dtype, device=W1.device)
    return (torch.cat([W1, one]), torch.cat([b1, -knots_x[-1:]]),
            torch.cat([W2, torch.zeros_like(one)], 1), b2)  # fmt: skip


def _interp_left_by_negative_slope(knots_x, knots_y):
    """The left unit as -s_0 ReLU(x_0 - x) written with W = -1 and b = x_0, others via diff."""
    slopes = torch.diff(knots_y) / torch.diff(knots_x)
    like = {"dtype": knots_x.dtype, "device": knots_x.device}
    W1 = torch.cat([torch.tensor([[-1.0]], **like),
                    torch.ones(len(knots_x) - 1, 1, **like)])  # fmt: skip
    b1 = torch.cat([knots_x[:1], -knots_x[:-1]])
    W2 = torch.cat([-slopes[:1], slopes[:1], torch.diff(slopes)])[None, :]
    return W1, b1, W2, knots_y[:1].clone()


# ============================================================================ 5: training loop
VALID_DEFAULTS = {"epochs": 10, "batch_size": 64, "lr": 1e-2, "seed": 0}  # 95%+ in ~1 s


def _valid_train(**switches):
    def train_classifier(model, X, y, epochs=10, batch_size=64, lr=1e-2, seed=0):
        return _train(model, X, y, epochs, batch_size, lr, seed, **switches)

    return train_classifier


def _mistake_train(**switches):
    def train_classifier(model, X, y, epochs=30, batch_size=32, lr=3e-3, seed=0):
        return _train(model, X, y, epochs, batch_size, lr, seed, **switches)

    return train_classifier


def _train_tensor_total(model, X, y, epochs=10, batch_size=64, lr=1e-2, seed=0):
    """Sums detached loss tensors and converts once per epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n, losses = len(X), []
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).to(X.device)
        total = torch.zeros((), device=X.device)
        batches = order.split(batch_size)
        for idx in batches:
            optimizer.zero_grad(set_to_none=False)
            loss = F.cross_entropy(model(X[idx]), y[idx], reduction="mean")
            loss.backward()
            optimizer.step()
            total += loss.detach()
        losses.append(float(total / len(batches)))
    return losses


# ============================================================================ 6: CKA
def _cka_item(X, Y):
    return linear_cka(X, Y).item()


def _cka_uncentred(X, Y):
    return (Y.T @ X).square().sum() / ((X.T @ X).norm() * (Y.T @ Y).norm())


def _cka_centre_in_place(X, Y):
    X -= X.mean(0)
    Y -= Y.mean(0)
    return _cka_uncentred(X, Y)


def _cka_centre_wrong_axis(X, Y):
    return _cka_uncentred(X - X.mean(1, keepdim=True), Y - Y.mean(1, keepdim=True))


def _cka_not_squared(X, Y):
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    return (Yc.T @ Xc).norm() / ((Xc.T @ Xc).norm() * (Yc.T @ Yc).norm())


def _cka_cpu_ones(X, Y):
    ones = torch.ones(X.shape[0], 1, dtype=X.dtype)  # on the CPU
    Xc, Yc = X - ones * X.mean(0), Y - ones * Y.mean(0)
    return (Yc.T @ Xc).square().sum() / ((Xc.T @ Xc).norm() * (Yc.T @ Yc).norm())


def _cka_float32(X, Y):
    return linear_cka(X.float(), Y.float())


def _cka_gram(X, Y):
    n = X.shape[0]
    H = torch.eye(n, dtype=X.dtype, device=X.device) - 1.0 / n
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return (K * L).sum() / (K.norm() * L.norm())


def _cka_einsum(X, Y):
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    cross = torch.einsum("ni,nj->ij", Yc, Xc)
    return cross.pow(2).sum() / (
        torch.linalg.matrix_norm(Xc.T @ Xc) * torch.linalg.matrix_norm(Yc.T @ Yc)
    )


def _cka_centring_matrix(X, Y):
    n = X.shape[0]
    H = torch.eye(n, dtype=X.dtype, device=X.device) - torch.full(
        (n, n), 1.0 / n, dtype=X.dtype, device=X.device
    )
    Xc, Yc = H @ X, H @ Y
    return torch.linalg.norm(Yc.T @ Xc) ** 2 / (
        torch.linalg.norm(Xc.T @ Xc) * torch.linalg.norm(Yc.T @ Yc)
    )


# ============================================================================ 7: the experiment
def _geometry_with(**switches):
    def geometry_experiment(activation, X, y, width=100, steps=200, seed=0):
        return _geometry(activation, X, y, width, steps, seed, **switches)

    return geometry_experiment


def _geometry_hidden_by_hand(activation, X, y, width=100, steps=200, seed=0):
    torch.manual_seed(seed)
    n_classes = int(y.max()) + 1
    model = mlp.MLP([X.shape[1], width, n_classes], activation).to(X.device)
    mlp.train(model, (X, y), steps=steps, lr=1e-2, batch_size=len(X), seed=seed, progress=False)
    with torch.no_grad():
        H = model.activations[0](model.layers[0](X))
    Y = torch.eye(n_classes, dtype=X.dtype, device=X.device)[y]
    return model, {"input": float(linear_cka(H, X)), "target": float(linear_cka(H, Y))}


def _geometry_gram_cka(activation, X, y, width=100, steps=200, seed=0):
    torch.manual_seed(seed)
    n_classes = int(y.max().item()) + 1
    model = mlp.MLP([X.shape[1], width, n_classes], activation=activation).to(X.device)
    mlp.train(model, (X, y), steps=steps, lr=1e-2, batch_size=len(X), seed=seed, progress=False)
    with torch.no_grad():
        H = model.forward_with_intermediates(X)[2][0]
        Y = F.one_hot(y, n_classes).to(X.dtype)
        return model, {"input": _cka_gram(H, X).item(), "target": _cka_gram(H, Y).item()}


# ============================================================================ the catalogue
MISTAKES = {
    "layer_forward": [
        ("multiplies by W instead of W^T", _layer_w_not_transposed, "W^T"),
        ("no activation", _layer_no_activation, "apply the activation"),
        ("adds b when b is None", _layer_bias_always, "b may be None"),
        ("casts to float32", _layer_float32, "keep x's dtype"),
        ("adds b as a column (wrong axis)", _layer_bias_as_column, "added to every row"),
        ("activation before the bias", _layer_activation_before_bias, "x W^T + b"),
        ("a zero bias created on the CPU when b is None", _layer_cpu_zero_bias, "'meta' device"),
    ],
    "mlp_forward": [
        (
            "activation after the last layer",
            _forward_activation_on_output,
            "no activation after the last",
        ),
        ("drops the last layer", _forward_drops_last_layer, "expected shape"),
        ("feeds x to every layer", _forward_input_every_layer, "previous layer's output"),
        ("casts to float32", _forward_float32, "keep x's dtype"),
        ("no activation anywhere", _forward_no_activation, "a_l = sigma(a_{l-1} W_l^T + b_l)"),
        ("activation on the input", _forward_activation_on_input, "a_0 = x"),
    ],  # fmt: skip
    "mlp_backward": [
        ("sigma' at a = sigma(z)", functools.partial(_backward, prime_at_a=True), "pre-activation"),
        (
            "sigma' in the last layer",
            functools.partial(_backward, prime_on_last=True),
            "delta_L = grad_out",
        ),
        ("dW transposed", functools.partial(_backward, transposed_dw=True), "has the shape of W_l"),
        ("db averaged over the batch", functools.partial(_backward, mean_db=True), "*sum*"),
        (
            "W^T in the step down",
            functools.partial(_backward, w_transposed_down=True),
            "delta_(l-1)",
        ),
        ("autograd", _backward_by_autograd, "autograd is switched off"),
        (
            "db accumulated into zeros created on the CPU",
            _backward_cpu_accumulators,
            "'meta' device",
        ),
    ],  # fmt: skip
    "relu_interpolant_params": [
        ("no unit continuing the first slope left of x_0", _interp_no_left_unit, "left of x_0"),
        (
            "slopes as output weights, not their changes",
            _interp_slopes_not_changes,
            "change of slope",
        ),
        ("no offset y_0", _interp_no_offset, "piecewise-linear interpolant"),
        ("float32 parameters for float64 knots", _interp_float32, "knots' dtype"),
        ("W1 and W2 as vectors", _interp_flat_shapes, "expected shapes"),
        (
            "W1 created on the CPU (ignores the knots' device)",
            _interp_cpu_weights,
            "expected 'meta'",
        ),
    ],  # fmt: skip
    "train_classifier": [
        ("softmax before F.cross_entropy", _mistake_train(softmax=True), "softmax"),
        (
            "shuffles with the global RNG",
            _mistake_train(global_rng=True),
            "global random generator",
        ),
        ("never zeroes the gradients", _mistake_train(zero_grad=False), "accumulated"),
        ("returns loss tensors", _mistake_train(item=False), "Python floats"),
        ("one loss per step", _mistake_train(per_step=True), "one per epoch"),
        ("ignores lr", _mistake_train(fixed_lr=3e-3), "`lr`"),
        ("standardises X in place", _mistake_train(normalise=True), "modified its input"),
    ],  # fmt: skip
    "linear_cka": [
        ("returns a Python float", _cka_item, "0-d torch.Tensor"),
        ("no centring", _cka_uncentred, "centre each feature"),
        ("centres in place", _cka_centre_in_place, "modified its input"),
        ("centres over the features (dim 1)", _cka_centre_wrong_axis, "Xc = X - X.mean(0)"),
        ("numerator not squared", _cka_not_squared, "||Yc^T Xc||_F^2"),
        ("computes in float32", _cka_float32, "expected dtype torch.float64"),
        ("centres with a column of ones created on the CPU", _cka_cpu_ones, "'meta' device"),
    ],
    "geometry_experiment": [
        (
            "scores of the untrained hidden layer",
            _geometry_with(untrained_scores=True),
            "*trained*",
        ),
        ("CKA of the output layer", _geometry_with(output=True), "hidden layer"),
        ("scores as tensors", _geometry_with(item=False), "must be a float"),
        ("ignores the activation", _geometry_with(act="relu"), "pass activation to MLP"),
        ("other score names", _geometry_with(keys=("in", "out")), "keys 'input' and 'target'"),
        ("the two scores swapped", _geometry_with(keys=("target", "input")), "against X"),
    ],  # fmt: skip
}

VALID = {
    "layer_forward": [
        ("F.linear", _layer_linear),
        ("torch.addmm", _layer_addmm),
        ("einsum", _layer_einsum),
        ("(W x^T)^T", _layer_transpose_product),
    ],
    "mlp_forward": [
        ("enumerate with an identity last", _forward_enumerate),
        ("functools.reduce and F.linear", _forward_reduce),
        ("recursion", _forward_recursive),
    ],
    "mlp_backward": [
        ("einsum", _backward_einsum),
        ("a loop over the samples", _backward_per_sample),
        ("sigma'(z) stored in the forward pass", _backward_derivatives_first),
    ],
    "relu_interpolant_params": [
        ("a Python loop over the knots", _interp_loop),
        ("an extra unit at x_K with weight 0", _interp_extra_zero_unit),
        ("the left unit first, torch.diff", _interp_left_by_negative_slope),
    ],
    "train_classifier": [
        ("10 epochs, batches of 64, lr 1e-2", _valid_train()),
        ("zero_grad(set_to_none) after the step", _valid_train(zero_after=True)),
        ("loss tensors summed, one float per epoch", _train_tensor_total),
    ],
    "linear_cka": [
        ("centred Gram matrices (HSIC form)", _cka_gram),
        ("einsum", _cka_einsum),
        ("a centring matrix", _cka_centring_matrix),
    ],
    "geometry_experiment": [
        ("hidden layer by hand, eye(n)[y]", _geometry_hidden_by_hand),
        ("Gram-form CKA", _geometry_gram_cka),
        ("CKA computed in float64", _geometry_with(float64=True)),
    ],
}
