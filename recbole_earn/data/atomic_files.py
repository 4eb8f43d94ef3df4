"""Checks of a dataset's RecBole atomic files, before RecBole reads them.

Why: for a missing dataset RecBole 1.2.1 tries to download it (and fails offline deep in urllib); we stop
earlier with the files expected and the command that makes them. What RecBole would misread, we name: an empty
or header-only `.inter`, a comma-separated file, a byte-order mark RecBole takes into the first field's name, a
row with a stray separator inside a value, duplicate item rows, and, for LLM recommenders, interactions whose
item has no `.item` row (RecBole drops those without a word).
"""

import logging
import os
from collections import Counter

from recbole_earn.errors import UserInputError

logger = logging.getLogger(__name__)

# how to make each dataset that dataset_scripts/ knows
PREPARE_COMMANDS = {
    "ml-100k": "python dataset_scripts/prepare_dataset.py ml-100k",
    "ml-1m": "python dataset_scripts/prepare_dataset.py ml-1m",
    "amazon-games": (
        "python dataset_scripts/prepare_dataset.py amazon-games "
        "--reviews Video_Games_5.json.gz --meta meta_Video_Games.json.gz"
    ),
}
FEATURE_TYPES = ("token", "token_seq", "float", "float_seq")  # RecBole's FeatureType values
BYTE_ORDER_MARK = "\ufeff"
EXAMPLES = 5  # items named in a message


class DatasetFilesError(FileNotFoundError):
    pass


class AtomicFileError(UserInputError, ValueError):
    """An atomic file that RecBole would misread or reject with an unrelated message."""


def atomic_file_path(config, suffix):
    """`<data_path>/<dataset>.<suffix>`, the file RecBole reads for that suffix."""
    return os.path.join(config["data_path"], f"{config['dataset']}.{suffix}")


def expected_inter_files(config):
    """The interaction files RecBole will read: one `.inter`, or one per `benchmark_filename` part."""
    parts = config["benchmark_filename"]
    if parts:
        return [atomic_file_path(config, f"{part}.inter") for part in parts]
    return [atomic_file_path(config, "inter")]


def file_format(config):
    """(encoding, field separator) of the dataset's atomic files."""
    return config["encoding"] or "utf-8", config["field_separator"] or "\t"


def check_header(path, header, separator):
    """Raise AtomicFileError unless `header` is `name:type` fields separated by `separator`."""
    if not header.strip():
        raise AtomicFileError(
            f"{path} has no header line (it is empty or starts with a blank line): an atomic file starts with a "
            "header of name:type fields (e.g. "
            "user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float), then one row per line."
        )
    if header.startswith(BYTE_ORDER_MARK):
        raise AtomicFileError(
            f"{path} starts with a UTF-8 byte-order mark, which RecBole would read as part of the first field's "
            "name. Set encoding: utf-8 (recbole-earn then reads through the mark) or save the file without it."
        )
    columns = header.split(separator)
    if len(columns) == 1 and "," in header:
        raise AtomicFileError(
            f"{path} looks comma-separated (its header has commas but no field_separator {separator!r}). RecBole "
            "atomic files separate fields with tabs: convert the file (values may hold commas), or set "
            "field_separator if every value is free of that character."
        )
    for column in columns:
        name, _, kind = column.partition(":")
        if not name or kind not in FEATURE_TYPES:
            raise AtomicFileError(
                f"{path}: header field {column!r} is not name:type with a type among {', '.join(FEATURE_TYPES)} "
                f"(header: {header!r})."
            )


def read_header(path, encoding="utf-8", separator="\t"):
    """The field names of an atomic file's header (`item_id:token` -> `item_id`), after check_header."""
    with open(path, encoding=encoding, newline="") as handle:
        try:
            header = handle.readline().rstrip("\r\n")
        except UnicodeDecodeError as error:
            raise wrong_encoding(path, encoding, error) from None
    check_header(path, header, separator)
    return [column.split(":")[0] for column in header.split(separator)]


