"""LCRec and EARNLCRec as RecBole models, on a tiny random Llama and a small slice of ml-100k."""

import json
import os

import pytest
import torch

from recbole_earn.config import Config
from recbole_earn.data.item_text import item_descriptions
from recbole_earn.indexing.collaborative import matrix_digest, user_item_matrix
from recbole_earn.indexing.item_index import IndexSettings, build_item_index, codes_from_embeddings
from recbole_earn.llm.kv_press import SnapKV
from recbole_earn.model.lcrec import index_folder, index_settings
from recbole_earn.model.score_blend import blend_scores
from recbole_earn.model.trained_setup import SETUP_KEY
from recbole_earn.quick_start import prepare_data, run_earn

from recommender_helpers import (assert_checkpoint_restores_scores, build, device_keys, first_batch, reference_padded,
                                 saved_sasrec_scores, train)


def lcrec_values(mini, **overrides):
    """Config keys for a quick LC-Rec run on the mini dataset: tiny-llama, a small index, 10 beams."""
    values = dict(mini["config"])
    values.update(
        llm_path="tiny-llama",
        epochs=1,
        train_sample_num=48,
        train_batch_size=8,
        eval_batch_size=16,
        learning_rate=0.003,
        num_beams=10,
        topk=[5, 10],
        valid_metric="NDCG@10",
        index_levels=3,
        index_codebook_size=16,
        index_epochs=20,
        item_text_fields=["release_year", "class"],
        popularity_prior_weight=0.0,  # scores are the LLM's own log-probabilities unless a test asks for the prior
    )
    values.update(overrides)
    return values


def lcrec_config(mini, model="EARNLCRec", **overrides):
    return Config(model=model, dataset=mini["dataset"], config_dict=lcrec_values(mini, **overrides))


def test_every_item_gets_a_unique_id_and_the_index_round_trips(mini_ml100k):
    config = lcrec_config(mini_ml100k)
    model, train_data, _, _ = build(config)
    codes = [tuple(model.index.codes[item]) for item in range(1, model.n_items)]
    assert len(set(codes)) == len(codes)
    assert all(len(code) in (3, 4) for code in codes)
    assert model.trie.num_sequences == model.n_items - 1
    # Code tokens are real tokens of the model's tokenizer, one token each.
    item = 1
    text = model.index.item_text(item)
    assert model.tokenizer(text, add_special_tokens=False)["input_ids"] == model.code_ids[item]

    folder = index_folder(config)
    files = [name for name in os.listdir(folder) if ".item-index." in name]
    assert len(files) == 1
    with open(os.path.join(folder, files[0]), encoding="utf-8") as handle:
        stored = json.load(handle)
    assert 0.0 <= stored["stats"]["collision_rate_nearest"] <= 1.0
    assert len(stored["stats"]["codebook_usage"]) == 3

    def must_not_embed(texts):
        raise AssertionError("the saved index should have been reused")

    dataset = train_data._dataset
    texts = item_descriptions(dataset, model.item_titles.titles, config["item_text_fields"])
    assert texts[1].startswith(model.item_titles.titles[1] + "; release_year: ")
    interactions = user_item_matrix(model.training_items, model.n_items)[:, 1:]
    again = build_item_index(texts, list(dataset.field2id_token[dataset.iid_field]), must_not_embed,
                             index_settings(config), folder, config["dataset"], str(config["llm_path"]),
                             collaborative=must_not_embed, interactions_digest=matrix_digest(interactions))
    assert again.codes == model.index.codes
    assert stored["key"]["collaborative_weight"] == config["index_collaborative_weight"] > 0


