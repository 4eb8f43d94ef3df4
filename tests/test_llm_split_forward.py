"""The EARN split forward: vanilla equivalence, the masked full-length reference, padding invariance."""

import pytest
import torch

from llm_helpers import earn_model, logit_tolerance, masked_reference_logits, random_prompts, tiny_backbone
from recbole_earn.llm import EARNConfig, EARNModel

ARCHS = ["tiny-llama", "tiny-qwen2"]


def _batch(model, n=3, seed=0):
    prompts = random_prompts(n, 4, 14, seed=seed)
    responses = random_prompts(n, 1, 6, seed=seed + 1)
    return model.make_batch(prompts, responses), prompts, responses


@pytest.mark.parametrize("preset", ARCHS)
def test_vanilla_k_equals_plain_hf_model(preset, device_dtype):
    """earn_k = N: the engine's logits equal the unmodified HF model run on the same embeddings (registers included
    via inputs_embeds), with padding, at every real position."""
    device, dtype = device_dtype
    torch.manual_seed(0)
    model = earn_model(preset, earn_k=4, n_prefix=2, n_suffix=1, device=device, dtype=getattr(torch, dtype))
    assert model.earn_k == model.num_layers == 4
    batch, _, _ = _batch(model)
    assert not bool(batch.attention_mask.all()), "the batch must contain padding"
    with torch.no_grad():
        plain = model.causal_lm(inputs_embeds=model.input_embeddings(batch), attention_mask=batch.attention_mask.long(),
                                position_ids=batch.position_ids).logits  # [B, S, vocab]
        ours = model.kept_logits(batch)  # [B, K, vocab]
    plain_kept = plain.gather(1, batch.keep_index[..., None].expand(-1, -1, plain.shape[-1]))
    diff = (ours.float() - plain_kept.float()).abs().amax(-1)[batch.keep_mask]
    assert diff.max().item() <= logit_tolerance(plain_kept, dtype, float32_tolerance=1e-5)


@pytest.mark.parametrize("preset", ARCHS)
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_split_forward_equals_masked_full_length_reference(preset, k, device_dtype):
    device, dtype = device_dtype
    torch.manual_seed(0)
    model = earn_model(preset, earn_k=k, n_prefix=1, n_suffix=2, device=device, dtype=getattr(torch, dtype))
    batch, _, _ = _batch(model, n=4, seed=k)
    assert not bool(batch.attention_mask.all()) and not bool(batch.keep_mask.all()), "padding on both levels"
    with torch.no_grad():
        ours = model.kept_logits(batch)
    reference = masked_reference_logits(model, batch)
    diff = (ours.float() - reference.float()).abs().amax(-1)[batch.keep_mask]  # every register and response position
    assert diff.max().item() <= logit_tolerance(reference, dtype, float32_tolerance=1e-4)


def test_split_forward_really_drops_the_prompt_in_later_layers():
    """Sanity of the reference test: with k < N a prompt change reaches the later layers only through layers < k,
    and with k = 0 the prompt has no effect at all."""
    model = earn_model(earn_k=0)
    a = model.make_batch([[500, 501, 502]], [[7, 8]])
    b = model.make_batch([[900, 901, 902]], [[7, 8]])
    with torch.no_grad():
        assert torch.allclose(model.kept_logits(a), model.kept_logits(b), atol=1e-5)
    model = earn_model(earn_k=2)
    with torch.no_grad():
        assert not torch.allclose(model.kept_logits(model.make_batch([[500, 501, 502]], [[7, 8]])),
                                  model.kept_logits(model.make_batch([[900, 901, 902]], [[7, 8]])), atol=1e-3)


@pytest.mark.parametrize("k", [1, 4])
def test_padded_batch_equals_each_example_alone(k):
    torch.manual_seed(0)
    model = earn_model(earn_k=k)
    batch, prompts, responses = _batch(model, n=4, seed=3)
    with torch.no_grad():
        together = model.kept_logits(batch)
        loss_together = model(batch).loss
        losses = []
        for i in range(len(prompts)):
            alone_batch = model.make_batch([prompts[i]], [responses[i]])
            alone = model.kept_logits(alone_batch)[0]  # [K_i, vocab]
            mine = together[i][batch.keep_mask[i]]
            assert (mine - alone).abs().max().item() <= 1e-4
            losses.append((model(alone_batch).loss, len(responses[i]) + 1))
    # the batch loss is the token-weighted mean of the examples' losses
    expected = sum(l * n for l, n in losses) / sum(n for _, n in losses)
    assert torch.allclose(loss_together, expected, atol=1e-5)


def test_loss_is_next_token_cross_entropy_on_response_and_eos():
    model = earn_model(earn_k=2)
    prompt, response = [300, 301, 302, 303], [40, 41, 42]
    batch = model.make_batch([prompt], [response])
    # targets are the response then EOS, at the last suffix register and the response positions
    assert batch.labels[0][batch.labels[0] != -100].tolist() == response + [model.eos_token_id]
    with torch.no_grad():
        logits = model.kept_logits(batch)[0, -4:]
        expected = torch.nn.functional.cross_entropy(logits, torch.tensor(response + [model.eos_token_id]))
        assert torch.allclose(model(batch).loss, expected, atol=1e-6)


def test_batch_layout_positions_and_registers():
    model = earn_model(earn_k=2, n_prefix=2, n_suffix=1)
    batch = model.make_batch([[10, 11, 12], [20]], [[30], [40, 41]])
    # example 1: [BOS R R 20 R 40 41] left padded by 1 (example 0: [BOS R R 10 11 12 R 30])
    assert batch.input_ids.shape == (2, 8)
    assert batch.position_ids[1].tolist() == [0, 0, 1, 2, 3, 4, 5, 6]
    assert batch.attention_mask[1].tolist() == [False] + [True] * 7
    assert batch.register_index[1].tolist() == [-1, -1, 0, 1, -1, 2, -1, -1]
    assert batch.prefix_lengths.tolist() == [7, 5]
    # kept: registers + response, left padded; their original positions are preserved
    kept_positions = batch.position_ids.gather(1, batch.keep_index)
    assert kept_positions[0][batch.keep_mask[0]].tolist() == [1, 2, 6, 7]
    assert kept_positions[1][batch.keep_mask[1]].tolist() == [1, 2, 4, 5, 6]
    assert tiny_backbone()[1].bos_token_id == model.bos_token_id


def test_without_bos_the_example_starts_at_the_first_register():
    backbone, tokenizer = tiny_backbone()
    model = EARNModel(backbone, EARNConfig(earn_k=2), tokenizer, add_bos=False)
    batch = model.make_batch([[10, 11]], [[12]])
    assert batch.register_index[0].tolist() == [0, -1, -1, 1, -1]
    assert batch.input_ids[0, 1:3].tolist() == [10, 11] and batch.position_ids[0].tolist() == [0, 1, 2, 3, 4]
