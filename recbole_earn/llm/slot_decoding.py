"""Decoding steps for beam search: on a growing cache, or on fixed buffers replayed as one CUDA graph.

Eager PyTorch launches a decoding step's kernels one by one from Python, about sixty per decoder layer. On a GPU
that launching, not the arithmetic, sets the step's time: 26-60 ms per step for llama-7b-arch in bf16 on an H200,
from 4 to 160 rows, where reading the weights takes 3.1 ms. A CUDA graph records the step's kernels once and
replays them with one launch (measured there: 9-17 ms per step, beam bookkeeping included). It needs every tensor
at a fixed shape and address, so the step runs on fixed buffers ("slots"):
  - the prompt's shared KV, copied once per search into buffers padded to a multiple of SHARED_BUCKET positions
    and masked past the real length, so batches of similar prompt lengths reuse one graph;
  - the per-beam KV in T slots [B*nb, kvh, T, d]: step t writes slot t, attention masks the slots after it, and
    a beam reorder permutes the rows in place.
A model keeps the buffers and graphs of its last KEPT_LAYOUTS layouts (batch, beams, T, buffer shapes) and reuses
them in later searches.

Decode modes (EARNModel.decode_mode):
  growing  the per-beam cache grows by one position per step (eager; the default where there is no CUDA)
  slots    the fixed buffers, eager: what the graph replays, runnable (and tested) on a CPU
  graph    the fixed buffers, the step captured as a CUDA graph at its first use and replayed after (CUDA only);
           the prefill's layers [k, N) on the registers are replayed as a graph too (cuda_graph.py)
  auto     graph on CUDA, growing elsewhere
"""

import torch

from .cuda_graph import kept_or_made, run_then_capture

DECODE_MODES = ("auto", "growing", "slots", "graph")
SHARED_BUCKET = 64  # prompt positions per padding step of the shared buffers
KEPT_LAYOUTS = 3  # layouts (with their buffers and graph) a model keeps


def resolved_decode_mode(mode, device) -> str:
    """The mode a search on `device` runs: "auto" resolved; "graph" refused off CUDA."""
    if mode not in DECODE_MODES:
        raise ValueError(f"decode_mode must be one of {', '.join(DECODE_MODES)}, got {mode!r}")
    device = torch.device(device)
    if mode == "auto":
        return "graph" if device.type == "cuda" else "growing"
    if mode == "graph" and device.type != "cuda":
        raise ValueError(f"decode_mode='graph' needs a CUDA device (CUDA graphs), the model is on {device}; "
                         "use 'slots' or 'growing'")
    return mode


