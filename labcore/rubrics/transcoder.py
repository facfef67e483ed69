"""Hidden tests of lab 5, transcoders and circuits (``labs/05-transcoders.ipynb``).

Eight exercises, 19 points. The hidden inputs differ from the in-notebook checks of
:mod:`labcore.checks.transcoder` and are drawn from the grader's ``--seed``. Models
(:class:`~labcore.transformer.GPT`) and transcoders (:class:`~labcore.transcoder.Transcoder`) travel
as a configuration and a state dict and are rebuilt in the kernel; the expected results come from
labcore and the checks' grader-side references, computed in the grader's process. Gradients of the
loss and of the penalty are computed in the kernel by autograd through the student's function and
compared here with the reference's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from labcore import transcoder as T
from labcore.checks import transcoder as checks
from labcore.checks.rules import meta_rule
from labcore.rubrics import (
    Exercise,
    HiddenCase,
    Rubric,
    TensorResult,
    case_generator,
    describe,
    hook_left_message,
    mutation_message,
    plain,
    tensor_mismatch,
)
from labcore.transformer import GPT, GPTConfig

__all__ = ["RUBRIC"]

F64 = torch.float64


def _generator(seed: int, exercise: int) -> torch.Generator:
    """A generator for one exercise's hidden inputs, derived from the grading seed."""
    return case_generator("05-transcoders", seed, exercise)


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-9, "rtol": 1e-7} if dtype == F64 else {"atol": 2e-5, "rtol": 1e-4}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _gpt(g: torch.Generator, config: dict[str, Any]) -> GPT:
    """A GPT with every parameter drawn from ``g`` (LayerNorm gains near 1), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        model = GPT(GPTConfig(**config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.copy_(1.0 + 0.2 * noise if name.endswith(".weight") and p.ndim == 1 else 0.3 * noise)
    return model.eval()


def _transcoder(g: torch.Generator, d_in: int, d_hidden: int, d_out: int,
                enc_bias: float = 0.0) -> T.Transcoder:  # fmt: skip
    """A :class:`Transcoder` with random weights and biases drawn from ``g``."""
    with torch.random.fork_rng(devices=[]):
        tc = T.Transcoder(d_in, d_hidden, d_out)
    tc.reset_parameters(g)
    with torch.no_grad():
        tc.b_enc.copy_(enc_bias + 0.3 * torch.randn(d_hidden, generator=g))
        tc.b_dec.copy_(0.5 * torch.randn(d_out, generator=g))
    return tc.eval()


def _pair(value: Any, names: str) -> str | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return f"expected a pair {names}, got {describe(value)}."
    return None


#: Kernel side: rebuild a GPT (and a transcoder) from their configurations and state dicts.
_BUILD = """
def build_model(spec):
    import torch
    from labcore.transformer import GPT, GPTConfig

    model = GPT(GPTConfig(**spec["config"]))
    if spec.get("double"):
        model = model.double()
    model.load_state_dict(spec["state"])
    return model.eval()


def build_transcoder(spec, model):
    import torch
    from labcore.transcoder import Transcoder

    if spec["transcoder"] == "exact":
        class ExactMLP(torch.nn.Module):
            def __init__(self, mlp):
                super().__init__()
                self.mlp = mlp

            def encode(self, x):
                return x

            def decode(self, f):
                return self.mlp(f)

            def forward(self, x):
                return self.mlp(x), x

        return ExactMLP(model.blocks[spec["layer"]].mlp)
    transcoder = Transcoder(**spec["transcoder"])
    transcoder.load_state_dict(spec["transcoder_state"])
    return transcoder.eval()
"""


# --------------------------------------------------------------------------- 1: mlp_io
_MLP_IO_CALL = (
    _BUILD
    + """
def call(fn, spec):
    import torch

    model = build_model(spec)
    tokens = spec["tokens"]
    before = tokens.clone()
    with torch.no_grad():
        value = fn(model, tokens, spec["layer"])
    return value, {"mutated": [] if torch.equal(tokens, before) else [1]}
