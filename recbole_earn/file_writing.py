"""Files that readers never see half-written: result tables, search results, the item-index cache, checkpoints."""

import contextlib
import os


@contextlib.contextmanager
def replaced_atomically(path, newline=None, binary=False):
    """A text stream (a byte stream with binary=True) whose content replaces `path` when the block ends without an
    error. It is written to a temporary file beside `path` (named with this process's id) and renamed over it; on
    an error the temporary file is removed and `path` is left as it was."""
    temporary = f"{path}.tmp-{os.getpid()}"
    opened = open(temporary, "wb") if binary else open(temporary, "w", encoding="utf-8", newline=newline)
    try:
        with opened as stream:
            yield stream
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
