"""Cached decoding on the uneven, beam-shared EARN cache equals recomputing the whole forward at every step."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_helpers import (
    earn_model,
    next_token_logprobs_recomputed,
    random_prompts,
    reference_beam_search,
    teacher_forced_score,
)
from recbole_earn.llm import TokenTrie, beam_search, constrained_beam_search, greedy_search
from recbole_earn.llm.decoding import trie_on

CASES = [("tiny-llama", 1), ("tiny-llama", 4), ("tiny-qwen2", 2), ("tiny-qwen2", 4)]  # EARN and vanilla (k = N = 4)


@pytest.mark.parametrize("preset,k", CASES)
def test_greedy_cached_equals_recomputed(preset, k, device):
    torch.manual_seed(0)
    model = earn_model(preset, earn_k=k, device=device)
    prompts = random_prompts(3, 3, 12, seed=k)
    out = greedy_search(model, prompts, max_new_tokens=6, stop_at_eos=False)
    assert out.sequences.shape == (3, 1, 6)
    generated = [[] for _ in prompts]
    totals = torch.zeros(len(prompts))
    for _ in range(6):
        logp = next_token_logprobs_recomputed(model, prompts, generated)  # whole forward, no cache
        token = logp.argmax(-1)
        totals += logp.gather(1, token[:, None])[:, 0]
        generated = [g + [t] for g, t in zip(generated, token.tolist())]
    assert out.sequences[:, 0].tolist() == generated
    assert torch.allclose(out.scores[:, 0].cpu(), totals, atol=1e-3)


@pytest.mark.parametrize("preset,k", CASES)
def test_beam_cached_equals_recomputed(preset, k, device):
    torch.manual_seed(0)
    model = earn_model(preset, earn_k=k, device=device)
    prompts = random_prompts(2, 3, 12, seed=10 + k)
    out = beam_search(model, prompts, num_beams=3, max_new_tokens=4, stop_at_eos=False)
    for i, prompt in enumerate(prompts):
        sequences, scores = reference_beam_search(model, prompt, num_beams=3, max_new_tokens=4)
        assert out.sequences[i].tolist() == sequences.tolist()
        assert torch.allclose(out.scores[i].cpu(), scores, atol=1e-3)
        for j in range(3):  # and each score is the sequence's own log-probability
            expected = teacher_forced_score(model, prompt, out.sequences[i, j].tolist())
            assert abs(out.scores[i, j].item() - expected) <= 1e-3


def test_batched_generation_equals_each_prompt_alone():
    torch.manual_seed(0)
    model = earn_model(earn_k=1)
    prompts = random_prompts(4, 2, 15, seed=5)
    together = beam_search(model, prompts, num_beams=4, max_new_tokens=5, stop_at_eos=False)
    for i, prompt in enumerate(prompts):
        alone = beam_search(model, [prompt], num_beams=4, max_new_tokens=5, stop_at_eos=False)
        assert together.sequences[i].tolist() == alone.sequences[0].tolist()
        assert torch.allclose(together.scores[i], alone.scores[0], atol=1e-4)


def test_beams_stop_at_eos_and_keep_their_score():
    torch.manual_seed(0)
    model = earn_model(earn_k=2)
    prompts = random_prompts(2, 3, 8, seed=1)
    free = greedy_search(model, prompts, max_new_tokens=5, stop_at_eos=False)
    # declare the 3rd generated token of prompt 0 to be EOS: greedy must stop there with the same score so far
    eos = int(free.sequences[0, 0, 2])
    stopped = greedy_search(model, prompts, max_new_tokens=5, eos_token_id=eos)
    assert stopped.lengths[0, 0].item() == 3
    assert stopped.sequences[0, 0, :3].tolist() == free.sequences[0, 0, :3].tolist()
    assert set(stopped.sequences[0, 0, 3:].tolist()) <= {model.pad_token_id}
    expected = teacher_forced_score(model, prompts[0], free.sequences[0, 0, :3].tolist())
    assert abs(stopped.scores[0, 0].item() - expected) <= 1e-3


@pytest.mark.parametrize("k", [1, 4])
def test_kv_lengths_and_bytes_follow_the_formula(k):
    torch.manual_seed(0)
    model = earn_model(earn_k=k, n_prefix=1, n_suffix=2)
    n_layers, registers = model.num_layers, 3
    prompt = random_prompts(1, 20, 20, seed=2)[0]
    full = 1 + registers + len(prompt)  # BOS + registers + prompt tokens (L + R in the paper's notation, + BOS)
    prefill = model.prefill([prompt])
    assert prefill.cache.layer_lengths() == [(full, 0)] * k + [(registers, 0)] * (n_layers - k)
    steps = 5  # 6 generated tokens = 5 decoding steps
    out = greedy_search(model, [prompt], max_new_tokens=steps + 1, stop_at_eos=False)
    assert out.decode_steps == steps
    assert out.kv_layer_lengths == [(full, steps)] * k + [(registers, steps)] * (n_layers - k)
    config = model.causal_lm.config
    per_entry = 2 * config.num_key_value_heads * (config.hidden_size // config.num_attention_heads) * 4  # K+V fp32
    assert sum(out.kv_layer_bytes) == per_entry * (k * (full + steps) + (n_layers - k) * (registers + steps))


def test_beams_share_the_prompt_cache():
    """With 8 beams the prompt's KV is stored once per prompt; only generated tokens are per beam."""
    model = earn_model(earn_k=4)
    prompts = random_prompts(2, 30, 30, seed=4)
    out = beam_search(model, prompts, num_beams=8, max_new_tokens=4, stop_at_eos=False)
    config = model.causal_lm.config
    per_entry = 2 * config.num_key_value_heads * (config.hidden_size // config.num_attention_heads) * 4
    prefix = 1 + 2 + 30
    assert out.kv_layer_lengths == [(prefix, 3)] * 4
    assert out.kv_layer_bytes == [per_entry * (2 * prefix + 2 * 8 * 3)] * 4


def _trie_sequences(seed, n_items=12, depth=3):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(1000, 1006, (n_items, depth), generator=generator).tolist()
    return sorted({tuple(c) for c in codes})


@pytest.mark.parametrize("normalise", ["vocabulary", "trie"])
@pytest.mark.parametrize("k", [1, 4])
def test_constrained_beam_search_finds_all_items_with_exact_scores(k, normalise, device):
    """With at least as many beams as items, every item comes out, scored by its teacher-forced log-probability
    (over the whole vocabulary, or renormalised over the trie's allowed tokens), best first."""
    torch.manual_seed(0)
    model = earn_model(earn_k=k, device=device)
    items = _trie_sequences(0, n_items=6)
    trie = TokenTrie(items)
    prompts = random_prompts(2, 4, 10, seed=6)
    out = constrained_beam_search(model, prompts, trie, num_beams=len(items) + 2, normalise=normalise)
    for i, prompt in enumerate(prompts):
        results = out.as_lists()[i]
        found = [tuple(seq) for seq, score in results if score > float("-inf")]
        assert sorted(found) == sorted(items)
        for seq, score in results[: len(items)]:
            assert abs(score - teacher_forced_score(model, prompt, seq, trie, normalise)) <= 1e-3
        scores = [score for _, score in results]
        assert scores == sorted(scores, reverse=True)
        assert results[-1][1] == float("-inf") and results[-1][0] == []


def test_constrained_matches_brute_force_best_item(device):
    torch.manual_seed(0)
    model = earn_model(earn_k=1, device=device)
    items = [(1000, 1001, 1002, model.eos_token_id), (1000, 1003, model.eos_token_id),
             (1004, 1005, 1006, 1007, model.eos_token_id)]  # different lengths, ended by EOS
    trie = TokenTrie(items)
    prompt = random_prompts(1, 6, 6, seed=9)[0]
    out = constrained_beam_search(model, [prompt], trie, num_beams=2)
    best = max(items, key=lambda seq: teacher_forced_score(model, prompt, list(seq), trie))
    assert tuple(out.as_lists()[0][0][0]) == best


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.lists(st.integers(2000, 2007), min_size=1, max_size=4), min_size=1, max_size=10),
    num_beams=st.integers(1, 6),
    prompt_seed=st.integers(0, 1000),
)
def test_constrained_beam_search_only_produces_trie_sequences(items, num_beams, prompt_seed):
    model = earn_model(earn_k=1)
    eos = model.eos_token_id
    sequences = {tuple(s) + (eos,) for s in items}  # EOS makes the set prefix-free
    trie = TokenTrie(sequences)
    prompts = random_prompts(2, 1, 9, seed=prompt_seed)
    out = constrained_beam_search(model, prompts, trie, num_beams=num_beams)
    for results in out.as_lists():
        produced = [tuple(seq) for seq, score in results if score > float("-inf")]
        assert len(produced) == min(num_beams, len(sequences))
        assert len(set(produced)) == len(produced)  # distinct beams
        assert all(seq in sequences and trie.contains(seq) for seq in produced)


