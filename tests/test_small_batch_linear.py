"""weight_major_linear computes the same F.linear as PyTorch, for every shape, dtype and bias it may meet."""

import pytest
import torch
import torch.nn.functional as F

from recbole_earn.llm.small_batch_linear import MAX_ROWS, weight_major_linear


@pytest.mark.parametrize("shape", [(1, 16), (2, 16), (3, 1, 16), (4, 5, 16), (MAX_ROWS, 16), (MAX_ROWS + 1, 16)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_same_product_as_f_linear(shape, with_bias):
    torch.manual_seed(0)
    x, weight = torch.randn(*shape), torch.randn(24, 16)
    bias = torch.randn(24) if with_bias else None
    expected = F.linear(x, weight, bias)
    with weight_major_linear():
        got = F.linear(x, weight, bias)
        module = torch.nn.Linear(16, 24, bias=with_bias)
        module_got = module(x)
    assert got.shape == expected.shape == (*shape[:-1], 24)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(module_got, F.linear(x, module.weight, module.bias), rtol=1e-5, atol=1e-5)


def test_bias_as_keyword_and_other_dtypes_pass_through():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(4, 8), torch.randn(6, 8), torch.randn(6)
    with weight_major_linear():
        keyword = F.linear(x, weight, bias=bias)
        bf16 = F.linear(x.bfloat16(), weight.bfloat16())
    torch.testing.assert_close(keyword, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16, F.linear(x.bfloat16(), weight.bfloat16()))


def test_gradients_flow_through_the_weight_major_product():
    torch.manual_seed(0)
    x, weight = torch.randn(3, 8, requires_grad=True), torch.randn(5, 8, requires_grad=True)
    with weight_major_linear():
        F.linear(x, weight).square().sum().backward()
    grad_x, grad_w = x.grad.clone(), weight.grad.clone()
    x.grad, weight.grad = None, None
    F.linear(x, weight).square().sum().backward()
    torch.testing.assert_close(grad_x, x.grad)
    torch.testing.assert_close(grad_w, weight.grad)
