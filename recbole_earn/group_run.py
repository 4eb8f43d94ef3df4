"""Group runs: several models, one dataset, one split, seed and evaluator, and one comparison table.

`python run_earn.py --model=SASRec,GRU4Rec,BIGRec,EARNBIGRec --dataset=ml-100k` runs each model through
`run_earn` with the same configuration layers (only the model's own yaml differs) and writes the table as
markdown on stdout and as CSV and JSON files. Every row names its evaluation protocol (split, order, grouping,
mode, whether past items were left out); the markdown prints it once above the table when the rows share it.
"""

import csv
import json
import os
import tempfile
import time

from recbole_earn.errors import ConfigError, UserInputError
from recbole_earn.file_writing import replaced_atomically

EARN_PREFIX = "EARN"
CURVE = "training_curve"  # validation points during training: in the JSON only, not a table column
FIXED_COLUMNS = ("model", "train_time_s", "infer_ms_per_user", "kv_bytes_per_user", "earn_speedup")


def parse_model_list(text):
    """'SASRec, EARNBIGRec' -> ['SASRec', 'EARNBIGRec']; a name given twice is an error (its rows would clash)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--model needs at least one model name, got {text!r}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--model lists {', '.join(repeated)} more than once")
    return names


def result_row(result):
    """One table row from a `run_earn` result: the test metrics, training time, inference time per user, and the
    validation score the best epoch was picked by (`valid_metric`)."""
    row = {
        "model": result["model"],
        "train_time_s": result["train_time_s"],
        "infer_ms_per_user": 1000.0 * result["test_time_s"] / max(result["test_users"], 1),
        "kv_bytes_per_user": result.get("kv_bytes_per_user"),
        "earn_speedup": None,
    }
    for key in ("seed", "ranking", "best_valid_score", "train_examples", "train_examples_per_s", CURVE):
        if result.get(key) is not None:
            row[key] = result[key]
    row.update(result["test_result"])
    row["protocol"] = describe_protocol(result["eval_args"], result["past_items_excluded"])
    return row


def describe_protocol(eval_args, past_items_excluded):
    """RecBole's eval_args in one line: 'split LS valid_and_test, order TO, group_by user, mode full, past items
    excluded'."""
    split = "; ".join(f"{kind} {_split_value(value)}" for kind, value in eval_args["split"].items())
    modes = eval_args["mode"]
    mode = modes["test"] if modes["valid"] == modes["test"] else f"valid {modes['valid']} / test {modes['test']}"
    text = f"split {split}, order {eval_args['order']}, group_by {eval_args['group_by']}, mode {mode}"
    if past_items_excluded is not None:
        text += ", past items excluded" if past_items_excluded else ", past items ranked"
    return text


def _split_value(value):
    return ":".join(str(part) for part in value) if isinstance(value, (list, tuple)) else str(value)


def add_earn_speedups(rows):
    """For each EARN<X> row whose plain <X> is in the group: <X>'s inference time per user / EARN<X>'s."""
    by_model = {row["model"]: row for row in rows}
    for row in rows:
        plain = by_model.get(row["model"][len(EARN_PREFIX):]) if row["model"].startswith(EARN_PREFIX) else None
        if plain is not None and row["infer_ms_per_user"] > 0:
            row["earn_speedup"] = plain["infer_ms_per_user"] / row["infer_ms_per_user"]
    return rows


def columns(rows):
    """The fixed columns, then every metric in the order RecBole reported it (union over the rows)."""
    names = list(FIXED_COLUMNS)
    for row in rows:
        names += [key for key in row if key not in names and key != CURVE]
    return names


