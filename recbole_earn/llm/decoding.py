"""Greedy, beam and trie-constrained beam search on the EARN cache, for a batch of prompts at once.

One prefill per prompt; the beams of a prompt share its prefill cache (EARNCache) and only their generated tokens
are kept per beam. Each step feeds one token per beam through all N layers. With a trie, the lm head is applied
only to the rows of the tokens some beam may take next, and each beam's log-probabilities are normalised over its
own allowed tokens. Works the same for EARN (k < N) and vanilla (k = N) models, so both are timed on equal terms.

Scores are summed log-probabilities (no length penalty); a beam that has ended (EOS, or a trie leaf) keeps its
score and is padded. Beams that could not be filled (fewer allowed sequences than beams) get score -inf and
length 0.
"""

import copy
import time
import weakref
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch

from .eval_mode import eval_mode
from .slot_decoding import ChosenTokenDecoder
from .timing import device_clock
from .trie import TokenTrie


NORMALISERS = ("vocabulary", "trie")
_TRIE_COPIES = weakref.WeakKeyDictionary()  # a caller's trie -> {device: its copy there}, dropped with the trie


def trie_on(trie: TokenTrie, device) -> TokenTrie:
    """`trie` on `device`: itself when it is there already, else its copy there, made once and reused; the
    caller's trie is never moved (the same trie may serve models on several devices)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # tensors always name their GPU: "cuda" is "cuda:0"
        device = torch.device("cuda", torch.cuda.current_device())
    if trie.children_tokens.device == device:
        return trie
    copies = _TRIE_COPIES.setdefault(trie, {})
    if device not in copies:
        copies[device] = copy.copy(trie).to(device)  # a shallow copy: .to() rebinds the copy's tensors only
    return copies[device]


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # [B, beams, T] generated token ids, pad after a beam's end; beams best first
    scores: torch.Tensor  # [B, beams] summed log-probabilities of the sequences (-inf for unfilled beams)
    lengths: torch.Tensor  # [B, beams] generated tokens per beam, EOS included
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0  # everything after prefill: decoding steps and beam bookkeeping
    decode_steps: int = 0  # model steps (one token per beam through all N layers)
    kv_layer_bytes: List[int] = field(default_factory=list)  # per layer, at the end of decoding
    kv_layer_lengths: list = field(default_factory=list)  # per layer (shared length, per-beam length)

    def as_lists(self):
        """Per prompt, per beam: (token ids up to the beam's length, score)."""
        # One copy to the host for the whole output (on a GPU, indexing element by element syncs each time).
        sequences, scores, lengths = self.sequences.tolist(), self.scores.tolist(), self.lengths.tolist()
        return [[(beams[j][: lengths[b][j]], scores[b][j]) for j in range(len(beams))]
                for b, beams in enumerate(sequences)]


def beam_search(model, prompts: Sequence[Sequence[int]], num_beams: int = 4, max_new_tokens: int = 16,
                trie: Optional[TokenTrie] = None, eos_token_id: Optional[int] = None,
                stop_at_eos: bool = True, share_prompt_cache: bool = True,
                excluded: Optional[Sequence[Sequence[int]]] = None, normalise: str = "vocabulary",
                node_log_prior: Optional[torch.Tensor] = None) -> GenerationOutput:
    """Beam search for every prompt of the batch. With `trie`, only sequences of the trie are produced (and
    max_new_tokens may be None: the trie's depth). eos_token_id defaults to the model's (ignored with a trie: a
    trie leaf ends a beam). share_prompt_cache=False copies the prompt's KV into every beam (for measurements).
    excluded (with a trie): per prompt, indices of trie sequences it must not produce (e.g. items already seen);
    their completions score -inf, so the beams go to the other sequences. normalise (with a trie): "vocabulary"
    (each step's log-softmax over the whole vocabulary, the model's own probability) or "trie" (over the allowed
    tokens only). node_log_prior (with a trie): [n_nodes], added to the log-probability of every step that enters
    a node (e.g. a weighted `TokenTrie.edge_log_probs` of item popularity), so beams are ranked by model and prior
    together from the first token on."""
    if normalise not in NORMALISERS:
        raise ValueError(f"normalise must be one of {', '.join(NORMALISERS)}, got {normalise!r}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if trie is not None:
        max_new_tokens = trie.max_depth if max_new_tokens is None else min(max_new_tokens, trie.max_depth)
        trie = trie_on(trie, model.registers.device)
    if max_new_tokens is None or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos = model.eos_token_id if eos_token_id is None else eos_token_id
    pad = model.pad_token_id
    with eval_mode(model), torch.inference_mode():
        banned = None if trie is None or excluded is None else trie.exclusion_mask(excluded)
        prior = None if trie is None or node_log_prior is None else node_log_prior.to(trie.children_nodes.device)
        return _beam_search(model, prompts, num_beams, max_new_tokens, trie, eos if stop_at_eos else None, pad,
                            share_prompt_cache, banned, normalise, prior)


def greedy_search(model, prompts, max_new_tokens=16, eos_token_id=None, stop_at_eos=True) -> GenerationOutput:
    """Greedy decoding: beam search with one beam (same argmax, same cache)."""
    return beam_search(model, prompts, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=eos_token_id,
                       stop_at_eos=stop_at_eos)


def constrained_beam_search(model, prompts, trie: TokenTrie, num_beams=20, max_new_tokens=None,
                            excluded=None, normalise="vocabulary", node_log_prior=None) -> GenerationOutput:
    """Beam search that only ever produces sequences of `trie` (e.g. the token ids of every real item), except
    each prompt's `excluded` sequence indices, optionally scored with a prior over the trie's nodes."""
    return beam_search(model, prompts, num_beams=num_beams, max_new_tokens=max_new_tokens, trie=trie,
                       excluded=excluded, normalise=normalise, node_log_prior=node_log_prior)


def _trie_log_probs(model, hidden, nodes, finished, trie, banned, normalise, prior=None):
    """Log-probabilities [B, nb, C] of each beam's allowed next tokens (-inf where a beam has fewer than C children
    or the child is banned: it ends, or only leads to, excluded sequences), with the tokens and nodes they lead to.
    normalise="vocabulary": the model's own log-softmax over its whole vocabulary, as `generate` with
    `prefix_allowed_tokens_fn` scores (LC-Rec); "trie": renormalised over the allowed tokens only, which needs
    only their lm-head rows but lifts every only child to probability 1."""
    batch, nb = nodes.shape
    cand_tokens = trie.children_tokens[nodes]  # [B, nb, C], -1 = none
    cand_nodes = trie.children_nodes[nodes]
    valid = cand_tokens >= 0
    if normalise == "vocabulary":
        logits = torch.log_softmax(model.logits(hidden).float(), dim=-1)  # [B or B*nb, vocab]
        logits = logits.view(batch, -1, logits.shape[-1]).expand(batch, nb, logits.shape[-1])
        logp = logits.gather(-1, cand_tokens.clamp(min=0)).masked_fill(~valid, float("-inf"))
    else:
        union = torch.unique(cand_tokens[valid & ~finished[..., None]])  # sorted allowed tokens, [u]
        logits = model.logits(hidden, union).float()  # [B or B*nb, u]: only the allowed rows of the lm head
        logits = logits.view(batch, -1, union.numel()).expand(batch, nb, union.numel())
        columns = torch.searchsorted(union, cand_tokens.clamp(min=0)).clamp(max=union.numel() - 1)
        logp = logits.gather(-1, columns).masked_fill(~valid, float("-inf"))
        logp = torch.log_softmax(logp, dim=-1).masked_fill(~valid, float("-inf"))
    if prior is not None:
        logp = logp + prior[cand_nodes.clamp(min=0)]  # invalid candidates stay -inf
    if banned is not None:
        hit = banned.gather(1, cand_nodes.clamp(min=0).view(batch, -1)).view_as(cand_nodes)  # [B, nb, C]
        logp = logp.masked_fill(hit & valid, float("-inf"))
    return logp, cand_tokens, cand_nodes


@dataclass
class _Beams:
    """The beams of every prompt during a search, each tensor [B, nb] (history [B, nb, steps so far])."""

    scores: torch.Tensor  # summed log-probabilities
    finished: torch.Tensor  # bool: ended (trie leaf or EOS), or dead (no valid continuation left)
    lengths: torch.Tensor  # tokens produced before ending
    nodes: torch.Tensor  # trie node each beam stands at
    history: torch.Tensor  # tokens produced (pad after a beam ends)

    @classmethod
    def start(cls, batch, nb, device):
        scores = torch.full((batch, nb), float("-inf"), device=device)
        scores[:, 0] = 0.0  # only beam 0 is live before the first token, so the first top-k takes distinct tokens
        zeros = torch.zeros((batch, nb), dtype=torch.long, device=device)
        return cls(scores, zeros.bool(), zeros, zeros.clone(), torch.empty((batch, nb, 0), dtype=torch.long,
                                                                           device=device))


def _candidate_log_probs(model, hidden, beams, nb, trie, banned, normalise, pad, prior=None):
    """Step 1, each beam's candidate next tokens: (log-probabilities [B, nb, C], their tokens and trie nodes, both
    None without a trie, where the candidates are the vocabulary). An ended beam continues at no cost with one
    candidate (emitted as pad)."""
    batch = beams.scores.shape[0]
    if trie is not None:
        logp, cand_tokens, cand_nodes = _trie_log_probs(model, hidden, beams.nodes, beams.finished, trie, banned,
                                                        normalise, prior)
        end_column = 0
    else:
        logits = model.logits(hidden).float()  # [B or B*nb, vocab]
        logp = torch.log_softmax(logits, dim=-1).view(batch, -1, logits.shape[-1]).expand(batch, nb, -1)
        cand_tokens = cand_nodes = None
        end_column = pad
    if bool(beams.finished.any()):
        ended_row = torch.full_like(logp[:1, :1], float("-inf"))  # [1, 1, C]
        ended_row[..., end_column] = 0.0
        logp = torch.where(beams.finished[..., None], ended_row, logp)
    return logp, cand_tokens, cand_nodes


def _select(scores, logp, nb):
    """Step 2, the nb best (beam, candidate) pairs of each prompt: (their scores [B, nb], best first, the beam each
    extends and the candidate column it takes)."""
    batch, width = logp.shape[0], logp.shape[-1]
    total = scores[..., None] + logp  # [B, nb, C]
    if width > nb:  # the nb best of each beam first: a top-k over nb*nb instead of nb*vocab entries
        beam_best, beam_columns = total.topk(nb, dim=-1)  # [B, nb, nb]
        scores, flat = beam_best.view(batch, -1).topk(nb, dim=-1)  # [B, nb]
        return scores, flat // nb, beam_columns.view(batch, -1).gather(1, flat)
    scores, flat = total.view(batch, -1).topk(nb, dim=-1)
    return scores, flat // width, flat % width


def _advance(beams, scores, source, column, cand_tokens, cand_nodes, trie, eos, pad):
    """Step 3, the new beams: each takes its source beam's state plus the chosen token. Returns (beams, tokens
    [B, nb])."""
    was_finished = beams.finished.gather(1, source)
    nodes = beams.nodes
    if trie is not None:
        width = cand_tokens.shape[-1]
        token = cand_tokens.gather(1, source[..., None].expand(-1, -1, width)).gather(-1, column[..., None])[..., 0]
        new_nodes = cand_nodes.gather(1, source[..., None].expand(-1, -1, width)).gather(-1, column[..., None])
        nodes = torch.where(was_finished, nodes.gather(1, source), new_nodes[..., 0])
    else:
        token = column
    dead = torch.isinf(scores)  # nothing valid left to fill this beam
    token = torch.where(was_finished | dead, torch.full_like(token, pad), token)
    nodes = torch.where(dead, torch.zeros_like(nodes), nodes)
    kept = beams.lengths.gather(1, source)
    lengths = torch.where(was_finished | dead, kept * ~dead, kept + 1)
    history = beams.history.gather(1, source[..., None].expand(-1, -1, beams.history.shape[-1]))
    finished = was_finished | dead
    if trie is not None:
        finished = finished | (trie.n_children[nodes] == 0)
    elif eos is not None:
        finished = finished | (token == eos)
    return _Beams(scores, finished, lengths, nodes, torch.cat([history, token[..., None]], dim=-1)), token


def _beam_search(model, prompts, nb, max_new_tokens, trie, eos, pad, share_prompt_cache=True, banned=None,
                 normalise="vocabulary", prior=None):
    """Prefill once, then per step: candidate log-probabilities, select the nb best, advance the beams, and run
    the chosen tokens through all layers (the per-beam cache follows its beams first; see slot_decoding.py)."""
    device = model.registers.device
    start = device_clock(device)
    prefill = model.prefill(prompts)
    prefill_seconds = device_clock(device) - start
    start = time.perf_counter()
    cache = prefill.cache
    cache.start_decoding(nb, share_prompt=share_prompt_cache)
    decode_chosen_tokens = ChosenTokenDecoder(model, prefill, max_steps=max_new_tokens - 1)
    batch = len(prompts)
    beams = _Beams.start(batch, nb, device)
    hidden = prefill.last_hidden  # [B, hidden] at step 0 (all beams of a prompt are the same), then [B*nb, hidden]
    steps = 0
    for step in range(max_new_tokens):
        logp, cand_tokens, cand_nodes = _candidate_log_probs(model, hidden, beams, nb, trie, banned, normalise, pad,
                                                             prior)
        scores, source, column = _select(beams.scores, logp, nb)
        beams, token = _advance(beams, scores, source, column, cand_tokens, cand_nodes, trie, eos, pad)
        if step == max_new_tokens - 1 or bool(beams.finished.all()):
            break
        hidden = decode_chosen_tokens(source, token, step)  # [B*nb, hidden]
        steps += 1

    return GenerationOutput(
        sequences=beams.history,
        scores=beams.scores,
        lengths=beams.lengths,
        prefill_seconds=prefill_seconds,
        decode_seconds=device_clock(device) - start,
        decode_steps=steps,
        kv_layer_bytes=cache.layer_bytes(),
        kv_layer_lengths=cache.layer_lengths(),
    )
