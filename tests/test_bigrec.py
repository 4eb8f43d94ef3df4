"""BIGRec and EARNBIGRec as RecBole models, on a tiny random Llama and a small slice of ml-100k."""

import os

import pytest
import torch

from recbole_earn.config import Config
from recbole_earn.data.prompts import quote_title
from recbole_earn.llm import pooled_beam_search
from recbole_earn.model.score_blend import ScoreBlend, blend_scores
from recbole_earn.model.trained_setup import SETUP_KEY
from recbole_earn.quick_start import prepare_data, run_earn
from recbole_earn.trainer import few_shot_loader

from llm_helpers import teacher_forced_score
from recommender_helpers import (assert_checkpoint_restores_scores, build, device_keys, first_batch, reference_padded,
                                 saved_sasrec_scores, train)


def bigrec_config(mini, model="EARNBIGRec", **overrides):
    values = dict(mini["config"])
    values.update(
        llm_path="tiny-llama",
        epochs=1,
        train_sample_num=48,
        train_batch_size=8,
        eval_batch_size=16,
        learning_rate=0.003,
        interaction_verb="watched",
    )
    values.update(overrides)
    return Config(model=model, dataset=mini["dataset"], config_dict=values)


def test_training_lowers_the_loss(mini_ml100k, device):
    config = bigrec_config(mini_ml100k, **device_keys(device))
    model, train_data, _, _ = build(config)
    batch = first_batch(train_data, device)
    model.eval()
    with torch.no_grad():
        before = model.calculate_loss(batch).item()
    train(model, train_data, epochs=2, lr=0.003)  # two epochs of the few-shot sample: 48 examples, batches of 8
    with torch.no_grad():
        after = model.calculate_loss(batch).item()
    assert after < before


def test_full_sort_run_returns_recbole_metrics(mini_ml100k, device):
    values = dict(mini_ml100k["config"], llm_path="tiny-llama", epochs=1, train_sample_num=32, eval_batch_size=32,
                  **device_keys(device))
    result = run_earn(model="EARNBIGRec", dataset=mini_ml100k["dataset"], config_dict=values)
    for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
        assert 0.0 <= result["test_result"][metric] <= 1.0
    checkpoint = [name for name in os.listdir(values["checkpoint_dir"]) if name.startswith("EARNBIGRec-")]
    assert len(checkpoint) == 1
    # Only what trains is saved: LoRA weights and registers, not the backbone.
    assert os.path.getsize(os.path.join(values["checkpoint_dir"], checkpoint[0])) < 2_000_000


def test_sampled_evaluation(mini_ml100k, device):
    values = dict(
        mini_ml100k["config"],
        llm_path="tiny-llama",
        epochs=1,
        train_sample_num=16,
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni20"},
        **device_keys(device),
    )
    result = run_earn(model="BIGRec", dataset=mini_ml100k["dataset"], config_dict=values, saved=False)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


def test_exact_title_is_grounded_first(mini_ml100k, device):
    model, _, _, _ = build(bigrec_config(mini_ml100k, **device_keys(device)))
    model.eval()
    titles = model.item_titles.titles
    unique = [i for i in range(1, len(titles)) if titles.count(titles[i]) == 1][:5]
    scores = model.ground([quote_title(titles[i]) for i in unique])  # [5, n_items]
    assert scores[:, 0].eq(float("-inf")).all()
    assert scores.argmax(dim=1).tolist() == unique
    assert model.item_embeddings().device.type == device.type
    model.to(device)  # a move (as quick_start.build_model's) drops what was cached from the weights on the old one
    assert model._item_embeddings is None


