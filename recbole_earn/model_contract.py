"""What the runner asks of a model class, in one place.

recbole-earn's LLM recommenders declare it on `LLMRecommender`: the class attributes `is_llm_recommender`,
`needs_item_text` and `trainer_name` (a class of `recbole_earn.trainer`, found by name as RecBole finds its
trainers), the classmethod `check_config(config)`, and the methods `reset_inference_stats()`,
`kv_bytes_per_user()` and `ranking_label()`. RecBole's own models declare none of it and run as RecBole runs
them. Nothing here imports a model module, so looking up SASRec loads no LLM code.
"""

import importlib

from recbole.utils import get_trainer

TRAINER_MODULE = "recbole_earn.trainer"


def is_llm_recommender(model_class):
    return bool(getattr(model_class, "is_llm_recommender", False))


def needs_item_text(model_class):
    """Whether the model reads the dataset's .item file (titles): it is checked for before the data loads."""
    return is_llm_recommender(model_class) and bool(model_class.needs_item_text)


def profiles_flops(model_class):
    """RecBole logs each model's FLOPs by tracing one forward; for an LLM that would be a whole LLM forward."""
    return not is_llm_recommender(model_class)


def trainer_class(config, model_class):
    """The model's own trainer, named by `trainer_name`, or the one RecBole picks for its model type."""
    name = getattr(model_class, "trainer_name", None)
    if name is None:
        return get_trainer(config["MODEL_TYPE"], config["model"])
    return getattr(importlib.import_module(TRAINER_MODULE), name)


def check_config(model_class, config):
    """The checks a model makes of its config alone, before anything loads (none for RecBole's models)."""
    check = getattr(model_class, "check_config", None)
    if check is not None:
        check(config)


def start_test_measurement(model):
    """Count the test split's generations only, not validation's."""
    if is_llm_recommender(type(model)):
        model.reset_inference_stats()


def inference_record(model):
    """What the model measured at test time, for result rows: KV-cache bytes per user (None for RecBole's models)
    and, for LLM recommenders, what their scores come from."""
    if not is_llm_recommender(type(model)):
        return {"kv_bytes_per_user": None}
    return {"kv_bytes_per_user": model.kv_bytes_per_user(), "ranking": model.ranking_label()}
