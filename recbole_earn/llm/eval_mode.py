"""Running a model in eval mode for a block and putting it back as it was."""

import contextlib


@contextlib.contextmanager
def eval_mode(module):
    """`module` in eval mode (no dropout, e.g. LoRA's) inside the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
