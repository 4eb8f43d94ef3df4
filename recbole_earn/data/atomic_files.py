"""Checks that a dataset's RecBole atomic files are where the config says, before RecBole looks.

Why: for a missing dataset RecBole 1.2.1 tries to download it (and fails offline deep in urllib); we stop
earlier with the files expected and the command that makes them.
"""

import os

# how to make each dataset that dataset_scripts/ knows
PREPARE_COMMANDS = {
    "ml-100k": "python dataset_scripts/prepare_dataset.py ml-100k",
    "ml-1m": "python dataset_scripts/prepare_dataset.py ml-1m",
    "amazon-games": (
        "python dataset_scripts/prepare_dataset.py amazon-games "
        "--reviews Video_Games_5.json.gz --meta meta_Video_Games.json.gz"
    ),
}


class DatasetFilesError(FileNotFoundError):
    pass


def atomic_file_path(config, suffix):
    """`<data_path>/<dataset>.<suffix>`, the file RecBole reads for that suffix."""
    return os.path.join(config["data_path"], f"{config['dataset']}.{suffix}")


def expected_inter_files(config):
    """The interaction files RecBole will read: one `.inter`, or one per `benchmark_filename` part."""
    parts = config["benchmark_filename"]
    if parts:
        return [atomic_file_path(config, f"{part}.inter") for part in parts]
    return [atomic_file_path(config, "inter")]


def require_dataset_files(config, need_item_file=False):
    """Raise DatasetFilesError naming the missing files and the command that creates them."""
    expected = expected_inter_files(config)
    if need_item_file:
        expected.append(atomic_file_path(config, "item"))
    missing = [path for path in expected if not os.path.isfile(path)]
    if not missing:
        return
    dataset = config["dataset"]
    command = PREPARE_COMMANDS.get(dataset)
    how = (
        f"Create it with: {command} (it writes into dataset/<name>/; set --data_path if you keep datasets "
        "elsewhere)."
        if command
        else "Write RecBole atomic files (<name>.inter, and <name>.item with a title field for LLM models) "
        "into <data_path>/<name>/, or pick one of: " + ", ".join(sorted(PREPARE_COMMANDS)) + "."
    )
    raise DatasetFilesError(
        f"Dataset '{dataset}' is missing: expected {', '.join(missing)} (data_path = "
        f"{os.path.abspath(config['data_path'])}). {how}"
    )
