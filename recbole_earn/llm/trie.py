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
        end_nodes = []  # the node where each sequence ends, in input order
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
            end_nodes.append(node)
        if not end_nodes:
            raise ValueError("TokenTrie needs at least one sequence")
        self.num_sequences = len(end_nodes)
        self.end_nodes = torch.tensor(end_nodes, dtype=torch.long)  # [num_sequences] leaf of each sequence
        width = max(1, max(len(c) for c in children))
        self.children_tokens = torch.full((len(children), width), -1, dtype=torch.long)
        self.children_nodes = torch.full((len(children), width), -1, dtype=torch.long)
        for node, kids in enumerate(children):
            for c, (token, child) in enumerate(sorted(kids.items())):
                self.children_tokens[node, c] = token
                self.children_nodes[node, c] = child
        self.n_children = (self.children_tokens >= 0).sum(-1)  # [n_nodes]
        self.internal_nodes_by_depth = self._internal_nodes_by_depth(children)  # root first
        self.max_depth = len(self.internal_nodes_by_depth)

    @staticmethod
    def _internal_nodes_by_depth(children):
        levels, frontier = [], [0]
        while frontier:
            internal = [n for n in frontier if children[n]]
            if internal:
                levels.append(torch.tensor(internal, dtype=torch.long))
            frontier = [c for n in internal for c in children[n].values()]
        return levels

    def to(self, device):
        self.children_tokens = self.children_tokens.to(device)
        self.children_nodes = self.children_nodes.to(device)
        self.n_children = self.n_children.to(device)
        self.end_nodes = self.end_nodes.to(device)
        self.internal_nodes_by_depth = [nodes.to(device) for nodes in self.internal_nodes_by_depth]
        return self

    def exclusion_mask(self, sequence_indices) -> torch.Tensor:
        """[B, n_nodes] bool: for each row, True at the leaves of the sequences it lists (indices into the
        sequences the trie was built from, e.g. the items a user has already seen) and at every node all of whose
        leaves are listed, so that beam search never enters a subtree with nothing left to produce."""
        device = self.end_nodes.device
        mask = torch.zeros((len(sequence_indices), len(self.n_children)), dtype=torch.bool, device=device)
        # Every row's indices gathered on the host, then one copy to the trie's device (not one per row).
        per_row = [torch.as_tensor(indices, dtype=torch.long, device="cpu").reshape(-1) for indices in sequence_indices]
        if per_row:
            rows = torch.repeat_interleave(torch.arange(len(per_row)), torch.tensor([len(i) for i in per_row]))
            mask[rows.to(device), self.end_nodes[torch.cat(per_row).to(device)]] = True
        for nodes in reversed(self.internal_nodes_by_depth):  # deepest first: children are settled before parents
            children = self.children_nodes[nodes]  # [n, C], -1 = none
            child_excluded = mask[:, children.clamp(min=0)] | (children < 0)  # [B, n, C]
            mask[:, nodes] = child_excluded.all(-1)
        return mask

    def edge_log_probs(self, weights: torch.Tensor) -> torch.Tensor:
        """[n_nodes] float: the log of each node's share of its parent's weight, 0 at the root. A node's weight is
        the sum of `weights` ([num_sequences], all > 0; e.g. item counts) over the sequences through it, so along a
        sequence's path these sum to log(its weight / the total): a prior that beam search can add token by
        token, with every prefix scored by the weight of what it can still become."""
        weights = torch.as_tensor(weights, dtype=torch.float64, device=self.end_nodes.device)
        if weights.shape != (self.num_sequences,) or not bool((weights > 0).all()):
            raise ValueError(f"edge_log_probs needs {self.num_sequences} positive weights, got shape "
                             f"{tuple(weights.shape)}")
        n_nodes = len(self.n_children)
        mass = torch.zeros(n_nodes, dtype=torch.float64, device=weights.device)
        mass[self.end_nodes] = weights
        for nodes in reversed(self.internal_nodes_by_depth):  # deepest first: children are settled before parents
            children = self.children_nodes[nodes]  # [n, C], -1 = none
            mass[nodes] = torch.where(children >= 0, mass[children.clamp(min=0)], 0.0).sum(-1)
        has_child = self.children_nodes >= 0  # [n_nodes, C]
        parents = torch.zeros(n_nodes, dtype=torch.long, device=weights.device)  # the root is its own parent
        parents[self.children_nodes[has_child]] = torch.arange(n_nodes, device=weights.device)[:, None].expand_as(
            has_child)[has_child]
        return (mass.log() - mass[parents].log()).float()

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
