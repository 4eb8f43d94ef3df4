"""Multi-process training through RecBole's own distributed support, on CPUs (gloo) as well as GPUs (nccl).

RecBole's `run_recbole(nproc=...)` spawns one process per rank and its Config joins the process group, but only
with nccl on CUDA devices, and its Trainer hands DistributedDataParallel `device_ids=[rank]`, which a CPU module
refuses. Here the Config joins with `dist_backend` (default: nccl when CUDA is there, gloo otherwise; see
process_group.py) and the CPU-side DDP fix lives in compat.py; everything else (DistributedSampler over the
batches, gradient all-reduce, metrics gathered over ranks, only rank 0 saving the checkpoint) is RecBole's.
"""


def _rank_main(rank, queue, kwargs):
    from recbole_earn.quick_start import run_earn

    kwargs["config_dict"] = dict(kwargs.get("config_dict") or {}, local_rank=rank)
    result = run_earn(**kwargs)
    if rank == 0:
        queue.put(result)


def run_earn_distributed(model, dataset, nproc, config_file_list=None, config_dict=None, cmd_args=None, saved=True,
                         world_size=-1, ip="localhost", port=5678, group_offset=0):
    """`run_earn` on `nproc` local processes (of `world_size` over all machines, default nproc); returns rank 0's
    result dict. On several machines, start it on each with its own `group_offset` (the rank of its first process)."""
    import torch.multiprocessing as multiprocessing

    world_size = nproc if world_size in (None, -1) else world_size
    if nproc < 1 or world_size < nproc:
        raise ValueError(f"need 1 <= nproc <= world_size, got nproc={nproc}, world_size={world_size}")
    config_dict = dict(config_dict or {}, world_size=world_size, ip=ip, port=int(port), nproc=nproc,
                       offset=group_offset)
    queue = multiprocessing.get_context("spawn").SimpleQueue()
    kwargs = {"model": model, "dataset": dataset, "config_file_list": config_file_list, "config_dict": config_dict,
              "cmd_args": cmd_args, "saved": saved}
    multiprocessing.spawn(_rank_main, args=(queue, kwargs), nprocs=nproc, join=True)
    return queue.get() if group_offset == 0 else None
