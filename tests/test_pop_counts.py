"""RecBole's Pop, as recbole-earn runs it, counts every training interaction (RecBole's own counts an item once per
batch, so its ranking depended on how the seed batched the split)."""

import torch
from recbole.data.interaction import Interaction

import logging

from recbole_earn.config import Config
from recbole_earn.quick_start import build_model, prepare_data, run_earn


def test_an_item_twice_in_a_batch_counts_twice(mini_ml100k):
    config = Config(model="Pop", dataset=mini_ml100k["dataset"], config_dict=dict(mini_ml100k["config"]))
    model = build_model(config, prepare_data(config)[1], logging.getLogger())
    model.calculate_loss(Interaction({model.ITEM_ID: torch.tensor([3, 3, 3, 5])}))
    assert model.item_cnt[3, 0].item() == 3 and model.item_cnt[5, 0].item() == 1


def test_pop_results_do_not_depend_on_the_seed(mini_ml100k):
    values = dict(mini_ml100k["config"], epochs=1, eval_step=0, train_batch_size=64)
    results = [run_earn(model="Pop", dataset=mini_ml100k["dataset"], config_dict=dict(values, seed=seed))
               for seed in (1, 2)]
    assert results[0]["test_result"] == results[1]["test_result"]
