"""Tiny backbones and slow-but-obvious reference computations for the EARN engine tests."""

import functools

import torch

from recbole_earn.llm import EARNConfig, EARNModel, build_tiny


def tiny_backbone(preset="tiny-llama", device="cpu", dtype=torch.float32):
    """(model, tokenizer) of a tiny random backbone on `device` in `dtype` (the same weights everywhere, rounded to
    `dtype`), shared by tests that do not modify its weights."""
    return _tiny_backbone(preset, str(torch.device(device)), dtype)


@functools.lru_cache(maxsize=None)
def _tiny_backbone(preset, device, dtype):
    model, tokenizer = build_tiny(preset)
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def earn_model(preset="tiny-llama", earn_k=1, n_prefix=1, n_suffix=1, seed=0, device="cpu", dtype=torch.float32):
    backbone, tokenizer = tiny_backbone(preset, device, dtype)
    torch.manual_seed(seed)
    return EARNModel(backbone, EARNConfig(earn_k=earn_k, n_prefix_registers=n_prefix, n_suffix_registers=n_suffix),
                     tokenizer).eval()


def random_prompts(n, low=3, high=12, seed=0, vocab=(100, 40000)):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (n,), generator=generator).tolist()
    return [torch.randint(vocab[0], vocab[1], (m,), generator=generator).tolist() for m in lengths]


def _additive(allowed, dtype=torch.float32):
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def logit_tolerance(reference, dtype, float32_tolerance):
    """Largest |difference| allowed between two computations of the logits `reference`: `float32_tolerance` in
    float32; in bfloat16 (8-bit mantissa, rounded after every operation) 4% of the largest |logit|, about five
    units in the last place at that magnitude (measured on the CPU: at most 1.5%)."""
    if dtype == "float32":
        return float32_tolerance
    return 0.04 * reference.float().abs().max().item()


@torch.no_grad()
def masked_reference_logits(model, batch):
    """EARN's definition as a reference: every layer at FULL length, but layers >= k may only attend to keys at
    kept positions (registers, last prefix token, response), causally. Logits at the kept positions, [B, K, vocab]."""
    decoder, lm = model.decoder, model.causal_lm
    hidden = model.input_embeddings(batch)  # [B, S, hidden]
    batch_size, seq_len, _ = hidden.shape
    device = hidden.device
    kept = torch.zeros((batch_size, seq_len), dtype=torch.bool, device=device)
    kept.scatter_(1, batch.keep_index, batch.keep_mask)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    eye = torch.eye(seq_len, dtype=torch.bool, device=device)
    early = _additive((causal & batch.attention_mask[:, None, :]) | eye, hidden.dtype)
    late = _additive((causal & kept[:, None, :]) | eye, hidden.dtype)
    position_embeddings = decoder.rotary_emb(hidden, batch.position_ids)
    for i, layer in enumerate(decoder.layers):
        hidden = layer(hidden, attention_mask=early if i < model.earn_k else late, position_ids=batch.position_ids,
                       position_embeddings=position_embeddings)
    logits = lm.lm_head(decoder.norm(hidden))
    return logits.gather(1, batch.keep_index[..., None].expand(-1, -1, logits.shape[-1]))


@torch.no_grad()
def next_token_logprobs_recomputed(model, prompts, responses):
    """Log-probabilities of the next token after prompt + response, recomputing the whole (split) forward with no
    cache: [n, vocab], on the CPU."""
    batch = model.make_batch(prompts, responses, add_eos=False)
    return torch.log_softmax(model.kept_logits(batch)[:, -1].float(), dim=-1).cpu()


@torch.no_grad()
def reference_beam_search(model, prompt, num_beams, max_new_tokens):
    """Beam search for one prompt that recomputes the whole forward of every beam at every step (no EOS stop).
    Returns (sequences [nb, T], scores [nb])."""
    sequences = [[] for _ in range(num_beams)]
    scores = torch.full((num_beams,), float("-inf"))
    scores[0] = 0.0
    for step in range(max_new_tokens):
        logp = next_token_logprobs_recomputed(model, [prompt] * num_beams, sequences)  # [nb, vocab]
        total = scores[:, None] + logp
        scores, flat = total.view(-1).topk(num_beams)
        source, token = flat // logp.shape[-1], flat % logp.shape[-1]
        sequences = [sequences[s] + [t] for s, t in zip(source.tolist(), token.tolist())]
    return torch.tensor(sequences), scores


@torch.no_grad()
def teacher_forced_score(model, prompt, sequence, trie=None, normalise="vocabulary"):
    """Summed log-probability of `sequence` after `prompt` by a full forward; with a trie and normalise="trie",
    each step's softmax is over the tokens the trie allows there (the constrained decoder's renormalised scores)."""
    batch = model.make_batch([prompt], [sequence], add_eos=False)
    logits = model.kept_logits(batch)[0, -len(sequence) - 1:-1].float()  # [T, vocab]: predict sequence[t]
    total, node = 0.0, 0
    for t, token in enumerate(sequence):
        if trie is None or normalise == "vocabulary":
            total += torch.log_softmax(logits[t], -1)[token].item()
        else:
            allowed = trie.children_tokens[node]
            allowed = allowed[allowed >= 0]
            logp = torch.log_softmax(logits[t, allowed], -1)
            column = (allowed == token).nonzero()[0, 0]
            total += logp[column].item()
            node = int(trie.children_nodes[node, column])
    return total