"""
)

_CONFIG = {"vocab_size": 17, "n_ctx": 10, "d_model": 12, "n_layer": 2, "n_head": 3, "d_mlp": 20}


def _mlp_io_cases(seed: int) -> list[HiddenCase]:
    """Both layers of a random GPT, a single token, a float64 model."""
    g = _generator(seed, 1)
    model = _gpt(g, _CONFIG)
    model64 = _gpt(g, _CONFIG).double()
    tokens = torch.randint(0, 17, (2, 6), generator=g)
    settings = [
        ("layer 0, batch 2, pos 6", model, tokens, 0, False),
        ("layer 1, batch 2, pos 6", model, tokens, 1, False),
        ("batch of 1, pos 1, layer 1", model, tokens[:1, :1].clone(), 1, False),
        ("float64 model, layer 0", model64, tokens[:, :4].clone(), 0, True),
    ]
    cases = []
    for name, m, t, layer, double in settings:
        with torch.no_grad():
            expected = list(T.collect_mlp_io(m, t, layer))
        spec = {"config": _CONFIG, "state": _state(m), "double": double, "tokens": t,
                "layer": layer}  # fmt: skip
        cases.append(HiddenCase(name, spec, expected))
    return cases


def _score_mlp_io(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["model", "tokens", "layer"]) or _pair(
        value, "(inputs, targets)"
    )
    if problem:
        return problem
    inputs, targets = case.expected
    tol = _tolerance(inputs.dtype)
    return tensor_mismatch(
        value[0], inputs, **tol, what="inputs",
        hint="the MLP's input is blocks.{layer}.ln2.hook_normalized, flattened to "
        "(batch * pos, d_model)",
    ) or tensor_mismatch(
        value[1], targets, **tol, what="targets",
        hint="the MLP's output is blocks.{layer}.hook_mlp_out, flattened to (batch * pos, d_model)",
    )  # fmt: skip


# --------------------------------------------------------------------------- 2: forward
def _forward_cases(seed: int) -> list[HiddenCase]:
    """2-D and 3-D inputs, a single token, float64."""
    g = _generator(seed, 2)
    settings = [
        ("x (5, 6), d_hidden 10, d_out 3", (5,), 6, 10, 3, torch.float32),
        ("a single token: x (1, 4), d_hidden 7, d_out 4", (1,), 4, 7, 4, torch.float32),
        ("3-D input: x (2, 4, 3)", (2, 4), 3, 8, 5, torch.float32),
        ("float64, x (3, 5), d_hidden 12, d_out 2; also run on 'meta' tensors", (3,), 5, 12, 2,
         F64),
    ]  # fmt: skip
    cases = []
    for name, lead, d_in, d_hidden, d_out, dtype in settings:
        tc = _transcoder(g, d_in, d_hidden, d_out).to(dtype)
        x = 1.5 * torch.randn(*lead, d_in, generator=g, dtype=dtype)
        params = [p.detach().clone() for p in (tc.W_enc, tc.b_enc, tc.W_dec, tc.b_dec)]
        with torch.no_grad():
            y_hat, f = tc(x)
        spec = {"args": [x, *params], "meta": "meta" in name}
        cases.append(HiddenCase(name, spec, [y_hat, f]))
    return cases


def _score_forward(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["x", "W_enc", "b_enc", "W_dec", "b_dec"]) or _pair(
        value, "(y_hat, f)"
    )
    if problem:
        return problem
    y_hat, f = case.expected
    tol = _tolerance(f.dtype)
    return (
        tensor_mismatch(
            value[1], f, **tol, what="f", hint="f = relu(x @ W_enc + b_enc), shape (..., d_hidden)"
        )
        or tensor_mismatch(
            value[0],
            y_hat,
            **tol,
            what="y_hat",
            hint="y_hat = f @ W_dec + b_dec, shape (..., d_out)",
        )
        or meta_rule(plain(extra), 2)
    )


# --------------------------------------------------------------------------- 3: loss, unit rows
#: Kernel side: the loss with gradients through the parameters, or normalize_decoder_rows (read
#: from the student's namespace).
_LOSS_CALL = """
def call(fn, spec):
    import torch

    if spec["op"] == "normalize":
        normalize = getattr(fn, "__globals__", {}).get("normalize_decoder_rows")
        if not callable(normalize):
            raise NameError("normalize_decoder_rows is not defined")
        w = spec["W_dec"]
        before = w.clone()
        value = normalize(w)
        return value, {"mutated": [] if torch.equal(w, before) else [0]}
    from labcore.checks.rules import reference_in_place
    from labcore.checks.transcoder import _transcoder_forward

    x, y = spec["x"], spec["y"]
    before = (x.clone(), y.clone())
    params = [p.detach().clone().requires_grad_(True) for p in spec["params"]]
    # graded on its own: labcore's transcoder_forward in place of the student's during the call
    with reference_in_place(fn, {"transcoder_forward": _transcoder_forward}):
        value = fn(x, y, *params, spec["l1_coeff"])
    grads = None
    if isinstance(value, torch.Tensor) and value.requires_grad and value.numel() == 1:
        grads = list(torch.autograd.grad(value.sum(), params, allow_unused=True))
    mutated = [i for i, (a, b) in enumerate(zip((x, y), before)) if not torch.equal(a, b)]
    return value, {"grads": grads, "mutated": mutated}
