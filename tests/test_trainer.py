"""The LLM trainer's learning-rate schedule, wall-clock budget, per-epoch samples and progress log, on a tiny
random Llama and a small slice of ml-100k (the LLM recommenders all train through it)."""

import logging
import math
import os

import pytest
import torch

from recbole_earn.config import Config
from recbole_earn.model.trained_setup import SETUP_KEY
from recbole_earn.quick_start import build_model, prepare_data
from recbole_earn.trainer import BudgetedBatches, LLMTrainer, few_shot_loader
from recbole_earn.training_progress import TrainingProgress, lr_factor

from recommender_helpers import device_keys, model_device


def test_lr_factor_warms_up_then_decays():
    assert lr_factor(0.0, "cosine", warmup_ratio=0.1) == 0.0
    assert lr_factor(0.05, "cosine", warmup_ratio=0.1) == pytest.approx(0.5)
    assert lr_factor(0.1, "cosine", warmup_ratio=0.1) == pytest.approx(1.0)
    assert lr_factor(0.55, "cosine", warmup_ratio=0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, "cosine", warmup_ratio=0.1) == pytest.approx(0.0)
    assert lr_factor(0.55, "linear", warmup_ratio=0.1) == pytest.approx(0.5)
    assert lr_factor(1.0, "linear", min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(0.7, "constant") == 1.0
    with pytest.raises(ValueError, match="lr_scheduler must be one of"):
        lr_factor(0.5, "step")
    with pytest.raises(ValueError, match="warmup_ratio"):
        lr_factor(0.5, "linear", warmup_ratio=1.0)


def test_progress_counts_steps_and_time_and_spends_its_budget():
    now = [0.0]
    progress = TrainingProgress(planned_steps=10, batch_size=4, time_budget_s=5.0, clock=lambda: now[0])
    for _ in range(2):
        progress.start_step()
        now[0] += 1.0
        progress.end_step(4)
    assert progress.examples == 8 and progress.examples_per_s == pytest.approx(4.0)
    assert progress.fraction == pytest.approx(0.4)  # time (2 of 5 s) runs ahead of steps (2 of 10)
    assert progress.seconds_left() == pytest.approx(3.0)
    assert not progress.budget_spent
    for _ in range(3):
        progress.start_step()
        now[0] += 1.0
        progress.end_step(4)
    assert progress.budget_spent and progress.fraction == 1.0
    assert "20 examples, 4.0/s" in progress.describe(1.0, 1e-3)
    with pytest.raises(ValueError, match="train_time_budget_s"):
        TrainingProgress(10, 4, time_budget_s=0)


def tiny_config(mini, **overrides):
    values = dict(mini["config"])
    values.update(llm_path="tiny-llama", epochs=2, train_sample_num=16, train_batch_size=4, eval_batch_size=16,
                  learning_rate=0.01, num_beams=4, topk=[2], valid_metric="NDCG@2", eval_step=1)
    values.update(overrides)
    return Config(model="EARNBIGRec", dataset=mini["dataset"], config_dict=values)


def fit(config):
    _, train_data, valid_data, _ = prepare_data(config)
    model = build_model(config, train_data, logging.getLogger())
    trainer = LLMTrainer(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    return trainer, train_data


def test_budget_flag_is_reduced_on_the_process_groups_device(device, monkeypatch):
    """Multi-process runs agree on the budget with an all_reduce, whose tensor must be on the group's device
    (nccl takes CUDA tensors only); a single process needs no tensor at all."""
    reduced = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, op=None: reduced.append(tensor.device))
    now = [0.0]
    progress = TrainingProgress(planned_steps=10, batch_size=1, time_budget_s=1.0, clock=lambda: now[0])
    assert list(BudgetedBatches([1, 2], progress, distributed=True, device=device)) == [1, 2]
    assert [reduced_on.type for reduced_on in reduced] == [device.type, device.type]
    progress.start_step()
    now[0] += 2.0
    progress.end_step(1)  # the budget is spent: no more batches
    assert list(BudgetedBatches([1, 2], progress, distributed=False, device=device)) == []
    assert len(reduced) == 2


def test_schedule_reaches_the_optimizer_and_every_validation_is_recorded(mini_ml100k, device_dtype):
    device, dtype = device_dtype
    trainer, _ = fit(tiny_config(mini_ml100k, lr_scheduler="linear", warmup_ratio=0.25,
                                 **device_keys(device, llm_dtype=dtype)))
    assert trainer.device.type == model_device(trainer.model).type == device.type
    assert trainer.progress.steps == 8 and trainer.progress.examples == 32  # 2 epochs x 16 examples / batch 4
    # the last step ran at progress 7/8: linear decay after a quarter of warm-up leaves 1/6 of the rate
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - (7 / 8 - 0.25) / 0.75))
    curve = trainer.training_curve
    assert [point["steps"] for point in curve] == [4, 8]
    assert all(point["train_seconds"] > 0 and "ndcg@2" in point["valid_result"] for point in curve)


def test_time_budget_stops_training_at_the_next_step(mini_ml100k, device):
    trainer, _ = fit(tiny_config(mini_ml100k, epochs=50, train_time_budget_s=1e-6, **device_keys(device)))
    assert trainer.progress.steps == 1  # the first step spends the budget; its epoch ends, no other starts
    assert len(trainer.training_curve) == 1  # the last epoch is still validated


def test_each_epoch_can_take_the_next_sample_of_the_training_split(mini_ml100k):
    config = tiny_config(mini_ml100k)
    _, train_data, _, _ = prepare_data(config)
    total = len(train_data._dataset)

    def rows(loader):
        feat = loader._dataset.inter_feat
        return set(zip(feat["user_id"].tolist(), feat["item_id"].tolist(), feat["item_length"].tolist()))

    fixed = [rows(few_shot_loader(train_data, 16, seed=1)) for _ in range(2)]
    assert fixed[0] == fixed[1] and len(fixed[0]) == 16
    epochs = [rows(few_shot_loader(train_data, 16, seed=1, epoch=e)) for e in range(math.ceil(total / 16))]
    assert not epochs[0] & epochs[1]  # no repeats before the whole split has been seen
    assert set().union(*epochs) == rows(train_data)
    assert epochs[0] == fixed[0]


def test_checkpoints_hold_what_trains_and_resume_training(mini_ml100k, tmp_path):
    config = tiny_config(mini_ml100k, epochs=1)
    _, train_data, valid_data, _ = prepare_data(config)
    model = build_model(config, train_data, logging.getLogger())
    trainer = LLMTrainer(config, model)
    trainer.fit(train_data, valid_data, saved=True)
    checkpoint = torch.load(trainer.saved_model_file, weights_only=False)
    assert set(checkpoint["state_dict"]) - {SETUP_KEY} == model.trainable_names()
    assert checkpoint["epoch"] == 0 and checkpoint["optimizer"]["state"]  # RecBole's fields, with AdamW's moments
    assert not [name for name in os.listdir(os.path.dirname(trainer.saved_model_file)) if ".tmp-" in name]

    config["seed"] = 7  # another initialisation, then the checkpoint's weights
    resumed = LLMTrainer(config, build_model(config, train_data, logging.getLogger()))
    resumed.resume_checkpoint(trainer.saved_model_file)
    assert resumed.start_epoch == 1 and resumed.best_valid_score == trainer.best_valid_score
    trained = dict(model.named_parameters())
    for name, parameter in resumed.model.named_parameters():
        assert torch.equal(parameter, trained[name]), name
