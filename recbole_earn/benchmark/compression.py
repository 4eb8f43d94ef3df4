"""EARN beside the training-free ways to shrink a prompt or its KV cache, on one dataset, evaluator and machine.

Each method is a trained checkpoint plus inference knobs, evaluated on the test split by RecBole's full-ranking
evaluator: the training-free baselines (StreamingLLM, SnapKV, prompt compression) run on the plain fine-tuned
checkpoint, EARN and EARN + SnapKV on the EARN one. Speedup and KV reduction are against plain fine-tuning,
measured in the same run: end-to-end inference time per test user, and KV-cache bytes held per user at the end of
its generation.
"""

import csv
import json
import os
from dataclasses import dataclass, field

from recbole_earn.file_writing import replaced_atomically

COLUMNS = ("method", "budget", "speedup", "kv_reduction", "kv_mb_per_user", "infer_ms_per_user", "recall@10",
           "recall@20", "ndcg@10", "ndcg@20")


@dataclass
class Method:
    name: str
    budget: str  # what the method keeps, in words
    earn: bool  # the EARN checkpoint (else the plain one)
    knobs: dict = field(default_factory=dict)


def methods(budget, history_items, earn_k):
    """The rows of the comparison: plain fine-tuning first (the reference), then each method at `budget` (the
    share or count of prompt tokens a press keeps), `history_items` (prompt compression) and `earn_k` (SkipLayers
    runs the prompt through as many layers as EARN)."""
    kept = f"{budget:g} of the prompt" if budget < 1 else f"{budget:g} tokens"
    return [
        Method("plain fine-tuning", "all", earn=False),
        Method("StreamingLLM", kept, earn=False, knobs={"kv_press": "streaming_llm", "kv_press_budget": budget}),
        Method("SnapKV", kept, earn=False, knobs={"kv_press": "snapkv", "kv_press_budget": budget}),
        Method("SkipLayers", f"prompt in layers < {earn_k}", earn=False, knobs={"skip_prompt_layers_from": earn_k}),
        Method("prompt compression", f"last {history_items} items", earn=False,
               knobs={"inference_history_length": history_items}),
        Method("EARN", f"registers in layers >= {earn_k}", earn=True),
        Method("EARN + SnapKV", f"{kept} in layers < k", earn=True,
               knobs={"kv_press": "snapkv", "kv_press_budget": budget}),
    ]


def trained_earn_k(checkpoint):
    """The register layer an EARN checkpoint was trained with (recorded in its state dict)."""
    from recbole_earn.compat import read_checkpoint_file
    from recbole_earn.errors import UserInputError
    from recbole_earn.model.trained_setup import SETUP_KEY

    setup = read_checkpoint_file(checkpoint, map_location="cpu").get("state_dict", {}).get(SETUP_KEY) or {}
    if "earn_k" not in setup:
        raise UserInputError(f"{checkpoint} does not record the earn_k it was trained with (saved by an older "
                             "recbole-earn): give it with --skip_from")
    return setup["earn_k"]


def check_methods(model, dataset, rows, config_files=None, overrides=None):
    """Every row's config, checked before the first evaluation."""
    from recbole_earn.group_run import check_configs

    for method in rows:
        name = ("EARN" + model) if method.earn else model
        check_configs([name], dataset, config_file_list=config_files, config_dict={**(overrides or {}),
                                                                                 **method.knobs})


def evaluate_on_test(model, dataset, checkpoint, knobs, config_files=None):
    """(test metrics, inference ms per user, KV bytes per user) of `checkpoint` under `knobs`."""
    from recbole_earn.quick_start import run_earn

    result = run_earn(model, dataset, config_file_list=config_files, config_dict=knobs, checkpoint=checkpoint,
                      validate=False)
    ms_per_user = 1000.0 * result["test_time_s"] / max(result["test_users"], 1)
    return dict(result["test_result"]), ms_per_user, result["kv_bytes_per_user"]


def run_comparison(model, dataset, plain_checkpoint, earn_checkpoint, budget=0.5, history_items=5, skip_from=None,
                   config_files=None, overrides=None, log=print):
    """One row per method (see `methods`), plain fine-tuning first; speedup and KV reduction against it.
    skip_from: SkipLayers' k, by default the EARN checkpoint's."""
    base = {"topk": [10, 20], **(overrides or {})}
    rows = methods(budget, history_items, skip_from or trained_earn_k(earn_checkpoint))
    check_methods(model, dataset, rows, config_files, base)
    table = []
    for method in rows:
        name, checkpoint = ("EARN" + model, earn_checkpoint) if method.earn else (model, plain_checkpoint)
        log(f"# {method.name}: {name} from {checkpoint}, {method.knobs or 'no compression'}")
        metrics, ms_per_user, kv_bytes = evaluate_on_test(name, dataset, checkpoint, {**base, **method.knobs},
                                                          config_files)
        table.append({"method": method.name, "budget": method.budget, "model": name, "knobs": method.knobs,
                      "infer_ms_per_user": ms_per_user, "kv_mb_per_user": kv_bytes / 2 ** 20, **metrics})
    reference = table[0]
    for row in table:
        row["speedup"] = reference["infer_ms_per_user"] / row["infer_ms_per_user"]
        row["kv_reduction"] = 1.0 - row["kv_mb_per_user"] / reference["kv_mb_per_user"]
    return table


def markdown(table):
    from recbole_earn.group_run import format_cell

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(format_cell(row.get(name)) for name in COLUMNS) + " |" for row in table]
    return "\n".join(lines)


def write(table, stem):
    """`<stem>.md`, `.csv` (the table's columns) and `.json` (every field, knobs included), each written whole."""
    if os.path.dirname(stem):
        os.makedirs(os.path.dirname(stem), exist_ok=True)
    with replaced_atomically(stem + ".md") as handle:
        handle.write(markdown(table) + "\n")
    with replaced_atomically(stem + ".csv", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    with replaced_atomically(stem + ".json") as handle:
        json.dump(table, handle, indent=1)
    return [stem + suffix for suffix in (".md", ".csv", ".json")]
