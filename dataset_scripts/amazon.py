"""amazon-games: Amazon Video Games reviews, 2018 release (Jianmo Ni et al.), as RecBole atomic files.

Inputs (one JSON object per line, gzip-compressed or plain):
- reviews: `Video_Games_5.json.gz` (5-core) or the full `Video_Games.json.gz`; keys `reviewerID`, `asin`,
  `overall`, `unixReviewTime`, ...
- metadata: `meta_Video_Games.json.gz`; keys `asin`, `title`, `brand`, `category` (list), ... Some lines of the
  2018 metadata are Python dict literals rather than JSON, so a line that is not JSON is read with
  `ast.literal_eval` (never `eval`).

Steps, as BIGRec and LC-Rec prepare the data:
1. titles: HTML entities decoded (until stable), whitespace collapsed; items whose title is missing, empty,
   scraped HTML (starts with '<'), page JavaScript (contains 'getTime'), or a word pandas reads as missing
   ('NaN', 'null', ...) are dropped, with the reviews of those items. The first usable entry of an asin wins.
2. identical (user, item, timestamp) reviews are kept once.
3. iterative k-core on users and items (default 5).
4. chronological order: sorted by user, then timestamp (stable).
Items that share a title (often one game on several platforms) stay distinct items; the summary counts them.
Output: `amazon-games.inter` (user_id = reviewerID, item_id = asin) and `amazon-games.item` with `title`, and
`brand:token` / `categories:token_seq` when any kept item has them.
"""

import ast
import gzip
import json
import os
import zlib
from collections import Counter

from dataset_scripts.atomic import starts_with_quote
from dataset_scripts.kcore import iterative_k_core
from dataset_scripts.sources import MissingSourceError, require_files
from dataset_scripts.text_cleaning import clean_categories, clean_text, title_problem

DATASET_NAME = "amazon-games"
REVIEW_FILE_NAMES = ("Video_Games_5.json.gz", "Video_Games.json.gz")  # preferred first
META_FILE_NAME = "meta_Video_Games.json.gz"
DEFAULT_K_CORE = 5
DOWNLOAD_PAGE = "https://nijianmo.github.io/amazon/index.html"
HOW_TO_GET = (
    f"Download the Video Games files of the Amazon Review Data (2018) from {DOWNLOAD_PAGE} "
    f"(`{REVIEW_FILE_NAMES[0]}` or the full `{REVIEW_FILE_NAMES[1]}`, and `{META_FILE_NAME}`) "
    "and pass their folder as --source-dir, or each file with --reviews PATH and --meta PATH."
)

INTER_FIELDS = [("user_id", "token"), ("item_id", "token"), ("rating", "float"), ("timestamp", "float")]


def locate_sources(source_dir=".", reviews_path=None, meta_path=None):
    """The reviews and metadata paths to read: explicit paths win, else the official file names in
    `source_dir`. Raises MissingSourceError naming what was expected."""
    if reviews_path is None:
        candidates = [os.path.join(source_dir, name) for name in REVIEW_FILE_NAMES]
        reviews_path = next((path for path in candidates if os.path.isfile(path)), candidates[0])
        if not os.path.isfile(reviews_path):
            listed = " or ".join(os.path.abspath(path) for path in candidates)
            missing_meta = meta_path is None and not os.path.isfile(os.path.join(source_dir, META_FILE_NAME))
            also = f"\n  and {os.path.abspath(os.path.join(source_dir, META_FILE_NAME))}" if missing_meta else ""
            raise MissingSourceError(f"missing source file(s):\n  {listed}{also}\n{HOW_TO_GET}")
    if meta_path is None:
        meta_path = os.path.join(source_dir, META_FILE_NAME)
    require_files([reviews_path, meta_path], HOW_TO_GET)
    return reviews_path, meta_path


def open_text(path):
    """A text stream over a gzip-compressed (by its magic bytes) or plain UTF-8 file."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def parse_record(line):
    """One record: JSON, or a Python dict literal for the non-strict lines of the 2018 metadata; None if
    neither parses."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        pass
    try:
        record = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def read_records(path, counts, label):
    """Yield the dict records of a JSON-lines file; counts unparsable lines under `<label> unparsable`. A file
    that cannot be read through (corrupt or truncated gzip, not UTF-8, one JSON array) raises ValueError naming it."""
    try:
        with open_text(path) as text_file:
            for number, line in enumerate(text_file, start=1):
                line = line.strip()
                if not line:
                    continue
                if number == 1 and line.startswith("["):
                    raise ValueError(
                        f"{path} holds one JSON array; the converter reads JSON lines (one object per line), as "
                        "Amazon's files come: convert it, e.g. with `jq -c '.[]'`."
                    )
                record = parse_record(line)
                if record is None:
                    counts[f"{label} lines unparsable"] += 1
                    continue
                yield record
    except (zlib.error, EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path} is a damaged or truncated gzip file ({error}); download it again.") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}).") from None


