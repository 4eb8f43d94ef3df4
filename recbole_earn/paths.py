"""Where recbole-earn's default yaml files live, in a source checkout and in an installed wheel alike."""

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def properties_dir():
    """The `properties/` folder: the repository's top level in a checkout (and an editable install), or
    `recbole_earn/properties/` inside an installed wheel (setup.py maps it there)."""
    for candidate in (
        os.path.join(os.path.dirname(PACKAGE_DIR), "properties"),
        os.path.join(PACKAGE_DIR, "properties"),
    ):
        if os.path.isfile(os.path.join(candidate, "overall.yaml")):
            return candidate
    raise FileNotFoundError(
        f"recbole-earn's default yaml files (properties/overall.yaml) were not found next to {PACKAGE_DIR}; "
        "reinstall the package with `pip install -e .` from the repository root."
    )


def default_yaml_files(model_class, dataset_name):
    """Our default yaml files for a model class and a dataset, lowest precedence first, only those that exist.

    A model's yaml files follow its class hierarchy (base classes first), so `EARNBIGRec.yaml` only holds what
    differs from `BIGRec.yaml`, which only holds what differs from `LLMRecommender.yaml`."""
    root = properties_dir()
    model_names = [cls.__name__ for cls in reversed(model_class.__mro__)]
    candidates = (
        [os.path.join(root, "overall.yaml")]
        + [os.path.join(root, "model", f"{name}.yaml") for name in model_names]
        + [os.path.join(root, "dataset", f"{dataset_name}.yaml")]
    )
    return [path for path in candidates if os.path.isfile(path)]
