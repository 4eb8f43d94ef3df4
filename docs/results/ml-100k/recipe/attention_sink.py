"""Where an EARN model's layers >= k lose the backbone's attention sink: untrained response loss against k, with BOS
first (the prefix register at position 1) and with the prefix register first (add_bos=False), and the hidden-state
norm of each layer's output at positions 0 and 1 against the prompt's other tokens.

    python docs/results/ml-100k/recipe/attention_sink.py EARNBIGRec [key=value ...]

The model is untrained (LoRA at identity, registers as drawn at seed `seed`); the loss is the model's own training
loss on the first 64 examples of its training split (two batches of 32), with the register layer set to each k in
turn. The key=value pairs are config overrides, as on run_earn.py's command line (e.g. seed=2021).
"""

import logging
import sys

import torch

from recbole_earn.config import Config
from recbole_earn.quick_start import build_model, prepare_data

K_VALUES = (1, 2, 4, 8, 12, 15, 20, 25, 28, 29)
BATCHES = 2


def untrained_models(model_name, overrides):
    """{layout: untrained model} for BOS first and the prefix register first, on one prepared dataset; and the
    first BATCHES training batches, which both models are measured on."""
    configs = {layout: Config(model=model_name, dataset="ml-100k", cmd_args={**overrides, "add_bos": str(add_bos)})
               for layout, add_bos in (("BOS first", True), ("prefix register first", False))}
    _, train_data, _, _ = prepare_data(next(iter(configs.values())))  # add_bos does not change the data
    models = {layout: build_model(config, train_data, logging.getLogger()).eval() for layout, config in configs.items()}
    return models, [interaction for _, interaction in zip(range(BATCHES), train_data)]


def mean_loss(model, interactions, k):
    """The training loss with layers [k, N) run on the kept tokens only (k = N: every layer sees everything)."""
    model.llm.earn_k = k
    with torch.no_grad():
        return sum(model.calculate_loss(interaction).item() for interaction in interactions) / len(interactions)


def layer_norms(model, interaction):
    """Per layer: (norm at position 0, at position 1, mean norm of the later tokens) of its output, on the batch's
    first prompt, every layer seeing the whole prompt."""
    llm = model.llm
    batch = llm.make_batch(model.prompts(interaction)[:1])  # one prompt: no padding
    outputs = []
    hooks = [layer.register_forward_hook(lambda module, args, output: outputs.append(
        (output[0] if isinstance(output, tuple) else output)[0].float().norm(dim=-1))) for layer in llm.layers]
    llm.earn_k = llm.num_layers
    try:
        with torch.no_grad():
            llm.split_forward(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return [(float(norms[0]), float(norms[1]), float(norms[2:].mean())) for norms in outputs]  # norms: [S]


def main(argv):
    model_name, overrides = argv[0], dict(a.split("=", 1) for a in argv[1:])
    logging.disable(logging.INFO)
    layouts, interactions = untrained_models(model_name, overrides)
    num_layers = next(iter(layouts.values())).llm.num_layers
    print("| k | " + " | ".join(f"loss, {name}" for name in layouts) + " |")
    print("| --- |" + " --- |" * len(layouts))
    for k in (*K_VALUES, num_layers):
        losses = [mean_loss(model, interactions, k) for model in layouts.values()]
        label = f"{k} (every layer sees the prompt)" if k == num_layers else str(k)
        print(f"| {label} | " + " | ".join(f"{loss:.3f}" for loss in losses) + " |", flush=True)
    print()
    print("| layer | " + " | ".join(f"{name}: position 0 | 1 | later tokens" for name in layouts) + " |")
    print("| --- |" + " --- | --- | --- |" * len(layouts))
    norms = [layer_norms(model, interactions[0]) for model in layouts.values()]
    for layer in range(num_layers):
        cells = [" | ".join(f"{norm:.0f}" for norm in per_layer[layer]) for per_layer in norms]
        print(f"| {layer} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
