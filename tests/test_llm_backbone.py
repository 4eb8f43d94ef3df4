"""Backbone loading, fine-tuning modes, gradients, registers in the state dict, and clear errors on bad input."""

import time

import pytest
import torch

from llm_helpers import earn_model, random_prompts, tiny_backbone
from recbole_earn.llm import EARNConfig, EARNModel, build_tiny, load_backbone, prepare_for_training


def test_tiny_presets_are_deterministic_with_the_real_tokenizer():
    for preset, model_type in (("tiny-llama", "llama"), ("tiny-qwen2", "qwen2")):
        first, tokenizer = load_backbone(preset)
        second, _ = load_backbone(preset)
        assert first.config.model_type == model_type and first.config.num_hidden_layers == 4
        assert len(tokenizer) == first.config.vocab_size == 49152  # SmolLM2's real vocabulary
        assert tokenizer.decode(tokenizer("Super Mario Odyssey").input_ids) == "Super Mario Odyssey"
        for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
            assert torch.equal(a, b), name


def test_default_k_is_a_quarter_of_the_layers():
    backbone, tokenizer = tiny_backbone()
    assert EARNModel(backbone, EARNConfig(), tokenizer).earn_k == 1  # round(4 / 4)
    assert EARNConfig().resolved_k(30) == 8 and EARNConfig().resolved_k(24) == 6


@pytest.mark.parametrize("k", [-1, 5])
def test_earn_k_outside_range_is_a_clear_error(k):
    backbone, tokenizer = tiny_backbone()
    with pytest.raises(ValueError, match=r"earn_k=%d is outside \[0, 4\]" % k):
        EARNModel(backbone, EARNConfig(earn_k=k), tokenizer)


def test_earn_without_registers_is_a_clear_error():
    backbone, tokenizer = tiny_backbone()
    with pytest.raises(ValueError, match="needs at least one register token"):
        EARNModel(backbone, EARNConfig(earn_k=2, n_prefix_registers=0, n_suffix_registers=0), tokenizer)
    with pytest.raises(ValueError, match="n_suffix_registers >= 1"):
        EARNModel(backbone, EARNConfig(earn_k=2, n_prefix_registers=1, n_suffix_registers=0), tokenizer)
    # the vanilla model may have no registers at all (BIGRec): it is the plain LLM
    model = EARNModel(backbone, EARNConfig(earn_k=4, n_prefix_registers=0, n_suffix_registers=0), tokenizer)
    batch = model.make_batch([[10, 11, 12]], [[13]])
    with torch.no_grad():
        plain = model.causal_lm(batch.input_ids).logits[0, -2:]
        assert torch.allclose(model.kept_logits(batch)[0], plain, atol=1e-5)


def test_unsupported_architecture_is_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(ValueError, match=r"Unsupported architecture 'gpt2'.*llama, qwen2"):
        EARNModel(gpt2, EARNConfig(earn_k=1))


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="LLM model path not found"):
        load_backbone(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="GGUF file .* does not exist"):
        load_backbone(str(tmp_path / "model.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_backbone(str(tmp_path / "empty"))


def test_hub_id_offline_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(OSError, match="not in the local hub cache and HF_HUB_OFFLINE is set"):
        load_backbone("someone/no-such-model")
    assert time.perf_counter() - start < 5


def test_hub_id_without_network_fails_fast_and_clearly(monkeypatch):
    """No HF_HUB_OFFLINE, no network: a clear error within seconds, not the hub client's retries."""
    from recbole_earn.llm import backbone

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbone, "_hub_offline", lambda: False)
    monkeypatch.setattr(backbone, "_network_reachable", lambda: False)
    start = time.perf_counter()
    with pytest.raises(OSError, match="not in the local hub cache and the hub is not reachable"):
        load_backbone("someone/no-such-model")
    assert time.perf_counter() - start < 5


def test_local_folder_round_trip(tmp_path):
    backbone, tokenizer = tiny_backbone("tiny-qwen2")
    backbone.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, _ = load_backbone(str(tmp_path / "m"))
    ids = torch.tensor([[1, 50, 60, 70]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, backbone(ids).logits, atol=1e-5)


@pytest.mark.parametrize("finetune", ["lora", "full", "frozen"])
def test_gradients_reach_registers_and_trainable_weights_only(finetune):
    torch.manual_seed(0)
    backbone, tokenizer = build_tiny("tiny-llama")  # a fresh copy: LoRA injects layers in place
    backbone = prepare_for_training(backbone, finetune, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    model = EARNModel(backbone, EARNConfig(earn_k=1), tokenizer).train()
    prompts = random_prompts(3, 3, 9, seed=1)
    responses = random_prompts(3, 1, 4, seed=2)
    loss = model.compute_loss(prompts, responses)
    loss.backward()
    assert model.registers.requires_grad and model.registers.grad.abs().sum() > 0
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            assert parameter.grad is None, name
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if finetune == "lora":
        lora_b = [n for n in trainable if "lora_B" in n]
        assert lora_b and all("q_proj" in n or "v_proj" in n for n in lora_b)
        # lora_B starts at zero, so the first gradient reaches B; after a step it reaches A too
        assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in lora_b
                   if ".layers.0." in n or ".layers.1." in n)
        assert trainable == {"registers"} | {n for n in trainable if "lora_" in n}
    elif finetune == "full":
        assert len(trainable) == len(list(model.parameters()))
    else:
        assert trainable == {"registers"}


def test_lora_model_runs_through_peft_wrapper_and_saves_registers():
    torch.manual_seed(0)
    backbone, tokenizer = build_tiny("tiny-llama")
    peft_model = prepare_for_training(backbone, "lora", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    model = EARNModel(peft_model, EARNConfig(earn_k=2), tokenizer).eval()
    state = model.trainable_state_dict()
    assert "registers" in state and any("lora_A" in n for n in state)
    assert not any("embed_tokens" in n for n in state)
    # a fresh model loading the adapter state gives the same outputs
    other_backbone, _ = build_tiny("tiny-llama")
    other = EARNModel(prepare_for_training(other_backbone, "lora", lora_r=4, lora_alpha=8, lora_dropout=0.0),
                      EARNConfig(earn_k=2), tokenizer).eval()
    with torch.no_grad():
        for parameter in state.values():
            parameter.add_(0.01)  # make the adapter non-trivial
        model.load_trainable_state_dict(state)
        other.load_trainable_state_dict(model.trainable_state_dict())
        batch = model.make_batch([[5, 6, 7]], [[8, 9]])
        assert torch.allclose(model.kept_logits(batch), other.kept_logits(batch), atol=1e-5)


def test_embed_texts_is_last_token_hidden_state_and_padding_free():
    model = earn_model(earn_k=1)
    texts = [[400, 401, 402], [500], [600, 601, 602, 603, 604]]
    together = model.embed_texts(texts)
    assert together.shape == (3, model.hidden_size)
    for i, text in enumerate(texts):
        with torch.no_grad():
            hidden = model.causal_lm.model(torch.tensor([text])).last_hidden_state[0, -1]
        assert torch.allclose(together[i], hidden, atol=1e-5)
        assert torch.allclose(together[i], model.embed_texts([text])[0], atol=1e-5)