@pytest.mark.parametrize("k", [1, 4])
def test_excluded_sequences_never_come_out_and_the_others_keep_their_scores(k, device):
    """Excluding some items per prompt removes exactly those from the beams; every other item keeps the score it
    has without exclusion (the trie-normalised log-probability), so the beams go to the next-best items."""
    torch.manual_seed(0)
    model = earn_model(earn_k=k, device=device)
    items = _trie_sequences(0, n_items=6)
    trie = TokenTrie(items)
    prompts = random_prompts(2, 4, 10, seed=6)
    full = constrained_beam_search(model, prompts, trie, num_beams=len(items))
    excluded = [[0, 3], [5]]
    out = constrained_beam_search(model, prompts, trie, num_beams=len(items), excluded=excluded)
    for results, all_results, banned in zip(out.as_lists(), full.as_lists(), excluded):
        found = {tuple(seq): score for seq, score in results if score > float("-inf")}
        expected = {tuple(seq): score for seq, score in all_results if tuple(seq) not in {items[i] for i in banned}}
        assert set(found) == set(expected)
        assert all(abs(found[seq] - expected[seq]) <= 1e-4 for seq in found)


def test_edge_log_probs_are_each_nodes_share_of_its_parent_and_sum_to_the_sequence_share():
    items = _trie_sequences(3, n_items=10)
    trie = TokenTrie(items)
    weights = torch.arange(1, len(items) + 1, dtype=torch.float)
    edges = trie.edge_log_probs(weights).double()
    assert edges[0] == 0.0
    for node in range(len(trie.n_children)):  # the children of every internal node share its weight
        children = trie.children_nodes[node][trie.children_nodes[node] >= 0]
        if len(children):
            assert abs(float(edges[children].exp().sum()) - 1.0) <= 1e-6
    for index, item in enumerate(items):  # along a path the shares telescope to the sequence's share
        node, total = 0, 0.0
        for token in item:
            node = int(trie.children_nodes[node][trie.children_tokens[node] == token])
            total += float(edges[node])
        assert abs(total - float((weights[index] / weights.sum()).log())) <= 1e-5
    with pytest.raises(ValueError, match="positive weights"):
        trie.edge_log_probs(torch.zeros(len(items)))


