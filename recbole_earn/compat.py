"""Runtime fixes that RecBole 1.2.1 needs on today's torch, applied once by `apply_recbole_compat()`.

Each fix is scoped to RecBole (no process-wide monkey patching of torch itself) and is idempotent.
Reading `sys.argv` is the third known pitfall; it is handled by `recbole_earn.config.EARNConfig`, which
only takes command-line values that the runner hands over explicitly.
"""

import types

import torch

_applied = False


class _TorchWithRecBoleCheckpoints(types.ModuleType):
    """`torch` as seen from RecBole's trainer: the same module, except that `load` unpickles RecBole's own
    checkpoints. Why: torch >= 2.6 loads with `weights_only=True`, and RecBole's checkpoints pickle the
    whole Config ("Unsupported operand 149" at `trainer.evaluate(load_best_model=True)`)."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return torch.load(*args, **kwargs)


def load_recbole_checkpoint(path, map_location="cpu"):
    """Load a checkpoint file written by RecBole's Trainer (a pickled dict holding the Config)."""
    return torch.load(path, map_location=map_location, weights_only=False)


def apply_recbole_compat():
    """Apply the fixes once; later calls do nothing."""
    global _applied
    if _applied:
        return
    import recbole.trainer.trainer as recbole_trainer

    # Why: RecBole's Trainer reloads its best checkpoint with a bare torch.load (see the class above).
    recbole_trainer.torch = _TorchWithRecBoleCheckpoints()

    # Why: recbole/model/sequential_recommender/sine.py runs torch.autograd.set_detect_anomaly(True) at
    # import, which makes every backward about 1.7x slower, LLMs included. Import the zoo now, then undo it.
    import recbole.model.sequential_recommender  # noqa: F401

    torch.autograd.set_detect_anomaly(False)
    _applied = True
