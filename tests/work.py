"""Count the work a piece of code does in torch, instead of timing it.

A test that says "this check is fast" must not compare a wall-clock duration with a budget: on a
shared machine a busy core doubles any timing. What makes a check slow is the work it asks for (how
many torch operations it dispatches, how many floating-point operations they cost), and that work
is the same on a quiet laptop and on a loaded CI runner. :class:`TorchWork` counts both, exactly,
by intercepting every ATen operation (forward and backward) through ``TorchDispatchMode``; the
floating-point cost of matrix products and convolutions comes from torch's own FLOP formulas
(``torch.utils.flop_counter``), and any other operation counts one per output element.

The budgets below are what "immediate feedback" means for a notebook check: on a laptop core an
eager operation on small tensors costs 10-30 µs, so 60,000 operations are about a second, and
500 MFLOP are a small fraction of one. Timings themselves live in ``benchmarks/`` as ratios.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

#: Torch operations a notebook check may dispatch to accept a right answer.
CHECK_OPS_BUDGET = 60_000
#: Floating-point operations a notebook check may cost to accept a right answer.
CHECK_FLOPS_BUDGET = 500_000_000


def _shape(value: Any) -> Any:
    return value.shape if isinstance(value, torch.Tensor) else value


class TorchWork(TorchDispatchMode):
    """Within ``with TorchWork() as work:``, ``work.ops`` and ``work.flops`` count what ran.

    ``ops``: ATen operations dispatched (each elementwise op, matmul, reduction, copy, ...).
    ``flops``: torch's FLOP count for matrix products and convolutions, plus one per output
    element of every other operation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            shapes = tree_map(_shape, (args, kwargs, out))
            self.flops += int(formula(*shapes[0], **shapes[1], out_val=shapes[2]))
        elif isinstance(out, torch.Tensor):
            self.flops += out.numel()
        return out

    def assert_within(
        self, what: str, ops: int = CHECK_OPS_BUDGET, flops: int = CHECK_FLOPS_BUDGET
    ) -> None:
        """Fail with the counts when either budget is exceeded."""
        assert self.ops <= ops, f"{what} dispatched {self.ops} torch operations (budget {ops})"
        assert self.flops <= flops, f"{what} cost {self.flops:.3g} FLOP (budget {flops:.3g})"