def read_item_metadata(meta_path, counts):
    """{asin: (title, brand, categories)} for items with a usable title; counts the dropped ones by reason."""
    items = {}
    rejected = set()
    for record in read_records(meta_path, counts, "metadata"):
        asin = record.get("asin")
        if not isinstance(asin, str) or not asin or asin in items:
            continue
        title = clean_text(record.get("title"))
        problem = title_problem(title)
        if problem is not None:
            rejected.add((asin, problem))
            continue
        categories = clean_categories(record.get("category", record.get("categories")))
        items[asin] = (title, clean_text(record.get("brand")), categories)
    for asin, problem in rejected:
        if asin not in items:
            counts[f"items dropped: title {problem}"] += 1
    return items


def read_reviews(reviews_path, titled_items, counts):
    """(user, item, rating, timestamp) tuples of items with a usable title, identical rows kept once."""
    interactions = []
    seen = set()
    for record in read_records(reviews_path, counts, "reviews"):
        try:
            user, item = record["reviewerID"], record["asin"]
            rating, timestamp = float(record["overall"]), int(record["unixReviewTime"])
        except (KeyError, TypeError, ValueError):
            counts["reviews without user, item, rating or time"] += 1
            continue
        counts["reviews read"] += 1
        if item not in titled_items:
            counts["reviews dropped: item without usable title or metadata"] += 1
            continue
        key = (user, item, timestamp)
        if key in seen:
            counts["reviews dropped: duplicate (user, item, timestamp)"] += 1
            continue
        seen.add(key)
        interactions.append((user, item, rating, timestamp))
    return interactions


def item_table(items, metadata):
    """Item fields and rows (sorted by asin); brand and categories only if some item has them."""
    with_brand = any(metadata[item][1] for item in items)
    with_categories = any(metadata[item][2] for item in items)
    fields = [("item_id", "token"), ("title", "token_seq")]
    fields += [("brand", "token")] if with_brand else []
    fields += [("categories", "token_seq")] if with_categories else []
    rows = []
    for item in sorted(items):
        title, brand, categories = metadata[item]
        row = (item, title) + ((brand,) if with_brand else ()) + ((categories,) if with_categories else ())
        rows.append(row)
    return fields, rows


def load(source_dir=".", reviews_path=None, meta_path=None, k_core=DEFAULT_K_CORE):
    """(tables for write_atomic_dataset, counts) for amazon-games. Raises MissingSourceError before reading
    anything, ValueError when nothing is left."""
    reviews_path, meta_path = locate_sources(source_dir, reviews_path, meta_path)
    counts = Counter()
    metadata = read_item_metadata(meta_path, counts)
    interactions = read_reviews(reviews_path, metadata, counts)
    before_k_core = len(interactions)
    interactions = iterative_k_core(interactions, k_core)
    counts[f"reviews dropped: {k_core}-core"] = before_k_core - len(interactions)
    if not interactions:
        raise ValueError(
            f"no interactions left from {reviews_path} and {meta_path} after dropping untitled items and "
            f"{k_core}-core filtering ({dict(counts)}); check the files, or lower --k-core."
        )
    interactions.sort(key=lambda row: (row[0], row[3]))  # stable: ties keep file order
    items = {row[1] for row in interactions}
    title_counts = Counter(metadata[item][0] for item in items)
    shared = sum(count for count in title_counts.values() if count > 1)
    if shared:  # kept apart: different asins are different products (often platforms or editions)
        counts["kept items whose title another kept item also has"] = shared
    quoted = sum(starts_with_quote(metadata[item][0]) for item in items)
    if quoted:
        counts["kept titles starting with '\"' (need recbole-earn's reader; plain RecBole misreads them)"] = quoted
    tables = {"inter": (INTER_FIELDS, interactions), "item": item_table(items, metadata)}
    return tables, counts
