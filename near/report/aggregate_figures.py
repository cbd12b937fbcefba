"""Figures of aggregate statistics across tasks (rliable's plots): interval estimates per
algorithm, performance profiles, probability of improvement. Drawn with matplotlib (Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from near.report.figures import _save, _setup

METRIC_TITLES = {"iqm": "IQM", "mean": "Mean", "median": "Median", "optimality_gap": "Optimality gap"}


def interval_figure(est: dict, order: list[str], colours: dict, metrics: tuple[str, ...], x_label: str, title: str,
                    out_base: Path, formats=("pdf", "png"), level: float = 0.95) -> list[Path]:
    """One panel per metric: a horizontal CI bar and point per group (`est`: {group: {metric: (v, lo, hi)}})."""
    _setup()
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1.0, 0.5 * len(order) + 1.6),
                             squeeze=False, sharey=True)
    ys = np.arange(len(order))[::-1]
    for ax, m in zip(axes[0], metrics):
        for y, g in zip(ys, order):
            v, lo, hi = est[g][m]
            ax.barh(y, hi - lo, left=lo, height=0.6, color=colours[g], alpha=0.75)
            ax.plot([v, v], [y - 0.3, y + 0.3], color="black", lw=1.5)
        ax.set_title(METRIC_TITLES[m])
        ax.set_yticks(ys, order)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(x_label, fontsize=8)
    fig.suptitle(f"{title}\n{int(round(level * 100))}% stratified bootstrap CIs", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_base, formats)


def profile_figure(prof: dict, taus: np.ndarray, order: list[str], colours: dict, x_label: str, below: bool,
                   title: str, out_base: Path, formats=("pdf", "png"), level: float = 0.95) -> list[Path]:
    """Performance profiles: fraction of runs beyond each threshold, with CI bands, one line per group.
    `below`: a lower-is-better tag -- the fraction of runs whose value is below the threshold."""
    _setup()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for g in order:
        p, lo, hi = prof[g]
        ax.plot(taus, p, color=colours[g], lw=1.8, label=g)
        ax.fill_between(taus, lo, hi, color=colours[g], alpha=0.2, lw=0)
    ax.set_xlabel(f"threshold τ on {x_label}")
    ax.set_ylabel(f"fraction of runs with score {'<' if below else '>'} τ")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(f"{title}\nperformance profile ({int(round(level * 100))}% CI)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_base, formats)


def improvement_figure(poi: dict, pairs: list[tuple[str, str]], colours: dict, title: str, out_base: Path,
                       formats=("pdf", "png"), level: float = 0.95) -> list[Path]:
    """Probability of improvement P(X > Y) with CIs, one row per pair, 0.5 marked."""
    _setup()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 0.55 * max(1, len(pairs)) + 1.6))
    ys = np.arange(len(pairs))[::-1]
    for y, (x_name, y_name) in zip(ys, pairs):
        v, lo, hi = poi[(x_name, y_name)]
        ax.barh(y, max(hi - lo, 0.004), left=lo, height=0.6, color=colours.get(x_name, "#888888"), alpha=0.75)
        ax.plot([v], [y], "o", color="black", ms=5, zorder=5)
        # the estimate in words, on the side of 0.5 with room
        ax.annotate(f"{v:.2f} [{lo:.2f}, {hi:.2f}]", xy=(0.03 if v > 0.5 else 0.97, y), ha="left" if v > 0.5 else "right",
                    va="center", fontsize=8)
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_yticks(ys, [f"P({a} > {b})" for a, b in pairs])
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel("probability of improvement")
    ax.set_title(f"{title}\n{int(round(level * 100))}% stratified bootstrap CIs", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_base, formats)
