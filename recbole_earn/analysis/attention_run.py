"""The attention analysis of the EARN paper on a recbole-earn LLM recommender: per layer, how its plain backbone
attends over real recommendation prompts and over English text of the same token lengths.

The prompts are the model's own (`model.prompts(interaction)`) for the test split's users. Each prompt runs alone,
as [BOS] + prompt tokens, through the plain backbone (every layer, no EARN registers, no padding) with eager
attention, which returns the attention probabilities; the model's LoRA weights and added token rows (LC-Rec's
codes) are those of the checkpoint, or of the untrained model (LoRA at identity) without one. The text is chunks
of `pride_and_prejudice.txt` (Jane Austen, chapters 1-10, public domain), one per prompt, of its token length.
"""

import contextlib
import json
import logging
import os

import torch

from recbole_earn.analysis import attention_stats as stats
from recbole_earn.compat import read_checkpoint_file, require_checkpoint_file
from recbole_earn.data.prompts import tokenize
from recbole_earn.errors import ConfigError, UserInputError
from recbole_earn.llm.eval_mode import eval_mode

TEXT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pride_and_prejudice.txt")
TEXT_SOURCE = "Jane Austen, Pride and Prejudice, chapters 1-10 (public domain, Project Gutenberg's text)"
METRIC_FUNCTIONS = {"sparsity": stats.sparsity, "entropy": stats.entropy, "head_sink": stats.head_sink,
                    "tail_sink": stats.tail_sink}
METRICS = tuple(METRIC_FUNCTIONS)
QUERY_MODES = {
    "all": f"every query position >= {2 * stats.SINK_TOKENS} (BOS is position 0)",
    "last": "the prompt's last position only",
}

logger = logging.getLogger(__name__)


def check_llm_recommender(model_class):
    """Only recbole-earn's LLM recommenders build prompts from item titles and run a backbone to analyse."""
    from recbole_earn.model.llm_recommender import LLMRecommender

    if not (isinstance(model_class, type) and issubclass(model_class, LLMRecommender)):
        name = getattr(model_class, "__name__", model_class)
        raise ConfigError(
            f"the attention analysis needs an LLM recommender (BIGRec, EARNBIGRec, LCRec, EARNLCRec); {name} is not "
            "one: it has no prompts built from item titles and no LLM backbone"
        )


def prepare_out_dir(path):
    """Create the output folder now, so that a path that cannot be written fails before any model is built."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"--out {path} cannot be created: {error}") from error
    if not os.access(path, os.W_OK):
        raise UserInputError(f"--out {path} is not writable")


def load_checkpoint(model, path):
    """Load a RecBole checkpoint's trained weights; a checkpoint of another setup is refused by the model."""
    checkpoint = read_checkpoint_file(path, map_location="cpu")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserInputError(f"--checkpoint {path} is not a RecBole checkpoint (a dict with a 'state_dict')")
    model.load_trained_state_dict(checkpoint["state_dict"])


def recommendation_prompts(model, test_data, count):
    """Prompt token ids (without BOS) of the first `count` rows of the test split, built by the model itself."""
    prompts = []
    for batch in test_data:
        interaction = batch[0] if isinstance(batch, tuple) else batch  # full-ranking loaders yield tuples
        prompts.extend(model.prompts(interaction))
        if len(prompts) >= count:
            break
    if not prompts:
        raise UserInputError("the test split has no users to build prompts for")
    if len(prompts) < count:
        logger.warning(f"the test split has {len(prompts)} users: analysing {len(prompts)} prompts, not {count}")
    return prompts[:count]


def text_chunks(text_ids, lengths):
    """One chunk of `text_ids` per length, taken one after another (back to the start when the text runs out)."""
    if max(lengths) > len(text_ids):
        raise ValueError(f"the text has {len(text_ids)} tokens, fewer than the longest prompt's {max(lengths)}")
    chunks, start = [], 0
    for length in lengths:
        if start + length > len(text_ids):
            start = 0
        chunks.append(text_ids[start:start + length])
        start += length
    return chunks


def text_token_ids(tokenizer):
    """The text's token ids, paragraph by paragraph (the whole text at once is longer than tokenizers' limit and
    would make them warn about it)."""
    with open(TEXT_FILE, encoding="utf-8") as handle:
        paragraphs = handle.read().split("\n\n")
    return [token for paragraph in paragraphs for token in tokenize(tokenizer, paragraph + "\n\n")]


@contextlib.contextmanager
def eager_attention(causal_lm):
    """Eager attention for the duration: sdpa returns no probabilities. (EARN's own attention function, which
    the engine installs, is set aside too, and given back afterwards.)"""
    previous = causal_lm.config._attn_implementation
    causal_lm.set_attn_implementation("eager")
    try:
        yield
    finally:
        causal_lm.set_attn_implementation(previous)


@torch.no_grad()
def backbone_attentions(llm, token_ids):
    """The plain backbone forward over one unpadded sequence (`token_ids`, BOS included), as an EARNModel's
    backbone computes it: (attention probabilities [layers, heads, L, L] in float32, final normed hidden states
    [L, hidden]). Must run under `eager_attention`."""
    ids = torch.tensor([list(token_ids)], device=llm.registers.device)  # [1, L]
    embeds = llm.embed_ids(ids)  # [1, L, hidden]: added tokens (LC-Rec's codes) have their own rows
    output = llm.decoder(inputs_embeds=embeds, output_attentions=True)
    attentions = torch.stack([layer[0] for layer in output.attentions]).float()  # [layers, heads, L, L]
    return attentions, output.last_hidden_state[0]