def test_identical_items_are_told_apart_by_an_extra_code():
    torch.manual_seed(0)
    embeddings = torch.randn(40, 16)
    embeddings[10:20] = embeddings[10]  # ten identical items
    index = codes_from_embeddings(embeddings, IndexSettings(levels=2, codebook_size=8, epochs=5, seed=1))
    codes = [tuple(row) for row in index.codes[1:]]
    assert len(set(codes)) == 40
    assert index.n_extra >= 10 and index.stats["collision_rate_sinkhorn"] > 0
    prefixes = {code[:2] for code in codes[10:20]}
    assert len(prefixes) == 1  # identical embeddings share the RQ codes; the extra code separates them


def test_constrained_decoding_only_yields_catalog_items(mini_ml100k, device_dtype):
    device, dtype = device_dtype
    model, _, _, test_data = build(lcrec_config(mini_ml100k, **device_keys(device, llm_dtype=dtype)))
    model.eval()
    users = first_batch(test_data, device)
    for seed in range(3):  # random logits: large random rows for the code tokens
        torch.manual_seed(seed)
        with torch.no_grad():
            model.llm.added_tokens.input_rows.normal_(std=5.0)
        scores = model.full_sort_predict(users)  # [B, n_items]
        assert scores.device.type == device.type
        finite = torch.isfinite(scores)
        assert not finite[:, 0].any()
        assert finite.sum(1).eq(model.num_beams).all()  # every beam is a distinct real item


def test_beams_leave_out_the_users_past_items(mini_ml100k, device_dtype):
    device, dtype = device_dtype
    model, _, _, test_data = build(lcrec_config(mini_ml100k, exclude_history_items=True,
                                                **device_keys(device, llm_dtype=dtype)))
    model.eval()
    users = first_batch(test_data, device)
    seen = model.seen_items(users)
    for row, history in enumerate(model.histories(users)):  # the prompt's history is part of what was seen
        assert {item - 1 for item in history} <= set(seen[row])
    scores = model.full_sort_predict(users)  # [B, n_items]
    for row, items in enumerate(seen):
        assert not torch.isfinite(scores[row, [item + 1 for item in items]]).any()
        assert torch.isfinite(scores[row]).sum() == model.num_beams  # every beam still reaches an item


def test_code_tokens_start_near_the_text_of_their_items(mini_ml100k, device_dtype):
    device, dtype = device_dtype
    keys = device_keys(device, llm_dtype=dtype)
    by_text, _, _, _ = build(lcrec_config(mini_ml100k, code_token_init="item_text", **keys))
    by_mean, _, _, _ = build(lcrec_config(mini_ml100k, code_token_init="mean", **keys))
    rows = by_text.llm.added_tokens.input_rows  # [codes, hidden]
    vocabulary = by_text.llm.causal_lm.get_input_embeddings().weight[: by_text.llm.added_tokens.first_id]
    assert rows.device.type == device.type and rows.dtype == torch.float32  # trained rows: float32, like LoRA's
    assert torch.unique(by_mean.llm.added_tokens.input_rows, dim=0).shape[0] == 1  # one shared row
    used = sorted({offset for item in range(1, by_text.n_items) for offset in by_text.index.item_token_offsets(item)})
    assert torch.unique(rows[used], dim=0).shape[0] == len(used)  # every used code starts apart
    norms = [weights.float().norm(dim=-1).mean() for weights in (rows[used], vocabulary)]
    torch.testing.assert_close(*norms, rtol=1e-3 if dtype == "float32" else 1e-2, atol=0)  # bf16: rounded rows
    with pytest.raises(ValueError, match="code_token_init must be one of"):
        build(lcrec_config(mini_ml100k, code_token_init="random"))


def test_training_lowers_the_loss(mini_ml100k, device):
    model, train_data, _, _ = build(lcrec_config(mini_ml100k, **device_keys(device)))
    batch = first_batch(train_data, device)
    model.eval()
    with torch.no_grad():
        model.task_generator.manual_seed(0)
        before = model.calculate_loss(batch).item()
    train(model, train_data, epochs=2, lr=0.003)
    with torch.no_grad():
        model.task_generator.manual_seed(0)
        after = model.calculate_loss(batch).item()
    assert after < before
    # What trains: LoRA, registers and the code tokens' rows, nothing of the frozen vocabulary.
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "llm.added_tokens.input_rows" in trained and "llm.registers" in trained
    assert not any("embed_tokens" in name or "lm_head" in name for name in trained)