def bucketed(length: int) -> int:
    """Positions of a shared buffer holding `length` (register layers: short, kept exact)."""
    return length if length <= SHARED_BUCKET else -(-length // SHARED_BUCKET) * SHARED_BUCKET


def flat_rows(source, token, prefix_lengths, step):
    """The chosen tokens `token` [B, nb], each extending beam `source` [B, nb] of its prompt, as flat rows:
    (the per-beam cache row each new row continues [B*nb], token ids [B*nb], position ids [B*nb])."""
    batch, nb = token.shape
    first_rows = torch.arange(batch, device=token.device)[:, None] * nb  # [B, 1] each prompt's first beam row
    positions = (prefix_lengths[:, None] + step).expand(batch, nb).reshape(-1)
    return (first_rows + source).view(-1), token.reshape(-1), positions


class ChosenTokenDecoder:
    """Runs each step's chosen tokens through all layers, the per-beam cache following its beams first:
    decoder(source [B, nb], token [B, nb], step) -> final hidden states [B*nb, hidden]. `max_steps` bounds the
    calls (the per-beam slots)."""

    def __init__(self, model, prefill, max_steps):
        self.model, self.cache, self.prefix_lengths = model, prefill.cache, prefill.prefix_lengths
        self.mode = resolved_decode_mode(model.decode_mode, model.registers.device)
        self.max_steps = max_steps
        self.slots = None  # the SlotDecoder bound to the cache, at the first step (slots and graph modes)

    def __call__(self, source, token, step):
        rows, tokens, positions = flat_rows(source, token, self.prefix_lengths, step)
        if self.mode == "growing":
            if step > 0:  # at step 0 every beam extends the prompt
                self.cache.reorder_beams(rows)
            return self.model.decode_step(self.cache, tokens, positions)
        if self.slots is None:
            self.slots = slot_decoder(self.model, self.cache, tokens.numel(), self.max_steps, self.mode == "graph")
            self.slots.bind(self.cache)
        return self.slots.step(self.cache, rows, tokens, positions, step)


def slot_decoder(model, cache, rows, num_slots, capture):
    """The model's SlotDecoder for this cache's layout, made (and the oldest dropped) when it has none."""
    shapes = tuple((tuple(keys.shape[:-2]), bucketed(keys.shape[-2]), keys.shape[-1]) for keys in cache.shared_keys)
    key = (rows, num_slots, shapes, cache.shared_keys[0].dtype, capture)
    return kept_or_made(model.slot_decoders, key, lambda: SlotDecoder(model, cache, rows, num_slots, capture),
                        KEPT_LAYOUTS)


class SlotDecoder:
    """The fixed buffers of one layout, and with `capture` its decoding step as a CUDA graph."""

    def __init__(self, model, cache, rows, num_slots, capture):
        self.model, self.capture, self.graph, self.hidden = model, capture, None, None
        first = cache.shared_keys[0]
        device, dtype, min_value = first.device, first.dtype, torch.finfo(first.dtype).min
        self.shared_keys = [k.new_zeros(*k.shape[:-2], bucketed(k.shape[-2]), k.shape[-1]) for k in cache.shared_keys]
        self.shared_values = [torch.zeros_like(k) for k in self.shared_keys]
        self.shared_mask = [torch.full((k.shape[0], 1, 1, k.shape[-2]), min_value, dtype=dtype, device=device)
                            for k in self.shared_keys]  # [B, 1, 1, P_bucket]
        kv_heads, head_dim = first.shape[1], first.shape[-1]
        self.beam_keys = [torch.zeros(rows, kv_heads, num_slots, head_dim, dtype=dtype, device=device)
                          for _ in cache.shared_keys]  # [B*nb, kvh, T, d]
        self.beam_values = [torch.zeros_like(k) for k in self.beam_keys]
        self.slot_index = torch.arange(num_slots, device=device)  # [T]
        self.write_position = torch.zeros(1, dtype=torch.long, device=device)  # [1]
        self.rows = torch.arange(rows, device=device)  # [B*nb] the step's inputs, at fixed addresses
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)
        self.min_value = min_value

    @torch.inference_mode()  # the buffers are refilled in place, whatever mode made them
    def bind(self, cache):
        """Copy the prompt's shared KV and padding mask into the buffers and make `cache` decode on them."""
        lengths = [cache.shared_length(i) for i in range(cache.num_layers)]
        for i, length in enumerate(lengths):
            self.shared_keys[i][..., :length, :].copy_(cache.shared_keys[i])
            self.shared_values[i][..., :length, :].copy_(cache.shared_values[i])
            mask = self.shared_mask[i]
            mask[..., length:] = self.min_value  # the padding up to the bucket (stale keys of earlier searches)
            if cache.shared_mask[i] is None:
                mask[..., :length] = 0
            else:
                mask[..., :length].copy_(cache.shared_mask[i])
        for slots in self.beam_keys + self.beam_values:
            slots.zero_()  # masked until written, but never NaN (a zero attention weight times NaN is NaN)
        cache.use_beam_slots(self.shared_keys, self.shared_values, self.shared_mask, self.beam_keys,
                             self.beam_values, self.write_position, lengths)

    @torch.inference_mode()  # the buffers are refilled in place, whatever mode made them
    def step(self, cache, rows, tokens, positions, step):
        """The decoding step: reorder the slots' rows by `rows`, write slot `step`. [B*nb, hidden]"""
        self.rows.copy_(rows)
        self.tokens.copy_(tokens)
        self.positions.copy_(positions)
        self.write_position.fill_(step)
        cache.slots_filled = step + 1
        if not self.capture:
            return self._run(cache)
        if self.graph is not None:
            self.graph.replay()
            return self.hidden
        hidden, self.graph, self.hidden = run_then_capture(lambda: self._run(cache))
        return hidden

    def _run(self, cache):
        """The step's kernels, all on the fixed buffers."""
        visible = self.slot_index <= self.write_position  # [T]
        cache.beam_mask = torch.where(visible, 0.0, self.min_value).to(self.shared_mask[0].dtype)[None, None, None]
        cache.reorder_beams(self.rows)
        return self.model.decode_step(cache, self.tokens, self.positions)
