"""The item title table: exact text (unicode, quotes, spacing) for every RecBole internal item id, and clear
errors when a dataset cannot give titles."""

import pytest
from recbole.data import create_dataset

from recbole_earn.config import Config
from recbole_earn.data.atomic_files import AtomicFileError
from recbole_earn.data.item_text import ItemTextTable, ItemTitleError

TITLES = {
    "i1": "Pokémon™ – Edición Oro",
    "i2": '"Quoted" at the start, and a trailing quote"',
    "i3": "Two  spaces,   three; punctuation!?",
    "i4": "日本語のタイトル 🎮",
    "i5": "CASE Matters & so do <brackets>",
}


def write_dataset(root, name, titles, header="item_id:token\ttitle:token_seq\tbrand:token"):
    folder = root / name
    folder.mkdir(parents=True)
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for user in range(1, 7):
        for step, item in enumerate(titles):
            rows.append(f"u{user}\t{item}\t5\t{1000 * user + step}")
    (folder / f"{name}.inter").write_text("\n".join(rows) + "\n", encoding="utf-8")
    lines = [header] + [f"{item}\t{title}\tsome brand" for item, title in titles.items()]
    (folder / f"{name}.item").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")  # CRLF, as ml-1m ships


def load(root, name, **overrides):
    config_dict = {
        "data_path": str(root),
        "TITLE_FIELD": "title",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id"]},
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
    }
    config_dict.update(overrides)
    config = Config(model="SASRec", dataset=name, config_dict=config_dict)
    return create_dataset(config)


def test_titles_round_trip_exactly(tmp_path):
    write_dataset(tmp_path, "texts", TITLES)
    dataset = load(tmp_path, "texts")
    table = ItemTextTable.from_dataset(dataset)
    id_tokens = dataset.field2id_token[dataset.iid_field]
    assert len(table) == dataset.item_num == len(TITLES) + 1
    assert table[0] == ""
    for internal_id in range(1, dataset.item_num):
        assert table[internal_id] == TITLES[id_tokens[internal_id]]


def test_real_ml100k_titles_match_the_file(mini_ml100k):
    from recbole_earn.data.item_text import read_item_column

    dataset = load(mini_ml100k["data_path"], mini_ml100k["dataset"], TITLE_FIELD="movie_title")
    table = ItemTextTable.from_dataset(dataset)
    raw = read_item_column(f"{mini_ml100k['data_path']}/ml-mini/ml-mini.item", "movie_title", "item_id")
    id_tokens = dataset.field2id_token[dataset.iid_field]
    assert raw["1"] == "Toy Story"
    assert all(table[i] == raw[id_tokens[i]] for i in range(1, dataset.item_num))


def test_no_title_field_configured(tmp_path):
    write_dataset(tmp_path, "untitled", TITLES)
    dataset = load(tmp_path, "untitled", TITLE_FIELD=None)
    with pytest.raises(ItemTitleError, match="TITLE_FIELD"):
        ItemTextTable.from_dataset(dataset)


def test_title_field_missing_from_the_file(tmp_path):
    write_dataset(tmp_path, "nameless", TITLES, header="item_id:token\tname:token_seq\tbrand:token")
    dataset = load(tmp_path, "nameless")
    with pytest.raises(ItemTitleError, match=r"no 'title' field \(its fields: item_id, name, brand\)"):
        ItemTextTable.from_dataset(dataset)


def test_missing_item_file(tmp_path):
    write_dataset(tmp_path, "noitems", TITLES)
    (tmp_path / "noitems" / "noitems.item").unlink()
    dataset = load(tmp_path, "noitems", load_col={"inter": ["user_id", "item_id", "rating", "timestamp"]})
    with pytest.raises(ItemTitleError, match=r"noitems\.item does not exist"):
        ItemTextTable.from_dataset(dataset)


def test_items_without_a_title_row(tmp_path):
    write_dataset(tmp_path, "partial", TITLES)
    item_file = tmp_path / "partial" / "partial.item"
    lines = item_file.read_text(encoding="utf-8").splitlines()
    item_file.write_text("\n".join(line for line in lines if not line.startswith("i4\t")) + "\n", encoding="utf-8")
    # (by default RecBole drops interactions with items missing from a loaded .item file; here it keeps them)
    dataset = load(tmp_path, "partial", filter_inter_by_user_or_item=False)
    with pytest.raises(ItemTitleError, match=r"1 of 5 items have no row .*'i4'"):
        ItemTextTable.from_dataset(dataset)


def test_empty_titles_are_named(tmp_path):
    write_dataset(tmp_path, "blank", {**TITLES, "i3": "", "i5": "  "})
    dataset = load(tmp_path, "blank")
    with pytest.raises(ItemTitleError, match=r"2 items have an empty 'title' in .*blank\.item \(e\.g\. \['i3', 'i5'\]"):
        ItemTextTable.from_dataset(dataset)


def test_duplicate_item_rows_are_refused_not_resolved(tmp_path):
    write_dataset(tmp_path, "twice", TITLES)
    item_file = tmp_path / "twice" / "twice.item"
    item_file.write_text(item_file.read_text(encoding="utf-8") + "i2\tA second title\tother\n", encoding="utf-8")
    dataset = load(tmp_path, "twice")
    with pytest.raises(AtomicFileError, match=r"more than one row for 1 item ids \(e\.g\. \['i2'\]\)"):
        ItemTextTable.from_dataset(dataset)


def test_a_tab_inside_a_title_names_the_line_not_a_missing_row(tmp_path):
    write_dataset(tmp_path, "tab", {**TITLES, "i2": "Left\tRight"})
    dataset = load(tmp_path, "tab")
    with pytest.raises(AtomicFileError, match=r"tab\.item, line 3: 4 fields where the header has 3"):
        ItemTextTable.from_dataset(dataset)
