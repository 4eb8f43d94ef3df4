"""Analyses of recbole-earn's LLM recommenders: `python -m recbole_earn.analysis attention ...` (see __main__.py)."""