def test_earn_with_k_equal_n_matches_bigrec(mini_ml100k, device):
    plain_config = bigrec_config(mini_ml100k, model="BIGRec", **device_keys(device))
    earn_config = bigrec_config(
        mini_ml100k, model="EARNBIGRec", earn_k=4, n_prefix_registers=0, n_suffix_registers=0, **device_keys(device)
    )  # tiny-llama has 4 layers
    plain, train_data, _, test_data = build(plain_config)
    earn, _, _, _ = build(earn_config)
    assert earn.llm.earn_k == earn.llm.num_layers == plain.llm.earn_k
    plain.eval(), earn.eval()
    batch = first_batch(train_data, device)
    torch.testing.assert_close(earn.calculate_loss(batch), plain.calculate_loss(batch), rtol=0, atol=1e-6)
    users = first_batch(test_data, device)
    torch.testing.assert_close(earn.full_sort_predict(users), plain.full_sort_predict(users), rtol=0, atol=1e-5)


def test_checkpoint_round_trip_reproduces_scores(mini_ml100k, tmp_path, device):
    config = bigrec_config(mini_ml100k, **device_keys(device))
    model, train_data, _, test_data = build(config)
    train(model, train_data)
    state = model.trained_state_dict()
    assert any("lora_" in name for name in state) and "llm.registers" in state
    assert all(parameter.requires_grad for name, parameter in model.named_parameters() if name in state)
    assert_checkpoint_restores_scores(config, model, first_batch(test_data, device), tmp_path / "checkpoint.pth")


def test_checkpoint_from_other_settings_is_refused(mini_ml100k):
    model, _, _, _ = build(bigrec_config(mini_ml100k))
    state = model.trained_state_dict()
    del state["llm.registers"]
    with pytest.raises(RuntimeError, match=r"missing \['llm.registers'\]"):
        model.load_trained_state_dict(state)


@pytest.mark.parametrize("title_search", ["constrained", "grounding"])
def test_cold_user_with_empty_history_gets_a_prompt_and_scores(mini_ml100k, device, title_search):
    model, _, _, test_data = build(bigrec_config(mini_ml100k, title_search=title_search, **device_keys(device)))
    model.eval()
    users = first_batch(test_data, device)[[0, 1]]
    users[model.ITEM_SEQ_LEN] = torch.tensor([0, users[model.ITEM_SEQ_LEN][1].item()], device=device)
    assert model.prompts(users)[0] == model.prompter.head_ids + model.prompter.empty_history_ids + model.prompter.tail_ids
    scores = model.full_sort_predict(users)
    assert scores.shape == (2, model.n_items)
    reached = torch.isfinite(scores[:, 1:]).sum(1)  # [2]
    expected = model.num_beams if title_search == "constrained" else model.n_items - 1  # grounding ranks all
    assert reached.ge(expected).all()  # (two items with one title share a beam)


def test_dataset_without_titles_is_a_clear_error(mini_ml100k):
    config = bigrec_config(mini_ml100k, TITLE_FIELD="no_such_field")
    with pytest.raises(ValueError, match=r"no 'no_such_field' field .*TITLE_FIELD"):
        build(config)


def test_topk_larger_than_the_catalog_is_a_clear_error(mini_ml100k):
    config = bigrec_config(mini_ml100k, topk=[10, 100000], title_search="grounding")  # constrained: num_beams
    with pytest.raises(ValueError, match=r"topk \[10, 100000\] asks for more items than the catalog"):
        build(config)


def test_titles_are_the_best_hypothesis_of_generates_beam_search(mini_ml100k):
    model, _, _, test_data = build(bigrec_config(mini_ml100k, length_penalty=0.5))
    model.eval()
    users = first_batch(test_data)
    out = pooled_beam_search(model.llm, model.prompts(users), num_beams=model.num_beams,
                             max_new_tokens=model.max_new_tokens, length_penalty=0.5)
    eos = model.llm.eos_token_id
    expected = [model.tokenizer.decode([t for t in ids[:n] if t != eos], skip_special_tokens=True).strip()
                for ids, n in zip(out.sequences[:, 0].tolist(), out.lengths[:, 0].tolist())]
    assert model.generate_titles(users) == expected


