"""Model lookup: recbole-earn's models first, RecBole's zoo otherwise, a clear error for anything else."""

import sys
import types

import pytest

import recbole_earn.model as earn_models
from recbole_earn.config import Config
from recbole_earn.model_contract import is_llm_recommender, trainer_class
from recbole_earn.model_lookup import UnknownModelError, get_model_class


def test_recbole_models_are_found():
    from recbole.model.sequential_recommender.sasrec import SASRec
    from recbole.model.general_recommender.bpr import BPR

    assert get_model_class("SASRec") is SASRec
    assert get_model_class("BPR") is BPR
    assert not is_llm_recommender(SASRec)


def test_our_models_come_first(monkeypatch):
    # A model of ours with the same name as one of RecBole's must shadow it.
    from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

    module = types.ModuleType("recbole_earn.model.shadowing_sasrec")
    module.SASRec = type("SASRec", (RecBoleSASRec,), {"__module__": module.__name__})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(earn_models.MODEL_MODULES, "SASRec", module.__name__)
    assert get_model_class("SASRec") is module.SASRec
    assert Config(model="SASRec", dataset="ml-100k").model_class is module.SASRec


def test_every_registered_model_of_ours_resolves():
    for name in earn_models.available_models():
        assert get_model_class(name).__name__ == name


def test_the_runner_reads_one_contract_from_our_models_and_recboles_defaults_otherwise():
    from recbole.trainer import Trainer

    from recbole_earn.trainer import LLMTrainer

    llm = get_model_class("EARNLCRec")
    assert is_llm_recommender(llm) and llm.needs_item_text
    assert trainer_class(Config(model="EARNLCRec", dataset="ml-100k"), llm) is LLMTrainer
    assert trainer_class(Config(model="SASRec", dataset="ml-100k"), get_model_class("SASRec")) is Trainer


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(UnknownModelError) as error:
        get_model_class("NoSuchRec")
    message = str(error.value)
    assert "NoSuchRec" in message
    assert "SASRec" in message and "GRU4Rec" in message and "BPR" in message


def test_unknown_model_through_config():
    with pytest.raises(UnknownModelError, match="Unknown model 'NoSuchRec'"):
        Config(model="NoSuchRec", dataset="ml-100k")


@pytest.fixture
def broken_module(tmp_path, monkeypatch):
    """A module on sys.path whose import fails inside it (a dependency it needs is missing)."""
    (tmp_path / "broken_recommender.py").write_text("import no_such_dependency_of_the_model\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "broken_recommender", raising=False)
    return "broken_recommender"


def test_our_model_modules_import_error_propagates(broken_module, monkeypatch):
    monkeypatch.setitem(earn_models.MODEL_MODULES, "BrokenRec", broken_module)
    with pytest.raises(ImportError, match="no_such_dependency_of_the_model"):
        get_model_class("BrokenRec")


def test_recbole_model_modules_import_error_names_the_module(broken_module, monkeypatch):
    import recbole_earn.model_lookup as lookup

    monkeypatch.setattr(lookup, "recbole_model_module", lambda name: broken_module)
    with pytest.raises(ImportError, match="Model 'BrokenRec': importing broken_recommender failed: No module named "
                                          "'no_such_dependency_of_the_model'"):
        get_model_class("BrokenRec")


def test_a_wrongly_cased_or_missing_name_is_unknown():
    for name in ("sasrec", "NoSuchRec", "../SASRec"):
        with pytest.raises(UnknownModelError, match=f"Unknown model '{name}'"):
            get_model_class(name)
