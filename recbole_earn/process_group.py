"""Joining the process group of a multi-process run, from a rank's Config: gloo on CPUs, nccl on GPUs.

RecBole's Config joins only with nccl on CUDA devices; recbole_earn's Config calls `join_process_group` instead
(see distributed.py for how the ranks are started)."""

import torch


def default_backend():
    return "nccl" if torch.cuda.is_available() else "gloo"


def join_process_group(config_dict):
    """What RecBole's Config._init_device does for `local_rank` runs, with a backend that fits the device.
    Fills device, single_spec and quiets ranks other than 0 in `config_dict` (a Config's final dict)."""
    backend = config_dict.get("dist_backend") or default_backend()
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"dist_backend must be gloo or nccl, got {backend!r}")
    rank = config_dict["local_rank"]
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("dist_backend=nccl needs CUDA devices; use --dist_backend=gloo to train on CPUs")
        device = torch.device("cuda", rank)
        torch.cuda.set_device(rank)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend=backend,
            rank=rank + (config_dict.get("offset") or 0),
            world_size=config_dict["world_size"],
            init_method=f"tcp://{config_dict['ip']}:{config_dict['port']}",
        )
    config_dict["device"] = device
    config_dict["single_spec"] = False
    if rank != 0:
        config_dict["state"] = "error"  # RecBole's way to keep the other ranks' logs quiet
        config_dict["show_progress"] = False
        config_dict["verbose"] = False
