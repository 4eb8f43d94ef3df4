"""Training examples per second of LLM recommenders on real ml-100k batches, one row per setting.

    python docs/results/ml-100k/recipe/training_throughput.py [--steps 6] [--json PATH] \
        "EARNLCRec" "EARNLCRec earn_k=8" "EARNLCRec prompt_template=None" "LCRec"

Each setting is a model name and config overrides as on run_earn.py's command line (key=value, quoted with shlex
rules where a value has spaces). Each step is one full optimizer step (loss, backward, AdamW) on the next batch of
the training loader; the first step is a warm-up and the median of the others is reported. Run it with nothing else
on the CPU.
"""

import argparse
import json
import logging
import shlex
import statistics
import time

import torch

from recbole_earn.config import Config
from recbole_earn.quick_start import build_model, prepare_data


def seconds_per_step(model, batches, steps):
    """Median seconds of a training step over `steps` steps after one warm-up step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    for _ in range(steps + 1):
        batch = next(batches)
        start = time.perf_counter()
        model.calculate_loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def measure(setting, steps):
    """One table row for `setting` ("Model key=value ...")."""
    model_name, *pairs = shlex.split(setting)
    overrides = dict(pair.split("=", 1) for pair in pairs)
    config = Config(model=model_name, dataset="ml-100k", cmd_args=overrides)
    _, train_data, _, _ = prepare_data(config)
    model = build_model(config, train_data, logging.getLogger())
    prompt_tokens = statistics.mean(len(prompt) for prompt in model.prompts(next(iter(train_data))))
    step_s = seconds_per_step(model, iter(train_data), steps)
    return {"setting": setting, "earn_k": model.llm.earn_k, "prompt_tokens": round(prompt_tokens, 1),
            "s_per_step": round(step_s, 3), "batch": config["train_batch_size"],
            "examples_per_s": round(config["train_batch_size"] / step_s, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", help='"Model key=value ..." per row')
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setting (after one warm-up step)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    rows = [measure(setting, args.steps) for setting in args.settings]
    print("| setting | k | prompt tokens | s per step | batch | examples/s |\n| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['setting']} | {row['earn_k']} | {row['prompt_tokens']} | {row['s_per_step']} | {row['batch']} "
              f"| {row['examples_per_s']} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
