"""EARNModel: a causal LLM run the EARN way (register tokens + later layers pruned to registers and response).

It drives the backbone's own modules (embed_tokens, rotary_emb, each decoder layer, norm, lm_head) in a loop:
  layers[:k]  on the full left-padded batch   [B, S]  with causal + padding masks
  gather      registers, last prefix token, response (index tensors; examples differ in length)
  layers[k:]  on that short batch             [B, K]  causally among themselves, original position ids kept
With k = N every layer sees everything: the vanilla model with registers inserted.

The same loop serves training (loss on the response), prefill (writes the uneven EARNCache) and one decoding step
(reads it; see attention.py for how beams share the prompt's cache). Token-level decoders live in decoding.py.
"""

import functools
import inspect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from .added_tokens import AddedTokenRows
from .attention import install_earn_attention
from .backbone import base_causal_lm, check_supported
from .batch import IGNORE_INDEX, EARNBatch, build_batch, causal_mask, padding_mask
from .cache import EARNCache
from .config import EARNConfig
from .cuda_graph import register_layers_graph
from .slot_decoding import resolved_decode_mode
from .small_batch_linear import WeightMajorLinear, install_weight_major_linear, weight_major_linear


@dataclass
class EARNOutput:
    loss: Optional[torch.Tensor]  # mean next-token cross-entropy over response tokens (+EOS)
    hidden_states: torch.Tensor  # [B, K, hidden] final (normed) hidden states at the kept positions
    batch: EARNBatch


@dataclass
class PrefillOutput:
    cache: EARNCache
    last_hidden: torch.Tensor  # [B, hidden] final hidden state of the last prefix token (predicts the 1st response token)
    prefix_lengths: torch.Tensor  # [B] position id of the first generated token