def test_full_sort_run_returns_recbole_metrics(mini_ml100k, device):
    values = lcrec_values(mini_ml100k, train_sample_num=32, eval_batch_size=32, **device_keys(device))
    result = run_earn(model="EARNLCRec", dataset=mini_ml100k["dataset"], config_dict=values)
    for metric in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert 0.0 <= result["test_result"][metric] <= 1.0
    checkpoint = [name for name in os.listdir(values["checkpoint_dir"]) if name.startswith("EARNLCRec-")]
    assert len(checkpoint) == 1
    assert os.path.getsize(os.path.join(values["checkpoint_dir"], checkpoint[0])) < 2_000_000
    # the saved model evaluated again without training: the same test result
    again = run_earn(model="EARNLCRec", dataset=mini_ml100k["dataset"], config_dict=values,
                     checkpoint=os.path.join(values["checkpoint_dir"], checkpoint[0]))
    assert again["test_result"] == result["test_result"] and again["train_time_s"] == 0.0
    assert again["best_valid_score"] == result["best_valid_score"]


def test_earn_with_k_equal_n_matches_lcrec(mini_ml100k, device):
    keys = device_keys(device)
    plain, train_data, _, test_data = build(lcrec_config(mini_ml100k, model="LCRec", **keys))
    earn, _, _, _ = build(lcrec_config(mini_ml100k, earn_k=4, n_prefix_registers=0, n_suffix_registers=0, **keys))
    plain.eval(), earn.eval()
    batch = first_batch(train_data, device)
    plain.task_generator.manual_seed(0), earn.task_generator.manual_seed(0)
    torch.testing.assert_close(earn.calculate_loss(batch), plain.calculate_loss(batch), rtol=0, atol=1e-6)
    users = first_batch(test_data, device)
    torch.testing.assert_close(earn.full_sort_predict(users), plain.full_sort_predict(users), rtol=0, atol=1e-5)


def test_checkpoint_round_trip_reproduces_scores(mini_ml100k, tmp_path, device):
    config = lcrec_config(mini_ml100k, **device_keys(device))
    model, train_data, _, test_data = build(config)
    train(model, train_data)
    state = model.trained_state_dict()
    assert "llm.added_tokens.input_rows" in state and "llm.registers" in state
    assert state[SETUP_KEY]["item_index"] == model.index.digest()  # the codes its code-token rows were trained for
    # the reload builds with another seed: the item index does not depend on the run seed
    assert_checkpoint_restores_scores(config, model, first_batch(test_data, device), tmp_path / "checkpoint.pth")


def test_predict_scores_each_users_candidates_like_one_sequence_each(mini_ml100k, device):
    model, _, _, test_data = build(lcrec_config(mini_ml100k, **device_keys(device)))
    users = first_batch(test_data, device)
    # sampled evaluation's layout: several rows (candidate items) per user, users with different counts
    rows = torch.tensor([0, 0, 0, 1, 1, 0], device=device)
    interaction = users[rows]
    interaction[model.ITEM_ID] = torch.tensor([3, 7, 11, 5, 2, 9], device=device)
    expected = model.llm.response_log_probs(model.prompts(interaction),
                                            [model.code_ids[i] for i in interaction[model.ITEM_ID].tolist()])
    torch.testing.assert_close(model.predict(interaction), expected, rtol=1e-4, atol=1e-4)


