"""The acceptance rules that every lab's checks and rubrics share, written once.

An exercise is judged in two halves. The **kernel side** calls the student's function (in the
notebook, by the check; in the student's kernel, by the grader) and reports what it saw: which
inputs changed in place, whether the global RNG or the default dtype changed, on which device the
results of a ``meta`` run landed. The call sources of the labs (``CALL_SOURCE`` strings, run by the
check and in the grader's kernel alike) import these helpers from here:

* :func:`watch_global_state`: the global CPU RNG holds a probe state while the function runs, so
  that any draw *and* any reseed (``torch.manual_seed(0)`` included, which a before/after
  comparison misses when the caller's state happens to be the seed-0 state) is seen; the caller's
  RNG state and default dtype are put back afterwards;
* :func:`copies` and :func:`changed`: the in-place changes of tensor arguments;
* :func:`on_meta` and :func:`devices`: the same call on ``meta`` tensors (shapes only, a stand-in
  for a GPU), which catches a tensor created on the default device without a GPU;
* :func:`reference_in_place`: labcore's reference bound under an earlier exercise's name in the
  student's namespace during the call, so that one mistake costs points once;
* :func:`what_raised`: what a call that must reject its argument raised.

The **judge side** reads that report and the returned value, in the notebook check and in the
grader's rubric alike: :func:`common` (inputs, parameters, global RNG and default dtype untouched),
:func:`tensor_rule` (type, shape, dtype, device, values, and the hint of the typical mistake whose
result matches), :func:`meta_rule`, :func:`tuple_rule`, :func:`raised_message`, :func:`tolerance`
and :func:`short` (how every message shows a value). Messages say what was tried, what was
expected, what came and a hint about the concept; they never show the answer's code.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "PROBE_SEED",
    "watch_global_state",
    "copies",
    "changed",
    "devices",
    "on_meta",
    "what_raised",
    "reference_in_place",
    "compile_call",
    "short",
    "tolerance",
    "same_device",
    "tensor_rule",
    "tuple_rule",
    "common",
    "meta_rule",
    "raised_message",
    "SHAPE_WORDS",
    "TYPE_HINT",
]

Tensor = torch.Tensor
F64 = torch.float64

# ============================================================================ kernel side
#: The probe state of the global CPU generator while the student's function runs: a reseed to any
#: value (``torch.manual_seed(0)`` too) or a draw changes it.
PROBE_SEED = 853495113


@contextlib.contextmanager
def watch_global_state() -> Iterator[dict[str, Any]]:
    """Watch the global state while the block runs (the student's call); yields the report.

    On entry the global CPU RNG is set to the probe state :data:`PROBE_SEED`; on exit the report
    gets ``global_rng`` (whether that state changed: a draw or a reseed) and ``default_dtype``
    (the new default dtype as a string, ``""`` if unchanged), and the caller's RNG state and
    default dtype are put back, even if the block raised.
    """
    saved, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    torch.default_generator.manual_seed(PROBE_SEED)
    probe = torch.random.get_rng_state()
    report: dict[str, Any] = {}
    try:
        yield report
    finally:
        now = torch.get_default_dtype()
        report["global_rng"] = not torch.equal(probe, torch.random.get_rng_state())
        report["default_dtype"] = str(now) if now != dtype else ""
        torch.set_default_dtype(dtype)
        torch.random.set_rng_state(saved)  # the caller's stream, as it was


def copies(args: Sequence[Any]) -> list[Tensor | None]:
    """Detached copies of the tensor arguments (``None`` for the others), for :func:`changed`."""
    return [a.detach().clone() if isinstance(a, Tensor) else None for a in args]


def changed(args: Sequence[Any], before: Sequence[Tensor | None]) -> list[int]:
    """The positions of tensor arguments whose shape or values differ from ``before``."""
    return [
        i
        for i, (a, c) in enumerate(zip(args, before, strict=True))
        if c is not None
        and not (isinstance(a, Tensor) and a.shape == c.shape and torch.equal(a.detach(), c))
    ]


def devices(out: Any) -> list[str]:
    """The device of every tensor in ``out`` (a tensor, or nested lists and tuples of them);
    anything else is reported as ``"not a tensor: <type>"``."""
    if isinstance(out, Tensor):
        return [str(out.device)]
    if isinstance(out, list | tuple):
        return [d for item in out for d in devices(item)]
    return ["not a tensor: " + type(out).__name__]


def _to_meta(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().to("meta")
    if isinstance(value, torch.nn.Module):
        return copy.deepcopy(value).to("meta")
    if isinstance(value, list | tuple):  # e.g. a list of (W, b) pairs
        return type(value)(_to_meta(v) for v in value)
    return value


def on_meta(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[str] | str:
    """Call ``fn`` once more with every tensor (and module) argument moved to ``meta``, in lists
    and tuples too.

    Returns the devices of what it returned (:func:`devices`), or ``"error: <type>: <message>"``
    if it raised (what :func:`meta_rule` reads). The global state is watched and restored as in
    :func:`watch_global_state` (the first call already reported it).
    """
    meta_args = [_to_meta(a) for a in args]
    meta_kwargs = {k: _to_meta(v) for k, v in kwargs.items()}
    try:
        with watch_global_state():
            return devices(fn(*meta_args, **meta_kwargs))
    except Exception as err:  # NotImplementedError too: torch raises it for meta copies
        return "error: " + (type(err).__name__ + ": " + str(err))[:300]


def what_raised(fn: Callable[..., Any], *args: Any) -> str:
    """Call ``fn(*args)`` where it must raise (a bad argument): ``"ValueError"`` for a
    ``ValueError`` (or a subclass), the type's name for another error, or ``"returned
    normally"``. ``NotImplementedError`` (an unfinished exercise) passes through."""
    try:
        fn(*args)
    except NotImplementedError:
        raise
    except ValueError:
        return "ValueError"
    except Exception as err:
        return type(err).__name__
    return "returned normally"


_MISSING = object()


@contextlib.contextmanager
def reference_in_place(fn: Callable[..., Any], references: Mapping[str, Any]) -> Iterator[None]:
    """Bind each reference under its name in ``fn``'s namespace (the notebook's globals) while the
    block runs, then put back what was there (or remove a name that was not): an exercise that
    calls the student's earlier exercise is judged on its own, so that one mistake costs points
    once. A callable without ``__globals__`` (a builtin, a ``functools.partial``) runs as it is.
    """
    namespace = getattr(fn, "__globals__", None)
    if not isinstance(namespace, dict) or not references:
        yield
        return
    saved = {name: namespace.get(name, _MISSING) for name in references}
    namespace.update(references)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is _MISSING:
                namespace.pop(name, None)
            else:
                namespace[name] = old


# ============================================================================ judge side
def compile_call(source: str) -> Callable[..., tuple[Any, dict[str, Any]]]:
    """The ``call`` function that ``source`` defines: the notebook check runs the very source
    that the grader sends to the student's kernel."""
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return namespace["call"]


def short(value: Any, limit: int = 6) -> str:
    """A short description of any value for a message: a tensor's shape, dtype and first
    ``limit`` entries (only shape and dtype on ``meta``), a NumPy array's shape and dtype, a list's
    length and first items, a Python float, the type of an object the grader did not transport."""
    if isinstance(value, Tensor):
        if value.device.type == "meta":
            return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}, device=meta)"
        flat = value.detach().flatten().cpu()
        if flat.is_floating_point():
            head = ", ".join(f"{v:.4g}" for v in flat[:limit].tolist())
        else:
            head = ", ".join(str(v) for v in flat[:limit].tolist())
        more = ", ..." if flat.numel() > limit else ""
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype}, values=[{head}{more}])"
    if isinstance(value, np.ndarray):
        return f"numpy.ndarray(shape={value.shape}, dtype={value.dtype})"
    if isinstance(value, list | tuple):
        inner = ", ".join(short(v) for v in value[:3])
        more = ", ..." if len(value) > 3 else ""
        return f"{type(value).__name__} of length {len(value)} ({inner}{more})"
    if isinstance(value, float):
        return f"{value:.6g} (a Python float)"
    type_name = getattr(value, "type_name", None)  # an Opaque of the grader
    if isinstance(type_name, str):
        return f"an object of type {type_name}"
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def tolerance(
    dtype: torch.dtype,
    *,
    float64: tuple[float, float] = (1e-10, 1e-8),
    float32: tuple[float, float] = (2e-5, 1e-4),
) -> dict[str, float]:
    """``{"atol": ..., "rtol": ...}`` for results of ``dtype``: ``float64`` for float64, else
    ``float32``. A lab whose references accumulate more round-off passes its own pair."""
    atol, rtol = float64 if dtype == F64 else float32
    return {"atol": atol, "rtol": rtol}


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    """Same device type, and the same index where both name one (``"cuda"`` is ``"cuda:0"``)."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


#: The hint of a result that is not a tensor at all.
TYPE_HINT = (
    "the result must be a torch.Tensor computed with torch operations (not a NumPy array, a list "
    "or a Python number: no .item(), .tolist(), .numpy() or float(...))"
)


def _hinted(text: str, hint: str) -> str:
    return text + (f"\n  hint: {hint}" if hint else "")


def _matching_hint(
    values: Tensor,
    want: Tensor,
    diagnoses: Mapping[str, Callable[[], Tensor]],
    tol: dict[str, float],
) -> str | None:
    """The hint of the first typical mistake whose result matches ``values`` (and differs from
    ``want``), else ``None``. Candidates are computed lazily and may fail (a mistake that cannot
    happen for this input)."""
    boolean = values.dtype == torch.bool
    loose = {"atol": 10 * tol["atol"] + 1e-6, "rtol": 10 * tol["rtol"] + 1e-5}
    for text, make in diagnoses.items():
        try:
            candidate = make().detach().cpu()
        except Exception:  # this mistake cannot happen for this input
            continue
        if candidate.shape != want.shape:
            continue
        if boolean:
            same = torch.equal(values, candidate.to(torch.bool))
            differs = not torch.equal(candidate.to(torch.bool), want)
        else:
            got64, cand64, want64 = values.to(F64), candidate.to(F64), want.to(F64)
            same = torch.allclose(got64, cand64, equal_nan=True, **loose) or (
                bool(torch.isfinite(got64).any())  # a NaN row matches a zero row: 0/0 is a
                and torch.allclose(  # mistake of its own, named by its own rule
                    got64.nan_to_num(0.0), cand64.nan_to_num(0.0), **loose
                )
            )
            differs = not torch.allclose(cand64, want64, equal_nan=True, **tol)
        if same and differs:
            return text
    return None


def tensor_rule(
    got: Any,
    expected: Tensor,
    like: Tensor | None = None,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    what: str = "the result",
    hint: str = "",
    diagnoses: Mapping[str, Callable[[], Tensor]] | None = None,
    shape_hints: Mapping[tuple[int, ...], str] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    exact: bool = False,
) -> str | None:
    """``None`` if ``got`` is a tensor like ``expected``, else the message.

    Checked in order, each with its own message: a ``torch.Tensor``; real if ``expected`` is;
    ``expected``'s shape (``shape_hints`` maps a wrong shape to its hint); ``dtype`` and
    ``device`` (by default ``like``'s: the input's); then the values, within
    ``atol + rtol * |expected|`` (by default :func:`tolerance` of the dtype; bool and integer
    results, or ``exact=True``: equal).
    ``expected`` may live on the CPU and in float64; the values are compared on the CPU.
    ``diagnoses`` maps a hint to a function computing what a typical mistake returns; the first
    whose result matches ``got`` (and differs from ``expected``) replaces ``hint``.

    Raises:
        ValueError: if neither ``like`` nor ``dtype`` says which dtype the result must have.
    """
    if dtype is None:
        if like is None:
            raise ValueError("tensor_rule needs like= or dtype= (the result's dtype)")
        dtype = like.dtype
    if device is None and like is not None:
        device = like.device
    if not isinstance(got, Tensor):
        plain = isinstance(got, bool | int | float | list | tuple | np.ndarray | np.generic)
        return _hinted(
            f"{what} should be a torch.Tensor, got {short(got)}", TYPE_HINT if plain else hint
        )
    if got.is_complex() and not expected.is_complex():
        return _hinted(
            f"{what} is complex ({got.dtype}), expected real values",
            "the result is real: come back from Fourier coefficients with "
            "torch.fft.irfft(..., n=N), which returns a real tensor",
        )
    if got.shape != expected.shape:
        text = (shape_hints or {}).get(tuple(got.shape), hint)
        return _hinted(
            f"{what} should have shape {tuple(expected.shape)}, got {tuple(got.shape)}", text
        )
    if got.dtype != dtype:
        return _hinted(
            f"{what} should have dtype {dtype} (the input's), got {got.dtype}",
            "compute in the input's dtype: no .float()/.double(), and tensors you create take "
            "dtype=... from the input",
        )
    if device is not None and not same_device(got.device, device):
        return _hinted(
            f"{what} should be on {device} (the input's device), got {got.device}",
            "create new tensors with device=... (or *_like) from the input",
        )
    values, want = got.detach().cpu(), expected.detach().cpu()
    exact = exact or not (want.is_floating_point() or want.is_complex())
    tol = {**tolerance(dtype), **({} if atol is None else {"atol": atol})}
    tol.update({} if rtol is None else {"rtol": rtol})
    tol = {"atol": 0.0, "rtol": 0.0} if exact else tol
    if exact and torch.equal(values, want.to(values.dtype)):
        return None
    if not exact and torch.allclose(values.to(F64), want.to(F64), **tol):
        return None
    hint = _matching_hint(values, want, diagnoses or {}, tol) or hint
    if values.dtype == torch.bool or (exact and not values.is_floating_point()):
        body = f"{int((values != want.to(values.dtype)).sum())} of {want.numel()} entries differ"
        if values.dtype == torch.bool and want.ndim == 2:
            body += " (1 = True)"
            shown = f"{want[:5, :5].int().tolist()}", f"{values[:5, :5].int().tolist()}"
        else:
            shown = short(want), short(values)
        return _hinted(f"{what}: {body}\n  expected: {shown[0]}\n  got:      {shown[1]}", hint)
    if not torch.isfinite(values).all() and torch.isfinite(want).all():
        body = f"{int((~torch.isfinite(values)).sum())} of {values.numel()} entries are NaN or inf"
    else:
        error = (values.to(F64) - want.to(F64)).abs().max().item()
        body = (
            f"values differ (max abs error {error:.3g}, tolerance {tol['atol']:g} + "
            f"{tol['rtol']:g}*|expected|)"
        )
    shown = want.to(got.dtype) if want.is_floating_point() and got.is_floating_point() else want
    return _hinted(f"{what}: {body}\n  expected: {short(shown)}\n  got:      {short(got)}", hint)


def tuple_rule(got: Any, n: int, what: str) -> str | None:
    """``None`` if ``got`` is a tuple (or list) of ``n`` items, else the message naming them."""
    if isinstance(got, list | tuple) and len(got) == n:
        return None
    kind = "a pair" if n == 2 else f"a tuple of {n} tensors"
    return f"expected {kind} ({what}), got {short(got)}"


def common(extra: Mapping[str, Any], names: Sequence[str]) -> str | None:
    """The rules every exercise shares, read from the kernel side's report ``extra``: the
    caller's tensors come back as they were (``mutated``; ``grad_flag``: ``requires_grad`` switched
    on or a ``.grad`` given), the weights of a given model unchanged (``params_changed``), the
    global RNG (``global_rng``) and the default dtype (``default_dtype``) untouched. ``names`` are
    the argument names, by position. ``None`` if every rule holds, else the message."""
    mutated, flagged = extra.get("mutated"), extra.get("grad_flag", [])
    if not isinstance(mutated, list) or not isinstance(flagged, list):
        return "the call could not tell whether your function changed its inputs"

    def named(indices: list) -> str:
        return ", ".join(repr(names[i]) if 0 <= i < len(names) else "?" for i in indices)

    if mutated:
        return (
            f"your function modified its input {named(mutated)} in place\n  hint: the caller's "
            "tensors must not change: use out-of-place operations (a = a + b, not a += b, "
            "a[...] = ..., a.add_(b) or a.unsqueeze_(0)) or work on a copy"
        )
    if flagged:
        return (
            f"your function changed the caller's tensor {named(flagged)}: it came back with "
            "requires_grad switched on or with a .grad (the statement says: do not modify x)\n  "
            "hint: requires_grad_ and .backward() act on the tensor you were given; differentiate "
            "with respect to a detached copy that requires grad, so that the caller's tensor "
            "stays as it was"
        )
    if extra.get("params_changed"):
        return (
            "your function changed the weights of the model (or module) it was given\n  hint: "
            "read the weights, never write them: no optimizer step, no in-place change of a "
            "parameter (an ablation changes an activation during one forward pass, with a hook)"
        )
    if extra.get("global_rng"):
        return (
            "your function changed the global random state (torch.manual_seed, or a draw from "
            "the global generator)\n  hint: the caller's random stream must not change: where the "
            "exercise is random, draw from the generator you are given (or a torch.Generator "
            "seeded with the seed argument); elsewhere draw nothing"
        )
    if extra.get("default_dtype"):
        return (
            f"your function changed the default dtype to {extra['default_dtype']}\n  hint: take "
            "the dtype from the input instead of torch.set_default_dtype"
        )
    return None


def meta_rule(extra: Mapping[str, Any], n_outputs: int = 1) -> str | None:
    """The ``meta`` run (:func:`on_meta`, reported as ``extra["meta"]``): ``None`` if every one of
    the ``n_outputs`` results landed on ``meta`` (or no run was made, or the run met an
    operation without a meta kernel: no verdict), else the message."""
    if "meta" not in extra:
        return None
    report = extra["meta"]
    if isinstance(report, str):
        low = report.lower()
        if "device" not in low and "copy out of meta" not in low and "numpy" not in low:
            return None  # an operation without a meta kernel, or .item(): no verdict
        return (
            "run again with the inputs on the 'meta' device (shapes only, a stand-in for a GPU), "
            f"your function raised {report.removeprefix('error: ')}\n  hint: work on the input's "
            "device: a tensor created without device=... lands on the CPU, and a round trip "
            "through NumPy or a CPU tensor leaves the input's device"
        )
    wrong = [d for d in report if d != "meta"]
    if wrong or len(report) != n_outputs:
        return (
            "run again with the inputs on the 'meta' device (a stand-in for a GPU), your function "
            f"returned results on {sorted(set(report))}, expected 'meta' (the input's device)\n  "
            "hint: create new tensors with device=... (the argument, or the input's device; or "
            "*_like)"
        )
    return None


#: Words of torch's shape and broadcasting errors.
SHAPE_WORDS = (
    "size of tensor",
    "shape",
    "must match",
    "cannot be multiplied",
    "dimension",
    "broadcast",
    "size mismatch",
    "invalid for input of size",
)


def raised_message(
    err: BaseException, *, shape_hint: str, hints: Mapping[str, str] | None = None
) -> str:
    """The message for an error raised inside the student's function: its type and text; for a
    shape error, a hint to write down the shapes and ``shape_hint`` (what to check in this lab);
    ``hints`` maps a phrase of the error's text to a further hint."""
    text = f"your function raised {type(err).__name__}: {err}"
    if any(word in str(err).lower() for word in SHAPE_WORDS):
        text += (
            "\n  hint: a shape error inside your function: write down the shape of every "
            f"intermediate (the statement gives the shapes) and {shape_hint}"
        )
    for phrase, hint in (hints or {}).items():
        if phrase in str(err):
            text += f"\n  hint: {hint}"
            break
    return text