@pytest.mark.parametrize("penalty", ["long", True, None])
def test_a_length_penalty_that_is_not_a_number_is_refused(mini_ml100k, penalty):
    with pytest.raises(ValueError, match="length_penalty must be a number"):
        build(bigrec_config(mini_ml100k, length_penalty=penalty))


def test_few_shot_sample_is_fixed_and_sized(mini_ml100k):
    config = bigrec_config(mini_ml100k)
    _, train_data, _, _ = prepare_data(config)
    first = few_shot_loader(train_data, 48, seed=3)
    again = few_shot_loader(train_data, 48, seed=3)
    other = few_shot_loader(train_data, 48, seed=4)
    assert len(first._dataset) == 48 < len(train_data._dataset)
    items = lambda loader: loader._dataset.inter_feat[config["ITEM_ID_FIELD"]].tolist()  # noqa: E731
    assert items(first) == items(again) != items(other)
    assert few_shot_loader(train_data, 0, seed=3) is train_data


# -- constrained title search ------------------------------------------------------------------------------------
def test_constrained_beams_are_real_items_outside_the_users_past(mini_ml100k, device):
    model, _, _, test_data = build(bigrec_config(mini_ml100k, exclude_history_items=True, **device_keys(device)))
    model.eval()
    users = first_batch(test_data, device)
    scores = model.full_sort_predict(users)  # [B, n_items]
    assert scores.device.type == device.type and not torch.isfinite(scores[:, 0]).any()
    for row, past in enumerate(model.seen_items(users)):
        assert not torch.isfinite(scores[row, [item + 1 for item in past]]).any()
        assert torch.isfinite(scores[row]).sum() >= model.num_beams  # every beam reaches an item (or two: one title)


def test_constrained_scores_are_each_titles_log_probability(mini_ml100k, device):
    model, _, _, test_data = build(bigrec_config(mini_ml100k, **device_keys(device)))
    model.eval()
    users = first_batch(test_data, device)[[0, 1]]
    eos = model.llm.eos_token_id
    title = lambda item: model.prompter.item_ids[item] + [eos]  # noqa: E731  the response the model learns
    prompts = model.prompts(users)
    scores = model.full_sort_predict(users)  # [2, n_items]
    for row in range(2):
        items = torch.isfinite(scores[row]).nonzero().view(-1)[:5].tolist()
        expected = model.llm.response_log_probs([prompts[row]] * len(items), [title(i) for i in items])
        torch.testing.assert_close(scores[row, items], expected, atol=1e-4, rtol=1e-4)

    rows = users[[0, 0, 1]]  # sampled evaluation: any item, reached by a beam or not
    rows[model.ITEM_ID] = torch.tensor([1, 2, 3], device=device)
    expected = model.llm.response_log_probs([prompts[0], prompts[0], prompts[1]], [title(1), title(2), title(3)])
    torch.testing.assert_close(model.predict(rows), expected, atol=1e-4, rtol=1e-4)


def test_popularity_prior_adds_the_weighted_log_share_of_training_answers(mini_ml100k, device):
    config = bigrec_config(mini_ml100k, **device_keys(device))
    plain, _, _, test_data = build(config)
    prior, _, _, _ = build(bigrec_config(mini_ml100k, popularity_prior_weight=2.0, **device_keys(device)))
    prior.load_trained_state_dict(plain.trained_state_dict())
    plain.eval(), prior.eval()
    assert (plain.ranking_label(), prior.ranking_label()) == ("LLM", "LLM + 2 x log popularity")
    rows = first_batch(test_data, device)[[0, 0, 1]]
    rows[plain.ITEM_ID] = torch.tensor([1, 2, 3], device=device)
    _, train_data, _, _ = prepare_data(config)  # the whole training split (build's loader is the few-shot sample)
    counts = torch.bincount(train_data._dataset.inter_feat["item_id"], minlength=plain.n_items).float()[1:] + 1.0
    share = (counts / counts.sum()).log()[[0, 1, 2]].to(device)  # items 1, 2, 3
    torch.testing.assert_close(prior.predict(rows) - plain.predict(rows), 2.0 * share, atol=1e-4, rtol=1e-4)