def format_cell(value):
    """A table cell: '-' for no value, 4 decimals below 10, 1 above."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(rows):
    """The rows as markdown; a protocol the rows share is printed once above the table instead of per row."""
    header = columns(rows)
    lines = []
    protocols = {row.get("protocol") for row in rows}
    if len(protocols) == 1 and None not in protocols:
        header.remove("protocol")
        lines.append(f"protocol: {protocols.pop()}\n")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_cell(row.get(name)) for name in header) + " |" for row in rows]
    return "\n".join(lines)


def write_table(rows, path_stem):
    """Write `<path_stem>.csv` and `<path_stem>.json` (each through a temporary file, then renamed)."""
    folder = os.path.dirname(path_stem)
    if folder:
        os.makedirs(folder, exist_ok=True)
    header = columns(rows)
    for suffix, write in ((".csv", _write_csv), (".json", _write_json)):
        with replaced_atomically(path_stem + suffix, newline="") as handle:
            write(handle, header, rows)
    return path_stem + ".csv", path_stem + ".json"


def check_table_writable(path_stem):
    """Create the table's folder and write a scratch file there now, so a bad path fails before any training."""
    folder = os.path.dirname(path_stem) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserInputError(
            f"cannot write the table {path_stem}.csv/.json: {error.strerror or error} ({folder}); "
            "choose another --group_output"
        ) from error


def _write_csv(handle, header, rows):
    writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")  # the curve is in the JSON only
    writer.writeheader()
    writer.writerows(rows)


def _write_json(handle, header, rows):
    json.dump([{name: row.get(name) for name in header + ([CURVE] if CURVE in row else [])} for row in rows],
              handle, indent=1)


def default_output_stem(dataset):
    return os.path.join("log", "group", f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}")


def check_configs(models, dataset, config_file_list=None, config_dict=None, cmd_args=None):
    """Build every model's Config and run the checks a model makes of its config alone (`check_config`), so a
    mistake fails before hours of training, not after. A value RecBole's Config refuses is a ConfigError."""
    from recbole_earn import model_contract
    from recbole_earn.config import Config

    for name in models:
        try:
            config = Config(model=name, dataset=dataset, config_file_list=config_file_list,
                            config_dict=config_dict, cmd_args=cmd_args)
        except (ValueError, KeyError, TypeError, NotImplementedError) as error:
            if isinstance(error, ConfigError):
                raise
            reason = error.args[0] if len(error.args) == 1 else error  # a KeyError's str() adds quotes
            raise ConfigError(f"{name}: {reason}") from error
        model_contract.check_config(config.model_class, config)


def run_group(models, dataset, config_file_list=None, config_dict=None, cmd_args=None, output_stem=None,
              checkpoint=None):
    """Train and evaluate every model of `models` on `dataset`; returns (rows, (csv_path, json_path)).
    `checkpoint` (one model only): evaluate that saved model instead of training it.

    Every config and the output path are checked first. The table is rewritten after each model, so a later
    failure keeps the finished rows: they are printed, then the failure is raised again."""
    from recbole_earn.quick_start import run_earn

    if checkpoint is not None and len(models) != 1:
        raise ConfigError(f"a checkpoint is the trained weights of one model; got {len(models)} models")
    output_stem = output_stem or default_output_stem(dataset)
    check_configs(models, dataset, config_file_list, config_dict, cmd_args)
    check_table_writable(output_stem)
    rows, paths = [], None
    for name in models:
        try:
            result = run_earn(
                model=name, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict,
                cmd_args=cmd_args, checkpoint=checkpoint,
            )
            rows.append(result_row(result))
            add_earn_speedups(rows)
            paths = write_table(rows, output_stem)
        except BaseException:  # Ctrl-C too: the finished rows are shown before the failure
            report_finished_rows(rows, paths, stopped_at=name)
            raise
    return rows, paths


def report_finished_rows(rows, paths, stopped_at):
    """The rows a group run finished before it stopped at model `stopped_at`, on stdout (the error follows)."""
    if not rows:
        return
    print(markdown_table(rows))
    saved = f"; table written to {paths[0]} and {paths[1]}" if paths else ""
    print(f"the group stopped at {stopped_at} after {len(rows)} finished model(s){saved}", flush=True)
