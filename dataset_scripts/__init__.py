"""Raw data -> RecBole atomic files (`<name>.inter`, `<name>.item` with item titles).

Run `python dataset_scripts/prepare_dataset.py --help` from the repository root.
"""
