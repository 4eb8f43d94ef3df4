"""The "Limits" summary printed after the benchmark's table: per workload, L and batch, EARN's measured speedup
beside the limits that the analytic model and this machine set (EXPLANATIONS says what each column means).

One EARN k is summarised, the measured one nearest N/4 (the recommenders' default `earn_k`); the table above it
holds every k.
"""

from typing import Dict, List, Optional

from .efficiency import round_k

EXPLANATIONS = (
    "speedup  EARN's measured end-to-end speedup over the vanilla decoder (prefill cells: the prefill speedup)",
    "limit    token-layer limit: the speedup if time were proportional to the token-layers computed",
    "ceiling  the most any EARN implementation reaches while decoding costs both models the vanilla decoder's",
    "         measured decoding time: EARN shortens the prompt's layers, not the decoding steps",
    "step     EARN's measured decoding step, ms",
    "floor    the memory-bandwidth floor of a step, ms: its weights read at the measured bandwidth; no",
    "         implementation runs a decoding step faster on this machine",
    "x_floor  step / floor: how far the step is from the bandwidth floor",
    "kv       measured KV-cache reduction (its analytic value)",
)


def summary_k(rows, N) -> Optional[int]:
    """The measured EARN k nearest N/4 (ties: the smaller), or None when the run has no EARN row."""
    ks = sorted({r["k"] for r in rows if r["method"] == "earn"})
    default_k = round_k(N, 4)  # the recommenders' earn_k when left unset
    return min(ks, key=lambda k: abs(k - default_k)) if ks else None


def limits_summary(rows, N, decode_floor_ms: Optional[Dict[str, float]] = None) -> List[dict]:
    """One entry per workload, L and batch, at `summary_k`: the measured values beside their limits.
    decode_floor_ms: per decoding workload, the memory-bandwidth floor of one step in ms (roofline.py)."""
    k = summary_k(rows, N)
    floors = decode_floor_ms or {}
    entries = []
    for r in rows:
        if r["method"] != "earn" or r["k"] != k:
            continue
        step = r["decode_ms_per_token"]
        floor = floors.get(r["workload"]) if step is not None else None
        entries.append(dict(workload=r["workload"], L=r["L"], batch=r["batch"], k=k,
                            speedup=r["speedup_e2e"], limit=r["limit_e2e"], ceiling=r["ceiling_e2e"],
                            step_ms=step, floor_ms=floor, step_over_floor=step / floor if floor else None,
                            kv_reduction=r["kv_reduction"], limit_kv_reduction=r["limit_kv_reduction"]))
    return entries


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_limits(entries, N) -> str:
    """The summary as text: a heading, one line per column's meaning, then one line per cell."""
    if not entries:
        return "# Limits: no EARN rows in this run"
    k = entries[0]["k"]
    lines = [f"# Limits at k = {k} (the measured k nearest N/4 = {N / 4:g}), per workload, L and batch:"]
    lines += [f"#   {text}" for text in EXPLANATIONS]
    header = (f"{'workload':<8} {'L':>4} {'B':>2} {'speedup':>7} {'limit':>6} {'ceiling':>7} {'step_ms':>8} "
              f"{'floor_ms':>8} {'x_floor':>7} {'kv':>16}")
    lines += [header, "-" * len(header)]
    for e in entries:
        kv = f"{_fmt(e['kv_reduction'], '.1%')} ({_fmt(e['limit_kv_reduction'], '.1%')})"
        lines.append(f"{e['workload']:<8} {e['L']:>4} {e['batch']:>2} {_fmt(e['speedup'], '.2f'):>7} "
                     f"{_fmt(e['limit'], '.2f'):>6} {_fmt(e['ceiling'], '.2f'):>7} {_fmt(e['step_ms'], '.1f'):>8} "
                     f"{_fmt(e['floor_ms'], '.1f'):>8} {_fmt(e['step_over_floor'], '.1f'):>7} {kv:>16}")
    return "\n".join(lines)