"""


def _loss_cases(seed: int) -> list[HiddenCase]:
    """Three losses (gradients checked too) and two normalisations."""
    g = _generator(seed, 3)
    settings = [
        ("loss: n 6, d_in 4, d_hidden 9, d_out 3, l1_coeff 0.2", 6, 4, 9, 3, 0.2, torch.float32),
        ("loss: l1_coeff 0 (the squared error alone)", 5, 3, 6, 4, 0.0, torch.float32),
        ("loss: float64, a single token, l1_coeff 1.5", 1, 5, 8, 5, 1.5, F64),
    ]
    cases = []
    for name, n, d_in, d_hidden, d_out, coeff, dtype in settings:
        tc = _transcoder(g, d_in, d_hidden, d_out, enc_bias=0.2).to(dtype)
        x = torch.randn(n, d_in, generator=g, dtype=dtype)
        y = 2.0 * torch.randn(n, d_out, generator=g, dtype=dtype)
        params = [p.detach().clone().requires_grad_() for p in (tc.W_enc, tc.b_enc, tc.W_dec,
                                                                 tc.b_dec)]  # fmt: skip
        loss = checks._transcoder_loss(x, y, *params, coeff)
        grads = [grad.detach() for grad in torch.autograd.grad(loss, params)]
        spec = {"op": "loss", "x": x, "y": y, "params": [p.detach() for p in params],
                "l1_coeff": coeff}  # fmt: skip
        cases.append(HiddenCase(name, spec, {"loss": loss.detach(), "grads": grads}))
    for name, shape, dtype in (
        ("normalize_decoder_rows: W_dec (7, 3)", (7, 3), torch.float32),
        ("normalize_decoder_rows: float64, W_dec (2, 9)", (2, 9), F64),
    ):
        w = 3.0 * torch.randn(*shape, generator=g, dtype=dtype)
        cases.append(HiddenCase(name, {"op": "normalize", "W_dec": w},
                                {"rows": checks._normalize_rows(w)}))  # fmt: skip
    return cases


def _score_loss(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    if "loss" in case.expected:
        problem = mutation_message(extra, ["x", "y"])
        if problem:
            return problem
    if "rows" in case.expected:
        expected = case.expected["rows"]
        return mutation_message(extra, ["W_dec"]) or tensor_mismatch(
            value, expected, **_tolerance(expected.dtype), what="the normalised W_dec",
            hint="divide each row (one per feature) by its Euclidean norm, in a new tensor",
        )  # fmt: skip
    expected = case.expected["loss"]
    tol = _tolerance(expected.dtype)
    problem = tensor_mismatch(
        value, expected, **tol, what="the loss",
        hint="mean over tokens of ||y - y_hat||^2 (summed over d_out) + l1_coeff * sum_i |f_i|, "
        "a 0-d tensor",
    )  # fmt: skip
    if problem:
        return problem
    if not value.requires_grad:
        return (
            "the loss is right but does not require gradients, so training could not use it. "
            "Hint: use torch operations on the parameters (no .item(), no torch.no_grad(), no "
            ".detach())."
        )
    grads = extra.get("grads")
    if not isinstance(grads, list) or len(grads) != 4:
        return "the grader could not differentiate your loss."
    for name, grad, reference in zip(("W_enc", "b_enc", "W_dec", "b_dec"), grads,
                                     case.expected["grads"], strict=True):  # fmt: skip
        if grad is None:
            return f"the loss does not depend on {name}. Hint: compute y_hat and f from it."
        problem = tensor_mismatch(
            grad, reference, **tol, what=f"the gradient with respect to {name}",
            hint="the value is right but not its gradient: use differentiable torch operations",
        )  # fmt: skip
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------- 4: fvu and l0
_METRICS_CALL = """
def call(fn, spec):
    import torch

    if spec["op"] == "fvu":
        y_hat, y = spec["y_hat"], spec["y"]
        before = (y_hat.clone(), y.clone())
        value = fn(y_hat, y)
        same = torch.equal(y_hat, before[0]) and torch.equal(y, before[1])
        return value, {"mutated": [] if same else [0]}
    l0 = getattr(fn, "__globals__", {}).get("l0")
    if not callable(l0):
        raise NameError("l0 is not defined")
    f = spec["f"]
    before = f.clone()
    value = l0(f)
    return value, {"mutated": [] if torch.equal(f, before) else [0]}
