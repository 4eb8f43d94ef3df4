"""Train and evaluate one model, ours or RecBole's, the way RecBole's `run_recbole` does.

The differences from `recbole.quick_start.run_recbole`: our Config (our default yaml, our models, no argv
parsing), a clear error for a missing dataset instead of RecBole's download attempt, no FLOPs profiling of
LLMs, full ranking that leaves out each user's past items for sequential models as RecBole does for general
ones (`exclude_history_items`), and the result also carries training and test wall-clock times.
"""

import logging
import sys
import time
from logging import getLogger

import torch
from recbole.data import create_dataset, data_preparation
from recbole.data.transform import construct_transform
from recbole.utils import calculate_valid_score, get_environment, get_flops, init_logger, init_seed, set_color

from recbole_earn.config import Config
from recbole_earn.data.atomic_files import require_dataset_files
from recbole_earn.data.past_items import excludes_past_items, with_past_items
from recbole_earn import model_contract


def prepare_data(config):
    """RecBole dataset and its train/valid/test loaders, after checking the files are there. Full-ranking
    loaders know each user's past items, for sequential models too (see recbole_earn.data.past_items)."""
    require_dataset_files(config, need_item_file=model_contract.needs_item_text(config.model_class))
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    valid_data, test_data = with_past_items(config, train_data, valid_data, test_data)
    return dataset, train_data, valid_data, test_data


def build_model(config, train_data, logger):
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = config.model_class(config, train_data._dataset).to(config["device"])
    logger.info(model)
    if model_contract.profiles_flops(config.model_class):
        transform = construct_transform(config)
        flops = get_flops(model, train_data._dataset, config["device"], logger, transform)
        logger.info(set_color("FLOPs", "blue") + f": {flops}")
    return model


def train_and_evaluate(config, saved=True, verbose=True, checkpoint=None, validate=True):
    """Build data and model from a ready Config, fit on train/valid, evaluate on test: the result dict. With
    `checkpoint` (a .pth file run_earn saved), nothing trains: that model is evaluated on valid (unless
    validate=False) and test under this config's inference settings."""
    logger = getLogger()
    dataset, train_data, valid_data, test_data = prepare_data(config)
    logger.info(dataset)
    recommender = build_model(config, train_data, logger)
    trainer = model_contract.trainer_class(config, config.model_class)(config, recommender)
    distributed = not config["single_spec"]
    if distributed:
        # Every rank names the checkpoint by its own clock; they must agree on rank 0's file to reload it.
        name = [trainer.saved_model_file]
        torch.distributed.broadcast_object_list(name, src=0)
        trainer.saved_model_file = name[0]
    show_progress = config["show_progress"] and verbose

    start = time.perf_counter()
    if checkpoint is None:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress
        )
    else:
        trainer.saved_model_file = checkpoint
        best_valid_score, best_valid_result = None, None
        if validate:
            best_valid_result = trainer.evaluate(valid_data, show_progress=show_progress)
            best_valid_score = calculate_valid_score(best_valid_result, trainer.valid_metric)
    train_time = time.perf_counter() - start if checkpoint is None else 0.0
    model_contract.start_test_measurement(recommender)
    if distributed and saved:
        torch.distributed.barrier()  # rank 0 has finished writing the checkpoint the others reload
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=saved or checkpoint is not None,
                                   show_progress=show_progress)
    test_time = time.perf_counter() - start

    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        **evaluation_record(config, recommender, best_valid_score, best_valid_result, test_result, test_time,
                            test_data),
        "train_time_s": train_time,
        **training_record(trainer),
    }


def evaluation_record(config, recommender, best_valid_score, best_valid_result, test_result, test_time_s, test_data):
    """The part of a run's result that its evaluation fills in (see run_earn)."""
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "test_time_s": test_time_s,
        "test_users": test_data.sample_size,
        "seed": config["seed"],
        "eval_args": config["eval_args"],
        "past_items_excluded": excludes_past_items(config),  # None when the test ranks sampled candidates
        # LLM recommenders: mean KV-cache bytes per test user at the end of its generation (None otherwise), and
        # what the ranking comes from (e.g. BIGRec blended with another model)
        **model_contract.inference_record(recommender),
    }


def training_record(trainer):
    """What the LLM trainer measured (examples seen, examples/s, one point per validation); empty for RecBole's
    own trainers and for a checkpoint evaluated without training."""
    progress = getattr(trainer, "progress", None)
    if progress is None:
        return {}
    return {"train_examples": progress.examples, "train_examples_per_s": progress.examples_per_s,
            "training_curve": trainer.training_curve}


def init_fresh_logger(config):
    """RecBole's init_logger for this run. It configures the root logger with logging.basicConfig, which does
    nothing once handlers exist, so a second run in the same process (group runs, hyper-parameter trials)
    would log into the first run's file: drop the handlers a previous init_logger installed first (exactly
    a console StreamHandler and a FileHandler; other handlers, e.g. pytest's, stay)."""
    root = getLogger()
    for handler in root.handlers[:]:
        if type(handler) in (logging.StreamHandler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    if config["local_rank"]:  # ranks other than 0 of a multi-process run: errors to the console, no log file
        logging.basicConfig(level=logging.ERROR, handlers=[logging.StreamHandler()])
        return
    init_logger(config)


def run_earn(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, cmd_args=None,
             checkpoint=None, validate=True):
    """Train `model` on `dataset`, pick the best epoch on valid, evaluate on test; return the result dict.

    Args:
        model (str or class): a recbole-earn model (e.g. "EARNBIGRec") or any RecBole model (e.g. "SASRec").
        dataset (str): dataset name; its atomic files are read from `<data_path>/<dataset>/`.
        config_file_list (list of str): user yaml files, applied over our and RecBole's defaults.
        config_dict (dict): values applied over the yaml files.
        saved (bool): keep the best checkpoint and reload it for the test evaluation.
        cmd_args (dict): command-line `--key=value` values (strings), applied last.
        checkpoint (str): a checkpoint this model saved: evaluate it on valid and test instead of training (e.g.
            to try inference settings such as num_beams on a trained model); train_time_s is then 0.
        validate (bool): with `checkpoint`, evaluate on valid too (False: test only; the valid fields are None).

    Returns:
        dict: best_valid_score, valid_score_bigger, best_valid_result, test_result (as RecBole's run_recbole),
        plus model, dataset, train_time_s, test_time_s, test_users, kv_bytes_per_user (LLM models), eval_args
        and past_items_excluded (whether the test's full ranking left out each user's past items).
    """
    config = start_logged_run(model, dataset, config_file_list, config_dict, cmd_args)
    result = train_and_evaluate(config, saved=saved, checkpoint=checkpoint, validate=validate)
    getLogger().info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    return result


def start_logged_run(model, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    """The run's Config, with the seed set and a fresh log file that starts with the command and the config."""
    config = Config(
        model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict, cmd_args=cmd_args
    )
    init_seed(config["seed"], config["reproducibility"])
    init_fresh_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    return config


def objective_function(config_dict=None, config_file_list=None, saved=True, cmd_args=None):
    """One hyper-parameter trial for `recbole.trainer.HyperTuning`: train, validate, test, quietly.
    config_dict names the model and dataset; cmd_args are the user's --key=value (applied last)."""
    config = Config(config_dict=config_dict, config_file_list=config_file_list, cmd_args=cmd_args)
    init_seed(config["seed"], config["reproducibility"])
    init_fresh_logger(config)
    return train_and_evaluate(config, saved=saved, verbose=False)
