"""Config precedence (RecBole < ours < user files < config_dict < command line), argv isolation and the
RecBole 1.2.1 compatibility fixes."""

import os
import sys

import pytest
import torch
import yaml

from recbole_earn.config import Config
from recbole_earn.config_checks import known_config_keys, top_level_yaml_keys
from recbole_earn.paths import properties_dir


def write_yaml(path, values):
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_our_defaults_layer_over_recboles():
    config = Config(model="SASRec", dataset="ml-100k")
    assert config["topk"] == [10, 20]  # ours (RecBole's overall.yaml says [10])
    assert config["valid_metric"] == "NDCG@10"  # ours (RecBole's says MRR@10)
    assert config["TITLE_FIELD"] == "movie_title"  # properties/dataset/ml-100k.yaml
    assert config["item_noun"] == "movies"
    assert config["hidden_size"] == 64  # RecBole's own properties/model/SASRec.yaml still applies
    assert "TITLE_FIELD" in config.parameters["Dataset"]


def test_user_layers_win_in_order(tmp_path):
    first = write_yaml(tmp_path / "a.yaml", {"epochs": 3, "learning_rate": 0.01, "topk": [5]})
    second = write_yaml(tmp_path / "b.yaml", {"epochs": 4, "item_noun": "films"})
    config = Config(
        model="SASRec",
        dataset="ml-100k",
        config_file_list=[first, second],
        config_dict={"epochs": 5, "train_batch_size": 64},
        cmd_args={"train_batch_size": "32"},
    )
    assert config["topk"] == [5]  # a user file beats our overall.yaml
    assert config["item_noun"] == "films"  # a user file beats our dataset yaml
    assert config["learning_rate"] == 0.01
    assert config["epochs"] == 5  # config_dict beats files
    assert config["train_batch_size"] == 32  # the command line beats config_dict, converted to int


LEAVE_ONE_OUT = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                 "mode": {"valid": "full", "test": "full"}}


def test_general_and_sequential_models_get_the_same_eval_args():
    # RecBole would split Pop's data at random 8:1:1 and SASRec's leave-one-out in time order.
    pop, sasrec = (Config(model=name, dataset="ml-100k") for name in ("Pop", "SASRec"))
    assert pop["eval_args"] == sasrec["eval_args"] == LEAVE_ONE_OUT
    assert pop["exclude_history_items"] is sasrec["exclude_history_items"] is True


def test_users_eval_args_apply_to_every_model_and_keep_our_other_keys(tmp_path):
    sampled = write_yaml(tmp_path / "sampled.yaml", {"eval_args": {"mode": "uni100"}})
    configs = [Config(model=name, dataset="ml-100k", config_file_list=[sampled]) for name in ("Pop", "SASRec")]
    configs += [Config(model=name, dataset="ml-100k", cmd_args={"eval_args": "{'mode': 'uni100'}"})
                for name in ("Pop", "SASRec")]
    for config in configs:
        assert config["eval_args"] == dict(LEAVE_ONE_OUT, mode={"valid": "uni100", "test": "uni100"})
    random_split = {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO"}
    pop = Config(model="Pop", dataset="ml-100k", config_dict={"eval_args": random_split})
    assert pop["eval_args"] == dict(LEAVE_ONE_OUT, **random_split)


def test_use_gpu_false_keeps_the_run_on_the_cpu(monkeypatch):
    """RecBole 1.2.1 takes CUDA whenever gpu_id is set and CUDA is there; our Config also honours use_gpu: False."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    assert Config(model="SASRec", dataset="ml-100k", config_dict={"use_gpu": False})["device"] == torch.device("cpu")
    assert Config(model="SASRec", dataset="ml-100k")["device"] == torch.device("cuda")  # RecBole's own choice


def test_sys_argv_is_not_parsed(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--epochs=999", "-q"])
    config = Config(model="SASRec", dataset="ml-100k")
    assert config["epochs"] != 999


def test_ce_loss_models_get_no_negative_sampling_by_default():
    config = Config(model="SASRec", dataset="ml-100k")
    assert config["loss_type"] == "CE"
    assert config["train_neg_sample_args"]["distribution"] == "none"


def test_explicit_negative_sampling_with_ce_loss_is_still_refused():
    with pytest.raises(ValueError, match="should be None when the loss_type is CE"):
        Config(
            model="SASRec",
            dataset="ml-100k",
            config_dict={"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
        )


def test_autograd_anomaly_detection_is_off_after_importing_recboles_zoo():
    Config(model="SASRec", dataset="ml-100k")
    import recbole.model.sequential_recommender.sine  # noqa: F401  (the module that switches it on)

    assert not torch.is_anomaly_enabled()


def test_recbole_trainer_loads_its_own_pickled_checkpoints(tmp_path):
    config = Config(model="SASRec", dataset="ml-100k")
    path = tmp_path / "checkpoint.pth"
    torch.save({"config": config, "state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(Exception):  # what plain torch.load does on torch >= 2.6
        torch.load(path)
    import recbole.trainer.trainer as recbole_trainer

    checkpoint = recbole_trainer.torch.load(path, map_location="cpu")  # the call RecBole's Trainer makes
    assert checkpoint["config"]["model"] == "SASRec"
    assert torch.equal(checkpoint["state_dict"]["w"], torch.ones(2))


def test_installed_wheel_layout_finds_properties(tmp_path, monkeypatch):
    import recbole_earn.paths as paths

    package = tmp_path / "site-packages" / "recbole_earn"
    (package / "properties" / "dataset").mkdir(parents=True)
    (package / "properties" / "overall.yaml").write_text("seed: 1\n")
    (package / "properties" / "dataset" / "ml-1m.yaml").write_text("item_noun: movies\n")
    monkeypatch.setattr(paths, "PACKAGE_DIR", str(package))
    assert paths.properties_dir() == str(package / "properties")
    from recbole.model.sequential_recommender.sasrec import SASRec

    assert paths.default_yaml_files(SASRec, "ml-1m") == [
        str(package / "properties" / "overall.yaml"),
        str(package / "properties" / "dataset" / "ml-1m.yaml"),
    ]


def test_lc_rec_hour_recipe_sets_known_keys_under_the_command_line():
    recipe = os.path.join(properties_dir(), "recipe", "LCRec-60min.yaml")
    assert top_level_yaml_keys(recipe) <= known_config_keys()  # a typo would be ignored by every run
    config = Config(model="EARNLCRec", dataset="ml-100k", config_file_list=[recipe], cmd_args={"eval_step": "1"})
    assert config["train_time_budget_s"] == 3600
    assert config["lora_dropout"] == 0.0
    assert config["popularity_prior_weight"] == 1.0
    assert config["eval_step"] == 1  # the command line still wins over the recipe