"""


def _metrics_cases(seed: int) -> list[HiddenCase]:
    """FVU on 2-D, 3-D and float64 outputs; L0 on 2-D, 3-D and all-zero features."""
    g = _generator(seed, 4)

    def outputs(*shape, dtype=torch.float32):
        y = torch.randn(*shape, generator=g, dtype=dtype) * 2.0 + 0.7
        return y + 0.4 * torch.randn(*shape, generator=g, dtype=dtype), y

    cases = []
    for name, (y_hat, y) in (
        ("fvu: n 15, d 5", outputs(15, 5)),
        ("fvu: 3-D (2, 6, 3), all 12 tokens", outputs(2, 6, 3)),
        ("fvu: float64, n 8, d 4", outputs(8, 4, dtype=F64)),
    ):
        cases.append(HiddenCase(name, {"op": "fvu", "y_hat": y_hat, "y": y}, T.fvu(y_hat, y)))
    for name, f in (
        ("l0: f (9, 14)", F.relu(torch.randn(9, 14, generator=g) - 0.7)),
        ("l0: 3-D f (3, 2, 11)", F.relu(torch.randn(3, 2, 11, generator=g) - 0.5)),
        ("l0: no active feature, f (4, 6) zero", torch.zeros(4, 6)),
    ):
        cases.append(HiddenCase(name, {"op": "l0", "f": f}, T.l0(f).to(F64)))
    return cases


def _score_metrics(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["y_hat" if case.inputs["op"] == "fvu" else "f"])
    if problem:
        return problem
    expected = case.expected
    if case.inputs["op"] == "fvu":
        return tensor_mismatch(
            value, expected, **_tolerance(expected.dtype), what="the FVU",
            hint="sum of ||y - y_hat||^2 over tokens, divided by the sum of ||y - mean(y)||^2, "
            "with mean(y) the mean output vector over the tokens (all leading axes)",
        )  # fmt: skip
    hint = " Hint: L0 is the mean over tokens of the number of nonzero features of each token."
    if not isinstance(value, TensorResult) or value.type_name == "numpy.ndarray":
        return f"L0 should be a torch.Tensor, got {describe(value)}.{hint}"
    if tuple(value.tensor.shape) != ():
        return f"L0 should be a 0-d tensor, got shape {tuple(value.tensor.shape)}.{hint}"
    if not value.tensor.is_floating_point():
        return f"L0 should be a float tensor (a mean of counts), got {value.tensor.dtype}.{hint}"
    got = value.tensor.to(F64).item()
    if not math.isclose(got, expected.item(), rel_tol=1e-6, abs_tol=1e-5):
        return f"L0 should be {expected.item():.6g}, got {got:.6g}.{hint}"
    return None


# --------------------------------------------------------------------------- 5: penalty
_PENALTY_CALL = """
def call(fn, spec):
    import torch

    f = spec["f"].detach().clone().requires_grad_(True)
    before = f.detach().clone()
    if spec["kind"] not in ("l1", "l2"):
        from labcore.checks.rules import what_raised

        return what_raised(fn, f, spec["kind"]), {"mutated": []}
    value = fn(f, spec["kind"])
    grad = None
    if isinstance(value, torch.Tensor) and value.requires_grad and value.numel() == 1:
        (grad,) = torch.autograd.grad(value.sum(), f, allow_unused=True)
    mutated = [] if torch.equal(f.detach(), before) else [0]
    return value, {"grad": grad, "mutated": mutated}
