"""Published LLM architectures with random weights, for speed and memory measurements at scales whose weights are
not at hand (a random-weight model costs the same time per token as the trained one).

    model, tokenizer = build_architecture("llama-7b-arch", dtype=torch.bfloat16, device="cuda")

The configs are the published ones (layers, hidden size, heads, KV heads, MLP size, vocabulary, rotary base);
the weights are drawn on the target device in the target dtype, never materialised elsewhere. The tokenizer is
SmolLM2's, shipped offline: it writes prompts, and `in_vocabulary` folds its ids into a smaller vocabulary.
"""

import torch

ARCHITECTURES = {
    # Llama-7B (Touvron et al. 2023), the paper's main backbone: 32 layers, multi-head attention
    "llama-7b-arch": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                          max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=False),
    # Qwen2.5-7B: 28 layers, grouped-query attention (4 KV heads), biases on q/k/v
    "qwen2.5-7b-arch": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                            num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                            max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                            tie_word_embeddings=False),
    # Llama-3.2-1B: 16 layers, 8 KV heads, tied embeddings
    "llama-1b-arch": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                          max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                          tie_word_embeddings=True),
    # SmolLM2-135M, the bundled backbone's shape
    "smollm2-135m-arch": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                              num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                              max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                              tie_word_embeddings=True),
}


def architecture_config(name, **overrides):
    """The transformers config of architecture `name` (e.g. num_hidden_layers=2 to shrink it for a test)."""
    from transformers import AutoConfig

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; architectures are {', '.join(ARCHITECTURES)}")
    values = {**ARCHITECTURES[name], **overrides}
    return AutoConfig.for_model(values.pop("model_type"), **values)


def build_architecture(name, dtype=torch.float32, device="cpu", seed=0, **overrides):
    """(model, tokenizer): architecture `name` with random weights, built directly on `device` in `dtype`."""
    from transformers import AutoModelForCausalLM

    from .backbone import smollm2_tokenizer

    config = architecture_config(name, **overrides)
    tokenizer = smollm2_tokenizer()
    for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config, field, in_vocabulary(getattr(tokenizer, field), config.vocab_size))
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval(), tokenizer


def in_vocabulary(token_id, vocab_size):
    """A token id folded into [0, vocab_size) (ids of SmolLM2's tokenizer, for an architecture with fewer)."""
    return None if token_id is None else int(token_id) % vocab_size
