"""The exact title of every item, indexed by RecBole's internal item id.

RecBole parses `title:token_seq` into space-split token ids (and pandas would unquote a title that starts
with a double quote), so the text is read again here, straight from the `.item` file, byte for byte.
"""

import os

from recbole_earn.data.atomic_files import (
    EXAMPLES,
    AtomicFileError,
    atomic_file_path,
    file_format,
    iter_rows,
    read_header,
    refuse_duplicate_ids,
)


class ItemTitleError(AtomicFileError):
    pass


def read_item_column(path, field, id_field, encoding="utf-8", separator="\t"):
    """{raw item id token: text} for one column of a RecBole `.item` file, exactly as written."""
    names = read_header(path, encoding, separator)
    if field not in names:
        raise ItemTitleError(
            f"{path} has no '{field}' field (its fields: {', '.join(names)}). Set TITLE_FIELD to the field "
            "that holds item titles, e.g. --TITLE_FIELD=title, or rebuild the file with dataset_scripts/."
        )
    if id_field not in names:
        raise ItemTitleError(f"{path} has no '{id_field}' field (its fields: {', '.join(names)}).")
    text_column, id_column = names.index(field), names.index(id_field)
    rows = [(values[id_column], values[text_column]) for _, values in iter_rows(path, encoding, separator)]
    refuse_duplicate_ids(path, [item for item, _ in rows])
    return dict(rows)


class ItemTextTable:
    """`titles[i]` is the exact title of RecBole internal item id `i` (id 0, RecBole's padding, is "")."""

    def __init__(self, titles):
        self.titles = list(titles)

    def __len__(self):
        return len(self.titles)

    def __getitem__(self, item_id):
        return self.titles[int(item_id)]

    @classmethod
    def from_dataset(cls, dataset):
        """Read the titles of a RecBole Dataset's items from its `.item` file (config key TITLE_FIELD)."""
        config = dataset.config
        field = config["TITLE_FIELD"]
        if not field:
            raise ItemTitleError(
                f"Dataset '{config['dataset']}' names no title field, which LLM recommenders need. Set "
                "TITLE_FIELD (the .item field holding item titles) in properties/dataset/"
                f"{config['dataset']}.yaml or pass --TITLE_FIELD=<field>."
            )
        path = atomic_file_path(config, "item")
        if not os.path.isfile(path):
            raise ItemTitleError(
                f"LLM recommenders need item titles, but {path} does not exist. Build the dataset with "
                "dataset_scripts/prepare_dataset.py, which writes a .item file with a title field."
            )
        id_field = dataset.iid_field
        encoding, separator = file_format(config)
        raw_titles = read_item_column(path, field, id_field, encoding=encoding, separator=separator)
        id_tokens = dataset.field2id_token[id_field]  # internal id -> raw token; index 0 is "[PAD]"
        missing = [str(token) for token in id_tokens[1:] if token not in raw_titles]  # str: numpy 2 reprs np.str_
        if missing:
            raise ItemTitleError(
                f"{len(missing)} of {len(id_tokens) - 1} items have no row in {path} (e.g. {missing[:EXAMPLES]}); "
                "LLM recommenders need a title for every item. Drop those items from the .inter file or add them."
            )
        titles = [raw_titles[token] for token in id_tokens[1:]]
        refuse_empty_titles(path, field, id_tokens[1:], titles)
        return cls([""] + titles)


def refuse_empty_titles(path, field, tokens, titles):
    """Items with an empty title would all share one prompt text and one embedding, so they could not be told
    apart: name them."""
    empty = [str(token) for token, title in zip(tokens, titles) if not title.strip()]  # str: numpy 2 reprs np.str_
    if empty:
        raise ItemTitleError(
            f"{len(empty)} items have an empty '{field}' in {path} (e.g. {empty[:EXAMPLES]}); LLM recommenders tell "
            "items apart by their titles. Write their titles, or remove their rows and their interactions."
        )


def item_descriptions(dataset, titles, fields):
    """Per internal item id, the title followed by the item's other text fields that the `.item` file has
    (`Toy Story (1995); class: Animation Children's Comedy`), for text embeddings. Fields absent from the file
    are skipped; id 0 (padding) is ""."""
    config = dataset.config
    path = atomic_file_path(config, "item")
    encoding, separator = file_format(config)
    present = read_header(path, encoding, separator)
    columns = [
        (name, read_item_column(path, name, dataset.iid_field, encoding=encoding, separator=separator))
        for name in fields or [] if name in present
    ]
    id_tokens = dataset.field2id_token[dataset.iid_field]
    texts = [""]
    for item in range(1, len(id_tokens)):
        parts = [titles[item]]
        parts += [f"{name}: {column[id_tokens[item]]}" for name, column in columns if column.get(id_tokens[item])]
        texts.append("; ".join(parts))
    return texts
