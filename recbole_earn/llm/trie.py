"""A token trie of the allowed output sequences (e.g. every item's token ids), stored as tensors so that one
beam-search step finds every beam's allowed next tokens with a single indexing operation."""

from typing import Iterable, Sequence

import torch


class TokenTrie:
    """Node 0 is the root. For node n: children_tokens[n, :n_children[n]] are the allowed next tokens and
    children_nodes[n, c] the node reached by children_tokens[n, c]; padding is -1. A node without children ends a
    sequence (a leaf). Sequences must be prefix-free (end each with EOS if some are prefixes of others)."""

    def __init__(self, sequences: Iterable[Sequence[int]]):
        children = [{}]  # node -> {token: child node}
        ends = [False]
        count = 0
        for seq in sequences:
            seq = [int(t) for t in seq]
            if not seq:
                raise ValueError("TokenTrie: empty sequence")
            node = 0
            for pos, token in enumerate(seq):
                if ends[node]:
                    raise ValueError(f"TokenTrie: sequence {seq} has another sequence as a prefix; append EOS to each")
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                    ends.append(False)
                node = nxt
            if children[node]:
                raise ValueError(f"TokenTrie: sequence {seq} is a prefix of another sequence; append EOS to each")
            ends[node] = True
            count += 1
        if count == 0:
            raise ValueError("TokenTrie needs at least one sequence")
        self.num_sequences = count
        width = max(1, max(len(c) for c in children))
        self.children_tokens = torch.full((len(children), width), -1, dtype=torch.long)
        self.children_nodes = torch.full((len(children), width), -1, dtype=torch.long)
        for node, kids in enumerate(children):
            for c, (token, child) in enumerate(sorted(kids.items())):
                self.children_tokens[node, c] = token
                self.children_nodes[node, c] = child
        self.n_children = (self.children_tokens >= 0).sum(-1)  # [n_nodes]
        self.max_depth = self._depth(children)

    @staticmethod
    def _depth(children):
        depth, frontier = 0, [0]
        while True:
            frontier = [c for n in frontier for c in children[n].values()]
            if not frontier:
                return depth
            depth += 1

    def to(self, device):
        self.children_tokens = self.children_tokens.to(device)
        self.children_nodes = self.children_nodes.to(device)
        self.n_children = self.n_children.to(device)
        return self

    def contains(self, sequence: Sequence[int]) -> bool:
        """True if `sequence` is one of the trie's complete sequences."""
        node = 0
        for token in sequence:
            row = self.children_tokens[node]
            hits = (row == int(token)).nonzero()
            if len(hits) == 0:
                return False
            node = int(self.children_nodes[node, hits[0, 0]])
        return int(self.n_children[node]) == 0
