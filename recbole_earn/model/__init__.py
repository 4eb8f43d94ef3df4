"""recbole-earn's RecBole models, looked up by name.

Imported lazily: looking up SASRec (or printing the list of models) must not load transformers.
"""

import importlib

# model name (= class name, as RecBole wants) -> module that defines it
MODEL_MODULES = {
    "BIGRec": "recbole_earn.model.bigrec",
    "EARNBIGRec": "recbole_earn.model.bigrec",
    "LCRec": "recbole_earn.model.lcrec",
    "EARNLCRec": "recbole_earn.model.lcrec",
}


def available_models():
    """Names of recbole-earn's own models."""
    return sorted(MODEL_MODULES)


def get_earn_model(name):
    """The class of one of recbole-earn's models, or None if the name is not one of ours."""
    module_path = MODEL_MODULES.get(name)
    if module_path is None:
        return None
    return getattr(importlib.import_module(module_path), name)