def test_a_popularity_prior_adds_the_weighted_log_share_of_training_answers(mini_ml100k, device):
    """popularity_prior_weight w: an item's score is its code's log-probability + w * log((count + 1) / total),
    the count being its training answers, in full ranking (added code by code in the beams) and sampled."""
    config = lcrec_config(mini_ml100k, popularity_prior_weight=0.5, **device_keys(device))
    model, _, _, test_data = build(config)
    training_split = prepare_data(config)[1]._dataset  # the whole split (build's loader holds a sample)
    counts = torch.bincount(training_split.inter_feat[model.ITEM_ID], minlength=model.n_items)[1:] + 1.0
    share = 0.5 * (counts / counts.sum()).log().to(device)  # [n_items - 1]
    assert model.ranking_label() == "LLM + 0.5 x log popularity"
    model.eval()  # no LoRA dropout in the reference scores
    users = first_batch(test_data, device)
    scores = model.full_sort_predict(users)  # [B, n_items]
    rows, items = torch.isfinite(scores).nonzero(as_tuple=True)
    log_probs = model.llm.response_log_probs(model.prompts(users[rows]), [model.code_ids[i] for i in items.tolist()])
    torch.testing.assert_close(scores[rows, items], log_probs + share[items - 1], rtol=1e-4, atol=1e-4)
    interaction = users[torch.tensor([0, 0, 1], device=device)]
    interaction[model.ITEM_ID] = torch.tensor([3, 7, 5], device=device)
    sampled = model.llm.response_log_probs(model.prompts(interaction), [model.code_ids[i] for i in (3, 7, 5)])
    torch.testing.assert_close(model.predict(interaction), sampled + share[torch.tensor([2, 6, 4], device=device)],
                               rtol=1e-4, atol=1e-4)


def test_a_blend_mixes_the_beams_with_a_conventional_models_scores(mini_ml100k, sasrec_checkpoint, device):
    config = lcrec_config(mini_ml100k, blend_model_checkpoint=sasrec_checkpoint, blend_weight=0.3,
                          popularity_prior_weight=1.0, **device_keys(device))
    model, _, _, test_data = build(config)
    model.eval()
    users = first_batch(test_data, device)
    beams = model.llm_scores(users)  # [B, n_items]: num_beams finite per row
    assert (beams[:, 1:].isfinite().sum(dim=1) == config["num_beams"]).all()
    sasrec = reference_padded(saved_sasrec_scores(sasrec_checkpoint, config, users)[:, 1:])
    torch.testing.assert_close(model.full_sort_predict(users), blend_scores(beams, sasrec, 0.3))
    assert model.ranking_label() == "0.7 x (LLM + 1 x log popularity) + 0.3 x SASRec"

    # Sampled evaluation reads the blended full ranking at each candidate.
    rows = torch.tensor([0, 0, 1, 0], device=device)  # several candidates per user
    candidates = users[rows]
    candidates[model.ITEM_ID] = torch.tensor([3, 7, 5, 2], device=device)
    expected = model.full_sort_predict(users)[rows, candidates[model.ITEM_ID]]
    torch.testing.assert_close(model.predict(candidates), expected)

    model.blend.weight = 0.0
    torch.testing.assert_close(model.full_sort_predict(users), beams, rtol=0, atol=0)
    assert model.ranking_label() == "LLM + 1 x log popularity"


@pytest.mark.parametrize("weight", [-1.0, True])
def test_a_negative_or_boolean_popularity_prior_is_refused(mini_ml100k, weight):
    with pytest.raises(ValueError, match="popularity_prior_weight must be a number >= 0"):
        build(lcrec_config(mini_ml100k, popularity_prior_weight=weight))


