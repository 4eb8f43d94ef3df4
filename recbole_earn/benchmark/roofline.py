"""The memory-bandwidth floor of a decoding step: no implementation can run one faster than it reads the weights.

At batch 1 a decoding step feeds a handful of rows (one per beam) through every weight matrix, so its cost is
set by reading the weights (540 MB for SmolLM2-135M in fp32), not by FLOPs. The benchmark measures this machine's
streaming read bandwidth and prints, in its Limits summary, each decoding workload's floor (the weights one step
reads at that bandwidth) beside EARN's measured step: the gap is what faster decoding kernels could still gain.
"""

import torch

from recbole_earn.llm.timing import device_clock


def stream_bandwidth(megabytes: int = 256, repeats: int = 5, device="cpu") -> float:
    """Bytes per second of reading a large fp32 tensor once on `device` (the best of `repeats` sums; a GPU needs
    a larger tensor than a CPU to reach its bandwidth: the benchmark reads 2 GiB there)."""
    data = torch.ones(megabytes * 2 ** 20 // 4, device=device)
    data.sum()  # fault the pages in
    best = float("inf")
    for _ in range(repeats):
        start = device_clock(device)
        data.sum()
        best = min(best, device_clock(device) - start)
    return data.numel() * data.element_size() / best


def decode_step_bytes(backbone, full_lm_head: bool) -> int:
    """Bytes of weights one decoding step must read: every decoder layer and the final norm, plus the lm head when
    it is applied to the whole vocabulary (a step renormalised over a trie's tokens reads only a few of its rows)."""
    decoder = backbone.get_decoder()
    total = sum(p.numel() * p.element_size() for p in decoder.layers.parameters())
    total += sum(p.numel() * p.element_size() for p in decoder.norm.parameters())
    if full_lm_head:
        head = backbone.get_output_embeddings().weight
        total += head.numel() * head.element_size()
    return total
