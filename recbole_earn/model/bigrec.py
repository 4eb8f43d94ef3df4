"""BIGRec and EARNBIGRec: an LLM that writes the next item's title, grounded to real items by embeddings.

Bao et al., "A Bi-Step Grounding Paradigm for Large Language Models in Recommendation Systems":
  prompt:    instruction + the user's last items by title ("...the following movies before: "A", "B"")
  response:  the next item's title, in quotes, then EOS; trained with cross-entropy on the response
  inference: title_search "grounding" (BIGRec's): beam search writes a free title (generate()'s, ranked by
             log-probability / length ** length_penalty);
             grounding embeds it and every item title with the LLM (last-layer
             hidden state of the last token) and ranks items by negative L2 distance, optionally adjusted
             for popularity (gamma: distance / (1 + popularity)^gamma, popularity = training-split
             interactions / the most popular item's).
             title_search "constrained": beam search over a trie of every catalog title (+ EOS), so each beam is
             a real item, scored by its title's log-probability (optionally + w x log popularity), as LC-Rec
             ranks its codes; the items no beam reached rank last. Grounding one written title gives every user
             of a model that writes the most frequent answers nearly one ranking; the beams rank many real items.
  blend:     optionally ("collaborative information") mixed with a conventional model's scores, loaded from its
             RecBole checkpoint (blend_model_checkpoint, blend_weight; see score_blend.py for the scale rule).

EARNBIGRec is the same model with the EARN engine switched on (registers + later layers pruned).
"""

import torch

from recbole_earn.data.prompts import BIGREC_TEMPLATE, HistoryPrompter, quote_title, tokenize, warn_if_beyond_context
from recbole_earn.errors import ConfigError
from recbole_earn.llm.pooled_beam_search import pooled_beam_search
from recbole_earn.llm.trie_loss import trie_cross_entropy
from recbole_earn.model.item_trie import ItemTrie, check_beams_cover_topk, check_normalisers, check_prior_weight
from recbole_earn.model.llm_recommender import LLMRecommender


TITLE_SEARCHES = ("constrained", "grounding")