"""


def _penalty_cases(seed: int) -> list[HiddenCase]:
    """L1 and L2 with gradients, 3-D, float64, and an unknown kind."""
    g = _generator(seed, 5)

    def values(*shape, dtype=torch.float32):
        f = torch.randn(*shape, generator=g, dtype=dtype)
        return f + 0.1 * f.sign()  # away from the kink of |f| at 0

    cases = []
    for name, kind, f in (
        ("l1, f (5, 8) of both signs", "l1", values(5, 8)),
        ("l2, f (5, 8) of both signs", "l2", values(5, 8)),
        ("l1, 3-D f (2, 3, 4)", "l1", values(2, 3, 4)),
        ("l2, float64, a single token", "l2", values(1, 6, dtype=F64)),
    ):
        leaf = f.clone().requires_grad_()
        value = checks._penalty(leaf, kind)
        (grad,) = torch.autograd.grad(value, leaf)
        cases.append(HiddenCase(name, {"f": f, "kind": kind},
                                {"value": value.detach(), "grad": grad}))  # fmt: skip
    cases.append(HiddenCase("kind = 'l0' (should raise ValueError)",
                            {"f": values(2, 3), "kind": "l0"}, "ValueError"))  # fmt: skip
    return cases


def _score_penalty(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    if isinstance(case.expected, str):
        if value != "ValueError":
            what = value if value == "returned normally" else f"raised {value}"
            return (
                f"expected penalty(f, {case.inputs['kind']!r}) to raise ValueError, but it {what}. "
                "Hint: raise ValueError with a message for any kind but 'l1' and 'l2'."
            )
        return None
    problem = mutation_message(extra, ["f"])
    if problem:
        return problem
    expected = case.expected["value"]
    tol = _tolerance(expected.dtype)
    problem = tensor_mismatch(
        value, expected, **tol, what="the penalty",
        hint="l1: mean over tokens of sum_i |f_i|; l2: mean over tokens of sum_i f_i^2",
    )  # fmt: skip
    if problem:
        return problem
    if not value.requires_grad or extra.get("grad") is None:
        return (
            "the penalty is right but does not require gradients. Hint: use torch operations on "
            "f (no .item(), no torch.no_grad(), no .detach())."
        )
    return tensor_mismatch(
        extra["grad"], case.expected["grad"], **tol, what="the gradient with respect to f",
        hint="d/df_i of mean_tokens |f_i| is sign(f_i) / n_tokens; of f_i^2 it is 2 f_i / n_tokens",
    )  # fmt: skip


# --------------------------------------------------------------------------- 6: splicing
_SPLICE_CALL = (
    _BUILD
    + """
def call(fn, spec):
    import torch

    if spec["op"] == "ratio":
        ratio = getattr(fn, "__globals__", {}).get("loss_recovered")
        if not callable(ratio):
            raise NameError("loss_recovered is not defined")
        value = ratio(*spec["losses"])
        if isinstance(value, torch.Tensor):
            value = value.detach()
        return value, {"mutated": []}
    model = build_model(spec)
    transcoder = build_transcoder(spec, model)
    tokens = spec["tokens"]
    before = tokens.clone()
    with torch.no_grad():
        clean = model(tokens)
        value = fn(model, transcoder, spec["layer"], tokens)
        hook_left = not torch.equal(model(tokens), clean)
    return value, {"mutated": [] if torch.equal(tokens, before) else [3], "hook_left": hook_left}