def test_trie_normalised_scores_are_each_titles_probability_among_the_catalogs(mini_ml100k, device):
    model, _, _, test_data = build(bigrec_config(mini_ml100k, beam_normalise="trie", **device_keys(device)))
    model.eval()
    users = first_batch(test_data, device)[[0]]
    scores = model.full_sort_predict(users)[0]  # [n_items]
    trie = model.item_trie.trie
    prompt, eos = model.prompts(users)[0], model.llm.eos_token_id
    for item in torch.isfinite(scores).nonzero().view(-1)[:4].tolist():
        title = model.prompter.item_ids[item] + [eos]
        assert scores[item].item() == pytest.approx(teacher_forced_score(model.llm, prompt, title, trie, "trie"),
                                                    abs=1e-4)


def test_trie_loss_is_the_mean_trie_normalised_title_loss_and_trains_lora(mini_ml100k):
    model, train_data, _, _ = build(bigrec_config(mini_ml100k, loss_normalise="trie", beam_normalise="trie",
                                                  lora_dropout=0.0))
    rows = first_batch(train_data)[[0, 1, 2]]
    loss = model.calculate_loss(rows)
    eos, trie = model.llm.eos_token_id, model.item_trie.trie
    titles = [model.prompter.item_ids[item] + [eos] for item in rows[model.ITEM_ID].tolist()]
    expected = -sum(teacher_forced_score(model.llm, prompt, title, trie, "trie")
                    for prompt, title in zip(model.prompts(rows), titles)) / sum(len(title) for title in titles)
    assert loss.item() == pytest.approx(expected, abs=1e-4)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora" in n)


def test_unknown_normaliser_or_trie_loss_without_the_trie_is_refused(mini_ml100k):
    with pytest.raises(ValueError, match="beam_normalise must be one of vocabulary, trie, got 'softmax'"):
        build(bigrec_config(mini_ml100k, beam_normalise="softmax"))
    with pytest.raises(ValueError, match="loss_normalise: trie needs the catalog's title trie.*--title_search="
                                         "constrained"):
        build(bigrec_config(mini_ml100k, loss_normalise="trie", title_search="grounding", num_beams=4))


def test_unknown_title_search_or_too_few_beams_is_refused(mini_ml100k):
    with pytest.raises(ValueError, match="title_search must be one of constrained, grounding, got 'nearest'"):
        build(bigrec_config(mini_ml100k, title_search="nearest"))
    with pytest.raises(ValueError, match=r"larger than num_beams=4.*Use --num_beams=20"):
        build(bigrec_config(mini_ml100k, num_beams=4))
    build(bigrec_config(mini_ml100k, num_beams=4, title_search="grounding"))  # grounding ranks every item


# -- grounding options: popularity and a conventional model's scores ---------------------------------------------
def test_popularity_gamma_moves_popular_items_up(mini_ml100k, device):
    config = bigrec_config(mini_ml100k, model="BIGRec", popularity_gamma=1.0, **device_keys(device))
    model, _, _, test_data = build(config)
    model.eval()
    _, train_data, _, _ = prepare_data(config)
    counts = torch.bincount(train_data._dataset.inter_feat["item_id"], minlength=model.n_items).float()
    # training split, top item = 1; the buffer followed the model to its device
    torch.testing.assert_close(model.popularity, (counts / counts.max()).to(device))

    texts = model.generate_titles(first_batch(test_data, device))
    adjusted = model.ground(texts)[:, 1:]  # [B, n_items - 1]
    model.gamma = 0.0
    plain = model.ground(texts)[:, 1:]
    popularity = model.popularity[1:]
    torch.testing.assert_close(adjusted, plain / (1.0 + popularity))  # distance / (1 + popularity)^1
    top = popularity.argmax()
    rank = lambda scores: (scores > scores[:, top : top + 1]).sum(dim=1)  # noqa: E731  items above the top one
    assert (rank(adjusted) <= rank(plain)).all() and rank(adjusted).sum() < rank(plain).sum()
    top10_popularity = lambda scores: popularity[scores.topk(10).indices].mean()  # noqa: E731
    assert top10_popularity(adjusted) > top10_popularity(plain)


