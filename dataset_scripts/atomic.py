"""Writing RecBole atomic files: the field format, and all-or-nothing replacement of a dataset's files.

Format (what RecBole 1.2.1's `Dataset._load_feat` reads): UTF-8, '\\n' line endings, one header line of
`name:type` fields, fields separated by a tab, `token_seq` values separated by a single space.

A tab, newline or CR inside a value would split the row or the record, so each becomes one space; that is the
only change made to text (titles otherwise stay byte-for-byte as in the source). There is no CSV quoting: a
value is written as it is, quotes included, and recbole-earn reads these files that way (its item title table
splits lines on tabs, and `recbole_earn.compat` makes RecBole read them with `quoting=csv.QUOTE_NONE`). Plain
RecBole reads with pandas' default CSV quoting instead, so there a value that *starts* with a double quote
(e.g. an Amazon title like `"Weird Al" Yankovic`) fails to load or is mangled; the Amazon converter counts such
titles (`starts_with_quote`) in its summary.
"""

import os
import tempfile

LINE_BREAKING_CHARACTERS = ("\t", "\n", "\r")
SEQ_SEPARATOR = " "  # RecBole's default `seq_separator`


def clean_text(value):
    """Replace each tab/newline/CR by one space: they would break the tab-separated, line-based format."""
    for character in LINE_BREAKING_CHARACTERS:
        value = value.replace(character, " ")
    return value


def starts_with_quote(value):
    """True for text that plain RecBole (pandas with CSV quoting) cannot read back unchanged."""
    return value.startswith('"')


def format_number(value):
    """Integral numbers without a trailing '.0' (timestamps, 1-5 ratings), other floats by repr."""
    number = float(value)
    if number.is_integer():
        return str(int(number))
    return repr(number)


def format_value(value, field_type):
    """One value as it appears in an atomic file. Lists are joined for `*_seq` fields."""
    if value is None:
        return ""
    if field_type in ("float", "float_seq"):
        if isinstance(value, (list, tuple)):
            return SEQ_SEPARATOR.join(format_number(number) for number in value)
        return format_number(value)
    if isinstance(value, (list, tuple)):
        value = SEQ_SEPARATOR.join(clean_text(str(element)) for element in value)
    return clean_text(str(value))


def write_table(binary_file, fields, rows):
    """Write a header (`fields`: list of (name, type)) and `rows` (tuples in field order) as UTF-8 lines."""
    types = [field_type for _, field_type in fields]
    header = "\t".join(f"{name}:{field_type}" for name, field_type in fields)
    binary_file.write((header + "\n").encode("utf-8"))
    lines = []
    for row in rows:
        lines.append("\t".join(format_value(value, field_type) for value, field_type in zip(row, types)))
        if len(lines) >= 10000:
            binary_file.write(("\n".join(lines) + "\n").encode("utf-8"))
            lines = []
    if lines:
        binary_file.write(("\n".join(lines) + "\n").encode("utf-8"))


def _missing_ancestors(directory):
    """The folders `os.makedirs(directory)` would create, deepest first (to remove them again on failure)."""
    missing = []
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _default_file_mode():
    """mkstemp creates 0600 files; give the final files the usual mode under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_files_atomically(directory, writers):
    """Create or replace files in `directory` all together: `writers` maps a file name to a function that
    writes its content into a binary file object. Every file is written to a temporary file in `directory`
    first; only when all are complete are they renamed over the targets (os.replace, atomic per file on
    POSIX). On any failure the temporary files, and folders created here, are removed: nothing half-written
    is left behind. Returns the final paths."""
    created_folders = _missing_ancestors(directory)
    os.makedirs(directory, exist_ok=True)
    temporary_paths = {}
    try:
        for file_name, write in writers.items():
            descriptor, temporary_path = tempfile.mkstemp(dir=directory, prefix=f".{file_name}.", suffix=".tmp")
            temporary_paths[file_name] = temporary_path
            with os.fdopen(descriptor, "wb") as binary_file:
                write(binary_file)
                binary_file.flush()
                os.fsync(binary_file.fileno())
            os.chmod(temporary_path, _default_file_mode())
    except BaseException:
        for temporary_path in temporary_paths.values():
            if os.path.exists(temporary_path):
                os.remove(temporary_path)
        for folder in created_folders:
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise
    final_paths = []
    for file_name, temporary_path in temporary_paths.items():
        final_path = os.path.join(directory, file_name)
        os.replace(temporary_path, final_path)
        final_paths.append(final_path)
    return final_paths


def write_atomic_dataset(out_dir, dataset_name, tables):
    """Write `<out_dir>/<dataset_name>/<dataset_name>.<suffix>` for each suffix in `tables`
    ({"inter": (fields, rows), "item": (fields, rows)}), all or nothing. Returns the final paths."""
    directory = os.path.join(out_dir, dataset_name)

    def table_writer(fields, rows):
        # looked up at call time so that tests can make the writer fail part-way
        return lambda binary_file: write_table(binary_file, fields, rows)

    writers = {
        f"{dataset_name}.{suffix}": table_writer(fields, rows) for suffix, (fields, rows) in tables.items()
    }
    return write_files_atomically(directory, writers)