class LayerTotals:
    """Running sums over sequences of each metric per layer, and of the attention received per layer and
    relative-position bin; each sequence weighs the same in the metrics' means."""

    def __init__(self, layers, bins):
        self.sequences = 0
        self.metrics = {metric: [0.0] * layers for metric in METRICS}
        self.received_sums = torch.zeros(layers, bins, dtype=torch.float64)
        self.received_counts = torch.zeros(bins, dtype=torch.float64)  # positions per bin, the same in every layer

    def add(self, attentions, queries):
        """attentions [layers, heads, L, L] of one sequence; queries [Q] the query positions to average over."""
        for layer, attention in enumerate(attentions):
            for metric, function in METRIC_FUNCTIONS.items():
                self.metrics[metric][layer] += function(attention, queries)
            sums, counts = stats.relative_position_bins(stats.attention_received(attention), self.bins)
            self.received_sums[layer] += sums
        self.received_counts += counts
        self.sequences += 1

    @property
    def bins(self):
        return self.received_counts.shape[0]

    def means(self):
        means = {metric: [value / self.sequences for value in values] for metric, values in self.metrics.items()}
        received = self.received_sums / self.received_counts.clamp(min=1)  # [layers, bins]; an empty bin stays 0
        means["attention_received"] = received.tolist()
        return means


def measure(llm, sequences, query_mode="all", bins=20):
    """Per-layer means over `sequences` (token-id lists, BOS included) of each metric in METRICS, and the attention
    received per layer and relative-position bin ([layers][bins]). The model runs in eval mode (LoRA dropout would
    make the probabilities random) and goes back to its mode afterwards."""
    totals = LayerTotals(llm.num_layers, bins)
    with eval_mode(llm), eager_attention(llm.causal_lm):
        for ids in sequences:
            attentions, _ = backbone_attentions(llm, ids)  # [layers, heads, L, L]
            totals.add(attentions, stats.query_positions(len(ids), query_mode).to(attentions.device))
    return totals.means()


def run_attention_analysis(config, out_dir, num_prompts=64, checkpoint=None, query_mode="all", bins=20):
    """Build the model of `config` (a recbole_earn Config), measure its attention over `num_prompts` test-split
    prompts and as many text chunks, write attention.json and the figures to `out_dir`, print a table; returns the
    result dict."""
    from recbole_earn.analysis.figures import write_figures
    from recbole_earn.quick_start import build_model, prepare_data

    check_llm_recommender(config.model_class)
    if checkpoint is not None:
        require_checkpoint_file(checkpoint)
    prepare_out_dir(out_dir)
    _, train_data, _, test_data = prepare_data(config)
    model = build_model(config, train_data, logger)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    model.eval()

    prompts = recommendation_prompts(model, test_data, num_prompts)
    texts = text_chunks(text_token_ids(model.tokenizer), [len(prompt) for prompt in prompts])
    bos = [] if model.llm.bos_token_id is None else [model.llm.bos_token_id]
    rec = measure(model.llm, [bos + prompt for prompt in prompts], query_mode, bins)
    text = measure(model.llm, [bos + chunk for chunk in texts], query_mode, bins)

    result = {"settings": settings(config, model, checkpoint, prompts, bos, query_mode, bins),
              "layers": layer_rows(rec, text),
              "attention_received": {"rec": rec["attention_received"], "text": text["attention_received"]}}
    with open(os.path.join(out_dir, "attention.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    write_figures(result, out_dir)
    print(format_table(result))
    print(f"written: {os.path.join(out_dir, 'attention.json')}, sparsity_entropy.png, sinks.png, "
          "attention_received.png")
    return result


def settings(config, model, checkpoint, prompts, bos, query_mode, bins):
    lengths = [len(bos) + len(prompt) for prompt in prompts]
    lm_config = model.llm.causal_lm.config
    return {
        "model": config["model"], "dataset": config["dataset"], "llm_path": str(config["llm_path"]),
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "num_prompts": len(prompts), "prompt_tokens": {"min": min(lengths), "mean": sum(lengths) / len(lengths),
                                                       "max": max(lengths), "counting": "BOS + prompt"},
        "layers": lm_config.num_hidden_layers, "heads": lm_config.num_attention_heads,
        "forward": "plain backbone, eager attention, one unpadded prompt at a time, no EARN registers",
        "text": TEXT_SOURCE, "sparsity_threshold": stats.SPARSITY_THRESHOLD, "sink_tokens": stats.SINK_TOKENS,
        "queries": query_mode, "queries_meaning": QUERY_MODES[query_mode], "position_bins": bins,
    }


def layer_rows(rec, text):
    return [{"layer": layer, "rec": {metric: rec[metric][layer] for metric in METRICS},
             "text": {metric: text[metric][layer] for metric in METRICS}}
            for layer in range(len(rec["sparsity"]))]


def format_table(result):
    """One line per layer: each metric on recommendation prompts / text."""
    titles = [metric.replace("_", " ") + " rec/text" for metric in METRICS]
    lines = ["layer" + "".join(f"{title:>20}" for title in titles)]
    for row in result["layers"]:
        cells = [f"{row['rec'][metric]:.3f} / {row['text'][metric]:.3f}" for metric in METRICS]
        lines.append(f"{row['layer']:>5}" + "".join(f"{cell:>20}" for cell in cells))
    return "\n".join(lines)
