"""Full ranking leaves out each user's past items for sequential models as RecBole does for general ones
(`exclude_history_items`), and `past_items_by_user` lists them for any full-ranking loader."""

import csv
import os
from collections import defaultdict

import pytest
import torch
from recbole.data import create_dataset, data_preparation
from recbole.trainer import Trainer
from recbole.utils import init_seed

from recbole_earn.config import Config
from recbole_earn.data.past_items import past_items_by_user
from recbole_earn.quick_start import prepare_data

from recommender_helpers import device_keys

TINY_SASREC = {"hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1, "eval_batch_size": 16}


def make_config(mini, model, **overrides):
    values = dict(mini["config"], **TINY_SASREC, **overrides)
    config = Config(model=model, dataset=mini["dataset"], config_dict=values)
    init_seed(config["seed"], config["reproducibility"])
    return config


def raw_items(mini):
    """user token -> set of item tokens, straight from the .inter file."""
    items = defaultdict(set)
    path = os.path.join(mini["data_path"], mini["dataset"], f"{mini['dataset']}.inter")
    with open(path, encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            items[row["user_id:token"]].add(row["item_id:token"])
    return items


def row_targets(loader, dataset):
    """user token -> the item token each row of a sequential loader evaluates (one row per user here)."""
    users, items = dataset.field2id_token["user_id"], dataset.field2id_token["item_id"]
    rows = loader._dataset.inter_feat
    return {users[u]: items[i] for u, i in zip(rows["user_id"].tolist(), rows["item_id"].tolist())}


def as_tokens(dataset, field, ids):
    return {dataset.field2id_token[field][i] for i in ids.tolist()}


def test_sequential_batches_leave_out_every_item_of_the_earlier_splits(mini_ml100k):
    config = make_config(mini_ml100k, "SASRec")
    dataset, _, valid, test = prepare_data(config)
    raw = raw_items(mini_ml100k)
    test_item, valid_item = row_targets(test, dataset), row_targets(valid, dataset)
    assert set(test_item) == set(raw) and len(test._dataset) == len(raw)  # leave-one-out: one test row per user

    expected = {  # validation's past: training items; test's: training and validation items
        "valid": {user: items - {valid_item[user], test_item[user]} for user, items in raw.items()},
        "test": {user: items - {test_item[user]} for user, items in raw.items()},
    }
    for phase, loader in (("valid", valid), ("test", test)):
        for interaction, (history_u, history_i), _, positive_i in loader:
            for row, user in enumerate(interaction["user_id"].tolist()):
                past = expected[phase][dataset.field2id_token["user_id"][user]]
                assert as_tokens(dataset, "item_id", history_i[history_u == row]) == past
                assert as_tokens(dataset, "item_id", positive_i[row:row + 1]).isdisjoint(past)
        by_user = past_items_by_user(loader)
        assert {dataset.field2id_token["user_id"][u]: as_tokens(dataset, "item_id", items)
                for u, items in by_user.items()} == expected[phase]


def test_general_models_past_items_are_recboles_history(mini_ml100k):
    """Pop's loader is RecBole's own: the same definition, earlier splits minus the items evaluated."""
    dataset, _, _, test = prepare_data(make_config(mini_ml100k, "Pop"))
    raw = raw_items(mini_ml100k)
    past = past_items_by_user(test)
    assert len(past) == len(raw)
    for user, items in past.items():
        answers = as_tokens(dataset, "item_id", test.uid2positive_item[user])
        assert as_tokens(dataset, "item_id", items) == raw[dataset.field2id_token["user_id"][user]] - answers


def evaluate_past_first(config, past_score=1e6):
    """Test metrics of SASRec scoring like a model that ranks the user's own history first (`past_score`), then
    items by their popularity in the training split (on config["device"], where RecBole's Trainer puts batches)."""
    _, train, _, test = prepare_data(config)
    model = config.model_class(config, train._dataset).to(config["device"]).eval()
    popularity = torch.bincount(train._dataset.inter_feat["item_id"], minlength=train._dataset.item_num).float()
    popularity = popularity.to(config["device"])

    def past_first(interaction):
        scores = popularity.repeat(len(interaction), 1)
        return scores.scatter(1, interaction[model.ITEM_SEQ], past_score)

    model.full_sort_predict = past_first
    return Trainer(config, model).evaluate(test, load_best_model=False)


def test_excluded_past_items_never_reach_the_ranking(mini_ml100k, device):
    keys = device_keys(device)
    excluded = evaluate_past_first(make_config(mini_ml100k, "SASRec", **keys))
    ranked = evaluate_past_first(make_config(mini_ml100k, "SASRec", exclude_history_items=False, **keys))

    assert ranked["recall@10"] == 0.0  # every user has >= 10 past items, none of them the answer
    assert excluded["recall@10"] > 0.0  # the same scores with past items left out: popularity's hits count
    assert excluded == evaluate_past_first(make_config(mini_ml100k, "SASRec", **keys), past_score=0.0)


def test_off_is_recboles_own_evaluation(mini_ml100k, device):
    config = make_config(mini_ml100k, "SASRec", exclude_history_items=False, **device_keys(device))
    _, _, _, ours = prepare_data(config)
    assert all(history is None for _, history, _, _ in ours)
    _, _, recboles = data_preparation(config, create_dataset(config))

    model = config.model_class(config, ours._dataset).to(config["device"]).eval()
    trainer = Trainer(config, model)
    assert trainer.evaluate(ours, load_best_model=False) == trainer.evaluate(recboles, load_best_model=False)


def test_sampled_evaluation_has_no_past_items_table(mini_ml100k):
    _, _, _, test = prepare_data(make_config(mini_ml100k, "SASRec", eval_args={"mode": "uni20"}))
    with pytest.raises(TypeError, match="only full-ranking loaders"):
        past_items_by_user(test)
