"""Model lookup: recbole-earn's models first, RecBole's zoo otherwise, a clear error for anything else."""

import sys
import types

import pytest

import recbole_earn.model as earn_models
from recbole_earn.config import Config
from recbole_earn.model_lookup import UnknownModelError, get_model_class, is_earn_model


def test_recbole_models_are_found():
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole.model.general_recommender.bpr import BPR

    assert get_model_class("SASRec") is SASRec
    assert get_model_class("BPR") is BPR
    assert not is_earn_model(SASRec)


def test_our_models_come_first(monkeypatch):
    # A model of ours with the same name as one of RecBole's must shadow it.
    from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

    module = types.ModuleType("recbole_earn.model.shadowing_sasrec")
    module.SASRec = type("SASRec", (RecBoleSASRec,), {"__module__": module.__name__})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(earn_models.MODEL_MODULES, "SASRec", module.__name__)
    assert get_model_class("SASRec") is module.SASRec
    assert is_earn_model(module.SASRec)
    assert Config(model="SASRec", dataset="ml-100k").model_class is module.SASRec


def test_every_registered_model_of_ours_resolves():
    for name in earn_models.available_models():
        assert get_model_class(name).__name__ == name


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(UnknownModelError) as error:
        get_model_class("NoSuchRec")
    message = str(error.value)
    assert "NoSuchRec" in message
    assert "SASRec" in message and "GRU4Rec" in message and "BPR" in message


def test_unknown_model_through_config():
    with pytest.raises(UnknownModelError, match="Unknown model 'NoSuchRec'"):
        Config(model="NoSuchRec", dataset="ml-100k")
