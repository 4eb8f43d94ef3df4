"""Validation metric against training wall-clock time, plain and EARN models side by side, from group tables.

    python -m recbole_earn.report.learning_curves log/group/*.json --metric ndcg@10 --out curves.png
    python -m recbole_earn.report.learning_curves log/group/*.json --x examples --out per-example.png

Each JSON is a group table (`run_earn.py --model=A,B --group_output=...`) whose rows carry the trainer's
`training_curve` (one point per validation: training seconds so far, examples, the validation result). One
panel per model family (BIGRec and EARNBIGRec together, LCRec and EARNLCRec together); one line per run, a colour
per model and a line style per seed. `--x examples` puts the examples trained so far on the x axis, where plain
and EARN models compare per example instead of per second. Needs matplotlib (`pip install matplotlib`).
"""

import argparse
import json

EARN_PREFIX = "EARN"
X_AXES = {"seconds": ("train_seconds", "training time (s)"), "examples": ("examples", "training examples")}


def family(model):
    return model[len(EARN_PREFIX):] if model.startswith(EARN_PREFIX) else model


def load_curves(paths, metric, x="seconds"):
    """{family: [(model, seed, [(x value, metric value), ...]), ...]} over every row with a curve; `x` is a key
    of X_AXES."""
    x_key = X_AXES[x][0]
    families = {}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            table = json.load(handle)
        rows = table["rows"] if isinstance(table, dict) else table
        for row in rows:
            curve = row.get("training_curve") or []
            points = [(point[x_key], point["valid_result"][metric]) for point in curve]
            if points:
                families.setdefault(family(row["model"]), []).append((row["model"], row.get("seed"), points))
    return families


SEED_STYLES = [{"linestyle": "-", "marker": "o"}, {"linestyle": "--", "marker": "s"}, {"linestyle": ":", "marker": "^"},
               {"linestyle": "-.", "marker": "D"}]


def plot(families, metric, out, baselines=None, x="seconds"):
    """One panel per family; `baselines` ({label: value}) are drawn as horizontal lines in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(families)
    figure, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for axis, name in zip(axes[0], names):
        colours = {}
        seeds = sorted({seed for _, seed, _ in families[name]}, key=str)
        for model, seed, points in families[name]:
            colour = colours.setdefault(model, f"C{len(colours)}")  # one colour per model, one style per seed
            style = SEED_STYLES[seeds.index(seed) % len(SEED_STYLES)]
            label = model if seed is None else f"{model} (seed {seed})"
            xs, ys = zip(*points)
            axis.plot(xs, ys, color=colour, label=label, **style)
        for index, (label, value) in enumerate(sorted((baselines or {}).items())):
            axis.axhline(value, linestyle="--", color=f"C{index + 5}", label=label)
        axis.set_xlim(left=0)
        axis.set_title(f"{name} family")
        axis.set_xlabel(X_AXES[x][1])
        axis.set_ylabel(f"validation {metric}")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def parse_baseline(text):
    label, value = text.rsplit("=", 1)
    return label, float(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="group table JSON files whose rows carry training_curve")
    parser.add_argument("--metric", default="ndcg@10", help="validation metric to plot (default ndcg@10)")
    parser.add_argument("--x", choices=sorted(X_AXES), default="seconds",
                        help="the x axis: training seconds (default) or training examples so far")
    parser.add_argument("--baseline", action="append", type=parse_baseline, default=[],
                        help="a horizontal reference line, LABEL=VALUE (e.g. 'Pop (valid)=0.041'); repeatable")
    parser.add_argument("--out", required=True, help="image file to write (png or svg)")
    args = parser.parse_args(argv)
    families = load_curves(args.tables, args.metric, args.x)
    if not families:
        parser.error(f"no row of {', '.join(args.tables)} has a training_curve with {args.metric}")
    print(plot(families, args.metric, args.out, dict(args.baseline), args.x))


if __name__ == "__main__":
    main()
