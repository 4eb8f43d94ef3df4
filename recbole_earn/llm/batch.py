"""From lists of token ids to the padded tensors the EARN engine runs on.

One example is `[BOS] [R_pre ...] [prompt] [R_suf ...] [response]`, with targets `response + [EOS]`.
Examples are LEFT padded (so the last prompt token of every example sits in the last column) and every example's
position ids start at 0 at BOS. Register slots hold the pad id in `input_ids`; the engine puts the register
vectors there.

The "kept" tokens are the ones layers [k, N) see: the registers, the last token before the response (the last
suffix register when there is one) and the response. `keep_index` lists their columns in the long batch, again left
padded, so the engine can gather them with one index tensor although examples differ in length.
"""

from dataclasses import dataclass, fields
from typing import Optional, Sequence

import torch

IGNORE_INDEX = -100


@dataclass
class EARNBatch:
    input_ids: torch.Tensor  # [B, S] long; pad id at padding and at register slots
    attention_mask: torch.Tensor  # [B, S] bool; True at real tokens (registers included)
    position_ids: torch.Tensor  # [B, S] long; 0 at BOS, 0 at padding
    register_index: torch.Tensor  # [B, S] long; r in [0, R) at register slots, -1 elsewhere
    keep_index: torch.Tensor  # [B, K] long; columns of the kept tokens in the long batch (0 at padding)
    keep_mask: torch.Tensor  # [B, K] bool; True at real kept tokens
    labels: torch.Tensor  # [B, K] long; next-token target at kept positions that predict the response, else -100
    prefix_lengths: torch.Tensor  # [B] long; tokens in [BOS R_pre prompt R_suf]: the next position id to generate

    def to(self, device):
        return EARNBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


REGISTER_SLOT = -1  # a register's place in an example's token list, before padding


@dataclass
class ExampleLayout:
    """One example, unpadded: `[BOS] [R_pre] prompt [R_suf] response`."""

    tokens: list  # token ids, REGISTER_SLOT at register slots
    registers: list  # per position: the register's index, or -1
    kept: list  # positions the layers >= k see: registers, the last prefix token, the response
    targets: list  # per kept position: the next token it is trained to predict, or IGNORE_INDEX
    prefix_length: int  # tokens before the response


def example_layout(prompt, response, n_prefix_registers, n_suffix_registers, bos_token_id, eos_token_id, add_eos,
                   scored) -> ExampleLayout:
    """The layout of one example; `scored`: whether its response (+ EOS) gets targets (a training example)."""
    head = [bos_token_id] if bos_token_id is not None else []
    prefix = head + [REGISTER_SLOT] * n_prefix_registers + list(prompt) + [REGISTER_SLOT] * n_suffix_registers
    if len(prefix) == 0:
        raise ValueError("empty input (no BOS, no registers, no prompt)")
    registers = [-1] * len(head) + list(range(n_prefix_registers)) + [-1] * len(prompt)
    registers += list(range(n_prefix_registers, n_prefix_registers + n_suffix_registers)) + [-1] * len(response)
    tokens = prefix + list(response)
    kept = sorted({p for p, r in enumerate(registers) if r >= 0} | {len(prefix) - 1}
                  | set(range(len(prefix), len(tokens))))
    # Targets: the token after each position; the last position predicts EOS.
    following = tokens[1:] + ([eos_token_id] if add_eos else [IGNORE_INDEX])
    targets = [following[p] if scored and p >= len(prefix) - 1 else IGNORE_INDEX for p in kept]
    return ExampleLayout(tokens, registers, kept, targets, len(prefix))


def padded_batch(layouts: Sequence[ExampleLayout], pad_token_id: int) -> EARNBatch:
    """The layouts left padded into one batch: the long rows to the longest example, the kept positions to the most
    kept; every example's position ids start at 0 at its first token."""
    batch_size = len(layouts)
    seq_len = max(len(layout.tokens) for layout in layouts)
    keep_len = max(len(layout.kept) for layout in layouts)
    input_ids = torch.full((batch_size, seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, seq_len), dtype=torch.bool)
    position_ids = torch.zeros((batch_size, seq_len), dtype=torch.long)
    register_index = torch.full((batch_size, seq_len), -1, dtype=torch.long)
    keep_index = torch.zeros((batch_size, keep_len), dtype=torch.long)
    keep_mask = torch.zeros((batch_size, keep_len), dtype=torch.bool)
    labels = torch.full((batch_size, keep_len), IGNORE_INDEX, dtype=torch.long)
    for b, layout in enumerate(layouts):
        n, m = len(layout.tokens), len(layout.kept)
        offset, keep_offset = seq_len - n, keep_len - m  # left padding
        input_ids[b, offset:] = torch.tensor([pad_token_id if t == REGISTER_SLOT else t for t in layout.tokens])
        attention_mask[b, offset:] = True
        position_ids[b, offset:] = torch.arange(n)
        register_index[b, offset:] = torch.tensor(layout.registers)
        keep_index[b, keep_offset:] = torch.tensor(layout.kept) + offset
        keep_mask[b, keep_offset:] = True
        labels[b, keep_offset:] = torch.tensor(layout.targets)
    prefix_lengths = torch.tensor([layout.prefix_length for layout in layouts], dtype=torch.long)
    return EARNBatch(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     register_index=register_index, keep_index=keep_index, keep_mask=keep_mask, labels=labels,
                     prefix_lengths=prefix_lengths)


def build_batch(
    prompts: Sequence[Sequence[int]],
    responses: Optional[Sequence[Sequence[int]]] = None,
    *,
    n_prefix_registers: int,
    n_suffix_registers: int,
    bos_token_id: Optional[int],
    pad_token_id: int,
    eos_token_id: Optional[int] = None,
    add_eos: bool = True,
) -> EARNBatch:
    """Assemble a left-padded EARN batch: each example's layout, then padding. Without `responses` it is a prefill
    batch (kept = registers and the last prefix token); with them it is a training batch whose labels are
    `response + [EOS]` (EOS only if add_eos)."""
    if len(prompts) == 0:
        raise ValueError("build_batch needs at least one prompt")
    if responses is not None and len(responses) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if responses is not None and add_eos and eos_token_id is None:
        raise ValueError("add_eos needs an eos_token_id")
    layouts = []
    for i, prompt in enumerate(prompts):
        response = responses[i] if responses is not None else []
        try:
            layouts.append(example_layout(prompt, response, n_prefix_registers, n_suffix_registers, bos_token_id,
                                          eos_token_id, add_eos, scored=responses is not None))
        except ValueError as error:
            raise ValueError(f"example {i}: {error}") from None
    return padded_batch(layouts, pad_token_id)


def causal_mask(valid, dtype):
    """Additive 4D mask [B, 1, S, S] for left-padded rows: a query sees earlier-or-equal columns that are valid.
    Every row also sees itself, so padding rows never have all keys masked (which could turn them into NaN)."""
    seq_len = valid.shape[1]
    columns = torch.arange(seq_len, device=valid.device)
    causal = columns[None, :] <= columns[:, None]  # [S(query), S(key)]
    allowed = causal[None] & valid[:, None, :]  # [B, S, S]
    allowed = allowed | torch.eye(seq_len, dtype=torch.bool, device=valid.device)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def padding_mask(valid, dtype):
    """Additive mask [B, 1, 1, S] hiding padded keys from a decoding query, or None when nothing is padded."""
    if bool(valid.all()):
        return None
    mask = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
    mask.masked_fill_(~valid, torch.finfo(dtype).min)
    return mask[:, None, None, :]
