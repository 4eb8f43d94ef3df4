"""Find a model class by name: recbole-earn's models first, then RecBole's own model zoo."""

import importlib
import importlib.util
import inspect
import os
import pkgutil

from recbole_earn.compat import apply_recbole_compat
from recbole_earn.errors import ConfigError
from recbole_earn.model import available_models, get_earn_model

RECBOLE_MODEL_PACKAGES = [
    "recbole.model.general_recommender",
    "recbole.model.context_aware_recommender",
    "recbole.model.sequential_recommender",
    "recbole.model.knowledge_aware_recommender",
    "recbole.model.exlib_recommender",
]


class UnknownModelError(ConfigError):
    pass


def recbole_model_names():
    """Class names of RecBole's models (the module files are the lower-cased names)."""
    from recbole.model.abstract_recommender import AbstractRecommender

    names = set()
    for package_name in RECBOLE_MODEL_PACKAGES:
        try:
            package = importlib.import_module(package_name)
        except ImportError:  # exlib needs optional packages (xgboost, lightgbm)
            continue
        module_names = {info.name for info in pkgutil.iter_modules(package.__path__)}
        for name, obj in vars(package).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, AbstractRecommender)
                and name.lower() in module_names
            ):
                names.add(name)
    return sorted(names)


def recbole_model_module(name):
    """The module path of RecBole's model `name` (each model's file is its lower-cased name), or None. The
    packages are located, not imported: one of them (exlib) needs optional libraries to import."""
    if not name.isidentifier():
        return None
    for package in RECBOLE_MODEL_PACKAGES:
        spec = importlib.util.find_spec(package)
        folders = (spec.submodule_search_locations or []) if spec is not None else []
        if any(os.path.isfile(os.path.join(folder, name.lower() + ".py")) for folder in folders):
            return f"{package}.{name.lower()}"
    return None


def recbole_model_class(name):
    """RecBole's model class called `name`, or None when RecBole has no such module or class. A module that is
    there but fails to import is an ImportError naming it and its cause, not an unknown model."""
    module_path = recbole_model_module(name)
    if module_path is None:
        return None
    try:
        module = importlib.import_module(module_path)
    except ImportError as error:
        raise ImportError(f"Model '{name}': importing {module_path} failed: {error}") from error
    return getattr(module, name, None)


def get_model_class(name):
    """The model class called `name`: one of recbole-earn's, or one of RecBole's."""
    if not isinstance(name, str):
        return name
    apply_recbole_compat()  # importing RecBole's zoo switches autograd anomaly detection on
    model_class = get_earn_model(name) or recbole_model_class(name)
    if model_class is not None:
        return model_class
    raise UnknownModelError(
        f"Unknown model '{name}'. recbole-earn models: {', '.join(available_models()) or '(none)'}. "
        f"RecBole models: {', '.join(recbole_model_names())}."
    )
