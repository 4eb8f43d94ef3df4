"""Each user's past items in full-ranking evaluation, left out for sequential models too.

RecBole's FullSortEvalDataLoader gives general models (Pop, BPR) a history index, the items each user interacted
with in the earlier splits, whose scores RecBole's Trainer sets to -inf; sequential models get none, so they
also rank items the user has already seen. In MovieLens a user rates a movie once, so a past item is never the
answer, and leaving it in only makes sequential models look worse than general ones on the same split. With
`exclude_history_items` (default) the loaders of sequential models carry the same index.
"""

import numpy as np
import scipy.sparse as sp
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.utils import ModelType


def past_items(dataset, earlier_datasets):
    """user id -> LongTensor of the items the user has in `earlier_datasets`, minus those `dataset` evaluates
    (None for users `dataset` does not evaluate), as RecBole's `uid2history_item`."""
    users = dataset.inter_feat[dataset.uid_field].numpy()
    items = dataset.inter_feat[dataset.iid_field].numpy()
    shape = (dataset.user_num, dataset.item_num)
    # A sequential dataset's inter_matrix also counts each user's first item, which is never a target.
    seen = sum(earlier.inter_matrix(form="csr") for earlier in earlier_datasets) > 0
    evaluated = sp.csr_matrix((np.ones(len(users), dtype=bool), (users, items)), shape=shape)
    past = (seen.astype(np.int8) - seen.multiply(evaluated).astype(np.int8)).tocsr()
    past.eliminate_zeros()
    table = np.array([None] * dataset.user_num)
    for user in np.unique(users):
        table[user] = torch.from_numpy(past.indices[past.indptr[user]:past.indptr[user + 1]].astype(np.int64))
    return table


class PastItemsFullSortEvalDataLoader(FullSortEvalDataLoader):
    """RecBole's full-ranking loader for a sequential model whose batches also carry the history index of their
    rows' users when `exclude_history_items` is on (RecBole's Trainer then leaves those items out, as it does
    for general models); off, its batches are RecBole's. Works under RecBole's DistributedSampler: a batch
    maps its own rows to their users."""

    def __init__(self, config, dataset, sampler, earlier_datasets):
        super().__init__(config, dataset, sampler, shuffle=False)
        self.uid2history_item = past_items(dataset, earlier_datasets)

    def collate_fn(self, index):
        interaction, history_index, positive_u, positive_i = super().collate_fn(index)
        if self.config["exclude_history_items"]:
            rows = [self.uid2history_item[user] for user in interaction[self.uid_field].tolist()]
            history_u = torch.cat([torch.full_like(row, i) for i, row in enumerate(rows)])
            history_index = (history_u, torch.cat(rows))
        return interaction, history_index, positive_u, positive_i


def with_past_items(config, train_data, valid_data, test_data):
    """`(valid_data, test_data)` with a sequential model's full-ranking loaders rebuilt to know each user's past
    items (validation: the training split's; test: training and validation's). Other loaders, general
    models' included (RecBole's already know them), are returned as they are."""
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        return valid_data, test_data
    earlier, loaders = [train_data._dataset], []
    for loader in (valid_data, test_data):
        if isinstance(loader, FullSortEvalDataLoader):
            loader = PastItemsFullSortEvalDataLoader(config, loader._dataset, loader._sampler, list(earlier))
        loaders.append(loader)
        earlier.append(loader._dataset)
    return tuple(loaders)


def past_items_by_user(eval_loader):
    """{user internal id: 1-D LongTensor of item internal ids} for the users `eval_loader` evaluates: the items
    each one interacted with in the splits before this one (validation: training; test: training and
    validation), minus the items evaluated here. For any full-ranking loader that
    `recbole_earn.quick_start.prepare_data` returns, general or sequential, whatever `exclude_history_items`
    says; a model can use it to leave those items out of its own candidate search."""
    table = getattr(eval_loader, "uid2history_item", None)
    if table is None:
        raise TypeError(f"{type(eval_loader).__name__} does not know past items: only full-ranking loaders do")
    return {user: items for user, items in enumerate(table) if items is not None}


def excludes_past_items(config, phase="test"):
    """Whether `phase`'s full ranking leaves out each user's past items (None for sampled or labeled modes,
    where the candidates are not the whole catalog)."""
    if config["eval_args"]["mode"][phase] != "full":
        return None
    return config["MODEL_TYPE"] != ModelType.SEQUENTIAL or bool(config["exclude_history_items"])


def training_items_by_user(dataset, user_field, item_field, item_seq_field):
    """{user id: set of item ids} of every item in the training split's targets and histories."""
    users = dataset.inter_feat[user_field].tolist()
    targets = dataset.inter_feat[item_field].tolist()
    sequences = dataset.inter_feat[item_seq_field].tolist()  # [rows, max_len], right-padded with 0
    items = {}
    for user, target, sequence in zip(users, targets, sequences):
        seen = items.setdefault(user, set())
        seen.add(target)
        seen.update(item for item in sequence if item)
    return items
