"""The uneven KV cache of EARN decoding, with a prompt part shared by all beams of a prompt.

Per layer i the cache holds two parts:
  - the shared part, written once by prefill at batch B (one row per prompt):
        layers i < k:  the whole prompt, keys/values [B, kv_heads, P, head_dim] with a padding mask [B, P]
        layers i >= k: the registers only, [B, kv_heads, R, head_dim] (never padded: every prompt has R)
  - the per-beam part, the generated tokens, at batch B * beams: [B * beams, kv_heads, t, head_dim].
Beams never copy the shared part: attention of a beam's query runs over [shared part of its prompt, its own
generated part] (see attention.py). Reordering beams after a step only moves the small per-beam part.

The decoder layers call `update(keys, values, layer_idx)` exactly as they would on a transformers Cache: during
prefill it stores the shared part, during decoding it appends to the per-beam part and returns it.
"""

import torch


class EARNCache:
    def __init__(self, num_layers):
        self.num_layers = num_layers
        self.shared_keys = [None] * num_layers  # [B, kvh, P_i, d]
        self.shared_values = [None] * num_layers
        self.shared_mask = [None] * num_layers  # additive [B, 1, 1, P_i] or None when nothing is padded
        self.beam_keys = [None] * num_layers  # [B * beams, kvh, t, d]
        self.beam_values = [None] * num_layers
        self.prefilling = True
        self.num_beams = 1

    # -- the interface the decoder layers use ------------------------------------------------------------------
    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self.prefilling:
            self.shared_keys[layer_idx] = key_states
            self.shared_values[layer_idx] = value_states
            return key_states, value_states
        if self.beam_keys[layer_idx] is None:
            self.beam_keys[layer_idx] = key_states
            self.beam_values[layer_idx] = value_states
        else:
            self.beam_keys[layer_idx] = torch.cat([self.beam_keys[layer_idx], key_states], dim=-2)
            self.beam_values[layer_idx] = torch.cat([self.beam_values[layer_idx], value_states], dim=-2)
        return self.beam_keys[layer_idx], self.beam_values[layer_idx]

    # -- phases -------------------------------------------------------------------------------------------------
    def start_decoding(self, num_beams, share_prompt=True):
        """After prefill: later updates go to the per-beam part, which has `num_beams` rows per prompt.
        share_prompt=False copies the shared part once per beam instead (the usual approach; kept only to measure
        what sharing saves: the attention code is the same, it just sees one beam per shared row)."""
        self.prefilling = False
        self.num_beams = num_beams
        if not share_prompt and num_beams > 1:
            for i in range(self.num_layers):
                self.shared_keys[i] = self.shared_keys[i].repeat_interleave(num_beams, dim=0)
                self.shared_values[i] = self.shared_values[i].repeat_interleave(num_beams, dim=0)
                if self.shared_mask[i] is not None:
                    self.shared_mask[i] = self.shared_mask[i].repeat_interleave(num_beams, dim=0)

    def reorder_beams(self, flat_beam_index):
        """Keep per-beam rows `flat_beam_index` ([B * beams], indices into B * beams) after a beam-search step."""
        for i in range(self.num_layers):
            if self.beam_keys[i] is not None:
                self.beam_keys[i] = self.beam_keys[i].index_select(0, flat_beam_index)
                self.beam_values[i] = self.beam_values[i].index_select(0, flat_beam_index)

    # -- sizes, for tests and benchmarks ----------------------------------------------------------------------
    def shared_length(self, layer_idx):
        keys = self.shared_keys[layer_idx]
        return 0 if keys is None else keys.shape[-2]

    def beam_length(self, layer_idx):
        keys = self.beam_keys[layer_idx]
        return 0 if keys is None else keys.shape[-2]

    def layer_lengths(self):
        """Per layer: (shared length P_i, per-beam length t). Layers < k: P_i = padded prompt length; >= k: R."""
        return [(self.shared_length(i), self.beam_length(i)) for i in range(self.num_layers)]

    def layer_bytes(self):
        """Per layer: bytes of keys + values actually held (shared part once per prompt, generated part per beam)."""
        sizes = []
        for i in range(self.num_layers):
            total = 0
            for tensor in (self.shared_keys[i], self.shared_values[i], self.beam_keys[i], self.beam_values[i]):
                if tensor is not None:
                    total += tensor.numel() * tensor.element_size()
            sizes.append(total)
        return sizes

    def nbytes(self):
        return sum(self.layer_bytes())
