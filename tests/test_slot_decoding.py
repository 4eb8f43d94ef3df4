"""Decoding on fixed buffers (decode_mode "slots"), and replayed as a CUDA graph ("graph"), equals decoding on the
growing cache: same beams, same scores, same KV accounting. On a machine without CUDA, "graph" is refused."""

import pytest
import torch

from llm_helpers import earn_model, random_prompts
from recbole_earn.llm import TokenTrie, beam_search, constrained_beam_search, pooled_beam_search
from recbole_earn.llm.slot_decoding import KEPT_LAYOUTS, SHARED_BUCKET, bucketed, resolved_decode_mode

MODES = ["slots", "graph"]


def _in_mode(model, mode, search):
    """search() with model.decode_mode = mode, then back to the growing cache."""
    model.decode_mode = mode
    try:
        return search()
    finally:
        model.decode_mode = "growing"


def _assert_same(fixed, growing, atol=1e-4):
    assert fixed.sequences.tolist() == growing.sequences.tolist()
    assert fixed.lengths.tolist() == growing.lengths.tolist()
    finite = torch.isfinite(growing.scores)
    assert torch.equal(torch.isfinite(fixed.scores), finite)
    assert torch.allclose(fixed.scores[finite], growing.scores[finite], atol=atol)
    assert fixed.kv_layer_lengths == growing.kv_layer_lengths
    assert fixed.kv_layer_bytes == growing.kv_layer_bytes
    assert fixed.decode_steps == growing.decode_steps


def _usable(mode, device):
    """Whether `mode` runs on `device`; where it does not (graph off CUDA), that it is refused clearly."""
    if mode == "graph" and device.type != "cuda":
        with pytest.raises(ValueError, match="needs a CUDA device"):
            resolved_decode_mode(mode, device)
        return False
    return True


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [1, 4])
def test_free_beam_search_on_slots_equals_the_growing_cache(mode, k, device):
    model = earn_model(earn_k=k, device=device)
    if not _usable(mode, device):
        return
    prompts = random_prompts(3, 2, 12, seed=k)
    growing = beam_search(model, prompts, num_beams=4, max_new_tokens=5, stop_at_eos=False)
    fixed = _in_mode(model, mode, lambda: beam_search(model, prompts, num_beams=4, max_new_tokens=5,
                                                      stop_at_eos=False))
    _assert_same(fixed, growing)


@pytest.mark.parametrize("mode", MODES)
def test_constrained_search_with_exclusions_and_prior_on_slots_equals_the_growing_cache(mode, device):
    model = earn_model(earn_k=2, device=device)
    if not _usable(mode, device):
        return
    generator = torch.Generator().manual_seed(3)
    items = sorted({tuple(c) for c in torch.randint(1000, 1006, (14, 3), generator=generator).tolist()})
    trie = TokenTrie(items)
    prior = torch.randn(trie.children_tokens.shape[0], generator=generator)
    prompts = random_prompts(2, 4, 10, seed=6)
    excluded = [[0, 3], [1]]
    for normalise in ("vocabulary", "trie"):
        def search():
            return constrained_beam_search(model, prompts, trie, num_beams=5, excluded=excluded,
                                           normalise=normalise, node_log_prior=prior)

        _assert_same(_in_mode(model, mode, search), search())


@pytest.mark.parametrize("mode", MODES)
def test_pooled_beam_search_on_slots_equals_the_growing_cache(mode, device):
    model = earn_model(earn_k=1, device=device)
    if not _usable(mode, device):
        return
    prompts = random_prompts(2, 3, 9, seed=2)
    eos = 7000

    def search():
        return pooled_beam_search(model, prompts, num_beams=3, max_new_tokens=6, eos_token_id=eos)

    _assert_same(_in_mode(model, mode, search), search())