def test_blend_weight_zero_is_the_llm_alone(mini_ml100k, sasrec_checkpoint, device):
    plain, _, _, test_data = build(bigrec_config(mini_ml100k, model="BIGRec", **device_keys(device)))
    blended, _, _, _ = build(
        bigrec_config(mini_ml100k, model="BIGRec", blend_model_checkpoint=sasrec_checkpoint, blend_weight=0.0,
                      **device_keys(device))
    )
    plain.eval(), blended.eval()
    users = first_batch(test_data, device)
    torch.testing.assert_close(blended.full_sort_predict(users), plain.full_sort_predict(users), rtol=0, atol=0)
    assert blended.ranking_label() == plain.ranking_label() == "LLM"


def test_blend_weight_one_ranks_as_the_conventional_model(mini_ml100k, sasrec_checkpoint, device):
    config = bigrec_config(mini_ml100k, model="BIGRec", blend_model_checkpoint=sasrec_checkpoint, blend_weight=1.0,
                           **device_keys(device))
    model, _, _, test_data = build(config)
    model.eval()
    assert next(model.blend.model.parameters()).device.type == device.type  # loaded where the host runs
    users = first_batch(test_data, device)
    scores = model.full_sort_predict(users)  # [B, n_items]
    reference = saved_sasrec_scores(sasrec_checkpoint, config, users)[:, 1:]  # [B, n_items - 1]
    assert scores[:, 0].eq(float("-inf")).all()
    order = reference.argsort(dim=1)
    ours, theirs = scores[:, 1:].gather(1, order), reference.gather(1, order)  # both ascending by SASRec
    steps = theirs.diff(dim=1) / (theirs[:, -1:] - theirs[:, :1])  # SASRec's steps on the 0-1 scale of the blend
    assert (ours.diff(dim=1) >= 0).all()  # SASRec's order, ties included
    assert (ours.diff(dim=1)[steps == 0] == 0).all()
    assert (steps[ours.diff(dim=1) == 0] < 1e-6).all()  # merged only where float32 cannot tell them apart
    assert model.ranking_label() == "0 x LLM + 1 x SASRec"

    model.blend.weight = 0.3
    llm = model.llm_scores(users)
    torch.testing.assert_close(model.full_sort_predict(users), blend_scores(llm, reference_padded(reference), 0.3))
    assert model.ranking_label() == "0.7 x LLM + 0.3 x SASRec"


def test_blend_is_scale_free_and_leaves_padding_out(device):
    torch.manual_seed(0)
    llm = reference_padded(-torch.rand(3, 20) * 40.0).to(device)  # [3, 21]: negative distances
    other = reference_padded(torch.randn(3, 20)).to(device)  # [3, 21]: logits
    blended = blend_scores(llm, other, 0.4)
    torch.testing.assert_close(blend_scores(llm * 0.01 - 3.0, other * 1000.0 + 5.0, 0.4), blended)
    assert blended[:, 0].eq(float("-inf")).all() and blended[:, 1:].min() >= 0 and blended[:, 1:].max() <= 1
    assert torch.equal(blend_scores(llm, other, 0.0)[:, 1:].argsort(), llm[:, 1:].argsort())


