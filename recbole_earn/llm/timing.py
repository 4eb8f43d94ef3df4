"""Wall-clock time of work queued on a device: CUDA runs kernels asynchronously, so a clock read right after a
call would time the launch, not the work."""

import time

import torch


def device_clock(device):
    """time.perf_counter() once everything queued on `device` has run (at once on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
