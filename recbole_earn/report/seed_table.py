"""One markdown table over several group tables (e.g. one per seed): mean ± standard deviation per model.

    python -m recbole_earn.report.seed_table docs/results/ml-100k/recipe/*.json --metrics recall@10 ndcg@10

Rows are grouped by model and ranking source (a BIGRec blended with SASRec is not averaged with the LLM alone);
each line says how many runs (seeds) it averages, their mean training examples and training time.
"""

import argparse
import json
import statistics

DEFAULT_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def load_rows(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            rows += json.load(handle)
    return rows


def mean_std(values):
    """'0.0408' for one value, '0.0408 ± 0.0012' (sample standard deviation) for several."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def summarise(rows, metrics=DEFAULT_METRICS):
    """Markdown lines: model, ranking, runs, seeds, mean examples and training seconds, each metric's mean ± std."""
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row.get("ranking") or ""), []).append(row)
    header = ["model", "ranking", "runs", "train examples", "train s", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, ranking), group in groups.items():
        examples = [row["train_examples"] for row in group if row.get("train_examples") is not None]
        cells = [model, ranking, f"{len(group)} (seeds {', '.join(str(row.get('seed')) for row in group)})",
                 f"{statistics.mean(examples):.0f}" if examples else "",
                 f"{statistics.mean(row['train_time_s'] for row in group):.0f}"]
        cells += [mean_std([row[metric] for row in group]) for metric in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="group table JSON files (run_earn.py --group_output=...)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metrics to show")
    args = parser.parse_args(argv)
    print(summarise(load_rows(args.tables), args.metrics))


if __name__ == "__main__":
    main()
