"""Cleaning Amazon metadata text (titles, brands, categories) the way BIGRec and LC-Rec prepare it.

A title is kept exactly as written except that HTML entities are decoded (repeatedly, for double-escaped text
such as `&amp;amp;`) and runs of whitespace (including tabs, newlines and non-breaking spaces) become one space,
trimmed at both ends. An item whose title is not usable is dropped; `title_problem` says why.
"""

import html

# Junk that the 2018 metadata carries instead of a title: scraped HTML (`<span class=...>`) and page
# JavaScript (`var aPageStart = (new Date()).getTime();`).
HTML_PREFIX = "<"
JAVASCRIPT_MARKER = "getTime"

# Whole values that pandas.read_csv (RecBole's reader) turns into NaN by default: such a title would load as an
# empty title. These are pandas' default `na_values`.
PANDAS_MISSING_VALUE_STRINGS = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
     "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)
MAX_UNESCAPE_ROUNDS = 10


def unescape_html(text):
    """Decode HTML entities until the text stops changing (`&amp;amp;` -> `&amp;` -> `&`)."""
    for _ in range(MAX_UNESCAPE_ROUNDS):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    return text


def collapse_whitespace(text):
    """Every run of whitespace (str.split's definition, so also tabs, newlines, NBSP) becomes one space."""
    return " ".join(text.split())


def clean_text(value):
    """Unescaped, whitespace-collapsed text; '' for anything that is not a string."""
    if not isinstance(value, str):
        return ""
    return collapse_whitespace(unescape_html(value))


def title_problem(title):
    """Why a cleaned title is not usable ('empty', 'html', 'javascript', 'reads as missing'), or None if it is."""
    if not title:
        return "empty"
    if title.startswith(HTML_PREFIX):
        return "html"
    if JAVASCRIPT_MARKER in title:
        return "javascript"
    if title in PANDAS_MISSING_VALUE_STRINGS:
        return "reads as missing"
    return None


def clean_categories(values):
    """Cleaned category names, HTML junk and repeats dropped, each made one `token_seq` element by joining its
    words with '_' (RecBole splits token_seq values on spaces: "Video Games" would become two tokens)."""
    if not isinstance(values, (list, tuple)):
        return []
    categories = []
    for value in values:
        if isinstance(value, (list, tuple)):  # the 2014 release nests category paths
            categories.extend(clean_categories(value))
            continue
        name = clean_text(value)
        if not name or name.startswith(HTML_PREFIX):
            continue
        name = name.replace(" ", "_")
        if name not in categories:
            categories.append(name)
    return categories
