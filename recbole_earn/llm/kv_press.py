"""Training-free compression of the prompt's KV cache ("presses"), the baselines EARN is compared with.

A press runs once per prefill: after the prompt has been through every layer and before beams expand, it keeps
some prompt positions of each layer's shared KV (EARNCache) and drops the rest. It touches only the layers that
hold the whole prompt (all layers of a plain model; layers < k of an EARN model, so a press on an EARN model is
the EARN + press hybrid). Decoding then runs unchanged: kept keys already carry their rotary positions, and new
tokens continue from the uncompressed prompt length.

    press = SnapKV(budget=0.3, window=8)
    with press(model):                       # or model.kv_press = press
        out = beam_search(model, prompts, num_beams=20, ...)

Budgets: a number >= 1 is a token count per prompt, one in (0, 1) a share of each prompt's real tokens (at least
one token). Prompts are left padded: sinks are a prompt's first real tokens, and padding is never kept in place
of a real token.
"""

import contextlib
import math

import torch

from .batch import padding_mask


def checked_budget(budget):
    """A press budget: a token count >= 1 or a share in (0, 1); a count above a prompt's length keeps all of it
    (prompts of one batch differ in length)."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or math.isnan(budget) or budget <= 0:
        raise ValueError(f"a press budget must be > 0 (a token count >= 1 or a share in (0, 1)), got {budget!r}")
    return budget


def kept_per_row(budget, real_lengths):
    """[B] tokens each prompt keeps: the budget as a count or a share of its real length, at most all of it."""
    budget = checked_budget(budget)
    if budget < 1:
        wanted = torch.ceil(real_lengths.double() * budget).long()
    else:
        wanted = torch.full_like(real_lengths, int(budget))
    return torch.minimum(wanted.clamp(min=1), real_lengths)


def kept_columns(keep):
    """keep [..., S] bool -> (columns [..., L]: each row's kept columns in ascending order, L = the largest count,
    a row that keeps fewer padded on the left with unkept columns; valid [..., L] bool: which of them are kept)."""
    columns = torch.arange(keep.shape[-1], device=keep.device)
    order = torch.sort(keep.long() * (columns + 1), dim=-1, stable=True).indices  # unkept first, then kept ascending
    width = int(keep.sum(-1).max())
    chosen = order[..., -width:]
    return chosen, keep.gather(-1, chosen)


class KVPress:
    """Keeps a subset of each prompt's positions in the layers that hold the whole prompt."""

    needs_queries = False  # True: prefill hands the press each layer's queries first (see observe)

    def __call__(self, model):
        """`with press(model):` every prefill of `model` inside the block is compressed by this press."""
        return _pressing(model, self)

    def observe(self, layer_idx, query, key, scaling, valid):
        """During prefill, per layer: query [B, H, S, d] and key [B, kvh, S, d] after rotary embedding, the
        attention's scaling, valid [B, S] real tokens. Only called when needs_queries."""

    def keep(self, layer_idx, valid, kv_heads):
        """[B, S] or [B, kvh, S] bool: the positions layer `layer_idx` keeps, the same number in every row of a
        prompt (and every head)."""
        raise NotImplementedError

    def compress(self, cache, valid, layers):
        """Shrink the shared KV of `layers` in place; valid [B, S]: real tokens of the prefilled batch."""
        for layer in layers:
            keys, values = cache.shared_keys[layer], cache.shared_values[layer]  # [B, kvh, S, d]
            keep = self.keep(layer, valid, keys.shape[1])
            if keep.dim() == 2:
                keep = keep[:, None, :]  # one choice for every head
            columns, kept_valid = kept_columns(keep.expand(-1, keys.shape[1], -1))  # [B, kvh, L]
            index = columns[..., None].expand(-1, -1, -1, keys.shape[-1])  # [B, kvh, L, d]
            cache.shared_keys[layer] = keys.gather(2, index)
            cache.shared_values[layer] = values.gather(2, index)
            # Heads keep the same number of real positions, so padding sits in the same slots for every head.
            cache.shared_mask[layer] = padding_mask(kept_valid[:, 0], keys.dtype)


@contextlib.contextmanager
def _pressing(model, press):
    previous = model.kv_press
    model.kv_press = press
    try:
        yield press
    finally:
        model.kv_press = previous


def real_offsets(valid):
    """[B]: the column of each left-padded row's first real token, and [B] its real length."""
    lengths = valid.sum(-1)
    return valid.shape[-1] - lengths, lengths


