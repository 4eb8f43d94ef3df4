"""The training-free baselines: KV presses (StreamingLLM, SnapKV) keep exactly the prompt positions their
definitions name, decoding on a pressed cache equals a full forward in which the generated tokens cannot see the
dropped positions, and SkipLayers equals a full forward in which the later layers see only the last prompt token."""

import math

import pytest
import torch

from llm_helpers import _additive, earn_model, masked_reference_logits, random_prompts
from recbole_earn.analysis.attention_run import backbone_attentions, eager_attention
from recbole_earn.llm.kv_press import SnapKV, StreamingLLM, press_from_settings
from recbole_earn.llm.scoring import candidate_log_probs

N_LAYERS = 4  # tiny-llama


def plain_model(**keys):
    return earn_model(earn_k=N_LAYERS, n_prefix=0, n_suffix=0, **keys)  # every layer sees the whole prompt


def kept_columns_by_key(pressed, full, layer, row):
    """Per KV head, the columns of the full cache whose keys the pressed cache kept (real slots only), sorted."""
    keys, mask = pressed.shared_keys[layer][row], pressed.shared_mask[layer]
    real = torch.ones(keys.shape[1], dtype=torch.bool) if mask is None else mask[row, 0, 0] == 0
    columns = []
    for head in range(keys.shape[0]):
        distances = torch.cdist(keys[head, real], full.shared_keys[layer][row, head])  # [kept, S]
        columns.append(sorted(distances.argmin(-1).tolist()))
    return columns


def real_columns(valid_row):
    return valid_row.nonzero()[:, 0].tolist()


@pytest.mark.parametrize("budget,sinks", [(6, 2), (0.5, 1), (100, 4)])
def test_streaming_llm_keeps_the_first_real_tokens_and_the_most_recent(budget, sinks):
    model = plain_model()
    prompts = random_prompts(4, 3, 14, seed=1)
    full = model.prefill(prompts).cache
    with StreamingLLM(budget, sinks=sinks)(model):
        pressed = model.prefill(prompts).cache
    assert model.kv_press is None  # the press applied inside the block only
    valid = model.make_batch(prompts).attention_mask
    for row in range(len(prompts)):
        real = real_columns(valid[row])
        keep = min(len(real), budget if budget >= 1 else max(1, math.ceil(len(real) * budget)))
        first = min(sinks, keep)
        expected = sorted(set(real[:first]) | set(real[len(real) - (keep - first):]))
        for layer in range(N_LAYERS):
            assert kept_columns_by_key(pressed, full, layer, row) == [expected] * full.shared_keys[layer].shape[1]


def snapkv_reference(model, prompt, budget, window, kernel):
    """Per layer, per KV head: the kept positions of one unpadded prompt, from the backbone's own attention
    probabilities (eager), summed over the last `window` queries and the query heads of the group, then averaged
    over a `kernel`-wide neighbourhood (the positions that exist), plus the window."""
    sequence = [model.bos_token_id] + list(prompt)
    with eager_attention(model.causal_lm):
        attentions, _ = backbone_attentions(model, sequence)  # [layers, H, L, L]
    length, kv_heads = len(sequence), model.causal_lm.config.num_key_value_heads
    groups = attentions.shape[1] // kv_heads
    keep = min(length, budget)
    window_start = length - min(window, keep)
    kept = []
    for layer in range(attentions.shape[0]):
        per_head = []
        for head in range(kv_heads):
            summed = attentions[layer, head * groups:(head + 1) * groups, length - min(window, length):].sum((0, 1))
            half = kernel // 2
            pooled = [float(summed[max(0, p - half): p + half + 1].mean()) for p in range(length)]
            outside = sorted(range(window_start), key=lambda p: -pooled[p])[: keep - (length - window_start)]
            per_head.append(sorted(outside + list(range(window_start, length))))
        kept.append(per_head)
    return kept


@pytest.mark.parametrize("budget", [5, 9])
def test_snapkv_keeps_the_most_attended_positions_of_each_kv_head_and_the_window(budget):
    model = plain_model(preset="tiny-qwen2")  # grouped-query attention: several query heads per KV head
    prompts = random_prompts(3, 6, 14, seed=2)
    full = model.prefill(prompts).cache
    with SnapKV(budget, window=3, kernel=3)(model):
        pressed = model.prefill(prompts).cache
    valid = model.make_batch(prompts).attention_mask
    for row, prompt in enumerate(prompts):
        real = real_columns(valid[row])
        expected = snapkv_reference(model, prompt, budget, window=3, kernel=3)
        for layer in range(N_LAYERS):
            found = kept_columns_by_key(pressed, full, layer, row)
            assert found == [[real[p] for p in head] for head in expected[layer]]