@pytest.mark.parametrize("normalise", ["vocabulary", "trie"])
def test_a_node_prior_adds_each_sequences_prior_to_its_score(normalise, device):
    """With every item in the beams, a prior over the trie's nodes adds the sum of its edges along each item's
    path to that item's score; a prior weighted far above the model ranks the items by the prior alone."""
    torch.manual_seed(0)
    model = earn_model(earn_k=1, device=device)
    items = _trie_sequences(0, n_items=6)
    trie = TokenTrie(items)
    weights = torch.tensor([5.0, 1.0, 30.0, 2.0, 9.0, 4.0])[: len(items)]
    item_prior = (weights / weights.sum()).log()
    prompts = random_prompts(2, 4, 10, seed=6)
    plain = constrained_beam_search(model, prompts, trie, num_beams=len(items), normalise=normalise)
    prior = constrained_beam_search(model, prompts, trie, num_beams=len(items), normalise=normalise,
                                    node_log_prior=trie.edge_log_probs(weights))
    for with_prior, without in zip(prior.as_lists(), plain.as_lists()):
        expected = {tuple(seq): score + float(item_prior[items.index(tuple(seq))]) for seq, score in without}
        assert all(abs(score - expected[tuple(seq)]) <= 1e-4 for seq, score in with_prior)
    dominant = constrained_beam_search(model, prompts, trie, num_beams=3, normalise=normalise,
                                       node_log_prior=1e4 * trie.edge_log_probs(weights))
    by_weight = [items[i] for i in weights.argsort(descending=True)[:3].tolist()]
    assert all([tuple(seq) for seq, _ in beams] == by_weight for beams in dominant.as_lists())


