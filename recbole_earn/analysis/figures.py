"""The attention analysis's figures, from the result dict that attention.json holds (matplotlib, Agg backend)."""

import os

SOURCES = (("rec", "recommendation prompts", "-"), ("text", "English text", "--"))


def pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("the attention figures need matplotlib: pip install 'matplotlib<3.10'") from error
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


def per_layer(result, source, metric):
    return [row[source][metric] for row in result["layers"]]


def plot_metric_pairs(plt, result, metrics, path, suptitle):
    """One panel per metric, each with a line per source (recommendation prompts, text) over the layers."""
    from matplotlib.ticker import MaxNLocator

    layers = [row["layer"] for row in result["layers"]]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8))
    for axis, (metric, label) in zip(axes, metrics):
        for source, source_label, style in SOURCES:
            axis.plot(layers, per_layer(result, source, metric), style, marker="o", markersize=3, label=source_label)
        axis.set_xlabel("layer")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(suptitle)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_attention_received(plt, result, path):
    """Layer x relative position heat map of the mean attention each key receives (recommendation prompts); a log
    colour scale, as the first tokens receive orders of magnitude more than the rest."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import MaxNLocator

    received = result["attention_received"]["rec"]  # [layers][bins]
    positive = [value for row in received for value in row if value > 0]
    bins = result["settings"]["position_bins"]
    figure, axis = plt.subplots(figsize=(7, 0.18 * len(received) + 2.5))
    norm = LogNorm(vmin=min(positive), vmax=max(positive)) if positive else None
    image = axis.imshow(received, aspect="auto", origin="lower", cmap="viridis", norm=norm,
                        extent=(0, 1, -0.5, len(received) - 0.5))
    axis.set_xlabel(f"relative key position j / L in [BOS] + prompt ({bins} bins)")
    axis.set_ylabel("layer")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_title("mean attention received per key (recommendation prompts)")
    figure.colorbar(image, ax=axis, label="attention per query that sees the key")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_figures(result, out_dir):
    """sparsity_entropy.png, sinks.png and attention_received.png in `out_dir`."""
    plt = pyplot()
    settings = result["settings"]
    where = f"{settings['model']} on {settings['dataset']} ({settings['llm_path']})"
    plot_metric_pairs(plt, result, [("sparsity", f"share of keys > {settings['sparsity_threshold']}"),
                                    ("entropy", "attention entropy (nats)")],
                      os.path.join(out_dir, "sparsity_entropy.png"), f"Attention sparsity and entropy: {where}")
    tokens = settings["sink_tokens"]
    plot_metric_pairs(plt, result, [("head_sink", f"mass on the first {tokens} tokens"),
                                    ("tail_sink", f"mass on the {tokens} tokens before the query")],
                      os.path.join(out_dir, "sinks.png"), f"Head and tail attention sinks: {where}")
    plot_attention_received(plt, result, os.path.join(out_dir, "attention_received.png"))
