"""RecBole's data loading, as recbole-earn runs it, gives the same features under pandas 2 and 3: token sequences
keep their length row by row, and a missing float value gets its column's mean."""

import numpy as np
import pytest
from recbole.data import create_dataset

from recbole_earn.config import Config

INTERACTIONS = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"] + [
    f"u{user}\ti{item}\t{rating}\t{time}"
    for time, (user, item, rating) in enumerate([(1, 1, 4), (1, 2, ""), (1, 3, 2), (2, 1, 5), (2, 3, 3), (3, 2, 1)])
]
ITEMS = ["item_id:token\tgenre:token_seq", "i1\tAction Comedy Drama", "i2\tDrama", "i3\tComedy Horror"]


@pytest.fixture
def tiny_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # RecBole writes ./log
    folder = tmp_path / "data" / "tiny"
    folder.mkdir(parents=True)
    (folder / "tiny.inter").write_text("\n".join(INTERACTIONS) + "\n")
    (folder / "tiny.item").write_text("\n".join(ITEMS) + "\n")
    config = Config(model="Pop", dataset="tiny", config_dict={
        "data_path": str(tmp_path / "data"), "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"],
                                                          "item": ["item_id", "genre"]},
        "user_inter_num_interval": None, "item_inter_num_interval": None, "show_progress": False})
    return create_dataset(config)


def test_token_sequences_keep_their_length_row_by_row(tiny_dataset):
    genres = tiny_dataset.item_feat["genre"]  # [items + padding, longest], 0 = padding
    names = tiny_dataset.field2id_token["genre"]
    by_item = {tiny_dataset.id2token("item_id", i): [names[g] for g in row.tolist() if g] for i, row in
               enumerate(genres) if i}
    assert by_item == {"i1": ["Action", "Comedy", "Drama"], "i2": ["Drama"], "i3": ["Comedy", "Horror"]}


def test_a_missing_float_gets_its_columns_mean(tiny_dataset):
    ratings = np.asarray(tiny_dataset.inter_feat["rating"], dtype=float)
    assert not np.isnan(ratings).any()
    assert sorted(ratings.tolist()) == [1.0, 2.0, 3.0, 3.0, 4.0, 5.0]  # the missing one: mean of 4, 2, 5, 3, 1
