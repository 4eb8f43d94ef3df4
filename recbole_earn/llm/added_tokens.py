"""New vocabulary rows (e.g. LC-Rec's item code tokens) kept beside the frozen embedding and lm-head matrices.

Token ids >= `first_id` are looked up here; ids below go to the backbone's own embedding / lm head. Only these
rows train and only they are saved. Why not peft's `trainable_token_indices`: it rebuilds the whole
[vocab, hidden] matrix on every forward (an index_copy of ~110 MB for SmolLM2), which on a CPU costs about as
much as a decoding step; here the constrained decoder reads just the rows it needs.
"""

from typing import Optional

import torch
from torch import nn


class AddedTokenRows(nn.Module):
    def __init__(self, first_id: int, num_tokens: int, input_embeddings: torch.Tensor,
                 output_embeddings: Optional[torch.Tensor], tied: bool):
        """first_id: id of the first new token (the tokenizer's length; ids of the base vocabulary above it, such
        as Qwen2's padded rows, are never produced by the tokenizer and are dropped from the logits).
        New rows start at the mean of the existing rows, as transformers' mean-resizing does."""
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"AddedTokenRows needs at least one token, got {num_tokens}")
        if first_id > input_embeddings.shape[0]:
            raise ValueError(f"first new token id {first_id} is beyond the embedding's {input_embeddings.shape[0]} rows")
        self.first_id = int(first_id)
        self.num_tokens = int(num_tokens)
        self.tied = bool(tied)
        mean = input_embeddings.detach()[:first_id].float().mean(0)
        # float32 rows under any backbone dtype (trained weights; cast where used, like the registers)
        self.input_rows = nn.Parameter(mean.repeat(num_tokens, 1).to(input_embeddings.device))  # [n, hidden]
        if self.tied:
            self.output_rows = None
        else:
            out_mean = output_embeddings.detach()[:first_id].float().mean(0)
            self.output_rows = nn.Parameter(out_mean.repeat(num_tokens, 1).to(output_embeddings.device))

    @property
    def vocab_size(self):
        return self.first_id + self.num_tokens

    def output_weight(self):
        return self.input_rows if self.tied else self.output_rows  # [n, hidden]

    def embed(self, token_ids: torch.Tensor, base_embedding: nn.Module) -> torch.Tensor:
        """[..., hidden] embeddings of token_ids [...], new ids from the added rows."""
        is_new = token_ids >= self.first_id
        base = base_embedding(token_ids.clamp(max=self.first_id - 1))
        capturing = token_ids.is_cuda and torch.cuda.is_current_stream_capturing()  # a CUDA graph cannot sync
        if not capturing and not bool(is_new.any()):
            return base
        new = self.input_rows[(token_ids - self.first_id).clamp(min=0)].to(base.dtype)
        return torch.where(is_new.unsqueeze(-1), new, base)

    def logits(self, hidden: torch.Tensor, base_head: nn.Module) -> torch.Tensor:
        """Full logits [..., first_id + n] over the tokenizer's vocabulary and the added tokens."""
        base = base_head(hidden)[..., : self.first_id]
        return torch.cat([base, hidden @ self.output_weight().t().to(hidden.dtype)], dim=-1)

    def rows(self, token_ids: torch.Tensor, base_weight: torch.Tensor) -> torch.Tensor:
        """lm-head rows [u, hidden] of token_ids [u] (base rows below first_id, added rows above)."""
        is_new = (token_ids >= self.first_id).unsqueeze(-1)
        new = self.output_weight()[(token_ids - self.first_id).clamp(min=0)]
        base = base_weight[token_ids.clamp(max=self.first_id - 1)]
        return torch.where(is_new, new.to(base.dtype), base)