@pytest.mark.parametrize("mode", MODES)
def test_later_searches_reuse_the_buffers_of_their_layout(mode, device):
    """Batches whose prompts pad to the same bucket reuse one set of buffers (and graph); each search still equals
    the growing cache, whatever the earlier search left in the buffers. A new layout gets its own; the model keeps
    the last KEPT_LAYOUTS."""
    model = earn_model(earn_k=1, device=device)
    if not _usable(mode, device):
        return

    def search(prompts, beams=3):
        return beam_search(model, prompts, num_beams=beams, max_new_tokens=4, stop_at_eos=False)

    first, second = random_prompts(2, 70, 90, seed=1), random_prompts(2, 75, 100, seed=2)  # both pad to 128
    assert bucketed(1 + 2 + 90) == bucketed(1 + 2 + 100) == 2 * SHARED_BUCKET
    for prompts in (first, second):
        _assert_same(_in_mode(model, mode, lambda: search(prompts)), search(prompts))
    assert len(model.slot_decoders) == 1
    for beams in range(4, 4 + KEPT_LAYOUTS + 1):
        _in_mode(model, mode, lambda: search(first, beams))
    assert len(model.slot_decoders) == KEPT_LAYOUTS


def test_copying_the_prompt_per_beam_on_slots_equals_the_growing_cache():
    model = earn_model(earn_k=2)
    prompts = random_prompts(3, 2, 12, seed=8)

    def search():
        return beam_search(model, prompts, num_beams=4, max_new_tokens=4, stop_at_eos=False,
                           share_prompt_cache=False)

    _assert_same(_in_mode(model, "slots", search), search())


def test_added_token_rows_decode_on_slots(device):
    """LC-Rec's new code tokens (their own embedding rows) go through the fixed-buffer step too."""
    model = earn_model(earn_k=1, device=device)
    first = model.vocab_size
    rows = model.add_tokens(first, 8)
    with torch.no_grad():
        rows.input_rows.normal_()
    trie = TokenTrie([(first + a, first + 4 + b) for a in range(4) for b in range(4)])
    prompts = random_prompts(2, 3, 8, seed=4)
    mode = "graph" if device.type == "cuda" else "slots"

    def search():
        return constrained_beam_search(model, prompts, trie, num_beams=6)

    _assert_same(_in_mode(model, mode, search), search())


def test_moving_the_model_drops_its_buffers_and_graphs():
    model = earn_model(earn_k=1)
    _in_mode(model, "slots", lambda: beam_search(model, random_prompts(1, seed=3), num_beams=2, max_new_tokens=3))
    assert len(model.slot_decoders) == 1
    model.to(torch.float32)
    assert len(model.slot_decoders) == 0


def test_decode_modes_resolve_by_device():
    assert resolved_decode_mode("auto", "cpu") == "growing"
    assert resolved_decode_mode("auto", "cuda") == "graph"
    assert resolved_decode_mode("slots", "cpu") == "slots"
    with pytest.raises(ValueError, match="decode_mode must be one of"):
        resolved_decode_mode("compiled", "cpu")


def _replay_eagerly(run):
    """CPU stand-in for cuda_graph.run_then_capture, for a `run` without side effects: the "graph" is run itself,
    and a replay recomputes its outputs into the tensors the first recording returned (as a CUDA graph does)."""
    class Replay:
        def replay(self):
            for held, fresh in zip(outputs, run()):
                held.copy_(fresh)

    output, outputs = run(), run()
    return output, Replay(), outputs


@pytest.mark.parametrize("k", [0, 2])
def test_prefill_register_layers_as_a_graph_equal_the_eager_layers(k, device, monkeypatch):
    """Layers [k, N) at prefill, recorded once per shape and replayed for later batches, give the eager hidden
    states and KV cache (on a CPU, the graph is replaced by re-running what it records)."""
    from recbole_earn.llm import EARNCache, cuda_graph

    if device.type != "cuda":
        monkeypatch.setattr(cuda_graph, "run_then_capture", _replay_eagerly)
    model = earn_model(earn_k=k, device=device)
    # the first batch records (in a beam search's inference mode), the second (same shape) replays (under no_grad,
    # as candidate scoring runs)
    for seed, mode in ((1, torch.inference_mode), (2, torch.no_grad)):
        batch = model.make_batch(random_prompts(3, 5, 9, seed=seed))
        eager, graphed = EARNCache(model.num_layers), EARNCache(model.num_layers)
        with mode():
            expected = model.split_forward(batch, eager)
            hidden = model.split_forward(batch, graphed, graph_later_layers=True)
        torch.testing.assert_close(hidden, expected)
        for layer in range(model.num_layers):
            torch.testing.assert_close(graphed.shared_keys[layer], eager.shared_keys[layer])
            torch.testing.assert_close(graphed.shared_values[layer], eager.shared_values[layer])
    assert len(model.register_graphs) == 1