def test_inference_compression_knobs_shrink_the_prompt_or_its_cache(mini_ml100k):
    """kv_press presses the prompt's KV after prefill (a smaller cache per user, rankings still of real items);
    inference_history_length writes only the last items into inference prompts, never into training ones."""
    plain, _, _, test_data = build(lcrec_config(mini_ml100k))
    pressed, _, _, _ = build(lcrec_config(mini_ml100k, kv_press="snapkv", kv_press_budget=0.5, kv_press_window=4))
    assert isinstance(pressed.llm.kv_press, SnapKV) and pressed.llm.kv_press.window == 4
    users = first_batch(test_data)
    for model in (plain, pressed):
        model.eval()
        model.reset_inference_stats()
        scores = model.full_sort_predict(users)
        assert int(torch.isfinite(scores).sum(-1).min()) == 10  # the beams still reach 10 real items per user
    assert pressed.kv_bytes_per_user() < plain.kv_bytes_per_user()

    short, _, _, _ = build(lcrec_config(mini_ml100k, inference_history_length=2))
    short.eval()
    histories = short.histories(users)
    assert short.prompts(users) == [short.seqrec_prompter.prompt_ids(history[-2:]) for history in histories]
    short.train()
    assert short.prompt_histories(users) == histories


def test_fixed_buffer_decoding_ranks_as_the_growing_cache(mini_ml100k):
    """decode_mode "slots" (what a GPU replays as a CUDA graph) gives the full ranking of the growing cache."""
    model, _, _, test_data = build(lcrec_config(mini_ml100k, decode_mode="slots"))
    assert model.llm.decode_mode == "slots"
    users = first_batch(test_data)
    model.eval()
    on_slots = model.full_sort_predict(users)
    model.llm.decode_mode = "growing"
    growing = model.full_sort_predict(users)
    assert torch.equal(torch.isfinite(on_slots), torch.isfinite(growing))
    torch.testing.assert_close(on_slots[torch.isfinite(growing)], growing[torch.isfinite(growing)])


@pytest.mark.parametrize("knobs,message", [
    ({"kv_press": "h2o", "kv_press_budget": 0.5}, "kv_press must be one of streaming_llm, snapkv"),
    ({"kv_press": "snapkv"}, "needs kv_press_budget"),
    ({"inference_history_length": 0}, "inference_history_length must be an integer >= 1"),
    ({"decode_mode": "compiled"}, "decode_mode must be one of auto, growing, slots, graph"),
    ({"decode_mode": "graph"}, "decode_mode='graph' needs a CUDA device"),
])
def test_bad_inference_compression_knobs_are_refused(mini_ml100k, knobs, message):
    with pytest.raises(ValueError, match=message):
        build(lcrec_config(mini_ml100k, **knobs))


def test_sampled_evaluation(mini_ml100k, device):
    values = lcrec_values(mini_ml100k, train_sample_num=16,
                          eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni20"},
                          **device_keys(device))
    result = run_earn(model="LCRec", dataset=mini_ml100k["dataset"], config_dict=values, saved=False)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


def test_topk_larger_than_the_beams_is_refused(mini_ml100k):
    with pytest.raises(ValueError, match=r"topk \[5, 20\] is larger than num_beams=10.*--num_beams=20"):
        build(lcrec_config(mini_ml100k, topk=[5, 20]))


def test_unknown_task_is_a_clear_error(mini_ml100k):
    with pytest.raises(ValueError, match=r"task_proportions has unknown tasks \['explain'\]"):
        build(lcrec_config(mini_ml100k, task_proportions={"seqrec": 1.0, "explain": 1.0}))


def test_trie_loss_trains_the_code_rows_of_every_task(mini_ml100k):
    config = lcrec_config(mini_ml100k, loss_normalise="trie", beam_normalise="trie",
                          task_proportions={"seqrec": 0.4, "item2index": 0.3, "index2item": 0.3})
    model, train_data, _, _ = build(config)
    loss = model.calculate_loss(first_batch(train_data))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.llm.added_tokens.input_rows.grad.abs().sum() > 0


def test_runs_in_bf16_share_the_float32_index(mini_ml100k):
    float32 = build(lcrec_config(mini_ml100k))[0]
    bf16 = build(lcrec_config(mini_ml100k, llm_dtype="bfloat16"))[0]
    assert bf16.index.digest() == float32.index.digest()
    assert len([name for name in os.listdir(index_folder(lcrec_config(mini_ml100k))) if ".item-index." in name]) == 1
