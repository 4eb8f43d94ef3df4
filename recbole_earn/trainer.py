"""The Trainer for LLM recommenders: RecBole's own, plus a sample of the training split per epoch, an optimizer
over what trains, a learning-rate schedule, a wall-clock budget and a progress log.

Checkpoints hold only what trains (the model's `trained_state_dict()`: LoRA weights, registers, ...), so they are
megabytes, not the LLM. Everything else (epochs, early stopping on the validation metric, RecBole's evaluators,
progress bars, the checkpoint's other fields) is RecBole's.
"""

import contextlib
import math

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_earn.compat import read_checkpoint_file
from recbole_earn.file_writing import replaced_atomically
from recbole_earn.model.trained_setup import CheckpointMismatchError
from recbole_earn.training_progress import TrainingProgress, lr_factor

LOG_INTERVAL_S = 60.0  # seconds of training between two progress lines


class TrainingBudgetSpent(Exception):
    """Raised at the start of an epoch once `train_time_budget_s` seconds of training have been spent."""


def few_shot_loader(train_data, sample_num, seed, epoch=None):
    """A training loader over `sample_num` examples of `train_data`, drawn from one seeded shuffle of its
    examples. epoch=None: the first `sample_num` (BIGRec's fixed few-shot sample, the same every epoch); epoch
    e: the e-th run of `sample_num` examples of that shuffle, wrapping around, so consecutive epochs see the
    whole split before any example repeats. sample_num <= 0 or >= the number of examples keeps all."""
    dataset = train_data._dataset
    total = len(dataset)
    if sample_num <= 0 or sample_num >= total:
        return train_data
    order = np.random.default_rng(seed).permutation(total)
    start = 0 if epoch is None else (epoch * sample_num) % total
    chosen = np.sort(np.take(order, np.arange(start, start + sample_num), mode="wrap"))
    subset = dataset.copy(dataset.inter_feat[chosen])
    return TrainDataLoader(train_data.config, subset, train_data._sampler, shuffle=train_data.shuffle)


@contextlib.contextmanager
def naming_checkpoint_file(path):
    """Put the checkpoint file's name in front of a model's refusal to load its weights."""
    try:
        yield
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f"{path}: {error}") from None


class BudgetedBatches:
    """`loader`'s batches until the training budget is spent (all ranks stop together in multi-process runs);
    otherwise it is `loader` (length, shuffle flag, sampler). `device`: where the ranks' flag is reduced, the
    process group's device (config["device"]: a CUDA device under nccl, which refuses CPU tensors)."""

    def __init__(self, loader, progress, distributed, device="cpu"):
        self.loader = loader
        self.progress = progress
        self.distributed = distributed
        self.device = device

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def _spent(self):
        if not self.distributed:
            return self.progress.budget_spent  # no tensor, so no host-device round trip per batch on a GPU
        spent = torch.tensor(int(self.progress.budget_spent), device=self.device)
        torch.distributed.all_reduce(spent, op=torch.distributed.ReduceOp.MAX)
        return bool(spent)

    def __iter__(self):
        for batch in self.loader:
            if self._spent():
                return
            yield batch


