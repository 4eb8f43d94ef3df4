"""Errors reported as what they are, and state that stays where it belongs: the hub cache's real failure, the item
index's key and random state, the attention implementation of each backbone, and the caller's trie."""

import copy
import gc

import pytest
import torch

from recbole_earn.indexing.item_index import IndexSettings, build_item_index
from recbole_earn.llm.backbone import load_backbone


# -- backbone: only a cache miss means "not cached" ------------------------------------------------------------------
def test_hub_cache_failure_is_reported_as_itself(monkeypatch):
    import huggingface_hub

    def unreadable_cache(*args, **kwargs):
        raise PermissionError("cache folder is not readable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreadable_cache)
    with pytest.raises(OSError, match="local hub cache: PermissionError: cache folder is not readable") as error:
        load_backbone("someone/some-model")
    assert "not reachable" not in str(error.value) and isinstance(error.value.__cause__, PermissionError)


# -- item index: the build leaves the global RNG alone --------------------------------------------------------------
def build_index(folder):
    """A small index over 40 random 'embeddings'; returns (index, whether it was built rather than loaded)."""
    embeddings = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    built = []

    def embed(texts):
        built.append(True)
        return embeddings

    texts, tokens = [""] + [f"item {i}" for i in range(40)], ["[PAD]"] + [str(i) for i in range(40)]
    settings = IndexSettings(levels=2, codebook_size=8, code_dim=4, epochs=3, seed=5)
    index = build_item_index(texts, tokens, embed, settings, str(folder), "toy", "tiny-llama")
    return index, bool(built)


def test_building_an_index_leaves_the_global_rng_as_loading_it_does(tmp_path):
    torch.manual_seed(123)
    assert build_index(tmp_path)[1]
    after_building = torch.get_rng_state()
    torch.manual_seed(123)
    assert not build_index(tmp_path)[1]
    assert torch.equal(torch.get_rng_state(), after_building)


# -- attention: each backbone keeps its own implementation -------------------------------------------------------------
def tiny_llama(attention):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention)


def test_attention_implementation_is_kept_on_the_backbones_modules(monkeypatch):
    from transformers.models.llama import modeling_llama

    import recbole_earn.llm.attention as attention

    calls = []
    monkeypatch.setattr(modeling_llama, "eager_attention_forward", lambda *a, **k: calls.append("eager"))
    monkeypatch.setattr(attention, "sdpa_attention_forward", lambda *a, **k: calls.append("sdpa"))
    eager = tiny_llama("eager")
    attention.install_earn_attention(eager)
    copied = copy.deepcopy(eager)  # a config of another id, already switched to EARN attention
    del eager
    gc.collect()  # the first config is gone: a new config may now get its id
    models = [tiny_llama("sdpa") for _ in range(5)]
    for model in models:
        attention.install_earn_attention(model)
        assert "earn_base_attention" not in model.config.to_json_string()
    for model in models + [copied]:
        for module in attention.attention_modules(model):
            attention.earn_attention_forward(module, *[torch.zeros(1)] * 3, None)  # tensors for the kernel choice
    assert calls == ["sdpa"] * 5 * 2 + ["eager"] * 2  # two layers per model


# -- decoding: the caller's trie is not moved ------------------------------------------------------------------------
def test_beam_search_moves_a_copy_of_the_trie_once_per_device():
    from recbole_earn.llm.decoding import trie_on
    from recbole_earn.llm.trie import TokenTrie

    trie = TokenTrie([[1, 2], [1, 3], [4, 5]])
    assert trie_on(trie, torch.device("cpu")) is trie  # already there: no copy
    moved = trie_on(trie, torch.device("meta"))
    assert moved is not trie and moved.children_tokens.device.type == "meta"
    assert trie.children_tokens.device.type == "cpu"
    assert all(nodes.device.type == "cpu" for nodes in trie.internal_nodes_by_depth)
    assert trie_on(trie, "meta") is moved  # made once per device, then reused
