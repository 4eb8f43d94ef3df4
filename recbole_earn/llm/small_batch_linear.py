"""A faster fp32 linear layer for the few rows of a decoding step, on CPU (other devices take F.linear).

A decoding step multiplies a handful of rows (one per beam) by every weight matrix: it is bound by reading the
weights, and the layout of the product decides how well MKL's sgemm streams them. Measured on a 2-core AVX-512
CPU (torch 2.13, MKL 2024.2), the 30 layers of SmolLM2-135M plus its 49k-row lm head, fp32, about:

    rows                      2     4     8    32    160
    x @ W.T  (F.linear)   72 ms 64 ms 61 ms 94 ms 290 ms
    (W @ x.T).T           20 ms 27 ms 50 ms 79 ms 270 ms

With one row F.linear takes sgemv's path and is the faster one; bf16 goes through oneDNN, which needs no help.
Both compute the same product (up to fp32 summation order).

`install_weight_major_linear(model)` turns every plain `nn.Linear` of a model (the backbone's projections, the
lm head, LoRA's A and B) into a `WeightMajorLinear`: the same module, weights and state dict, whose forward takes
the weight-major layout for 2..256 fp32 rows while `weight_major_linear()` is active in the calling thread, and is
exactly `nn.Linear.forward` otherwise. (A torch function mode would do the same without touching the modules, but
costs ~10% of a decoding step in Python dispatch on every op.)
"""

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

MIN_ROWS = 2  # one row: sgemv is already the fast path
MAX_ROWS = 256  # past a few hundred rows (prefill, training) the two layouts cost the same

_active = threading.local()


class WeightMajorLinear(nn.Linear):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if getattr(_active, "depth", 0) and input.dtype == torch.float32 and self.weight.dtype == torch.float32 \
                and input.device.type == "cpu":
            rows = input.numel() // input.shape[-1] if input.dim() else 0
            if MIN_ROWS <= rows <= MAX_ROWS:
                out = (self.weight @ input.reshape(rows, input.shape[-1]).t()).t()  # [rows, out]
                out = out.reshape(*input.shape[:-1], self.out_features)
                return out if self.bias is None else out + self.bias
        return F.linear(input, self.weight, self.bias)


def install_weight_major_linear(model: nn.Module) -> nn.Module:
    """Make every plain nn.Linear of `model` a WeightMajorLinear (in place; subclasses of nn.Linear are left as
    they are). Returns the model."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = WeightMajorLinear
    return model


@contextmanager
def weight_major_linear():
    """Within the block (in this thread), WeightMajorLinear modules compute 2..256 fp32 rows as (W @ x.T).T."""
    _active.depth = getattr(_active, "depth", 0) + 1
    try:
        yield
    finally:
        _active.depth -= 1
