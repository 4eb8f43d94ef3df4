"""Which SDPA kernel the EARN attention runs on the CPU: the math path for training steps (its autograd backward is
faster there than the CPU flash kernel's), the default kernel for inference, and the same gradients either way."""

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from llm_helpers import earn_model, random_prompts
from recbole_earn.llm.attention import attention_modules, earn_attention_forward

FLASH_CPU_OP = "aten::_scaled_dot_product_flash_attention_for_cpu"


def _ops_run(function):
    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        function()
    return {event.key for event in recorded.key_averages()}


def _loss_of_a_batch(model):
    batch = model.make_batch(random_prompts(3, 4, 10), random_prompts(3, 1, 4, seed=1))
    return model(batch).loss


def test_training_step_uses_the_math_path_and_inference_the_default_kernel():
    model = earn_model(earn_k=1).train()
    training_ops = _ops_run(lambda: _loss_of_a_batch(model).backward())
    assert FLASH_CPU_OP not in training_ops
    assert "aten::_scaled_dot_product_attention_math" in training_ops
    with torch.no_grad():
        inference_ops = _ops_run(lambda: _loss_of_a_batch(model.eval()))
    assert FLASH_CPU_OP in inference_ops


def test_math_path_gradients_equal_the_flash_kernels():
    model = earn_model(earn_k=1)
    module = attention_modules(model.causal_lm)[0]
    generator = torch.Generator().manual_seed(0)
    heads, kv_heads = model.causal_lm.config.num_attention_heads, model.causal_lm.config.num_key_value_heads
    head_dim = model.causal_lm.config.hidden_size // heads
    query = torch.randn(2, heads, 7, head_dim, generator=generator)  # [B, H, S, d]
    key, value = (torch.randn(2, kv_heads, 7, head_dim, generator=generator) for _ in range(2))  # [B, kvh, S, d]
    mask = torch.zeros(2, 1, 7, 7).masked_fill(torch.ones(7, 7).triu(1).bool(), float("-inf"))  # causal, additive

    def gradients(attention):
        inputs = [tensor.clone().requires_grad_() for tensor in (query, key, value)]
        output, _ = attention(module, *inputs, mask, scaling=head_dim ** -0.5)
        output.pow(2).sum().backward()
        return [tensor.grad for tensor in inputs]

    def flash(*args, **kwargs):
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return sdpa_attention_forward(*args, **kwargs)

    for ours, theirs in zip(gradients(earn_attention_forward), gradients(flash)):
        assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-4)
