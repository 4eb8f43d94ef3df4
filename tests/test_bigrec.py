"""BIGRec and EARNBIGRec as RecBole models, on a tiny random Llama and a small slice of ml-100k."""

import os

import pytest
import torch

from recbole_earn.config import Config
from recbole_earn.data.prompts import quote_title
from recbole_earn.quick_start import prepare_data, run_earn
from recbole_earn.trainer import few_shot_loader

from recommender_helpers import assert_checkpoint_restores_scores, build, first_batch, train


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


def test_training_lowers_the_loss(mini_ml100k):
    config = bigrec_config(mini_ml100k)
    model, train_data, _, _ = build(config)
    batch = first_batch(train_data)
    model.eval()
    with torch.no_grad():
        before = model.calculate_loss(batch).item()
    train(model, train_data, epochs=2, lr=0.003)  # two epochs of the few-shot sample: 48 examples, batches of 8
    with torch.no_grad():
        after = model.calculate_loss(batch).item()
    assert after < before


def test_full_sort_run_returns_recbole_metrics(mini_ml100k):
    values = dict(mini_ml100k["config"], llm_path="tiny-llama", epochs=1, train_sample_num=32, eval_batch_size=32)
    result = run_earn(model="EARNBIGRec", dataset=mini_ml100k["dataset"], config_dict=values)
    for metric in ("recall@10", "ndcg@10", "recall@20", "ndcg@20"):
        assert 0.0 <= result["test_result"][metric] <= 1.0
    checkpoint = [name for name in os.listdir(values["checkpoint_dir"]) if name.startswith("EARNBIGRec-")]
    assert len(checkpoint) == 1
    # Only what trains is saved: LoRA weights and registers, not the backbone.
    assert os.path.getsize(os.path.join(values["checkpoint_dir"], checkpoint[0])) < 2_000_000


def test_sampled_evaluation(mini_ml100k):
    values = dict(
        mini_ml100k["config"],
        llm_path="tiny-llama",
        epochs=1,
        train_sample_num=16,
        eval_args={"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni20"},
    )
    result = run_earn(model="BIGRec", dataset=mini_ml100k["dataset"], config_dict=values, saved=False)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


def test_exact_title_is_grounded_first(mini_ml100k):
    model, _, _, _ = build(bigrec_config(mini_ml100k))
    model.eval()
    titles = model.item_titles.titles
    unique = [i for i in range(1, len(titles)) if titles.count(titles[i]) == 1][:5]
    scores = model.ground([quote_title(titles[i]) for i in unique])  # [5, n_items]
    assert scores[:, 0].eq(float("-inf")).all()
    assert scores.argmax(dim=1).tolist() == unique


def test_earn_with_k_equal_n_matches_bigrec(mini_ml100k):
    plain_config = bigrec_config(mini_ml100k, model="BIGRec")
    earn_config = bigrec_config(
        mini_ml100k, model="EARNBIGRec", earn_k=4, n_prefix_registers=0, n_suffix_registers=0
    )  # tiny-llama has 4 layers
    plain, train_data, _, test_data = build(plain_config)
    earn, _, _, _ = build(earn_config)
    assert earn.llm.earn_k == earn.llm.num_layers == plain.llm.earn_k
    plain.eval(), earn.eval()
    batch = first_batch(train_data)
    torch.testing.assert_close(earn.calculate_loss(batch), plain.calculate_loss(batch), rtol=0, atol=1e-6)
    users = first_batch(test_data)
    torch.testing.assert_close(earn.full_sort_predict(users), plain.full_sort_predict(users), rtol=0, atol=1e-5)


def test_checkpoint_round_trip_reproduces_scores(mini_ml100k, tmp_path):
    config = bigrec_config(mini_ml100k)
    model, train_data, _, test_data = build(config)
    train(model, train_data)
    state = model.state_dict()
    assert any("lora_" in name for name in state) and "llm.registers" in state
    assert all(parameter.requires_grad for name, parameter in model.named_parameters() if name in state)
    assert_checkpoint_restores_scores(config, model, first_batch(test_data), tmp_path / "checkpoint.pth")


def test_checkpoint_from_other_settings_is_refused(mini_ml100k):
    model, _, _, _ = build(bigrec_config(mini_ml100k))
    state = model.state_dict()
    del state["llm.registers"]
    with pytest.raises(RuntimeError, match=r"missing \['llm.registers'\]"):
        model.load_state_dict(state)


def test_cold_user_with_empty_history_gets_a_prompt_and_scores(mini_ml100k):
    model, _, _, test_data = build(bigrec_config(mini_ml100k))
    model.eval()
    users = first_batch(test_data)[[0, 1]]
    users[model.ITEM_SEQ_LEN] = torch.tensor([0, users[model.ITEM_SEQ_LEN][1].item()])
    assert model.prompts(users)[0] == model.prompter.head_ids + model.prompter.empty_history_ids + model.prompter.tail_ids
    scores = model.full_sort_predict(users)
    assert scores.shape == (2, model.n_items) and torch.isfinite(scores[:, 1:]).all()


def test_dataset_without_titles_is_a_clear_error(mini_ml100k):
    config = bigrec_config(mini_ml100k, TITLE_FIELD="no_such_field")
    with pytest.raises(ValueError, match=r"no 'no_such_field' field .*TITLE_FIELD"):
        build(config)


def test_topk_larger_than_the_catalog_is_a_clear_error(mini_ml100k):
    config = bigrec_config(mini_ml100k, topk=[10, 100000])
    with pytest.raises(ValueError, match=r"topk \[10, 100000\] asks for more items than the catalog"):
        build(config)


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
