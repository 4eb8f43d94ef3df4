"""EARNConfig: the few numbers that turn a causal LLM into an EARN model (like peft's LoraConfig for LoRA)."""

import numbers
from dataclasses import dataclass
from typing import Optional


@dataclass
class EARNConfig:
    """How a backbone of N decoder layers is run the EARN way.

    earn_k: the register layer. Layers [0, k) see the whole sequence; layers [k, N) see only the register tokens
        and the response. None means round(N / 4). k = N is the vanilla model (registers are still inserted, but
        every layer sees everything).
    n_prefix_registers: registers placed right after BOS, before the prompt.
    n_suffix_registers: registers placed right after the prompt, before the response; the last one predicts the
        first response token.
    """

    earn_k: Optional[int] = None
    n_prefix_registers: int = 1
    n_suffix_registers: int = 1

    @property
    def n_registers(self) -> int:
        return self.n_prefix_registers + self.n_suffix_registers

    def resolved_k(self, num_layers: int) -> int:
        """The register layer for a backbone of `num_layers` layers: k in [0, N], and registers whenever k < N."""
        k = round(num_layers / 4) if self.earn_k is None else self.earn_k
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise ValueError(f"earn_k must be an integer in [0, {num_layers}], got {k!r}")
        k = int(k)
        if not 0 <= k <= num_layers:
            raise ValueError(
                f"earn_k={k} is outside [0, {num_layers}]: the backbone has {num_layers} decoder layers "
                f"(earn_k={num_layers} is the vanilla model)"
            )
        for name in ("n_prefix_registers", "n_suffix_registers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if k < num_layers and self.n_registers == 0:
            raise ValueError(
                f"EARN with earn_k={k} < {num_layers} layers needs at least one register token "
                "(n_prefix_registers + n_suffix_registers is 0): the later layers would see nothing of the prompt. "
                f"Use earn_k={num_layers} for the vanilla model."
            )
        if k < num_layers and self.n_suffix_registers == 0:
            # Without a suffix register the first response token would be predicted by a prompt token, whose
            # hidden state the later layers drop.
            raise ValueError(
                f"EARN with earn_k={k} < {num_layers} layers needs n_suffix_registers >= 1: the last suffix "
                "register is the position that predicts the first response token."
            )
        return k