def test_items_no_beam_reached_count_as_the_lowest_beam_in_a_blend():
    inf = float("inf")
    llm = torch.tensor([[-inf, -1.0, -3.0, -inf]])  # constrained beams reached items 1 and 2
    other = torch.tensor([[-inf, 0.0, 0.0, 2.0]])
    torch.testing.assert_close(blend_scores(llm, other, 0.5), torch.tensor([[-inf, 0.5, 0.0, 0.5]]),
                               rtol=0, atol=1e-12)


def test_checkpoint_of_a_blended_bigrec_holds_no_blend_tensors(mini_ml100k, sasrec_checkpoint, tmp_path, device):
    config = bigrec_config(mini_ml100k, model="BIGRec", blend_model_checkpoint=sasrec_checkpoint, blend_weight=0.5,
                           **device_keys(device))
    model, train_data, _, test_data = build(config)
    sasrec_names = set(model.blend.model.state_dict())
    assert not any(parameter.requires_grad for parameter in model.blend.model.parameters())
    train(model, train_data)
    assert not model.blend.model.training  # model.train() leaves it in eval mode
    state = model.trained_state_dict()
    assert set(state) - {SETUP_KEY} == model.trainable_names()
    assert not any(name.endswith(sasrec) or name.startswith("blend") for name in state for sasrec in sasrec_names)
    assert_checkpoint_restores_scores(config, model, first_batch(test_data, device), tmp_path / "checkpoint.pth")


def test_missing_or_foreign_blend_checkpoint_is_refused(mini_ml100k, tmp_path):
    missing = str(tmp_path / "SASRec-none.pth")
    with pytest.raises(FileNotFoundError, match=r"SASRec-none.pth does not exist.*run_earn.py --model=SASRec"):
        build(bigrec_config(mini_ml100k, model="BIGRec", blend_model_checkpoint=missing))

    config = bigrec_config(mini_ml100k, model="BIGRec")
    _, train_data, _, _ = prepare_data(config)
    dataset = train_data._dataset
    not_torch, weights_only = tmp_path / "notes.pth", tmp_path / "weights.pth"
    not_torch.write_text("not a checkpoint")
    torch.save({"item_embedding.weight": torch.zeros(3, 2)}, weights_only)
    for path in (not_torch, weights_only):
        config["blend_model_checkpoint"] = str(path)
        with pytest.raises(ValueError, match=rf"{path.name} is not a RecBole checkpoint"):
            ScoreBlend.from_config(config, dataset)


def test_blend_checkpoint_of_another_dataset_or_model_is_refused(mini_ml100k, sasrec_checkpoint, tmp_path, device):
    config = bigrec_config(mini_ml100k, model="BIGRec", blend_model_checkpoint=sasrec_checkpoint, **device_keys(device))
    _, train_data, _, _ = prepare_data(config)
    dataset = train_data._dataset

    def refused(edit, match):
        checkpoint = torch.load(sasrec_checkpoint, weights_only=False)
        edit(checkpoint)
        config["blend_model_checkpoint"] = str(tmp_path / "edited.pth")
        torch.save(checkpoint, config["blend_model_checkpoint"])
        with pytest.raises(ValueError, match=match):
            ScoreBlend.from_config(config, dataset)

    refused(lambda c: c["config"].__setitem__("dataset", "ml-100k"), r"edited.pth was trained on dataset 'ml-100k'")
    grown = lambda c: c["state_dict"].__setitem__(  # noqa: E731  one item more than this dataset has
        "item_embedding.weight", torch.zeros(dataset.item_num + 1, 16)
    )
    refused(grown, rf"does not fit dataset 'ml-mini' .*item_embedding.weight is \[{dataset.item_num + 1}, 16\]")
    refused(lambda c: c["config"].__setitem__("model", "EARNBIGRec"), r"holds EARNBIGRec, an LLM recommender")

    config["blend_model_checkpoint"], config["blend_weight"] = sasrec_checkpoint, 1.5
    with pytest.raises(ValueError, match=r"blend_weight must be in \[0, 1\]"):
        ScoreBlend.from_config(config, dataset)
