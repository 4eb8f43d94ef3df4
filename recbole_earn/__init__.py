"""recbole-earn: LLM-based generative recommenders with EARN inference acceleration, as RecBole models."""

__version__ = "0.1.0"
