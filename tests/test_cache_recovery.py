"""Caches that a killed or broken run left behind: a truncated LC-Rec item index is rebuilt with a warning naming
it, and the temporary folders of killed backbone conversions are removed by the next run."""

import json
import logging
import os
import subprocess
import sys
import time

import torch

from recbole_earn.indexing.item_index import IndexSettings, build_item_index
from recbole_earn.llm import backbone

SETTINGS = IndexSettings(levels=2, codebook_size=4, code_dim=4, epochs=3)
ITEM_TOKENS = ["[PAD]"] + [str(item) for item in range(1, 17)]
ITEM_TEXTS = [""] + [f"item {item}" for item in range(1, 17)]


def build_index(folder, embed_calls):
    def embed(texts):
        embed_calls.append(len(texts))
        return torch.randn(len(texts), 8, generator=torch.Generator().manual_seed(0))

    return build_item_index(ITEM_TEXTS, ITEM_TOKENS, embed, SETTINGS, str(folder), "toy", "tiny-llama",
                            logger=logging.getLogger("item-index-test"))


def test_a_truncated_item_index_is_rebuilt_with_a_warning(tmp_path, caplog):
    calls = []
    first = build_index(tmp_path, calls)
    (path,) = [tmp_path / name for name in os.listdir(tmp_path) if name.endswith(".json")]
    path.write_text(path.read_text()[:40])  # cut off mid-way, as a full disk or a partial copy leaves it

    with caplog.at_level(logging.WARNING, logger="item-index-test"):
        rebuilt = build_index(tmp_path, calls)

    assert calls == [16, 16]  # embedded again instead of a bare JSONDecodeError
    assert f"item index: {path} is unreadable" in caplog.text and "rebuilding it" in caplog.text
    assert rebuilt.codes == first.codes
    assert json.loads(path.read_text())["codes"]["1"] == first.codes[1]  # the file is whole again
    assert build_index(tmp_path, calls).codes == first.codes and calls == [16, 16]  # and reused


def dead_process_id():
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    return int(finished.stdout)


def test_leftovers_of_killed_conversions_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOLE_EARN_CACHE", str(tmp_path))
    killed = tmp_path / f"gguf-0123456789ab.tmp-{dead_process_id()}-k1ll3d_x"
    running = backbone._cache_tmp_dir(str(tmp_path / "smollm2-135m"))  # this process: a conversion going on
    old_unowned = tmp_path / "smollm2-135m-tokenizer.tmp-abcd_123"  # the naming of earlier versions
    new_unowned = tmp_path / "gguf-0123456789ab.tmp-efgh_456"
    others = [tmp_path / "item_index", tmp_path / "notes.tmp-folder"]
    for folder in [killed, old_unowned, new_unowned] + others:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    hour_ago = time.time() - 2 * 3600
    os.utime(old_unowned, (hour_ago, hour_ago))
    target = tmp_path / "converted"
    target.mkdir()
    (target / "config.json").write_text("{}")

    assert backbone.gguf_to_hf_folder("unused.gguf", cache_name="converted") == str(target)  # a later run

    assert sorted(os.listdir(tmp_path)) == sorted(
        ["converted", os.path.basename(running), new_unowned.name] + [folder.name for folder in others])
