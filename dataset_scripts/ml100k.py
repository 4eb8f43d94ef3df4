"""ml-100k: a local copy of the MovieLens-100K atomic files bundled with RecBole (`recbole/dataset_example/`).

The files are copied byte for byte (.inter and .item; titles are in `movie_title:token_seq`, without the year).
RecBole 1.2.1 itself always loads its bundled copy for the dataset name `ml-100k`, whatever `data_path` says
(`Config._init_internal_config_dict`); this copy is for users and tools that want the files on disk.
"""

import os
import shutil

from dataset_scripts.sources import MissingSourceError, package_dir, require_files

DATASET_NAME = "ml-100k"
SUFFIXES = ("inter", "item")


def bundled_files():
    """{file name: path} of RecBole's bundled ml-100k files; MissingSourceError when RecBole is missing."""
    how_to_get = "They ship with RecBole: `pip install recbole==1.2.1`."
    root = package_dir("recbole")
    if root is None:
        raise MissingSourceError(f"RecBole is not installed (expected recbole/dataset_example/ml-100k/).\n{how_to_get}")
    folder = os.path.join(root, "dataset_example", DATASET_NAME)
    paths = {f"{DATASET_NAME}.{suffix}": os.path.join(folder, f"{DATASET_NAME}.{suffix}") for suffix in SUFFIXES}
    require_files(list(paths.values()), how_to_get)
    return paths


def copy_writers(paths):
    """Writers for `write_files_atomically` that copy each source file unchanged."""

    def copier(source_path):
        def write(binary_file):
            with open(source_path, "rb") as source:
                shutil.copyfileobj(source, binary_file)

        return write

    return {file_name: copier(source_path) for file_name, source_path in paths.items()}