def test_exclusion_mask_marks_excluded_leaves_and_exhausted_subtrees(device):
    trie = TokenTrie([[1, 2], [1, 3], [4, 5]]).to(device)  # root -1-> a -2-> leaf, a -3-> leaf; root -4-> b -5-> leaf
    node_a, node_b = (int(trie.children_nodes[0, c]) for c in range(2))
    leaves = trie.end_nodes.tolist()
    mask = trie.exclusion_mask([[0, 1], torch.tensor([2], device=device), []])  # lists or tensors of indices
    assert mask.device.type == device.type and mask.shape == (3, len(trie.n_children))
    marked = [set(row.nonzero()[:, 0].tolist()) for row in mask]
    assert marked == [{leaves[0], leaves[1], node_a}, {leaves[2], node_b}, set()]  # the root always stays open


def test_engine_runs_on_the_backbones_device_and_dtype(device_dtype):
    """A tiny backbone built straight on a device and dtype: EARNModel's registers follow it (in float32, like
    LoRA's weights), and batches, the trie's copy and the outputs of beam search go where the model is (the engine
    takes its device from the registers); the caller's trie stays where it was built."""
    device, dtype = device_dtype
    model = earn_model(earn_k=1, n_prefix=1, n_suffix=1, device=device, dtype=getattr(torch, dtype))
    weight = model.causal_lm.get_input_embeddings().weight
    assert weight.device.type == model.registers.device.type == device.type and weight.dtype == getattr(torch, dtype)
    assert model.registers.dtype == torch.float32
    items = _trie_sequences(0, n_items=6)
    trie = TokenTrie(items)  # built on the CPU
    prompts = random_prompts(2, 4, 10, seed=6)
    assert model.make_batch(prompts).input_ids.device.type == device.type
    out = constrained_beam_search(model, prompts, trie, num_beams=3, excluded=[[0], [1, 2]])
    assert trie.children_tokens.device.type == "cpu"
    assert trie_on(trie, device) is trie_on(trie, model.registers.device)  # one copy per device, however named
    assert trie_on(trie, device).children_tokens.device.type == device.type
    assert {out.sequences.device.type, out.scores.device.type, out.lengths.device.type} == {device.type}
    for results, banned in zip(out.as_lists(), [[0], [1, 2]]):
        produced = [tuple(seq) for seq, score in results if score > float("-inf")]
        assert len(produced) == 3 and set(produced) <= set(items) - {items[i] for i in banned}


def test_trie_rejects_prefixes_and_empty_input():
    with pytest.raises(ValueError, match="prefix"):
        TokenTrie([[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="at least one"):
        TokenTrie([])


def test_copying_the_prompt_cache_per_beam_gives_the_same_result():
    """share_prompt_cache=False (the usual per-beam copy) is the same computation, only with more memory."""
    torch.manual_seed(0)
    model = earn_model(earn_k=2)
    prompts = random_prompts(3, 2, 12, seed=8)
    shared = beam_search(model, prompts, num_beams=4, max_new_tokens=4, stop_at_eos=False)
    copied = beam_search(model, prompts, num_beams=4, max_new_tokens=4, stop_at_eos=False, share_prompt_cache=False)
    assert shared.sequences.tolist() == copied.sequences.tolist()
    assert torch.allclose(shared.scores, copied.scores, atol=1e-4)
    assert sum(copied.kv_layer_bytes) > sum(shared.kv_layer_bytes)
