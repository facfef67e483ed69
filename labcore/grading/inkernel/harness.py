"""Kernel side of one hidden case: call the student's function and save its raw result.

The grader sends this module's source to the kernel with a call of :func:`run` appended, in a fresh
namespace. It only calls the function and saves what came back with ``torch.save`` (tensors,
numbers, strings and containers; anything else as a description); it never decides anything. The
grader loads the record with ``torch.load(weights_only=True)``, checks its nonce, and compares it
with the reference in its own process.

A record is a dict: ``nonce``, ``status`` (one of :class:`labcore.grading.records.CaseStatus`'s
values), ``error`` (text), ``module`` (the function's ``__module__``), ``value`` and ``extra``.
"""

from __future__ import annotations

from typing import Any

import torch


def _object(value: Any, text: str = "") -> dict[str, str]:
    """A description of a value that is not transported."""
    kind = type(value)
    return {"__object__": f"{kind.__module__}.{kind.__qualname__}", "repr": text}


def clean(value: Any, max_elements: int, depth: int = 0) -> Any:
    """``value`` made of plain types only (what ``torch.load(weights_only=True)`` accepts).

    Tensors become ``{"__tensor__": a detached dense CPU copy, "requires_grad", "device", "type"}``,
    dicts ``{"__dict__": [[key, value], ...]}``; tensors with more than ``max_elements`` elements,
    containers nested deeper than 8 and unknown objects become ``{"__object__": type, "repr": ...}``.
    """
    if depth > 8:
        return _object(value, "nested too deeply")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value[:2000])
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(value, torch.Tensor):
        if value.numel() > max_elements:
            return _object(value, f"a tensor of shape {tuple(value.shape)}, too large")
        data = value.detach()
        if data.layout != torch.strided:
            data = data.to_dense()
        data = data.to("cpu").clone().contiguous().as_subclass(torch.Tensor)
        if name in ("torch.Tensor", "torch.nn.parameter.Parameter"):
            name = "torch.Tensor"
        return {
            "__tensor__": data,
            "requires_grad": bool(value.requires_grad),
            "device": str(value.device),
            "type": name,
        }
    if name == "numpy.ndarray" and value.dtype.kind in "biuf" and value.size <= max_elements:
        return {
            "__tensor__": torch.as_tensor(value.copy()),
            "requires_grad": False,
            "device": "cpu",
            "type": name,
        }
    if isinstance(value, list | tuple) and len(value) <= 100_000:
        items = [clean(item, max_elements, depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict) and len(value) <= 1000:
        return {
            "__dict__": [
                [str(k)[:200], clean(v, max_elements, depth + 1)] for k, v in value.items()
            ]
        }
    return _object(value)


def _error(err: BaseException) -> str:
    """``"TypeError: text"``, cut to 600 characters, even if ``str(err)`` raises."""
    try:
        text = str(err)
    except Exception:
        text = ""
    return f"{type(err).__name__}: {text}"[:600] if text else type(err).__name__


def run(
    namespace: dict[str, Any],
    nonce: str,
    in_path: str,
    out_path: str,
    name: str,
    call_source: str,
    max_elements: int,
) -> dict[str, Any]:
    """Call ``namespace[name]`` on the hidden input saved at ``in_path``; save the record at ``out_path``.

    ``call_source`` is the rubric's code defining ``call(fn, spec) -> (value, extra)`` (how the
    exercise's function is called on one input). Returns the record it saved.
    """
    record: dict[str, Any] = {
        "nonce": nonce,
        "status": "error",
        "error": "",
        "module": "",
        "value": None,
        "extra": None,
    }
    try:
        spec = torch.load(in_path, weights_only=True)
        fn = namespace.get(name)
        if fn is None:
            record["status"] = "missing"
        elif not callable(fn):
            record["status"] = "not-callable"
            record["error"] = type(fn).__name__
        else:
            record["module"] = str(getattr(fn, "__module__", None) or "")[:200]
            scope: dict[str, Any] = {}
            exec(call_source, scope)
            value, extra = scope["call"](fn, spec)
            try:
                record["value"] = clean(value, max_elements)
                record["extra"] = clean(extra, max_elements)
                record["status"] = "ok"
            except Exception as err:
                record["error"] = "the grader could not read the result: " + _error(err)
    except NotImplementedError:
        record["status"] = "not-implemented"
    except (Exception, SystemExit) as err:
        record["error"] = _error(err)
    with open(out_path, "wb") as handle:
        torch.save(record, handle)
    return record
