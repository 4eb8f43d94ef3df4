"""Training loss over a trie's answers: next-token cross-entropy whose softmax runs over the tokens the trie allows
after each prefix, the distribution that beam search scores with `normalise="trie"`.

With the whole vocabulary in the softmax, a model must also learn which code continues which prefix before the
scores among real items mean anything; restricted to the trie's children, every gradient goes to telling the
allowed continuations apart, and the product of the per-token probabilities is a distribution over the answers.
"""

from typing import List, Sequence

import torch
import torch.nn.functional as F

from .batch import IGNORE_INDEX
from .decoding import trie_on

FREE = -1  # prefix node of a scored token the trie does not govern (EOS, free-text responses)


def trie_prefix_nodes(trie, sequence: Sequence[int]) -> List[int]:
    """The trie node reached before each token of `sequence`, root first: one node per token."""
    tokens, nodes = trie.children_tokens.cpu(), trie.children_nodes.cpu()
    node, path = 0, []
    for token in sequence:
        path.append(node)
        match = (tokens[node] == int(token)).nonzero()
        if match.numel() == 0:
            raise ValueError(f"token {token} of {list(sequence)} is not in the trie after {path[-1]}")
        node = int(nodes[node, match[0, 0]])
    return path


def trie_cross_entropy(model, batch, prefix_nodes: torch.Tensor, trie) -> torch.Tensor:
    """Mean cross-entropy over the batch's scored tokens (response + EOS, row by row in order). `prefix_nodes` [M]
    holds each scored token's trie node (FREE where the trie does not apply): those tokens are scored against
    the node's children only, the others against the whole vocabulary."""
    hidden = model.split_forward(batch)  # [B, K, hidden]
    scored = batch.labels != IGNORE_INDEX  # [B, K]
    hidden, labels = hidden[scored], batch.labels[scored]  # [M, hidden], [M]
    prefix_nodes = prefix_nodes.to(labels.device)
    in_trie = prefix_nodes != FREE
    total = hidden.new_zeros((), dtype=torch.float32)
    if bool(in_trie.any()):
        children = trie_on(trie, labels.device).children_tokens[prefix_nodes[in_trie]]  # [m, C], -1 = none
        allowed = torch.unique(children[children >= 0])  # [u], sorted: only these lm-head rows are computed
        logits = model.logits(hidden[in_trie], allowed).float()  # [m, u]
        columns = torch.searchsorted(allowed, children.clamp(min=0)).clamp(max=allowed.numel() - 1)  # [m, C]
        logits = logits.gather(1, columns).masked_fill(children < 0, float("-inf"))  # [m, C]
        target = (children == labels[in_trie, None]).int().argmax(dim=1)  # [m]: the label's column
        total = total + F.cross_entropy(logits, target, reduction="sum")
    if bool((~in_trie).any()):
        free_logits = model.lm_logits(hidden[~in_trie]).float()  # [M - m, vocab]
        total = total + F.cross_entropy(free_logits, labels[~in_trie], reduction="sum")
    return total / labels.numel()