"""
)


def _splice_cases(seed: int) -> list[HiddenCase]:
    """Random transcoders at both layers, a module computing the MLP exactly, one token, ratios."""
    g = _generator(seed, 6)
    model = _gpt(g, _CONFIG)
    state = _state(model)
    tokens = torch.randint(0, 17, (3, 7), generator=g)
    settings = [
        ("layer 0, a random transcoder with 20 features", 0, _transcoder(g, 12, 20, 12), tokens),
        ("layer 1, a random transcoder with 30 features", 1, _transcoder(g, 12, 30, 12), tokens),
        ("a module computing the MLP exactly (the logits must not change)", 1, "exact", tokens),
        ("batch of 1, pos 1, layer 0", 0, _transcoder(g, 12, 16, 12), tokens[:1, :1].clone()),
    ]
    cases = []
    for name, layer, tc, t in settings:
        spec = {"op": "splice", "config": _CONFIG, "state": state, "tokens": t, "layer": layer}
        with torch.no_grad():
            if tc == "exact":
                spec["transcoder"] = "exact"
                expected = model(t)
            else:
                spec["transcoder"] = tc.config()
                spec["transcoder_state"] = _state(tc)
                expected = checks._spliced_logits(model, tc, layer, t)
        cases.append(HiddenCase(name, spec, expected))
    for name, losses in (
        ("loss_recovered(0.5, 2.5, 1.0)", [0.5, 2.5, 1.0]),
        (
            "loss_recovered with 0-d tensors, spliced worse than ablated",
            [torch.tensor(0.2), torch.tensor(0.7), torch.tensor(0.95)],
        ),
    ):
        expected = float(checks._loss_recovered(*losses))
        cases.append(HiddenCase(name, {"op": "ratio", "losses": losses}, expected))
    return cases


def _score_splice(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    if case.inputs["op"] == "ratio":
        if isinstance(value, TensorResult) and value.tensor.numel() == 1:
            value = value.tensor.item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"loss_recovered should give a number (or a 0-d tensor), got {describe(value)}."
        if not math.isclose(value, case.expected, rel_tol=1e-5, abs_tol=1e-6):
            return (
                f"loss_recovered should be {case.expected:.6g}, got {value:.6g}. Hint: "
                "(ablated - spliced) / (ablated - original), 1 when splicing keeps the original loss."
            )
        return None
    problem = mutation_message(extra, ["model", "transcoder", "layer", "tokens"])
    if problem:
        return problem
    problem = hook_left_message(extra)
    if problem:
        return problem
    return tensor_mismatch(
        value, case.expected, atol=1e-5, rtol=1e-4, what="the logits",
        hint="store x from f'blocks.{layer}.ln2.hook_normalized' and put transcoder(x)[0] in "
        "place of f'blocks.{layer}.hook_mlp_out', with model.run_with_hooks",
    )  # fmt: skip


# --------------------------------------------------------------------------- 7: correlation
def _correlation_cases(seed: int) -> list[HiddenCase]:
    """Features with constant columns, three prompts, float64, all columns constant."""
    g = _generator(seed, 7)

    def make(n, d, dtype=torch.float32):
        animate = torch.rand(n, generator=g) < 0.5
        animate[0], animate[1] = True, False
        signal = torch.linspace(-1.5, 2.5, d, dtype=dtype) * animate.to(dtype)[:, None]
        features = F.relu(signal + torch.randn(n, d, generator=g, dtype=dtype))
        features[:, 1] = 0.0  # a feature that never fires
        features[:, -1] = 1.5  # a constant feature
        return features, animate

    settings = [
        ("30 prompts, 9 features (one never fires, one constant)", *make(30, 9)),
        ("3 prompts, 4 features", *make(3, 4)),
        ("float64, 20 prompts, 6 features", *make(20, 6, F64)),
        ("every feature constant; also run on 'meta' tensors", torch.full((5, 3), 0.5),
         torch.tensor([True, False, False, True, True])),
    ]  # fmt: skip
    return [
        HiddenCase(
            name, {"args": [f, a], "meta": "meta" in name}, checks._animacy_correlation(f, a)
        )
        for name, f, a in settings
    ]


def _score_correlation(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(extra, ["features", "animate"])
    if problem:
        return problem
    if isinstance(value, TensorResult) and value.tensor.is_floating_point():
        if torch.isnan(value.tensor).any():
            return (
                "your correlations contain nan. Hint: a feature that is constant over the prompts "
                "(e.g. never fires) has zero variance: its correlation is 0 here, not nan."
            )
    expected = case.expected
    tol = {"atol": 1e-9, "rtol": 1e-7} if expected.dtype == F64 else {"atol": 1e-5, "rtol": 1e-4}
    return tensor_mismatch(
        value, expected, **tol, what="the correlations",
        hint="Pearson's r of each feature (column) with animate as 0/1, over the prompts; "
        "shape (d_hidden,)",
    ) or meta_rule(plain(extra))  # fmt: skip


# --------------------------------------------------------------------------- 8: ablation
_ABLATE_CALL = (
    _BUILD
    + """
