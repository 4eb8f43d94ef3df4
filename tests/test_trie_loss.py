"""The trie-restricted training loss: equal to the negative log-probability that trie-normalised beam search
scores, and trained through by LC-Rec (`loss_normalise: trie`)."""

import pytest
import torch

from recbole_earn.llm import TokenTrie
from recbole_earn.llm.trie_loss import FREE, trie_cross_entropy, trie_prefix_nodes

from llm_helpers import earn_model, random_prompts, teacher_forced_score


def test_prefix_nodes_walk_the_trie():
    trie = TokenTrie([[5, 7, 9], [5, 8, 9], [6, 7, 9]])
    assert trie_prefix_nodes(trie, [5, 8, 9]) == [0, 1, int(trie.children_nodes[1, 1])]
    with pytest.raises(ValueError, match="not in the trie"):
        trie_prefix_nodes(trie, [5, 6])


@pytest.mark.parametrize("earn_k", [1, 2])
def test_loss_is_the_trie_normalised_score_and_the_vocabulary_elsewhere(earn_k):
    model = earn_model(earn_k=earn_k)
    items = [[300, 301, 310], [300, 302, 311], [303, 301, 312], [303, 304, 313]]
    trie = TokenTrie(items)
    prompts = random_prompts(3, seed=1)
    responses = [items[1], items[2], [40, 41]]  # two trie answers, one free text
    nodes = trie_prefix_nodes(trie, items[1]) + trie_prefix_nodes(trie, items[2]) + [FREE, FREE]
    batch = model.make_batch(prompts, responses, add_eos=False)
    with torch.no_grad():
        loss = trie_cross_entropy(model, batch, torch.tensor(nodes), trie)
    expected = -(teacher_forced_score(model, prompts[0], items[1], trie, "trie")
                 + teacher_forced_score(model, prompts[1], items[2], trie, "trie")
                 + teacher_forced_score(model, prompts[2], [40, 41])) / len(nodes)
    assert loss.item() == pytest.approx(expected, abs=1e-4)


def test_loss_trains_the_registers():
    model = earn_model(earn_k=1)
    trie = TokenTrie([[300, 301], [300, 302], [303, 304]])
    batch = model.make_batch(random_prompts(2, seed=2), [[300, 302], [303, 304]], add_eos=False)
    nodes = trie_prefix_nodes(trie, [300, 302]) + trie_prefix_nodes(trie, [303, 304])
    trie_cross_entropy(model, batch, torch.tensor(nodes), trie).backward()
    assert model.registers.grad is not None and model.registers.grad.abs().sum() > 0
