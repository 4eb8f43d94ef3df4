"""Semantic item IDs for LC-Rec: every item becomes a short, unique sequence of code tokens (<a_12><b_7><c_201><d_3>).

  text       title (+ the dataset's other text fields, e.g. genres, brand, categories), one line per item
  embedding  the backbone's mean-pooled last hidden states of that text, batched
  codes      an RQ-VAE over the standardised embeddings; the last level Sinkhorn-balanced; an extra code for
             whatever still collides

The index is saved as JSON beside the dataset, named by a digest of everything it depends on (dataset and its
items, backbone, settings), and reused by every later run; LCRec and EARNLCRec on the same data share it.
"""

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from recbole_earn.file_writing import replaced_atomically
from recbole_earn.indexing.collisions import add_extra_codes, collision_rate, sinkhorn_assign
from recbole_earn.indexing.rqvae import train_rqvae

INDEX_FORMAT = 1


def level_letter(level: int) -> str:
    return chr(ord("a") + level)


def code_token(level: int, code: int) -> str:
    return f"<{level_letter(level)}_{code}>"


@dataclass
class IndexSettings:
    levels: int = 4
    codebook_size: int = 256  # requested; scaled down for small catalogs (see effective_codebook_size)
    code_dim: int = 32
    epochs: int = 500
    seed: int = 2020
    sinkhorn_epsilon: float = 0.05
    collaborative_weight: float = 0.0  # weight of the collaborative vectors beside the text embeddings; 0 = text only
    collaborative_dim: int = 32

    def effective_codebook_size(self, num_items: int) -> int:
        """Codes per level: the requested size, but at most a quarter of the catalog (at least 2), so that the
        first level's clusters are not mostly empty on small datasets."""
        return max(2, min(self.codebook_size, num_items // 4))


@dataclass
class ItemIndex:
    """codes[i] is the code list of internal item id i (index 0, RecBole's padding, is empty)."""

    codes: List[List[int]]
    levels: int
    codebook_size: int
    n_extra: int  # size of the extra level (0: every item was unique after the Sinkhorn level)
    stats: Dict[str, object] = field(default_factory=dict)

    def token_strings(self) -> List[str]:
        """Every code token, level by level: <a_0>..<a_{K-1}>, <b_0>..., then the extra level if any."""
        tokens = [code_token(level, code) for level in range(self.levels) for code in range(self.codebook_size)]
        return tokens + [code_token(self.levels, rank) for rank in range(self.n_extra)]

    def token_offset(self, level: int, code: int) -> int:
        """Position of (level, code) in token_strings()."""
        return level * self.codebook_size + code

    def item_token_offsets(self, item: int) -> List[int]:
        return [self.token_offset(level, code) for level, code in enumerate(self.codes[item])]

    def item_text(self, item: int) -> str:
        return "".join(code_token(level, code) for level, code in enumerate(self.codes[item]))

    def digest(self) -> str:
        """A digest of every item's code list: what the code tokens' trained rows stand for."""
        return hashlib.sha256(json.dumps(self.codes).encode("utf-8")).hexdigest()[:16]

    def to_json(self, item_tokens: List[str], settings_key: Dict[str, object]) -> Dict[str, object]:
        return {
            "format": INDEX_FORMAT,
            "key": settings_key,
            "levels": self.levels,
            "codebook_size": self.codebook_size,
            "n_extra": self.n_extra,
            "stats": self.stats,
            "codes": {token: self.codes[item] for item, token in enumerate(item_tokens) if item > 0},
        }

    @classmethod
    def from_json(cls, data: Dict[str, object], item_tokens: List[str]) -> "ItemIndex":
        stored = data["codes"]
        missing = [token for token in item_tokens[1:] if token not in stored]
        if missing:
            raise ValueError(f"the item index has no codes for {len(missing)} items (e.g. {missing[:3]})")
        codes = [[]] + [list(stored[token]) for token in item_tokens[1:]]
        return cls(codes, data["levels"], data["codebook_size"], data["n_extra"], data.get("stats", {}))


def write_json_atomically(path: str, data) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with replaced_atomically(path) as out:
        json.dump(data, out, ensure_ascii=False)


def index_path(folder: str, dataset_name: str, key: Dict[str, object]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:12]
    return os.path.join(folder, f"{dataset_name}.item-index.{digest}.json")


def standardise(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean(0)) / x.std(0).clamp(min=1e-6)  # a few hidden dimensions are huge


def index_features(embeddings: torch.Tensor, collaborative: Optional[torch.Tensor], weight: float) -> torch.Tensor:
    """What the RQ-VAE encodes: the standardised text embeddings [n, dim], or with collaborative vectors [n, c] and
    weight w > 0, both blocks centred, side by side [n, dim + c], their total variances in the ratio 1 : w^2 and
    the whole at unit variance per column on average, as the text alone (the RQ-VAE collapses on tiny inputs)."""
    text = standardise(embeddings.float())
    if not weight:
        return text
    if collaborative is None or collaborative.shape[0] != text.shape[0]:
        raise ValueError("collaborative_weight > 0 needs one collaborative vector per item")
    blocks = [text, collaborative.float() - collaborative.float().mean(0)]
    scaled = [block / block.var(0).sum().sqrt().clamp(min=1e-6) for block in blocks]  # total variance 1 each
    columns = text.shape[1] + blocks[1].shape[1]
    return torch.cat([scaled[0], weight * scaled[1]], dim=1) * (columns / (1.0 + weight ** 2)) ** 0.5


def codes_from_embeddings(embeddings: torch.Tensor, settings: IndexSettings, log=None,
                          collaborative: Optional[torch.Tensor] = None) -> ItemIndex:
    """The unique code lists of items with embeddings [n, dim] (rows in internal-id order, padding excluded), and
    collaborative vectors [n, c] where settings.collaborative_weight > 0."""
    n = embeddings.shape[0]
    size = settings.effective_codebook_size(n)
    x = index_features(embeddings, collaborative, settings.collaborative_weight)
    model = train_rqvae(x, settings.levels, size, code_dim=settings.code_dim, epochs=settings.epochs,
                        seed=settings.seed, log=log)
    with torch.no_grad():
        nearest, _, _ = model.quantise(model.encoder(x))  # [n, levels]
        last = settings.levels - 1
        distances = torch.cdist(model.residuals(x, last), model.codebooks[last])  # [n, K]
        balanced = nearest.clone()
        balanced[:, last] = sinkhorn_assign(distances, epsilon=settings.sinkhorn_epsilon)
    nearest_rows, balanced_rows = nearest.tolist(), balanced.tolist()
    codes = add_extra_codes(balanced_rows)
    n_extra = max((row[settings.levels] + 1 for row in codes if len(row) > settings.levels), default=0)
    stats = {
        "items": n,
        "codebook_size": size,
        "collision_rate_nearest": collision_rate(nearest_rows),
        "collision_rate_sinkhorn": collision_rate(balanced_rows),
        "codebook_usage": [len(set(row[level] for row in balanced_rows)) / size for level in range(settings.levels)],
        "extra_level_size": n_extra,
    }
    return ItemIndex([[]] + codes, settings.levels, size, n_extra, stats)


def load_saved_index(path: str, key: Dict[str, object], item_tokens: List[str],
                     logger: logging.Logger) -> Optional[ItemIndex]:
    """The index saved at `path` for this key, or None: none saved, another key's, or unreadable (e.g. truncated by a
    full disk or a partial copy; it is then rebuilt and overwritten, with a warning naming it)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("format") != INDEX_FORMAT or data.get("key") != key:
            return None
        index = ItemIndex.from_json(data, item_tokens)
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # truncated or not an index of ours
        logger.warning(f"item index: {path} is unreadable ({error}); rebuilding it")
        return None
    logger.info(f"item index: loaded {path}")
    return index


def build_item_index(item_texts: List[str], item_tokens: List[str], embed, settings: IndexSettings, folder: str,
                     dataset_name: str, backbone_name: str, logger: Optional[logging.Logger] = None,
                     collaborative=None, interactions_digest: Optional[str] = None) -> ItemIndex:
    """The item index of a dataset, loaded from `folder` when one with the same key exists, else built and saved.

    item_texts / item_tokens: per internal item id (index 0 is padding), the text to embed and the raw item id.
    embed: texts -> [n, dim] embeddings (called only when the index must be built).
    collaborative: () -> [n, c] collaborative vectors of the same items, and interactions_digest what they were
    computed from; needed when settings.collaborative_weight > 0. `embed` must give float32-computed embeddings
    whatever the run's precision: the key does not hold it, so runs in any dtype share one index.
    """
    logger = logger or logging.getLogger(__name__)
    key = {
        "dataset": dataset_name,
        "items": hashlib.sha256("\n".join(f"{t}\t{x}" for t, x in zip(item_tokens, item_texts)).encode()).hexdigest(),
        "backbone": backbone_name,
        **{name: getattr(settings, name) for name in settings.__dataclass_fields__},
    }
    if not settings.collaborative_weight:  # text-only keys stay as they were, so existing indexes are reused
        key.pop("collaborative_weight"), key.pop("collaborative_dim")
    elif collaborative is None or interactions_digest is None:
        raise ValueError("collaborative_weight > 0 needs the collaborative vectors and their interactions' digest")
    else:
        key["interactions"] = interactions_digest
    path = index_path(folder, dataset_name, key)
    index = load_saved_index(path, key, item_tokens, logger)
    if index is not None:
        return index
    logger.info(f"item index: embedding {len(item_texts) - 1} item texts with {backbone_name}")
    # The RQ-VAE trains on the CPU whatever the run's device: seconds of work, and the same codes on every device.
    embeddings = embed(item_texts[1:]).cpu()  # [n, dim]
    vectors = collaborative() if settings.collaborative_weight else None
    index = codes_from_embeddings(embeddings, settings, log=logger.info, collaborative=vectors)
    stats = index.stats
    logger.info(
        f"item index: {settings.levels} levels x {stats['codebook_size']} codes; collision rate "
        f"{stats['collision_rate_nearest']:.2%} (nearest codes), {stats['collision_rate_sinkhorn']:.2%} "
        f"(Sinkhorn last level), {stats['extra_level_size']} extra codes resolve the rest; codebook usage per level "
        + ", ".join(f"{usage:.0%}" for usage in stats["codebook_usage"])
    )
    write_json_atomically(path, index.to_json(item_tokens, key))
    logger.info(f"item index: saved {path}")
    return index