def wrong_encoding(path, encoding, error):
    return AtomicFileError(
        f"{path} is not {encoding} text ({error.reason}); set encoding to the file's own (e.g. latin-1)."
    )


def iter_rows(path, encoding="utf-8", separator="\t"):
    """(line number, values) of every data row, blank lines skipped. A row with more or fewer fields than the
    header is an error: a separator inside a value (a tab in a title) would shift every field after it."""
    width = len(read_header(path, encoding, separator))
    with open(path, encoding=encoding, newline="") as handle:
        try:
            handle.readline()  # the header
            for number, line in enumerate(handle, start=2):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                values = line.split(separator)
                if len(values) != width:
                    raise AtomicFileError(
                        f"{path}, line {number}: {len(values)} fields where the header has {width}. A value holds "
                        f"the field separator {separator!r} (e.g. a tab inside a title): remove it. The line: "
                        f"{line[:80]!r}"
                    )
                yield number, values
        except UnicodeDecodeError as error:
            raise wrong_encoding(path, encoding, error) from None


def column_values(path, field, encoding="utf-8", separator="\t"):
    """Every data row's value of `field`, in file order."""
    names = read_header(path, encoding, separator)
    if field not in names:
        raise AtomicFileError(f"{path} has no '{field}' field (its fields: {', '.join(names)}).")
    column = names.index(field)
    return [values[column] for _, values in iter_rows(path, encoding, separator)]


def refuse_duplicate_ids(path, ids):
    """Raise AtomicFileError naming the ids that have more than one row (RecBole keeps the first, a dict the last)."""
    duplicates = [item for item, count in Counter(ids).items() if count > 1]
    if duplicates:
        raise AtomicFileError(
            f"{path} has more than one row for {len(duplicates)} item ids (e.g. {duplicates[:EXAMPLES]}); keep one "
            "row per item."
        )


def require_dataset_files(config, need_item_file=False):
    """Raise DatasetFilesError naming the missing files and the command that creates them, then check their
    contents (check_atomic_files)."""
    expected = expected_inter_files(config)
    if need_item_file:
        expected.append(atomic_file_path(config, "item"))
    missing = [path for path in expected if not os.path.isfile(path)]
    if not missing:
        check_atomic_files(config, need_item_text=need_item_file)
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


def check_atomic_files(config, need_item_text=False):
    """Raise AtomicFileError for what RecBole would misread in the `.inter` files (and, for models that need item
    text, the `.item` file and items without a row there)."""
    encoding, separator = file_format(config)
    for path in expected_inter_files(config):
        if next(iter_rows(path, encoding, separator), None) is None:
            raise AtomicFileError(f"{path} has a header but no interactions: add one row per interaction.")
    if need_item_text:
        check_items_have_rows(config)


def check_items_have_rows(config):
    """Every item the `.inter` files name needs a `.item` row (its title). RecBole would drop the interactions of
    the others without a word; this refuses them, or with drop_items_without_text logs what is dropped."""
    encoding, separator = file_format(config)
    id_field = config["ITEM_ID_FIELD"]
    item_path = atomic_file_path(config, "item")
    described = column_values(item_path, id_field, encoding, separator)
    refuse_duplicate_ids(item_path, described)
    described = set(described)
    counts = Counter()
    for path in expected_inter_files(config):
        counts.update(column_values(path, id_field, encoding, separator))
    missing = {item: count for item, count in counts.items() if item not in described}
    if not missing:
        return
    examples = ", ".join(f"'{item}' ({count})" for item, count in list(missing.items())[:EXAMPLES])
    summary = (f"{len(missing)} items have no row in {item_path} but hold {sum(missing.values())} interactions "
               f"(e.g. {examples})")
    if config["drop_items_without_text"]:
        logger.warning(f"Dropping the interactions of items without text (drop_items_without_text): {summary}.")
        return
    raise AtomicFileError(
        f"{summary}. LLM recommenders need a title for every item: add their rows to the .item file, remove their "
        "interactions from the .inter file, or set drop_items_without_text: True to drop those interactions."
    )