class BIGRec(LLMRecommender):
    @classmethod
    def check_config(cls, config):
        """Refuse config values BIGRec cannot run with; needs no model, so a group run checks before training."""
        super().check_config(config)
        penalty = config["length_penalty"]
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)):
            raise ConfigError(f"length_penalty must be a number (1.0: generate()'s default; 0: summed "
                              f"log-probabilities), got {penalty!r}")
        if config["title_search"] not in TITLE_SEARCHES:
            raise ConfigError(f"title_search must be one of {', '.join(TITLE_SEARCHES)}, got "
                              f"{config['title_search']!r}")
        check_prior_weight(config)
        check_normalisers(config)
        if config["title_search"] == "constrained":
            check_beams_cover_topk(config, "BIGRec with title_search: constrained")
        elif (config["loss_normalise"] or "vocabulary") != "vocabulary":
            raise ConfigError("loss_normalise: trie needs the catalog's title trie, which BIGRec builds for "
                              "title_search: constrained; use --title_search=constrained or "
                              "--loss_normalise=vocabulary")

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.num_beams = config["num_beams"]
        self.length_penalty = float(config["length_penalty"])
        self.gamma = config["popularity_gamma"] or 0.0
        self.embedding_batch_size = config["embedding_batch_size"]
        template = config["prompt_template"] or BIGREC_TEMPLATE
        self.trained_setup["prompt_template"] = template  # registers and LoRA are trained to read this prompt
        self.prompter = HistoryPrompter(
            self.tokenizer,
            template,
            [quote_title(title) for title in self.item_titles.titles],
            item_noun=config["item_noun"] or "items",
            interaction_verb=config["interaction_verb"] or "interacted with",
        )
        # A generated title needs no more tokens than the longest real one, plus EOS.
        longest_title = max(len(ids) for ids in self.prompter.item_ids[1:])
        self.max_new_tokens = min(config["max_new_tokens"], longest_title + 1)
        warn_if_beyond_context(self.llm, self.prompter.longest_prompt_length(config["MAX_ITEM_LIST_LENGTH"]),
                               self.max_new_tokens, knobs="MAX_ITEM_LIST_LENGTH")

        # Normalised training popularity of each item, [n_items], for BIGRec's gamma adjustment.
        counts = self.training_item_counts(dataset)
        self.register_buffer("popularity", counts / counts.max().clamp(min=1.0), persistent=False)
        self._item_embeddings = None  # [n_items - 1, hidden], for the current weights
        self.beam_normalise = config["beam_normalise"] or "vocabulary"
        self.loss_normalise = config["loss_normalise"] or "vocabulary"
        if config["title_search"] == "constrained":  # every title ends with EOS, so no title is a prefix of another
            titles = [ids + [self.llm.eos_token_id] for ids in self.prompter.item_ids]
            self.item_trie = ItemTrie(titles, counts, prior_weight=config["popularity_prior_weight"] or 0.0)

    def prompts(self, interaction):
        return [self.prompter.prompt_ids(history) for history in self.prompt_histories(interaction)]

    def calculate_loss(self, interaction):
        items = interaction[self.POS_ITEM_ID].tolist()
        responses = [self.prompter.item_text_ids(item) for item in items]
        if self.loss_normalise == "vocabulary":
            return self.llm.compute_loss(self.prompts(interaction), responses)
        # Each title token and its EOS scored among the titles that continue its prefix (EOS ends the trie's titles).
        nodes = torch.tensor([node for item in items for node in self.item_trie.prefix_nodes(item)])
        batch = self.llm.make_batch(self.prompts(interaction), responses)
        return trie_cross_entropy(self.llm, batch, nodes, self.item_trie.trie)

    # -- inference: generate, then ground ------------------------------------------------------------------
    def generate_titles(self, interaction):
        """The best beam's text for each row (EOS and padding removed)."""
        output = pooled_beam_search(self.llm, self.prompts(interaction), num_beams=self.num_beams,
                                    max_new_tokens=self.max_new_tokens, length_penalty=self.length_penalty)
        self.record_generation(output, num_users=output.sequences.shape[0])
        best = output.sequences[:, 0].tolist()  # [B, T]
        lengths = output.lengths[:, 0].tolist()  # [B]
        eos = self.llm.eos_token_id
        texts = []
        for ids, length in zip(best, lengths):
            ids = [token for token in ids[:length] if token != eos]
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        return texts

    def on_weights_changed(self):
        self._item_embeddings = None

    @torch.no_grad()
    def item_embeddings(self):
        """[n_items - 1, hidden]: every item's quoted title embedded once per model state (ids 1..n_items-1)."""
        if self._item_embeddings is None:
            self._item_embeddings = self.llm.embed_texts(
                self.prompter.item_ids[1:], batch_size=self.embedding_batch_size
            )
        return self._item_embeddings

    @torch.no_grad()
    def ground(self, texts):
        """Scores [len(texts), n_items] of every item for each generated text: negative L2 distance of the
        embeddings (divided by (1 + popularity)^gamma when gamma > 0); -inf for the padding id 0."""
        token_ids = [tokenize(self.tokenizer, text) or [self.llm.eos_token_id] for text in texts]
        generated = self.llm.embed_texts(token_ids, batch_size=self.embedding_batch_size)  # [B, hidden]
        distances = torch.cdist(generated.float(), self.item_embeddings().float())  # [B, n_items - 1]
        if self.gamma:
            distances = distances / (1.0 + self.popularity[1:]) ** self.gamma
        scores = torch.full((len(texts), self.n_items), float("-inf"), device=distances.device)
        scores[:, 1:] = -distances
        return scores

    @torch.no_grad()
    def llm_scores(self, interaction):
        """[B, n_items]: the LLM's own scores of every item per row (constrained titles, or grounding with
        gamma), before any blend."""
        if self.item_trie is not None:
            return self.search_items(interaction)
        return self.ground(self.generate_titles(interaction))

    def llm_ranking_label(self):
        if self.item_trie is None and self.gamma:
            return f"LLM (popularity gamma {self.gamma:g})"
        return super().llm_ranking_label()


class EARNBIGRec(BIGRec):
    use_earn = True