def cache_keyword(decoder_layer):
    """The name a decoder layer takes its KV cache under: `cache` in recent transformers 5.x, `past_key_values`
    before (deprecated, to be removed in 5.40)."""
    parameters = inspect.signature(decoder_layer.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


class EARNModel(nn.Module):
    def __init__(self, backbone, config: Optional[EARNConfig] = None, tokenizer=None, bos_token_id=None,
                 pad_token_id=None, eos_token_id=None, add_bos=True):
        """backbone: a *ForCausalLM of a supported family, possibly wrapped by peft. Token ids default to the
        tokenizer's, then to the backbone config's. add_bos=False starts every example at the first register (or
        prompt token) instead of BOS, for prompts that bring their own start token (e.g. a chat template)."""
        super().__init__()
        config = config or EARNConfig()
        lm = base_causal_lm(backbone)
        check_supported(lm)
        self.backbone = backbone
        self.earn_config = config
        self.num_layers = lm.config.num_hidden_layers
        self.earn_k = config.resolved_k(self.num_layers)
        self.n_prefix_registers = int(config.n_prefix_registers)
        self.n_suffix_registers = int(config.n_suffix_registers)

        def pick(explicit, name):
            if explicit is not None:
                return explicit
            value = getattr(tokenizer, name, None) if tokenizer is not None else None
            return value if value is not None else getattr(lm.config, name, None)

        self.bos_token_id = pick(bos_token_id, "bos_token_id") if add_bos else None
        self.eos_token_id = pick(eos_token_id, "eos_token_id")
        self.pad_token_id = pick(pad_token_id, "pad_token_id")
        if self.pad_token_id is None:
            self.pad_token_id = self.eos_token_id if self.eos_token_id is not None else 0

        # Registers start near the scale of real token embeddings; they always train (even with a frozen backbone).
        embed_weight = lm.get_input_embeddings().weight
        scale = embed_weight.detach().float().std().item()
        registers = torch.randn(self.n_prefix_registers + self.n_suffix_registers, embed_weight.shape[1]) * scale
        # Drawn on the CPU (the same values on every device), then put where the backbone is: the engine takes its
        # device from the registers. Kept in float32 under a bf16 backbone, like LoRA's weights: AdamW's small
        # steps vanish in bf16's 8-bit mantissa. Cast to the activations' dtype where used.
        self.registers = nn.Parameter(registers.to(device=embed_weight.device, dtype=torch.float32))
        self.added_tokens = None  # AddedTokenRows once add_tokens() is called
        self.kv_press = None  # a KVPress (kv_press.py) that compresses the prompt's KV after every prefill
        # SkipLayers at inference: prompts run through layers [0, prompt_layers) only (None: earn_k, as trained);
        # the later layers see the registers or, without any, the last prompt token.
        self.prompt_layers = None
        # How beam searches run their decoding steps (slot_decoding.py): "auto" replays them as CUDA graphs on a
        # GPU; the graphs and their fixed buffers are kept per layout in `slot_decoders`.
        self.decode_mode = "auto"
        self.slot_decoders = OrderedDict()
        self.register_graphs = OrderedDict()  # the prefill's layers [k, N) as CUDA graphs, per shape (graph mode)
        install_earn_attention(lm)
        install_weight_major_linear(lm)  # decoding steps' few rows stream the weights faster (small_batch_linear.py)
        self._cache_kwarg = cache_keyword(lm.model.layers[0])

    def _apply(self, fn, *args, **kwargs):
        self.slot_decoders.clear()  # moved or cast tensors: the graphs would replay on the old addresses
        self.register_graphs.clear()
        return super()._apply(fn, *args, **kwargs)

    # -- the backbone's own modules, reached through a peft wrapper if there is one ------------------------------
    @property
    def causal_lm(self):
        return base_causal_lm(self.backbone)

    @property
    def decoder(self):
        return self.causal_lm.model

    @property
    def layers(self):
        return self.decoder.layers

    @property
    def hidden_size(self):
        return self.registers.shape[1]

    @property
    def n_registers(self):
        return self.registers.shape[0]

    # -- vocabulary: the backbone's own rows, plus rows added for new tokens ---------------------------------------
    def add_tokens(self, first_id: int, num_tokens: int) -> AddedTokenRows:
        """Give token ids [first_id, first_id + num_tokens) their own trainable embedding (and lm-head) rows.
        first_id is the tokenizer's length before the tokens were added to it."""
        if self.added_tokens is not None:
            raise ValueError("EARNModel.add_tokens was already called; add every new token at once")
        lm = self.causal_lm
        output = lm.get_output_embeddings()
        tied = output is None or output.weight is lm.get_input_embeddings().weight
        self.added_tokens = AddedTokenRows(first_id, num_tokens, lm.get_input_embeddings().weight,
                                           None if tied else output.weight, tied=tied)
        return self.added_tokens

    @property
    def vocab_size(self):
        if self.added_tokens is not None:
            return self.added_tokens.vocab_size
        return self.causal_lm.get_input_embeddings().weight.shape[0]

    def embed_ids(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[..., hidden] token embeddings of token_ids [...]."""
        if self.added_tokens is None:
            return self.decoder.embed_tokens(token_ids)
        return self.added_tokens.embed(token_ids, self.decoder.embed_tokens)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits [..., vocab] of final hidden states [..., hidden]."""
        if self.added_tokens is None:
            return self.causal_lm.lm_head(hidden)
        return self.added_tokens.logits(hidden, self.causal_lm.lm_head)

    # -- batches ------------------------------------------------------------------------------------------------
    def make_batch(self, prompts: Sequence[Sequence[int]], responses: Optional[Sequence[Sequence[int]]] = None,
                   add_eos: bool = True) -> EARNBatch:
        """Token-id lists -> padded EARN batch on the model's device (see batch.py for the layout)."""
        batch = build_batch(
            prompts, responses,
            n_prefix_registers=self.n_prefix_registers,
            n_suffix_registers=self.n_suffix_registers,
            bos_token_id=self.bos_token_id,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            add_eos=add_eos,
        )
        return batch.to(self.registers.device)

    def input_embeddings(self, batch: EARNBatch) -> torch.Tensor:
        """[B, S, hidden]: token embeddings with the register vectors at the register slots."""
        embeds = self.embed_ids(batch.input_ids)  # [B, S, hidden]
        if self.n_registers == 0:
            return embeds
        is_register = (batch.register_index >= 0).unsqueeze(-1)  # [B, S, 1]
        register_embeds = self.registers[batch.register_index.clamp(min=0)]  # [B, S, hidden]
        return torch.where(is_register, register_embeds.to(embeds.dtype), embeds)

    # -- the split forward --------------------------------------------------------------------------------------
    def _run_layers(self, layers, hidden, mask, position_ids, cache=None, **kwargs):
        position_embeddings = self.decoder.rotary_emb(hidden, position_ids)  # (cos, sin), each [B, S, head_dim]
        for layer in layers:
            kwargs[self._cache_kwarg] = cache
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids,
                           position_embeddings=position_embeddings, **kwargs)
        return hidden

    def split_forward(self, batch: EARNBatch, cache: Optional[EARNCache] = None, observer=None,
                      k: Optional[int] = None, graph_later_layers: bool = False) -> torch.Tensor:
        """Final (normed) hidden states at the kept positions, [B, K, hidden]. With a cache, records the prefill KV.
        observer(layer, query, key, scaling), if given, sees every layer < k's queries and keys (after rotary).
        k: the layer from which only kept tokens go on (default earn_k). graph_later_layers (inference on CUDA):
        layers [k, N) run as a replayed CUDA graph (cuda_graph.py)."""
        k = self.earn_k if k is None else k
        hidden = self.input_embeddings(batch)  # [B, S, hidden]
        if k > 0:
            mask = causal_mask(batch.attention_mask, hidden.dtype)  # [B, 1, S, S]
            extra = {} if observer is None else {"earn_prefill_observer": observer}
            hidden = self._run_layers(self.layers[:k], hidden, mask, batch.position_ids, cache, **extra)
        # Only registers, the last prefix token and the response go on; each keeps its original position id.
        gather_index = batch.keep_index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # [B, K, hidden]
        hidden = hidden.gather(1, gather_index)  # [B, K, hidden]
        if k < self.num_layers:
            short_positions = batch.position_ids.gather(1, batch.keep_index)  # [B, K]
            short_mask = causal_mask(batch.keep_mask, hidden.dtype)  # [B, 1, K, K]
            if graph_later_layers:
                graph = register_layers_graph(self, k, hidden, short_mask, short_positions)
                return graph(hidden, short_mask, short_positions, cache)
            hidden = self._run_layers(self.layers[k:], hidden, short_mask, short_positions, cache)
        return self.decoder.norm(hidden)

    def forward(self, batch: EARNBatch) -> EARNOutput:
        """Training forward: next-token cross-entropy on the response tokens (+EOS), only their logits computed."""
        hidden = self.split_forward(batch)  # [B, K, hidden]
        scored = batch.labels != IGNORE_INDEX  # [B, K]
        loss = None
        if bool(scored.any()):
            logits = self.lm_logits(hidden[scored])  # [M, vocab], M = response tokens in the batch
            loss = nn.functional.cross_entropy(logits.float(), batch.labels[scored])
        return EARNOutput(loss=loss, hidden_states=hidden, batch=batch)

    def compute_loss(self, prompts, responses, add_eos=True) -> torch.Tensor:
        return self(self.make_batch(prompts, responses, add_eos=add_eos)).loss

    @torch.no_grad()
    def response_log_probs(self, prompts, responses) -> torch.Tensor:
        """[B] summed log-probability of each response (no EOS) after its prompt, over the whole vocabulary."""
        batch = self.make_batch(prompts, responses, add_eos=False)
        hidden = self.split_forward(batch)  # [B, K, hidden]
        scored = batch.labels != IGNORE_INDEX  # [B, K]
        log_probs = torch.log_softmax(self.lm_logits(hidden).float(), dim=-1)  # [B, K, vocab]
        token_log_probs = log_probs.gather(-1, batch.labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, K]
        return (token_log_probs * scored).sum(1)

    def kept_logits(self, batch: EARNBatch) -> torch.Tensor:
        """Full-vocabulary logits at every kept position, [B, K, vocab] (for tests and analysis)."""
        return self.lm_logits(self.split_forward(batch))

    # -- inference ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, prompts: Sequence[Sequence[int]]) -> PrefillOutput:
        """Run the prompts once ([BOS R_pre prompt R_suf], left padded) and keep the uneven cache:
        layers < k hold the whole padded prompt, layers >= k the R registers (the last prompt token when R = 0 and
        `prompt_layers` skips layers). Then `kv_press`, if set, compresses layers < k."""
        batch = self.make_batch(prompts)
        cache = EARNCache(self.num_layers)
        press, valid = self.kv_press, batch.attention_mask
        observer = functools.partial(press.observe, valid=valid) if press is not None and press.needs_queries else None
        k = self.earn_k if self.prompt_layers is None else min(self.earn_k, self.prompt_layers)
        graphs = resolved_decode_mode(self.decode_mode, self.registers.device) == "graph"
        with weight_major_linear():  # layers >= k see only B x (R + 1) rows: bound by reading the weights
            hidden = self.split_forward(batch, cache, observer, k, graphs)  # [B, K, hidden]; last: last prefix token
        prompt_mask = padding_mask(valid, hidden.dtype)  # [B, 1, 1, S] or None
        for i in range(k):
            cache.shared_mask[i] = prompt_mask
        if press is not None:  # layers >= k hold only the registers: nothing to press there
            press.compress(cache, valid, range(k))
        return PrefillOutput(cache=cache, last_hidden=hidden[:, -1], prefix_lengths=batch.prefix_lengths)

    @torch.no_grad()
    def decode_step(self, cache: EARNCache, token_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Feed one token per beam through all N layers. token_ids, position_ids: [B * beams].
        Returns the final hidden states [B * beams, hidden]. A step is bound by reading the weights: its few rows
        go through them weight-major (see small_batch_linear.py)."""
        with weight_major_linear():
            hidden = self.embed_ids(token_ids[:, None])  # [B*nb, 1, hidden]
            hidden = self._run_layers(self.layers, hidden, None, position_ids[:, None], cache, earn_cache=cache)
            return self.decoder.norm(hidden)[:, 0]

    def logits(self, hidden: torch.Tensor, token_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """lm head on hidden [..., hidden]: all vocabulary, or only the rows `token_ids` [u] -> [..., u]."""
        lm_head = self.causal_lm.lm_head
        plain_head = type(lm_head) in (nn.Linear, WeightMajorLinear)  # a LoRA-wrapped head has no rows to gather
        if token_ids is None or not plain_head:
            with weight_major_linear():  # decoding's few rows through the whole head
                logits = self.lm_logits(hidden)
            return logits if token_ids is None else logits[..., token_ids]
        if self.added_tokens is not None:
            weight = self.added_tokens.rows(token_ids, lm_head.weight)  # [u, hidden]
            if lm_head.bias is not None:
                raise ValueError("added tokens on an lm head with a bias are not supported")
        else:
            weight = lm_head.weight[token_ids]  # [u, hidden]
        out = hidden @ weight.t()
        if lm_head.bias is not None:
            out = out + lm_head.bias[token_ids]
        return out

    # -- text embeddings (BIGRec grounding, LC-Rec item indexing) ---------------------------------------------------
    @torch.no_grad()
    def embed_texts(self, texts: Sequence[Sequence[int]], batch_size: int = 64, add_bos: bool = False,
                    pooling: str = "last") -> torch.Tensor:
        """Text embeddings [n, hidden] from the last layer's (normed) hidden states of each token-id list: of its
        last token (pooling="last") or averaged over its tokens ("mean"). The plain backbone, all layers, no
        registers. Batches are left padded with per-example position ids starting at 0."""
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        outputs = []
        for start in range(0, len(texts), batch_size):
            head = [self.bos_token_id] if add_bos and self.bos_token_id is not None else []
            chunk = [head + list(t) for t in texts[start:start + batch_size]]
            if any(len(t) == 0 for t in chunk):
                raise ValueError("embed_texts got an empty token list")
            batch = build_batch(chunk, None, n_prefix_registers=0, n_suffix_registers=0, bos_token_id=None,
                                pad_token_id=self.pad_token_id).to(self.registers.device)
            hidden = self.embed_ids(batch.input_ids)  # [b, S, hidden]
            mask = causal_mask(batch.attention_mask, hidden.dtype)
            hidden = self.decoder.norm(self._run_layers(self.layers, hidden, mask, batch.position_ids))
            if pooling == "last":
                outputs.append(hidden[:, -1])
            else:
                real = batch.attention_mask.unsqueeze(-1).to(hidden.dtype)  # [b, S, 1]
                outputs.append((hidden * real).sum(1) / real.sum(1))
        return torch.cat(outputs)

    # -- saving only what trains --------------------------------------------------------------------------------
    def trainable_state_dict(self):
        """The trained parameters only (registers, LoRA weights or the whole backbone for full fine-tuning)."""
        names = {name for name, p in self.named_parameters() if p.requires_grad}
        return {name: t for name, t in self.state_dict().items() if name in names}

    def load_trainable_state_dict(self, state_dict):
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        if unexpected:
            raise KeyError(f"unexpected keys in EARN state dict: {unexpected[:5]}")
        return self