class LLMTrainer(Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self.sample_num = config["train_sample_num"] or 0
        self.resample_each_epoch = bool(config["resample_each_epoch"])
        self.schedule = dict(schedule=config["lr_scheduler"] or "constant", warmup_ratio=config["warmup_ratio"] or 0.0,
                             min_lr_ratio=config["min_lr_ratio"] or 0.0)
        lr_factor(0.0, **self.schedule)  # a bad schedule is refused before training starts
        self.progress = None
        self._batch_examples, self._last_loss = 0, math.nan
        self.training_curve = []  # one entry per validation: training seconds, examples, valid result
        self.optimizer.register_step_pre_hook(self._set_learning_rate)
        self.optimizer.register_step_post_hook(self._count_step)

    def _build_optimizer(self, **kwargs):
        # Only what trains (LoRA weights, registers, new token rows): no optimizer state for frozen weights.
        kwargs.setdefault("params", [p for p in self.model.parameters() if p.requires_grad])
        return super()._build_optimizer(**kwargs)

    # -- the training examples of each epoch ----------------------------------------------------------------------
    def _epoch_loader(self, train_data, epoch_idx):
        return few_shot_loader(train_data, self.sample_num, self.config["seed"],
                               epoch=epoch_idx if self.resample_each_epoch else None)

    def _start_progress(self, train_data):
        first = self._epoch_loader(train_data, self.start_epoch)
        steps = len(first) * max(self.epochs - self.start_epoch, 1)
        self.progress = TrainingProgress(steps, self.config["train_batch_size"], self.config["train_time_budget_s"])
        self._last_log_s = 0.0
        if first is not train_data:
            self.logger.info(set_color("training sample", "blue") + f": {len(first._dataset)} of "
                             f"{len(train_data._dataset)} training examples per epoch"
                             + (", a new sample each epoch" if self.resample_each_epoch else ", the same each epoch"))
        budget = self.config["train_time_budget_s"]
        self.logger.info(set_color("training plan", "blue") + f": at most {steps} steps over {self.epochs} epochs, lr "
                         f"{self.learning_rate:g} ({self.schedule['schedule']}, warm-up {self.schedule['warmup_ratio']:g})"
                         + (f", at most {budget:g} s of training" if budget else ""))

    # -- per step: learning rate, timing, log ---------------------------------------------------------------------
    def _set_learning_rate(self, optimizer, *args):
        if self.progress is None:  # a step outside fit(): the base learning rate
            return
        factor = lr_factor(self.progress.fraction, **self.schedule)
        for group in optimizer.param_groups:
            group["lr"] = self.learning_rate * factor

    def _tracked_loss(self, interaction):
        self.progress.start_step()
        loss = self.model.calculate_loss(interaction)
        self._batch_examples = len(interaction)
        self._last_loss = float(loss.detach())
        return loss

    def _count_step(self, optimizer, *args):
        if self.progress is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the step's kernels are done: its time is real, not queued
        self.progress.end_step(self._batch_examples)
        if self.progress.seconds - self._last_log_s >= LOG_INTERVAL_S:
            self._last_log_s = self.progress.seconds
            self.logger.info(self.progress.describe(self._last_loss, optimizer.param_groups[0]["lr"]))

    # -- RecBole's loop, with the budget ----------------------------------------------------------------------------
    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.progress.budget_spent:
            raise TrainingBudgetSpent
        batches = BudgetedBatches(self._epoch_loader(train_data, epoch_idx), self.progress,
                                  distributed=not self.config["single_spec"], device=self.device)
        loss = super()._train_epoch(batches, epoch_idx, loss_func=loss_func or self._tracked_loss,
                                    show_progress=show_progress)
        self.logger.info(self.progress.describe(self._last_loss, self.optimizer.param_groups[0]["lr"]))
        return loss if loss is not None else math.nan

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self.training_curve.append({"train_seconds": self.progress.seconds, "examples": self.progress.examples,
                                    "steps": self.progress.steps, "valid_score": valid_score,
                                    "valid_result": dict(valid_result)})
        return valid_score, valid_result

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self._start_progress(train_data)
        try:
            return super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                               callback_fn=callback_fn)
        except TrainingBudgetSpent:
            self.logger.info(set_color("training budget spent", "blue") + f": {self.progress.seconds:.0f} s, "
                             f"{self.progress.examples} examples")
            self._add_hparam_to_tensorboard(self.best_valid_score)
            return self.best_valid_score, self.best_valid_result

    # -- checkpoints: only what trains ---------------------------------------------------------------------------
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's checkpoint (config, epoch, step, best validation score, weights, optimizer state) with only
        the weights that train: the model's `trained_state_dict()`. Written atomically, by rank 0 alone."""
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        path = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {"config": self.config, "epoch": epoch, "cur_step": self.cur_step,
                 "best_valid_score": self.best_valid_score, "state_dict": self.model.trained_state_dict(),
                 "other_parameter": self.model.other_parameter(), "optimizer": self.optimizer.state_dict()}
        with replaced_atomically(path, binary=True) as stream:
            torch.save(state, stream, pickle_protocol=4)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {path}")

    def load_checkpoint(self, path):
        """Load a checkpoint's trained weights into the model (a file this model cannot take is an error naming
        it); returns the checkpoint."""
        with naming_checkpoint_file(path):
            checkpoint = read_checkpoint_file(path, map_location=self.device)
            self.model.load_trained_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        return checkpoint

    def resume_checkpoint(self, resume_file):
        checkpoint = self.load_checkpoint(resume_file)
        self.saved_model_file = str(resume_file)
        self.start_epoch, self.cur_step = checkpoint["epoch"] + 1, checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:
            path = model_file or self.saved_model_file
            self.load_checkpoint(path)
            self.logger.info(f"Loading model structure and parameters from {path}")
        return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)
