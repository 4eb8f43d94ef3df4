"""The Trainer for LLM recommenders: RecBole's own, plus few-shot training and an optimizer over what trains.

Everything else (epochs, early stopping on the validation metric, RecBole's evaluators, progress bars,
checkpoints) is RecBole's. Checkpoints stay small because the LLM recommenders' `state_dict()` holds only
their trainable tensors (see `recbole_earn.model.llm_recommender`).
"""

import numpy as np
from recbole.data.dataloader import TrainDataLoader
from recbole.trainer import Trainer
from recbole.utils import set_color


def few_shot_loader(train_data, sample_num, seed):
    """A training loader over `sample_num` examples drawn once (seeded) from `train_data`'s examples, as
    BIGRec fine-tunes on a fixed few-shot sample. sample_num <= 0 or >= the number of examples keeps all."""
    dataset = train_data._dataset
    if sample_num <= 0 or sample_num >= len(dataset):
        return train_data
    chosen = np.sort(np.random.default_rng(seed).choice(len(dataset), size=sample_num, replace=False))
    subset = dataset.copy(dataset.inter_feat[chosen])
    return TrainDataLoader(train_data.config, subset, train_data._sampler, shuffle=train_data.shuffle)


class LLMTrainer(Trainer):
    def _build_optimizer(self, **kwargs):
        # Only what trains (LoRA weights, registers, new token rows): no optimizer state for frozen weights.
        kwargs.setdefault("params", [p for p in self.model.parameters() if p.requires_grad])
        return super()._build_optimizer(**kwargs)

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        sample_num = self.config["train_sample_num"] or 0
        few_shot = few_shot_loader(train_data, sample_num, self.config["seed"])
        if few_shot is not train_data and verbose:
            self.logger.info(
                set_color("few-shot training", "blue")
                + f": {len(few_shot._dataset)} of {len(train_data._dataset)} training examples"
            )
        return super().fit(
            few_shot, valid_data, verbose=verbose, saved=saved, show_progress=show_progress, callback_fn=callback_fn
        )
