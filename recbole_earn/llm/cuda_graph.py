"""CUDA graphs for the engine's launch-bound parts: recording a computation once, replaying it in one launch.

Work on a few rows at 7B scale (a decoding step; EARN's later layers at prefill, which see only the registers)
is bound on a GPU by launching kernels from Python, not by the kernels: a replayed graph removes that cost.

`run_then_capture` is the one way the engine records a graph. `RegisterLayersGraph` runs the prefill's layers
[k, N) on the registers (and the last prompt token) as a graph; slot_decoding.py does the same for decoding steps.
"""

import torch

from .cache import EARNCache

KEPT_SHAPES = 3  # register-layer graphs (one per batch shape) a model keeps


def run_then_capture(run):
    """(run()'s output, a CUDA graph of run, the graph's output). run() executes once, eagerly on a side stream
    (the warm-up CUDA asks for before a capture), then is recorded: recording executes nothing, so the state run()
    changes changes exactly once. Replaying the graph recomputes its output in place."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        output = run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph_output = run()
    return output, graph, graph_output


def kept_or_made(kept, key, make, limit):
    """kept[key] (an OrderedDict of graphs and their buffers, oldest first), made by make() when it is not there;
    the oldest entries are dropped past `limit` (each holds device memory)."""
    if key in kept:
        kept.move_to_end(key)
    else:
        kept[key] = make()
        while len(kept) > limit:
            kept.popitem(last=False)
    return kept[key]


def register_layers_graph(model, k, hidden, mask, positions):
    """The model's RegisterLayersGraph for this shape, made (and the oldest dropped) when it has none."""
    return kept_or_made(model.register_graphs, (k, tuple(hidden.shape), hidden.dtype),
                        lambda: RegisterLayersGraph(model, k, hidden, mask, positions), KEPT_SHAPES)


class RegisterLayersGraph:
    """Layers [k, N) and the final norm on the prefill's kept tokens, recorded at the first call for one shape:
    graph(hidden [B, K, hidden], mask [B, 1, K, K], positions [B, K], cache) -> normed hidden [B, K, hidden], the
    layers' keys and values stored in `cache` as the eager layers would."""

    def __init__(self, model, k, hidden, mask, positions):
        self.model, self.k = model, k
        self.inputs = (torch.empty_like(hidden), torch.empty_like(mask), torch.empty_like(positions))
        self.graph = self.outputs = None

    @torch.inference_mode()  # whatever mode the graph was recorded in, its inputs are refilled in place
    def __call__(self, hidden, mask, positions, cache):
        for fixed, given in zip(self.inputs, (hidden, mask, positions)):
            fixed.copy_(given)
        if self.graph is None:
            (hidden, kv), self.graph, self.outputs = run_then_capture(self._run)
        else:
            self.graph.replay()
            hidden, kv = (t.clone() for t in self.outputs)  # the next replay overwrites the graph's outputs
        for j, layer in enumerate(range(self.k, self.model.num_layers)):
            cache.update(kv[j, 0], kv[j, 1], layer)
        return hidden

    def _run(self):
        """(normed hidden [B, K, hidden], keys and values of every layer >= k [N - k, 2, B, kvh, K, d])."""
        hidden, mask, positions = self.inputs
        layers = range(self.k, self.model.num_layers)
        kept = EARNCache(self.model.num_layers)  # at prefill it only keeps each layer's keys and values
        hidden = self.model._run_layers(self.model.layers[self.k:], hidden, mask, positions, kept)
        kv = torch.stack([torch.stack([kept.shared_keys[i], kept.shared_values[i]]) for i in layers])
        return self.model.decoder.norm(hidden), kv