@torch.no_grad()
def reference_scores_without_dropped_positions(model, prompt, response, kept):
    """Log-probability of `response` after `prompt` from a full forward in which the response's tokens see only
    the `kept` prompt positions (all layers, the same for every head), and the prompt sees itself causally."""
    sequence = [model.bos_token_id] + list(prompt) + list(response)
    prompt_length = len(prompt) + 1
    ids = torch.tensor([sequence])
    hidden = model.embed_ids(ids)  # [1, L, hidden]
    length = len(sequence)
    allowed = torch.ones(length, length, dtype=torch.bool).tril()
    dropped = [p for p in range(prompt_length) if p not in kept]
    allowed[prompt_length:, dropped] = False  # generated tokens never see the dropped prompt positions
    mask = _additive(allowed[None])
    positions = torch.arange(length)[None]
    embeddings = model.decoder.rotary_emb(hidden, positions)
    for layer in model.layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=embeddings)
    log_probs = torch.log_softmax(model.causal_lm.lm_head(model.decoder.norm(hidden)).float(), -1)[0]
    # the last prompt token predicts the first response token, and so on
    return sum(float(log_probs[prompt_length - 1 + t, token]) for t, token in enumerate(response))


def test_decoding_on_a_pressed_cache_equals_a_forward_that_hides_the_dropped_positions():
    """Kept keys keep their rotary positions and new tokens continue from the uncompressed prompt length, so
    teacher-forced scores on a pressed cache equal the masked full forward, with left padding in the batch."""
    model = plain_model()
    prompts = random_prompts(3, 4, 12, seed=3)
    responses = [[[501, 502, 503], [777, 5]] for _ in prompts]
    budget, sinks = 5, 2
    with StreamingLLM(budget, sinks=sinks)(model):
        scores = candidate_log_probs(model, prompts, responses)  # [P, C]
    for row, prompt in enumerate(prompts):
        length = len(prompt) + 1
        keep = min(budget, length)
        kept = set(range(min(sinks, keep))) | set(range(length - (keep - min(sinks, keep)), length))
        for column, response in enumerate(responses[row]):
            expected = reference_scores_without_dropped_positions(model, prompt, response, kept)
            assert abs(float(scores[row, column]) - expected) <= 1e-4


def test_a_press_on_an_earn_model_compresses_only_the_layers_below_k():
    model = earn_model(earn_k=2)
    prompts = random_prompts(2, 8, 12, seed=4)
    full = model.prefill(prompts).cache
    with SnapKV(0.5, window=2)(model):
        pressed = model.prefill(prompts).cache
    lengths = model.make_batch(prompts).attention_mask.sum(-1)
    for layer in range(N_LAYERS):
        if layer < 2:
            assert pressed.shared_length(layer) == int(torch.ceil(lengths.max() * 0.5))
        else:  # the registers, untouched
            torch.testing.assert_close(pressed.shared_keys[layer], full.shared_keys[layer], rtol=0, atol=0)
    assert sum(pressed.layer_bytes()) < sum(full.layer_bytes())


def test_press_settings_name_what_is_wrong():
    assert press_from_settings(None, None) is None
    assert isinstance(press_from_settings("snapkv", 0.3), SnapKV)
    with pytest.raises(ValueError, match="kv_press must be one of streaming_llm, snapkv"):
        press_from_settings("h2o", 0.3)
    with pytest.raises(ValueError, match="needs kv_press_budget"):
        press_from_settings("streaming_llm", None)
    for budget in (0, -0.5, "half"):
        with pytest.raises(ValueError, match="a press budget must be > 0"):
            press_from_settings("snapkv", budget)
    # a count beyond a prompt keeps all of it: prompts of one batch differ in length
    assert StreamingLLM(100).keep(0, torch.ones(1, 4, dtype=torch.bool), 1).all()


def test_skip_layers_scores_equal_a_forward_whose_later_layers_see_only_the_last_prompt_token():
    """A plain model with prompt_layers = k: layers >= k see the last prompt token and the response only, which is
    EARN's definition with no registers (the last prompt token stands in for the suffix register)."""
    model = plain_model()
    prompts = random_prompts(3, 4, 10, seed=5)
    responses = [[[301, 302], [905, 906]] for _ in prompts]
    model.prompt_layers = 2
    scores = candidate_log_probs(model, prompts, responses)  # [P, C]
    model.prompt_layers = None
    reference = plain_model()
    reference.earn_k = 2  # the definition's masks at k = 2 (EARNConfig refuses k < N without registers)
    for row, prompt in enumerate(prompts):
        for column, response in enumerate(responses[row]):
            batch = reference.make_batch([prompt], [response], add_eos=False)
            log_probs = torch.log_softmax(masked_reference_logits(reference, batch).float(), -1)[0]  # [K, vocab]
            expected = sum(float(log_probs[t, token]) for t, token in enumerate(response))  # K = last prompt + resp
            assert abs(float(scores[row, column]) - expected) <= 1e-4
    full = model.prefill(prompts).cache
    model.prompt_layers = 2
    skipped = model.prefill(prompts).cache
    assert [skipped.shared_length(i) for i in range(N_LAYERS)] == [full.shared_length(0)] * 2 + [1] * 2
