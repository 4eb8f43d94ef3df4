"""Attention statistics of one causal forward, as the EARN paper (Yang et al., KDD 2025) reads them.

Every function takes the attention probabilities of one layer for one unpadded prompt, `attention` [heads, L, L]
(row = query position, column = key position; query i may see keys 0..i), and, where it matters, the query
positions to average over, `queries` [Q] (a LongTensor of row indices). Values are averaged over heads and over
those queries, each (head, query) pair weighing the same.
"""

import torch

SPARSITY_THRESHOLD = 0.05  # the paper's: a key counts as attended when it gets more than 5% of a query's mass
SINK_TOKENS = 3  # head sink: keys 0..2 (BOS and the next two); tail sink: the 3 keys just before the query


def query_positions(length, mode="all", first=2 * SINK_TOKENS):
    """Query rows to average over, [Q]: "all" = positions first..length-1 (from 6 on, the head sink's keys 0..2
    and the tail sink's keys q-3..q-1 never overlap), "last" = the prompt's last position only (the one that
    predicts the response)."""
    if length <= first:
        raise ValueError(f"a prompt of {length} tokens is too short: the statistics need more than {first}")
    if mode == "all":
        return torch.arange(first, length)
    if mode == "last":
        return torch.tensor([length - 1])
    raise ValueError(f"query mode must be 'all' or 'last', got {mode!r}")


def visible_keys(num_keys, queries):
    """[Q, K] bool: the keys each query may see under the causal mask (key position <= query position)."""
    return torch.arange(num_keys, device=queries.device)[None, :] <= queries[:, None]


def sparsity(attention, queries, threshold=SPARSITY_THRESHOLD):
    """Share of the keys a query may see whose probability exceeds `threshold` (the paper's attention sparsity;
    larger = attention spread over more keys)."""
    rows = attention[:, queries]  # [H, Q, K]
    visible = visible_keys(attention.shape[-1], queries)  # [Q, K]
    attended = ((rows > threshold) & visible).sum(-1)  # [H, Q]
    return (attended / visible.sum(-1)).mean().item()


def entropy(attention, queries):
    """Entropy of each query's attention distribution, in nats (0 log 0 = 0)."""
    rows = attention[:, queries]  # [H, Q, K]
    return -torch.special.xlogy(rows, rows).sum(-1).mean().item()


def head_sink(attention, queries, tokens=SINK_TOKENS):
    """Attention mass on keys 0..tokens-1 (BOS included): the first tokens every query may see."""
    return attention[:, queries, :tokens].sum(-1).mean().item()


def tail_sink(attention, queries, tokens=SINK_TOKENS):
    """Attention mass on keys q-tokens..q-1 for query q: the tokens just before the query, its own key left out."""
    if int(queries.min()) < tokens:
        raise ValueError(f"the tail sink needs queries at positions >= {tokens}")
    offsets = torch.arange(tokens, 0, -1, device=queries.device)  # tokens .. 1
    keys = (queries[:, None] - offsets[None, :]).expand(attention.shape[0], -1, -1)  # [H, Q, tokens]
    return attention[:, queries].gather(-1, keys).sum(-1).mean().item()


def attention_received(attention):
    """[L] mean attention each key receives: its column sum over queries, averaged over heads, divided by the
    number of queries that may see it (key j is seen by queries j..L-1, so the last key by one query only)."""
    length = attention.shape[-1]
    column_sums = attention.mean(0).sum(0)  # [L]
    seen_by = length - torch.arange(length, device=attention.device)  # [L]
    return column_sums / seen_by


def relative_position_bins(values, bins):
    """(sums [bins], counts [bins]) of per-position values [L] over bins of relative position j / L (bin
    floor(j * bins / L)), so that prompts of different lengths add up on one axis."""
    length = values.shape[0]
    index = torch.arange(length, device=values.device) * bins // length  # [L]
    sums = torch.zeros(bins, dtype=torch.float64, device=values.device).index_add_(0, index, values.double())
    counts = torch.bincount(index, minlength=bins).double()
    return sums.cpu(), counts.cpu()