class StreamingLLM(KVPress):
    """Xiao et al., "Efficient Streaming Language Models with Attention Sinks": the first `sinks` real tokens and the
    most recent tokens, `budget` in all, in every layer."""

    def __init__(self, budget, sinks=4):
        self.budget, self.sinks = checked_budget(budget), int(sinks)
        if self.sinks < 0:
            raise ValueError(f"StreamingLLM sinks must be >= 0, got {sinks}")

    def keep(self, layer_idx, valid, kv_heads):
        offsets, lengths = real_offsets(valid)
        kept = kept_per_row(self.budget, lengths)  # [B]
        sinks = torch.minimum(kept, torch.full_like(kept, self.sinks))
        columns = torch.arange(valid.shape[-1], device=valid.device)[None, :]  # [1, S]
        is_sink = (columns >= offsets[:, None]) & (columns < (offsets + sinks)[:, None])
        is_recent = columns >= (valid.shape[-1] - (kept - sinks))[:, None]
        return (is_sink | is_recent) & valid


class SnapKV(KVPress):
    """Li et al., "SnapKV: LLM Knows What You Are Looking for Before Generation": per layer and KV head, the prompt
    positions the prompt's last `window` queries attend to most (attention summed over those queries and the heads
    of the KV group, smoothed by average pooling of width `kernel`), plus that window, `budget` in all."""

    needs_queries = True

    def __init__(self, budget, window=8, kernel=7):
        self.budget, self.window, self.kernel = checked_budget(budget), int(window), int(kernel)
        if self.window < 1 or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"SnapKV needs window >= 1 and an odd kernel >= 1, got {window}, {kernel}")
        self.scores = {}  # layer -> [B, kvh, S]

    def observe(self, layer_idx, query, key, scaling, valid):
        batch, heads, seq_len, head_dim = query.shape
        kv_heads = key.shape[1]
        window = min(self.window, seq_len)
        q = query[:, :, -window:].reshape(batch, kv_heads, heads // kv_heads * window, head_dim)
        logits = torch.matmul(q.float(), key.float().transpose(-1, -2)) * scaling  # [B, kvh, G*w, S]
        rows = torch.arange(seq_len - window, seq_len, device=key.device).repeat(heads // kv_heads)  # query columns
        visible = (torch.arange(seq_len, device=key.device)[None, :] <= rows[:, None])[None, None] & \
            valid[:, None, None, :]  # [B, 1, G*w, S]: causal, real keys
        weights = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1).sum(-2)  # [B, kvh, S]
        # The mean over the real tokens within kernel // 2 of each position (padding columns are not neighbours).
        real = valid[:, None, :].float()  # [B, 1, S]
        pool = lambda x: torch.nn.functional.avg_pool1d(x, self.kernel, stride=1, padding=self.kernel // 2)  # noqa: E731
        pooled = pool(weights) / pool(real).clamp(min=1e-9)
        self.scores[layer_idx] = pooled.masked_fill(~valid[:, None, :], float("-inf"))

    def keep(self, layer_idx, valid, kv_heads):
        scores = self.scores.pop(layer_idx)  # [B, kvh, S]
        _, lengths = real_offsets(valid)
        kept = kept_per_row(self.budget, lengths)  # [B]
        seq_len = valid.shape[-1]
        window = torch.minimum(kept, torch.full_like(kept, self.window))  # the window is always kept
        columns = torch.arange(seq_len, device=valid.device)
        in_window = columns[None, :] >= (seq_len - window)[:, None]  # [B, S]
        ranked = scores.masked_fill(in_window[:, None, :], float("-inf"))
        extra = int((kept - window).max())
        chosen = torch.zeros_like(ranked, dtype=torch.bool)  # [B, kvh, S]
        if extra > 0:
            top = ranked.topk(extra, dim=-1).indices  # [B, kvh, extra], best first
            wanted = torch.arange(extra, device=valid.device)[None, None, :] < (kept - window)[:, None, None]
            chosen.scatter_(-1, top, wanted.expand_as(top))  # a row's first kept - window ranks: all real tokens outside the window
        return (chosen | in_window[:, None, :]) & valid[:, None, :]


PRESSES = {"streaming_llm": StreamingLLM, "snapkv": SnapKV}


def press_from_settings(name, budget, window=8, sinks=4):
    """A press by its config name (None: no press): streaming_llm keeps `sinks` + recent tokens, snapkv the most
    attended ones plus the last `window`."""
    if name is None:
        return None
    if name not in PRESSES:
        raise ValueError(f"kv_press must be one of {', '.join(PRESSES)} or ~ (none), got {name!r}")
    if budget is None:
        raise ValueError(f"kv_press {name} needs kv_press_budget: a token count >= 1 or a share in (0, 1)")
    if name == "streaming_llm":
        return StreamingLLM(budget, sinks=sinks)
    return SnapKV(budget, window=window)
