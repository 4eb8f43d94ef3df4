"""Ranking items by a trie-constrained beam search over their token sequences (LC-Rec's codes, BIGRec's titles).

Every beam ends at a real item; an item's score is its beam's summed log-probability, optionally plus a weighted
log popularity added token by token (so the beams see it from the first token); items no beam reached get -inf.
Items with the same token sequence (two movies with one title) share a leaf, a score and an exclusion.
"""

import torch
from torch import nn

from recbole_earn.errors import ConfigError
from recbole_earn.llm.decoding import NORMALISERS, constrained_beam_search
from recbole_earn.llm.scoring import candidate_log_probs
from recbole_earn.llm.trie import TokenTrie
from recbole_earn.llm.trie_loss import trie_prefix_nodes


def check_beams_cover_topk(config, model_name):
    """The ranking holds num_beams items, so every topk cut-off must fit in it."""
    if max(config["topk"]) > config["num_beams"]:
        raise ConfigError(
            f"topk {config['topk']} is larger than num_beams={config['num_beams']}: {model_name} ranks only the "
            f"items its constrained beam search reaches. Use --num_beams={max(config['topk'])} or a smaller --topk."
        )


def check_normalisers(config):
    """beam_normalise and loss_normalise name a softmax: over the whole vocabulary or over the trie's children."""
    for knob in ("beam_normalise", "loss_normalise"):
        normaliser = config[knob] or "vocabulary"
        if normaliser not in NORMALISERS:
            raise ConfigError(f"{knob} must be one of {', '.join(NORMALISERS)}, got {normaliser!r}")


def check_prior_weight(config):
    weight = config["popularity_prior_weight"] or 0.0
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ConfigError(f"popularity_prior_weight must be a number >= 0 (0 = off), got {weight!r}")


class ItemTrie(nn.Module):
    """The trie of items 1..n_items-1 (`item_token_ids[0]`, padding, is left out; trie sequence i is item i + 1),
    with the popularity prior's buffers (not saved: they follow from the data)."""

    def __init__(self, item_token_ids, training_counts, prior_weight=0.0):
        super().__init__()
        self.trie = TokenTrie(item_token_ids[1:])
        self.item_token_ids = item_token_ids
        self.n_items = len(item_token_ids)
        self.items_of_sequence = {}  # (token ids) -> [items], several where items share a text
        for item, ids in enumerate(item_token_ids[1:], start=1):
            self.items_of_sequence.setdefault(tuple(ids), []).append(item)
        self.prior_weight = float(prior_weight)
        # Counts get 1 added, so an item never answered in training keeps a finite score.
        weights = training_counts[1:].float() + 1.0  # [n_items - 1], trie order
        node_prior = self.prior_weight * self.trie.edge_log_probs(weights)  # [n_nodes]
        item_prior = self.prior_weight * torch.cat([torch.zeros(1), (weights / weights.sum()).log()])  # [n_items]
        self.register_buffer("node_log_prior", node_prior, persistent=False)
        self.register_buffer("item_log_prior", item_prior, persistent=False)
        self._prefix_nodes = None  # per item, the trie node before each of its tokens; made when first asked for

    def prefix_nodes(self, item):
        """The trie node reached before each token of `item`'s sequence, root first (the trie-restricted loss)."""
        if self._prefix_nodes is None:
            self._prefix_nodes = [[]] + [trie_prefix_nodes(self.trie, ids) for ids in self.item_token_ids[1:]]
        return self._prefix_nodes[item]

    def search(self, llm, prompts, num_beams, excluded=None, normalise="vocabulary"):
        """GenerationOutput of the constrained beam search; `excluded`: per prompt, trie indices (item - 1)."""
        return constrained_beam_search(llm, prompts, self.trie, num_beams=num_beams, excluded=excluded,
                                       normalise=normalise,
                                       node_log_prior=self.node_log_prior if self.prior_weight else None)

    def scores(self, output):
        """[B, n_items]: each beam's score at its item(s), -inf elsewhere, on the search's device."""
        # Filled on the host, element by element, then moved once (on a GPU each element write would be a launch).
        scores = torch.full((output.sequences.shape[0], self.n_items), float("-inf"))
        for row, beams in enumerate(output.as_lists()):
            for ids, score in beams:
                for item in self.items_of_sequence.get(tuple(ids), ()):
                    if score > scores[row, item]:
                        scores[row, item] = score
        return scores.to(output.scores.device)

    def candidate_scores(self, llm, prompts, row_user, items):
        """[B] score of each row's item after its user's prompt (sampled evaluation), with the prior: one prefill
        per distinct user (`prompts`, `row_user` [B] maps rows to them), whose candidate items are then scored
        together like beams sharing its cache."""
        rows_of_user = [[] for _ in prompts]
        column = []  # each row's place among its user's candidates
        for row, user in enumerate(row_user.tolist()):
            column.append(len(rows_of_user[user]))
            rows_of_user[user].append(row)
        width = max(len(rows) for rows in rows_of_user)  # users with fewer rows repeat their first candidate
        item_list = items.tolist()
        candidates = [[self.item_token_ids[item_list[r]] for r in rows + rows[:1] * (width - len(rows))]
                      for rows in rows_of_user]
        scores = candidate_log_probs(llm, prompts, candidates)  # [U, width]
        scores = scores[row_user, torch.tensor(column, device=scores.device)]  # [B]
        return scores + self.item_log_prior[items] if self.prior_weight else scores
