"""WeightMajorLinear computes the same linear layer as nn.Linear, for every shape, dtype and bias it may meet."""

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recbole_earn.llm.small_batch_linear import (
    MAX_ROWS,
    WeightMajorLinear,
    _active,
    install_weight_major_linear,
    weight_major_linear,
)


def weight_major(in_features, out_features, bias):
    return install_weight_major_linear(nn.Linear(in_features, out_features, bias=bias))


@pytest.mark.parametrize("shape", [(1, 16), (2, 16), (3, 1, 16), (4, 5, 16), (MAX_ROWS, 16), (MAX_ROWS + 1, 16)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_same_output_as_nn_linear(shape, with_bias):
    torch.manual_seed(0)
    module = weight_major(16, 24, with_bias)
    assert type(module) is WeightMajorLinear
    x = torch.randn(*shape)
    expected = F.linear(x, module.weight, module.bias)
    with weight_major_linear():
        got = module(x)
    assert got.shape == expected.shape == (*shape[:-1], 24)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(module(x), expected)  # outside the block: exactly nn.Linear


def test_bfloat16_and_gradients_pass_through():
    torch.manual_seed(0)
    module = weight_major(8, 6, True)
    x = torch.randn(3, 8, requires_grad=True)
    half = weight_major(8, 6, True).bfloat16()
    with weight_major_linear():
        module(x).square().sum().backward()
        bf16 = half(x.detach().bfloat16())
    grad_x, grad_w = x.grad.clone(), module.weight.grad.clone()
    module.zero_grad()
    x.grad = None
    F.linear(x, module.weight, module.bias).square().sum().backward()
    torch.testing.assert_close(grad_x, x.grad)
    torch.testing.assert_close(grad_w, module.weight.grad)
    assert bf16.dtype == torch.bfloat16
    assert torch.equal(bf16, F.linear(x.detach().bfloat16(), half.weight, half.bias))  # bf16: nn.Linear's path


class Quantized(nn.Linear):  # stands for a subclass with its own forward (e.g. an 8-bit layer)
    pass


def test_install_keeps_weights_state_dict_and_subclasses():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Quantized(4, 2))
    state = copy.deepcopy(model.state_dict())
    install_weight_major_linear(model)
    assert type(model[0]) is WeightMajorLinear and type(model[2]) is Quantized
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    restored = pickle.loads(pickle.dumps(copy.deepcopy(model)))
    assert type(restored[0]) is WeightMajorLinear


def test_the_block_is_reentrant_and_ends_on_error():
    module = weight_major(16, 8, False)
    x = torch.randn(4, 16)
    with pytest.raises(RuntimeError):
        with weight_major_linear():
            with weight_major_linear():
                pass
            raise RuntimeError("boom")
    assert torch.equal(module(x), F.linear(x, module.weight))


def test_the_engine_decodes_through_weight_major_modules():
    from llm_helpers import earn_model, random_prompts

    from recbole_earn.llm import beam_search

    model = earn_model("tiny-qwen2", earn_k=2)  # Qwen2: q/k/v projections with a bias
    linears = [m for m in model.backbone.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is WeightMajorLinear for m in linears)
    prompts = random_prompts(2, seed=3)
    calls = []  # (rows, inside a weight_major_linear() block) of every projection call
    hook = nn.modules.module.register_module_forward_hook(
        lambda module, args, out: calls.append((args[0].numel() // args[0].shape[-1], bool(getattr(_active, "depth", 0))))
        if type(module) is WeightMajorLinear else None)
    try:
        beam_search(model, prompts, num_beams=3, max_new_tokens=3, stop_at_eos=False)
    finally:
        hook.remove()
    assert (2 * 3, True) in calls  # a decoding step: 2 prompts x 3 beams rows, weight-major
    assert getattr(_active, "depth", 0) == 0  # and nothing stays switched on after decoding
