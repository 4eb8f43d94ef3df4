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

With beam slots (`use_beam_slots`, for CUDA graphs: see slot_decoding.py) every tensor keeps its shape and address
while decoding: the per-beam part is T preallocated slots [B * beams, kv_heads, T, head_dim], a step writes slot
`write_position`, and `beam_mask` hides the slots not written yet from attention.
"""

import torch


def _held_bytes(tensor, length):
    """Bytes of the first `length` positions of keys or values [..., positions, d] (0 for None)."""
    return 0 if tensor is None else tensor[..., :length, :].numel() * tensor.element_size()


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
        self.write_position = None  # [1] long: the slot a decoding step writes (with beam slots only)
        self.beam_mask = None  # additive [1, 1, 1, T]: 0 on slots written so far, dtype min on the rest
        self.slots_filled = 0  # slots written so far (the per-beam length, with beam slots)
        self.shared_lengths = None  # per layer, the real prompt length when the shared buffers are padded

    # -- the interface the decoder layers use ------------------------------------------------------------------
    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self.prefilling:
            self.shared_keys[layer_idx] = key_states
            self.shared_values[layer_idx] = value_states
            return key_states, value_states
        if self.write_position is not None:  # fixed slots: write in place, hand back every slot (masked)
            self.beam_keys[layer_idx].index_copy_(2, self.write_position, key_states)
            self.beam_values[layer_idx].index_copy_(2, self.write_position, value_states)
        elif self.beam_keys[layer_idx] is None:
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

    def use_beam_slots(self, shared_keys, shared_values, shared_mask, beam_keys, beam_values, write_position,
                       shared_lengths):
        """Decode into fixed buffers (each list per layer): the shared part as given (padded past `shared_lengths`
        and hidden there by `shared_mask`), the per-beam part in slots [B * beams, kvh, T, d], the step's slot
        at `write_position` [1]. The caller sets `beam_mask` for each step."""
        self.shared_keys, self.shared_values, self.shared_mask = shared_keys, shared_values, shared_mask
        self.beam_keys, self.beam_values = beam_keys, beam_values
        self.write_position, self.shared_lengths, self.slots_filled = write_position, shared_lengths, 0

    def reorder_beams(self, flat_beam_index):
        """Keep per-beam rows `flat_beam_index` ([B * beams], indices into B * beams) after a beam-search step."""
        for i in range(self.num_layers):
            if self.write_position is not None:  # in place: the slots keep their address
                self.beam_keys[i].copy_(self.beam_keys[i].index_select(0, flat_beam_index))
                self.beam_values[i].copy_(self.beam_values[i].index_select(0, flat_beam_index))
            elif self.beam_keys[i] is not None:
                self.beam_keys[i] = self.beam_keys[i].index_select(0, flat_beam_index)
                self.beam_values[i] = self.beam_values[i].index_select(0, flat_beam_index)

    # -- sizes, for tests and benchmarks ----------------------------------------------------------------------
    def shared_length(self, layer_idx):
        if self.shared_lengths is not None:
            return self.shared_lengths[layer_idx]
        keys = self.shared_keys[layer_idx]
        return 0 if keys is None else keys.shape[-2]

    def beam_length(self, layer_idx):
        if self.write_position is not None:
            return self.slots_filled
        keys = self.beam_keys[layer_idx]
        return 0 if keys is None else keys.shape[-2]

    def layer_lengths(self):
        """Per layer: (shared length P_i, per-beam length t). Layers < k: P_i = padded prompt length; >= k: R."""
        return [(self.shared_length(i), self.beam_length(i)) for i in range(self.num_layers)]

    def layer_bytes(self):
        """Per layer: bytes of keys + values the decoding holds (shared part once per prompt, generated part per beam;
        with beam slots, the real prompt and the slots written so far, not the buffers' padding)."""
        sizes = []
        for i in range(self.num_layers):
            shared, beam = self.shared_length(i), self.beam_length(i)
            sizes.append(_held_bytes(self.shared_keys[i], shared) + _held_bytes(self.shared_values[i], shared)
                         + _held_bytes(self.beam_keys[i], beam) + _held_bytes(self.beam_values[i], beam))
        return sizes

    def nbytes(self):
        return sum(self.layer_bytes())
