"""Shared fixtures: a scratch working directory (RecBole writes ./log, ./log_tensorboard and ./saved), small real
datasets cut from RecBole's bundled MovieLens-100K, and the device (and precision) a test runs on.

The device is a test parameter: "cpu" everywhere, and also "cuda" where a GPU is there, so the same tests run on
both. `device_dtype` adds the GPU recipe's bf16 (llm_dtype: bfloat16) for tests whose checks hold in bf16. On a
machine without a GPU each such test runs once, on the CPU, as it did before it took a device."""

import os

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# (device, llm_dtype): float32 on every device, and bf16 on the GPU, where the recipe trains and decodes in bf16.
PRECISIONS = [(device, "float32") for device in DEVICES] + (
    [("cuda", "bfloat16")] if torch.cuda.is_available() else []
)


@pytest.fixture(params=DEVICES)
def device(request):
    """torch.device the test runs on (RecBole config keys for it: recommender_helpers.device_keys)."""
    return torch.device(request.param)


@pytest.fixture(params=PRECISIONS, ids=[device if dtype == "float32" else f"{device}-{dtype}"
                                        for device, dtype in PRECISIONS])
def device_dtype(request):
    """(torch.device, llm_dtype name): the device, and the LLM's precision on it."""
    device, dtype = request.param
    return torch.device(device), dtype


def recbole_ml100k_dir():
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")


def write_ml100k_subset(data_path, name, n_users):
    """Copy the first `n_users` users of ml-100k (all their ratings) and every item row into
    `<data_path>/<name>/`, as RecBole atomic files. Returns the dataset folder."""
    source = recbole_ml100k_dir()
    folder = os.path.join(data_path, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(source, "ml-100k.inter"), encoding="utf-8") as src, open(
        os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8"
    ) as dst:
        dst.write(src.readline())
        for line in src:
            if int(line.split("\t", 1)[0]) <= n_users:
                dst.write(line)
    with open(os.path.join(source, "ml-100k.item"), encoding="utf-8") as src, open(
        os.path.join(folder, f"{name}.item"), "w", encoding="utf-8"
    ) as dst:
        dst.write(src.read())
    return folder


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh directory so RecBole's log/ and saved/ land there, not in the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def mini_ml100k(workdir):
    """{'data_path', 'dataset', 'config'}: 60 users of ml-100k with the item titles, and the config keys
    that load them the way properties/dataset/ml-100k.yaml does."""
    data_path = os.path.join(workdir, "data")
    write_ml100k_subset(data_path, "ml-mini", n_users=60)
    config = {
        "data_path": data_path,
        "TITLE_FIELD": "movie_title",
        "item_noun": "movies",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "movie_title"]},
        "user_inter_num_interval": "[5,inf)",
        "item_inter_num_interval": "[1,inf)",
        "show_progress": False,
        "checkpoint_dir": os.path.join(workdir, "saved"),
        "llm_dtype": "float32",  # exact comparisons; tests that check bf16 ask for it (device_dtype)
    }
    return {"data_path": data_path, "dataset": "ml-mini", "config": config}


def pytest_collection_modifyitems(items):
    """A test instance that runs on the GPU carries the `cuda` marker, so `pytest -m cuda` runs exactly those."""
    for item in items:
        params = getattr(item, "callspec", None)
        params = params.params if params else {}
        on_gpu = params.get("device") == "cuda" or params.get("device_dtype", ("",))[0] == "cuda"
        if on_gpu:
            item.add_marker(pytest.mark.cuda)


@pytest.fixture
def sasrec_checkpoint(mini_ml100k, device):
    """A one-epoch tiny SASRec trained on the test dataset by run_earn, as `run_earn.py --model=SASRec` would (on
    the test's device): the conventional model an LLM recommender's ranking is blended with."""
    from recbole_earn.quick_start import run_earn
    from recommender_helpers import device_keys, saved_checkpoint

    values = dict(mini_ml100k["config"], epochs=1, eval_step=0, hidden_size=16, inner_size=32, n_layers=1, n_heads=1,
                  **device_keys(device))
    run_earn(model="SASRec", dataset=mini_ml100k["dataset"], config_dict=dict(values, train_batch_size=512))
    return saved_checkpoint(values["checkpoint_dir"], "SASRec")
