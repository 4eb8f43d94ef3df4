"""The attention function the EARN engine registers with transformers.

Ordinary calls (training, prefill, the plain model) go straight to the backbone's own attention implementation
(sdpa or eager). Decoding calls carry `earn_cache=<EARNCache>`; then a beam's single query attends to its prompt's
shared keys (stored once per prompt, at batch B) and its own generated keys (at batch B * beams), with one softmax
over both, so no beam ever copies the prompt's KV.
"""

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

ATTENTION_NAME = "earn"
# The backbone's own implementation ("sdpa" or "eager"), kept on each of its attention modules: not on the config,
# whose attributes all go to config.json, nor in a table keyed by id(config), which a later config may reuse.
BASE_ATTENTION_ATTRIBUTE = "earn_base_attention"


def _shared_prefix_attention(module, query, beam_keys, beam_values, cache, scaling):
    """One decoding step of attention over [shared prompt part, per-beam generated part].

    query:        [B*nb, H, 1, d]    (nb beams per prompt, H query heads = kvh * G)
    shared K/V:   [B, kvh, P, d]     with additive mask [B, 1, 1, P] or None
    beam K/V:     [B*nb, kvh, t, d]  (already holds this step's key; with beam slots t = T slots, those not
                                      written yet hidden by the cache's beam_mask [1, 1, 1, T])
    returns       [B*nb, 1, H, d]    (the layout every transformers attention function returns)
    """
    layer = module.layer_idx
    shared_keys, shared_values = cache.shared_keys[layer], cache.shared_values[layer]
    shared_mask = cache.shared_mask[layer]
    batch, kv_heads, prefix_len, head_dim = shared_keys.shape
    beams_total, heads, q_len, _ = query.shape
    if q_len != 1:
        raise ValueError("EARN shared-prefix attention decodes one token per step")
    nb = beams_total // batch
    groups = heads // kv_heads

    query = query * scaling  # scaling the single query is cheaper than scaling both score blocks
    # Queries of all beams and all heads of one kv group, stacked as rows: [B, kvh, nb*G, d].
    q_shared = query.view(batch, nb, kv_heads, groups, head_dim).permute(0, 2, 1, 3, 4)
    q_shared = q_shared.reshape(batch, kv_heads, nb * groups, head_dim)
    scores_shared = torch.matmul(q_shared, shared_keys.transpose(-1, -2))  # [B, kvh, nb*G, P]
    if shared_mask is not None:
        scores_shared = scores_shared + shared_mask
    # Re-laid as per beam rows: [B*nb, kvh, G, P] (a copy of scores, not of keys).
    scores_shared = scores_shared.view(batch, kv_heads, nb, groups, prefix_len).permute(0, 2, 1, 3, 4)
    scores_shared = scores_shared.reshape(beams_total, kv_heads, groups, prefix_len)

    q_beam = query.view(beams_total, kv_heads, groups, head_dim)
    scores_beam = torch.matmul(q_beam, beam_keys.transpose(-1, -2))  # [B*nb, kvh, G, t]
    if cache.beam_mask is not None:
        scores_beam = scores_beam + cache.beam_mask

    weights = torch.softmax(torch.cat([scores_shared, scores_beam], dim=-1), dim=-1, dtype=torch.float32)
    weights = weights.to(query.dtype)
    w_shared, w_beam = weights.split([prefix_len, weights.shape[-1] - prefix_len], dim=-1)

    out = torch.matmul(w_beam, beam_values)  # [B*nb, kvh, G, d]
    w_shared = w_shared.reshape(batch, nb, kv_heads, groups, prefix_len).permute(0, 2, 1, 3, 4)
    w_shared = w_shared.reshape(batch, kv_heads, nb * groups, prefix_len)
    out_shared = torch.matmul(w_shared, shared_values)  # [B, kvh, nb*G, d]
    out_shared = out_shared.view(batch, kv_heads, nb, groups, head_dim).permute(0, 2, 1, 3, 4)
    out = out + out_shared.reshape(beams_total, kv_heads, groups, head_dim)
    return out.reshape(beams_total, 1, heads, head_dim), None


def earn_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    cache = kwargs.pop("earn_cache", None)
    if cache is not None:
        return _shared_prefix_attention(module, query, key, value, cache, scaling)
    observer = kwargs.pop("earn_prefill_observer", None)  # a KV press that ranks prompt positions by attention
    if observer is not None:
        observer(module.layer_idx, query, key, scaling if scaling is not None else query.shape[-1] ** -0.5)
    if getattr(module, BASE_ATTENTION_ATTRIBUTE, "sdpa") == "eager":
        from transformers.models.llama.modeling_llama import eager_attention_forward

        return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                       **kwargs)
    with _training_backend(query, key, value):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)


def _training_backend(query, key, value):
    """SDPA's math backend where the CPU trains: the CPU flash kernel took about a sixth of an ml-100k training
    step (its backward 37 ms a call over 75-token prompts), and autograd through the math path makes the step 5-9%
    faster; inference, and other devices, keep SDPA's own choice."""
    if query.device.type == "cpu" and torch.is_grad_enabled() and any(
            tensor.requires_grad for tensor in (query, key, value)):
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def attention_modules(model):
    """The modules that call the attention function: one per layer, each with its layer index and the config."""
    return [module for module in model.modules()
            if hasattr(module, "layer_idx") and getattr(module, "config", None) is model.config]


def install_earn_attention(model):
    """Register the EARN attention once and switch the backbone to it (its own implementation stays the fallback).
    The EARN engine always passes its own 4D float masks, which sdpa and eager both take as additive."""
    if ATTENTION_NAME not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(ATTENTION_NAME, earn_attention_forward)
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)  # plain forward calls build sdpa-style masks
    config = model.config
    if config._attn_implementation != ATTENTION_NAME:
        base = config._attn_implementation
        if base not in ("sdpa", "eager"):
            raise ValueError(f"EARN supports sdpa or eager attention backbones, got {base!r}")
        modules = attention_modules(model)
        if not modules:
            raise ValueError(f"EARN found no attention modules (with a layer_idx) in {type(model).__name__}")
        for module in modules:
            setattr(module, BASE_ATTENTION_ATTRIBUTE, base)
        model.set_attn_implementation(ATTENTION_NAME)
