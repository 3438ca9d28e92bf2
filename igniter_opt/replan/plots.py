"""The replan-trace figure: cost per hour and GPUs over time, one line per strategy (PNG bytes)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

STYLE = {"replan": ("tab:blue", "-"), "resolve": ("tab:orange", "--"), "peak": ("tab:gray", ":")}


def plot_cost_gpus(steps: Mapping[str, Sequence[Any]], end_s: float, title: str = "") -> bytes:
    """Step plots of cost per hour and GPUs against time (h), from ``StepRecord``-like rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_cost, ax_gpus) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    for strategy, recs in steps.items():
        if not recs:
            continue
        color, ls = STYLE.get(strategy, (None, "-"))
        t = [r.time_s / 3600.0 for r in recs] + [end_s / 3600.0]
        cost = [r.cost for r in recs] + [recs[-1].cost]
        gpus = [r.gpus for r in recs] + [recs[-1].gpus]
        restarts = sum(r.restarts for r in recs[1:])
        label = f"{strategy} ({restarts} restarts)"
        ax_cost.step(t, cost, where="post", color=color, linestyle=ls, label=label)
        ax_gpus.step(t, gpus, where="post", color=color, linestyle=ls, label=strategy)
    ax_cost.set_ylabel("cost per hour")
    ax_gpus.set_ylabel("GPUs")
    ax_gpus.set_xlabel("time (h)")
    ax_cost.set_ylim(bottom=0)
    ax_gpus.set_ylim(bottom=0)
    ax_cost.legend(loc="upper left", fontsize=8)
    ax_cost.grid(alpha=0.3)
    ax_gpus.grid(alpha=0.3)
    if title:
        ax_cost.set_title(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
