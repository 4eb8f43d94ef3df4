"""Find a model class by name: recbole-earn's models first, then RecBole's own model zoo."""

import importlib
import inspect
import pkgutil

from recbole_earn.compat import apply_recbole_compat
from recbole_earn.model import available_models, get_earn_model

RECBOLE_MODEL_PACKAGES = [
    "recbole.model.general_recommender",
    "recbole.model.context_aware_recommender",
    "recbole.model.sequential_recommender",
    "recbole.model.knowledge_aware_recommender",
    "recbole.model.exlib_recommender",
]


class UnknownModelError(ValueError):
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


def get_model_class(name):
    """The model class called `name`: one of recbole-earn's, or one of RecBole's."""
    if not isinstance(name, str):
        return name
    apply_recbole_compat()  # importing RecBole's zoo switches autograd anomaly detection on
    earn_model = get_earn_model(name)
    if earn_model is not None:
        return earn_model
    from recbole.utils import get_model

    try:
        return get_model(name)
    except (ValueError, ImportError):
        pass
    raise UnknownModelError(
        f"Unknown model '{name}'. recbole-earn models: {', '.join(available_models()) or '(none)'}. "
        f"RecBole models: {', '.join(recbole_model_names())}."
    )


def is_earn_model(model_class):
    """Whether a model class is one of recbole-earn's (they are LLMs: no FLOPs profiling, own trainer)."""
    return model_class.__module__.startswith("recbole_earn.")
