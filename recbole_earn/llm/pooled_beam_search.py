"""Beam search over free text as `transformers` generate() runs it (num_beams, length_penalty, early_stopping=False),
on the EARN cache.

A beam that ends (EOS, or the last allowed token) leaves the search for a pool of finished hypotheses, ranked by
summed log-probability / generated length ** length_penalty (the length counts the EOS), while num_beams live beams
go on. Each step draws the 2 x num_beams best continuations: the best num_beams of them may end a hypothesis, the
best num_beams that do not end go on. A prompt stops gaining hypotheses once its pool is full and its best live
beam, at its current length, scores no better than the pool's worst (generate()'s rule for early_stopping=False).

`beam_search` (decoding.py) keeps an ended beam in its slot with its summed score instead, so the shortest texts
win there; generative recommenders that write titles (BIGRec) rank their beams this way, as generate() does.
"""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .decoding import GenerationOutput
from .eval_mode import eval_mode
from .slot_decoding import ChosenTokenDecoder
from .timing import device_clock


def pooled_beam_search(model, prompts: Sequence[Sequence[int]], num_beams: int = 4, max_new_tokens: int = 16,
                       length_penalty: float = 1.0, eos_token_id: Optional[int] = None) -> GenerationOutput:
    """The num_beams best finished hypotheses of every prompt, best first: sequences [B, nb, T] (EOS included,
    pad after it), scores [B, nb] (summed log-probability / length ** length_penalty), lengths [B, nb]."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if max_new_tokens is None or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos = model.eos_token_id if eos_token_id is None else eos_token_id
    with eval_mode(model), torch.inference_mode():
        return _search(model, prompts, num_beams, max_new_tokens, float(length_penalty), eos)


class _Pool:
    """The finished hypotheses of every prompt: scores [B, nb] (best first, -inf = empty slot), sequences
    [B, nb, T] and lengths [B, nb]."""

    def __init__(self, batch, nb, max_new_tokens, pad, device):
        self.scores = torch.full((batch, nb), float("-inf"), device=device)
        self.sequences = torch.full((batch, nb, max_new_tokens), pad, dtype=torch.long, device=device)
        self.lengths = torch.zeros((batch, nb), dtype=torch.long, device=device)
        self.pad = pad

    def add(self, sequences, scores, length, accepted):
        """Offer candidates sequences [B, C, length] with ranking scores [B, C] where `accepted` [B, C]; the pool
        keeps the nb best of what it held and what it was offered."""
        nb, width = self.scores.shape[1], self.sequences.shape[-1]
        offered = torch.where(accepted, scores, torch.full_like(scores, float("-inf")))
        merged_scores = torch.cat([self.scores, offered], dim=1)  # [B, nb + C]
        merged = torch.cat([self.sequences, F.pad(sequences, (0, width - length), value=self.pad)], dim=1)
        merged_lengths = torch.cat([self.lengths, torch.full_like(offered, length, dtype=torch.long)], dim=1)
        self.scores, best = merged_scores.topk(nb, dim=1)
        self.sequences = merged.gather(1, best[..., None].expand(-1, -1, width))
        self.lengths = merged_lengths.gather(1, best)

    def cannot_improve(self, best_live, length, length_penalty):
        """[B]: the pool is full and the best live beam [B], ranked at `length`, is no better than its worst."""
        full = torch.isfinite(self.scores).all(dim=1)
        return full & (best_live / length ** length_penalty <= self.scores[:, -1])


def _search(model, prompts, nb, max_new_tokens, length_penalty, eos):
    device = model.registers.device
    start = device_clock(device)
    prefill = model.prefill(prompts)
    prefill_seconds = device_clock(device) - start
    start = device_clock(device)
    cache = prefill.cache
    cache.start_decoding(nb)
    decode_chosen_tokens = ChosenTokenDecoder(model, prefill, max_steps=max_new_tokens - 1)
    batch = len(prompts)
    pool = _Pool(batch, nb, max_new_tokens, model.pad_token_id, device)
    live = torch.full((batch, nb), float("-inf"), device=device)  # [B, nb] summed log-probabilities
    live[:, 0] = 0.0  # only beam 0 is live before the first token, so the first candidates are distinct tokens
    history = torch.empty((batch, nb, 0), dtype=torch.long, device=device)
    gaining = torch.ones(batch, dtype=torch.bool, device=device)  # [B] the prompt may still gain hypotheses
    hidden = prefill.last_hidden  # [B, hidden] at step 0, then [B*nb, hidden]
    steps = 0
    for step in range(max_new_tokens):
        logp = torch.log_softmax(model.logits(hidden).float(), dim=-1)  # [B or B*nb, V]
        vocab = logp.shape[-1]
        total = (live[..., None] + logp.view(batch, -1, vocab)).view(batch, -1)  # [B, nb*V]
        candidates, flat = total.topk(min(2 * nb, total.shape[-1]), dim=1)  # [B, C] best first
        source, token = flat // vocab, flat % vocab
        sequences = torch.cat([history.gather(1, source[..., None].expand(-1, -1, step)), token[..., None]], dim=-1)
        length, last = step + 1, step == max_new_tokens - 1
        # [B, C]: the candidate ends a hypothesis (every one does at the last step)
        ends = torch.full_like(token, last, dtype=torch.bool) if last or eos is None else token == eos
        among_best = torch.arange(token.shape[1], device=device)[None] < nb  # only these may end a hypothesis
        pool.add(sequences, candidates / length ** length_penalty, length, ends & among_best & gaining[:, None])
        going_on = torch.where(ends, torch.full_like(candidates, float("-inf")), candidates).topk(nb, dim=1)
        live, kept = going_on.values, going_on.indices  # [B, nb]
        source, token = source.gather(1, kept), token.gather(1, kept)
        history = sequences.gather(1, kept[..., None].expand(-1, -1, length))
        gaining = gaining & ~pool.cannot_improve(live[:, 0], length, length_penalty)
        if last or not bool(gaining.any()) or bool(ends.all()):
            break
        hidden = decode_chosen_tokens(source, token, step)  # [B*nb, hidden]
        steps += 1
    return GenerationOutput(
        sequences=pool.sequences[..., : int(pool.lengths.max())],
        scores=pool.scores,
        lengths=pool.lengths,
        prefill_seconds=prefill_seconds,
        decode_seconds=device_clock(device) - start,
        decode_steps=steps,
        kv_layer_bytes=cache.layer_bytes(),
        kv_layer_lengths=cache.layer_lengths(),
    )