def call(fn, spec):
    import torch

    model = build_model(spec)
    transcoder = build_transcoder(spec, model)
    tokens, positions = spec["tokens"], spec["positions"]
    before = (tokens.clone(), positions.clone())
    with torch.no_grad():
        clean = model(tokens)
        value = fn(model, transcoder, spec["layer"], tokens, positions, list(spec["features"]))
        hook_left = not torch.equal(model(tokens), clean)
    mutated = [i for i, (a, b) in ((3, (tokens, before[0])), (4, (positions, before[1])))
               if not torch.equal(a, b)]
    extra = {"mutated": mutated, "hook_left": hook_left}
    if spec.get("meta"):  # once more on 'meta' copies (shapes only: a stand-in for a GPU)
        from labcore.checks.rules import on_meta

        with torch.no_grad():
            extra["meta"] = on_meta(fn, model, transcoder, spec["layer"], tokens, positions,
                                    list(spec["features"]))
    return value, extra
"""
)


def _ablate_cases(seed: int) -> list[HiddenCase]:
    """Both layers, a single prompt at its last position, no feature at all."""
    g = _generator(seed, 8)
    model = _gpt(g, _CONFIG)
    state = _state(model)
    tokens = torch.randint(0, 17, (3, 8), generator=g)
    positions = torch.randint(1, 8, (3,), generator=g)
    tc0, tc1 = _transcoder(g, 12, 20, 12, enc_bias=0.5), _transcoder(g, 12, 28, 12, enc_bias=0.5)
    settings = [
        ("layer 0, features [0, 3, 9, 17]", 0, tc0, tokens, positions, [0, 3, 9, 17]),
        (
            "layer 1, features [2, 27]; also run on 'meta' tensors",
            1,
            tc1,
            tokens,
            positions,
            [2, 27],
        ),
        ("batch of 1, the last position", 1, tc1, tokens[:1].clone(), torch.tensor([7]), [4, 5]),
        ("no feature (the logits must not change)", 0, tc0, tokens, positions, []),
    ]
    cases = []
    for name, layer, tc, t, pos, feats in settings:
        with torch.no_grad():
            expected = checks._ablate_features(model, tc, layer, t, pos, feats)
        spec = {"config": _CONFIG, "state": state, "transcoder": tc.config(),
                "transcoder_state": _state(tc), "layer": layer, "tokens": t, "positions": pos,
                "features": feats, "meta": "meta" in name}  # fmt: skip
        cases.append(HiddenCase(name, spec, expected))
    return cases


def _score_ablate(case: HiddenCase, value: Any, extra: dict[str, Any]) -> str | None:
    problem = mutation_message(
        extra, ["model", "transcoder", "layer", "tokens", "positions", "features"]
    )
    if problem:
        return problem
    problem = hook_left_message(extra)
    if problem:
        return problem
    return tensor_mismatch(
        value, case.expected, atol=1e-5, rtol=1e-4, what="the logits",
        hint="zero the features at positions[b] of prompt b only (f[torch.arange(batch), "
        "positions]) and keep the transcoder's error: MLP(x) + decode(edited f) - decode(f)",
    ) or meta_rule(plain(extra))  # fmt: skip


RUBRIC = Rubric(
    lab="05-transcoders",
    exercises=(
        Exercise("ex-mlp-io", "mlp_io", 2, _mlp_io_cases, _score_mlp_io, call_source=_MLP_IO_CALL),
        Exercise("ex-transcoder-forward", "transcoder_forward", 2, _forward_cases, _score_forward),
        Exercise(
            "ex-transcoder-loss",
            "transcoder_loss",
            3,
            _loss_cases,
            _score_loss,
            call_source=_LOSS_CALL,
        ),
        Exercise("ex-metrics", "fvu", 2, _metrics_cases, _score_metrics, call_source=_METRICS_CALL),
        Exercise(
            "ex-penalty", "penalty", 2, _penalty_cases, _score_penalty, call_source=_PENALTY_CALL
        ),
        Exercise(
            "ex-splice", "spliced_logits", 3, _splice_cases, _score_splice, call_source=_SPLICE_CALL
        ),
        Exercise(
            "ex-animacy-correlation",
            "animacy_correlation",
            2,
            _correlation_cases,
            _score_correlation,
        ),
        Exercise(
            "ex-ablate-features",
            "ablate_features",
            3,
            _ablate_cases,
            _score_ablate,
            call_source=_ABLATE_CALL,
        ),
    ),  # fmt: skip
    reference_modules=(
        "labcore.transcoder",
        "labcore.checks.transcoder",
    ),
)
