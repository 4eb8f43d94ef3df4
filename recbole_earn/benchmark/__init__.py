"""Benchmarks of the EARN engine: `python -m recbole_earn.benchmark efficiency [--quick] [--json PATH]`."""

from .efficiency import (
    ROW_KEYS,
    ceiling_e2e,
    earn_ks,
    engine_kv_bytes,
    format_table,
    kv_bytes_per_entry,
    kv_ratio,
    limit_e2e,
    limit_kv_reduction,
    limit_prefill,
    round_k,
    run_benchmark,
)
from .limits import format_limits, limits_summary, summary_k

__all__ = [
    "ROW_KEYS", "ceiling_e2e", "earn_ks", "engine_kv_bytes", "format_table", "kv_bytes_per_entry",
    "kv_ratio", "limit_e2e", "limit_kv_reduction", "limit_prefill", "round_k", "run_benchmark",
    "format_limits", "limits_summary", "summary_k",
]
