"""Scoring given responses (e.g. every candidate item of a user) with one prefill per prompt.

`EARNModel.response_log_probs` runs prompt + response as one sequence per row: sampled evaluation, which scores
~100 candidate items per user, would run the same prompt ~100 times. Here each prompt is prefilled once and its
candidates are teacher-forced through the decoder like beams sharing the prompt's cache (cache.py): the same
log-probabilities (the cached step equals the full forward, tests/test_llm_decoding.py), for one prefill per
prompt plus (longest response - 1) decoding steps over all candidates.
"""

from typing import Sequence

import torch

from .eval_mode import eval_mode


@torch.no_grad()
def candidate_log_probs(model, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[Sequence[int]]]
                        ) -> torch.Tensor:
    """[P, C]: summed log-probability (whole vocabulary, no EOS) of candidate response c after prompt p.
    candidates: per prompt, the same number C of non-empty token-id lists (lengths may differ)."""
    if len(candidates) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but candidates for {len(candidates)}")
    counts = {len(c) for c in candidates}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"every prompt needs the same, non-zero number of candidates, got {sorted(counts)}")
    if any(len(response) == 0 for per_prompt in candidates for response in per_prompt):
        raise ValueError("candidate responses must not be empty")
    device = model.registers.device
    num_prompts, num_candidates = len(prompts), counts.pop()
    longest = max(len(r) for per_prompt in candidates for r in per_prompt)
    tokens = torch.full((num_prompts, num_candidates, longest), model.pad_token_id, dtype=torch.long)
    for p, per_prompt in enumerate(candidates):
        for c, response in enumerate(per_prompt):
            tokens[p, c, : len(response)] = torch.as_tensor(response, dtype=torch.long)
    lengths = torch.tensor([[len(r) for r in per_prompt] for per_prompt in candidates])  # [P, C]
    tokens, lengths = tokens.to(device), lengths.to(device)

    with eval_mode(model):
        prefill = model.prefill(prompts)
        cache = prefill.cache
        cache.start_decoding(num_candidates)
        # position 0: every candidate of a prompt starts from the prompt's last hidden state
        log_probs = torch.log_softmax(model.logits(prefill.last_hidden).float(), dim=-1)  # [P, vocab]
        total = log_probs.gather(1, tokens[:, :, 0])  # [P, C]
        first_position = prefill.prefix_lengths.to(device)[:, None].expand(-1, num_candidates).reshape(-1)  # [P*C]
        for t in range(1, longest):
            hidden = model.decode_step(cache, tokens[:, :, t - 1].reshape(-1), first_position + t - 1)  # [P*C, h]
            log_probs = torch.log_softmax(model.logits(hidden).float(), dim=-1)  # [P*C, vocab]
            step = log_probs.gather(1, tokens[:, :, t].reshape(-1, 1)).view(num_prompts, num_candidates)
            total = total + step * (t < lengths)  # tokens past a candidate's end are padding
        return total
